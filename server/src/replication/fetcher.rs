//! Follower side of replication: fetchers per (shard, leader broker), running on the
//! shard that owns the follower replicas, each batching its partitions into one Kafka
//! Fetch (with this broker's replica id) per round — Kafka's ReplicaFetcherThread, on the
//! data path's own thread. `num.replica.fetchers` (Kafka's key, default 1) splits a
//! shard's partitions of one leader over that many fetchers, each with its own connection:
//! a round trip bounds one fetcher's rate, so more of them replicate more at once. The
//! leader's batches are appended byte for byte with their offsets; the follower's high
//! watermark follows the leader's.
//!
//! After a leader change a follower first truncates to the new leader's history: it asks
//! OffsetForLeaderEpoch for the end of its own latest epoch on the leader and cuts its log
//! there (no divergent suffix survives). A follower behind the leader's log start starts
//! over at it. The fetcher ends when this shard follows nothing from that leader.

use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringmq_engine::Offset;
use ringmq_engine::batch::BatchIter;

use super::peer::{Conn, call};
use crate::metrics::Metrics;
use crate::runtime::shard::ShardCtx;
use crate::storage::now_ms;
use crate::storage::partition::Partition;

/// Fetch version the fetcher speaks (replica id in the request body, leader epochs).
const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Pause after an error before the next round.
const BACKOFF: Duration = Duration::from_millis(100);

/// When a refused replica fetch was last reported (an ERROR every
/// [`crate::security::acl::REPORT_EVERY`]).
static FETCH_REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Starts fetcher `id` for `leader` on this shard unless it runs.
pub fn ensure(ctx: &Rc<ShardCtx>, leader: i32, id: u32) {
    if leader == ctx.broker.config.node_id || !ctx.fetchers.borrow_mut().insert((leader, id)) {
        return;
    }
    let c = Rc::clone(ctx);
    compio::runtime::spawn(async move {
        run(&c, leader, id).await;
        c.fetchers.borrow_mut().remove(&(leader, id));
    })
    .detach();
}

impl Partition {
    /// Which of the `num.replica.fetchers` fetchers for its leader this follower uses.
    pub fn fetcher_id(&self, ctx: &ShardCtx) -> u32 {
        fetcher_for(
            &self.topic,
            self.index,
            ctx.broker.config.num_replica_fetchers,
        )
    }
}

/// Kafka's fetcher choice: `Utils.abs(31 * topic.hashCode() + partition) % fetchers`, with
/// Java's String hash (UTF-16 units, wrapping) and `Utils.abs(Integer.MIN_VALUE) == 0`.
fn fetcher_for(topic: &str, partition: i32, fetchers: u32) -> u32 {
    let hash = topic
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let h = hash.wrapping_mul(31).wrapping_add(partition);
    if h == i32::MIN {
        0
    } else {
        h.unsigned_abs() % fetchers.max(1)
    }
}

/// This shard's replicas that follow `leader` through fetcher `id`.
fn followed(ctx: &ShardCtx, leader: i32, id: u32) -> Vec<Rc<Partition>> {
    let me = ctx.broker.config.node_id;
    ctx.partitions()
        .into_iter()
        .filter(|p| {
            let r = p.replica.borrow();
            r.leader == leader && r.replicas.contains(&me)
        })
        .filter(|p| p.fetcher_id(ctx) == id)
        .collect()
}

async fn run(ctx: &Rc<ShardCtx>, leader: i32, id: u32) {
    let mut conn: Option<Conn> = None;
    loop {
        let parts = followed(ctx, leader, id);
        if parts.is_empty() {
            return;
        }
        let address = ctx.broker.image().broker_address(leader);
        let Some(address) = address else {
            compio::time::sleep(BACKOFF).await;
            continue;
        };
        if conn.is_none() {
            match Conn::connect(&address, "ringmq-replica-fetcher", &ctx.broker.inter_broker).await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(leader, %address, error = %e, "replica fetcher cannot connect");
                    compio::time::sleep(BACKOFF).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let (truncating, ready): (Vec<_>, Vec<_>) = parts
            .into_iter()
            .partition(|p| p.repl.borrow().needs_truncation);
        // The follower throttle: a replica outside the ISR waits while the rate is used.
        let quota = &ctx.broker.quotas.follower;
        let (ready, held): (Vec<_>, Vec<_>) = ready.into_iter().partition(|p| {
            !ctx.broker.quotas.follower_throttled(p)
                || p.replica.borrow().isr.contains(&ctx.broker.config.node_id)
                || quota.wait().is_zero()
        });
        if truncating.is_empty() && ready.is_empty() {
            Metrics::add(&quota.held_back, held.len() as u64);
            compio::time::sleep(quota.wait().max(Duration::from_millis(5))).await;
            continue;
        }
        let result = if truncating.is_empty() {
            let started = std::time::Instant::now();
            // Held-back replicas are due again after the throttle's wait: a round of the
            // others must not long-poll past it.
            let max_wait = Duration::from_millis(ctx.broker.config.replica_fetch_wait_max_ms);
            let max_wait = if held.is_empty() {
                max_wait
            } else {
                max_wait.min(quota.wait().max(Duration::from_millis(1)))
            };
            let r = fetch(ctx, c, &ready, max_wait).await;
            let m = &ctx.broker.metrics;
            Metrics::add(&m.replica_fetch_rounds, 1);
            Metrics::add(
                &m.replica_fetch_round_us,
                started.elapsed().as_micros() as u64,
            );
            r
        } else {
            truncate(ctx, c, &truncating).await
        };
        match result {
            Ok(true) => {}
            Ok(false) => compio::time::sleep(BACKOFF).await,
            Err(e) => {
                tracing::debug!(leader, error = %e, "replica fetch failed; reconnecting");
                conn = None;
                compio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// One fetch round for `parts`. `Ok(false)` asks for a pause (errors answered).
async fn fetch(
    ctx: &Rc<ShardCtx>,
    c: &mut Conn,
    parts: &[Rc<Partition>],
    max_wait: Duration,
) -> io::Result<bool> {
    let cfg = &ctx.broker.config;
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for p in parts {
        let log = p.log.log();
        topics.entry(&p.topic).or_default().push(
            FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(p.leader_epoch())
                .with_fetch_offset(log.log_end_offset().0)
                .with_last_fetched_epoch(log.leader_epochs().latest_epoch().unwrap_or(-1))
                .with_log_start_offset(log.log_start_offset().0)
                .with_partition_max_bytes(cfg.replica_fetch_max_bytes),
        );
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(cfg.node_id))
        .with_max_wait_ms(i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(1)
        .with_max_bytes(cfg.replica_fetch_response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.to_owned())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let timeout = max_wait + Duration::from_secs(30);
    let resp: FetchResponse = call(c, ApiKey::Fetch, FETCH_VERSION, &req, timeout).await?;
    if resp.error_code != 0 {
        return Ok(false);
    }
    let mut healthy = true;
    for t in resp.responses {
        for pd in t.partitions {
            let Some(part) = parts
                .iter()
                .find(|p| p.topic.as_ref() == t.topic.0.as_str() && p.index == pd.partition_index)
            else {
                continue;
            };
            match ResponseError::try_from_code(pd.error_code) {
                None => {
                    if let Some(records) = pd.records.filter(|r| !r.is_empty()) {
                        let records = whole_batches(records);
                        if !records.is_empty() {
                            let len = records.len() as u64;
                            Metrics::add(&ctx.broker.metrics.replica_fetch_bytes, len);
                            if ctx.broker.quotas.follower_throttled(part) {
                                ctx.broker.quotas.follower.record(len);
                            }
                            match part.append_replicated(records, now_ms()).await {
                                Ok(_) => {}
                                Err(ringmq_engine::AppendError::OffsetsOutOfOrder { .. }) => {
                                    part.repl.borrow_mut().needs_truncation = true;
                                }
                                Err(e) => {
                                    tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "appending replicated records failed");
                                    healthy = false;
                                }
                            }
                        }
                    }
                    let mut log = part.log.log_mut();
                    let hw = Offset(pd.high_watermark.min(log.log_end_offset().0));
                    log.update_high_watermark(hw);
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    let leo = part.log.log().log_end_offset().0;
                    if pd.log_start_offset > leo {
                        if let Err(e) = part.restart_at(Offset(pd.log_start_offset)).await {
                            tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "restarting the follower log failed");
                        }
                    } else {
                        part.repl.borrow_mut().needs_truncation = true;
                    }
                }
                Some(ResponseError::ClusterAuthorizationFailed) => {
                    if crate::security::acl::due_to_report(&FETCH_REFUSED) {
                        let leader = part.replica.borrow().leader;
                        tracing::error!(
                            leader,
                            "the leader refuses this broker's replica fetches (CLUSTER_AUTHORIZATION_FAILED): its inter-broker principal lacks CLUSTER_ACTION, so its replicas fall out of sync"
                        );
                    }
                    healthy = false;
                }
                Some(e) => {
                    tracing::debug!(topic = %part.topic, partition = part.index, error = ?e, "replica fetch error");
                    healthy = false;
                }
            }
        }
    }
    Ok(healthy)
}

/// The prefix of `records` made of whole batches (a fetch may end mid-batch).
fn whole_batches(records: Bytes) -> Bytes {
    let mut end = 0;
    for item in BatchIter::new(&records) {
        match item {
            Ok((at, h, _)) => end = at + h.total_size(),
            Err(_) => break,
        }
    }
    records.slice(..end)
}

/// Truncates each of `parts` to where its latest epoch ends on the leader.
async fn truncate(ctx: &Rc<ShardCtx>, c: &mut Conn, parts: &[Rc<Partition>]) -> io::Result<bool> {
    let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut asked = Vec::new();
    for p in parts {
        let latest = p.log.log().leader_epochs().latest_epoch();
        let Some(epoch) = latest else {
            // No epoch history (an empty log, or one written before epochs were kept):
            // what is above the high watermark may be divergent.
            let hw = p.log.log().high_watermark();
            if let Err(e) = p.truncate_to(hw).await {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "follower truncation failed");
                continue;
            }
            p.repl.borrow_mut().needs_truncation = false;
            continue;
        };
        asked.push((Rc::clone(p), epoch));
        topics.entry(&p.topic).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(p.leader_epoch())
                .with_leader_epoch(epoch),
        );
    }
    if asked.is_empty() {
        return Ok(true);
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(ctx.broker.config.node_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.to_owned())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let resp: OffsetForLeaderEpochResponse = call(
        c,
        ApiKey::OffsetForLeaderEpoch,
        OFFSET_FOR_LEADER_EPOCH_VERSION,
        &req,
        Duration::from_secs(30),
    )
    .await?;
    let mut healthy = true;
    for t in resp.topics {
        for r in t.partitions {
            let Some((part, asked_epoch)) = asked
                .iter()
                .find(|(p, _)| p.topic.as_ref() == t.topic.0.as_str() && p.index == r.partition)
            else {
                continue;
            };
            if r.error_code != 0 {
                healthy = false;
                continue;
            }
            let (leo, hw) = {
                let log = part.log.log();
                (log.log_end_offset(), log.high_watermark())
            };
            let target = if r.end_offset < 0 {
                // The leader knows no epoch at or below ours: keep what is committed.
                hw
            } else {
                // If the leader's answer is an older epoch, our own end of that epoch
                // bounds it too.
                let own_end = if r.leader_epoch < *asked_epoch {
                    part.log
                        .log()
                        .leader_epochs()
                        .end_offset_for(r.leader_epoch, leo)
                        .map_or(leo, |(_, end)| end)
                } else {
                    leo
                };
                Offset(r.end_offset).min(own_end).min(leo)
            };
            if target < leo {
                tracing::info!(topic = %part.topic, partition = part.index, from = leo.0, to = target.0, "truncating the follower to the leader's history");
            }
            match part.truncate_to(target).await {
                Ok(()) => part.repl.borrow_mut().needs_truncation = false,
                Err(e) => {
                    tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "follower truncation failed");
                    healthy = false;
                }
            }
        }
    }
    Ok(healthy)
}

#[cfg(test)]
mod tests {
    use super::fetcher_for;

    #[test]
    fn partitions_spread_over_fetchers_as_kafka_spreads_them() {
        // "t3".hashCode() == 3647 in Java; 31 * 3647 == 113057, and 113057 % 4 == 1.
        let ids: Vec<u32> = (0..6).map(|p| fetcher_for("t3", p, 4)).collect();
        assert_eq!(ids, vec![1, 2, 3, 0, 1, 2]);
        // One fetcher takes everything.
        assert!((0..100).all(|p| fetcher_for("orders", p, 1) == 0));
        // A negative hash ("__consumer_offsets" overflows) still lands in range.
        assert!((0..50).all(|p| fetcher_for("__consumer_offsets", p, 3) < 3));
    }
}
