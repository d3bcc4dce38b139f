//! `LogLoader`: opens a partition directory and recovers its log.
//!
//! 1. Leftovers of interrupted operations: `.cleaned` (compaction output not committed)
//!    and `.deleted` files are removed; a `.swap` (committed compaction output) replaces
//!    the segments whose base offsets fall in its offset range, as Kafka's loader does.
//! 2. Segments wholly below the recovery point (flushed before the last checkpoint) keep
//!    their index files when those check out; only the tail after the last index entry
//!    is scanned (headers only). A bad index is rebuilt.
//! 3. From the segment holding the recovery point on, every batch is CRC-validated. The
//!    first torn or corrupt batch ends the log: its segment is truncated there and later
//!    segments are deleted. (Zero bytes past the end are `O_DIRECT` padding or
//!    preallocation, not corruption, and are trimmed quietly.)
//! 4. Offsets: log end = the last segment's next offset; log start and high watermark come
//!    from their checkpoints, clamped into `[first segment base, log end]`.
//! 5. If anything was validated or truncated, everything is flushed and the recovery
//!    point moves to the log end, so the next open does not validate it again.

use std::collections::BTreeMap;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::config::{AppendMethod, LogConfig};
use crate::error::{IoContext, OpenError, ResultExt};
use crate::index::{OffsetIndex, TimeIndex};
use crate::leader_epoch::LeaderEpochFileCache;
use crate::log::UnifiedLog;
use crate::offset::Offset;
use crate::segment::{
    self, INDEX_SUFFIX, LOG_SUFFIX, LogSegment, NO_VALIDATION, TIME_INDEX_SUFFIX,
    parse_base_offset, segment_path,
};

/// `<topic>-<partition>` -> (topic, partition).
pub fn parse_dir_name(dir: &Path) -> Result<(String, i32), OpenError> {
    let name = dir.file_name().and_then(|n| n.to_str());
    name.and_then(|n| n.rsplit_once('-'))
        .and_then(|(t, p)| Some((t.to_owned(), p.parse::<i32>().ok().filter(|p| *p >= 0)?)))
        .filter(|(t, _)| !t.is_empty())
        .ok_or_else(|| OpenError::InvalidDirName(dir.to_path_buf()))
}

pub(crate) fn load(dir: PathBuf, config: LogConfig, now_ms: i64) -> Result<UnifiedLog, OpenError> {
    let (topic, partition) = parse_dir_name(&dir)?;
    fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
    finish_interrupted_operations(&dir)?;
    let read_ckpt = |name: &str| checkpoint::read_offset(&dir.join(name)).map(|o| o.map(Offset));
    let recovery_point = read_ckpt(checkpoint::RECOVERY_POINT_CHECKPOINT)?.unwrap_or(Offset(0));
    let log_start_ckpt = read_ckpt(checkpoint::LOG_START_OFFSET_CHECKPOINT)?;
    let hw_ckpt = read_ckpt(checkpoint::REPLICATION_OFFSET_CHECKPOINT)?;
    let cleaner_ckpt = read_ckpt(checkpoint::CLEANER_OFFSET_CHECKPOINT)?;

    let bases = segment_bases(&dir)?;
    let (mut segments, recovered) = if bases.is_empty() {
        let base = log_start_ckpt.unwrap_or(Offset(0)).max(Offset(0));
        let seg = LogSegment::create(&dir, base, now_ms, false)?;
        (BTreeMap::from([(base, seg)]), false)
    } else {
        recover_segments(&dir, &bases, recovery_point, &config)?
    };
    if config.append_method == AppendMethod::Direct
        && let Some(active) = segments.values_mut().next_back()
    {
        active.open_direct()?;
    }
    let first_base = segments.keys().next().copied().unwrap_or(Offset(0));
    let leo = segments
        .values()
        .next_back()
        .map_or(first_base, LogSegment::next_offset);
    let log_start = log_start_ckpt
        .unwrap_or(first_base)
        .max(first_base)
        .min(leo);
    let hw = hw_ckpt.unwrap_or(log_start).clamp(log_start, leo);
    let epochs_path = dir.join(checkpoint::LEADER_EPOCH_CHECKPOINT);
    let mut epochs = match LeaderEpochFileCache::load(epochs_path.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "leader epoch checkpoint unreadable; starting empty");
            fs::remove_file(&epochs_path)
                .context(|| format!("remove {}", epochs_path.display()))?;
            LeaderEpochFileCache::load(epochs_path)?
        }
    };
    epochs.truncate_from_end(leo);
    let cleaner = cleaner_ckpt.unwrap_or(log_start).clamp(log_start, leo);
    let mut log = UnifiedLog::from_parts(
        dir,
        topic,
        partition,
        config,
        std::mem::take(&mut segments),
        log_start,
        hw,
        epochs,
        cleaner,
    );
    log.recovery_point = recovery_point.min(leo);
    log.durable_offset = log.recovery_point;
    if recovered || log.recovery_point < leo {
        let job = log.flush_job().map_err(op_to_open)?;
        let upto = job.run().map_err(op_to_open)?;
        log.flush_done(upto);
    }
    // A log created just now holds nothing its checkpoints would say beyond what a
    // missing checkpoint means (start 0, high watermark 0, no epochs): they are written
    // when there is something to record. Creating a topic of many partitions then costs
    // a directory and a segment file each, not three more files and six syncs.
    let fresh = bases.is_empty()
        && log_start_ckpt.is_none()
        && hw_ckpt.is_none()
        && log.leader_epochs().latest_epoch().is_none();
    if !fresh {
        log.write_checkpoints().map_err(op_to_open)?;
    }
    Ok(log)
}

fn op_to_open(e: crate::error::LogOpError) -> OpenError {
    match e {
        crate::error::LogOpError::Io(io) => OpenError::Io(io),
        crate::error::LogOpError::Checkpoint(c) => OpenError::Checkpoint(c),
        crate::error::LogOpError::Read(r) => OpenError::Read(r),
        other => OpenError::Io(IoContext {
            context: "recover".into(),
            source: std::io::Error::other(other.to_string()),
        }),
    }
}

/// Base offsets of the `.log` files, ascending.
fn segment_bases(dir: &Path) -> Result<Vec<Offset>, OpenError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).context(|| format!("list {}", dir.display()))? {
        let entry = entry.context(|| format!("list {}", dir.display()))?;
        if let Some((base, LOG_SUFFIX)) = entry.file_name().to_str().and_then(parse_base_offset) {
            bases.push(base);
        }
    }
    bases.sort();
    Ok(bases)
}

fn recover_segments(
    dir: &Path,
    bases: &[Offset],
    recovery_point: Offset,
    config: &LogConfig,
) -> Result<(BTreeMap<Offset, LogSegment>, bool), OpenError> {
    let interval = config.index_interval_bytes;
    let recovery_base = bases
        .iter()
        .copied()
        .filter(|b| *b <= recovery_point)
        .max()
        .unwrap_or(bases[0]);
    let mut segments = BTreeMap::new();
    let mut recovered = false;
    for (i, &base) in bases.iter().enumerate() {
        let mut seg = LogSegment::open(dir, base)?;
        let prev_next = segments.values().next_back().map(LogSegment::next_offset);
        if prev_next.is_some_and(|n| base < n) {
            for &doomed in &bases[i..] {
                tracing::warn!(
                    base = doomed.0,
                    "segment overlaps the previous one; deleting it"
                );
                LogSegment::open(dir, doomed)?.delete_files()?;
            }
            recovered = true;
            break;
        }
        let below = base < recovery_base;
        let indexes = load_indexes(&seg, (!below).then_some(recovery_point));
        let mut outcome = seg.recover_from(indexes, !below, interval)?;
        if below && outcome.error.is_some() {
            tracing::warn!(segment = %seg.log_path().display(), "segment below the recovery point does not parse; validating it");
            outcome = seg.recover_from(None, true, interval)?;
        }
        recovered |= !below;
        let corrupt = outcome.error.is_some();
        if corrupt {
            recovered = true;
            trim_torn_tail(&seg, outcome.position, outcome.error.as_ref())?;
        }
        segments.insert(base, seg);
        if corrupt {
            for &later in &bases[i + 1..] {
                tracing::warn!(base = later.0, "deleting segment after a corrupt batch");
                LogSegment::open(dir, later)?.delete_files()?;
            }
            break;
        }
    }
    Ok((segments, recovered))
}

/// Cuts `seg`'s file at `position` (the end of its last good batch).
fn trim_torn_tail(
    seg: &LogSegment,
    position: u32,
    error: Option<&crate::batch::BatchError>,
) -> Result<(), OpenError> {
    let path = seg.log_path().display().to_string();
    let file_len = seg
        .file()
        .metadata()
        .context(|| format!("stat {path}"))?
        .len();
    let mut tail = vec![0u8; (file_len - u64::from(position)).min(1 << 20) as usize];
    let n = segment::read_fully_at(seg.file(), &mut tail, u64::from(position))
        .context(|| format!("read {path}"))?;
    if tail[..n].iter().all(|b| *b == 0) && file_len - u64::from(position) <= 1 << 20 {
        tracing::debug!(segment = %path, position, "trimming zero padding");
    } else {
        tracing::warn!(segment = %path, position, bytes = file_len - u64::from(position),
            error = ?error, "truncating torn or corrupt tail");
    }
    seg.file()
        .set_len(u64::from(position))
        .context(|| format!("truncate {path}"))?;
    Ok(())
}

/// The segment's index files if they check out, truncated below `cap` when given.
fn load_indexes(seg: &LogSegment, cap: Option<Offset>) -> Option<(OffsetIndex, TimeIndex)> {
    let dir = seg.log_path().parent()?;
    let base = seg.base_offset;
    let size = seg.size();
    let oi = OffsetIndex::load(segment_path(dir, base, INDEX_SUFFIX), base, |e| {
        e.position.0 < size
    });
    let ti = TimeIndex::load(segment_path(dir, base, TIME_INDEX_SUFFIX), base, |_| true);
    match (oi, ti) {
        (Ok(mut oi), Ok(mut ti)) => {
            if let Some(cap) = cap {
                oi.truncate_to(cap).ok()?;
                ti.truncate_to(cap).ok()?;
            }
            Some((oi, ti))
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "rebuilding index");
            None
        }
    }
}

/// Removes `.cleaned`/`.deleted`/`.tmp` files and completes committed `.swap` files.
fn finish_interrupted_operations(dir: &Path) -> Result<(), OpenError> {
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir).context(|| format!("list {}", dir.display()))? {
        let entry = entry.context(|| format!("list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.ends_with(".cleaned") || name.ends_with(".deleted") || name.ends_with(".tmp") {
            fs::remove_file(&path).context(|| format!("remove {}", path.display()))?;
        } else if let Some(stem) = name.strip_suffix(".log.swap") {
            swaps.push((stem.to_owned(), path));
        } else if name.ends_with(".swap") {
            fs::remove_file(&path).context(|| format!("remove {}", path.display()))?;
        }
    }
    for (stem, swap) in swaps {
        let Some((base, _)) = parse_base_offset(&format!("{stem}.log")) else {
            continue;
        };
        let file = fs::File::open(&swap).context(|| format!("open {}", swap.display()))?;
        let len = file
            .metadata()
            .context(|| format!("stat {}", swap.display()))?
            .len();
        let mut next = base;
        segment::scan_batches(
            &file,
            0,
            u32::try_from(len).unwrap_or(u32::MAX),
            NO_VALIDATION,
            |_, h, _| {
                next = h.next_offset();
                ControlFlow::Continue(())
            },
        )
        .context(|| format!("scan {}", swap.display()))?;
        for old in segment_bases(dir)?
            .into_iter()
            .filter(|b| *b >= base && *b < next.max(base.plus(1)))
        {
            tracing::info!(base = old.0, "completing interrupted compaction swap");
            LogSegment::open(dir, old)?.delete_files()?;
        }
        let target = segment_path(dir, base, LOG_SUFFIX);
        fs::rename(&swap, &target).context(|| format!("rename {}", swap.display()))?;
    }
    Ok(())
}
