//! The transactions room: the transaction coordinator at work (KIP-98, Kafka's
//! `TransactionCoordinator`). Each operation runs on the shard that owns the
//! transactional id's `__transaction_state` partition and changes the id's state only
//! after the new state is in that partition's in-sync replicas ([`write_state`]); while a
//! change or a transaction's end is in flight, other requests for the id answer
//! CONCURRENT_TRANSACTIONS. Ending a transaction writes its markers to every partition
//! it touched ([`markers`]); each shard's [`driver`] finishes transactions a previous
//! coordinator left deciding and aborts those past their timeout.

pub mod driver;
pub mod markers;
pub mod producer_ids;
pub mod verify;

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::ResponseError;

use crate::coordinator::transactions::{self, TXN_TOPIC, TxnMetadata, TxnStatus};
use crate::runtime::shard::ShardCtx;
use crate::storage::now_ms;

/// How long a state change waits for the in-sync replicas.
pub const STATE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes `meta` as `id`'s state (acks=all) and caches it. Kafka's error mapping: a
/// partition led elsewhere is NOT_COORDINATOR, too few replicas or a timeout
/// COORDINATOR_NOT_AVAILABLE.
pub async fn write_state(
    ctx: &Rc<ShardCtx>,
    id: &str,
    meta: TxnMetadata,
) -> Result<(), ResponseError> {
    let partition = transactions::partition_for(id);
    let part = ctx
        .partition(TXN_TOPIC, partition)
        .filter(|p| p.is_leader())
        .ok_or(ResponseError::NotCoordinator)?;
    let loaded_epoch = ctx.txns.borrow().coordinator_epoch(partition);
    if loaded_epoch != Some(part.leader_epoch()) {
        return Err(ResponseError::NotCoordinator);
    }
    let now = now_ms();
    let batch = transactions::state_batch(id, &meta, now);
    part.append_acked(batch, now, -1, STATE_WRITE_TIMEOUT)
        .await
        .map_err(|e| {
            tracing::debug!(%id, error = %e.message, "writing transaction state failed");
            match e.code {
                ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator,
                _ => ResponseError::CoordinatorNotAvailable,
            }
        })?;
    // The coordinator may have moved while the write was waiting.
    if ctx.txns.borrow().coordinator_epoch(partition) != loaded_epoch {
        return Err(ResponseError::NotCoordinator);
    }
    ctx.txns.borrow_mut().put(id, meta);
    Ok(())
}

/// Marks `id` busy, or no longer (requests for a busy id: CONCURRENT_TRANSACTIONS).
fn set_pending(ctx: &ShardCtx, id: &str, pending: bool) {
    if let Some(e) = ctx.txns.borrow_mut().get_mut(id) {
        e.pending = pending;
    }
}

/// Checks a request's producer id and epoch against the id's state.
fn check_producer(
    meta: &TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<(), ResponseError> {
    if producer_id != meta.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if producer_epoch != meta.producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    Ok(())
}

/// The current state of `id`, unless a change to it is in flight.
fn settled(ctx: &ShardCtx, id: &str) -> Result<Option<TxnMetadata>, ResponseError> {
    match ctx.txns.borrow().get(id) {
        Some(e) if e.pending => Err(ResponseError::ConcurrentTransactions),
        Some(e) => Ok(Some(e.meta.clone())),
        None => Ok(None),
    }
}

/// InitProducerId with a transactional id: a new producer id (epoch 0) for a new id;
/// otherwise the epoch is bumped, which fences every older instance. An open
/// transaction is aborted first (the caller retries on CONCURRENT_TRANSACTIONS).
/// `expected` is the producer id and epoch the client already has (KIP-360), if any.
pub async fn init_producer_id(
    ctx: &Rc<ShardCtx>,
    id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), ResponseError> {
    if timeout_ms <= 0 || timeout_ms > ctx.broker.config.transaction_max_timeout_ms {
        return Err(ResponseError::InvalidTransactionTimeout);
    }
    let now = now_ms();
    let Some(meta) = settled(ctx, id)? else {
        let producer_id = producer_ids::allocate(ctx).await?;
        // Another request for the id may have created it while the id was allocated.
        if settled(ctx, id)?.is_some() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let meta = TxnMetadata {
            producer_id,
            producer_epoch: 0,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now,
            start_ms: -1,
        };
        ctx.txns.borrow_mut().put(id, meta.clone());
        set_pending(ctx, id, true);
        let written = write_state(ctx, id, meta).await;
        set_pending(ctx, id, false);
        if written.is_err() {
            ctx.txns.borrow_mut().remove(id);
        }
        return written.map(|()| (producer_id, 0));
    };
    if let Some((pid, epoch)) = expected
        && (pid != meta.producer_id
            || (epoch != meta.producer_epoch && epoch != meta.producer_epoch - 1))
    {
        return Err(ResponseError::ProducerFenced);
    }
    match meta.status {
        TxnStatus::PrepareCommit
        | TxnStatus::PrepareAbort
        | TxnStatus::PrepareEpochFence
        | TxnStatus::Dead => Err(ResponseError::ConcurrentTransactions),
        TxnStatus::Ongoing => {
            // The open transaction of an older instance is aborted under a new epoch.
            abort_fencing(ctx, id, meta).await?;
            Err(ResponseError::ConcurrentTransactions)
        }
        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
            let (producer_id, producer_epoch) = if meta.producer_epoch >= i16::MAX - 1 {
                (producer_ids::allocate(ctx).await?, 0)
            } else {
                (meta.producer_id, meta.producer_epoch + 1)
            };
            let next = TxnMetadata {
                producer_id,
                producer_epoch,
                timeout_ms,
                status: TxnStatus::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now,
                start_ms: -1,
            };
            set_pending(ctx, id, true);
            let written = write_state(ctx, id, next).await;
            set_pending(ctx, id, false);
            written.map(|()| (producer_id, producer_epoch))
        }
    }
}

/// Aborts `id`'s open transaction under a bumped epoch (a new instance took the id, or
/// the transaction timed out): the old instance is fenced from then on.
pub async fn abort_fencing(
    ctx: &Rc<ShardCtx>,
    id: &str,
    meta: TxnMetadata,
) -> Result<(), ResponseError> {
    let next = TxnMetadata {
        producer_epoch: meta.producer_epoch.saturating_add(1),
        status: TxnStatus::PrepareAbort,
        last_update_ms: now_ms(),
        ..meta
    };
    decide(ctx, id, next).await
}

/// Writes a Prepare* state and hands the transaction to [`markers::complete`] (the id
/// stays busy until its markers are written and its end recorded).
async fn decide(ctx: &Rc<ShardCtx>, id: &str, next: TxnMetadata) -> Result<(), ResponseError> {
    set_pending(ctx, id, true);
    if let Err(e) = write_state(ctx, id, next).await {
        set_pending(ctx, id, false);
        return Err(e);
    }
    let c = Rc::clone(ctx);
    let id = id.to_owned();
    compio::runtime::spawn(async move { markers::complete(&c, &id).await }).detach();
    Ok(())
}

/// AddPartitionsToTxn (and AddOffsetsToTxn's offsets partition): the transaction is
/// open from its first partition on.
pub async fn add_partitions(
    ctx: &Rc<ShardCtx>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, i32)>,
) -> Result<(), ResponseError> {
    let meta = settled(ctx, id)?.ok_or(ResponseError::InvalidProducerIdMapping)?;
    check_producer(&meta, producer_id, producer_epoch)?;
    match meta.status {
        TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
            return Err(ResponseError::ConcurrentTransactions);
        }
        TxnStatus::PrepareEpochFence | TxnStatus::Dead => {
            return Err(ResponseError::InvalidTxnState);
        }
        _ => {}
    }
    let open = meta.status == TxnStatus::Ongoing;
    if open && partitions.iter().all(|p| meta.partitions.contains(p)) {
        return Ok(());
    }
    let now = now_ms();
    let mut next = meta;
    if !open {
        next.partitions.clear();
        next.start_ms = now;
    }
    next.status = TxnStatus::Ongoing;
    next.partitions.extend(partitions);
    next.last_update_ms = now;
    set_pending(ctx, id, true);
    let written = write_state(ctx, id, next).await;
    set_pending(ctx, id, false);
    written
}

/// AddPartitionsToTxn v4+'s verify-only form (KIP-890): whether the partitions are in
/// the producer's open transaction.
pub fn verify_partitions(
    ctx: &ShardCtx,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
) -> Result<Vec<bool>, ResponseError> {
    let txns = ctx.txns.borrow();
    let meta = &txns
        .get(id)
        .ok_or(ResponseError::InvalidProducerIdMapping)?
        .meta;
    check_producer(meta, producer_id, producer_epoch)?;
    Ok(partitions
        .iter()
        .map(|p| meta.status == TxnStatus::Ongoing && meta.partitions.contains(p))
        .collect())
}

/// EndTxn: records the decision (PrepareCommit / PrepareAbort) and answers; the markers
/// follow. A retried EndTxn for a decision already taken is answered as the first.
pub async fn end_txn(
    ctx: &Rc<ShardCtx>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<(), ResponseError> {
    let meta = settled(ctx, id)?.ok_or(ResponseError::InvalidProducerIdMapping)?;
    check_producer(&meta, producer_id, producer_epoch)?;
    let same = |c: bool| {
        if c == commit {
            Err(ResponseError::ConcurrentTransactions)
        } else {
            Err(ResponseError::InvalidTxnState)
        }
    };
    match meta.status {
        TxnStatus::Ongoing => {
            let next = TxnMetadata {
                status: if commit {
                    TxnStatus::PrepareCommit
                } else {
                    TxnStatus::PrepareAbort
                },
                last_update_ms: now_ms(),
                ..meta
            };
            decide(ctx, id, next).await
        }
        TxnStatus::PrepareCommit => same(true),
        TxnStatus::PrepareAbort => same(false),
        TxnStatus::CompleteCommit if commit => Ok(()),
        TxnStatus::CompleteAbort if !commit => Ok(()),
        _ => Err(ResponseError::InvalidTxnState),
    }
}
