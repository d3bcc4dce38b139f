//! `engine-figures [DIR]`: the engine's append figures beside the machine's ceilings,
//! measured in the same run on the same directory (this machine is shared and noisy, so
//! only side-by-side ratios mean anything).
//!
//! Ceilings (fio, like `shared/tools/physical-limits`):
//! - sequential buffered write of 1 GiB in 1 MiB blocks, with a final fsync (disk-bound)
//!   and without it (page-cache-bound);
//! - 16 KiB write + fdatasync latency p50/p99.
//!
//! Engine, for each append method (pwritev, io_uring, O_DIRECT):
//! - async flush: 1 GiB in 1 MiB and in 16 KiB batches of 1 KB records with the
//!   background flusher running (writeback pacing), plus a final fdatasync — the same
//!   volume and durability as fio's job — and the page-cache rate before that fdatasync;
//! - sync flush (`flush.messages=1`), 16 KiB batches: one appender's latency p50/p99
//!   against fio's write+fdatasync, and 16 concurrent appenders' MB/s (group commit).
//!
//! Prints a table and one JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use ringmq_benches::{batch_of_1k_records, now_ms};
use ringmq_engine::{AppendMethod, AppendOptions, LogConfig, LogHandle, UnifiedLog};
use serde_json::{Value, json};

const GIB: u64 = 1 << 30;

fn fio(dir: &Path, args: &[&str]) -> Value {
    let file = dir.join(".fio-probe");
    let out = Command::new("fio")
        .args(args)
        .arg(format!("--filename={}", file.display()))
        .arg("--output-format=json")
        .output()
        .expect("fio must be installed (apt-get install fio)");
    let _ = std::fs::remove_file(&file);
    serde_json::from_slice::<Value>(&out.stdout).expect("fio JSON")["jobs"][0].clone()
}

fn fio_figures(dir: &Path) -> Value {
    let seq = [
        "--name=seq",
        "--rw=write",
        "--bs=1M",
        "--size=1G",
        "--ioengine=psync",
    ];
    let with_fsync = fio(dir, &[&seq[..], &["--end_fsync=1"]].concat());
    let no_fsync = fio(dir, &seq);
    let no_fsync_16k = fio(
        dir,
        &[
            "--name=seq16k",
            "--rw=write",
            "--bs=16k",
            "--size=1G",
            "--ioengine=psync",
        ],
    );
    let sync = fio(
        dir,
        &[
            "--name=sync",
            "--rw=write",
            "--bs=16k",
            "--size=32M",
            "--ioengine=psync",
            "--fdatasync=1",
        ],
    );
    // The device's synchronous-write bandwidth at a group commit's size (16 x 16 KiB).
    let sync_256k = fio(
        dir,
        &[
            "--name=sync256",
            "--rw=write",
            "--bs=256k",
            "--size=256M",
            "--ioengine=psync",
            "--fdatasync=1",
        ],
    );
    let pct = &sync["sync"]["lat_ns"]["percentile"];
    json!({
        "seq_write_end_fsync_MBps": with_fsync["write"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        "seq_write_page_cache_MBps": no_fsync["write"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        "seq_write_page_cache_16k_MBps": no_fsync_16k["write"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        "fdatasync_16k_p50_us": pct["50.000000"].as_f64().unwrap_or(0.0) / 1e3,
        "fdatasync_16k_p99_us": pct["99.000000"].as_f64().unwrap_or(0.0) / 1e3,
        "write_fdatasync_256k_MBps": sync_256k["write"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6,
    })
}

fn open(dir: &Path, config: LogConfig) -> (tempfile::TempDir, LogHandle) {
    let tmp = tempfile::tempdir_in(dir).unwrap();
    let log = UnifiedLog::open(tmp.path().join("figures-0"), config, now_ms()).unwrap();
    (tmp, LogHandle::new(log))
}

/// 1 GiB of async appends with the flusher running; returns (page-cache MB/s, with final
/// fdatasync MB/s).
fn async_volume(dir: &Path, method: AppendMethod, batch_bytes: usize, pacing: bool) -> (f64, f64) {
    let writeback_bytes = if pacing {
        LogConfig::default().writeback_bytes
    } else {
        u64::MAX
    };
    let config = LogConfig {
        append_method: method,
        writeback_bytes,
        ..LogConfig::default()
    };
    let (_tmp, handle) = open(dir, config);
    let batch = batch_of_1k_records(batch_bytes, 7);
    let n = GIB / batch.len() as u64;
    let bytes = n * batch.len() as u64;
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let flusher = handle.clone();
        let task = compio::runtime::spawn(async move {
            flusher.run_flusher(Duration::from_millis(5), now_ms).await
        });
        let start = Instant::now();
        for _ in 0..n {
            handle
                .append(vec![batch.clone()], AppendOptions::client(0))
                .await
                .unwrap();
        }
        let cached = start.elapsed();
        let job = handle.log_mut().flush_job().unwrap();
        let upto = compio::runtime::spawn_blocking(move || job.run())
            .await
            .unwrap()
            .unwrap();
        handle.log_mut().flush_done(upto);
        let durable = start.elapsed();
        drop(task);
        (
            bytes as f64 / cached.as_secs_f64() / 1e6,
            bytes as f64 / durable.as_secs_f64() / 1e6,
        )
    })
}

/// Sync flush, 16 KiB batches: one appender's latency (p50, p99 in us) over `count`
/// appends, then `appenders` concurrent appenders' MB/s.
fn sync_figures(dir: &Path, method: AppendMethod, appenders: usize) -> (f64, f64, f64, f64) {
    let config = LogConfig {
        append_method: method,
        flush_messages: 1,
        ..LogConfig::default()
    };
    let (_tmp, handle) = open(dir, config);
    let batch = batch_of_1k_records(16 * 1024, 9);
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let mut hist = Histogram::<u64>::new(3).unwrap();
        for _ in 0..2000 {
            let t = Instant::now();
            handle
                .append(vec![batch.clone()], AppendOptions::client(0))
                .await
                .unwrap();
            hist.record(t.elapsed().as_micros() as u64).unwrap();
        }
        let syncs_before = handle.sync_count();
        let per = 1000;
        let start = Instant::now();
        let tasks = (0..appenders).map(|_| {
            let h = handle.clone();
            let b = batch.clone();
            async move {
                for _ in 0..per {
                    h.append(vec![b.clone()], AppendOptions::client(0))
                        .await
                        .unwrap();
                }
            }
        });
        join_all(tasks).await;
        let secs = start.elapsed().as_secs_f64();
        let total = (appenders * per) as f64;
        let appends_per_sync = total / (handle.sync_count() - syncs_before) as f64;
        let mbps = total * batch.len() as f64 / secs / 1e6;
        (
            hist.value_at_quantile(0.5) as f64,
            hist.value_at_quantile(0.99) as f64,
            mbps,
            appends_per_sync,
        )
    })
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "./ringmq-data".into()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let limits = fio_figures(&dir);
    let fio_seq = limits["seq_write_end_fsync_MBps"].as_f64().unwrap();
    let fio_cache = limits["seq_write_page_cache_MBps"].as_f64().unwrap();
    let fio_sync_256k = limits["write_fdatasync_256k_MBps"].as_f64().unwrap();
    let fio_cache_16k = limits["seq_write_page_cache_16k_MBps"].as_f64().unwrap();
    println!(
        "machine: {} cores, fs {fs_type}, dir {}",
        num_cores(),
        dir.display()
    );
    println!(
        "fio: seq write 1 GiB  {fio_seq:.0} MB/s with end fsync, {fio_cache:.0} MB/s page cache (1 MiB blocks), {fio_cache_16k:.0} MB/s (16 KiB blocks); 16 KiB write+fdatasync p50 {:.0} us p99 {:.0} us",
        limits["fdatasync_16k_p50_us"].as_f64().unwrap(),
        limits["fdatasync_16k_p99_us"].as_f64().unwrap()
    );
    println!(
        "{:<15} {:>7} {:>14} {:>8} {:>14} {:>8}",
        "method", "batch", "durable MB/s", "/fio", "pagecache MB/s", "/fio"
    );
    let mut results = Vec::new();
    let runs = [
        (AppendMethod::Pwritev, true),
        (AppendMethod::Pwritev, false),
        (AppendMethod::IoUring, true),
        (AppendMethod::Direct, true),
    ];
    for (method, pacing) in runs {
        for batch in [1 << 20, 16 << 10] {
            let (cached, durable) = async_volume(&dir, method, batch, pacing);
            // Page-cache ratio against fio at the same block size.
            let fio_cache = if batch == 1 << 20 {
                fio_cache
            } else {
                fio_cache_16k
            };
            let name = format!("{method:?}{}", if pacing { "" } else { "-nopace" });
            println!(
                "{name:<15} {:>6}K {durable:>14.0} {:>7.0}% {cached:>14.0} {:>7.0}%",
                batch >> 10,
                100.0 * durable / fio_seq,
                100.0 * cached / fio_cache
            );
            results.push(json!({
                "method": name, "writeback_pacing": pacing, "batch_bytes": batch,
                "async_durable_MBps": durable, "async_page_cache_MBps": cached,
                "ratio_to_fio_end_fsync": durable / fio_seq,
                "ratio_to_fio_page_cache": cached / fio_cache,
            }));
        }
    }
    let mut sync_results = Vec::new();
    for method in [AppendMethod::Pwritev, AppendMethod::IoUring] {
        let (p50, p99, mbps, per_sync) = sync_figures(&dir, method, 16);
        let async_16k = results
            .iter()
            .find(|r| r["method"] == format!("{method:?}") && r["batch_bytes"] == 16 << 10)
            .and_then(|r| r["async_durable_MBps"].as_f64())
            .unwrap_or(f64::NAN);
        println!(
            "sync {method:?}: 1 appender p50 {p50:.0} us p99 {p99:.0} us (fio {:.0}/{:.0}); 16 appenders {mbps:.0} MB/s = {:.0}% of async 16K durable, {per_sync:.1} appends per fdatasync; fio 256 KiB write+fdatasync {:.0} MB/s ({:.0}%)",
            limits["fdatasync_16k_p50_us"].as_f64().unwrap(),
            limits["fdatasync_16k_p99_us"].as_f64().unwrap(),
            100.0 * mbps / async_16k,
            fio_sync_256k,
            100.0 * mbps / fio_sync_256k
        );
        sync_results.push(json!({"method": format!("{method:?}"), "p50_us": p50, "p99_us": p99, "appenders16_MBps": mbps,
            "ratio_to_async_16k": mbps / async_16k, "appends_per_fdatasync": per_sync,
            "ratio_to_fio_sync_256k": mbps / fio_sync_256k}));
    }
    println!(
        "{}",
        json!({"cores": num_cores(), "fs": fs_type, "fio": limits, "async": results, "sync": sync_results})
    );
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
