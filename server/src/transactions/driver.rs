//! Each shard's transaction driver: every so often it looks at the transactional ids
//! this shard coordinates and finishes what nobody is finishing — a transaction a
//! previous coordinator left deciding (PrepareCommit / PrepareAbort after a failover or
//! restart) gets its markers; an open transaction past its `transaction.timeout.ms` is
//! aborted under a bumped epoch (Kafka's `abortTimedOutTransactions`); an id idle for
//! `transactional.id.expiration.ms` with nothing open is deleted.

use std::rc::Rc;
use std::time::Duration;

use crate::coordinator::transactions::{self, TXN_TOPIC, TxnStatus};
use crate::runtime::shard::ShardCtx;
use crate::storage::now_ms;

/// How often deciding transactions are looked for (a failover's markers wait at most
/// this long); timeouts and expiry are checked at their own intervals.
const LOOK_EVERY: Duration = Duration::from_millis(200);

pub async fn run(ctx: Rc<ShardCtx>) {
    let cleanup_every = ctx
        .broker
        .config
        .transaction_abort_timed_out_transaction_cleanup_interval_ms
        .max(1) as i64;
    let mut last_cleanup = now_ms();
    loop {
        compio::time::sleep(LOOK_EVERY).await;
        if ctx.txns.borrow().iter().next().is_none() {
            continue;
        }
        finish_deciding(&ctx);
        let now = now_ms();
        if now - last_cleanup >= cleanup_every {
            last_cleanup = now;
            abort_timed_out(&ctx, now).await;
            expire_idle(&ctx, now).await;
        }
    }
}

/// Starts the markers of every deciding transaction nobody is completing.
fn finish_deciding(ctx: &Rc<ShardCtx>) {
    let ids: Vec<String> = {
        let mut txns = ctx.txns.borrow_mut();
        let ids: Vec<String> = txns
            .iter()
            .filter(|(_, e)| !e.pending && e.meta.status.is_preparing())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(e) = txns.get_mut(id) {
                e.pending = true;
            }
        }
        ids
    };
    for id in ids {
        tracing::info!(%id, "finishing a transaction a previous coordinator decided");
        let c = Rc::clone(ctx);
        compio::runtime::spawn(async move { super::markers::complete(&c, &id).await }).detach();
    }
}

async fn abort_timed_out(ctx: &Rc<ShardCtx>, now: i64) {
    let expired: Vec<(String, transactions::TxnMetadata)> = ctx
        .txns
        .borrow()
        .iter()
        .filter(|(_, e)| {
            !e.pending
                && e.meta.status == TxnStatus::Ongoing
                && e.meta.start_ms >= 0
                && now - e.meta.start_ms > i64::from(e.meta.timeout_ms)
        })
        .map(|(id, e)| (id.clone(), e.meta.clone()))
        .collect();
    for (id, meta) in expired {
        tracing::info!(%id, producer_id = meta.producer_id, timeout_ms = meta.timeout_ms, "aborting a transaction past its timeout");
        match super::abort_fencing(ctx, &id, meta).await {
            Ok(()) => crate::metrics::Metrics::add(&ctx.broker.metrics.transactions_timed_out, 1),
            Err(e) => tracing::debug!(%id, error = ?e, "timed-out transaction not aborted yet"),
        }
    }
}

async fn expire_idle(ctx: &Rc<ShardCtx>, now: i64) {
    let after = ctx.broker.config.transactional_id_expiration_ms;
    let idle: Vec<String> = ctx
        .txns
        .borrow()
        .iter()
        .filter(|(_, e)| {
            !e.pending
                && matches!(
                    e.meta.status,
                    TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
                )
                && now - e.meta.last_update_ms > after
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in idle {
        let Some(part) = ctx
            .partition(TXN_TOPIC, transactions::partition_for(&id))
            .filter(|p| p.is_leader())
        else {
            continue;
        };
        let batch = transactions::tombstone_batch(&id, now);
        super::set_pending(ctx, &id, true);
        let written = part
            .append_acked(batch, now, -1, super::STATE_WRITE_TIMEOUT)
            .await;
        if written.is_ok() {
            tracing::info!(%id, "transactional id expired");
            ctx.txns.borrow_mut().remove(&id);
        } else {
            super::set_pending(ctx, &id, false);
        }
    }
}
