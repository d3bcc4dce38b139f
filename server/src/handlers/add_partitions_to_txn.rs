//! AddPartitionsToTxn (key 24): a transactional producer names the partitions its open
//! transaction writes to before producing there (v0-v3, one transaction). v4+ is the
//! brokers' batched form (CLUSTER_ACTION), including KIP-890's verify-only check.
//! Checks as Kafka: WRITE on the transactional id and on each topic; one bad partition
//! (unknown, or not authorized) fails the request, the others answering
//! OPERATION_NOT_ATTEMPTED.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, TopicName, TransactionalId,
};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: AddPartitionsToTxnRequest = protocol::decode_body(req.body.clone(), v)?;
    let resp = if v <= 3 {
        let topics = one(
            ctx,
            &req,
            &body.v3_and_below_transactional_id,
            (
                body.v3_and_below_producer_id.0,
                body.v3_and_below_producer_epoch,
            ),
            &body.v3_and_below_topics,
            false,
            false,
        )
        .await;
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
    } else if !ctx
        .broker
        .authorize_cluster(&req.session, op::CLUSTER_ACTION)
    {
        AddPartitionsToTxnResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
    } else {
        let mut results = Vec::new();
        for t in &body.transactions {
            let topics = one(
                ctx,
                &req,
                &t.transactional_id,
                (t.producer_id.0, t.producer_epoch),
                &t.topics,
                t.verify_only,
                true,
            )
            .await;
            results.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topics),
            );
        }
        AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
    };
    protocol::single(ApiKey::AddPartitionsToTxn, v, req.correlation_id(), &resp)
}

/// One transaction's partitions: each with its error code. A broker's request (v4+,
/// CLUSTER_ACTION already checked) needs no per-id or per-topic grant.
async fn one(
    ctx: &Rc<ShardCtx>,
    req: &Request,
    id: &TransactionalId,
    (producer_id, producer_epoch): (i64, i16),
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    from_broker: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let id = id.0.as_str().to_owned();
    let image = ctx.broker.image();
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.as_str().to_owned(), *p))
        })
        .collect();
    // Per partition: its own error, if any.
    let own: Vec<Option<ResponseError>> = wanted
        .iter()
        .map(|(t, p)| {
            if !from_broker
                && !ctx
                    .broker
                    .authorize(&req.session, op::WRITE, resource::TOPIC, t)
            {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if image
                .topic(t)
                .is_none_or(|m| *p < 0 || *p as usize >= m.placement.len())
            {
                Some(ResponseError::UnknownTopicOrPartition)
            } else {
                None
            }
        })
        .collect();
    let codes: Vec<ResponseError> =
        if !ctx
            .broker
            .authorize(&req.session, op::WRITE, resource::TRANSACTIONAL_ID, &id)
        {
            vec![ResponseError::TransactionalIdAuthorizationFailed; wanted.len()]
        } else if own.iter().any(Option::is_some) {
            own.iter()
                .map(|e| e.unwrap_or(ResponseError::OperationNotAttempted))
                .collect()
        } else if verify_only {
            let parts = wanted.clone();
            let key = id.clone();
            let verdict = ctx
                .on_txn_coordinator(&id, move |c| async move {
                    crate::transactions::verify_partitions(
                        &c,
                        &key,
                        producer_id,
                        producer_epoch,
                        &parts,
                    )
                })
                .await
                .and_then(|r| r);
            match verdict {
                Ok(found) => found
                    .into_iter()
                    .map(|ok| {
                        if ok {
                            ResponseError::Unknown(0)
                        } else {
                            ResponseError::InvalidTxnState
                        }
                    })
                    .collect(),
                Err(e) => vec![e; wanted.len()],
            }
        } else {
            let parts = wanted.clone();
            let key = id.clone();
            let added = ctx
                .on_txn_coordinator(&id, move |c| async move {
                    crate::transactions::add_partitions(
                        &c,
                        &key,
                        producer_id,
                        producer_epoch,
                        parts,
                    )
                    .await
                })
                .await
                .and_then(|r| r);
            vec![added.err().unwrap_or(ResponseError::Unknown(0)); wanted.len()]
        };
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, partition), code) in wanted.into_iter().zip(codes) {
        let r = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(code.code());
        match out.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.results_by_partition.push(r),
            _ => out.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(topic.into()))
                    .with_results_by_partition(vec![r]),
            ),
        }
    }
    out
}
