//! LeaveGroup (key 13): one member (v0-2) or a batch (v3+, KIP-345) leaves; the rest
//! rebalance.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: LeaveGroupRequest = protocol::decode_body(req.body.clone(), v)?;
    let group = body.group_id.0.as_str().to_owned();
    if !ctx
        .broker
        .authorize(&req.session, op::READ, resource::GROUP, &group)
    {
        let resp = LeaveGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
        return protocol::single(ApiKey::LeaveGroup, v, req.correlation_id(), &resp);
    }
    let leaving: Vec<(String, Option<String>)> = if v >= 3 {
        body.members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_owned(),
                    m.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
                )
            })
            .collect()
    } else {
        vec![(body.member_id.as_str().to_owned(), None)]
    };
    let ids = leaving.clone();
    let results = ctx
        .on_coordinator(&group.clone(), move |c| async move {
            let mut coordinator = c.groups.borrow_mut();
            ids.iter()
                .map(|(m, instance)| {
                    coordinator.leave(&group, m, instance.as_deref(), Instant::now())
                })
                .collect::<Vec<_>>()
        })
        .await;
    let resp = match results {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(results) if v >= 3 => LeaveGroupResponse::default().with_members(
            leaving
                .into_iter()
                .zip(results)
                .map(|((m, instance), r)| {
                    MemberResponse::default()
                        .with_member_id(kafka_protocol::protocol::StrBytes::from_string(m))
                        .with_group_instance_id(
                            instance.map(kafka_protocol::protocol::StrBytes::from_string),
                        )
                        .with_error_code(r.err().map_or(0, |e| e.code()))
                })
                .collect(),
        ),
        Ok(results) => LeaveGroupResponse::default().with_error_code(
            results
                .first()
                .and_then(|r| r.err())
                .map_or(0, |e| e.code()),
        ),
    };
    protocol::single(ApiKey::LeaveGroup, v, req.correlation_id(), &resp)
}
