//! Admin HTTP (control plane, low volume): its own small thread, plain blocking I/O.
//! It serves `GET /metrics` in Prometheus text format from the broker's counters, and
//! the first pieces of the REST API: `GET /v1/tasks` and `GET /v1/tasks/{id}`, the
//! cluster's background tasks as JSON, and `POST /v1/tls/reload` (TLS listeners load
//! their key, certificates and trust store again); the rest of the API and the console
//! arrive with their issue, port 9999 by default there. Started only when `--http
//! HOST:PORT` is given.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::runtime::Broker;

/// Largest request head read from an admin client.
pub const REQUEST_HEAD_MAX: usize = 8192;

pub fn start(addr: SocketAddr, broker: Arc<Broker>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("admin-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = serve(stream, &broker) {
                    tracing::debug!(error = %e, "admin http request failed");
                }
            }
        })?;
    Ok(bound)
}

fn serve(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader
        .by_ref()
        .take(REQUEST_HEAD_MAX as u64)
        .read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader
            .by_ref()
            .take(REQUEST_HEAD_MAX as u64)
            .read_line(&mut line)?
            == 0
            || line == "\r\n"
            || line == "\n"
        {
            break;
        }
    }
    let method = first.split_whitespace().next().unwrap_or("GET");
    let path = first.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/v1/tls/reload" if method == "POST" => {
            match crate::security::tls::reload_all(&broker.listeners) {
                Ok(n) => ("200 OK", format!("{{\"reloaded\":{n}}}\n")),
                Err(e) => (
                    "500 Internal Server Error",
                    format!("{}\n", serde_json::json!({ "error": e })),
                ),
            }
        }
        "/metrics" => ("200 OK", metrics_text(broker)),
        "/v1/tasks" => ("200 OK", tasks_json(broker, None)),
        p if p.starts_with("/v1/tasks/") => match p["/v1/tasks/".len()..].parse::<u64>() {
            Ok(id) if broker.image().tasks.contains_key(&id) => {
                ("200 OK", tasks_json(broker, Some(id)))
            }
            _ => (
                "404 Not Found",
                "{\"error\":\"no such task\"}\n".to_string(),
            ),
        },
        "/debug/panic" if std::env::var_os(TEST_FAULTS_ENV).is_some() => {
            inject_panic(broker);
            ("200 OK", "a task on shard 0 will panic\n".to_string())
        }
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let content_type = if path.starts_with("/v1/") {
        "application/json"
    } else {
        "text/plain; version=0.0.4"
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Background tasks (SPEC O6) as JSON: all of them, or the one with `id`; each with how
/// many of its partitions are still moving.
fn tasks_json(broker: &Broker, id: Option<u64>) -> String {
    let image = broker.image();
    let view = |t: &crate::metadata::tasks::Task| {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("moving".into(), t.moving(&image).into());
        }
        v
    };
    let value = match id {
        Some(id) => image.tasks.get(&id).map(view).unwrap_or_default(),
        None => serde_json::Value::Array(image.tasks.values().map(view).collect()),
    };
    format!("{value}\n")
}

/// Environment variable that enables fault injection endpoints (tests only): a real
/// broker cannot be made to panic on demand otherwise.
pub const TEST_FAULTS_ENV: &str = "RINGMQ_TEST_FAULTS";

/// Spawns a task on shard 0 that panics: the tests check that a panic in a broker task
/// is logged at ERROR, counted in `/metrics`, and fails the test that saw it.
fn inject_panic(broker: &Broker) {
    let _ = broker.inboxes.send(
        0,
        Box::new(|_ctx| {
            compio::runtime::spawn(async {
                #[allow(clippy::panic)]
                {
                    panic!("injected by {TEST_FAULTS_ENV} /debug/panic");
                }
            })
            .detach();
        }),
    );
}

fn metrics_text(broker: &Broker) -> String {
    let m = &broker.metrics;
    let image = broker.image();
    let partitions: usize = image.topics.values().map(|t| t.placement.len()).sum();
    let counters = [
        (
            "ringmq_fetch_zero_copy_bytes_total",
            "Fetch bytes sent from segment files without a user-space copy",
            m.fetch_zero_copy_bytes.load(Ordering::Relaxed),
        ),
        (
            "ringmq_fetch_copied_bytes_total",
            "Fetch bytes that went through a user-space buffer",
            m.fetch_copied_bytes.load(Ordering::Relaxed),
        ),
        (
            "ringmq_fetch_tls_bytes_total",
            "Fetch bytes read from segments and encrypted in user space (TLS listeners)",
            m.fetch_tls_bytes.load(Ordering::Relaxed),
        ),
        (
            "ringmq_fetch_ktls_bytes_total",
            "Fetch bytes spliced to kernel-TLS sockets (zero-copy, the kernel encrypts)",
            m.fetch_ktls_bytes.load(Ordering::Relaxed),
        ),
        (
            "ringmq_ktls_connections_total",
            "TLS connections moved to kernel TLS after the handshake",
            m.ktls_connections.load(Ordering::Relaxed),
        ),
        (
            "ringmq_tls_userspace_connections_total",
            "TLS connections encrypted in user space (no kernel TLS, or its cipher)",
            m.tls_userspace_connections.load(Ordering::Relaxed),
        ),
        (
            "ringmq_tls_handshakes_total",
            "TLS handshakes completed",
            m.tls_handshakes.load(Ordering::Relaxed),
        ),
        (
            "ringmq_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.load(Ordering::Relaxed),
        ),
        (
            "ringmq_tls_handshake_microseconds_total",
            "Time the completed TLS handshakes took",
            m.tls_handshake_us.load(Ordering::Relaxed),
        ),
        (
            "ringmq_sasl_authentications_total",
            "SASL authentications (and re-authentications) that succeeded",
            m.sasl_authentications.load(Ordering::Relaxed),
        ),
        (
            "ringmq_sasl_failures_total",
            "SASL authentications that failed",
            m.sasl_failures.load(Ordering::Relaxed),
        ),
        (
            "ringmq_replica_fetch_rounds_total",
            "Fetch rounds of this broker's replica fetchers",
            m.replica_fetch_rounds.load(Ordering::Relaxed),
        ),
        (
            "ringmq_replica_fetch_round_microseconds_total",
            "Time spent in replica fetch rounds (request sent to records appended)",
            m.replica_fetch_round_us.load(Ordering::Relaxed),
        ),
        (
            "ringmq_replica_fetch_bytes_total",
            "Record bytes replicated from leaders and appended here",
            m.replica_fetch_bytes.load(Ordering::Relaxed),
        ),
        (
            "ringmq_produce_requests_total",
            "Produce requests",
            m.produce_requests.load(Ordering::Relaxed),
        ),
        (
            "ringmq_fetch_requests_total",
            "Fetch requests",
            m.fetch_requests.load(Ordering::Relaxed),
        ),
        (
            "ringmq_connections_accepted_total",
            "Client connections accepted",
            m.connections_accepted.load(Ordering::Relaxed),
        ),
    ];
    let counters = counters.into_iter().chain([
        (
            "ringmq_fetch_sessions_opened_total",
            "Fetch sessions opened (KIP-227)",
            m.fetch_sessions_opened.load(Ordering::Relaxed),
        ),
        (
            "ringmq_fetch_incremental_requests_total",
            "Incremental fetch requests (KIP-227)",
            m.fetch_incremental_requests.load(Ordering::Relaxed),
        ),
        (
            "ringmq_produce_grouped_requests_total",
            "Produce requests appended in one write together with others",
            m.produce_grouped_requests.load(Ordering::Relaxed),
        ),
        (
            "ringmq_transactions_committed_total",
            "Transactions this broker's coordinator committed",
            m.transactions_committed.load(Ordering::Relaxed),
        ),
        (
            "ringmq_transactions_aborted_total",
            "Transactions this broker's coordinator aborted (by the producer or a timeout)",
            m.transactions_aborted.load(Ordering::Relaxed),
        ),
        (
            "ringmq_transactions_timed_out_total",
            "Transactions aborted by the coordinator after their transaction.timeout.ms",
            m.transactions_timed_out.load(Ordering::Relaxed),
        ),
        (
            "ringmq_transaction_state_loads_total",
            "__transaction_state partitions loaded by this broker as their new coordinator",
            m.transaction_state_loads.load(Ordering::Relaxed),
        ),
        (
            "ringmq_transaction_state_load_ms_total",
            "Milliseconds spent loading __transaction_state partitions",
            m.transaction_state_load_ms.load(Ordering::Relaxed),
        ),
        (
            "ringmq_connections_rejected_total",
            "Connections closed on arrival by max.connections / max.connections.per.ip",
            m.connections_rejected.load(Ordering::Relaxed),
        ),
        (
            "ringmq_request_queue_waits_total",
            "Times a shard stopped reading requests at queued.max.request.bytes",
            m.request_queue_waits.load(Ordering::Relaxed),
        ),
        (
            "ringmq_leader_throttled_bytes_total",
            "Bytes of leader-throttled replicas sent to followers (leader.replication.throttled.replicas)",
            broker.quotas.leader.throttled_bytes.load(Ordering::Relaxed),
        ),
        (
            "ringmq_follower_throttled_bytes_total",
            "Bytes of follower-throttled replicas fetched here (follower.replication.throttled.replicas)",
            broker.quotas.follower.throttled_bytes.load(Ordering::Relaxed),
        ),
        (
            "ringmq_leader_throttle_held_back_total",
            "Follower fetches answered without records because leader.replication.throttled.rate was used up",
            broker.quotas.leader.held_back.load(Ordering::Relaxed),
        ),
        (
            "ringmq_follower_throttle_held_back_total",
            "Replicas left out of a fetch because follower.replication.throttled.rate was used up",
            broker.quotas.follower.held_back.load(Ordering::Relaxed),
        ),
        (
            "ringmq_panics_total",
            "Panics in any broker thread or task (each one is a bug, logged at ERROR)",
            crate::runtime::panic_hook::count(),
        ),
    ]);
    let mut out = String::new();
    for (name, help, value) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    let (open, per_shard) = broker
        .connections
        .lock()
        .map(|c| (c.per_shard.iter().sum::<usize>(), c.per_shard.clone()))
        .unwrap_or_default();
    gauge(
        &mut out,
        "current_topics",
        "Topics",
        &[("", image.topics.len() as u64)],
    );
    gauge(
        &mut out,
        "current_partitions",
        "Partitions",
        &[("", partitions as u64)],
    );
    gauge(
        &mut out,
        "current_connections",
        "Open client connections",
        &[("", open as u64)],
    );
    let me = broker.config.node_id;
    let led = image
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader == me);
    let (mut leading, mut under) = (0u64, 0u64);
    for p in led {
        leading += 1;
        if p.isr.len() < p.replicas.len() {
            under += 1;
        }
    }
    let offline = image
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.leader == crate::metadata::NO_LEADER)
        .count() as u64;
    let all = || image.topics.values().flat_map(|t| t.partitions.iter());
    let reassigning = all().filter(|p| p.reassigning()).count() as u64;
    let not_preferred = all()
        .filter(|p| p.replicas.first().is_some_and(|r| *r != p.leader))
        .count() as u64;
    let quorum = broker.cluster.quorum();
    gauge(
        &mut out,
        "ringmq_reassigning_partitions",
        "Partitions with a reassignment in progress (cluster-wide)",
        &[("", reassigning)],
    );
    let tasks = |state| image.tasks.values().filter(|t| t.state == state).count() as u64;
    use crate::metadata::tasks::TaskState;
    gauge(
        &mut out,
        "ringmq_tasks_running",
        "Background tasks (reassignments) in progress (cluster-wide)",
        &[("", tasks(TaskState::Running))],
    );
    gauge(
        &mut out,
        "ringmq_tasks_succeeded",
        "Background tasks finished successfully, among the last kept (cluster-wide)",
        &[("", tasks(TaskState::Succeeded))],
    );
    gauge(
        &mut out,
        "ringmq_tasks_cancelled",
        "Background tasks cancelled, among the last kept (cluster-wide)",
        &[("", tasks(TaskState::Cancelled))],
    );
    gauge(
        &mut out,
        "ringmq_preferred_leader_imbalance",
        "Partitions not led by their preferred replica (cluster-wide)",
        &[("", not_preferred)],
    );
    let rate = |q: &crate::quota::throttle::Quota| q.rate().unwrap_or(0);
    gauge(
        &mut out,
        "ringmq_leader_replication_throttled_rate",
        "leader.replication.throttled.rate in effect, bytes/s (0: none)",
        &[("", rate(&broker.quotas.leader))],
    );
    gauge(
        &mut out,
        "ringmq_follower_replication_throttled_rate",
        "follower.replication.throttled.rate in effect, bytes/s (0: none)",
        &[("", rate(&broker.quotas.follower))],
    );
    gauge(
        &mut out,
        "ringmq_leader_partitions",
        "Partitions this broker leads",
        &[("", leading)],
    );
    gauge(
        &mut out,
        "ringmq_under_replicated_partitions",
        "Partitions led here whose ISR is smaller than their replica set",
        &[("", under)],
    );
    gauge(
        &mut out,
        "ringmq_offline_partitions",
        "Partitions without a leader (cluster-wide)",
        &[("", offline)],
    );
    gauge(
        &mut out,
        "ringmq_active_controller",
        "1 on the active controller (the metadata quorum's leader)",
        &[("", u64::from(quorum.leader == me))],
    );
    gauge(
        &mut out,
        "ringmq_metadata_offset",
        "Metadata log index this broker has applied to all its shards",
        &[("", broker.cluster.applied())],
    );
    gauge(
        &mut out,
        "ringmq_fenced",
        "1 while the controller fences this broker",
        &[("", u64::from(broker.cluster.is_fenced()))],
    );
    let shards: Vec<(String, u64)> = per_shard
        .iter()
        .enumerate()
        .map(|(s, n)| (format!("{{shard=\"{s}\"}}"), *n as u64))
        .collect();
    let shards: Vec<(&str, u64)> = shards.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    gauge(
        &mut out,
        "ringmq_shard_connections",
        "Client connections each shard serves",
        &shards,
    );
    out.push_str("# HELP ringmq_produce_time_seconds Produce request handling time (read to response ready, durability included)\n# TYPE ringmq_produce_time_seconds histogram\n");
    let mut cumulative = 0u64;
    for (i, b) in m.produce_time_us.iter().enumerate() {
        cumulative += b.load(Ordering::Relaxed);
        let le = if i + 1 == m.produce_time_us.len() {
            "+Inf".to_owned()
        } else {
            format!("{}", (1u64 << i) as f64 / 1e6)
        };
        out.push_str(&format!(
            "ringmq_produce_time_seconds_bucket{{le=\"{le}\"}} {cumulative}\n"
        ));
    }
    out.push_str(&format!("ringmq_produce_time_seconds_count {cumulative}\n"));
    gauge(&mut out, "broker_alive", "Broker is serving", &[("", 1)]);
    out
}

/// Appends a gauge with one sample per `(labels, value)`; labels are `{k="v"}` or empty.
fn gauge(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
    for (labels, value) in samples {
        out.push_str(&format!("{name}{labels} {value}\n"));
    }
}
