//! TxnOffsetCommit (key 28): a transactional producer commits a group's offsets inside
//! its transaction (consume-transform-produce, KIP-98/KIP-447). The group coordinator
//! writes them to the group's `__consumer_offsets` partition as a transactional batch of
//! the producer; they become the group's committed offsets when the transaction's commit
//! marker reaches that partition (and are dropped on abort). With a generation (v3+,
//! KIP-447) the member is checked as for OffsetCommit. WRITE on the transactional id,
//! READ on the group and on each topic.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::Request;
use crate::coordinator::offsets::{self, Committed, OFFSETS_TOPIC};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};
use crate::storage::now_ms;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: TxnOffsetCommitRequest = protocol::decode_body(req.body.clone(), v)?;
    let id = body.transactional_id.0.as_str();
    let group = body.group_id.0.as_str().to_owned();
    let image = ctx.broker.image();
    let now = now_ms();
    let request_error =
        if !ctx
            .broker
            .authorize(&req.session, op::WRITE, resource::TRANSACTIONAL_ID, id)
        {
            Some(ResponseError::TransactionalIdAuthorizationFailed)
        } else if !ctx
            .broker
            .authorize(&req.session, op::READ, resource::GROUP, &group)
        {
            Some(ResponseError::GroupAuthorizationFailed)
        } else {
            None
        };
    let mut plan: Vec<(String, i32, Result<Committed, ResponseError>)> = Vec::new();
    for t in &body.topics {
        let name = t.name.0.as_str();
        let meta = image.topic(name);
        let denied = !ctx
            .broker
            .authorize(&req.session, op::READ, resource::TOPIC, name);
        for p in &t.partitions {
            let verdict = super::offset_commit::verdict(
                request_error.or(denied.then_some(ResponseError::TopicAuthorizationFailed)),
                meta.map(|m| m.placement.len()),
                p.partition_index,
                (
                    p.committed_offset,
                    if v >= 2 { p.committed_leader_epoch } else { -1 },
                ),
                p.committed_metadata.as_ref().map_or("", |m| m.as_str()),
                now,
            );
            plan.push((name.to_owned(), p.partition_index, verdict));
        }
    }
    let commits: Vec<(String, i32, Committed)> = plan
        .iter()
        .filter_map(|(t, p, r)| r.as_ref().ok().map(|c| (t.clone(), *p, c.clone())))
        .collect();
    let stored = if commits.is_empty() {
        Ok(())
    } else {
        let member = (
            if v >= 3 { body.generation_id } else { -1 },
            body.member_id.as_str().to_owned(),
            body.group_instance_id
                .as_ref()
                .map(|s| s.as_str().to_owned()),
        );
        store(
            ctx,
            &group,
            (body.producer_id.0, body.producer_epoch),
            member,
            commits,
            now,
        )
        .await
    };
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for (name, partition, verdict) in plan {
        let code = match (verdict, &stored) {
            (Err(e), _) | (Ok(_), &Err(e)) => e.code(),
            (Ok(_), Ok(())) => 0,
        };
        let pr = TxnOffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code);
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == name => t.partitions.push(pr),
            _ => topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(kafka_protocol::messages::TopicName(name.into()))
                    .with_partitions(vec![pr]),
            ),
        }
    }
    let resp = TxnOffsetCommitResponse::default().with_topics(topics);
    protocol::single(ApiKey::TxnOffsetCommit, v, req.correlation_id(), &resp)
}

/// Appends the commits as `producer`'s transactional batch to the group's offsets
/// partition; they wait there for the transaction's marker.
async fn store(
    ctx: &Rc<ShardCtx>,
    group: &str,
    (producer_id, producer_epoch): (i64, i16),
    (generation, member, instance): (i32, String, Option<String>),
    commits: Vec<(String, i32, Committed)>,
    now: i64,
) -> Result<(), ResponseError> {
    let partition = offsets::partition_for(group);
    let batch = offsets::txn_commit_batch(producer_id, producer_epoch, group, &commits, now);
    let name = group.to_owned();
    ctx.on_coordinator(group, move |c| async move {
        let group = name;
        if generation >= 0 || !member.is_empty() {
            c.groups
                .borrow()
                .validate_commit(
                    &group,
                    generation,
                    &member,
                    instance.as_deref(),
                    c.offsets.borrow().has_offsets(&group),
                )?;
        }
        let part = c
            .partition(OFFSETS_TOPIC, partition)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        part.append_coordinator_batch(batch, None, offsets::OFFSETS_COMMIT_TIMEOUT)
            .await
            .map_err(|e| match e.code {
                ResponseError::InvalidProducerEpoch => ResponseError::ProducerFenced,
                _ => {
                    tracing::warn!(%group, error = %e.message, "storing transactional offsets failed");
                    ResponseError::CoordinatorNotAvailable
                }
            })?;
        c.offsets
            .borrow_mut()
            .put_pending(producer_id, &group, commits);
        Ok(())
    })
    .await
    .and_then(|r| r)
}
