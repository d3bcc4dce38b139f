//! ListGroups (key 16, with the state filter of v4+ and the type filter of v5+), DescribeGroups (key 15) and
//! DeleteGroups (key 42, only groups without members). Groups are those with members
//! (all shards are asked).

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: ListGroupsRequest = protocol::decode_body(req.body.clone(), v)?;
    let asks = (0..ctx.broker.shard_count()).map(|s| {
        ctx.on_shard(s, |c| async move {
            let groups = c.groups.borrow();
            let mut listed: Vec<(String, String, String)> = groups
                .groups()
                .map(|(id, g)| {
                    (
                        id.clone(),
                        g.protocol_type.clone().unwrap_or_default(),
                        g.state.name().to_owned(),
                    )
                })
                .collect();
            // Groups known only by their committed offsets (assign + commit) are Empty
            // with no protocol type, as in Kafka.
            for id in c.offsets.borrow().group_ids() {
                if groups.group(id).is_none() {
                    listed.push((id.clone(), String::new(), "Empty".to_owned()));
                }
            }
            listed
        })
    });
    let filter: Vec<String> = body
        .states_filter
        .iter()
        .map(|s| s.as_str().to_lowercase())
        .collect();
    // Every group here is a classic-protocol group (KIP-848 groups are not served), so a
    // types filter (v5+) without "classic" matches none.
    let classic_wanted = body.types_filter.is_empty()
        || body
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case("classic"));
    let mut groups = Vec::new();
    // DESCRIBE on the cluster lists every group; otherwise those the principal may describe.
    let all = ctx.broker.authorize_cluster(&req.session, op::DESCRIBE);
    for listed in join_all(asks).await.into_iter().flatten().flatten() {
        if !classic_wanted || (!filter.is_empty() && !filter.contains(&listed.2.to_lowercase())) {
            continue;
        }
        if !all
            && !ctx
                .broker
                .authorize(&req.session, op::DESCRIBE, resource::GROUP, &listed.0)
        {
            continue;
        }
        let mut g = ListedGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(listed.0)))
            .with_protocol_type(StrBytes::from_string(listed.1));
        // group_state exists from v4, group_type from v5.
        if v >= 4 {
            g = g.with_group_state(StrBytes::from_string(listed.2));
        }
        if v >= 5 {
            g = g.with_group_type(StrBytes::from_static_str("classic"));
        }
        groups.push(g);
    }
    let resp = ListGroupsResponse::default().with_groups(groups);
    protocol::single(ApiKey::ListGroups, v, req.correlation_id(), &resp)
}

pub async fn describe(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeGroupsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut out = Vec::new();
    for gid in body.groups {
        let name = gid.0.as_str().to_owned();
        if !ctx
            .broker
            .authorize(&req.session, op::DESCRIBE, resource::GROUP, &name)
        {
            out.push(
                DescribedGroup::default()
                    .with_group_id(gid)
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
            );
            continue;
        }
        let described = ctx
            .on_coordinator(&name.clone(), move |c| async move {
                let coordinator = c.groups.borrow();
                let Some(g) = coordinator.group(&name) else {
                    // Known only by its committed offsets: Empty, as Kafka describes it.
                    let offsets_only = c
                        .offsets
                        .borrow()
                        .group(&name)
                        .is_some_and(|o| !o.is_empty());
                    return (
                        String::from(if offsets_only { "Empty" } else { "Dead" }),
                        String::new(),
                        String::new(),
                        Vec::new(),
                    );
                };
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        let meta = g
                            .protocol
                            .as_ref()
                            .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                            .map(|(_, b)| b.clone());
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.client_id.clone(),
                            m.client_host.clone(),
                            meta.unwrap_or_default(),
                            m.assignment.clone(),
                        )
                    })
                    .collect();
                (
                    g.state.name().to_owned(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.protocol.clone().unwrap_or_default(),
                    members,
                )
            })
            .await;
        let mut d = DescribedGroup::default().with_group_id(gid.clone());
        // authorized_operations exists from v3.
        if v >= 3 {
            d = d.with_authorized_operations(crate::handlers::authorized_ops::group(
                body.include_authorized_operations,
                &ctx.broker,
                &req.session,
                &gid,
            ));
        }
        match described {
            Err(e) => d = d.with_error_code(e.code()),
            Ok((state, ptype, protocol, members)) => {
                d = d
                    .with_group_state(StrBytes::from_string(state))
                    .with_protocol_type(StrBytes::from_string(ptype))
                    .with_protocol_data(StrBytes::from_string(protocol))
                    .with_members(
                        members
                            .into_iter()
                            .map(|(id, instance, client, host, meta, assignment)| {
                                let m = DescribedGroupMember::default()
                                    .with_member_id(StrBytes::from_string(id))
                                    .with_client_id(StrBytes::from_string(client))
                                    .with_client_host(StrBytes::from_string(host))
                                    .with_member_metadata(meta)
                                    .with_member_assignment(assignment);
                                // group_instance_id exists from v4.
                                if v >= 4 {
                                    m.with_group_instance_id(instance.map(StrBytes::from_string))
                                } else {
                                    m
                                }
                            })
                            .collect(),
                    );
            }
        }
        out.push(d);
    }
    let resp = DescribeGroupsResponse::default().with_groups(out);
    protocol::single(ApiKey::DescribeGroups, v, req.correlation_id(), &resp)
}

pub async fn delete(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DeleteGroupsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut results = Vec::new();
    for gid in body.groups_names {
        let name = gid.0.as_str().to_owned();
        if !ctx
            .broker
            .authorize(&req.session, op::DELETE, resource::GROUP, &name)
        {
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(gid)
                    .with_error_code(ResponseError::GroupAuthorizationFailed.code()),
            );
            continue;
        }
        let r = ctx
            .on_coordinator(&name.clone(), move |c| async move {
                delete_group(&c, &name).await
            })
            .await
            .unwrap_or_else(Err);
        results.push(
            DeletableGroupResult::default()
                .with_group_id(gid)
                .with_error_code(r.err().map_or(0, |e| e.code())),
        );
    }
    let resp = DeleteGroupsResponse::default().with_results(results);
    protocol::single(ApiKey::DeleteGroups, v, req.correlation_id(), &resp)
}

/// Deletes a group without members: its offsets get tombstones in `__consumer_offsets`.
async fn delete_group(c: &ShardCtx, name: &str) -> Result<(), ResponseError> {
    let keys: Vec<(String, i32)> = c
        .offsets
        .borrow()
        .group(name)
        .map(|g| g.keys().cloned().collect())
        .unwrap_or_default();
    let deleted = c.groups.borrow_mut().delete(name);
    match deleted {
        Err(ResponseError::GroupIdNotFound) if !keys.is_empty() => {}
        other => other?,
    }
    if keys.is_empty() {
        return Ok(());
    }
    let partition = crate::coordinator::offsets::partition_for(name);
    let part = c
        .partition(crate::coordinator::offsets::OFFSETS_TOPIC, partition)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let now = crate::storage::now_ms();
    let tombstones = crate::coordinator::offsets::tombstone_batch(name, &keys, now);
    part.append(tombstones, now)
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
    let mut cache = c.offsets.borrow_mut();
    for (topic, p) in keys {
        cache.remove(name, &topic, p);
    }
    Ok(())
}
