//! UnregisterBroker (key 64): a broker leaves the cluster for good (`kafka-cluster
//! unregister`, `ringmq cluster remove-broker`). The active controller removes its
//! registration and its dynamic configs; refused with a clear message while the broker
//! is running (it would register again) or still holds replicas (drain it first), so
//! unregistering never loses a replica.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, UnregisterBrokerRequest, UnregisterBrokerResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::cluster::controller::ControllerRequest;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: UnregisterBrokerRequest = protocol::decode_body(req.body.clone(), v)?;
    let request = ControllerRequest::UnregisterBroker {
        id: body.broker_id.0,
    };
    let resp = match ctx.broker.cluster.submit(request).await {
        Ok(_) => {
            tracing::info!(broker = body.broker_id.0, "unregistered a broker");
            UnregisterBrokerResponse::default()
        }
        Err(e) => UnregisterBrokerResponse::default()
            .with_error_code(e.code.code())
            .with_error_message(Some(StrBytes::from_string(e.message))),
    };
    protocol::single(ApiKey::UnregisterBroker, v, req.correlation_id(), &resp)
}
