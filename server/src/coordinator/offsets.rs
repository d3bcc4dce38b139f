//! Committed offsets (SPEC G2): stored as records in the compacted, internal
//! `__consumer_offsets` topic (50 partitions), in Kafka's own formats, and cached in the
//! shard that owns the group's partition.
//!
//! A group belongs to partition `abs(javaHashCode(group_id)) % 50`, as in Kafka, so the
//! same group always lands on the same partition and shard (its coordinator).
//!
//! Record formats (big-endian, Kafka's `OffsetCommitKey` v1 and `OffsetCommitValue` v3):
//! ```text
//! key:   version i16 = 1 | group string | topic string | partition i32
//! value: version i16 = 3 | offset i64 | leader_epoch i32 | metadata string | commit_timestamp i64
//! ```
//! (string = i16 length + UTF-8). A null value is a tombstone (offset deleted). The cache
//! is rebuilt by reading the partition when its shard opens it.

use std::collections::{BTreeMap, HashMap};

use bytes::{BufMut, Bytes, BytesMut};
use ringmq_engine::batch;
use ringmq_engine::{BatchBuilder, NewRecord, UnifiedLog};

pub use crate::metadata::{OFFSETS_PARTITIONS, OFFSETS_SEGMENT_BYTES, OFFSETS_TOPIC};
/// `offset.metadata.max.bytes`.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

/// How long an offset commit waits for the in-sync replicas (offsets.commit.timeout.ms).
pub const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka uses for placement.
pub fn java_hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group (Kafka's `Utils.abs(hash) % 50`).
pub fn partition_for(group: &str) -> i32 {
    let h = java_hash_code(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % OFFSETS_PARTITIONS as i32
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// The committed offsets of the groups a shard coordinates.
#[derive(Debug, Default)]
pub struct OffsetsCache {
    groups: HashMap<String, BTreeMap<(String, i32), Committed>>,
    /// Offsets committed inside open transactions (TxnOffsetCommit), by producer id:
    /// visible once the transaction commits, dropped if it aborts.
    pending: HashMap<i64, Vec<(String, String, i32, Committed)>>,
}

impl OffsetsCache {
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.groups.get(group)?.get(&(topic.to_owned(), partition))
    }
    pub fn group(&self, group: &str) -> Option<&BTreeMap<(String, i32), Committed>> {
        self.groups.get(group)
    }
    /// Groups with committed offsets.
    pub fn group_ids(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }
    pub fn put(&mut self, group: &str, topic: &str, partition: i32, c: Committed) {
        self.groups
            .entry(group.to_owned())
            .or_default()
            .insert((topic.to_owned(), partition), c);
    }
    pub fn remove(&mut self, group: &str, topic: &str, partition: i32) {
        if let Some(g) = self.groups.get_mut(group) {
            g.remove(&(topic.to_owned(), partition));
            if g.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// Forgets the groups of `__consumer_offsets-<partition>` (their coordinator moved to
    /// another broker: Kafka's unload on resignation). Their offsets stay in the log.
    pub fn unload(&mut self, partition: i32) {
        self.groups.retain(|g, _| partition_for(g) != partition);
        for commits in self.pending.values_mut() {
            commits.retain(|(g, ..)| partition_for(g) != partition);
        }
        self.pending.retain(|_, c| !c.is_empty());
    }

    /// Offsets `producer_id` committed in its open transaction.
    pub fn put_pending(
        &mut self,
        producer_id: i64,
        group: &str,
        commits: Vec<(String, i32, Committed)>,
    ) {
        self.pending.entry(producer_id).or_default().extend(
            commits
                .into_iter()
                .map(|(t, p, c)| (group.to_owned(), t, p, c)),
        );
    }

    /// `producer_id`'s transaction ended in `partition` of `__consumer_offsets`: its
    /// offsets there become committed (or are dropped).
    pub fn end_transaction(&mut self, producer_id: i64, partition: i32, commit: bool) {
        let Some(commits) = self.pending.get_mut(&producer_id) else {
            return;
        };
        let (ended, kept): (Vec<_>, Vec<_>) = std::mem::take(commits)
            .into_iter()
            .partition(|(g, ..)| partition_for(g) == partition);
        *commits = kept;
        if commits.is_empty() {
            self.pending.remove(&producer_id);
        }
        if commit {
            for (g, t, p, c) in ended {
                self.put(&g, &t, p, c);
            }
        }
    }

    /// Whether the group has committed offsets here, in a transaction or not.
    pub fn has_offsets(&self, group: &str) -> bool {
        self.groups.contains_key(group) || self.pending.values().flatten().any(|(g, ..)| g == group)
    }

    /// Whether an open transaction has committed an offset for this group's partition
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT meanwhile).
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending
            .values()
            .flatten()
            .any(|(g, t, p, _)| g == group && t == topic && *p == partition)
    }

    /// Replays `__consumer_offsets-<partition>` into the cache (offsets committed in
    /// transactions as their markers decided).
    pub fn load(&mut self, partition: i32, log: &UnifiedLog) -> Result<usize, String> {
        let mut loaded = 0;
        super::replay(log, |h, raw| {
            if h.is_control() {
                if let Ok(Some(kind)) = ringmq_engine::control::control_type(h, raw) {
                    let commit = kind == ringmq_engine::control::ControlType::Commit;
                    self.end_transaction(h.producer_id, partition, commit);
                }
                return;
            }
            let Ok(records) = batch::records(raw) else {
                return;
            };
            let mut in_txn = Vec::new();
            for r in records.flatten() {
                if let Some(key) = r.key.and_then(decode_key) {
                    match r.value.and_then(decode_value) {
                        Some(c) if h.is_transactional() => in_txn.push((key.1, key.2, c, key.0)),
                        Some(c) => self.put(&key.0, &key.1, key.2, c),
                        None if r.value.is_none() => self.remove(&key.0, &key.1, key.2),
                        None => {}
                    }
                    loaded += 1;
                }
            }
            for (t, p, c, g) in in_txn {
                self.put_pending(h.producer_id, &g, vec![(t, p, c)]);
            }
        })?;
        Ok(loaded)
    }
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.extend_from_slice(s.as_bytes());
}

fn get_string(b: &[u8], at: &mut usize) -> Option<String> {
    let len = i16::from_be_bytes(b.get(*at..*at + 2)?.try_into().ok()?);
    *at += 2;
    if len < 0 {
        return Some(String::new());
    }
    let s = std::str::from_utf8(b.get(*at..*at + len as usize)?)
        .ok()?
        .to_owned();
    *at += len as usize;
    Some(s)
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(KEY_VERSION);
    put_string(&mut b, group);
    put_string(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn encode_value(c: &Committed) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VALUE_VERSION);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_string(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp);
    b.freeze()
}

/// `(group, topic, partition)` of an offset-commit key (versions 0 and 1).
pub fn decode_key(b: &[u8]) -> Option<(String, String, i32)> {
    let version = i16::from_be_bytes(b.get(0..2)?.try_into().ok()?);
    if !(0..=1).contains(&version) {
        return None; // group metadata (v2+) is not an offset
    }
    let mut at = 2;
    let group = get_string(b, &mut at)?;
    let topic = get_string(b, &mut at)?;
    let partition = i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
    Some((group, topic, partition))
}

/// An offset-commit value (versions 1 and 3; others are skipped).
pub fn decode_value(b: &[u8]) -> Option<Committed> {
    let version = i16::from_be_bytes(b.get(0..2)?.try_into().ok()?);
    let mut at = 2;
    let offset = i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?);
    at += 8;
    let leader_epoch = if version >= 3 {
        let e = i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        e
    } else {
        -1
    };
    let metadata = get_string(b, &mut at)?;
    let commit_timestamp = i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?);
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

/// Tombstones deleting a group's committed offsets (DeleteGroups / OffsetDelete).
pub fn tombstone_batch(group: &str, partitions: &[(String, i32)], now_ms: i64) -> Bytes {
    let records: Vec<NewRecord> = partitions
        .iter()
        .map(|(topic, partition)| NewRecord {
            key: Some(encode_key(group, topic, *partition)),
            value: None,
            headers: Vec::new(),
            timestamp_ms: now_ms,
        })
        .collect();
    BatchBuilder::default().build(&records)
}

/// Offset-commit records inside `producer_id`'s transaction (TxnOffsetCommit): a
/// transactional batch, decided by the transaction's marker.
pub fn txn_commit_batch(
    producer_id: i64,
    producer_epoch: i16,
    group: &str,
    commits: &[(String, i32, Committed)],
    now_ms: i64,
) -> Bytes {
    BatchBuilder {
        producer_id,
        producer_epoch,
        attributes: batch::TRANSACTIONAL_BIT,
        ..BatchBuilder::default()
    }
    .build(&commit_records(group, commits, now_ms))
}

/// One uncompressed batch of offset-commit records.
pub fn commit_batch(group: &str, commits: &[(String, i32, Committed)], now_ms: i64) -> Bytes {
    BatchBuilder::default().build(&commit_records(group, commits, now_ms))
}

fn commit_records(
    group: &str,
    commits: &[(String, i32, Committed)],
    now_ms: i64,
) -> Vec<NewRecord> {
    commits
        .iter()
        .map(|(topic, partition, c)| NewRecord {
            key: Some(encode_key(group, topic, *partition)),
            value: Some(encode_value(c)),
            headers: Vec::new(),
            timestamp_ms: now_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_kafka() {
        // Java: "test-group".hashCode() == 627841412 -> % 50 == 12; a negative hash too.
        assert_eq!(java_hash_code("test-group"), 627841412);
        assert_eq!(partition_for("test-group"), 12);
        assert_eq!(
            java_hash_code("my-consumer-group-with-a-long-name"),
            754636653
        );
        assert_eq!(partition_for("my-consumer-group-with-a-long-name"), 3);
        // A hash that is negative: "polygenelubricants" hashes to i32::MIN in Java.
        assert_eq!(java_hash_code("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants"), 0);
        assert_eq!(java_hash_code(""), 0);
    }

    #[test]
    fn key_and_value_round_trip() {
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        assert_eq!(
            decode_key(&encode_key("g", "t", 5)),
            Some(("g".into(), "t".into(), 5))
        );
        assert_eq!(decode_value(&encode_value(&c)), Some(c));
        assert_eq!(decode_key(&[0, 2, 0, 1, b'g']), None);
    }
}
