//! A partition's replica state and the high watermark (Kafka's `Partition` rules): the
//! leader tracks each follower's log end offset ([`FollowerState`]); the high watermark is
//! the minimum log end offset over the in-sync replicas, the leader's own counted as
//! durable under a sync-flush policy, and never moves back; acks=all produce is refused
//! up front while the ISR is smaller than `min.insync.replicas` and otherwise waits for
//! the high watermark to pass its records. Followers' fetches and ISR changes are driven
//! from above (`replication/`); this file holds the state they change.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{Either, select};
use kafka_protocol::ResponseError;
use ringmq_engine::{FlushPolicy, Offset};

use crate::storage::now_ms;
use crate::storage::partition::{Partition, PartitionError};

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
        let image = self.image();
        let configs = image.topic(&self.topic).map(|t| &t.configs);
        let get = |k: &str| configs.and_then(|c| c.get(k));
        if get(crate::config::topic_config::SYNC_REPLICATION).is_some_and(|v| v == "true") {
            return self.replica.borrow().replicas.len().max(1);
        }
        get("min.insync.replicas")
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(self.local.min_insync_replicas)
            .max(1) as usize
    }

    /// Leader: resets follower tracking for a new leader epoch.
    pub(crate) fn start_leading(&self) {
        let me = self.node_id();
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
        let me = self.node_id();
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
