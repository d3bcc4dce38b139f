//! Produce (key 0): appends each partition's record batches on the partition's owner
//! shard, all partitions in parallel. acks=0 gets no response (as in Kafka); acks=1 and
//! acks=all are answered once the append is done under the topic's flush policy (on one
//! node all = the leader, durable when `flush.messages=1`).

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use ringmq_engine::LogAppendInfo;

use super::Request;
use super::leader_hint::{LeaderHints, node_endpoints};
use crate::metrics::Metrics;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};
use crate::storage::now_ms;
use crate::storage::partition::PartitionError;
use crate::storage::record_policy::RecordPolicy;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Option<Response>, CloseConnection> {
    let v = req.version();
    let body: ProduceRequest = protocol::decode_body(req.body.clone(), v)?;
    Metrics::add(&ctx.broker.metrics.produce_requests, 1);
    let image = ctx.broker.image();
    let now = now_ms();
    let acks = body.acks;
    let txn_id: Option<String> = body
        .transactional_id
        .as_ref()
        .map(|id| id.0.as_str().to_owned());
    // A transactional producer needs WRITE on its transactional id.
    let txn_denied = body.transactional_id.as_ref().is_some_and(|id| {
        !ctx.broker.authorize(
            &req.session,
            op::WRITE,
            resource::TRANSACTIONAL_ID,
            id.0.as_str(),
        )
    });
    let timeout = std::time::Duration::from_millis(body.timeout_ms.clamp(0, 300_000) as u64);
    let mut topics = Vec::new();
    let mut appends = Vec::new();
    for topic in body.topic_data {
        let meta = if v >= 13 {
            image.topic_by_id(topic.topic_id)
        } else {
            image.topic(topic.name.0.as_str())
        };
        let unknown = if v >= 13 {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let name = meta.map(|m| m.name.clone());
        let policy = meta.map(|m| RecordPolicy::for_topic(&m.configs));
        // WRITE on the topic, checked before its existence (nothing leaks to the denied).
        let auth_name = name.as_deref().unwrap_or(topic.name.0.as_str());
        let denied = !ctx
            .broker
            .authorize(&req.session, op::WRITE, resource::TOPIC, auth_name);
        for p in topic.partition_data {
            let check = || -> Result<(String, usize, Bytes), PartitionError> {
                if !matches!(acks, -1..=1) {
                    return Err(PartitionError::new(
                        ResponseError::InvalidRequiredAcks,
                        format!("acks={acks}"),
                    ));
                }
                if txn_denied {
                    return Err(PartitionError::new(
                        ResponseError::TransactionalIdAuthorizationFailed,
                        "",
                    ));
                }
                if denied {
                    return Err(PartitionError::new(
                        ResponseError::TopicAuthorizationFailed,
                        "",
                    ));
                }
                let meta = meta.ok_or_else(|| PartitionError::new(unknown, "unknown topic"))?;
                let owner = meta.owner_shard(p.index, ctx.shard_count());
                let owner = owner.ok_or_else(|| {
                    PartitionError::new(ResponseError::UnknownTopicOrPartition, "unknown partition")
                })?;
                let records = p.records.clone().ok_or_else(|| {
                    PartitionError::new(ResponseError::CorruptMessage, "null records")
                })?;
                if ringmq_engine::batch::BatchIter::new(&records)
                    .map_while(Result::ok)
                    .any(|(_, h, _)| h.is_control())
                {
                    return Err(PartitionError::new(
                        ResponseError::InvalidRecord,
                        "Clients are not allowed to write control records",
                    ));
                }
                let records = policy
                    .unwrap_or_default()
                    .apply(records, &meta.name, p.index)?;
                Ok((meta.name.clone(), owner, records))
            };
            let index = p.index;
            let checked = check();
            let txn_id = txn_id.clone();
            appends.push(async move {
                let (name, owner, records) = checked?;
                let result = ctx
                    .on_shard(owner, move |c| async move {
                        let Some(part) = c.partition(&name, index) else {
                            return Err(PartitionError::new(
                                ResponseError::NotLeaderOrFollower,
                                "partition not open here",
                            ));
                        };
                        let guard = match (txn_id, part.needs_verification(&records)) {
                            (Some(id), Some(producer)) if part.is_leader() => {
                                Some(verify(&c, &part, &id, producer).await?)
                            }
                            _ => None,
                        };
                        part.append_acked_guarded(records, now, acks, timeout, guard)
                            .await
                    })
                    .await;
                result.unwrap_or_else(|e| {
                    Err(PartitionError::new(
                        ResponseError::UnknownServerError,
                        e.to_string(),
                    ))
                })
            });
            topics.push((topic.name.clone(), topic.topic_id, name.clone(), index));
        }
    }
    let results: Vec<Result<LogAppendInfo, PartitionError>> = join_all(appends).await;
    if acks == 0 {
        return Ok(None);
    }
    let mut responses: Vec<TopicProduceResponse> = Vec::new();
    let mut hints = LeaderHints::new(req.session.listener_name());
    for ((wire_name, topic_id, name, index), result) in topics.into_iter().zip(results) {
        let pr = match result {
            Ok(info) => {
                let r = PartitionProduceResponse::default()
                    .with_index(index)
                    .with_base_offset(info.first_offset.0)
                    .with_log_append_time_ms(info.log_append_time_ms);
                // log_start_offset exists from v5.
                if v >= 5 {
                    r.with_log_start_offset(info.log_start_offset.0)
                } else {
                    r
                }
            }
            Err(mut e) => {
                tracing::debug!(partition = index, code = ?e.code, error = %e.message, "produce failed");
                // KIP-890: from v11 a write outside its transaction is TRANSACTION_ABORTABLE.
                if v >= 11 && e.code == ResponseError::InvalidTxnState {
                    e.code = ResponseError::TransactionAbortable;
                    e.message.clear();
                }
                let mut r = PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(e.code.code())
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                // KIP-951: the current leader, from v10.
                if v >= 10
                    && let Some((leader, epoch)) = name
                        .as_deref()
                        .and_then(|n| hints.hint(&image, n, index, e.code))
                {
                    r = r.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(leader))
                            .with_leader_epoch(epoch),
                    );
                }
                // error_message and record_errors exist from v8.
                if v >= 8 {
                    let record_errors = e
                        .record_errors
                        .into_iter()
                        .map(|(i, m)| {
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(i)
                                .with_batch_index_error_message(Some(StrBytes::from_string(m)))
                        })
                        .collect();
                    // No text where Kafka sends none (authorization): clients print
                    // their own for the code.
                    let message = (!e.message.is_empty()).then(|| StrBytes::from_string(e.message));
                    r.with_error_message(message)
                        .with_record_errors(record_errors)
                } else {
                    r
                }
            }
        };
        match responses.last_mut() {
            Some(t) if t.name == wire_name && t.topic_id == topic_id => {
                t.partition_responses.push(pr)
            }
            _ => responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(wire_name.0.clone()))
                    .with_topic_id(topic_id)
                    .with_partition_responses(vec![pr]),
            ),
        }
    }
    let mut resp = ProduceResponse::default().with_responses(responses);
    if v >= 10 {
        resp.node_endpoints = node_endpoints!(hints, NodeEndpoint);
    }
    protocol::single(ApiKey::Produce, v, req.correlation_id(), &resp).map(Some)
}

/// Verifies a transactional producer's first write to `part` with its coordinator
/// (KIP-890 part 1): the guard to append with, or the error to answer.
async fn verify(
    ctx: &Rc<ShardCtx>,
    part: &crate::storage::partition::Partition,
    id: &str,
    producer: (i64, i16),
) -> Result<crate::storage::partition::VerificationGuard, PartitionError> {
    use crate::transactions::verify::{Verdict, verify as ask_coordinator};
    let guard = part.begin_verification(producer.0);
    match ask_coordinator(ctx, id, producer, &part.topic, part.index).await {
        Ok(Verdict::Included) => Ok(guard),
        Ok(Verdict::NotIncluded) => Err(crate::storage::partition::not_in_transaction()),
        // A zombie: fenced as its write would be on the data path (no text, as Kafka).
        Ok(Verdict::Fenced) => Err(PartitionError::new(ResponseError::InvalidProducerEpoch, "")),
        // The coordinator could not answer: a retriable error, as Kafka answers.
        Err(e) => Err(PartitionError::new(
            ResponseError::NotEnoughReplicas,
            format!("verifying the transaction with its coordinator: {e:?}"),
        )),
    }
}
