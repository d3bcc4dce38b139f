//! JoinGroup (key 11): joins (or rejoins) a member and waits for the rebalance to
//! complete; the leader gets every member's subscription (see `group.rs`).

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::coordinator::group::{JoinRequest, JoinResult};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: JoinGroupRequest = protocol::decode_body(req.body.clone(), v)?;
    let group = body.group_id.0.as_str().to_owned();
    if !ctx
        .broker
        .authorize(&req.session, op::READ, resource::GROUP, &group)
    {
        let resp = JoinGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code())
            .with_generation_id(-1);
        return protocol::single(ApiKey::JoinGroup, v, req.correlation_id(), &resp);
    }
    let join = JoinRequest {
        group: group.clone(),
        member_id: body.member_id.as_str().to_owned(),
        instance_id: body
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        client_id: req
            .header
            .client_id
            .as_ref()
            .map_or_else(String::new, |c| c.as_str().to_owned()),
        client_host: req.client_host.clone(),
        session_timeout_ms: body.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if v >= 1 {
            body.rebalance_timeout_ms
        } else {
            body.session_timeout_ms
        },
        protocol_type: body.protocol_type.as_str().to_owned(),
        protocols: body
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let member = join.member_id.clone();
    let result = ctx
        .on_coordinator(&group, move |c| async move {
            let waiting = c.groups.borrow_mut().join(join, Instant::now());
            match waiting {
                Ok(rx) => rx.await.unwrap_or_else(|_| {
                    JoinResult::error_of(kafka_protocol::ResponseError::RebalanceInProgress)
                }),
                Err(now) => *now,
            }
        })
        .await
        .unwrap_or_else(|e| JoinResult::error_of(e).with_member(&member));
    let mut resp = JoinGroupResponse::default()
        .with_generation_id(result.generation)
        .with_leader(StrBytes::from_string(result.leader))
        .with_member_id(StrBytes::from_string(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, meta)| {
                    let m = JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_metadata(meta);
                    // group_instance_id exists from v5.
                    if v >= 5 {
                        m.with_group_instance_id(instance.map(StrBytes::from_string))
                    } else {
                        m
                    }
                })
                .collect(),
        );
    if let Some(e) = result.error {
        resp = resp.with_error_code(e.code());
    }
    resp = if v >= 7 {
        resp.with_protocol_type(Some(StrBytes::from_string(result.protocol_type)))
            .with_protocol_name(Some(StrBytes::from_string(result.protocol)))
    } else {
        resp.with_protocol_name(Some(StrBytes::from_string(result.protocol)))
    };
    protocol::single(ApiKey::JoinGroup, v, req.correlation_id(), &resp)
}
