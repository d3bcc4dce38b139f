//! ringmq's storage engine: partition logs in Kafka's on-disk layout.
//!
//! No networking and no Kafka protocol beyond the record-batch format: the broker hands
//! the engine record batches as bytes and gets back offsets and file ranges to send.
//!
//! - [`batch`]: v2 record batches — validation (CRC32C), stamping, iteration.
//! - [`segment`], [`index`]: `.log` files with their `.index` / `.timeindex`.
//! - [`log`]: [`UnifiedLog`] — append, read ranges for zero-copy fetch, lookups, roll,
//!   truncation, DeleteRecords, retention, flush jobs. [`loader`]: recovery on open.
//! - [`write`]: the append methods (pwritev, io_uring, O_DIRECT).
//! - [`flush`]: writeback pacing and periodic flushes for asynchronous-flush logs.
//! - [`handle`]: [`LogHandle`], the async per-shard face with group commit.
//! - [`cleaner`]: log compaction. [`capacity`]: the 95 % disk policy.
//! - [`checkpoint`], [`leader_epoch`]: checkpoint files.
//!
//! Threading: a [`UnifiedLog`] is `Send` and fully synchronous; a shard owns it (inside a
//! [`LogHandle`]) and runs blocking jobs (fdatasync, writeback, compaction) elsewhere.

pub mod batch;
pub mod capacity;
pub mod checkpoint;
pub mod cleaner;
pub mod codec;
pub mod config;
pub mod control;
pub mod error;
pub mod flush;
pub mod handle;
pub mod index;
pub mod leader_epoch;
pub mod loader;
pub mod log;
pub mod offset;
pub mod segment;
pub mod write;

pub use batch::{BatchBuilder, BatchError, BatchHeader, Compression, NewRecord, TimestampType};
pub use capacity::{CapacityGuard, CapacityMonitor, CapacityPolicy};
pub use config::{AppendMethod, CleanupPolicy, FlushPolicy, LogConfig};
pub use error::{AppendError, LogOpError, OpenError, ReadError};
pub use handle::LogHandle;
pub use log::{AppendOptions, AppendOrigin, FileRange, LogAppendInfo, ReadInfo, UnifiedLog};
pub use offset::{FilePosition, Offset, RelativeOffset};
