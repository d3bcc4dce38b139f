//! Topic configs (SPEC C2) by their Kafka keys, validated and mapped onto the engine's
//! [`LogConfig`]. DescribeConfigs reports the same keys.

use ringmq_engine::{CleanupPolicy, LogConfig, TimestampType};

/// The topic configs that choose the replicas a replication throttle applies to
/// (`crate::quota::throttle` applies them): `*` or a list of `partition:broker`.
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// Checks a throttled-replicas list: `*`, empty, or `partition:broker,...`.
pub fn validate_replica_list(key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    if v.is_empty() || v == "*" {
        return Ok(());
    }
    for item in v.split(',') {
        let ok = item.trim().split_once(':').is_some_and(|(p, b)| {
            p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
        });
        if !ok {
            return Err(format!(
                "{key}={value}: expected * or a list of partition:broker (e.g. 0:1,0:2)"
            ));
        }
    }
    Ok(())
}

/// Topic config keys ringmq accepts, with how to read each back from a [`LogConfig`].
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
    LEADER_REPLICAS,
    FOLLOWER_REPLICAS,
    SYNC_REPLICATION,
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
    "errors.deadletterqueue.group.enable",
    "file.delete.delay.ms",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.decompressed.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "min.compaction.lag.ms",
    "preallocate",
    "remote.copy.lag.bytes",
    "remote.copy.lag.ms",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "remote.storage.enable",
    "segment.index.bytes",
    "segment.jitter.ms",
];

/// Kafka 4.4 topic configs ringmq accepts (validated as Kafka validates them) and reports,
/// but without their effect: the README's "Topic configs" lists why for each. The value is
/// what DescribeConfigs reports when the topic does not set it: Kafka's default, except
/// `max.decompressed.message.bytes`, where it is ringmq's own cap (256 MiB).
pub const ACCEPTED_WITHOUT_EFFECT: &[(&str, &str)] = &[
    ("compression.gzip.level", "-1"),
    ("compression.lz4.level", "9"),
    ("compression.zstd.level", "3"),
    ("errors.deadletterqueue.group.enable", "false"),
    ("file.delete.delay.ms", "60000"),
    ("local.retention.bytes", "-2"),
    ("local.retention.ms", "-2"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("max.decompressed.message.bytes", "268435456"),
    ("message.timestamp.after.max.ms", "3600000"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("min.compaction.lag.ms", "0"),
    ("preallocate", "false"),
    ("remote.copy.lag.bytes", "-1"),
    ("remote.copy.lag.ms", "0"),
    ("remote.log.copy.disable", "false"),
    ("remote.log.delete.on.disable", "false"),
    ("remote.storage.enable", "false"),
    ("segment.index.bytes", "10485760"),
    ("segment.jitter.ms", "0"),
];

/// Checks a value of an [`ACCEPTED_WITHOUT_EFFECT`] key as Kafka's LogConfig does.
fn check_without_effect(key: &str, value: &str) -> Result<(), String> {
    let long = |min: i64, max: i64| match value.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        Ok(_) => Err(format!("{key}={value}: must be in [{min}, {max}]")),
        Err(_) => Err(format!("{key}={value}: not an integer")),
    };
    let boolean = || {
        value
            .parse::<bool>()
            .map(|_| ())
            .map_err(|_| format!("{key}={value}: not true/false"))
    };
    match key {
        "compression.gzip.level" if value.trim() == "-1" => Ok(()),
        "compression.gzip.level" => long(1, 9),
        "compression.lz4.level" => long(1, 17),
        "compression.zstd.level" => long(-131_072, 22),
        "errors.deadletterqueue.group.enable"
        | "preallocate"
        | "remote.log.copy.disable"
        | "remote.log.delete.on.disable" => boolean(),
        // Kafka's answer on a broker without tiered storage.
        "remote.storage.enable" => match value.trim() {
            "false" => Ok(()),
            "true" => Err("Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.".to_owned()),
            _ => boolean(),
        },
        "local.retention.bytes" | "local.retention.ms" => long(-2, i64::MAX),
        "max.compaction.lag.ms" => long(1, i64::MAX),
        "max.decompressed.message.bytes" => long(0, i64::from(i32::MAX)),
        "segment.index.bytes" => long(4, i64::from(i32::MAX)),
        "remote.copy.lag.bytes" => long(-1, i64::MAX),
        _ => long(0, i64::MAX),
    }
}

/// SPEC T5, the seeds' "synchronous replication": acks=all is answered only once every
/// assigned replica has the records (not just the in-sync ones). Needs 2+ replicas.
pub const SYNC_REPLICATION: &str = "ringmq.sync.replication";

/// Applies one topic config to `c`, or says why the value is invalid.
pub fn apply(c: &mut LogConfig, key: &str, value: &str) -> Result<(), String> {
    let int = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| format!("{key}={value}: not an integer"))
    };
    let positive_u32 = |v: &str| {
        let n = int(v)?;
        u32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{key}={value}: out of range"))
    };
    match key {
        "cleanup.policy" => {
            c.cleanup_policy = match value.replace(' ', "").as_str() {
                "delete" => CleanupPolicy::Delete,
                "compact" => CleanupPolicy::Compact,
                "compact,delete" | "delete,compact" => CleanupPolicy::CompactDelete,
                // Empty: no retention, no compaction (Kafka 4.x).
                "" => CleanupPolicy::None,
                _ => {
                    return Err(format!(
                        "{key}={value}: expected delete, compact, compact,delete or empty"
                    ));
                }
            }
        }
        "compression.type" => {
            if !["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"].contains(&value) {
                return Err(format!("{key}={value}: unknown codec"));
            }
            // Applied on produce (record_policy): batches in another codec are recompressed.
        }
        "delete.retention.ms" => c.delete_retention_ms = int(value)?.max(0),
        "flush.messages" => c.flush_messages = int(value)?.max(1),
        "flush.ms" => c.flush_ms = int(value)?.max(0),
        "index.interval.bytes" => c.index_interval_bytes = positive_u32(value)?,
        "max.message.bytes" => c.max_message_bytes = positive_u32(value)?,
        "message.timestamp.type" => {
            c.message_timestamp_type = match value {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => {
                    return Err(format!(
                        "{key}={value}: expected CreateTime or LogAppendTime"
                    ));
                }
            }
        }
        "min.cleanable.dirty.ratio" => {
            let r: f64 = value
                .parse()
                .map_err(|_| format!("{key}={value}: not a number"))?;
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{key}={value}: must be in [0, 1]"));
            }
            c.min_cleanable_dirty_ratio = r;
        }
        "min.insync.replicas" => {
            if !(1..=3).contains(&int(value)?) {
                return Err(format!("{key}={value}: must be in 1..3"));
            }
        }
        "retention.bytes" => c.retention_bytes = int(value)?,
        "retention.ms" => {
            let ms = int(value)?;
            if ms < -1 {
                return Err(format!("{key}={value}: must be -1 or >= 0"));
            }
            c.retention_ms = ms;
        }
        "segment.bytes" => {
            let b = positive_u32(value)?;
            if b < 14 {
                return Err(format!("{key}={value}: too small"));
            }
            c.segment_bytes = b;
        }
        "segment.ms" => c.segment_ms = int(value)?.max(1),
        "unclean.leader.election.enable" | SYNC_REPLICATION => {
            value
                .parse::<bool>()
                .map_err(|_| format!("{key}={value}: not true/false"))?;
        }
        // Replication throttles (replication::throttle), not log settings.
        LEADER_REPLICAS | FOLLOWER_REPLICAS => validate_replica_list(key, value)?,
        _ if ACCEPTED_WITHOUT_EFFECT.iter().any(|(k, _)| *k == key) => {
            check_without_effect(key, value)?
        }
        _ => return Err(format!("unknown topic config {key}")),
    }
    Ok(())
}

/// The value of `key` for DescribeConfigs, from the effective config.
pub fn describe(
    c: &LogConfig,
    key: &str,
    overrides: &std::collections::BTreeMap<String, String>,
) -> String {
    if let Some(v) = overrides.get(key) {
        return v.clone();
    }
    match key {
        "cleanup.policy" => match c.cleanup_policy {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
            CleanupPolicy::None => "",
        }
        .into(),
        "compression.type" => "producer".into(),
        "delete.retention.ms" => c.delete_retention_ms.to_string(),
        "flush.messages" => c.flush_messages.to_string(),
        "flush.ms" => c.flush_ms.to_string(),
        "index.interval.bytes" => c.index_interval_bytes.to_string(),
        "max.message.bytes" => c.max_message_bytes.to_string(),
        "message.timestamp.type" => match c.message_timestamp_type {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
        .into(),
        "min.cleanable.dirty.ratio" => c.min_cleanable_dirty_ratio.to_string(),
        "min.insync.replicas" => "1".into(),
        "retention.bytes" => c.retention_bytes.to_string(),
        "retention.ms" => c.retention_ms.to_string(),
        "segment.bytes" => c.segment_bytes.to_string(),
        "segment.ms" => c.segment_ms.to_string(),
        "unclean.leader.election.enable" => "true".into(),
        SYNC_REPLICATION => "false".into(),
        _ => ACCEPTED_WITHOUT_EFFECT
            .iter()
            .find(|(k, _)| *k == key)
            .map_or_else(String::new, |(_, v)| (*v).to_owned()),
    }
}
