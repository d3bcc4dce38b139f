//! Test fixtures: batch builders and log helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ringmq_engine::batch::{self, BatchIter};
use ringmq_engine::{AppendOptions, BatchBuilder, LogConfig, NewRecord, Offset, UnifiedLog};
use std::path::{Path, PathBuf};

pub const NOW: i64 = 1_700_000_000_000;

/// A batch of `n` records; record i has key `k<seed>-<i>` and a value of `value_len` bytes.
pub fn batch(seed: u64, n: usize, value_len: usize, ts: i64) -> Bytes {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            key: Some(Bytes::from(format!("k{seed}-{i}"))),
            value: Some(Bytes::from(vec![
                (seed as u8).wrapping_add(i as u8);
                value_len
            ])),
            headers: vec![],
            timestamp_ms: ts + i as i64,
        })
        .collect();
    BatchBuilder::default().build(&records)
}

/// A batch of records with the given (key, value) pairs (value None = tombstone).
pub fn keyed(pairs: &[(&str, Option<&str>)], ts: i64) -> Bytes {
    let records: Vec<NewRecord> = pairs
        .iter()
        .map(|(k, v)| NewRecord {
            key: Some(Bytes::copy_from_slice(k.as_bytes())),
            value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![],
            timestamp_ms: ts,
        })
        .collect();
    BatchBuilder::default().build(&records)
}

pub fn log_dir(root: &Path) -> PathBuf {
    root.join("orders-0")
}

pub fn open(root: &Path, config: LogConfig) -> UnifiedLog {
    UnifiedLog::open(log_dir(root), config, NOW).unwrap()
}

pub fn append(log: &mut UnifiedLog, b: Bytes) -> ringmq_engine::LogAppendInfo {
    log.append(vec![b], AppendOptions::client(NOW)).unwrap()
}

/// Every batch in the log from `from`, read through the public read path, as
/// `(base offset, bytes)`.
pub fn read_all(log: &UnifiedLog, from: Offset) -> Vec<(Offset, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let info = log.read(next, 1 << 20, log.log_end_offset(), true).unwrap();
        let Some(range) = info.range else { break };
        let bytes = UnifiedLog::read_range_bytes(&range).unwrap();
        assert_eq!(bytes.len(), range.length as usize);
        for b in BatchIter::new(&bytes) {
            let (_, h, raw) = b.unwrap();
            batch::validate_batch(raw).unwrap();
            next = h.next_offset();
            out.push((h.base_offset, raw.to_vec()));
        }
    }
    out
}

/// `bytes` with its base offset set, as the log stores it.
pub fn stamped(b: &Bytes, base: Offset) -> Vec<u8> {
    let mut v = b.to_vec();
    batch::set_base_offset(&mut v, base);
    v
}
