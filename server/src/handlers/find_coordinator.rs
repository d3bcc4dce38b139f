//! FindCoordinator (key 10): the coordinator of a group is the broker leading the group's
//! `__consumer_offsets` partition — on one node, this broker. Transaction coordinators
//! are not available until transactions exist (SPEC K3).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;

const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(ctx: &ShardCtx, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: FindCoordinatorRequest = protocol::decode_body(req.body.clone(), v)?;
    let c = &ctx.broker.config;
    let (host, port) = (
        StrBytes::from_string(c.advertised.0.clone()),
        i32::from(c.advertised.1),
    );
    let error = if body.key_type == KEY_TYPE_GROUP {
        None
    } else {
        Some(ResponseError::CoordinatorNotAvailable)
    };
    let message = error.map(|_| StrBytes::from_static_str("transactions are not supported yet"));
    let resp = if v >= 4 {
        let coordinators = body
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let co = Coordinator::default()
                    .with_key(key)
                    .with_error_message(None);
                match error {
                    None => co
                        .with_node_id(BrokerId(c.node_id))
                        .with_host(host.clone())
                        .with_port(port),
                    Some(e) => co
                        .with_error_code(e.code())
                        .with_error_message(message.clone())
                        .with_node_id(BrokerId(-1)),
                }
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let r = match error {
            None => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(c.node_id))
                .with_host(host)
                .with_port(port),
            Some(e) => FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
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
