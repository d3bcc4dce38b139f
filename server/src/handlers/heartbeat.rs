//! Heartbeat (key 12): keeps a member alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: HeartbeatRequest = protocol::decode_body(req.body.clone(), v)?;
    let group = body.group_id.0.as_str().to_owned();
    if !ctx
        .broker
        .authorize(&req.session, op::READ, resource::GROUP, &group)
    {
        let resp = HeartbeatResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
        return protocol::single(ApiKey::Heartbeat, v, req.correlation_id(), &resp);
    }
    let (generation, member) = (body.generation_id, body.member_id.as_str().to_owned());
    let instance = body.group_instance_id.map(|s| s.as_str().to_owned());
    let result = ctx
        .on_coordinator(&group.clone(), move |c| async move {
            c.groups.borrow_mut().heartbeat(
                &group,
                generation,
                &member,
                instance.as_deref(),
                Instant::now(),
            )
        })
        .await
        .unwrap_or_else(Err);
    let resp = HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()));
    protocol::single(ApiKey::Heartbeat, v, req.correlation_id(), &resp)
}
