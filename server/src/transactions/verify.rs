//! KIP-890 part 1 on the produce path: before a transactional producer's first write to
//! a partition opens a transaction there, the partition leader asks the id's transaction
//! coordinator whether the producer's open transaction includes the partition — directly
//! when the coordinator is on this broker, with AddPartitionsToTxn v4 (verify only)
//! otherwise. A late or retried write whose transaction already ended is refused, so it
//! cannot open a transaction nobody will end (a "hanging" transaction holding the last
//! stable offset back forever).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_util::lock::Mutex;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::coordinator::transactions::{TXN_TOPIC, partition_for};
use crate::replication::peer::{Conn, call};
use crate::runtime::shard::ShardCtx;

const ADD_PARTITIONS_VERIFY_VERSION: i16 = 4;
const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// This shard's connection to each coordinator broker (one verification at a time
    /// per connection).
    static PEERS: RefCell<HashMap<i32, Rc<Mutex<Option<Conn>>>>> = RefCell::new(HashMap::new());
}

/// What the coordinator said of a transactional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The producer's open transaction includes the partition.
    Included,
    /// It does not (no open transaction, or not this partition).
    NotIncluded,
    /// The producer was fenced: another instance (or the coordinator) bumped the epoch.
    Fenced,
}

/// Whether `producer`'s open transaction (id `id`) includes `topic`-`partition`.
/// Errors: the coordinator could not answer (retriable for the producer).
pub async fn verify(
    ctx: &Rc<ShardCtx>,
    id: &str,
    (producer_id, producer_epoch): (i64, i16),
    topic: &str,
    partition: i32,
) -> Result<Verdict, ResponseError> {
    let image = ctx.broker.image();
    let coordinator = image
        .topic(TXN_TOPIC)
        .and_then(|t| t.state(partition_for(id)))
        .map(|s| s.leader)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let wanted = vec![(topic.to_owned(), partition)];
    if coordinator == ctx.broker.config.node_id {
        let key = id.to_owned();
        return ctx
            .on_txn_coordinator(id, move |c| async move {
                super::verify_partitions(&c, &key, producer_id, producer_epoch, &wanted)
            })
            .await
            .and_then(|r| r)
            .map(|found| {
                if found.first().copied().unwrap_or(false) {
                    Verdict::Included
                } else {
                    Verdict::NotIncluded
                }
            })
            .or_else(refusal);
    }
    let address = image
        .broker_address(coordinator)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let slot = PEERS.with(|p| Rc::clone(p.borrow_mut().entry(coordinator).or_default()));
    let mut conn = slot.lock().await;
    if conn.is_none() {
        *conn = Some(
            Conn::connect(
                &address,
                "ringmq-txn-verification",
                &ctx.broker.inter_broker,
            )
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err(ResponseError::CoordinatorNotAvailable);
    };
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_owned())))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(true)
            .with_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![partition]),
            ]),
    ]);
    let resp: AddPartitionsToTxnResponse = match call(
        c,
        ApiKey::AddPartitionsToTxn,
        ADD_PARTITIONS_VERIFY_VERSION,
        &req,
        VERIFY_TIMEOUT,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(coordinator, error = %e, "transaction verification failed; reconnecting");
            *conn = None;
            return Err(ResponseError::CoordinatorNotAvailable);
        }
    };
    if let Some(e) = ResponseError::try_from_code(resp.error_code) {
        return Err(e);
    }
    let code = resp
        .results_by_transaction
        .iter()
        .flat_map(|t| &t.topic_results)
        .flat_map(|t| &t.results_by_partition)
        .map(|p| p.partition_error_code)
        .next()
        .unwrap_or(ResponseError::UnknownServerError.code());
    match ResponseError::try_from_code(code) {
        None => Ok(Verdict::Included),
        Some(e) => refusal(e),
    }
}

/// The coordinator's refusals as verdicts; other errors stay errors.
fn refusal(e: ResponseError) -> Result<Verdict, ResponseError> {
    match e {
        ResponseError::InvalidTxnState | ResponseError::InvalidProducerIdMapping => {
            Ok(Verdict::NotIncluded)
        }
        ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch => Ok(Verdict::Fenced),
        other => Err(other),
    }
}
