//! FindCoordinator (key 10): the coordinator of a group is the broker leading the group's
//! `__consumer_offsets` partition, that of a transactional id the broker leading the id's
//! `__transaction_state` partition (COORDINATOR_NOT_AVAILABLE while it has no leader or
//! the topic does not exist yet). The first transactional lookup asks the controller to
//! create `__transaction_state`, as Kafka does.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The broker leading partition `partition` of the internal `topic`: (id, host, port).
fn coordinator(
    image: &crate::metadata::MetadataImage,
    topic: &str,
    partition: i32,
    listener: &str,
) -> Result<(i32, StrBytes, i32), (ResponseError, &'static str)> {
    // Kafka answers with its error's own text.
    let not_available = (
        ResponseError::CoordinatorNotAvailable,
        "The coordinator is not available.",
    );
    let leader = image
        .topic(topic)
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

/// Asks the controller for `__transaction_state` (50 partitions, compacted) with
/// `transaction.state.log.replication.factor` replicas, bounded by the brokers the
/// cluster has; an answer comes with the next metadata, so errors are only logged.
async fn create_transaction_state_topic(ctx: &ShardCtx) {
    use crate::cluster::controller::ControllerRequest;
    use crate::metadata::{TXN_PARTITIONS, TXN_SEGMENT_BYTES, TXN_TOPIC};
    let c = &ctx.broker.config;
    let brokers = ctx.broker.image().brokers.len().max(1);
    let rf = (c.transaction_state_log_replication_factor.max(1) as usize).min(brokers);
    let min_isr = (c.transaction_state_log_min_isr.max(1) as usize).min(rf);
    let req = ControllerRequest::CreateTopic {
        name: TXN_TOPIC.to_owned(),
        partitions: TXN_PARTITIONS as i32,
        replication_factor: rf as i16,
        assignment: None,
        configs: [
            ("cleanup.policy", "compact".to_owned()),
            ("segment.bytes", TXN_SEGMENT_BYTES.to_owned()),
            ("min.insync.replicas", min_isr.to_string()),
            ("unclean.leader.election.enable", "false".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        validate_only: false,
        internal: true,
    };
    match ctx.broker.cluster.submit(req).await {
        Ok(_) => tracing::info!(
            topic = TXN_TOPIC,
            replication_factor = rf,
            "created the transaction state topic"
        ),
        Err(e) if e.code == ResponseError::TopicAlreadyExists => {}
        Err(e) => {
            tracing::debug!(error = %e.message, "creating the transaction state topic failed")
        }
    }
}

pub async fn handle(ctx: &ShardCtx, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: FindCoordinatorRequest = protocol::decode_body(req.body.clone(), v)?;
    if body.key_type == KEY_TYPE_TRANSACTION
        && ctx
            .broker
            .image()
            .topic(crate::metadata::TXN_TOPIC)
            .is_none()
    {
        create_transaction_state_topic(ctx).await;
    }
    let image = ctx.broker.image();
    let listener = req.session.listener_name();
    let find = |key: &str| match body.key_type {
        KEY_TYPE_GROUP
            if !ctx
                .broker
                .authorize(&req.session, op::DESCRIBE, resource::GROUP, key) =>
        {
            Err((
                ResponseError::GroupAuthorizationFailed,
                "Group authorization failed.",
            ))
        }
        KEY_TYPE_GROUP => coordinator(
            &image,
            crate::metadata::OFFSETS_TOPIC,
            crate::coordinator::offsets::partition_for(key),
            listener,
        ),
        KEY_TYPE_TRANSACTION
            if !ctx.broker.authorize(
                &req.session,
                op::DESCRIBE,
                resource::TRANSACTIONAL_ID,
                key,
            ) =>
        {
            Err((
                ResponseError::TransactionalIdAuthorizationFailed,
                "Transactional Id authorization failed.",
            ))
        }
        KEY_TYPE_TRANSACTION => coordinator(
            &image,
            crate::metadata::TXN_TOPIC,
            crate::coordinator::transactions::partition_for(key),
            listener,
        ),
        _ => Err((ResponseError::InvalidRequest, "Unknown coordinator type")),
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
