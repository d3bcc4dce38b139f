//! FindCoordinator (key 10): the coordinator of a group is the broker leading the group's
//! `__consumer_offsets` partition (COORDINATOR_NOT_AVAILABLE while it has no leader or the
//! topic does not exist yet). Transaction coordinators are not available until
//! transactions exist (SPEC K3).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

const KEY_TYPE_GROUP: i8 = 0;

/// The broker leading `group`'s `__consumer_offsets` partition: (id, host, port).
fn coordinator(
    image: &crate::metadata::MetadataImage,
    group: &str,
    listener: &str,
) -> Result<(i32, StrBytes, i32), (ResponseError, &'static str)> {
    // Kafka answers with its error's own text.
    let not_available = (
        ResponseError::CoordinatorNotAvailable,
        "The coordinator is not available.",
    );
    let partition = crate::coordinator::offsets::partition_for(group);
    let leader = image
        .topic(crate::coordinator::offsets::OFFSETS_TOPIC)
        .and_then(|t| t.state(partition))
        .map(|s| s.leader)
        .ok_or(not_available)?;
    let b = image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .ok_or(not_available)?;
    // A coordinator without the client's listener cannot be reached by it.
    let (host, port) = b.endpoint(listener).ok_or(not_available)?;
    Ok((
        b.id,
        StrBytes::from_string(host.to_owned()),
        i32::from(port),
    ))
}

pub fn handle(ctx: &ShardCtx, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: FindCoordinatorRequest = protocol::decode_body(req.body.clone(), v)?;
    let image = ctx.broker.image();
    let find = |key: &str| {
        if body.key_type == KEY_TYPE_GROUP
            && !ctx
                .broker
                .authorize(&req.session, op::DESCRIBE, resource::GROUP, key)
        {
            Err((
                ResponseError::GroupAuthorizationFailed,
                "Group authorization failed.",
            ))
        } else if body.key_type == KEY_TYPE_GROUP {
            coordinator(&image, key, req.session.listener_name())
        } else {
            Err((
                ResponseError::CoordinatorNotAvailable,
                "transactions are not supported yet",
            ))
        }
    };
    let resp = if v >= 4 {
        let coordinators = body
            .coordinator_keys
            .iter()
            .map(|key| {
                let co = Coordinator::default()
                    .with_key(key.clone())
                    .with_error_message(None);
                match find(key.as_str()) {
                    Ok((id, host, port)) => co
                        .with_node_id(BrokerId(id))
                        .with_host(host)
                        .with_port(port),
                    Err((e, m)) => co
                        .with_error_code(e.code())
                        .with_error_message(Some(StrBytes::from_static_str(m)))
                        .with_node_id(BrokerId(-1)),
                }
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let (r, message) = match find(body.key.as_str()) {
            Ok((id, host, port)) => (
                FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(id))
                    .with_host(host)
                    .with_port(port),
                None,
            ),
            Err((e, m)) => (
                FindCoordinatorResponse::default()
                    .with_error_code(e.code())
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
                Some(StrBytes::from_static_str(m)),
            ),
        };
        // error_message exists from v1.
        if v >= 1 {
            r.with_error_message(message)
        } else {
            r
        }
    };
    protocol::single(ApiKey::FindCoordinator, v, req.correlation_id(), &resp)
}
