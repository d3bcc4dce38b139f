//! Per-log configuration: Kafka's topic config keys (`segment.bytes`, `retention.ms`, ...)
//! with Kafka's defaults except where the seeds set another (`segment.bytes` 500 MB,
//! `retention.ms` 72 h, `max.message.bytes` 10,485,760). Keys only ringmq has are under
//! `ringmq.` (the append method and writeback pacing, which disk profiles set).

use crate::batch::TimestampType;

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    #[default]
    Delete,
    Compact,
    /// `compact,delete`: compacted and also subject to retention.
    CompactDelete,
    /// An empty list (Kafka 4.x accepts it, e.g. what remains after subtracting `delete`):
    /// neither deleted by retention nor compacted; only DeleteRecords moves the start.
    None,
}

impl CleanupPolicy {
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

/// How appended bytes reach the segment file (`ringmq.append.method`).
///
/// Measured on ext4 (see `benches/` and DESIGN.md): io_uring buffered writes are punted to
/// kernel worker threads, so the inline `pwritev` into the page cache is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendMethod {
    /// `pwritev(2)` on the shard thread straight into the page cache.
    #[default]
    Pwritev,
    /// An io_uring write of the buffered file (may be punted to `iou-wrk` threads).
    IoUring,
    /// io_uring writes through an `O_DIRECT` descriptor, 4 KiB aligned: the partial last
    /// block is rewritten with each append and the file is padded to the block size until
    /// the segment rolls (recovery treats zero padding as the end of the log).
    Direct,
}

impl AppendMethod {
    pub fn parse(s: &str) -> Option<AppendMethod> {
        match s {
            "pwritev" => Some(AppendMethod::Pwritev),
            "io_uring" | "iouring" => Some(AppendMethod::IoUring),
            "direct" | "o_direct" => Some(AppendMethod::Direct),
            _ => None,
        }
    }
}

/// When an append is acknowledged relative to its durability (SPEC T4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledged from the page cache; the background flusher writes back and fsyncs.
    Async,
    /// Acknowledged after fdatasync; concurrent appends share one fdatasync.
    Sync,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this.
    pub segment_bytes: u32,
    /// `segment.ms`: roll a non-empty active segment older than this.
    pub segment_ms: i64,
    /// `retention.ms` (-1: keep forever).
    pub retention_ms: i64,
    /// `retention.bytes` (-1: no size limit).
    pub retention_bytes: i64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `flush.messages`: 1 means synchronous flush (SPEC T4); larger values make the
    /// flusher fsync after that many unflushed messages.
    pub flush_messages: i64,
    /// `flush.ms`: the flusher fsyncs data older than this.
    pub flush_ms: i64,
    /// `ringmq.append.method`.
    pub append_method: AppendMethod,
    /// `ringmq.writeback.bytes`: the flusher starts writeback (`sync_file_range`) each time
    /// this many bytes are dirty, so the kernel never throttles the appending thread.
    pub writeback_bytes: u64,
    /// `ringmq.group.commit.window.us`: how long a group-commit leader waits for more
    /// appenders before its fdatasync. 0 (the default) yields once to the shard's loop,
    /// which already gathers every appender of that turn.
    pub group_commit_window_us: u64,
    /// `ringmq.cache.retain.bytes`: once written back, data more than this far behind the
    /// writeback mark is dropped from the page cache (drop-behind), so appends reuse
    /// recently freed pages instead of taking fresh ones. None (the default, -1) leaves
    /// the page cache to the kernel, as Kafka does.
    pub cache_retain_bytes: Option<u64>,
}

pub const DEFAULT_SEGMENT_BYTES: u32 = 500 * 1024 * 1024;
pub const DEFAULT_RETENTION_MS: i64 = 72 * 3600 * 1000;
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 10_485_760;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            message_timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            append_method: AppendMethod::Pwritev,
            writeback_bytes: 4 * 1024 * 1024,
            group_commit_window_us: 0,
            cache_retain_bytes: None,
        }
    }
}

impl LogConfig {
    pub fn flush_policy(&self) -> FlushPolicy {
        if self.flush_messages <= 1 {
            FlushPolicy::Sync
        } else {
            FlushPolicy::Async
        }
    }
}
