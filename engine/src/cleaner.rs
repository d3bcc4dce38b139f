//! `LogCleaner`: log compaction for `cleanup.policy=compact` (SPEC T10).
//!
//! Compaction keeps, per key, the record with the highest offset; a tombstone (null value)
//! survives `delete.retention.ms` past its segment's newest timestamp, then goes too.
//! As in Kafka, the active segment is never cleaned, and the log is split at the cleaner
//! checkpoint (`cleaner-offset-checkpoint`) into a clean head (already compacted) and a
//! dirty tail:
//!
//! 1. [`UnifiedLog::clean_task`] (shard thread, no I/O) snapshots the non-active segments'
//!    descriptors when the dirty ratio reaches `min.cleanable.dirty.ratio`.
//! 2. [`CleanTask::run`] (any thread; blocking) builds the offset map `key -> latest
//!    offset` over the dirty tail, then rewrites the segments in groups that fit in
//!    `segment.bytes`: batches whose records all survive are copied byte-for-byte; others
//!    are rebuilt with the surviving records, keeping their base offset, last offset delta,
//!    producer fields and record encodings (new CRC). Empty batches are dropped. Output
//!    goes to `<base>.log.cleaned`, is fdatasync'ed and renamed to `<base>.log.swap`: the
//!    commit point (the loader completes a swap after a crash).
//! 3. [`UnifiedLog::install_cleaned`] (shard thread) swaps the groups in if their source
//!    segments are unchanged (retention or truncation may have raced), else discards.
//!
//! Transactions (Kafka's rules): records of aborted transactions are removed and never
//! count as a key's latest value (an aborted write must not supersede a committed one);
//! nothing from the first transaction still undecided in the cleanable segments on is
//! cleaned (it may yet abort); a transaction's marker goes once none of its data is left
//! and `delete.retention.ms` has passed (Kafka's rule for markers).
//!
//! Appends never wait for the cleaner: it reads only immutable non-active segments
//! through its own descriptors. Compressed batches are compacted record by record too:
//! decompressed, filtered, and compressed again with their codec, keeping (as Kafka
//! does) their base offset and last offset delta so that producers' sequence state is
//! the same after cleaning.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchBuilder, BatchHeader, Compression};
use crate::checkpoint;
use crate::error::{IoContext, LogOpError, ResultExt};
use crate::log::UnifiedLog;
use crate::offset::Offset;
use crate::segment::{LOG_SUFFIX, LogSegment, scan_batches, segment_path};

/// Most distinct keys one cleaning round maps; a larger dirty tail is cleaned in rounds.
pub const CLEANER_KEYS_MAX: usize = 4 << 20;

#[derive(Debug, Clone)]
struct SourceSegment {
    base: Offset,
    file: Arc<File>,
    size: u32,
    /// Newest timestamp in the segment (or its file time): the tombstone clock.
    timestamp: i64,
}

/// A compaction round's input, detached from the log.
#[derive(Debug)]
pub struct CleanTask {
    dir: PathBuf,
    sources: Vec<SourceSegment>,
    first_dirty: Offset,
    /// Where the dirty section ends (the active segment's base, or a round's key limit).
    end: Offset,
    delete_horizon_ms: i64,
    segment_bytes: u32,
}

#[derive(Debug)]
struct CleanedGroup {
    sources: Vec<SourceSegment>,
    swap: PathBuf,
}

/// A finished round, to install with [`UnifiedLog::install_cleaned`].
#[derive(Debug)]
pub struct Cleaned {
    groups: Vec<CleanedGroup>,
    end: Offset,
    pub stats: CleanStats,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub batches_rewritten: u64,
    pub markers_removed: u64,
}

impl UnifiedLog {
    /// Dirty bytes over cleanable bytes (Kafka's cleanable ratio).
    pub fn dirty_ratio(&self) -> f64 {
        let active = self.active_segment().base_offset;
        let (mut dirty, mut total) = (0u64, 0u64);
        for s in self.segments.values().filter(|s| s.base_offset < active) {
            total += u64::from(s.size());
            if s.next_offset() > self.cleaner_checkpoint {
                dirty += u64::from(s.size());
            }
        }
        if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        }
    }

    /// A compaction round if the log compacts and enough of it is dirty.
    pub fn clean_task(&self, now_ms: i64) -> Option<CleanTask> {
        if !self.config.cleanup_policy.compacts() || self.segments.len() < 2 {
            return None;
        }
        let ratio = self.dirty_ratio();
        if ratio == 0.0 || ratio < self.config.min_cleanable_dirty_ratio {
            return None;
        }
        let active = self.active_segment().base_offset;
        let sources = self
            .segments
            .values()
            .filter(|s| s.base_offset < active)
            .map(|s| SourceSegment {
                base: s.base_offset,
                file: Arc::clone(s.file()),
                size: s.size(),
                timestamp: if s.max_timestamp() >= 0 {
                    s.max_timestamp()
                } else {
                    s.created_ms
                },
            })
            .collect();
        Some(CleanTask {
            dir: self.dir.clone(),
            sources,
            first_dirty: self.cleaner_checkpoint.max(self.log_start_offset),
            end: active,
            delete_horizon_ms: now_ms.saturating_sub(self.config.delete_retention_ms),
            segment_bytes: self.config.segment_bytes,
        })
    }

    /// Swaps in a finished round. Groups whose sources changed meanwhile are discarded.
    pub fn install_cleaned(&mut self, cleaned: Cleaned) -> Result<CleanStats, LogOpError> {
        let interval = self.config.index_interval_bytes;
        let mut installed_all = true;
        for group in cleaned.groups {
            let unchanged = group.sources.iter().all(|src| {
                self.segments
                    .get(&src.base)
                    .is_some_and(|s| Arc::ptr_eq(s.file(), &src.file) && s.size() == src.size)
            });
            let is_active = group
                .sources
                .iter()
                .any(|s| s.base == self.active_segment().base_offset);
            if !unchanged || is_active {
                installed_all = false;
                fs::remove_file(&group.swap)
                    .context(|| format!("discard {}", group.swap.display()))?;
                continue;
            }
            let first = group.sources[0].base;
            for src in &group.sources {
                if let Some(old) = self.segments.remove(&src.base) {
                    old.delete_files()?;
                }
            }
            // The old segments are gone from the log: until the cleaned one is in, the
            // log has a hole. If that fails the log goes offline; the loader finishes the
            // committed swap when the log is reopened.
            let seg = match install_swap(&self.dir, first, &group.swap, interval) {
                Ok(seg) => seg,
                Err(e) => {
                    self.mark_offline(format!("installing cleaned segment {first}: {e}"));
                    return Err(e.into());
                }
            };
            self.segments.insert(first, seg);
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .context(|| format!("fsync {}", self.dir.display()))?;
        if installed_all {
            self.cleaner_checkpoint = self.cleaner_checkpoint.max(cleaned.end);
            let path = self.dir.join(checkpoint::CLEANER_OFFSET_CHECKPOINT);
            checkpoint::write_offset(
                &path,
                &self.topic,
                self.partition,
                self.cleaner_checkpoint.0,
            )?;
        }
        self.check_invariants();
        Ok(cleaned.stats)
    }
}

/// Per producer, where its current transaction's data was met in this round (the
/// group) and whether any of it survives. A marker may go (once `delete.retention.ms`
/// has passed) when none of its transaction's data is left: none met at all (removed in
/// an earlier round, or before the log start), or all of it in the marker's own group
/// (installed or discarded together with the marker) with nothing surviving.
#[derive(Debug, Default)]
struct TxnsSeen(HashMap<i64, (usize, bool)>);

impl TxnsSeen {
    fn saw_data(&mut self, h: &BatchHeader, group: usize, survives: bool) {
        let seen = self.0.entry(h.producer_id).or_insert((group, false));
        if seen.0 != group {
            // Data in more than one group: the marker stays (this round).
            seen.1 = true;
        }
        seen.1 |= survives;
    }

    /// Whether `h` (a marker, met in `group`) may be removed; the producer's next
    /// transaction starts afresh either way.
    fn marker_removable(&mut self, h: &BatchHeader, group: usize) -> bool {
        match self.0.remove(&h.producer_id) {
            None => true,
            Some((g, alive)) => g == group && !alive,
        }
    }
}

/// Aborted transactions in the cleanable segments: per producer, (first offset, marker
/// offset) ranges.
#[derive(Debug, Default)]
struct Aborted(HashMap<i64, Vec<(Offset, Offset)>>);

impl Aborted {
    /// Whether `h` is a data batch of an aborted transaction.
    fn holds(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.0.get(&h.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|(first, marker)| h.base_offset >= *first && h.base_offset < *marker)
            })
    }
}

impl CleanTask {
    /// Runs the round (blocking: reads and writes segment files).
    pub fn run(mut self) -> Result<Cleaned, LogOpError> {
        let mut stats = CleanStats::default();
        let aborted = self.scan_transactions()?;
        let map = self.build_offset_map(&aborted, &mut stats)?;
        let mut groups = Vec::new();
        let mut txns = TxnsSeen::default();
        for (i, sources) in self.groups().into_iter().enumerate() {
            let swap = self.clean_group(i, &sources, &map, &aborted, &mut txns, &mut stats)?;
            groups.push(CleanedGroup { sources, swap });
        }
        Ok(Cleaned {
            groups,
            end: self.end,
            stats,
        })
    }

    /// The aborted transactions of the cleanable segments; `end` moves back to the
    /// segment where the first undecided transaction starts.
    fn scan_transactions(&mut self) -> Result<Aborted, LogOpError> {
        let mut open: HashMap<i64, Offset> = HashMap::new();
        let mut aborted = Aborted::default();
        for src in self.sources.iter().filter(|s| s.base < self.end) {
            for_each_batch(src, |h, bytes| {
                if !h.is_transactional() || !h.has_producer_id() {
                    return Ok(());
                }
                if !h.is_control() {
                    open.entry(h.producer_id).or_insert(h.base_offset);
                    return Ok(());
                }
                let Some(first) = open.remove(&h.producer_id) else {
                    return Ok(());
                };
                if let Ok(Some(crate::control::ControlType::Abort)) =
                    crate::control::control_type(h, bytes)
                {
                    aborted
                        .0
                        .entry(h.producer_id)
                        .or_default()
                        .push((first, h.base_offset));
                }
                Ok(())
            })?;
        }
        if let Some(first_open) = open.values().min().copied() {
            let cut = self
                .sources
                .iter()
                .filter(|s| s.base <= first_open)
                .map(|s| s.base)
                .max();
            if let Some(cut) = cut {
                self.end = self.end.min(cut);
                self.sources.retain(|s| s.base < self.end);
            }
        }
        Ok(aborted)
    }

    /// `key -> latest offset` over the dirty section; shrinks `end` if the map fills.
    fn build_offset_map(
        &mut self,
        aborted: &Aborted,
        stats: &mut CleanStats,
    ) -> Result<HashMap<Vec<u8>, Offset>, LogOpError> {
        let mut map: HashMap<Vec<u8>, Offset> = HashMap::new();
        let dirty: Vec<SourceSegment> = self
            .sources
            .iter()
            .filter(|s| s.base < self.end)
            .cloned()
            .collect();
        for (i, src) in dirty.iter().enumerate() {
            let next_base = dirty.get(i + 1).map_or(self.end, |s| s.base);
            if next_base <= self.first_dirty {
                continue;
            }
            for_each_batch(src, |h, bytes| {
                stats.bytes_read += bytes.len() as u64;
                if h.last_offset() < self.first_dirty || h.is_control() || aborted.holds(h) {
                    return Ok(());
                }
                // Records that do not decode are kept whole by filter_batch; skip them here.
                let Ok(payload) = payload(h, bytes) else {
                    return Ok(());
                };
                let Ok(records) = decode_records(&payload) else {
                    return Ok(());
                };
                for r in records {
                    let offset = h.base_offset.plus(i64::from(r.offset_delta));
                    if let (Some(key), true) = (r.key, offset >= self.first_dirty) {
                        map.insert(key.to_vec(), offset);
                    }
                }
                Ok(())
            })?;
            if map.len() >= CLEANER_KEYS_MAX {
                self.end = next_base;
                tracing::info!(
                    end = next_base.0,
                    "cleaner offset map full; cleaning in rounds"
                );
                break;
            }
        }
        self.sources.retain(|s| s.base < self.end);
        Ok(map)
    }

    /// Consecutive sources whose total size fits in one segment.
    fn groups(&self) -> Vec<Vec<SourceSegment>> {
        let mut groups: Vec<Vec<SourceSegment>> = Vec::new();
        let mut size = 0u64;
        for s in &self.sources {
            match groups.last_mut() {
                Some(g) if size + u64::from(s.size) <= u64::from(self.segment_bytes) => {
                    size += u64::from(s.size);
                    g.push(s.clone());
                }
                _ => {
                    size = u64::from(s.size);
                    groups.push(vec![s.clone()]);
                }
            }
        }
        groups
    }

    fn clean_group(
        &self,
        group: usize,
        sources: &[SourceSegment],
        map: &HashMap<Vec<u8>, Offset>,
        aborted: &Aborted,
        txns: &mut TxnsSeen,
        stats: &mut CleanStats,
    ) -> Result<PathBuf, LogOpError> {
        let first = sources[0].base;
        let cleaned = path_with(&self.dir, first, "log.cleaned");
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&cleaned)
            .context(|| format!("create {}", cleaned.display()))?;
        for src in sources {
            let drop_tombstones = src.timestamp < self.delete_horizon_ms;
            for_each_batch(src, |h, bytes| {
                if aborted.holds(h) {
                    txns.saw_data(h, group, false);
                    stats.records_removed += u64::try_from(h.records_count).unwrap_or(0);
                    return Ok(());
                }
                if h.is_control() && h.is_transactional() {
                    if txns.marker_removable(h, group) && drop_tombstones {
                        stats.markers_removed += 1;
                        return Ok(());
                    }
                    return out
                        .write_all(bytes)
                        .map(|()| stats.bytes_written += bytes.len() as u64)
                        .context(|| format!("write {}", cleaned.display()))
                        .map_err(Into::into);
                }
                let kept = filter_batch(h, bytes, map, drop_tombstones, stats)?;
                if h.is_transactional() {
                    txns.saw_data(h, group, kept.is_some());
                }
                if let Some(kept) = kept {
                    stats.bytes_written += kept.len() as u64;
                    out.write_all(&kept)
                        .context(|| format!("write {}", cleaned.display()))?;
                }
                Ok(())
            })?;
        }
        out.sync_data()
            .context(|| format!("fdatasync {}", cleaned.display()))?;
        let swap = path_with(&self.dir, first, "log.swap");
        fs::rename(&cleaned, &swap).context(|| format!("rename {}", cleaned.display()))?;
        Ok(swap)
    }
}

/// Renames a committed swap file into place and loads it as a segment.
fn install_swap(
    dir: &Path,
    base: Offset,
    swap: &Path,
    interval: u32,
) -> Result<LogSegment, IoContext> {
    let target = segment_path(dir, base, LOG_SUFFIX);
    fs::rename(swap, &target).context(|| format!("install {}", target.display()))?;
    let mut seg = LogSegment::open(dir, base)?;
    let outcome = seg.recover_from(None, false, interval)?;
    if let Some(e) = outcome.error {
        // We just wrote and fsync'ed this file; failing to parse it means a cleaner bug
        // and serving it would serve corrupt data.
        panic!(
            "{}: cleaned segment does not parse at {}: {e}",
            target.display(),
            outcome.position
        );
    }
    seg.flush_indexes()?;
    Ok(seg)
}

fn path_with(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    segment_path(dir, base, suffix)
}

/// Reads each whole batch of a source segment (CRC-checked).
fn for_each_batch(
    src: &SourceSegment,
    mut f: impl FnMut(&BatchHeader, &[u8]) -> Result<(), LogOpError>,
) -> Result<(), LogOpError> {
    let mut result = Ok(());
    let outcome = scan_batches(&src.file, 0, src.size, 0, |_, h, bytes| match f(h, bytes) {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            result = Err(e);
            ControlFlow::Break(())
        }
    })
    .context(|| format!("read segment {}", src.base))?;
    result?;
    if let Some(error) = outcome.error {
        return Err(LogOpError::Io(IoContext {
            context: format!("clean segment {} at {}", src.base, outcome.position),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()),
        }));
    }
    Ok(())
}

/// The batch as it survives compaction: unchanged, rebuilt with fewer records, or gone.
fn filter_batch(
    h: &BatchHeader,
    bytes: &[u8],
    map: &HashMap<Vec<u8>, Offset>,
    drop_tombstones: bool,
    stats: &mut CleanStats,
) -> Result<Option<Vec<u8>>, LogOpError> {
    if h.is_control() {
        return Ok(Some(bytes.to_vec()));
    }
    let Ok(payload) = payload(h, bytes) else {
        tracing::warn!(
            base_offset = h.base_offset.0,
            "compressed batch does not decompress; kept uncompacted"
        );
        return Ok(Some(bytes.to_vec()));
    };
    let Ok(records) = decode_records(&payload) else {
        tracing::warn!(
            base_offset = h.base_offset.0,
            "batch records do not decode; kept uncompacted"
        );
        return Ok(Some(bytes.to_vec()));
    };
    let mut kept = Vec::with_capacity(bytes.len());
    let mut kept_count = 0i32;
    let total = records.len() as i32;
    for r in records {
        let offset = h.base_offset.plus(i64::from(r.offset_delta));
        let superseded = r
            .key
            .is_some_and(|k| map.get(k).is_some_and(|latest| *latest > offset));
        let expired_tombstone = r.key.is_some() && r.value.is_none() && drop_tombstones;
        if superseded || expired_tombstone {
            stats.records_removed += 1;
            stats.tombstones_removed += u64::from(!superseded && expired_tombstone);
            continue;
        }
        kept.extend_from_slice(r.encoded);
        kept_count += 1;
    }
    if kept_count == total {
        return Ok(Some(bytes.to_vec()));
    }
    if kept_count == 0 {
        return Ok(None);
    }
    stats.batches_rewritten += 1;
    let builder = BatchBuilder {
        base_offset: h.base_offset,
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        attributes: h.attributes,
        partition_leader_epoch: h.partition_leader_epoch,
    };
    let kept = match h.compression() {
        Compression::None => kept,
        codec => crate::codec::compress(codec, &kept)
            .map_err(|e| {
                LogOpError::Io(IoContext {
                    context: format!("recompress batch {}", h.base_offset.0),
                    source: std::io::Error::other(e.to_string()),
                })
            })?
            .to_vec(),
    };
    let rebuilt = builder.assemble(
        h.last_offset_delta,
        h.base_timestamp,
        h.max_timestamp,
        kept_count,
        &kept,
    );
    Ok(Some(rebuilt.to_vec()))
}

/// A batch's encoded records: its payload, decompressed if it is compressed.
fn payload<'a>(h: &BatchHeader, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, batch::BatchError> {
    let body = bytes
        .get(batch::BATCH_HEADER_SIZE..h.total_size().min(bytes.len()))
        .ok_or(batch::BatchError::InvalidRecord(
            "batch shorter than its header",
        ))?;
    match h.compression() {
        Compression::None => Ok(Cow::Borrowed(body)),
        codec => Ok(Cow::Owned(crate::codec::decompress(codec, body)?.to_vec())),
    }
}

fn decode_records(encoded: &[u8]) -> Result<Vec<batch::Record<'_>>, batch::BatchError> {
    batch::records_in(encoded).collect()
}
