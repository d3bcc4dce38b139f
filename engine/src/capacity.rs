//! The capacity threshold policy (SPEC M3): what happens when the data volume is 95 % full.
//!
//! - `stop-production`: appends fail with [`crate::AppendError::DiskFull`] (the broker
//!   answers POLICY_VIOLATION) while reads keep working; production resumes by itself once
//!   usage drops below the threshold again (retention, DeleteRecords, an operator).
//! - `auto-delete`: the oldest 10 % of the stored data is deleted, oldest segments first
//!   across all logs of the volume (never an active segment), and production continues.
//!
//! The monitor is evaluated off the data path (a timer on the broker); the data path only
//! reads one atomic flag per append.

use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::offset::Offset;

/// Default threshold from the seeds.
pub const CAPACITY_THRESHOLD: f64 = 0.95;
/// Fraction of stored data `auto-delete` removes.
pub const AUTO_DELETE_FRACTION: f64 = 0.10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapacityPolicy {
    #[default]
    StopProduction,
    AutoDelete,
}

impl CapacityPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop-production" => Some(CapacityPolicy::StopProduction),
            "auto-delete" => Some(CapacityPolicy::AutoDelete),
            _ => None,
        }
    }
}

/// Shared by every log on a volume; set by the monitor, read by appends.
#[derive(Debug, Default)]
pub struct CapacityGuard {
    stopped: AtomicBool,
}

impl CapacityGuard {
    pub fn production_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
    pub fn set_production_stopped(&self, stopped: bool) {
        self.stopped.store(stopped, Ordering::Relaxed);
    }
}

/// Size and free space of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl DiskUsage {
    pub fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        1.0 - self.available_bytes as f64 / self.total_bytes as f64
    }
}

/// `statvfs(2)` of the filesystem holding `path`.
pub fn disk_usage(path: &Path) -> io::Result<DiskUsage> {
    let mut c_path = path.as_os_str().as_bytes().to_vec();
    c_path.push(0);
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `st` is a valid out-pointer
    // that statvfs fully initialises when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr().cast(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize;
    Ok(DiskUsage {
        total_bytes: st.f_blocks * frsize,
        available_bytes: st.f_bavail * frsize,
    })
}

/// What the monitor decided for one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapacityAction {
    None,
    /// `stop-production` engaged (or released, with `false`).
    ProductionStopped(bool),
    /// `auto-delete`: free this many bytes, oldest first.
    DeleteOldest {
        bytes: u64,
    },
}

#[derive(Debug)]
pub struct CapacityMonitor {
    pub policy: CapacityPolicy,
    pub threshold: f64,
    pub guard: std::sync::Arc<CapacityGuard>,
}

impl CapacityMonitor {
    pub fn new(policy: CapacityPolicy) -> Self {
        CapacityMonitor {
            policy,
            threshold: CAPACITY_THRESHOLD,
            guard: Default::default(),
        }
    }

    /// Decides on `usage`; `stored_bytes` is the data in all logs of the volume.
    pub fn evaluate(&self, usage: DiskUsage, stored_bytes: u64) -> CapacityAction {
        let over = usage.used_ratio() >= self.threshold;
        match self.policy {
            CapacityPolicy::StopProduction => {
                if over != self.guard.production_stopped() {
                    self.guard.set_production_stopped(over);
                    if over {
                        tracing::warn!(
                            used = usage.used_ratio(),
                            "disk above capacity threshold: production stopped"
                        );
                    } else {
                        tracing::info!(
                            used = usage.used_ratio(),
                            "disk below capacity threshold: production resumed"
                        );
                    }
                    return CapacityAction::ProductionStopped(over);
                }
                CapacityAction::None
            }
            CapacityPolicy::AutoDelete if over => {
                let bytes = (stored_bytes as f64 * AUTO_DELETE_FRACTION).ceil() as u64;
                tracing::warn!(
                    used = usage.used_ratio(),
                    bytes,
                    "disk above capacity threshold: deleting oldest data"
                );
                CapacityAction::DeleteOldest { bytes }
            }
            CapacityPolicy::AutoDelete => CapacityAction::None,
        }
    }
}

/// Chooses segments to delete, oldest timestamp first across logs, until `bytes` are
/// freed. `logs[i]` lists log i's deletable segments `(base, timestamp, bytes)` oldest
/// first (as [`crate::UnifiedLog::deletable_segments`] returns). Returns, per log that
/// loses segments, the base offset below which its segments go (a prefix of each log).
pub fn plan_oldest_first(logs: &[Vec<(Offset, i64, u64)>], bytes: u64) -> Vec<(usize, Offset)> {
    let mut cursor = vec![0usize; logs.len()];
    let mut freed = 0u64;
    while freed < bytes {
        let next = (0..logs.len())
            .filter(|&i| cursor[i] < logs[i].len())
            .min_by_key(|&i| logs[i][cursor[i]].1);
        let Some(i) = next else { break };
        freed += logs[i][cursor[i]].2;
        cursor[i] += 1;
    }
    (0..logs.len())
        .filter(|&i| cursor[i] > 0)
        .map(|i| {
            let below = logs[i]
                .get(cursor[i])
                .map_or_else(|| logs[i][cursor[i] - 1].0.plus(1), |s| s.0);
            (i, below)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: f64) -> DiskUsage {
        DiskUsage {
            total_bytes: 1000,
            available_bytes: ((1.0 - used) * 1000.0) as u64,
        }
    }

    #[test]
    fn stop_production_engages_and_releases_at_the_threshold() {
        let m = CapacityMonitor::new(CapacityPolicy::StopProduction);
        assert_eq!(m.evaluate(usage(0.90), 0), CapacityAction::None);
        assert_eq!(
            m.evaluate(usage(0.96), 0),
            CapacityAction::ProductionStopped(true)
        );
        assert!(m.guard.production_stopped());
        assert_eq!(m.evaluate(usage(0.97), 0), CapacityAction::None);
        assert_eq!(
            m.evaluate(usage(0.50), 0),
            CapacityAction::ProductionStopped(false)
        );
        assert!(!m.guard.production_stopped());
    }

    #[test]
    fn auto_delete_asks_for_ten_percent_and_picks_oldest_across_logs() {
        let m = CapacityMonitor::new(CapacityPolicy::AutoDelete);
        assert_eq!(
            m.evaluate(usage(0.96), 10_000),
            CapacityAction::DeleteOldest { bytes: 1000 }
        );
        assert!(!m.guard.production_stopped());
        let logs = vec![
            vec![(Offset(0), 10, 400), (Offset(100), 30, 400)],
            vec![(Offset(0), 20, 400), (Offset(50), 40, 400)],
            vec![],
        ];
        // Oldest: log0@10, log1@20, log0@30 -> 1200 bytes >= 1000.
        assert_eq!(
            plan_oldest_first(&logs, 1000),
            vec![(0, Offset(101)), (1, Offset(50))]
        );
        assert_eq!(plan_oldest_first(&logs, 0), vec![]);
    }

    #[test]
    fn statvfs_reads_a_real_filesystem() {
        let u = disk_usage(Path::new("/")).unwrap();
        assert!(u.total_bytes > 0 && u.available_bytes <= u.total_bytes);
        assert!(disk_usage(Path::new("/nonexistent/x")).is_err());
    }
}
