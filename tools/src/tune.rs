//! `ringmq tune`: probes the host a broker will run on — cores and NUMA nodes, memory, the
//! data directory's filesystem, its sequential write bandwidth and fdatasync latency,
//! loopback TCP throughput — writes a disk profile derived from the figures, and checks
//! the system settings that matter to a broker. It recommends; it changes the system only
//! with `--apply`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::bench::stats::Latency;

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The directory the broker's data will live in (probed, then cleaned up).
    #[arg(long, default_value = "./ringmq-data")]
    data_dir: PathBuf,
    /// Where to write the derived disk profile (use with ringmqd --disk-profile FILE).
    #[arg(long, default_value = "./ringmq-disk.toml")]
    write_profile: PathBuf,
    /// Smaller probes (64 MiB written, 100 syncs, 0.5 s of TCP): seconds, not a minute.
    #[arg(long)]
    quick: bool,
    /// Apply the recommended system settings (sysctl now and in /etc/sysctl.d,
    /// transparent huge pages, the open-file limit in /etc/security/limits.d).
    #[arg(long)]
    apply: bool,
    /// Prefix for /proc/sys, /sys and /etc (tests point it at a scratch directory).
    #[arg(long, hide = true, default_value = "/")]
    root: PathBuf,
}

/// The host's measured ceilings.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub cores: usize,
    pub numa_nodes: usize,
    pub memory_gib: f64,
    pub fs_type: String,
    pub seq_write_mbps: f64,
    pub fdatasync_p50_us: f64,
    pub fdatasync_p99_us: f64,
    pub loopback_mbps: f64,
    /// How much faster `write()` copies appends into recycled page-cache pages (with
    /// drop-behind) than into the pages the kernel hands out otherwise. Well above 1 on
    /// VMs whose free memory goes back to the host (free page reporting, balloons).
    pub recycled_page_gain: f64,
}

impl Probe {
    pub fn one_line(&self) -> String {
        format!(
            "{} cores, {} NUMA node(s), {:.1} GiB, {} data dir; sequential write {:.0} MB/s \
             (1 MiB blocks, incl. final fdatasync); fdatasync 16 KiB p50 {:.0} us p99 {:.0} us; \
             loopback TCP {:.0} MB/s; appends into recycled pages {:.1}x faster",
            self.cores,
            self.numa_nodes,
            self.memory_gib,
            self.fs_type,
            self.seq_write_mbps,
            self.fdatasync_p50_us,
            self.fdatasync_p99_us,
            self.loopback_mbps,
            self.recycled_page_gain
        )
    }
}

fn fs_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        m => format!("0x{m:x}"),
    }
}

fn numa_nodes() -> usize {
    std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("node") && n[4..].chars().all(|c| c.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0)
        .max(1)
}

fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0)
}

/// Sequential buffered write of `size` bytes in 1 MiB blocks, with the final fdatasync
/// inside the time (what `physical-limits`' fio job measures).
fn seq_write(path: &Path, size: usize) -> anyhow::Result<f64> {
    let block: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let start = Instant::now();
    for _ in 0..size / block.len() {
        f.write_all(&block)?;
    }
    f.sync_data()?;
    Ok(size as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Seconds spent in `write()` appending `size` bytes in 1 MiB blocks, with an fdatasync
/// every 4 MiB; with `drop_behind`, each 16 MiB also drops what lies 32 MiB behind from
/// the page cache (what `ringmq.cache.retain.bytes` does), so later blocks reuse pages.
fn append_write_secs(path: &Path, size: usize, drop_behind: bool) -> anyhow::Result<f64> {
    let block: Vec<u8> = (0..1 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut in_write = 0.0;
    for i in 1..=size >> 20 {
        let t = Instant::now();
        f.write_all(&block)?;
        in_write += t.elapsed().as_secs_f64();
        if i % 4 == 0 {
            f.sync_data()?;
        }
        if drop_behind && i % 16 == 0 && i > 32 {
            rustix::fs::fadvise(
                &f,
                0,
                std::num::NonZeroU64::new(((i - 32) as u64) << 20),
                rustix::fs::Advice::DontNeed,
            )?;
        }
    }
    Ok(in_write)
}

/// [`Probe::recycled_page_gain`]: the same appends without and with drop-behind. The
/// first file stays until both ran, so its pages cannot feed the second.
fn recycled_page_gain(dir: &Path, size: usize) -> anyhow::Result<f64> {
    let (a, b) = (
        dir.join(".ringmq-tune-fresh"),
        dir.join(".ringmq-tune-recycled"),
    );
    let result = (|| {
        let plain = append_write_secs(&a, size, false)?;
        let recycled = append_write_secs(&b, size, true)?;
        anyhow::Ok(plain / recycled.max(1e-9))
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    result
}

/// 16 KiB write + fdatasync, `n` times.
fn sync_latency(path: &Path, n: usize) -> anyhow::Result<Latency> {
    let block = vec![0x5au8; 16 * 1024];
    let mut f = std::fs::File::create(path)?;
    let mut l = Latency::new();
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        l.record_us(t.elapsed().as_micros() as u64);
    }
    Ok(l)
}

/// One TCP stream over loopback, 128 KiB writes, for `secs`.
fn loopback(secs: f64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 128 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![1u8; 128 * 1024];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&buf)?;
    }
    drop(s);
    let total = reader
        .join()
        .map_err(|_| anyhow::anyhow!("loopback reader panicked"))??;
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Measures the host; `dir` is where data would live.
pub fn probe(dir: &Path, quick: bool) -> anyhow::Result<Probe> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(".ringmq-tune-probe");
    let fs_type = rustix::fs::statfs(dir)
        .map(|s| fs_name(s.f_type))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let result = (|| {
        let seq = seq_write(&file, if quick { 64 << 20 } else { 1 << 30 })?;
        let sync = sync_latency(&file, if quick { 100 } else { 1000 })?;
        let s = sync
            .summary()
            .context("no fdatasync latency was recorded")?;
        let lo = loopback(if quick { 0.5 } else { 3.0 })?;
        let gain = recycled_page_gain(dir, if quick { 128 << 20 } else { 512 << 20 })?;
        anyhow::Ok(Probe {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            numa_nodes: numa_nodes(),
            memory_gib: memory_gib(),
            fs_type: fs_type.clone(),
            seq_write_mbps: seq,
            fdatasync_p50_us: s.p50_ms * 1000.0,
            fdatasync_p99_us: s.p99_ms * 1000.0,
            loopback_mbps: lo,
            recycled_page_gain: gain,
        })
    })();
    let _ = std::fs::remove_file(&file);
    result
}

/// The disk profile the probe suggests: the nearest class as a base, its class figures
/// replaced by the measured ones, writeback sized to ~10 ms of the device's bandwidth.
pub fn derive_disk_profile(p: &Probe) -> anyhow::Result<ringmq_tuning::DiskProfile> {
    let base = if p.fs_type == "tmpfs" {
        "page-cache"
    } else if p.fdatasync_p50_us < 200.0 && p.seq_write_mbps >= 1000.0 {
        "local-nvme"
    } else if p.fdatasync_p50_us < 1500.0 && p.seq_write_mbps >= 300.0 {
        "evs-ultra-high-io"
    } else {
        "evs-high-io"
    };
    let mut d = ringmq_tuning::disk_profile(base).map_err(anyhow::Error::msg)?;
    d.name = "tuned".into();
    d.description = format!(
        "written by ringmq tune from {base}: {:.0} MB/s sequential, fdatasync p50 {:.0} us",
        p.seq_write_mbps, p.fdatasync_p50_us
    );
    d.class.latency_ms = (p.fdatasync_p50_us / 1000.0 * 1000.0).round() / 1000.0;
    d.class.bandwidth_mbps = p.seq_write_mbps.round() as u32;
    let writeback = ((p.seq_write_mbps * 1e6 * 0.010) as u64)
        .clamp(1 << 20, 8 << 20)
        .next_power_of_two()
        .min(8 << 20);
    d.broker
        .insert("ringmq.writeback.bytes".into(), writeback.to_string());
    let window = if p.fdatasync_p50_us < 100.0 { 50 } else { 0 };
    d.broker
        .insert("ringmq.group.commit.window.us".into(), window.to_string());
    let read_ahead = if p.fdatasync_p50_us > 500.0 {
        1 << 20
    } else {
        0
    };
    d.broker
        .insert("ringmq.read.ahead.bytes".into(), read_ahead.to_string());
    // Drop-behind pays when recycled pages are clearly cheaper to fill; tmpfs pages
    // cannot be dropped at all.
    let retain: i64 = if p.fs_type != "tmpfs" && p.recycled_page_gain >= 1.5 {
        64 << 20
    } else {
        -1
    };
    d.broker
        .insert("ringmq.cache.retain.bytes".into(), retain.to_string());
    Ok(d)
}

/// One system setting: where it lives, what it is, what a broker wants.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub current: String,
    pub recommended: String,
    pub ok: bool,
    pub why: String,
    #[serde(skip)]
    apply: Apply,
}

#[derive(Debug, Clone)]
enum Apply {
    /// Write the value to this /proc/sys key and persist it in /etc/sysctl.d.
    Sysctl(&'static str),
    /// Write this word to a sysfs file.
    Sysfs(&'static str),
    /// Persist a limits.d line.
    NoFile,
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn sysctl_path(root: &Path, key: &str) -> PathBuf {
    root.join("proc/sys").join(key.replace('.', "/"))
}

/// `want`: (at least, at most) for a numeric sysctl.
fn sysctl_check(
    root: &Path,
    key: &'static str,
    want: (Option<i64>, Option<i64>),
    rec: i64,
    why: &str,
) -> Check {
    let current = read_trim(&sysctl_path(root, key));
    let ok = current
        .as_deref()
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|v| want.0.is_none_or(|lo| v >= lo) && want.1.is_none_or(|hi| v <= hi));
    Check {
        name: key.into(),
        current: current.unwrap_or_else(|| "unreadable".into()),
        recommended: rec.to_string(),
        ok,
        why: why.into(),
        apply: Apply::Sysctl(key),
    }
}

pub fn checks(root: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    out.push(Check {
        name: "open files (ulimit -n)".into(),
        current: nofile.to_string(),
        recommended: "1048576".into(),
        ok: nofile >= 100_000,
        why: "3 files per segment of every partition plus one socket per connection \
              (2000 partitions and 4000 connections at kafka.16u32g)"
            .into(),
        apply: Apply::NoFile,
    });
    out.push(sysctl_check(
        root,
        "net.core.somaxconn",
        (Some(4096), None),
        4096,
        "the listen backlog: thousands of clients reconnecting after a restart",
    ));
    out.push(sysctl_check(
        root,
        "vm.dirty_background_ratio",
        (None, Some(10)),
        5,
        "start kernel writeback early so the flusher's fdatasync has little to wait for",
    ));
    out.push(sysctl_check(
        root,
        "vm.dirty_ratio",
        (Some(40), None),
        60,
        "room for write bursts before appending threads are throttled",
    ));
    out.push(sysctl_check(
        root,
        "vm.swappiness",
        (None, Some(10)),
        1,
        "keep the broker and the page cache of the log tail in memory",
    ));
    let thp_path = root.join("sys/kernel/mm/transparent_hugepage/enabled");
    let thp = read_trim(&thp_path);
    let selected = thp.as_deref().and_then(|s| {
        s.split_whitespace()
            .find(|w| w.starts_with('['))
            .map(|w| w.trim_matches(['[', ']']).to_owned())
    });
    out.push(Check {
        name: "transparent huge pages".into(),
        current: selected.clone().unwrap_or_else(|| "unreadable".into()),
        recommended: "madvise".into(),
        ok: selected.as_deref().is_some_and(|s| s != "always"),
        why: "'always' makes the kernel compact memory in the allocation path: latency spikes"
            .into(),
        apply: Apply::Sysfs("sys/kernel/mm/transparent_hugepage/enabled"),
    });
    out
}

fn apply(root: &Path, checks: &[Check]) -> Vec<String> {
    let mut done = Vec::new();
    let mut persist = String::from("# written by ringmq tune --apply\n");
    for c in checks.iter().filter(|c| !c.ok) {
        let result = match &c.apply {
            Apply::Sysctl(key) => {
                persist.push_str(&format!("{key} = {}\n", c.recommended));
                std::fs::write(sysctl_path(root, key), &c.recommended)
            }
            Apply::Sysfs(path) => std::fs::write(root.join(path), &c.recommended),
            Apply::NoFile => {
                let dir = root.join("etc/security/limits.d");
                std::fs::create_dir_all(&dir).and_then(|_| {
                    std::fs::write(
                        dir.join("99-ringmq.conf"),
                        format!("* soft nofile {0}\n* hard nofile {0}\n", c.recommended),
                    )
                })
            }
        };
        done.push(match result {
            Ok(()) => format!("applied {} = {}", c.name, c.recommended),
            Err(e) => format!("could not apply {}: {e}", c.name),
        });
    }
    if persist.lines().count() > 1 {
        let dir = root.join("etc/sysctl.d");
        let r = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(dir.join("99-ringmq.conf"), persist));
        done.push(match r {
            Ok(()) => "persisted in /etc/sysctl.d/99-ringmq.conf".into(),
            Err(e) => format!("could not persist the sysctls: {e}"),
        });
    }
    done
}

#[derive(Serialize)]
struct TuneReport<'a> {
    probe: &'a Probe,
    disk_profile: String,
    checks: &'a [Check],
    applied: Vec<String>,
}

pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    eprintln!("probing {} ...", args.data_dir.display());
    let p = probe(&args.data_dir, args.quick)?;
    println!("host: {}", p.one_line());
    let profile = derive_disk_profile(&p)?;
    let text = profile.to_toml().map_err(anyhow::Error::msg)?;
    std::fs::write(
        &args.write_profile,
        format!(
            "# ringmqd --disk-profile {}\n{text}",
            args.write_profile.display()
        ),
    )
    .with_context(|| format!("writing {}", args.write_profile.display()))?;
    println!(
        "disk profile written to {} ({})",
        args.write_profile.display(),
        profile.description
    );
    let checks = checks(&args.root);
    for c in &checks {
        println!(
            "{} {:<26} {:>12}  recommended {:<8} {}",
            if c.ok { "ok  " } else { "WARN" },
            c.name,
            c.current,
            c.recommended,
            if c.ok {
                String::new()
            } else {
                format!("({})", c.why)
            }
        );
    }
    let applied = if args.apply {
        apply(&args.root, &checks)
    } else {
        if checks.iter().any(|c| !c.ok) {
            println!("run with --apply to apply the recommendations");
        }
        Vec::new()
    };
    for a in &applied {
        println!("{a}");
    }
    println!(
        "{}",
        serde_json::to_string(&TuneReport {
            probe: &p,
            disk_profile: args.write_profile.display().to_string(),
            checks: &checks,
            applied,
        })?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_with(p50_us: f64, mbps: f64, fs: &str) -> Probe {
        Probe {
            cores: 2,
            numa_nodes: 1,
            memory_gib: 4.0,
            fs_type: fs.into(),
            seq_write_mbps: mbps,
            fdatasync_p50_us: p50_us,
            fdatasync_p99_us: p50_us * 2.0,
            loopback_mbps: 2000.0,
            recycled_page_gain: 1.0,
        }
    }

    #[test]
    fn derived_profiles_follow_the_device() {
        let nvme = derive_disk_profile(&probe_with(40.0, 2500.0, "ext4")).unwrap();
        assert!(nvme.description.contains("from local-nvme"));
        assert_eq!(nvme.broker["ringmq.group.commit.window.us"], "50");
        assert_eq!(nvme.broker["ringmq.writeback.bytes"], (8 << 20).to_string());
        let slow = derive_disk_profile(&probe_with(2500.0, 140.0, "ext4")).unwrap();
        assert!(slow.description.contains("from evs-high-io"));
        assert_eq!(slow.class.bandwidth_mbps, 140);
        assert_eq!(slow.class.latency_ms, 2.5);
        assert_eq!(slow.broker["ringmq.writeback.bytes"], (2 << 20).to_string());
        assert_eq!(
            slow.broker["ringmq.read.ahead.bytes"],
            (1 << 20).to_string()
        );
        assert_eq!(slow.broker["ringmq.cache.retain.bytes"], "-1");
        let ram = derive_disk_profile(&probe_with(3.0, 5000.0, "tmpfs")).unwrap();
        assert!(ram.description.contains("from page-cache"));
        // Drop-behind follows the measured gain, except where pages cannot be dropped.
        let mut vm = probe_with(300.0, 800.0, "ext4");
        vm.recycled_page_gain = 4.0;
        let d = derive_disk_profile(&vm).unwrap();
        assert_eq!(
            d.broker["ringmq.cache.retain.bytes"],
            (64 << 20).to_string()
        );
        vm.fs_type = "tmpfs".into();
        let d = derive_disk_profile(&vm).unwrap();
        assert_eq!(d.broker["ringmq.cache.retain.bytes"], "-1");
    }

    fn fake_root(values: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (k, v) in values {
            let p = if k.starts_with("sys/") {
                root.path().join(k)
            } else {
                sysctl_path(root.path(), k)
            };
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{v}\n")).unwrap();
        }
        root
    }

    #[test]
    fn checks_read_the_settings_and_apply_fixes_only_the_bad_ones() {
        let root = fake_root(&[
            ("net.core.somaxconn", "128"),
            ("vm.dirty_background_ratio", "5"),
            ("vm.dirty_ratio", "20"),
            ("vm.swappiness", "60"),
            (
                "sys/kernel/mm/transparent_hugepage/enabled",
                "[always] madvise never",
            ),
        ]);
        let cs = checks(root.path());
        let by = |n: &str| cs.iter().find(|c| c.name == n).unwrap().clone();
        assert!(!by("net.core.somaxconn").ok);
        assert!(by("vm.dirty_background_ratio").ok);
        assert!(!by("vm.dirty_ratio").ok);
        assert!(!by("vm.swappiness").ok);
        assert_eq!(by("transparent huge pages").current, "always");
        let done = apply(root.path(), &cs);
        assert!(done.iter().all(|d| !d.starts_with("could not")), "{done:?}");
        let again = checks(root.path());
        for name in ["net.core.somaxconn", "vm.dirty_ratio", "vm.swappiness"] {
            assert!(again.iter().find(|c| c.name == name).unwrap().ok, "{name}");
        }
        assert_eq!(
            read_trim(&sysctl_path(root.path(), "vm.dirty_background_ratio")).unwrap(),
            "5"
        );
        let persisted =
            std::fs::read_to_string(root.path().join("etc/sysctl.d/99-ringmq.conf")).unwrap();
        assert!(persisted.contains("vm.swappiness = 1") && !persisted.contains("dirty_background"));
        assert_eq!(
            read_trim(
                &root
                    .path()
                    .join("sys/kernel/mm/transparent_hugepage/enabled")
            )
            .unwrap(),
            "madvise"
        );
    }

    #[test]
    fn missing_settings_are_reported_not_fatal() {
        let root = tempfile::tempdir().unwrap();
        let cs = checks(root.path());
        let c = cs.iter().find(|c| c.name == "vm.swappiness").unwrap();
        assert_eq!(c.current, "unreadable");
        assert!(!c.ok);
    }

    #[test]
    fn a_quick_probe_measures_something() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path(), true).unwrap();
        assert!(p.seq_write_mbps > 0.0 && p.loopback_mbps > 0.0);
        assert!(p.fdatasync_p99_us >= p.fdatasync_p50_us);
        assert!(p.cores >= 1 && p.memory_gib > 0.0);
        assert!(!dir.path().join(".ringmq-tune-probe").exists());
    }
}
