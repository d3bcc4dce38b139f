//! Engine hot paths: batch validation (CRC32C), append by method and flush policy, index
//! lookup, and read-range lookup. Throughput is in bytes, so criterion prints MB/s.
//!
//! Append benches keep the log bounded: every ~256 MiB the log is truncated, outside the
//! timed region (`iter_custom`), so a run does not fill the disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use ringmq_benches::{batch_of_1k_records, now_ms};
use ringmq_engine::batch::validate_batch;
use ringmq_engine::{AppendMethod, AppendOptions, LogConfig, LogHandle, Offset, UnifiedLog};

const KIB: usize = 1024;
const LOG_BYTES_MAX: u64 = 256 << 20;

fn bench_dir() -> tempfile::TempDir {
    // Benchmark on the filesystem the broker would use (the working directory), not /tmp.
    tempfile::tempdir_in(".").unwrap()
}

fn validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate_batch");
    for size in [16 * KIB, 1024 * KIB] {
        let b = batch_of_1k_records(size, 1);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{}KiB", size / KIB)),
            &b,
            |bench, b| bench.iter(|| validate_batch(std::hint::black_box(b)).unwrap()),
        );
    }
    g.finish();
}

fn open_log(dir: &std::path::Path, config: LogConfig) -> UnifiedLog {
    UnifiedLog::open(dir.join("bench-0"), config, now_ms()).unwrap()
}

fn keep_bounded(log: &mut UnifiedLog) {
    if log.size_bytes() > LOG_BYTES_MAX {
        let leo = log.log_end_offset();
        log.truncate_fully_and_start_at(leo).unwrap();
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_async");
    g.measurement_time(Duration::from_secs(4));
    for method in [
        AppendMethod::Pwritev,
        AppendMethod::IoUring,
        AppendMethod::Direct,
    ] {
        for size in [16 * KIB, 1024 * KIB] {
            let b = batch_of_1k_records(size, 2);
            g.throughput(Throughput::Bytes(b.len() as u64));
            let id = BenchmarkId::new(format!("{method:?}"), format!("{}KiB", size / KIB));
            g.bench_function(id, |bench| {
                let dir = bench_dir();
                let rt = compio::runtime::Runtime::new().unwrap();
                let config = LogConfig {
                    append_method: method,
                    ..LogConfig::default()
                };
                let handle = LogHandle::new(open_log(dir.path(), config));
                bench.iter_custom(|iters| timed_appends(&rt, &handle, &b, iters));
            });
        }
    }
    g.finish();
}

fn timed_appends(
    rt: &compio::runtime::Runtime,
    handle: &LogHandle,
    b: &Bytes,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let mut total = Duration::ZERO;
        let mut start = Instant::now();
        for _ in 0..iters {
            handle
                .append(vec![b.clone()], AppendOptions::client(0))
                .await
                .unwrap();
            if handle.log().size_bytes() > LOG_BYTES_MAX {
                total += start.elapsed();
                keep_bounded(&mut handle.log_mut());
                start = Instant::now();
            }
        }
        total + start.elapsed()
    })
}

/// Synchronous flush (flush.messages=1): 1 appender (every append waits its own
/// fdatasync) vs 16 concurrent appenders sharing fdatasyncs (group commit). One iteration
/// = one append by each appender.
fn append_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_sync_16KiB");
    g.measurement_time(Duration::from_secs(5));
    let b = batch_of_1k_records(16 * KIB, 3);
    for appenders in [1usize, 16] {
        g.throughput(Throughput::Bytes((b.len() * appenders) as u64));
        g.bench_function(BenchmarkId::new("appenders", appenders), |bench| {
            let dir = bench_dir();
            let rt = compio::runtime::Runtime::new().unwrap();
            let config = LogConfig {
                flush_messages: 1,
                ..LogConfig::default()
            };
            let handle = LogHandle::new(open_log(dir.path(), config));
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks = (0..appenders).map(|_| {
                        let h = handle.clone();
                        let b = b.clone();
                        async move {
                            for _ in 0..iters {
                                h.append(vec![b.clone()], AppendOptions::client(0))
                                    .await
                                    .unwrap();
                            }
                        }
                    });
                    join_all(tasks).await;
                    let elapsed = start.elapsed();
                    keep_bounded(&mut handle.log_mut());
                    elapsed
                })
            });
        });
    }
    g.finish();
}

/// A 500 MB-class segment's worth of index: ~64k entries; lookups at random offsets.
fn lookups(c: &mut Criterion) {
    let dir = bench_dir();
    let config = LogConfig {
        segment_bytes: 1 << 30,
        ..LogConfig::default()
    };
    let mut log = open_log(dir.path(), config);
    let b = batch_of_1k_records(4 * KIB, 4);
    for _ in 0..50_000 {
        log.append(vec![b.clone()], AppendOptions::client(0))
            .unwrap();
    }
    let leo = log.log_end_offset().0;
    log.update_high_watermark(Offset(leo));
    let mut x = 12345u64;
    let mut next_offset = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Offset((x % leo as u64) as i64)
    };
    let mut g = c.benchmark_group("lookup");
    g.bench_function("offset_index", |bench| {
        let seg = log.active_segment();
        bench.iter(|| seg.translate_offset(next_offset()).unwrap())
    });
    g.bench_function("read_range_1MiB", |bench| {
        bench.iter(|| log.read(next_offset(), 1 << 20, Offset(leo), true).unwrap())
    });
    g.bench_function("offset_for_timestamp", |bench| {
        bench.iter(|| log.offset_for_timestamp(1_700_000_000_002).unwrap())
    });
    g.finish();
}

criterion_group!(benches, validation, append, append_sync, lookups);
criterion_main!(benches);
