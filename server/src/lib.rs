//! The ringmq broker as a library: everything `ringmqd` (src/main.rs) runs, one module
//! per subsystem. A library so that the fuzz targets (fuzz/) and benches can drive the
//! request path without a process.

pub mod admin_http;
pub mod atomic_file;
pub mod authorized_ops;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod disk_throttle;
pub mod group;
pub mod handlers;
pub mod kafka_broker_configs;
pub mod log_deleter;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod panic_hook;
pub mod partition;
pub mod protocol;
pub mod record_policy;
pub mod replication;
pub mod security;
pub mod shard;
pub mod signals;
pub mod stray_replicas;
pub mod topic_config;
pub mod topics;
pub mod zero_copy;

/// The request decoder as the connection runs it, for the fuzz targets: frame header,
/// then the body of the API and version it names, then (Produce) the checks applied to
/// each partition's record batches. Never panics; returns whether the request decoded.
pub fn decode_request_frame(frame: bytes::Bytes) -> bool {
    let Ok((header, api_key, body)) = protocol::decode_header(frame) else {
        return false;
    };
    handlers::decode_and_validate(api_key, header.request_api_version, body).is_ok()
}
