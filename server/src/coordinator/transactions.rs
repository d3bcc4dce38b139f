//! The transaction coordinator's state (SPEC K3; Kafka's `TransactionStateManager` and
//! `TransactionMetadata`): per transactional id its producer id and epoch, timeout,
//! status and the partitions its open transaction wrote to. Stored as records in the
//! compacted, internal `__transaction_state` topic (50 partitions), in Kafka's
//! `TransactionLogKey` v0 / `TransactionLogValue` v0 formats, and cached on the shard
//! that leads the id's partition (`abs(javaHashCode(id)) % 50`).
//!
//! ```text
//! key:   version i16 = 0 | transactional_id string
//! value: version i16 = 0 | producer_id i64 | producer_epoch i16 | timeout_ms i32
//!        | status i8 | partitions [topic string | [partition i32]] (null when none)
//!        | last_update_ms i64 | start_ms i64
//! ```
//!
//! The status moves as in Kafka: Empty → Ongoing (first AddPartitionsToTxn) →
//! PrepareCommit/PrepareAbort (EndTxn, or a timeout's abort) → CompleteCommit/
//! CompleteAbort (every marker written) → Ongoing again, ...; PrepareEpochFence marks an
//! abort the coordinator started for a timed-out or re-initialised producer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ringmq_engine::batch;
use ringmq_engine::{BatchBuilder, NewRecord, UnifiedLog};

pub use crate::metadata::{TXN_PARTITIONS, TXN_TOPIC};

/// `transaction.max.timeout.ms` (Kafka's default, 15 minutes).
pub const TXN_MAX_TIMEOUT_MS: i32 = 900_000;
/// `transactional.id.expiration.ms` (Kafka's default, 7 days).
pub const TXN_ID_EXPIRATION_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnStatus {
    pub fn code(self) -> i8 {
        match self {
            TxnStatus::Empty => 0,
            TxnStatus::Ongoing => 1,
            TxnStatus::PrepareCommit => 2,
            TxnStatus::PrepareAbort => 3,
            TxnStatus::CompleteCommit => 4,
            TxnStatus::CompleteAbort => 5,
            TxnStatus::Dead => 6,
            TxnStatus::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            6 => TxnStatus::Dead,
            7 => TxnStatus::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's names (DescribeTransactions, ListTransactions' state filter).
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
            TxnStatus::Dead => "Dead",
            TxnStatus::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: the transaction is decided but not finished.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// The partitions the open (or deciding) transaction wrote to.
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    /// When the open transaction began (-1: none).
    pub start_ms: i64,
}

/// One cached transactional id: its stored state, and whether a change to it is being
/// written (other requests for the id meanwhile answer CONCURRENT_TRANSACTIONS).
#[derive(Debug, Clone)]
pub struct TxnEntry {
    pub meta: TxnMetadata,
    pub pending: bool,
}

/// The transactional ids whose `__transaction_state` partitions this shard leads.
#[derive(Debug, Default)]
pub struct TxnCache {
    ids: HashMap<String, TxnEntry>,
    /// Partitions loaded here, with the leader epoch they were loaded at (the
    /// coordinator epoch markers carry).
    loaded: BTreeMap<i32, i32>,
}

impl TxnCache {
    pub fn get(&self, id: &str) -> Option<&TxnEntry> {
        self.ids.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut TxnEntry> {
        self.ids.get_mut(id)
    }

    pub fn put(&mut self, id: &str, meta: TxnMetadata) {
        match self.ids.get_mut(id) {
            Some(e) => e.meta = meta,
            None => {
                self.ids.insert(
                    id.to_owned(),
                    TxnEntry {
                        meta,
                        pending: false,
                    },
                );
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        self.ids.remove(id);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &TxnEntry)> {
        self.ids.iter()
    }

    /// The coordinator epoch of `partition` if it is loaded here.
    pub fn coordinator_epoch(&self, partition: i32) -> Option<i32> {
        self.loaded.get(&partition).copied()
    }

    /// Forgets the ids of `__transaction_state-<partition>` (led elsewhere now).
    pub fn unload(&mut self, partition: i32) {
        self.loaded.remove(&partition);
        self.ids.retain(|id, _| partition_for(id) != partition);
    }

    /// Replays `__transaction_state-<partition>` (led here from `leader_epoch` on).
    pub fn load(
        &mut self,
        partition: i32,
        leader_epoch: i32,
        log: &UnifiedLog,
    ) -> Result<usize, String> {
        self.ids.retain(|id, _| partition_for(id) != partition);
        let mut loaded = 0;
        super::replay(log, |_, raw| {
            let Ok(records) = batch::records(raw) else {
                return;
            };
            for r in records.flatten() {
                let Some(id) = r.key.and_then(decode_key) else {
                    continue;
                };
                match r.value.map(decode_value) {
                    Some(Some(meta)) => self.put(&id, meta),
                    Some(None) => {}
                    None => self.remove(&id),
                }
                loaded += 1;
            }
        })?;
        self.loaded.insert(partition, leader_epoch);
        Ok(loaded)
    }
}

/// The `__transaction_state` partition of a transactional id.
pub fn partition_for(id: &str) -> i32 {
    let h = crate::coordinator::offsets::java_hash_code(id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % TXN_PARTITIONS as i32
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.extend_from_slice(s.as_bytes());
}

fn get_string(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = b.get_i16();
    let len = usize::try_from(len).ok()?;
    if b.remaining() < len {
        return None;
    }
    let s = std::str::from_utf8(&b[..len]).ok()?.to_owned();
    b.advance(len);
    Some(s)
}

pub fn encode_key(id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + id.len());
    b.put_i16(0);
    put_string(&mut b, id);
    b.freeze()
}

pub fn decode_key(mut b: &[u8]) -> Option<String> {
    if b.remaining() < 2 || b.get_i16() != 0 {
        return None;
    }
    get_string(&mut b)
}

pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.status.code());
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &m.partitions {
        topics.entry(t).or_default().push(*p);
    }
    if topics.is_empty() {
        b.put_i32(-1);
    } else {
        b.put_i32(topics.len() as i32);
        for (t, ps) in topics {
            put_string(&mut b, t);
            b.put_i32(ps.len() as i32);
            for p in ps {
                b.put_i32(p);
            }
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

/// Reads a value of version 0 or 1 (v1 is v0 in the flexible encoding: compact strings
/// and arrays, tagged fields; written by Kafka 4.x with transactions V2).
pub fn decode_value(mut b: &[u8]) -> Option<TxnMetadata> {
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    if !(0..=1).contains(&version) || b.remaining() < 15 {
        return None;
    }
    let producer_id = b.get_i64();
    let producer_epoch = b.get_i16();
    let timeout_ms = b.get_i32();
    let status = TxnStatus::from_code(b.get_i8())?;
    let partitions = if version == 0 {
        partitions_v0(&mut b)?
    } else {
        partitions_v1(&mut b)?
    };
    if b.remaining() < 16 {
        return None;
    }
    Some(TxnMetadata {
        producer_id,
        producer_epoch,
        timeout_ms,
        status,
        partitions,
        last_update_ms: b.get_i64(),
        start_ms: b.get_i64(),
    })
}

/// v0's partitions: a nullable array of (topic, [partition]).
fn partitions_v0(b: &mut &[u8]) -> Option<BTreeSet<(String, i32)>> {
    let mut partitions = BTreeSet::new();
    if b.remaining() < 4 {
        return None;
    }
    for _ in 0..b.get_i32().max(0) {
        let t = get_string(b)?;
        if b.remaining() < 4 {
            return None;
        }
        for _ in 0..b.get_i32().max(0) {
            if b.remaining() < 4 {
                return None;
            }
            partitions.insert((t.clone(), b.get_i32()));
        }
    }
    Some(partitions)
}

/// v1's partitions: the same as compact arrays, each entry with tagged fields.
fn partitions_v1(b: &mut &[u8]) -> Option<BTreeSet<(String, i32)>> {
    let mut partitions = BTreeSet::new();
    for _ in 1..get_uvarint(b)? {
        let t = get_compact_string(b)?;
        for _ in 1..get_uvarint(b)? {
            if b.remaining() < 4 {
                return None;
            }
            partitions.insert((t.clone(), b.get_i32()));
        }
        skip_tags(b)?;
    }
    Some(partitions)
}

fn get_uvarint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !b.has_remaining() {
            return None;
        }
        let byte = b.get_u8();
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_compact_string(b: &mut &[u8]) -> Option<String> {
    let len = usize::try_from(get_uvarint(b)?.checked_sub(1)?).ok()?;
    if b.remaining() < len {
        return None;
    }
    let s = std::str::from_utf8(&b[..len]).ok()?.to_owned();
    b.advance(len);
    Some(s)
}

fn skip_tags(b: &mut &[u8]) -> Option<()> {
    for _ in 0..get_uvarint(b)? {
        get_uvarint(b)?;
        let size = usize::try_from(get_uvarint(b)?).ok()?;
        if b.remaining() < size {
            return None;
        }
        b.advance(size);
    }
    Some(())
}

/// One batch holding a transactional id's new state.
pub fn state_batch(id: &str, meta: &TxnMetadata, now_ms: i64) -> Bytes {
    BatchBuilder::default().build(&[NewRecord {
        key: Some(encode_key(id)),
        value: Some(encode_value(meta)),
        headers: Vec::new(),
        timestamp_ms: now_ms,
    }])
}

/// One batch deleting a transactional id (expired).
pub fn tombstone_batch(id: &str, now_ms: i64) -> Bytes {
    BatchBuilder::default().build(&[NewRecord {
        key: Some(encode_key(id)),
        value: None,
        headers: Vec::new(),
        timestamp_ms: now_ms,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        let m = TxnMetadata {
            producer_id: 4000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            status: TxnStatus::Ongoing,
            partitions: [
                ("a".to_owned(), 0),
                ("a".to_owned(), 2),
                ("b".to_owned(), 1),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 10,
            start_ms: 5,
        };
        assert_eq!(decode_key(&encode_key("tx-1")).as_deref(), Some("tx-1"));
        assert_eq!(decode_value(&encode_value(&m)), Some(m.clone()));
        let empty = TxnMetadata {
            partitions: BTreeSet::new(),
            status: TxnStatus::CompleteCommit,
            ..m
        };
        assert_eq!(decode_value(&encode_value(&empty)), Some(empty));
        assert_eq!(decode_value(&[0, 0, 1]), None);
    }

    #[test]
    fn a_flexible_v1_value_reads_as_v0() {
        // Kafka 4.x's TransactionLogValue v1: compact arrays and strings, tagged fields.
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i64(77);
        b.put_i16(2);
        b.put_i32(30_000);
        b.put_i8(TxnStatus::PrepareCommit.code());
        b.put_u8(2); // one topic
        b.put_u8(4); // "t-1"
        b.extend_from_slice(b"t-1");
        b.put_u8(3); // two partitions
        b.put_i32(0);
        b.put_i32(5);
        b.put_u8(0); // the topic entry's tagged fields
        b.put_i64(11);
        b.put_i64(9);
        b.put_u8(0); // tagged fields
        let m = decode_value(&b).unwrap();
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.timeout_ms),
            (77, 2, 30_000)
        );
        assert_eq!(m.status, TxnStatus::PrepareCommit);
        assert_eq!(
            m.partitions.into_iter().collect::<Vec<_>>(),
            vec![("t-1".to_owned(), 0), ("t-1".to_owned(), 5)]
        );
        assert_eq!((m.last_update_ms, m.start_ms), (11, 9));
    }

    #[test]
    fn placement_matches_kafka() {
        // The same placement as groups': abs(String.hashCode) % 50.
        assert_eq!(partition_for("test-group"), 12);
        assert_eq!(partition_for("polygenelubricants"), 0);
    }

    #[test]
    fn every_status_code_reads_back() {
        for c in 0..8 {
            assert_eq!(TxnStatus::from_code(c).map(TxnStatus::code), Some(c));
        }
        assert_eq!(TxnStatus::from_code(8), None);
    }
}
