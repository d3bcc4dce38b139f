//! Partition replication, Kafka's protocol and rules, as the shards drive it.
//!
//! Leader side (this module): followers fetch with their replica id; each fetch tells the
//! leader the follower's log end offset, which moves the high watermark
//! ([`crate::storage::replica`] holds that state and the rule). A follower that has been
//! caught up to the leader's log end within `replica.lag.time.max.ms` stays in the ISR;
//! one that has not is removed, and a follower outside the ISR that reaches the high
//! watermark (and this leader epoch) is added back — both through the controller
//! (AlterPartition), one change at a time.
//!
//! Follower side: [`fetcher`]. Each published metadata image makes every shard take its
//! partitions' new roles: [`reconcile`].

pub mod fetcher;
pub mod peer;
pub mod reconcile;

use std::rc::Rc;
use std::time::Duration;

use crate::cluster::controller::{Answer, ControllerRequest};
use crate::runtime::shard::ShardCtx;
use crate::storage::now_ms;
use crate::storage::partition::Partition;
use crate::storage::replica::FollowerState;

impl Partition {
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
}

/// Leaders check their followers' lag (`replica.lag.time.max.ms`) a few times per period.
pub async fn isr_loop(ctx: Rc<ShardCtx>) {
    let every =
        Duration::from_millis((ctx.broker.config.replica_lag_time_max_ms / 4).clamp(50, 1000));
    loop {
        compio::time::sleep(every).await;
        for p in ctx.partitions() {
            p.check_isr(&ctx);
        }
    }
}
