//! SyncGroup (key 14): the leader sends every member's assignment; each member waits
//! for its own.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: SyncGroupRequest = protocol::decode_body(req.body.clone(), v)?;
    let group = body.group_id.0.as_str().to_owned();
    if !ctx
        .broker
        .authorize(&req.session, op::READ, resource::GROUP, &group)
    {
        let resp = SyncGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
        return protocol::single(ApiKey::SyncGroup, v, req.correlation_id(), &resp);
    }
    let (generation, member) = (body.generation_id, body.member_id.as_str().to_owned());
    let instance = body
        .group_instance_id
        .as_ref()
        .map(|s| s.as_str().to_owned());
    let assignments = body
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_owned(), a.assignment.clone()))
        .collect();
    let result = ctx
        .on_coordinator(&group.clone(), move |c| async move {
            let waiting = c.groups.borrow_mut().sync(
                &group,
                generation,
                &member,
                instance.as_deref(),
                assignments,
                Instant::now(),
            );
            match waiting {
                Ok(rx) => rx.await.unwrap_or(Err(ResponseError::RebalanceInProgress)),
                Err(e) => Err(e),
            }
        })
        .await
        .unwrap_or_else(Err);
    let mut resp = match result {
        Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
        Err(e) => SyncGroupResponse::default().with_error_code(e.code()),
    };
    // protocol_type / protocol_name exist from v5.
    if v >= 5 {
        resp = resp
            .with_protocol_type(body.protocol_type.clone())
            .with_protocol_name(body.protocol_name.clone());
    }
    protocol::single(ApiKey::SyncGroup, v, req.correlation_id(), &resp)
}
