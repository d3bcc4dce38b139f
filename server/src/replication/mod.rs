//! Partition replication, Kafka's protocol and rules.
//!
//! Leader side (this module): followers fetch with their replica id; each fetch tells the
//! leader the follower's log end offset. The high watermark is the minimum log end offset
//! over the in-sync replicas (the leader's own counted as durable under a sync-flush
//! policy), never moving back. A follower that has been caught up to the leader's log end
//! within `replica.lag.time.max.ms` stays in the ISR; one that has not is removed, and a
//! follower outside the ISR that reaches the high watermark (and this leader epoch) is
//! added back — both through the controller (AlterPartition), one change at a time.
//! acks=all produce waits for the high watermark to pass its records, refused up front
//! with NOT_ENOUGH_REPLICAS while the ISR is smaller than `min.insync.replicas`.
//!
//! Follower side: [`fetcher`].

pub mod fetcher;
pub mod throttle;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{Either, select};
use kafka_protocol::ResponseError;
use ringmq_engine::{FlushPolicy, Offset};

use crate::cluster::controller::{Answer, ControllerRequest};
use crate::partition::{Partition, PartitionError};
use crate::shard::{ShardCtx, now_ms};

/// A follower as its leader sees it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerState {
    /// Its log end offset (its last fetch offset); -1 until it fetches.
    pub log_end_offset: i64,
    /// Last time it was caught up to the leader's log end (Kafka's lastCaughtUpTimeMs).
    pub last_caught_up_ms: i64,
    /// When it last fetched, and the leader's log end then.
    pub last_fetch_ms: i64,
    pub leader_end_at_last_fetch: i64,
}

/// Replication state of one partition on its owner shard.
#[derive(Debug, Default)]
pub struct ReplicationState {
    /// Leader: the followers' fetch state.
    pub followers: HashMap<i32, FollowerState>,
    /// Leader: an AlterPartition is in flight.
    pub isr_change_pending: bool,
    /// Follower: truncate to the leader's history before the next fetch.
    pub needs_truncation: bool,
}

impl Partition {
    /// `min.insync.replicas` for this partition's topic; with synchronous replication
    /// (SPEC T5) every assigned replica.
    pub fn min_insync_replicas(&self) -> usize {
        let image = self.broker.image();
        let configs = image.topic(&self.topic).map(|t| &t.configs);
        let get = |k: &str| configs.and_then(|c| c.get(k));
        if get(crate::topic_config::SYNC_REPLICATION).is_some_and(|v| v == "true") {
            return self.replica.borrow().replicas.len().max(1);
        }
        get("min.insync.replicas")
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(self.broker.config.min_insync_replicas)
            .max(1) as usize
    }

    /// Leader: resets follower tracking for a new leader epoch.
    pub(crate) fn start_leading(&self) {
        let me = self.broker.config.node_id;
        let now = now_ms();
        let replicas = self.replica.borrow().replicas.clone();
        let mut repl = self.repl.borrow_mut();
        repl.followers = replicas
            .into_iter()
            .filter(|r| *r != me)
            .map(|r| {
                (
                    r,
                    FollowerState {
                        log_end_offset: -1,
                        last_caught_up_ms: now,
                        last_fetch_ms: now,
                        leader_end_at_last_fetch: -1,
                    },
                )
            })
            .collect();
        repl.isr_change_pending = false;
        repl.needs_truncation = false;
    }

    /// The high watermark the replicas allow: the leader's own end (durable under a
    /// sync-flush policy) bounded by every in-sync follower's log end.
    fn replicated_high_watermark(&self) -> Offset {
        let own = {
            let log = self.log.log();
            match log.flush_policy() {
                FlushPolicy::Sync => log.durable_offset(),
                FlushPolicy::Async => log.log_end_offset(),
            }
        };
        let me = self.broker.config.node_id;
        let replica = self.replica.borrow();
        if replica.leader != me {
            return self.log.log().high_watermark();
        }
        let repl = self.repl.borrow();
        let mut hw = own.0;
        for r in replica.isr.iter().filter(|r| **r != me) {
            let leo = repl.followers.get(r).map_or(-1, |f| f.log_end_offset);
            hw = hw.min(leo);
        }
        Offset(hw)
    }

    /// Recomputes the high watermark (never backwards); wakes waiters if it moved.
    pub fn refresh_high_watermark(&self) -> Offset {
        let target = self.replicated_high_watermark();
        let (before, after) = {
            let mut log = self.log.log_mut();
            let before = log.high_watermark();
            let after = if target > before {
                log.update_high_watermark(target)
            } else {
                before
            };
            (before, after)
        };
        if after > before {
            self.wake_fetchers();
        }
        after
    }

    /// Leader: a follower fetched from `offset` (its log end). Updates its state, the
    /// high watermark, and asks to add it back to the ISR when it has caught up.
    pub fn follower_fetched(self: &Rc<Self>, ctx: &Rc<ShardCtx>, follower: i32, offset: i64) {
        let now = now_ms();
        let leo = self.log.log().log_end_offset().0;
        {
            let mut repl = self.repl.borrow_mut();
            let f = repl.followers.entry(follower).or_insert(FollowerState {
                log_end_offset: -1,
                last_caught_up_ms: now,
                last_fetch_ms: now,
                leader_end_at_last_fetch: -1,
            });
            if offset >= leo {
                f.last_caught_up_ms = now;
            } else if offset >= f.leader_end_at_last_fetch && f.leader_end_at_last_fetch >= 0 {
                f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
            }
            f.log_end_offset = offset;
            f.last_fetch_ms = now;
            f.leader_end_at_last_fetch = leo;
        }
        self.refresh_high_watermark();
        let (in_isr, is_replica) = {
            let r = self.replica.borrow();
            (r.isr.contains(&follower), r.replicas.contains(&follower))
        };
        if !in_isr && is_replica {
            let hw = self.log.log().high_watermark().0;
            let epoch_start = self
                .log
                .log()
                .leader_epochs()
                .entries()
                .last()
                .map_or(0, |e| e.start_offset.0);
            if offset >= hw && offset >= epoch_start {
                let mut isr = self.replica.borrow().isr.clone();
                isr.push(follower);
                self.alter_isr(ctx, isr);
            }
        }
    }

    /// Leader: removes followers that have not caught up within `replica.lag.time.max.ms`.
    pub fn check_isr(self: &Rc<Self>, ctx: &Rc<ShardCtx>) {
        if !self.is_leader() {
            return;
        }
        let lag = ctx.broker.config.replica_lag_time_max_ms as i64;
        let now = now_ms();
        let me = ctx.broker.config.node_id;
        let isr = self.replica.borrow().isr.clone();
        let out_of_sync: Vec<i32> = {
            let repl = self.repl.borrow();
            isr.iter()
                .copied()
                .filter(|r| *r != me)
                .filter(|r| {
                    repl.followers
                        .get(r)
                        .is_none_or(|f| now - f.last_caught_up_ms > lag)
                })
                .collect()
        };
        if out_of_sync.is_empty() {
            return;
        }
        let new: Vec<i32> = isr
            .into_iter()
            .filter(|r| !out_of_sync.contains(r))
            .collect();
        self.alter_isr(ctx, new);
    }

    /// Proposes a new ISR to the controller (one change in flight per partition).
    fn alter_isr(self: &Rc<Self>, ctx: &Rc<ShardCtx>, isr: Vec<i32>) {
        {
            let mut repl = self.repl.borrow_mut();
            if repl.isr_change_pending {
                return;
            }
            repl.isr_change_pending = true;
        }
        let state = self.replica.borrow().clone();
        if isr.len() > state.isr.len() {
            tracing::info!(topic = %self.topic, partition = self.index, from = ?state.isr, to = ?isr, "follower caught up: expanding the ISR");
        } else {
            tracing::warn!(topic = %self.topic, partition = self.index, from = ?state.isr, to = ?isr, "followers fell behind replica.lag.time.max.ms: shrinking the ISR");
        }
        let req = ControllerRequest::AlterPartition {
            name: self.topic.to_string(),
            partition: self.index,
            leader: state.leader,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr,
        };
        let (part, ctx) = (Rc::clone(self), Rc::clone(ctx));
        compio::runtime::spawn(async move {
            let result = ctx.broker.cluster.submit(req).await;
            part.repl.borrow_mut().isr_change_pending = false;
            match result {
                Ok((_, Answer::Partition(s))) => {
                    if s.leader_epoch == part.leader_epoch() {
                        part.replica.replace(s);
                    }
                    part.refresh_high_watermark();
                    part.wake_fetchers();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(topic = %part.topic, partition = part.index, error = %e.message, "ISR change refused")
                }
            }
        })
        .detach();
    }

    /// acks=all: refuses when the ISR is below `min.insync.replicas`.
    pub fn check_min_isr(&self, code: ResponseError) -> Result<(), PartitionError> {
        let isr = self.replica.borrow().isr.len();
        let min = self.min_insync_replicas();
        if isr < min {
            return Err(PartitionError::new(
                code,
                format!(
                    "the ISR of {}-{} has {isr} replica(s), min.insync.replicas is {min}",
                    self.topic, self.index
                ),
            ));
        }
        Ok(())
    }

    /// acks=all: waits until the high watermark reaches `target` (every in-sync replica
    /// has the records), at most `timeout`.
    pub async fn wait_replicated(
        &self,
        target: Offset,
        timeout: Duration,
    ) -> Result<(), PartitionError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.log.log().high_watermark() >= target {
                return Ok(());
            }
            if !self.is_leader() {
                return Err(PartitionError::new(
                    ResponseError::NotLeaderOrFollower,
                    "leadership moved before the records were replicated",
                ));
            }
            self.check_min_isr(ResponseError::NotEnoughReplicasAfterAppend)?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(PartitionError::new(
                    ResponseError::RequestTimedOut,
                    "the in-sync replicas did not acknowledge in time",
                ));
            }
            let rx = self.watch();
            let sleep = Box::pin(compio::time::sleep(left.min(Duration::from_millis(200))));
            if let Either::Right(_) = select(rx, sleep).await {
                // Re-check the ISR and leadership at least every 200 ms.
            }
        }
    }
}
