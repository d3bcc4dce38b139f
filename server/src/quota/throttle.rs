//! Replication throttles: Kafka's replication quotas, in bytes per second per broker.
//!
//! Two dynamic broker configs set the rates: `leader.replication.throttled.rate` caps what
//! a leader sends to followers and `follower.replication.throttled.rate` what a follower
//! fetches (per broker with `kafka-configs --entity-type brokers --entity-name N`, or for
//! every broker with `--entity-default`; unset means no cap). Two topic configs choose the
//! replicas they apply to: `leader.replication.throttled.replicas` and
//! `follower.replication.throttled.replicas`, each `*` or a list of `partition:broker`
//! (the broker being the replica on the side that throttles). `kafka-reassign-partitions
//! --throttle` sets all four for a move: the existing replicas as leaders, the added ones
//! as followers.
//!
//! As in Kafka, every byte of a throttled replica counts against the rate (replication
//! for new records as well as the move), but only a replica outside the ISR is held back:
//! a leader answers its fetch with no records, a follower leaves it out of its next fetch,
//! while the rate is used up. In-sync followers are never slowed, so acks=all producers
//! are not either. The bucket is per broker (a move's partitions may sit on any shard);
//! its lock is only taken for throttled replicas, never on the produce or consume path.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metadata::MetadataImage;
use crate::storage::partition::Partition;

pub use crate::config::topic_config::{FOLLOWER_REPLICAS, LEADER_REPLICAS, validate_replica_list};

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";

/// Broker configs that can be changed at run time (IncrementalAlterConfigs on a BROKER
/// resource), stored in the metadata log.
pub const DYNAMIC_BROKER_KEYS: &[&str] = &[LEADER_RATE, FOLLOWER_RATE];

/// No cap (Kafka's default, `Long.MAX_VALUE`).
const UNLIMITED: u64 = i64::MAX as u64;

/// Idle time banks at most this much of the rate: a move that starts after a pause does
/// not burst past the cap for long.
const BURST_SECONDS: f64 = 0.2;

/// Checks one dynamic broker config value.
pub fn validate_broker_config(key: &str, value: &str) -> Result<(), String> {
    if !DYNAMIC_BROKER_KEYS.contains(&key) {
        return Err(format!(
            "{key} cannot be changed at run time (dynamic broker configs: {}); set it in server.properties",
            DYNAMIC_BROKER_KEYS.join(", ")
        ));
    }
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err(format!(
            "{key}={value}: expected a rate in bytes per second (>= 0)"
        )),
    }
}

/// Whether `list` (a throttled-replicas value) names `broker`'s replica of `partition`.
pub fn lists(list: &str, partition: i32, broker: i32) -> bool {
    let list = list.trim();
    list == "*"
        || list.split(',').any(|item| {
            item.trim().split_once(':').is_some_and(|(p, b)| {
                p.trim().parse::<i32>() == Ok(partition) && b.trim().parse::<i32>() == Ok(broker)
            })
        })
}

/// The effective value of a dynamic broker config for `broker`: its own, else the
/// cluster-wide default (resource name "").
pub fn dynamic_config<'a>(image: &'a MetadataImage, broker: i32, key: &str) -> Option<&'a str> {
    let own = image.broker_configs.get(&broker.to_string());
    let default = image.broker_configs.get("");
    own.and_then(|c| c.get(key))
        .or_else(|| default.and_then(|c| c.get(key)))
        .map(String::as_str)
}

/// A token bucket shared by the broker's shards.
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One side's rate (leader or follower) on this broker.
pub struct Quota {
    /// Bytes per second; [`UNLIMITED`] when unset.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
    /// Bytes of throttled replicas sent (leader) or fetched (follower), for the metrics.
    pub throttled_bytes: AtomicU64,
    /// Times a replica outside the ISR was held back because the rate was used up.
    pub held_back: AtomicU64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            rate: AtomicU64::new(UNLIMITED),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
            throttled_bytes: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }
}

impl Quota {
    /// Whether a rate is set (the only check made when none is).
    pub fn limited(&self) -> bool {
        self.rate.load(Ordering::Relaxed) < UNLIMITED
    }

    pub fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|r| *r < UNLIMITED)
    }

    fn set_rate(&self, rate: u64) {
        if self.rate.swap(rate, Ordering::Relaxed) != rate
            && let Ok(mut b) = self.bucket.lock()
        {
            // A new rate starts from an empty bucket: no burst from the old one.
            b.tokens = 0.0;
            b.last = Instant::now();
        }
    }

    /// Refills the bucket (at most [`BURST_SECONDS`] worth) and returns the rate.
    fn refill(&self, b: &mut Bucket, now: Instant) -> f64 {
        let rate = self.rate.load(Ordering::Relaxed) as f64;
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * rate).min(rate * BURST_SECONDS);
        rate
    }

    /// How long until the rate allows more bytes; zero when it does now (Kafka's
    /// `isQuotaExceeded`, as a wait).
    pub fn wait(&self) -> Duration {
        if !self.limited() {
            return Duration::ZERO;
        }
        let Ok(mut b) = self.bucket.lock() else {
            return Duration::ZERO;
        };
        let rate = self.refill(&mut b, Instant::now());
        if b.tokens >= 0.0 || rate <= 0.0 {
            // A zero rate never refills: hold back for a second at a time.
            return if rate <= 0.0 {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
        }
        Duration::from_secs_f64((-b.tokens / rate).min(1.0))
    }

    /// Counts `bytes` of throttled replicas against the rate.
    pub fn record(&self, bytes: u64) {
        self.throttled_bytes.fetch_add(bytes, Ordering::Relaxed);
        if !self.limited() {
            return;
        }
        if let Ok(mut b) = self.bucket.lock() {
            self.refill(&mut b, Instant::now());
            b.tokens -= bytes as f64;
        }
    }
}

/// This broker's two replication quotas.
#[derive(Default)]
pub struct ReplicationQuotas {
    pub leader: Quota,
    pub follower: Quota,
}

impl ReplicationQuotas {
    /// Takes the rates the metadata image sets for `broker`.
    pub fn update(&self, image: &MetadataImage, broker: i32) {
        let rate = |key| {
            dynamic_config(image, broker, key)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(UNLIMITED, |r| r.min(UNLIMITED))
        };
        self.leader.set_rate(rate(LEADER_RATE));
        self.follower.set_rate(rate(FOLLOWER_RATE));
    }
}

/// Whether `broker`'s replica of `topic`-`partition` is throttled on one side, per the
/// topic's `key` list.
pub fn throttled(
    configs: Option<&BTreeMap<String, String>>,
    key: &str,
    partition: i32,
    broker: i32,
) -> bool {
    configs
        .and_then(|c| c.get(key))
        .is_some_and(|list| lists(list, partition, broker))
}

impl ReplicationQuotas {
    /// Leader: whether this broker's replica of `p` is throttled as a leader (a rate is
    /// set and the topic lists it). Followers' bytes of such a partition count against
    /// the rate.
    pub fn leader_throttled(&self, p: &Partition) -> bool {
        throttled_as(p, &self.leader, LEADER_REPLICAS)
    }

    /// Follower: whether this broker's replica of `p` is throttled as a follower.
    pub fn follower_throttled(&self, p: &Partition) -> bool {
        throttled_as(p, &self.follower, FOLLOWER_REPLICAS)
    }
}

fn throttled_as(p: &Partition, quota: &Quota, key: &str) -> bool {
    if !quota.limited() {
        return false;
    }
    let image = p.image();
    throttled(
        image.topic(&p.topic).map(|t| &t.configs),
        key,
        p.index,
        p.node_id(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lists_parse_as_kafka_writes_them() {
        assert!(lists("*", 7, 3));
        assert!(lists("0:1,0:2,1:3", 0, 2));
        assert!(lists(" 1 : 3 ", 1, 3));
        assert!(!lists("0:1,0:2,1:3", 1, 2));
        assert!(!lists("", 0, 1));
        assert!(validate_replica_list("k", "0:1,12:104").is_ok());
        assert!(validate_replica_list("k", "*").is_ok());
        assert!(validate_replica_list("k", "0-1").is_err());
        assert!(validate_replica_list("k", "a:1").is_err());
    }

    #[test]
    fn broker_configs_are_rates_and_only_the_dynamic_keys() {
        assert!(validate_broker_config(LEADER_RATE, "1048576").is_ok());
        assert!(validate_broker_config(FOLLOWER_RATE, "-1").is_err());
        assert!(validate_broker_config("log.retention.ms", "1").is_err());
    }

    #[test]
    fn the_bucket_holds_back_once_the_rate_is_used_and_refills_with_time() {
        let q = Quota::default();
        assert!(!q.limited());
        q.record(u64::MAX / 4);
        assert_eq!(q.wait(), Duration::ZERO, "no rate, no wait");
        q.set_rate(1_000_000);
        assert_eq!(
            q.wait(),
            Duration::ZERO,
            "an empty bucket allows the first fetch"
        );
        q.record(500_000);
        let w = q.wait();
        assert!(
            w > Duration::from_millis(400) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        // Idle time refills at most BURST_SECONDS' worth (200 kB here).
        if let Ok(mut b) = q.bucket.lock() {
            b.last -= Duration::from_secs(10);
        }
        assert_eq!(q.wait(), Duration::ZERO);
        q.record(700_000);
        let w = q.wait();
        assert!(w >= Duration::from_millis(490), "{w:?}");
    }

    #[test]
    fn rates_come_from_the_broker_then_the_cluster_default() {
        let mut image = MetadataImage::default();
        image
            .broker_configs
            .entry(String::new())
            .or_default()
            .insert(LEADER_RATE.into(), "100".into());
        image
            .broker_configs
            .entry("2".into())
            .or_default()
            .insert(LEADER_RATE.into(), "200".into());
        let q = ReplicationQuotas::default();
        q.update(&image, 1);
        assert_eq!(q.leader.rate(), Some(100));
        assert_eq!(q.follower.rate(), None);
        q.update(&image, 2);
        assert_eq!(q.leader.rate(), Some(200));
    }
}
