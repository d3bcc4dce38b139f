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
}

/// What a finished job reports back to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritebackDone {
    Started { bytes: u64 },
    Flushed(Offset),
}

impl WritebackJob {
    /// Runs the job (blocking).
    pub fn run(self) -> Result<WritebackDone, LogOpError> {
        match self {
            WritebackJob::StartWriteback { file, from, len } => {
                start_writeback(&file, from, len).map_err(|source| {
                    LogOpError::Io(crate::error::IoContext {
                        context: "sync_file_range".into(),
                        source,
                    })
                })?;
                Ok(WritebackDone::Started { bytes: len })
            }
            WritebackJob::Flush(job) => job.run().map(WritebackDone::Flushed),
        }
    }
}

fn start_writeback(file: &File, from: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        Err(io::Error::last_os_error())
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
        Ok(self.next_writeback_range())
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
            let next_base = self
                .segments
                .range(mark_base.plus(1)..)
                .next()
                .map_or(active_base, |(b, _)| *b);
            self.writeback_mark = (next_base, 0);
            let seg = self.segments.get(&mark_base)?;
            let len = seg.size().saturating_sub(mark_pos);
            return (len > 0).then(|| WritebackJob::StartWriteback {
                file: Arc::clone(seg.file()),
                from: u64::from(mark_pos),
                len: u64::from(len),
            });
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
        if let WritebackDone::Flushed(upto) = done {
            self.flush_done(upto);
        }
    }
}
