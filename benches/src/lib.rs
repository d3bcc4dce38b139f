//! Shared fixtures for ringmq's criterion benchmarks and figure tools: batch builders with
//! 1 KB records (the seeds' message size) and temporary logs.

use bytes::Bytes;
use ringmq_engine::{BatchBuilder, NewRecord};

/// The record size the seeds' flavor table is stated in.
pub const RECORD_BYTES: usize = 1024;

/// A v2 batch of 1 KB records about `batch_bytes` long (values are pseudo-random bytes,
/// so nothing downstream gets an easy compression ratio).
pub fn batch_of_1k_records(batch_bytes: usize, seed: u64) -> Bytes {
    let count = (batch_bytes / (RECORD_BYTES + 16)).max(1);
    let mut x = seed | 1;
    let records: Vec<NewRecord> = (0..count)
        .map(|i| {
            let value: Vec<u8> = (0..RECORD_BYTES)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            NewRecord {
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(value)),
                headers: Vec::new(),
                timestamp_ms: 1_700_000_000_000 + i as i64,
            }
        })
        .collect();
    BatchBuilder::default().build(&records)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
