//! `LogHandle`: a log as a shard uses it — single-threaded, async, shared by the tasks of
//! one shard (`Rc`). It adds what needs the runtime:
//!
//! - appends by any [`crate::AppendMethod`], serialised per log (one in flight), with no
//!   `RefCell` borrow held across an await;
//! - **group commit** for synchronous-flush logs: an append resolves only after an
//!   fdatasync that started after its write. A waiter not covered by a round in flight
//!   becomes a leader and issues one fdatasync (an io_uring `fsync` op with DATASYNC)
//!   covering everything written so far; appenders that arrive meanwhile wait for a later
//!   round, which again covers all of them with one fdatasync. One round is in flight at
//!   a time ([`SYNC_ROUNDS_IN_FLIGHT_MAX`]): overlapping fdatasyncs of one ext4 file
//!   serialise in the kernel and measured slower (`engine-figures`: 5 instead of 8
//!   appends per fdatasync). A new leader first yields once to the scheduler, so the
//!   appenders the previous round just acknowledged (already runnable) append again and
//!   join this round; otherwise appenders split into two alternating cohorts and each
//!   fdatasync covers only half of them. `syncs` counts rounds so tests can see sharing;
//! - the background flusher loop for asynchronous-flush logs.
//!
//! An fdatasync failure takes the log offline: after a failed fsync the kernel may have
//! dropped the dirty pages, so retrying could report durability that is not there.

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compio::BufResult;
use compio::driver::op::Sync as SyncOp;
use futures_channel::oneshot;
use futures_util::lock::Mutex;

use crate::cleaner::CleanStats;
use crate::config::FlushPolicy;
use crate::error::{AppendError, LogOpError};
use crate::log::{AppendOptions, LogAppendInfo, UnifiedLog};
use crate::offset::Offset;

/// Upper bound on appenders queued behind one group commit before new ones still join
/// (they simply wait one more round); named so the queue is visibly bounded by design:
/// waiters are the in-flight appends of this log, themselves bounded by the shard's
/// admission control.
pub const GROUP_COMMIT_WAITERS_MAX: usize = 65_536;

/// Group-commit rounds (fdatasyncs) of one log in flight at once.
pub const SYNC_ROUNDS_IN_FLIGHT_MAX: usize = 1;

#[derive(Clone)]
pub struct LogHandle {
    inner: Rc<Inner>,
}

struct Inner {
    log: RefCell<UnifiedLog>,
    append_lock: Mutex<()>,
    rounds_in_flight: Cell<usize>,
    /// Highest offset a round in flight will cover.
    in_flight_upto: Cell<Offset>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    syncs: Cell<u64>,
    /// Set when the partition is deleted: its background tasks end quietly.
    closed: Cell<bool>,
    /// Flusher (writeback) jobs running on the blocking pool against this log's files.
    jobs_in_flight: Cell<usize>,
}

/// Returns `Pending` once (re-scheduling itself), letting every runnable task of this loop
/// turn run first: how group commit (here) and produce grouping (the broker) gather work.
pub struct YieldOnce(pub bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Ends a round and wakes waiters even if the leader's future is dropped.
struct LeaderGuard<'a>(&'a Inner);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.0
            .rounds_in_flight
            .set(self.0.rounds_in_flight.get() - 1);
        for w in self.0.waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }
}

impl LogHandle {
    pub fn new(log: UnifiedLog) -> Self {
        LogHandle {
            inner: Rc::new(Inner {
                log: RefCell::new(log),
                append_lock: Mutex::new(()),
                rounds_in_flight: Cell::new(0),
                in_flight_upto: Cell::new(Offset(0)),
                waiters: RefCell::new(Vec::new()),
                syncs: Cell::new(0),
                closed: Cell::new(false),
                jobs_in_flight: Cell::new(0),
            }),
        }
    }

    /// Borrows the log (never hold across an await).
    pub fn log(&self) -> Ref<'_, UnifiedLog> {
        self.inner.log.borrow()
    }

    /// Mutably borrows the log (never hold across an await).
    pub fn log_mut(&self) -> RefMut<'_, UnifiedLog> {
        self.inner.log.borrow_mut()
    }

    /// Marks the log closed (its partition was deleted): the flusher ends at its next
    /// tick, without reporting the missing files as an error.
    pub fn close(&self) {
        self.inner.closed.set(true);
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// Stops every writer of this log's files and returns once none is running: appends
    /// wait behind the returned guard, and no group-commit fdatasync or flusher job is in
    /// flight. While it is held the files on disk are exactly the log (after a
    /// `flush_for_shutdown`), so they can be copied and the log [`Self::replace`]d.
    /// (Retention and compaction are the caller's to keep away.)
    pub async fn quiesce(&self) -> futures_util::lock::MutexGuard<'_, ()> {
        let guard = self.inner.append_lock.lock().await;
        while self.inner.rounds_in_flight.get() > 0 || self.inner.jobs_in_flight.get() > 0 {
            compio::time::sleep(Duration::from_millis(1)).await;
        }
        guard
    }

    /// Puts `log` in place of the current one (same records, files elsewhere: a replica
    /// moved between log directories) and returns the old one. Call under
    /// [`Self::quiesce`].
    pub fn replace(&self, log: UnifiedLog) -> UnifiedLog {
        std::mem::replace(&mut *self.inner.log.borrow_mut(), log)
    }

    /// Group-commit rounds (fdatasyncs) so far.
    pub fn sync_count(&self) -> u64 {
        self.inner.syncs.get()
    }

    /// Appends and, for a synchronous-flush log, waits until the batches are durable.
    pub async fn append(
        &self,
        batches: Vec<Bytes>,
        opts: AppendOptions,
    ) -> Result<LogAppendInfo, AppendError> {
        let info = self.append_written(batches, opts).await?;
        if self.inner.log.borrow().flush_policy() == FlushPolicy::Sync {
            self.wait_durable(info.last_offset.plus(1)).await?;
        }
        Ok(info)
    }

    /// Appends without waiting for durability (callers that hold a lock of their own
    /// across the append, then wait with [`Self::wait_durable`] outside it).
    pub async fn append_written(
        &self,
        batches: Vec<Bytes>,
        opts: AppendOptions,
    ) -> Result<LogAppendInfo, AppendError> {
        let _one_at_a_time = self.inner.append_lock.lock().await;
        let pending = self.inner.log.borrow_mut().prepare_append(batches, opts)?;
        let written = pending.plan.write().await;
        self.inner
            .log
            .borrow_mut()
            .complete_append(pending, written)
    }

    /// Resolves once every offset below `target` is covered by an fdatasync.
    pub async fn wait_durable(&self, target: Offset) -> Result<(), AppendError> {
        loop {
            {
                let log = self.inner.log.borrow();
                if let Some(reason) = log.is_offline() {
                    return Err(AppendError::LogOffline(reason.to_owned()));
                }
                if log.durable_offset() >= target {
                    return Ok(());
                }
            }
            let in_flight = self.inner.rounds_in_flight.get();
            if in_flight >= SYNC_ROUNDS_IN_FLIGHT_MAX
                || (in_flight > 0 && self.inner.in_flight_upto.get() >= target)
            {
                let (tx, rx) = oneshot::channel();
                {
                    let mut waiters = self.inner.waiters.borrow_mut();
                    debug_assert!(waiters.len() < GROUP_COMMIT_WAITERS_MAX);
                    waiters.push(tx);
                }
                let _ = rx.await;
                continue;
            }
            self.lead_group_commit().await?;
        }
    }

    async fn lead_group_commit(&self) -> Result<(), AppendError> {
        self.inner
            .rounds_in_flight
            .set(self.inner.rounds_in_flight.get() + 1);
        let _guard = LeaderGuard(&self.inner);
        let window = self.inner.log.borrow().config().group_commit_window_us;
        if window == 0 {
            YieldOnce(false).await;
        } else {
            compio::time::sleep(Duration::from_micros(window)).await;
        }
        let (upto, files) = self.inner.log.borrow().sync_plan();
        self.inner
            .in_flight_upto
            .set(self.inner.in_flight_upto.get().max(upto));
        let mut result = Ok(());
        for file in files {
            let BufResult(res, _) =
                compio::runtime::submit(SyncOp::new(Arc::clone(&file), true)).await;
            if let Err(e) = res {
                result = Err(e);
                break;
            }
        }
        self.inner.syncs.set(self.inner.syncs.get() + 1);
        match result {
            Ok(_) => {
                self.inner.log.borrow_mut().sync_done(upto);
                Ok(())
            }
            Err(e) => {
                let reason = format!("fdatasync failed: {e}");
                self.inner.log.borrow_mut().mark_offline(reason.clone());
                Err(AppendError::LogOffline(reason))
            }
        }
    }

    /// One compaction round, if due: the rewrite runs on the blocking pool while appends
    /// continue; only the final swap touches the log.
    pub async fn compact(&self, now_ms: i64) -> Result<Option<CleanStats>, LogOpError> {
        let Some(task) = self.inner.log.borrow().clean_task(now_ms) else {
            return Ok(None);
        };
        let cleaned = compio::runtime::spawn_blocking(move || task.run())
            .await
            .map_err(|_| {
                LogOpError::Io(crate::error::IoContext {
                    context: "compaction".into(),
                    source: std::io::Error::other("cleaner thread panicked"),
                })
            })??;
        self.inner
            .log
            .borrow_mut()
            .install_cleaned(cleaned)
            .map(Some)
    }

    /// Runs the flusher for this log until it is closed or offline: every `tick`, starts
    /// due writeback or flushes (on the blocking pool). Errors take the log offline; a
    /// closed log (its partition deleted, files gone) ends the loop quietly.
    ///
    /// No `RefCell` borrow lives across a `match` whose arms borrow again: each borrow
    /// ends with the statement that computes the value matched on.
    pub async fn run_flusher(&self, tick: Duration, now_ms: impl Fn() -> i64) {
        loop {
            compio::time::sleep(tick).await;
            if self.is_closed() || self.inner.log.borrow().is_offline().is_some() {
                return;
            }
            loop {
                let next = self.inner.log.borrow_mut().writeback_job(now_ms());
                let job = match next {
                    Ok(Some(job)) => job,
                    Ok(None) => break,
                    Err(e) => return self.flusher_failed(format!("flusher: {e}")),
                };
                self.inner
                    .jobs_in_flight
                    .set(self.inner.jobs_in_flight.get() + 1);
                let done = compio::runtime::spawn_blocking(move || job.run()).await;
                self.inner
                    .jobs_in_flight
                    .set(self.inner.jobs_in_flight.get() - 1);
                match done {
                    Ok(Ok(done)) => self.inner.log.borrow_mut().writeback_done(done),
                    Ok(Err(e)) => return self.flusher_failed(format!("flusher: {e}")),
                    Err(_) => return self.flusher_failed("flusher job panicked".into()),
                }
            }
        }
    }

    /// Takes the log offline after a failed writeback or flush, unless the log was closed
    /// meanwhile (then the failure is only its files going away).
    fn flusher_failed(&self, reason: String) {
        if self.is_closed() {
            tracing::debug!(reason, "flusher of a closed log stopped");
            return;
        }
        self.inner.log.borrow_mut().mark_offline(reason);
    }
}
