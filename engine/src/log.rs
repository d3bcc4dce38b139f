//! `UnifiedLog`: one partition's log — its segments, offsets and checkpoints.
//!
//! All methods are synchronous and cheap enough for a shard thread: the only disk I/O they
//! do inline is page-cache I/O (index writes, header reads, the default `pwritev` append).
//! Work that blocks on the device (fdatasync, writeback, compaction) is handed out as a job
//! ([`FlushJob`], [`crate::flush::WritebackJob`], [`crate::cleaner::CleanTask`]) that runs
//! elsewhere, and its result is handed back.
//!
//! Appends are split in three so no borrow of the log is held while a write is in flight:
//! [`UnifiedLog::prepare_append`] validates, stamps and reserves the file range;
//! [`WritePlan`] writes; [`UnifiedLog::complete_append`] publishes the offsets.
//!
//! Invariants (asserted): `log_start_offset <= high_watermark <= log_end_offset`;
//! `recovery_point <= log_end_offset`; segment base offsets increase and every segment's
//! batches lie in `[base, next segment's base)`; at most one append is in flight.
//!
//! Worked example: after appending three batches of 10, 5 and 1 records to an empty log,
//! the batches have base offsets 0, 10, 15, `log_end_offset` is 16, and a read from
//! offset 12 starts at the second batch (Kafka serves whole batches; the client skips
//! records before the offset it asked for).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BATCH_HEADER_SIZE, BatchHeader, TimestampType};
use crate::capacity::CapacityGuard;
use crate::checkpoint;
use crate::config::{AppendMethod, FlushPolicy, LogConfig};
use crate::error::{AppendError, IoContext, LogOpError, OpenError, ReadError, ResultExt};
use crate::leader_epoch::LeaderEpochFileCache;
use crate::offset::{FilePosition, Offset};
use crate::segment::{AppendedBatch, LogSegment};
use crate::write::{WritePlan, direct_buffer};

/// Who is appending: clients get offsets assigned; replication keeps the leader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    Client,
    Replication,
}

#[derive(Debug, Clone, Copy)]
pub struct AppendOptions {
    pub origin: AppendOrigin,
    /// Stamped into `partitionLeaderEpoch` for client appends (-1: leave as sent).
    pub leader_epoch: i32,
    pub now_ms: i64,
}

impl AppendOptions {
    pub fn client(now_ms: i64) -> Self {
        AppendOptions {
            origin: AppendOrigin::Client,
            leader_epoch: -1,
            now_ms,
        }
    }
}

/// What an append did (the produce response's fields come from here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAppendInfo {
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: Offset,
    /// The broker time stamped into `LogAppendTime` batches, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: Offset,
    pub batch_count: usize,
    pub record_count: i64,
    pub valid_bytes: usize,
}

/// An append validated and stamped, its file range reserved; write it, then complete it.
#[derive(Debug)]
pub struct PendingAppend {
    pub plan: WritePlan,
    segment_base: Offset,
    batches: Vec<AppendedBatch>,
    info: LogAppendInfo,
    epoch_starts: Vec<(i32, Offset)>,
    new_direct_tail: Option<Vec<u8>>,
    now_ms: i64,
}

/// A whole-batch byte range of one segment file: what a zero-copy fetch sends.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<File>,
    pub segment_base: Offset,
    pub position: FilePosition,
    pub length: u32,
    /// Base offset of the first batch in the range.
    pub first_offset: Offset,
}

#[derive(Debug, Clone)]
pub struct ReadInfo {
    /// `None` when there is nothing to return below the upper bound.
    pub range: Option<FileRange>,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
    pub high_watermark: Offset,
}

/// fdatasync of the files holding unflushed data, then the recovery-point checkpoint.
/// Runs off the shard thread ([`FlushJob::run`] blocks).
#[derive(Debug)]
pub struct FlushJob {
    files: Vec<Arc<File>>,
    pub upto: Offset,
    checkpoint: PathBuf,
    topic: String,
    partition: i32,
}

impl FlushJob {
    pub fn run(self) -> Result<Offset, LogOpError> {
        for f in &self.files {
            f.sync_data()
                .context(|| format!("fdatasync {}-{}", self.topic, self.partition))?;
        }
        checkpoint::write_offset(&self.checkpoint, &self.topic, self.partition, self.upto.0)?;
        Ok(self.upto)
    }
}

/// Segments deleted by retention, DeleteRecords or the capacity policy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub segments: usize,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct UnifiedLog {
    pub(crate) dir: PathBuf,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) config: LogConfig,
    pub(crate) segments: BTreeMap<Offset, LogSegment>,
    pub(crate) log_start_offset: Offset,
    pub(crate) high_watermark: Offset,
    pub(crate) recovery_point: Offset,
    /// Offset below which a synchronous-flush fdatasync has covered the `.log` files.
    pub(crate) durable_offset: Offset,
    pub(crate) leader_epochs: LeaderEpochFileCache,
    pub(crate) cleaner_checkpoint: Offset,
    pub(crate) capacity: Option<Arc<CapacityGuard>>,
    append_in_flight: bool,
    offline: Option<String>,
    pub(crate) unflushed_messages: i64,
    pub(crate) first_unflushed_ms: Option<i64>,
    /// Writeback (sync_file_range) has been started up to here: (segment base, position).
    pub(crate) writeback_mark: (Offset, u32),
    /// (segment base, position): the page cache is dropped below this (drop-behind).
    pub(crate) evict_mark: (Offset, u32),
    /// Bytes dropped from the page cache by drop-behind so far.
    pub(crate) evicted_bytes: u64,
}

impl UnifiedLog {
    /// Opens (recovering) or creates the log in `dir`, named `<topic>-<partition>`.
    pub fn open(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Self, OpenError> {
        crate::loader::load(dir.into(), config, now_ms)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        dir: PathBuf,
        topic: String,
        partition: i32,
        config: LogConfig,
        segments: BTreeMap<Offset, LogSegment>,
        log_start_offset: Offset,
        high_watermark: Offset,
        leader_epochs: LeaderEpochFileCache,
        cleaner_checkpoint: Offset,
    ) -> Self {
        let mut log = UnifiedLog {
            dir,
            topic,
            partition,
            config,
            segments,
            log_start_offset,
            high_watermark,
            recovery_point: Offset(0),
            durable_offset: Offset(0),
            leader_epochs,
            cleaner_checkpoint,
            capacity: None,
            append_in_flight: false,
            offline: None,
            unflushed_messages: 0,
            first_unflushed_ms: None,
            writeback_mark: (Offset(0), 0),
            evict_mark: (Offset(0), 0),
            evicted_bytes: 0,
        };
        let leo = log.log_end_offset();
        log.recovery_point = leo;
        log.durable_offset = leo;
        log.writeback_mark = (
            log.active_segment().base_offset,
            log.active_segment().size(),
        );
        log.evict_mark = log.writeback_mark;
        log.check_invariants();
        log
    }

    // ---- accessors ----

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub fn partition(&self) -> i32 {
        self.partition
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn log_start_offset(&self) -> Offset {
        self.log_start_offset
    }
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }
    pub fn recovery_point(&self) -> Offset {
        self.recovery_point
    }
    /// Bytes drop-behind has dropped from the page cache (`ringmq.cache.retain.bytes`).
    pub fn evicted_bytes(&self) -> u64 {
        self.evicted_bytes
    }
    pub fn durable_offset(&self) -> Offset {
        self.durable_offset
    }
    /// Starts leader epoch `epoch` at `start_offset` (a new leader: at its log end) and
    /// persists the cache if that changed it.
    pub fn assign_leader_epoch(
        &mut self,
        epoch: i32,
        start_offset: Offset,
    ) -> Result<(), LogOpError> {
        if self.leader_epochs.assign(epoch, start_offset) {
            self.leader_epochs.persist()?;
        }
        Ok(())
    }

    /// [`Self::assign_leader_epoch`] in memory only: returns the checkpoint to write if
    /// the cache changed. The caller writes it before the epoch's records can be flushed
    /// (a new leader: before it accepts them).
    pub fn assign_leader_epoch_deferred(
        &mut self,
        epoch: i32,
        start_offset: Offset,
    ) -> Option<crate::leader_epoch::EpochCheckpoint> {
        self.leader_epochs
            .assign(epoch, start_offset)
            .then(|| self.leader_epochs.checkpoint())
    }

    pub fn leader_epochs(&self) -> &LeaderEpochFileCache {
        &self.leader_epochs
    }
    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> Offset {
        self.active_segment().next_offset()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn segments(&self) -> impl Iterator<Item = &LogSegment> {
        self.segments.values()
    }
    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| u64::from(s.size())).sum()
    }
    pub fn active_segment(&self) -> &LogSegment {
        // The loader guarantees at least one segment and nothing removes the last one.
        match self.segments.values().next_back() {
            Some(s) => s,
            None => panic!("{}: log has no segment", self.dir.display()),
        }
    }
    fn active_segment_mut(&mut self) -> &mut LogSegment {
        match self.segments.values_mut().next_back() {
            Some(s) => s,
            None => panic!("log has no segment"),
        }
    }
    pub fn is_offline(&self) -> Option<&str> {
        self.offline.as_deref()
    }
    /// Shares a disk-capacity guard (SPEC M3) consulted by every append.
    pub fn set_capacity_guard(&mut self, guard: Arc<CapacityGuard>) {
        self.capacity = Some(guard);
    }
    /// Replaces the topic config (AlterConfigs). Takes effect on the next append/roll.
    pub fn update_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub(crate) fn check_invariants(&self) {
        let leo = self.log_end_offset();
        assert!(
            self.log_start_offset <= self.high_watermark && self.high_watermark <= leo,
            "{}: log_start_offset {} <= high_watermark {} <= log_end_offset {} violated",
            self.dir.display(),
            self.log_start_offset,
            self.high_watermark,
            leo
        );
        assert!(
            self.recovery_point <= leo,
            "{}: recovery point beyond log end",
            self.dir.display()
        );
    }

    /// Marks the log offline after an I/O failure whose durability outcome is unknown.
    pub fn mark_offline(&mut self, reason: String) {
        tracing::error!(log = %self.dir.display(), %reason, "log taken offline");
        self.offline = Some(reason);
    }

    // ---- append ----

    /// Validates `batches` (each buffer holds whole v2 batches), assigns offsets, stamps
    /// them and reserves their place at the end of the active segment (rolling first if
    /// needed). Nothing is written yet and nothing is visible to readers.
    pub fn prepare_append(
        &mut self,
        batches: Vec<Bytes>,
        opts: AppendOptions,
    ) -> Result<PendingAppend, AppendError> {
        if let Some(reason) = &self.offline {
            return Err(AppendError::LogOffline(reason.clone()));
        }
        assert!(
            !self.append_in_flight,
            "{}: second append while one is in flight",
            self.dir.display()
        );
        if self
            .capacity
            .as_ref()
            .is_some_and(|c| c.production_stopped())
        {
            return Err(AppendError::DiskFull);
        }
        let mut stamped: Vec<Bytes> = Vec::with_capacity(batches.len() * 2);
        let mut headers: Vec<BatchHeader> = Vec::new();
        let mut next = self.log_end_offset();
        let stamp_time = self.config.message_timestamp_type == TimestampType::LogAppendTime
            && opts.origin == AppendOrigin::Client;
        for buf in batches {
            self.validate_and_stamp(
                &buf,
                &mut next,
                &mut headers,
                &mut stamped,
                opts,
                stamp_time,
            )?;
        }
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Err(AppendError::Empty);
        };
        let (first_offset, last_offset) = (first.base_offset, last.last_offset());
        let total: usize = stamped.iter().map(Bytes::len).sum();
        self.maybe_roll(total, first_offset, last_offset, opts.now_ms)?;
        Ok(self.reserve(stamped, headers, opts, stamp_time))
    }

    /// Validates the batches in `buf` and appends their stamped form to `out`: for client
    /// appends a stamped copy of each 61-byte header followed by the untouched record
    /// bytes (a slice of `buf`, no copy); for replication the batches as they are.
    fn validate_and_stamp(
        &self,
        buf: &Bytes,
        next: &mut Offset,
        headers: &mut Vec<BatchHeader>,
        out: &mut Vec<Bytes>,
        opts: AppendOptions,
        stamp_time: bool,
    ) -> Result<(), AppendError> {
        let mut at = 0usize;
        while at < buf.len() {
            let header = batch::validate_batch(&buf[at..])?;
            let size = header.total_size();
            if size > self.config.max_message_bytes as usize {
                return Err(AppendError::RecordTooLarge {
                    size,
                    max: self.config.max_message_bytes,
                });
            }
            let header = match opts.origin {
                AppendOrigin::Client => {
                    batch::validate_client_batch(&header)?;
                    let records = buf.slice(at + BATCH_HEADER_SIZE..at + size);
                    let mut head = BytesMut::from(&buf[at..at + BATCH_HEADER_SIZE]);
                    let time = stamp_time.then_some(opts.now_ms);
                    batch::stamp_header(&mut head, &records, *next, opts.leader_epoch, time);
                    let parsed = BatchHeader::parse(&head)?;
                    out.push(head.freeze());
                    out.push(records);
                    parsed
                }
                AppendOrigin::Replication => {
                    if header.base_offset < *next {
                        return Err(AppendError::OffsetsOutOfOrder {
                            base: header.base_offset,
                            log_end: *next,
                        });
                    }
                    out.push(buf.slice(at..at + size));
                    header
                }
            };
            *next = header.next_offset();
            headers.push(header);
            at += size;
        }
        Ok(())
    }

    fn reserve(
        &mut self,
        payload: Vec<Bytes>,
        headers: Vec<BatchHeader>,
        opts: AppendOptions,
        stamp_time: bool,
    ) -> PendingAppend {
        let method = self.config.append_method;
        let log_start_offset = self.log_start_offset;
        let active = self.active_segment();
        let start = active.size();
        let mut position = start;
        let mut batches = Vec::with_capacity(headers.len());
        let mut max = (-1i64, headers[0].base_offset);
        let mut record_count = 0i64;
        for h in &headers {
            batches.push(AppendedBatch {
                position,
                size: h.total_size() as u32,
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp,
            });
            position += h.total_size() as u32;
            if h.max_timestamp > max.0 {
                max = (h.max_timestamp, h.last_offset());
            }
            record_count += i64::from(h.last_offset_delta) + 1;
        }
        let (direct, new_direct_tail, file) = match (&active.direct, method) {
            (Some(d), AppendMethod::Direct) => {
                let (buf, tail) = direct_buffer(&d.tail, &payload);
                let aligned = u64::from(start) - d.tail.len() as u64;
                (Some((aligned, buf)), Some(tail), Arc::clone(&d.file))
            }
            _ => (None, None, Arc::clone(active.file())),
        };
        let info = LogAppendInfo {
            first_offset: batches[0].base_offset,
            last_offset: batches[batches.len() - 1].last_offset,
            max_timestamp: max.0,
            offset_of_max_timestamp: max.1,
            log_append_time_ms: if stamp_time { opts.now_ms } else { -1 },
            log_start_offset,
            batch_count: batches.len(),
            record_count,
            valid_bytes: (position - start) as usize,
        };
        let plan = WritePlan {
            method,
            file,
            position: u64::from(start),
            payload,
            direct,
        };
        // Where each leader epoch starts among these batches (replicated appends can
        // carry several; a client append carries this leader's).
        let mut epoch_starts: Vec<(i32, Offset)> = Vec::new();
        for h in &headers {
            if h.partition_leader_epoch >= 0
                && epoch_starts
                    .last()
                    .is_none_or(|(e, _)| *e != h.partition_leader_epoch)
            {
                epoch_starts.push((h.partition_leader_epoch, h.base_offset));
            }
        }
        let segment_base = active.base_offset;
        self.append_in_flight = true;
        PendingAppend {
            plan,
            segment_base,
            batches,
            info,
            epoch_starts,
            new_direct_tail,
            now_ms: opts.now_ms,
        }
    }

    /// Publishes a written append (indexes, log end offset) or, if the write failed, cuts
    /// the file back so nothing partial remains.
    pub fn complete_append(
        &mut self,
        pending: PendingAppend,
        written: std::io::Result<()>,
    ) -> Result<LogAppendInfo, AppendError> {
        self.append_in_flight = false;
        let interval = self.config.index_interval_bytes;
        let active = self.active_segment_mut();
        assert_eq!(
            active.base_offset, pending.segment_base,
            "segment rolled during an append"
        );
        if let Err(source) = written {
            let ctx = format!("append to {}", active.log_path().display());
            if let Err(e) = active.file().set_len(u64::from(active.size())) {
                self.mark_offline(format!("{ctx}: {source}; truncate after failure: {e}"));
            }
            return Err(AppendError::Io(IoContext {
                context: ctx,
                source,
            }));
        }
        active.on_appended(&pending.batches, interval);
        if let (Some(d), Some(tail)) = (&mut active.direct, pending.new_direct_tail) {
            d.tail = tail;
        }
        let mut changed = false;
        for (epoch, start) in &pending.epoch_starts {
            changed |= self.leader_epochs.assign(*epoch, *start);
        }
        if changed && let Err(e) = self.leader_epochs.persist() {
            tracing::warn!(log = %self.dir.display(), error = %e, "persisting leader epochs failed");
        }
        self.unflushed_messages += pending.info.record_count;
        self.first_unflushed_ms.get_or_insert(pending.now_ms);
        Ok(pending.info)
    }

    /// Validates, writes (on this thread, by `pwritev` or synchronous `O_DIRECT`) and
    /// publishes. For the async methods use [`crate::handle::LogHandle::append`].
    pub fn append(
        &mut self,
        batches: Vec<Bytes>,
        opts: AppendOptions,
    ) -> Result<LogAppendInfo, AppendError> {
        let pending = self.prepare_append(batches, opts)?;
        let written = pending.plan.write_blocking();
        self.complete_append(pending, written)
    }

    fn maybe_roll(
        &mut self,
        incoming: usize,
        first: Offset,
        last: Offset,
        now_ms: i64,
    ) -> Result<(), IoContext> {
        let active = self.active_segment();
        if active.is_empty() {
            return Ok(());
        }
        let too_big =
            u64::from(active.size()) + incoming as u64 > u64::from(self.config.segment_bytes);
        let too_old = now_ms - active.created_ms >= self.config.segment_ms;
        let overflow = last.relative_to(active.base_offset).is_none();
        if too_big || too_old || overflow {
            self.roll(first, now_ms)?;
        }
        Ok(())
    }

    /// Closes the active segment and starts a new one at `base` (>= log end offset).
    pub fn roll(&mut self, base: Offset, now_ms: i64) -> Result<(), IoContext> {
        let leo = self.log_end_offset();
        assert!(
            base >= leo,
            "{}: roll to {base} below log end {leo}",
            self.dir.display()
        );
        self.active_segment_mut().on_roll()?;
        let direct = self.config.append_method == AppendMethod::Direct;
        let seg = LogSegment::create(&self.dir, base, now_ms, direct)?;
        tracing::debug!(log = %self.dir.display(), base = base.0, "rolled new segment");
        self.segments.insert(base, seg);
        Ok(())
    }

    // ---- read ----

    /// The whole batches from `start` on, at most `max_bytes` (but at least one batch when
    /// `min_one_batch`, KIP-74), below `upper_bound` (exclusive: the high watermark for
    /// consumers, the log end for followers). Ranges stay in one segment, as in Kafka.
    pub fn read(
        &self,
        start: Offset,
        max_bytes: u32,
        upper_bound: Offset,
        min_one_batch: bool,
    ) -> Result<ReadInfo, ReadError> {
        let leo = self.log_end_offset();
        if start < self.log_start_offset || start > leo {
            return Err(ReadError::OffsetOutOfRange {
                requested: start,
                log_start: self.log_start_offset,
                log_end: leo,
            });
        }
        let mut info = ReadInfo {
            range: None,
            log_start_offset: self.log_start_offset,
            log_end_offset: leo,
            high_watermark: self.high_watermark,
        };
        let upper = upper_bound.min(leo);
        if start >= upper {
            return Ok(info);
        }
        let from_segment = self
            .segments
            .range(..=start)
            .next_back()
            .map_or(start, |(b, _)| *b);
        for seg in self.segments.range(from_segment..).map(|(_, s)| s) {
            if seg.base_offset >= upper {
                break;
            }
            let Some((position, header)) = seg.translate_offset(start)? else {
                continue;
            };
            if header.base_offset >= upper {
                break;
            }
            let end = match upper >= seg.next_offset() {
                true => seg.size(),
                false => seg.translate_offset(upper)?.map_or(seg.size(), |(p, _)| p),
            };
            let limit = position.saturating_add(max_bytes).min(end);
            let mut stop = seg.batch_boundary_at_or_before(position, limit)?.min(end);
            if stop == position && min_one_batch {
                stop = position + seg.batch_size_at(position)?;
            }
            if stop > position {
                info.range = Some(FileRange {
                    file: Arc::clone(seg.file()),
                    segment_base: seg.base_offset,
                    position: FilePosition(position),
                    length: stop - position,
                    first_offset: header.base_offset,
                });
            }
            return Ok(info);
        }
        Ok(info)
    }

    /// Reads a range's bytes (tests, tools and TLS listeners, which cannot splice).
    pub fn read_range_bytes(range: &FileRange) -> Result<Vec<u8>, ReadError> {
        let mut buf = vec![0u8; range.length as usize];
        let n = crate::segment::read_fully_at(&range.file, &mut buf, range.position.as_u64())
            .context(|| format!("read segment {}", range.segment_base))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// ListOffsets by timestamp: the first record with timestamp >= `ts` as
    /// `(offset, timestamp)`, exact per record (compressed batches are decoded).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>, ReadError> {
        for seg in self.segments.values() {
            if seg.max_timestamp() < ts || seg.next_offset() <= self.log_start_offset {
                continue;
            }
            let from = seg.time_index.lookup(ts).max(self.log_start_offset);
            let Some((position, _)) = seg.translate_offset(from)? else {
                continue;
            };
            // Headers only to find the batch, then read and check just that batch.
            let mut hit: Option<(u32, BatchHeader)> = None;
            let log_start = self.log_start_offset;
            crate::segment::scan_batches(
                seg.file(),
                position,
                seg.size(),
                crate::segment::NO_VALIDATION,
                |pos, h, _| {
                    if h.max_timestamp < ts || h.next_offset() <= log_start {
                        return std::ops::ControlFlow::Continue(());
                    }
                    hit = Some((pos, *h));
                    std::ops::ControlFlow::Break(())
                },
            )
            .context(|| format!("timestamp lookup in {}", seg.log_path().display()))?;
            let Some((pos, h)) = hit else { continue };
            let bytes = seg.read_bytes(pos, h.total_size() as u32)?;
            if let Err(error) = batch::validate_batch(&bytes) {
                let segment = seg.log_path().into();
                return Err(ReadError::Corrupt {
                    segment,
                    position: pos,
                    error,
                });
            }
            let found = Some(first_record_at_or_after(&h, &bytes, ts, log_start));
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Calls `f` with every batch header from the log start on (headers only; used to
    /// rebuild producer state when a partition is opened).
    pub fn scan_headers(&self, mut f: impl FnMut(&BatchHeader)) -> Result<(), ReadError> {
        for seg in self.segments.values() {
            crate::segment::scan_batches(
                seg.file(),
                0,
                seg.size(),
                crate::segment::NO_VALIDATION,
                |_, h, _| {
                    if h.next_offset() > self.log_start_offset {
                        f(h);
                    }
                    std::ops::ControlFlow::Continue(())
                },
            )
            .context(|| format!("scan {}", seg.log_path().display()))?;
        }
        Ok(())
    }

    /// Like [`Self::scan_headers`], with each transaction marker's type: a control
    /// batch's bytes are read to find it (producer and transaction state rebuilt when a
    /// partition is opened or truncated).
    pub fn scan_headers_and_markers(
        &self,
        mut f: impl FnMut(&BatchHeader, Option<crate::control::ControlType>),
    ) -> Result<(), ReadError> {
        use std::os::unix::fs::FileExt;
        for seg in self.segments.values() {
            let mut failed = None;
            crate::segment::scan_batches(
                seg.file(),
                0,
                seg.size(),
                crate::segment::NO_VALIDATION,
                |pos, h, _| {
                    if h.next_offset() <= self.log_start_offset {
                        return std::ops::ControlFlow::Continue(());
                    }
                    let mut kind = None;
                    if h.is_control() {
                        let mut whole = vec![0u8; h.total_size()];
                        let read = seg.file().read_exact_at(&mut whole, u64::from(pos));
                        match read.map_err(|e| e.to_string()).and_then(|()| {
                            crate::control::control_type(h, &whole).map_err(|e| e.to_string())
                        }) {
                            Ok(k) => kind = k,
                            Err(e) => {
                                failed = Some(e);
                                return std::ops::ControlFlow::Break(());
                            }
                        }
                    }
                    f(h, kind);
                    std::ops::ControlFlow::Continue(())
                },
            )
            .context(|| format!("scan {}", seg.log_path().display()))?;
            if let Some(e) = failed {
                return Err(crate::error::IoContext {
                    context: format!("control batch in {}", seg.log_path().display()),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                }
                .into());
            }
        }
        Ok(())
    }

    /// ListOffsets MAX_TIMESTAMP: `(offset, timestamp)` of the record with the largest
    /// timestamp (the first such record), exact per record as in Kafka 3.8+: the
    /// segment's bookkeeping names the batch, whose records are then read.
    pub fn max_timestamp_and_offset(&self) -> Result<Option<(Offset, i64)>, ReadError> {
        let Some(seg) = self
            .segments
            .values()
            .filter(|s| s.max_timestamp() >= 0 && s.next_offset() > self.log_start_offset)
            .max_by_key(|s| s.max_timestamp())
        else {
            return Ok(None);
        };
        let (max_ts, batch_last) = (seg.max_timestamp(), seg.offset_of_max_timestamp());
        let found = seg.translate_offset(batch_last)?;
        let Some((pos, h)) = found else {
            return Ok(Some((batch_last, max_ts)));
        };
        let bytes = seg.read_bytes(pos, h.total_size() as u32)?;
        let exact = batch::record_timestamps(&h, &bytes)
            .ok()
            .and_then(|records| {
                records
                    .into_iter()
                    .find(|(o, t)| *t == h.max_timestamp && *o >= self.log_start_offset)
            });
        Ok(Some(exact.unwrap_or((batch_last, max_ts))))
    }

    // ---- high watermark, truncation, DeleteRecords ----

    /// Sets the high watermark (clamped to `[log_start_offset, log_end_offset]`).
    pub fn update_high_watermark(&mut self, hw: Offset) -> Offset {
        self.high_watermark = hw.clamp(self.log_start_offset, self.log_end_offset());
        self.high_watermark
    }

    /// Removes all batches at or after `offset` (follower truncation after a leader change;
    /// the batch holding `offset` goes too). Returns whether anything was removed.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<bool, LogOpError> {
        assert!(!self.append_in_flight, "truncate during an append");
        if offset >= self.log_end_offset() {
            return Ok(false);
        }
        if offset <= self.first_segment_base() {
            self.truncate_fully_and_start_at(offset)?;
            return Ok(true);
        }
        let doomed: Vec<Offset> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed {
            if let Some(seg) = self.segments.remove(&base) {
                seg.delete_files()?;
            }
        }
        let interval = self.config.index_interval_bytes;
        let active = self.active_segment_mut();
        active.truncate_to(offset, interval)?;
        if self.config.append_method == AppendMethod::Direct
            && self.active_segment().direct.is_none()
        {
            self.active_segment_mut().open_direct()?;
        }
        self.after_truncation()?;
        Ok(true)
    }

    fn first_segment_base(&self) -> Offset {
        self.segments.keys().next().copied().unwrap_or(Offset(0))
    }

    /// Deletes every segment and starts empty at `offset` (a follower far behind).
    pub fn truncate_fully_and_start_at(&mut self, offset: Offset) -> Result<(), LogOpError> {
        assert!(!self.append_in_flight, "truncate during an append");
        let direct = self.config.append_method == AppendMethod::Direct;
        for seg in std::mem::take(&mut self.segments).into_values() {
            seg.delete_files()?;
        }
        let seg = LogSegment::create(&self.dir, offset, 0, direct)?;
        self.segments.insert(offset, seg);
        self.log_start_offset = offset;
        self.write_log_start_checkpoint()?;
        self.after_truncation()?;
        Ok(())
    }

    fn after_truncation(&mut self) -> Result<(), LogOpError> {
        let leo = self.log_end_offset();
        if self.log_start_offset > leo {
            self.log_start_offset = leo;
            self.write_log_start_checkpoint()?;
        }
        self.high_watermark = self.high_watermark.clamp(self.log_start_offset, leo);
        self.recovery_point = self.recovery_point.min(leo);
        self.durable_offset = self.durable_offset.min(leo);
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(leo);
        let active = self.active_segment();
        let active_base = active.base_offset;
        self.writeback_mark = (active_base, self.writeback_mark.1.min(active.size()));
        self.evict_mark = (active_base, self.evict_mark.1.min(self.writeback_mark.1));
        if self.leader_epochs.truncate_from_end(leo)
            && let Err(e) = self.leader_epochs.persist()
        {
            tracing::warn!(log = %self.dir.display(), error = %e, "persisting leader epochs failed");
        }
        self.check_invariants();
        Ok(())
    }

    /// DeleteRecords: moves the log start offset to `offset` (<= high watermark) and
    /// deletes the segments wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: Offset) -> Result<Offset, LogOpError> {
        if offset > self.high_watermark {
            return Err(LogOpError::BeyondHighWatermark {
                requested: offset,
                high_watermark: self.high_watermark,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.write_log_start_checkpoint()?;
            self.delete_segments_below_log_start()?;
        }
        Ok(self.log_start_offset)
    }

    fn delete_segments_below_log_start(&mut self) -> Result<Deleted, LogOpError> {
        let start = self.log_start_offset;
        let n = self.deletable_prefix(|s, next_base| {
            next_base.is_some_and(|nb| nb <= start) || s.next_offset() <= start && !s.is_empty()
        });
        self.delete_oldest_segments(n)
    }

    /// How many non-active segments from the oldest satisfy `pred(segment, next base)`.
    fn deletable_prefix(&self, pred: impl Fn(&LogSegment, Option<Offset>) -> bool) -> usize {
        let segs: Vec<&LogSegment> = self.segments.values().collect();
        let mut n = 0;
        while n + 1 < segs.len() && pred(segs[n], Some(segs[n + 1].base_offset)) {
            n += 1;
        }
        n
    }

    /// Deletes the `n` oldest segments (never the active one) and advances the log start.
    pub(crate) fn delete_oldest_segments(&mut self, n: usize) -> Result<Deleted, LogOpError> {
        let n = n.min(self.segments.len().saturating_sub(1));
        let mut deleted = Deleted::default();
        for _ in 0..n {
            let Some((_, seg)) = self.segments.pop_first() else {
                break;
            };
            deleted.segments += 1;
            deleted.bytes += u64::from(seg.size());
            seg.delete_files()?;
        }
        if deleted.segments > 0 {
            let first = self.first_segment_base();
            if first > self.log_start_offset {
                self.log_start_offset = first;
                self.write_log_start_checkpoint()?;
            }
            self.high_watermark = self.high_watermark.max(self.log_start_offset);
            self.recovery_point = self.recovery_point.max(self.log_start_offset);
            self.cleaner_checkpoint = self.cleaner_checkpoint.max(self.log_start_offset);
            if self
                .leader_epochs
                .truncate_from_start(self.log_start_offset)
            {
                self.leader_epochs.persist()?;
            }
            tracing::info!(log = %self.dir.display(), segments = deleted.segments, bytes = deleted.bytes,
                log_start_offset = self.log_start_offset.0, "deleted old segments");
        }
        self.check_invariants();
        Ok(deleted)
    }

    // ---- retention (SPEC T2, M4) ----

    /// Deletes whole non-active segments beyond `retention.ms` / `retention.bytes` (when the
    /// cleanup policy includes `delete`) and below the log start offset.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<Deleted, LogOpError> {
        let mut total = self.delete_segments_below_log_start()?;
        if !self.config.cleanup_policy.deletes() {
            return Ok(total);
        }
        if self.config.retention_ms >= 0 {
            let horizon = now_ms.saturating_sub(self.config.retention_ms);
            let n = self.deletable_prefix(|s, _| segment_timestamp(s) < horizon);
            let d = self.delete_oldest_segments(n)?;
            total.segments += d.segments;
            total.bytes += d.bytes;
        }
        if self.config.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            let sizes: Vec<i64> = self
                .segments
                .values()
                .map(|s| i64::from(s.size()))
                .collect();
            let mut n = 0;
            while n + 1 < sizes.len() && excess - sizes[n] >= 0 {
                excess -= sizes[n];
                n += 1;
            }
            let d = self.delete_oldest_segments(n)?;
            total.segments += d.segments;
            total.bytes += d.bytes;
        }
        Ok(total)
    }

    /// The oldest non-active segments as `(base, timestamp, bytes)`, for the capacity
    /// policy's global oldest-first choice across logs.
    pub fn deletable_segments(&self) -> Vec<(Offset, i64, u64)> {
        let n = self.segments.len().saturating_sub(1);
        self.segments
            .values()
            .take(n)
            .map(|s| (s.base_offset, segment_timestamp(s), u64::from(s.size())))
            .collect()
    }

    /// Deletes non-active segments with base offset < `below` (capacity `auto-delete`).
    pub fn delete_segments_before(&mut self, below: Offset) -> Result<Deleted, LogOpError> {
        let n = self.deletable_prefix(|s, _| s.base_offset < below);
        self.delete_oldest_segments(n)
    }

    // ---- flush and checkpoints ----

    /// The fdatasync job that makes everything appended so far durable and advances the
    /// recovery point. Index entries are written to their files first.
    pub fn flush_job(&mut self) -> Result<FlushJob, LogOpError> {
        let upto = self.log_end_offset();
        let from = self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(Offset(0), |(b, _)| *b);
        let mut files = Vec::new();
        for seg in self.segments.range_mut(from..).map(|(_, s)| s) {
            seg.flush_indexes()?;
            files.extend(seg.sync_handles()?);
        }
        Ok(FlushJob {
            files,
            upto,
            checkpoint: self.dir.join(checkpoint::RECOVERY_POINT_CHECKPOINT),
            topic: self.topic.clone(),
            partition: self.partition,
        })
    }

    /// Records a finished [`FlushJob`].
    pub fn flush_done(&mut self, upto: Offset) {
        let upto = upto.min(self.log_end_offset());
        self.recovery_point = self.recovery_point.max(upto);
        self.durable_offset = self.durable_offset.max(upto);
        if self.log_end_offset() <= upto {
            self.unflushed_messages = 0;
            self.first_unflushed_ms = None;
        }
    }

    /// Group commit: the `.log` files holding data not yet covered by a synchronous flush,
    /// and the offset their fdatasync will cover.
    pub fn sync_plan(&self) -> (Offset, Vec<Arc<File>>) {
        let from = self
            .segments
            .range(..=self.durable_offset)
            .next_back()
            .map_or(Offset(0), |(b, _)| *b);
        let files = self
            .segments
            .range(from..)
            .map(|(_, s)| Arc::clone(s.file()))
            .collect();
        (self.log_end_offset(), files)
    }

    /// Records a finished group-commit fdatasync covering offsets below `upto`.
    pub fn sync_done(&mut self, upto: Offset) {
        self.durable_offset = self.durable_offset.max(upto.min(self.log_end_offset()));
    }

    pub fn flush_policy(&self) -> FlushPolicy {
        self.config.flush_policy()
    }

    fn write_log_start_checkpoint(&self) -> Result<(), LogOpError> {
        let path = self.dir.join(checkpoint::LOG_START_OFFSET_CHECKPOINT);
        checkpoint::write_offset(&path, &self.topic, self.partition, self.log_start_offset.0)?;
        Ok(())
    }

    /// Writes the log-start and high-watermark checkpoints (the recovery point is written
    /// by [`FlushJob`]).
    pub fn write_checkpoints(&self) -> Result<(), LogOpError> {
        self.write_log_start_checkpoint()?;
        let hw = self.dir.join(checkpoint::REPLICATION_OFFSET_CHECKPOINT);
        checkpoint::write_offset(&hw, &self.topic, self.partition, self.high_watermark.0)?;
        self.leader_epochs.persist()?;
        Ok(())
    }

    /// Clean shutdown: flush everything, trim `O_DIRECT` padding, write all checkpoints,
    /// so the next open validates nothing. Blocking; call off the shard or at exit.
    pub fn close(mut self) -> Result<(), LogOpError> {
        self.flush_for_shutdown()
    }

    /// [`Self::close`] for a log still owned elsewhere (a shard shutting down): the log
    /// must not be appended to afterwards.
    pub fn flush_for_shutdown(&mut self) -> Result<(), LogOpError> {
        if let Some(reason) = &self.offline {
            return Err(LogOpError::LogOffline(reason.clone()));
        }
        let active = self.active_segment_mut();
        if active.direct.is_some() {
            let size = u64::from(active.size());
            active
                .file()
                .set_len(size)
                .context(|| "trim O_DIRECT padding".to_string())?;
        }
        let job = self.flush_job()?;
        let upto = job.run()?;
        self.flush_done(upto);
        self.write_checkpoints()
    }
}

/// A segment's age for time retention: its largest record timestamp, or its file time
/// when it has none (as in Kafka).
fn segment_timestamp(s: &LogSegment) -> i64 {
    if s.max_timestamp() >= 0 {
        s.max_timestamp()
    } else {
        s.created_ms
    }
}

/// The first record at or after `log_start` with timestamp >= `ts` in a batch known to
/// have one, compressed or not. Falls back to the batch's first offset and max
/// timestamp only if the records do not decode.
fn first_record_at_or_after(
    h: &BatchHeader,
    bytes: &[u8],
    ts: i64,
    log_start: Offset,
) -> (Offset, i64) {
    if let Ok(records) = batch::record_timestamps(h, bytes)
        && let Some(hit) = records
            .into_iter()
            .find(|(offset, timestamp)| *offset >= log_start && *timestamp >= ts)
    {
        return hit;
    }
    (h.base_offset.max(log_start), h.max_timestamp)
}
