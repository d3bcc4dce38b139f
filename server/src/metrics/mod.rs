//! The broker's counters: relaxed atomics every room adds to (connections, fetch bytes by
//! path, TLS and SASL outcomes, replication rounds, produce latency buckets). One
//! [`Metrics`] per broker, shared by every shard; `admin/` renders them as Prometheus text
//! on scrape. Adding is a relaxed `fetch_add`: the counters order nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shards add to (relaxed atomics; read by metrics and tests).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Fetch bytes sent from segment files without a user-space copy.
    pub fetch_zero_copy_bytes: AtomicU64,
    /// Fetch bytes that went through a user-space buffer.
    pub fetch_copied_bytes: AtomicU64,
    /// Fetch bytes read from segments and encrypted in user space (TLS listeners).
    pub fetch_tls_bytes: AtomicU64,
    /// Fetch bytes spliced to kernel-TLS sockets (the kernel encrypts them).
    pub fetch_ktls_bytes: AtomicU64,
    /// TLS connections moved to kernel TLS, and those that stayed in user space.
    pub ktls_connections: AtomicU64,
    pub tls_userspace_connections: AtomicU64,
    /// TLS handshakes completed and failed, and the microseconds the completed ones took.
    pub tls_handshakes: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub tls_handshake_us: AtomicU64,
    /// SASL authentications that succeeded and failed.
    pub sasl_authentications: AtomicU64,
    pub sasl_failures: AtomicU64,
    pub produce_requests: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub fetch_sessions_opened: AtomicU64,
    pub fetch_incremental_requests: AtomicU64,
    /// Produce requests written together with others of the same loop turn.
    pub produce_grouped_requests: AtomicU64,
    /// Transactions this broker coordinated to their end: committed, aborted (by the
    /// producer or the coordinator), and aborted because they ran past their timeout.
    pub transactions_committed: AtomicU64,
    pub transactions_aborted: AtomicU64,
    pub transactions_timed_out: AtomicU64,
    /// `__transaction_state` partitions loaded by a new coordinator, and the
    /// milliseconds the loads took in all.
    pub transaction_state_loads: AtomicU64,
    pub transaction_state_load_ms: AtomicU64,
    /// Connections closed on arrival by `max.connections` / `max.connections.per.ip`.
    pub connections_rejected: AtomicU64,
    /// Times a shard stopped reading requests at `queued.max.request.bytes`.
    pub request_queue_waits: AtomicU64,
    /// Follower fetch rounds, the microseconds they took, and the bytes they appended.
    pub replica_fetch_rounds: AtomicU64,
    pub replica_fetch_round_us: AtomicU64,
    pub replica_fetch_bytes: AtomicU64,
    /// Produce requests by handling time (read → response ready, durability included):
    /// bucket `i` counts those under 2^i µs, the last one the rest.
    pub produce_time_us: [AtomicU64; LATENCY_BUCKETS],
}

/// Power-of-two latency buckets: 1 µs .. 2^23 µs (8.4 s), then everything slower.
pub const LATENCY_BUCKETS: usize = 25;

impl Metrics {
    /// Counts one produce request that took `us` microseconds.
    pub fn record_produce_time(&self, us: u64) {
        let bucket = (64 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.produce_time_us[bucket].fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
