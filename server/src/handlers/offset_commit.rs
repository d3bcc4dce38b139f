//! OffsetCommit (key 8): stores committed offsets as records in the group's
//! `__consumer_offsets` partition (on the shard that owns it) and caches them there.
//! A member's commit must carry the group's current generation (ILLEGAL_GENERATION,
//! UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS otherwise); commits from consumers outside
//! group management (generation -1, `assign()`) are accepted while the group has no
//! members.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::coordinator::offsets::{self, Committed, OFFSET_METADATA_MAX_BYTES, OFFSETS_TOPIC};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};
use crate::storage::now_ms;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: OffsetCommitRequest = protocol::decode_body(req.body.clone(), v)?;
    let group = body.group_id.0.as_str().to_owned();
    let image = ctx.broker.image();
    let now = now_ms();
    let group_error = if group.is_empty() {
        Some(ResponseError::InvalidGroupId)
    } else if !ctx
        .broker
        .authorize(&req.session, op::READ, resource::GROUP, &group)
    {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        None
    };
    let (generation, member) = (
        body.generation_id_or_member_epoch,
        body.member_id.as_str().to_owned(),
    );
    let instance = body
        .group_instance_id
        .as_ref()
        .map(|s| s.as_str().to_owned());
    // Per partition: Ok(commit to store) or the error to answer.
    let mut plan: Vec<(TopicName, uuid::Uuid, i32, Result<Committed, ResponseError>)> = Vec::new();
    for t in &body.topics {
        let meta = if v >= 10 {
            image.topic_by_id(t.topic_id)
        } else {
            image.topic(t.name.0.as_str())
        };
        let topic_denied = !ctx.broker.authorize(
            &req.session,
            op::READ,
            resource::TOPIC,
            meta.map_or(t.name.0.as_str(), |m| m.name.as_str()),
        );
        for p in &t.partitions {
            let verdict = verdict(
                group_error.or(topic_denied.then_some(ResponseError::TopicAuthorizationFailed)),
                meta.map(|m| m.placement.len()),
                p.partition_index,
                (
                    p.committed_offset,
                    if v >= 6 { p.committed_leader_epoch } else { -1 },
                ),
                p.committed_metadata.as_ref().map_or("", |m| m.as_str()),
                now,
            );
            let name = meta.map_or_else(
                || t.name.clone(),
                |m| TopicName(StrBytes::from_string(m.name.clone())),
            );
            plan.push((name, t.topic_id, p.partition_index, verdict));
        }
    }
    let commits: Vec<(String, i32, Committed)> = plan
        .iter()
        .filter_map(|(n, _, p, r)| {
            r.as_ref()
                .ok()
                .map(|c| (n.0.as_str().to_owned(), *p, c.clone()))
        })
        .collect();
    let stored = if commits.is_empty() {
        Ok(())
    } else {
        store(ctx, &group, (generation, member, instance), commits, now).await
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (name, id, partition, verdict) in plan {
        let code = match (&verdict, &stored) {
            (Err(e), _) => e.code(),
            (Ok(_), Err(e)) => e.code(),
            (Ok(_), Ok(())) => 0,
        };
        let pr = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code);
        match topics.last_mut() {
            Some(t) if t.name == name => t.partitions.push(pr),
            _ => {
                let t = OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(vec![pr]);
                // topic_id exists from v10.
                topics.push(if v >= 10 { t.with_topic_id(id) } else { t });
            }
        }
    }
    let resp = OffsetCommitResponse::default().with_topics(topics);
    protocol::single(ApiKey::OffsetCommit, v, req.correlation_id(), &resp)
}

/// The verdict on one partition's commit, as OffsetCommit and TxnOffsetCommit check it:
/// the request's (or topic's) refusal first, then an unknown topic or partition
/// (`partitions`: the topic's count, if it exists), then oversized metadata.
pub(super) fn verdict(
    refused: Option<ResponseError>,
    partitions: Option<usize>,
    partition: i32,
    (offset, leader_epoch): (i64, i32),
    metadata: &str,
    now: i64,
) -> Result<Committed, ResponseError> {
    if let Some(e) = refused {
        return Err(e);
    }
    if partitions.is_none_or(|n| partition < 0 || partition as usize >= n) {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    if metadata.len() > OFFSET_METADATA_MAX_BYTES {
        return Err(ResponseError::OffsetMetadataTooLarge);
    }
    Ok(Committed {
        offset,
        leader_epoch,
        metadata: metadata.to_owned(),
        commit_timestamp: now,
    })
}

/// Appends the commits to the group's offsets partition and updates the cache there.
async fn store(
    ctx: &Rc<ShardCtx>,
    group: &str,
    (generation, member, instance): (i32, String, Option<String>),
    commits: Vec<(String, i32, Committed)>,
    now: i64,
) -> Result<(), ResponseError> {
    let partition = offsets::partition_for(group);
    let batch = offsets::commit_batch(group, &commits, now);
    let name = group.to_owned();
    ctx.on_coordinator(group, move |c| async move {
        let group = name;
        c.groups.borrow().validate_commit(
            &group,
            generation,
            &member,
            instance.as_deref(),
            c.offsets.borrow().has_offsets(&group),
        )?;
        let part = c
            .partition(OFFSETS_TOPIC, partition)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        part.append_acked(
            batch,
            now,
            -1,
            crate::coordinator::offsets::OFFSETS_COMMIT_TIMEOUT,
        )
        .await
        .map_err(|e| {
            tracing::warn!(%group, error = %e.message, "storing offsets failed");
            ResponseError::CoordinatorNotAvailable
        })?;
        let mut cache = c.offsets.borrow_mut();
        for (topic, p, committed) in commits {
            cache.put(&group, &topic, p, committed);
        }
        Ok(())
    })
    .await
    .and_then(|r| r)
}
