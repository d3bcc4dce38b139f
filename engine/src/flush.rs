//! The background flusher's decisions for an asynchronous-flush log (SPEC T4's default).
//!
//! An append under the async policy returns once its bytes are in the page cache. Left
//! alone, dirty pages pile up until the kernel throttles the writing thread (in
//! `balance_dirty_pages`), which on a shard thread would stall every partition it owns.
//! So the flusher paces writeback: each time `ringmq.writeback.bytes` of a segment are
//! dirty it starts writeback of that range with `sync_file_range(SYNC_FILE_RANGE_WRITE)`,
//! which queues the I/O without waiting for it. Separately it makes data durable and
//! advances the recovery point (a [`FlushJob`]) when Kafka's `flush.messages` /
//! `flush.ms` say so, or every `ringmq.recovery.flush.interval.ms` so restarts stay fast.
//!
//! With `ringmq.cache.retain.bytes` set it also drops written-back data that far behind
//! the writeback mark from the page cache (an [`WritebackJob::Evict`]): appends then
//! reuse pages freed a moment ago. On VMs whose free memory is handed back to the host
//! (free page reporting, ballooning), a fresh page costs a host fault on first touch,
//! and copying appends into fresh pages measured 4-6x slower than into recycled ones.
//! Tail readers within the retained bytes still read from memory.
//!
//! Jobs run off the shard thread (they may block on the device); the log only decides.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::config::FlushPolicy;
use crate::error::LogOpError;
use crate::log::{FlushJob, UnifiedLog};
use crate::offset::Offset;

/// Interval at which an async-flush log with unflushed data is made durable anyway.
pub const RECOVERY_FLUSH_INTERVAL_MS: i64 = 60_000;

#[derive(Debug)]
pub enum WritebackJob {
    /// Start writeback of `[from, from + len)` without waiting.
    StartWriteback {
        file: Arc<File>,
        from: u64,
        len: u64,
    },
    /// fdatasync and advance the recovery point.
    Flush(FlushJob),
    /// Wait for `[from, from + len)` to be clean, then drop it from the page cache.
    Evict {
        file: Arc<File>,
        from: u64,
        len: u64,
    },
}

/// What a finished job reports back to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritebackDone {
    Started { bytes: u64 },
    Flushed(Offset),
    Evicted { bytes: u64 },
}

impl WritebackJob {
    /// Runs the job (blocking).
    pub fn run(self) -> Result<WritebackDone, LogOpError> {
        match self {
            WritebackJob::StartWriteback { file, from, len } => {
                start_writeback(&file, from, len).map_err(io_error("sync_file_range"))?;
                Ok(WritebackDone::Started { bytes: len })
            }
            WritebackJob::Flush(job) => job.run().map(WritebackDone::Flushed),
            WritebackJob::Evict { file, from, len } => {
                evict(&file, from, len).map_err(io_error("dropping written-back pages"))?;
                Ok(WritebackDone::Evicted { bytes: len })
            }
        }
    }
}

fn io_error(context: &'static str) -> impl FnOnce(io::Error) -> LogOpError {
    move |source| {
        LogOpError::Io(crate::error::IoContext {
            context: context.into(),
            source,
        })
    }
}

/// (file, from, len): a byte range of a segment file.
type FileRange = (Arc<File>, u64, u64);

fn start_writeback(file: &File, from: u64, len: u64) -> io::Result<()> {
    sync_file_range(file, from, len, libc::SYNC_FILE_RANGE_WRITE)
}

fn sync_file_range(file: &File, from: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            flags,
        )
    };
    if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Drops `[from, from + len)` from the page cache. `POSIX_FADV_DONTNEED` skips dirty
/// pages and pages under writeback, so the range is first written and waited for (its
/// writeback was started a tick or more ago; this normally waits for nothing).
fn evict(file: &File, from: u64, len: u64) -> io::Result<()> {
    sync_file_range(
        file,
        from,
        len,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    )?;
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    let rc = unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if rc != 0 {
        Err(io::Error::from_raw_os_error(rc))
    } else {
        Ok(())
    }
}

impl UnifiedLog {
    /// The next writeback or flush job due at `now_ms`, if any.
    pub fn writeback_job(&mut self, now_ms: i64) -> Result<Option<WritebackJob>, LogOpError> {
        if self.flush_policy() == FlushPolicy::Async && self.flush_due(now_ms) {
            return Ok(Some(WritebackJob::Flush(self.flush_job()?)));
        }
        Ok(self.next_writeback_range().or_else(|| self.next_eviction()))
    }

    /// The next range to drop from the page cache: whatever lies more than
    /// `cache_retain_bytes` behind the writeback mark, in steps of at least
    /// `writeback_bytes`; a segment the mark has left is dropped to its end.
    fn next_eviction(&mut self) -> Option<WritebackJob> {
        let retain = self.config.cache_retain_bytes?;
        let (base, pos) = self.evict_mark;
        let (wb_base, wb_pos) = self.writeback_mark;
        if base != wb_base {
            let (next, rest) = self.rest_of_segment((base, pos), wb_base);
            self.evict_mark = next;
            return rest.map(|(file, from, len)| WritebackJob::Evict { file, from, len });
        }
        let upto = u64::from(wb_pos).saturating_sub(retain);
        if upto < u64::from(pos) + self.config.writeback_bytes.max(1) {
            return None;
        }
        let seg = self.segments.get(&base)?;
        self.evict_mark = (base, upto as u32);
        Some(WritebackJob::Evict {
            file: Arc::clone(seg.file()),
            from: u64::from(pos),
            len: upto - u64::from(pos),
        })
    }

    /// For a mark `(base, pos)` in a segment it is leaving: the mark's next place (the
    /// start of the following segment, or of `last`) and the rest of `base` from `pos`,
    /// as (file, from, len); None when that is empty or the segment was deleted.
    fn rest_of_segment(
        &self,
        (base, pos): (Offset, u32),
        last: Offset,
    ) -> ((Offset, u32), Option<FileRange>) {
        let next = self
            .segments
            .range(base.plus(1)..)
            .next()
            .map_or(last, |(b, _)| *b);
        let rest = self.segments.get(&base).and_then(|seg| {
            let len = seg.size().saturating_sub(pos);
            (len > 0).then(|| (Arc::clone(seg.file()), u64::from(pos), u64::from(len)))
        });
        ((next, 0), rest)
    }

    fn flush_due(&self, now_ms: i64) -> bool {
        let Some(first) = self.first_unflushed_ms else {
            return false;
        };
        let age = now_ms.saturating_sub(first);
        self.unflushed_messages >= self.config.flush_messages
            || age >= self.config.flush_ms
            || age >= RECOVERY_FLUSH_INTERVAL_MS
    }

    fn next_writeback_range(&mut self) -> Option<WritebackJob> {
        let (mark_base, mark_pos) = self.writeback_mark;
        let active_base = self.active_segment().base_offset;
        if mark_base != active_base {
            // The marked segment rolled (or went away): finish it, then move on.
            let (next, rest) = self.rest_of_segment((mark_base, mark_pos), active_base);
            self.writeback_mark = next;
            return rest.map(|(file, from, len)| WritebackJob::StartWriteback { file, from, len });
        }
        let active = self.active_segment();
        let dirty = u64::from(active.size().saturating_sub(mark_pos));
        if dirty < self.config.writeback_bytes.max(1) {
            return None;
        }
        let job = WritebackJob::StartWriteback {
            file: Arc::clone(active.file()),
            from: u64::from(mark_pos),
            len: dirty,
        };
        self.writeback_mark = (active_base, active.size());
        Some(job)
    }

    /// Records a finished job.
    pub fn writeback_done(&mut self, done: WritebackDone) {
        match done {
            WritebackDone::Flushed(upto) => self.flush_done(upto),
            WritebackDone::Evicted { bytes } => self.evicted_bytes += bytes,
            WritebackDone::Started { .. } => {}
        }
    }
}
