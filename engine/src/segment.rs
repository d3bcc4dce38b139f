//! `LogSegment`: one `<base offset>.log` file with its `.index` and `.timeindex`.
//!
//! A segment holds whole v2 batches back to back from position 0 to `size`. Bytes beyond
//! `size` (a failed write, or `O_DIRECT` zero padding) are never served and are cut off
//! by recovery. Only the last segment of a log (the active segment) is appended to.
//!
//! File names are the base offset, zero-padded to 20 digits, as in Kafka:
//! `00000000000000001234.log`, `.index`, `.timeindex`.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BATCH_HEADER_SIZE, BatchError, BatchHeader, LOG_OVERHEAD};
use crate::error::{IoContext, ResultExt};
use crate::index::{OffsetEntry, OffsetIndex, TimeIndex};
use crate::offset::{FilePosition, Offset};

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Block size for `O_DIRECT` appends.
pub const DIRECT_BLOCK: usize = 4096;

/// `<dir>/<base offset, 20 digits>.<suffix>`.
pub fn segment_path(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{:020}.{suffix}", base.0))
}

/// The base offset in a segment file name, if it is one.
pub fn parse_base_offset(file_name: &str) -> Option<(Offset, &str)> {
    let (stem, suffix) = file_name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|o| (Offset(o), suffix))
}

/// Result of scanning batches in a segment file.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Position after the last batch accepted (or of the batch the callback stopped at).
    pub position: u32,
    /// The first malformed batch and why, if the scan ended on one.
    pub error: Option<BatchError>,
}

/// Never validate CRCs in [`scan_batches`] (header-only scan).
pub const NO_VALIDATION: u32 = u32::MAX;

/// Reads batches of `file` from `from` to `to`, calling `f(position, header, bytes)` for
/// each. Batches at positions >= `validate_from` are CRC-checked and `bytes` is the whole
/// batch; before that only headers are read and `bytes` is the header. Reads in chunks
/// so a scan costs few syscalls.
pub fn scan_batches(
    file: &File,
    from: u32,
    to: u32,
    validate_from: u32,
    mut f: impl FnMut(u32, &BatchHeader, &[u8]) -> ControlFlow<()>,
) -> io::Result<ScanOutcome> {
    let chunk: usize = if validate_from < to { 1 << 20 } else { 1 << 12 };
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = from;
    let mut pos = from;
    while pos < to {
        let want = BATCH_HEADER_SIZE.min((to - pos) as usize);
        ensure_buffered(file, &mut buf, &mut buf_start, pos, want, chunk, to)?;
        let at = (pos - buf_start) as usize;
        let header = match BatchHeader::parse(&buf[at..]) {
            Ok(h) => h,
            Err(error) => {
                return Ok(ScanOutcome {
                    position: pos,
                    error: Some(error),
                });
            }
        };
        let size = header.total_size();
        if u64::from(pos) + size as u64 > u64::from(to) {
            let error = BatchError::Truncated {
                available: (to - pos) as usize,
                needed: size,
            };
            return Ok(ScanOutcome {
                position: pos,
                error: Some(error),
            });
        }
        let bytes = if pos >= validate_from {
            ensure_buffered(file, &mut buf, &mut buf_start, pos, size, chunk, to)?;
            let at = (pos - buf_start) as usize;
            let whole = &buf[at..at + size];
            if let Err(error) = batch::validate_batch(whole) {
                return Ok(ScanOutcome {
                    position: pos,
                    error: Some(error),
                });
            }
            whole
        } else {
            let at = (pos - buf_start) as usize;
            &buf[at..at + BATCH_HEADER_SIZE]
        };
        if f(pos, &header, bytes).is_break() {
            return Ok(ScanOutcome {
                position: pos,
                error: None,
            });
        }
        pos += size as u32;
    }
    Ok(ScanOutcome {
        position: pos,
        error: None,
    })
}

/// Makes `buf` hold file bytes `[pos, pos + want)`, refilling from `pos` when needed.
fn ensure_buffered(
    file: &File,
    buf: &mut Vec<u8>,
    buf_start: &mut u32,
    pos: u32,
    want: usize,
    chunk: usize,
    to: u32,
) -> io::Result<()> {
    let have_end = u64::from(*buf_start) + buf.len() as u64;
    if pos >= *buf_start && u64::from(pos) + want as u64 <= have_end {
        return Ok(());
    }
    let len = chunk.max(want).min((to - pos) as usize);
    buf.resize(len, 0);
    let n = read_fully_at(file, buf, u64::from(pos))?;
    buf.truncate(n);
    *buf_start = pos;
    Ok(())
}

/// `pread` until `buf` is full or end of file; returns bytes read.
pub fn read_fully_at(file: &File, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Per-batch facts an append records in the segment after the write.
#[derive(Debug, Clone, Copy)]
pub struct AppendedBatch {
    pub position: u32,
    pub size: u32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: i64,
}

/// State of the `O_DIRECT` descriptor: the partial last block, rewritten by each append.
#[derive(Debug)]
pub struct DirectWriter {
    pub file: Arc<File>,
    pub tail: Vec<u8>,
}

#[derive(Debug)]
pub struct LogSegment {
    pub base_offset: Offset,
    log_path: PathBuf,
    file: Arc<File>,
    size: u32,
    next_offset: Offset,
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    bytes_since_last_index_entry: u32,
    max_timestamp: i64,
    offset_of_max_timestamp: Offset,
    /// When the segment was created (for `segment.ms`).
    pub created_ms: i64,
    pub(crate) direct: Option<DirectWriter>,
}

impl LogSegment {
    /// Creates a new, empty segment (replacing any leftover file of the same name).
    pub fn create(dir: &Path, base: Offset, now_ms: i64, direct: bool) -> Result<Self, IoContext> {
        let log_path = segment_path(dir, base, LOG_SUFFIX);
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let p = segment_path(dir, base, suffix);
            if p.exists() {
                std::fs::remove_file(&p).context(|| format!("remove stale {}", p.display()))?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .context(|| format!("create {}", log_path.display()))?;
        let mut seg = Self::with_file(dir, base, log_path, file, 0);
        seg.created_ms = now_ms;
        if direct {
            seg.open_direct()?;
        }
        Ok(seg)
    }

    /// Opens an existing segment file; indexes are attached by the loader.
    pub fn open(dir: &Path, base: Offset) -> Result<Self, IoContext> {
        let log_path = segment_path(dir, base, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .context(|| format!("open {}", log_path.display()))?;
        let meta = file
            .metadata()
            .context(|| format!("stat {}", log_path.display()))?;
        let size = u32::try_from(meta.len()).unwrap_or(u32::MAX);
        let created_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        let mut seg = Self::with_file(dir, base, log_path, file, size);
        seg.created_ms = created_ms;
        Ok(seg)
    }

    fn with_file(dir: &Path, base: Offset, log_path: PathBuf, file: File, size: u32) -> Self {
        LogSegment {
            base_offset: base,
            log_path,
            file: Arc::new(file),
            size,
            next_offset: base,
            offset_index: OffsetIndex::new(segment_path(dir, base, INDEX_SUFFIX), base),
            time_index: TimeIndex::new(segment_path(dir, base, TIME_INDEX_SUFFIX), base),
            bytes_since_last_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            created_ms: 0,
            direct: None,
        }
    }

    /// Opens the `O_DIRECT` descriptor and loads the partial last block.
    pub fn open_direct(&mut self) -> Result<(), IoContext> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.log_path)
            .context(|| format!("open O_DIRECT {}", self.log_path.display()))?;
        let aligned = self.size as usize / DIRECT_BLOCK * DIRECT_BLOCK;
        let mut tail = vec![0u8; self.size as usize - aligned];
        read_fully_at(&self.file, &mut tail, aligned as u64)
            .context(|| format!("read tail of {}", self.log_path.display()))?;
        self.direct = Some(DirectWriter {
            file: Arc::new(file),
            tail,
        });
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }
    pub fn size(&self) -> u32 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    /// Offset after the segment's last batch (the base offset when empty).
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }
    /// Largest batch max-timestamp in the segment, or -1.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn offset_of_max_timestamp(&self) -> Offset {
        self.offset_of_max_timestamp
    }

    /// Records batches that were written at their positions (after the write completed).
    pub fn on_appended(&mut self, batches: &[AppendedBatch], index_interval_bytes: u32) {
        for b in batches {
            assert_eq!(
                b.position,
                self.size,
                "{}: append not at end",
                self.log_path.display()
            );
            assert!(
                b.base_offset >= self.next_offset,
                "{}: offsets must increase",
                self.log_path.display()
            );
            if b.max_timestamp > self.max_timestamp {
                self.max_timestamp = b.max_timestamp;
                self.offset_of_max_timestamp = b.last_offset;
            }
            if self.bytes_since_last_index_entry > index_interval_bytes {
                self.add_index_entries(b.last_offset, b.position);
                self.bytes_since_last_index_entry = 0;
            }
            self.bytes_since_last_index_entry += b.size;
            self.size += b.size;
            self.next_offset = b.last_offset.plus(1);
        }
    }

    fn add_index_entries(&mut self, last_offset: Offset, position: u32) {
        if let Some(relative) = last_offset.relative_to(self.base_offset) {
            let entry = OffsetEntry {
                relative,
                position: FilePosition(position),
            };
            if self
                .offset_index
                .last()
                .is_none_or(|prev| entry.relative > prev.relative && entry.position > prev.position)
            {
                self.offset_index.append(entry);
            }
        }
        self.time_index
            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
    }

    /// Recovers the segment's stats and indexes from its file: keeps the index entries in
    /// `indexes` (already checked against the file, or empty to rebuild from scratch) and
    /// scans batches after the last entry to the end of the file, CRC-checking them when
    /// `validate`. Returns where the scan stopped; on an error the caller truncates there.
    pub fn recover_from(
        &mut self,
        indexes: Option<(OffsetIndex, TimeIndex)>,
        validate: bool,
        index_interval_bytes: u32,
    ) -> Result<ScanOutcome, IoContext> {
        if let Some((oi, ti)) = indexes {
            self.offset_index = oi;
            self.time_index = ti;
        } else {
            self.offset_index
                .truncate_to(self.base_offset)
                .context(|| self.ctx("reset index"))?;
            self.time_index
                .truncate_to(self.base_offset)
                .context(|| self.ctx("reset timeindex"))?;
        }
        let from = self.offset_index.last().map_or(0, |e| e.position.0);
        (self.max_timestamp, self.offset_of_max_timestamp) = self
            .time_index
            .max_timestamp()
            .unwrap_or((-1, self.base_offset));
        self.size = from;
        self.next_offset = self.base_offset;
        self.bytes_since_last_index_entry = 0;
        let file_len = self.file.metadata().context(|| self.ctx("stat"))?.len();
        let to = u32::try_from(file_len).unwrap_or(u32::MAX);
        let validate_from = if validate { from } else { NO_VALIDATION };
        let mut appended: Vec<AppendedBatch> = Vec::new();
        let mut offsets_ok = true;
        let outcome = scan_batches(&self.file, from, to, validate_from, |pos, h, _| {
            // Offsets must increase from batch to batch; one going backwards is corrupt.
            let prev_last = appended.last().map(|b| b.last_offset);
            if h.base_offset < self.base_offset || prev_last.is_some_and(|p| h.base_offset <= p) {
                offsets_ok = false;
                return ControlFlow::Break(());
            }
            appended.push(AppendedBatch {
                position: pos,
                size: h.total_size() as u32,
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp,
            });
            ControlFlow::Continue(())
        })
        .context(|| self.ctx("recover"))?;
        self.on_appended(&appended, index_interval_bytes);
        if !offsets_ok {
            let error = Some(BatchError::InvalidRecord("batch offsets do not increase"));
            return Ok(ScanOutcome {
                position: outcome.position,
                error,
            });
        }
        Ok(outcome)
    }

    fn ctx(&self, what: &str) -> String {
        format!("{what} {}", self.log_path.display())
    }

    /// The first batch whose last offset is >= `offset`, scanning from the index.
    pub fn translate_offset(
        &self,
        offset: Offset,
    ) -> Result<Option<(u32, BatchHeader)>, IoContext> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let from = self.offset_index.lookup(offset).0;
        let mut found = None;
        scan_batches(&self.file, from, self.size, NO_VALIDATION, |pos, h, _| {
            if h.last_offset() >= offset {
                found = Some((pos, *h));
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .context(|| self.ctx("translate offset in"))?;
        Ok(found)
    }

    /// The end of the last whole batch that ends at or before `limit`, starting from the
    /// batch boundary `start`. Returns `start` if the first batch does not fit.
    pub fn batch_boundary_at_or_before(&self, start: u32, limit: u32) -> Result<u32, IoContext> {
        if limit >= self.size {
            return Ok(self.size);
        }
        let from = self
            .offset_index
            .lookup_position(FilePosition(limit))
            .0
            .max(start);
        let mut end = from;
        scan_batches(&self.file, from, self.size, NO_VALIDATION, |pos, h, _| {
            let batch_end = pos + h.total_size() as u32;
            if batch_end > limit {
                return ControlFlow::Break(());
            }
            end = batch_end;
            ControlFlow::Continue(())
        })
        .context(|| self.ctx("find batch boundary in"))?;
        Ok(end)
    }

    /// Size of the batch starting at `position`.
    pub fn batch_size_at(&self, position: u32) -> Result<u32, IoContext> {
        let mut header = [0u8; LOG_OVERHEAD];
        read_fully_at(&self.file, &mut header, u64::from(position)).context(|| self.ctx("read"))?;
        let len = i32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        Ok((LOG_OVERHEAD as u32)
            .saturating_add(len.max(0) as u32)
            .min(self.size - position))
    }

    /// Removes batches with offsets >= `offset` (the whole batch holding `offset` goes).
    /// Returns the bytes removed.
    pub fn truncate_to(
        &mut self,
        offset: Offset,
        index_interval_bytes: u32,
    ) -> Result<u32, IoContext> {
        let Some((position, _)) = self.translate_offset(offset)? else {
            return Ok(0);
        };
        let removed = self.size - position;
        self.file
            .set_len(u64::from(position))
            .context(|| self.ctx("truncate"))?;
        if let Some(d) = &mut self.direct {
            let aligned = position as usize / DIRECT_BLOCK * DIRECT_BLOCK;
            d.tail.resize(position as usize - aligned, 0);
            read_fully_at(&self.file, &mut d.tail, aligned as u64)
                .context(|| self.ctx("read tail"))?;
        }
        self.offset_index
            .truncate_to(offset)
            .context(|| self.ctx("truncate index of"))?;
        self.time_index
            .truncate_to(offset)
            .context(|| self.ctx("truncate timeindex of"))?;
        let oi = std::mem::replace(
            &mut self.offset_index,
            OffsetIndex::new(PathBuf::new(), self.base_offset),
        );
        let ti = std::mem::replace(
            &mut self.time_index,
            TimeIndex::new(PathBuf::new(), self.base_offset),
        );
        self.recover_from(Some((oi, ti)), false, index_interval_bytes)?;
        Ok(removed)
    }

    /// Called when the segment stops being active: final time-index entry, drop any
    /// `O_DIRECT` padding, write index files.
    pub fn on_roll(&mut self) -> Result<(), IoContext> {
        self.time_index
            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        if self.direct.take().is_some() {
            self.file
                .set_len(u64::from(self.size))
                .context(|| self.ctx("trim padding of"))?;
        }
        self.flush_indexes()
    }

    pub fn flush_indexes(&mut self) -> Result<(), IoContext> {
        self.offset_index
            .flush()
            .context(|| self.ctx("write index of"))?;
        self.time_index
            .flush()
            .context(|| self.ctx("write timeindex of"))
    }

    /// Descriptors to fdatasync: the log and both index files.
    pub fn sync_handles(&self) -> Result<Vec<Arc<File>>, IoContext> {
        let mut v = vec![Arc::clone(&self.file)];
        for f in [
            self.offset_index.sync_handle(),
            self.time_index.sync_handle(),
        ] {
            if let Some(f) = f.context(|| self.ctx("dup index of"))? {
                v.push(Arc::new(f));
            }
        }
        Ok(v)
    }

    /// Deletes the segment's files. Open descriptors (in-flight fetches) stay readable.
    pub fn delete_files(&self) -> Result<(), IoContext> {
        for p in [
            &self.log_path,
            self.offset_index.path(),
            self.time_index.path(),
        ] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(IoContext {
                        context: format!("delete {}", p.display()),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `position` (tests, the cleaner and non-zero-copy readers).
    pub fn read_bytes(&self, position: u32, len: u32) -> Result<Vec<u8>, IoContext> {
        let len = len.min(self.size.saturating_sub(position));
        let mut buf = vec![0u8; len as usize];
        let n = read_fully_at(&self.file, &mut buf, u64::from(position))
            .context(|| self.ctx("read"))?;
        buf.truncate(n);
        Ok(buf)
    }
}
