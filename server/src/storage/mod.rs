//! The storage room: partitions as a broker serves them on top of the engine — the log,
//! producer state and replica state (high watermark, followers; [`partition`],
//! [`replica`]), transactions and the last stable offset ([`txn_state`]), record checks on produce ([`record_policy`]), where partitions live on
//! disk ([`log_dirs`], [`meta_properties`], [`stray_replicas`]), how they are deleted
//! ([`log_deleter`]), the write pacing of an emulated disk ([`disk_throttle`]) and durable
//! small files ([`atomic_file`]).

pub mod atomic_file;
pub mod disk_throttle;
pub mod log_deleter;
pub mod log_dirs;
pub mod meta_properties;
pub mod partition;
pub mod record_policy;
pub mod replica;
pub mod stray_replicas;
pub mod txn_state;

/// The wall clock as Kafka's timestamps count it: milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
