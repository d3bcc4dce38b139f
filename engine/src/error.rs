//! The engine's error types: one enum per operation family, each with `ShuttingDown`.
//! The server maps them to Kafka error codes in one function per handler; the mapping a
//! handler should use is noted on each variant.

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;
use crate::checkpoint::CheckpointError;
use crate::offset::Offset;

/// An I/O error with what the engine was doing (`"append to 00000000000000001234.log"`).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct IoContext {
    pub context: String,
    #[source]
    pub source: io::Error,
}

pub(crate) trait ResultExt<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, IoContext>;
}

impl<T> ResultExt<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, IoContext> {
        self.map_err(|source| IoContext {
            context: context(),
            source,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// CORRUPT_MESSAGE (INVALID_RECORD for `BatchError::InvalidRecord`).
    #[error(transparent)]
    Corrupt(#[from] BatchError),
    /// INVALID_REQUEST: a produce request with no record batch.
    #[error("no record batches to append")]
    Empty,
    /// MESSAGE_TOO_LARGE.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: u32 },
    /// Replication only: batches must carry increasing offsets at or after the log end.
    #[error("batch base offset {base} is below the log end offset {log_end}")]
    OffsetsOutOfOrder { base: Offset, log_end: Offset },
    /// The capacity threshold policy `stop-production` is in force (SPEC M3).
    /// POLICY_VIOLATION with this message.
    #[error("disk usage above the capacity threshold; production stopped")]
    DiskFull,
    /// KAFKA_STORAGE_ERROR: an earlier I/O failure left the log's durability unknown, so
    /// the log refuses writes until it is reopened (never retry a failed fsync).
    #[error("log is offline after an I/O failure: {0}")]
    LogOffline(String),
    /// KAFKA_STORAGE_ERROR.
    #[error(transparent)]
    Io(#[from] IoContext),
    #[error("log is shutting down")]
    ShuttingDown,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// OFFSET_OUT_OF_RANGE.
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    /// KAFKA_STORAGE_ERROR.
    #[error(transparent)]
    Io(#[from] IoContext),
    /// KAFKA_STORAGE_ERROR: the segment bytes do not parse (bit rot below the recovery
    /// point).
    #[error("corrupt batch in {segment} at position {position}: {error}")]
    Corrupt {
        segment: PathBuf,
        position: u32,
        error: BatchError,
    },
    #[error("log is shutting down")]
    ShuttingDown,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("partition directory name {0:?} is not <topic>-<partition>")]
    InvalidDirName(PathBuf),
    #[error(transparent)]
    Io(#[from] IoContext),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Errors of truncation, DeleteRecords, retention, flush and compaction.
#[derive(Debug, thiserror::Error)]
pub enum LogOpError {
    /// OFFSET_OUT_OF_RANGE (DeleteRecords beyond the high watermark).
    #[error("offset {requested} is beyond the high watermark {high_watermark}")]
    BeyondHighWatermark {
        requested: Offset,
        high_watermark: Offset,
    },
    #[error(transparent)]
    Io(#[from] IoContext),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("log is offline after an I/O failure: {0}")]
    LogOffline(String),
    #[error("log is shutting down")]
    ShuttingDown,
}
