//! The ringmq broker as a library: everything `ringmqd` (src/main.rs) runs, one module
//! per subsystem. A library so that the fuzz targets (fuzz/) and benches can drive the
//! request path without a process.

// The rooms, highest first (a room imports only rooms below it; server/tests/rooms.rs
// checks it): the composition root (broker, logging, signals), then
pub mod admin;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod handlers;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod quota;
pub mod replication;
pub mod runtime;
pub mod security;
pub mod storage;
pub mod transactions;

pub mod broker;
pub mod logging;
pub mod signals;

/// The request decoder as the connection runs it, for the fuzz targets: frame header,
/// then the body of the API and version it names, then (Produce) the checks applied to
/// each partition's record batches. Never panics; returns whether the request decoded.
pub fn decode_request_frame(frame: bytes::Bytes) -> bool {
    let Ok((header, api_key, body)) = protocol::decode_header(frame) else {
        return false;
    };
    handlers::decode_and_validate(api_key, header.request_api_version, body).is_ok()
}
