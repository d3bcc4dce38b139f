//! A full disk, for real: the log lives on a 512 KiB tmpfs (mounted by the test; needs
//! root, as CI has). ENOSPC in the middle of an append must leave nothing partial and
//! keep every acknowledged batch; appends work again once space is freed; and the 95 %
//! capacity policy, fed by real `statvfs` figures, stops and resumes production.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use ringmq_engine::capacity::{CapacityAction, disk_usage};
use ringmq_engine::{
    AppendError, AppendOptions, CapacityMonitor, CapacityPolicy, LogConfig, Offset,
};

/// A mounted tmpfs; the temp dir holding its mount point lives as long as the mount.
struct Tmpfs {
    mount_point: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs {
            mount_point: path,
            _parent: dir,
        }
    }
    fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

#[test]
fn enospc_mid_append_writes_nothing_partial_and_loses_nothing() {
    let fs = Tmpfs::mount("512k");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let mut log = open(fs.path(), config.clone());
    let mut acked = Vec::new();
    let err = loop {
        let b = batch(acked.len() as u64, 7, 3000, NOW); // ~21 KiB, not block-aligned
        match log.append(vec![b.clone()], AppendOptions::client(NOW)) {
            Ok(info) => acked.push((info.first_offset, stamped(&b, info.first_offset))),
            Err(e) => break e,
        }
        assert!(acked.len() < 100, "tmpfs never filled");
    };
    assert!(
        matches!(&err, AppendError::Io(e) if e.source.raw_os_error() == Some(libc::ENOSPC)),
        "{err:?}"
    );
    let leo = log.log_end_offset();
    assert_eq!(leo, acked.last().unwrap().0.plus(7));
    let seg = log.active_segment();
    assert_eq!(
        std::fs::metadata(seg.log_path()).unwrap().len(),
        u64::from(seg.size()),
        "partial bytes left"
    );
    assert_eq!(read_all(&log, Offset(0)), acked);
    // Free space (delete the oldest half of the data) and append again.
    log.update_high_watermark(leo);
    let cut = acked[acked.len() / 2].0;
    log.truncate_fully_and_start_at(leo).unwrap(); // a follower resetting frees everything
    let b = batch(999, 1, 100, NOW);
    let info = log
        .append(vec![b.clone()], AppendOptions::client(NOW))
        .unwrap();
    assert_eq!(info.first_offset, leo);
    assert!(cut < leo);
    drop(log);
    let log = open(fs.path(), config);
    assert_eq!(read_all(&log, leo), vec![(leo, stamped(&b, leo))]);
}

#[test]
fn capacity_policy_stops_and_resumes_production_on_real_usage() {
    let fs = Tmpfs::mount("1m");
    let monitor = CapacityMonitor::new(CapacityPolicy::StopProduction);
    let mut log = open(fs.path(), LogConfig::default());
    log.set_capacity_guard(Arc::clone(&monitor.guard));
    append(&mut log, batch(0, 1, 100, NOW));
    // Another tenant of the volume fills it past 95 %.
    let filler = fs.path().join("filler");
    let free = disk_usage(fs.path()).unwrap().available_bytes;
    std::fs::write(&filler, vec![0u8; (free - 16 * 1024) as usize]).unwrap();
    let usage = disk_usage(fs.path()).unwrap();
    assert!(usage.used_ratio() >= 0.95, "{usage:?}");
    assert_eq!(
        monitor.evaluate(usage, log.size_bytes()),
        CapacityAction::ProductionStopped(true)
    );
    let err = log
        .append(vec![batch(1, 1, 100, NOW)], AppendOptions::client(NOW))
        .unwrap_err();
    assert!(matches!(err, AppendError::DiskFull), "{err:?}");
    // Consumers still read.
    assert_eq!(read_all(&log, Offset(0)).len(), 1);
    std::fs::remove_file(&filler).unwrap();
    let usage = disk_usage(fs.path()).unwrap();
    assert_eq!(
        monitor.evaluate(usage, log.size_bytes()),
        CapacityAction::ProductionStopped(false)
    );
    append(&mut log, batch(2, 1, 100, NOW));
    assert_eq!(log.log_end_offset(), Offset(2));
}

#[test]
fn auto_delete_frees_the_oldest_tenth_across_logs() {
    let fs = Tmpfs::mount("2m");
    let monitor = CapacityMonitor::new(CapacityPolicy::AutoDelete);
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    let mut logs: Vec<_> = ["a-0", "b-0"]
        .iter()
        .map(|name| {
            ringmq_engine::UnifiedLog::open(fs.path().join(name), config.clone(), NOW).unwrap()
        })
        .collect();
    // Interleaved writes: log a's data is older than log b's at every point.
    for i in 0..40i64 {
        for (j, log) in logs.iter_mut().enumerate() {
            let ts = NOW + i * 10 + j as i64;
            log.append(
                vec![batch(i as u64, 4, 4000, ts)],
                AppendOptions::client(NOW),
            )
            .unwrap();
        }
    }
    for log in &mut logs {
        let leo = log.log_end_offset();
        log.update_high_watermark(leo);
    }
    let filler = fs.path().join("filler");
    let free = disk_usage(fs.path()).unwrap().available_bytes;
    std::fs::write(&filler, vec![0u8; (free - 32 * 1024) as usize]).unwrap();
    let stored: u64 = logs.iter().map(|l| l.size_bytes()).sum();
    let CapacityAction::DeleteOldest { bytes } =
        monitor.evaluate(disk_usage(fs.path()).unwrap(), stored)
    else {
        panic!("auto-delete did not trigger");
    };
    assert_eq!(bytes, (stored as f64 * 0.1).ceil() as u64);
    let candidates: Vec<_> = logs.iter().map(|l| l.deletable_segments()).collect();
    let plan = ringmq_engine::capacity::plan_oldest_first(&candidates, bytes);
    let mut freed = 0;
    for (i, below) in plan {
        freed += logs[i].delete_segments_before(below).unwrap().bytes;
    }
    assert!(freed >= bytes, "freed {freed} of {bytes}");
    assert!(
        freed < bytes + 2 * 64 * 1024,
        "freed far more than asked: {freed}"
    );
    // Oldest first: both logs lost their first segment, production continues.
    assert!(logs.iter().all(|l| l.log_start_offset() > Offset(0)));
    assert!(!monitor.guard.production_stopped());
    logs[0]
        .append(vec![batch(99, 1, 10, NOW)], AppendOptions::client(NOW))
        .unwrap();
}
