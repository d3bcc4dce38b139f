//! Broker configuration: Kafka's `server.properties` format and keys (`listeners`,
//! `advertised.listeners`, `log.dirs`, `num.partitions`, ...), ringmq-only keys under
//! `ringmq.` (`ringmq.shards`, `ringmq.cores`), and command-line overrides. With no file
//! and no flags the embedded defaults run a broker on 127.0.0.1:9092 with data in
//! `./ringmq-data` on every core.

pub mod kafka_broker_configs;
pub mod topic_config;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use ringmq_engine::LogConfig;

use crate::security::listener::{self, Listener, SecurityProtocol};

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: i32,
    /// `process.roles`: `broker`, `controller`, or both (combined mode, the default).
    pub process_roles: Vec<String>,
    /// `controller.quorum.voters` as (node id, host:port). Empty: a quorum of this node.
    pub controller_quorum_voters: Vec<(i32, String)>,
    /// `controller.quorum.bootstrap.servers` (KIP-853): where a node of a dynamic quorum
    /// finds the controllers; the voters themselves live in the metadata log.
    pub controller_quorum_bootstrap: Vec<String>,
    /// Kafka broker keys in the configuration that ringmq does not use (logged at start).
    pub ignored_kafka_keys: Vec<String>,
    /// `controller.quorum.auto.join.enable`: a controller that finds a running dynamic
    /// quorum it is not a voter of asks to become one (otherwise it stays an observer
    /// until `kafka-metadata-quorum add-controller`).
    pub controller_quorum_auto_join: bool,
    /// `controller.listener.names` (the listeners that carry the controller protocol).
    pub controller_listener_names: Vec<String>,
    /// `listener.security.protocol.map` (listener name -> protocol).
    pub listener_protocols: BTreeMap<String, String>,
    /// `listeners` as written: (name, host, port).
    pub listener_specs: Vec<(String, String, u16)>,
    /// The controller listener's address (from `listeners` and `controller.listener.names`).
    pub controller_listener: Option<SocketAddr>,
    /// The controller listener's security protocol and keys (`listener.security.protocol.map`
    /// and `listener.name.<controller>.*` for the first of `controller.listener.names`):
    /// how this node serves it, and how it reaches the controllers even when it does not
    /// listen on it (a broker-only node).
    pub controller_security: (SecurityProtocol, BTreeMap<String, String>),
    /// `broker.rack`.
    pub broker_rack: Option<String>,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.max.bytes` (per partition) and `replica.fetch.response.max.bytes`.
    pub replica_fetch_max_bytes: i32,
    /// `auto.leader.rebalance.enable`: the controller moves leadership back to preferred
    /// replicas when a broker's share led by others passes the percentage below.
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval_secs: u64,
    pub leader_imbalance_per_broker_percentage: u32,
    /// Fetchers per (shard, leader broker); a follower partition uses one of them.
    pub num_replica_fetchers: u32,
    pub replica_fetch_response_max_bytes: i32,
    /// `min.insync.replicas` (broker default; topics may override).
    pub min_insync_replicas: i32,
    /// `unclean.leader.election.enable` (broker default; topics may override).
    pub unclean_leader_election: bool,
    /// `offsets.topic.replication.factor`.
    pub offsets_topic_replication_factor: i16,
    /// `transaction.state.log.replication.factor`.
    pub transaction_state_log_replication_factor: i16,
    /// `transaction.state.log.min.isr`.
    pub transaction_state_log_min_isr: i32,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask.
    pub transaction_max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// `transactional.id.expiration.ms`.
    pub transactional_id_expiration_ms: i64,
    /// The Kafka listeners (`listeners` minus the controller's), resolved.
    pub listeners: Vec<Listener>,
    /// `advertised.listeners` as written: (name, host, port).
    pub advertised_specs: Vec<(String, String, u16)>,
    /// `inter.broker.listener.name`: the listener other brokers replicate through
    /// (default: the first PLAINTEXT listener, else the first).
    pub inter_broker_listener_name: Option<String>,
    /// Listener security keys (`ssl.*`, `sasl.*`, ...) without a listener prefix.
    pub security_props: BTreeMap<String, String>,
    /// `listener.name.<name>.<key>` security keys, as written.
    pub listener_prefixed: BTreeMap<String, String>,
    /// `ringmq.sasl.initial.user` / `ringmq.sasl.initial.user.password`: the SASL user
    /// created (SCRAM-SHA-256 and -512) when the cluster does not have it yet; it cannot
    /// be deleted (SPEC S3).
    pub initial_user: Option<String>,
    pub initial_user_password: Option<String>,
    /// `ringmq.sasl.max.users` (SPEC S3: 20).
    pub max_sasl_users: usize,
    /// `authorizer.class.name` (any value enables ACLs), `super.users`,
    /// `allow.everyone.if.no.acl.found` (SPEC S4).
    pub authorizer: crate::security::acl::Authorizer,
    /// `ringmq.ssl.reload.check.ms`: how often TLS listeners look for changed key and
    /// certificate files (0: only on `POST /v1/tls/reload`).
    pub ssl_reload_check_ms: u64,
    /// `log.dirs`: the first one (it also holds the cluster metadata).
    pub data_dir: PathBuf,
    /// `log.dirs` after the first: more directories for partitions (new replicas go to
    /// the one holding the fewest; AlterReplicaLogDirs moves them between them).
    pub extra_log_dirs: Vec<PathBuf>,
    /// `ringmq.shards`: shard threads (default: one per core in `cores`).
    pub shards: usize,
    /// `ringmq.cores`: cores to pin shards to, in order (default: all).
    pub cores: Vec<usize>,
    /// `ringmq.pin.cores`: pin each shard to its core (default true). Off lets the
    /// scheduler move shards, which helps when clients share the machine's cores.
    pub pin_cores: bool,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `default.replication.factor` (capped by the number of brokers).
    pub default_replication_factor: i16,
    /// `message.max.bytes`.
    pub message_max_bytes: u32,
    /// `log.retention.hours` as ms.
    pub log_retention_ms: i64,
    /// `log.segment.bytes`.
    pub log_segment_bytes: u32,
    /// `socket.request.max.bytes`: larger frames close the connection.
    pub socket_request_max_bytes: u32,
    /// `cluster.id` reported in Metadata.
    pub cluster_id: String,
    /// `log.retention.check.interval.ms`: how often retention and compaction run
    /// (Kafka's default is 5 minutes; ringmq's 30 s).
    pub retention_check_interval_ms: u64,
    /// `group.initial.rebalance.delay.ms` (Kafka's default 3000).
    pub group_initial_rebalance_delay_ms: u64,
    /// `offsets.retention.minutes` (20,160 = 14 days), or `ringmq.offsets.retention.ms`
    /// for finer control: committed offsets of groups without members expire after this.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms` (Kafka's default 600,000).
    pub offsets_retention_check_interval_ms: u64,
    /// `max.broker.partitions` (KIP-578's name): partitions this broker may host, internal
    /// topics excluded; topic creation beyond it fails with POLICY_VIOLATION (SPEC T7).
    /// Unlimited unless a core profile sets it.
    pub max_broker_partitions: Option<u32>,
    /// `max.connections`: client connections the broker holds at once; more are closed
    /// as they arrive (SPEC S5).
    pub max_connections: usize,
    /// `max.connections.per.ip` (SPEC S5 default 1000).
    pub max_connections_per_ip: usize,
    /// `max.connections.per.ip.overrides` (`host:count,ip:count`), resolved.
    pub max_connections_per_ip_overrides: std::collections::HashMap<std::net::IpAddr, usize>,
    /// `connections.max.idle.ms` (SPEC S5, Kafka's default 600,000): a connection that
    /// sends nothing for this long is closed.
    pub connections_max_idle_ms: u64,
    /// `queued.max.request.bytes`: request bytes read but not yet answered, per broker
    /// (split over the shards); past it a shard stops reading requests until responses
    /// go out. -1 (the default) is no limit. Core profiles set 1/8 of the memory.
    pub queued_max_request_bytes: i64,
    /// Disk-profile settings: defaults for every log.
    pub append_method: ringmq_engine::config::AppendMethod,
    pub writeback_bytes: u64,
    pub group_commit_window_us: u64,
    /// `ringmq.read.ahead.bytes`: on fetch, ask the kernel to read this far beyond the
    /// range sent (posix_fadvise WILLNEED); 0 leaves read-ahead to the kernel.
    pub read_ahead_bytes: u64,
    /// `ringmq.cache.retain.bytes`: drop-behind; written-back data further than this
    /// behind each log's writeback mark leaves the page cache. -1 (the default) leaves
    /// the page cache to the kernel.
    pub cache_retain_bytes: i64,
    /// `ringmq.io.depth`: io_uring submission queue entries per shard.
    pub io_depth: u32,
    /// `ringmq.disk.write.mbps`: caps appended bytes per second (broker-wide, split over
    /// shards) to emulate a slower disk class; 0 is no cap.
    pub disk_write_mbps: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let cores: Vec<usize> =
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        BrokerConfig {
            node_id: 1,
            process_roles: vec!["broker".into(), "controller".into()],
            controller_quorum_voters: Vec::new(),
            controller_quorum_bootstrap: Vec::new(),
            ignored_kafka_keys: Vec::new(),
            controller_quorum_auto_join: false,
            controller_listener_names: vec!["CONTROLLER".into()],
            listener_protocols: default_protocol_map(),
            listener_specs: vec![("PLAINTEXT".into(), "127.0.0.1".into(), 9092)],
            controller_listener: None,
            controller_security: (SecurityProtocol::Plaintext, BTreeMap::new()),
            broker_rack: None,
            broker_heartbeat_interval_ms: 2000,
            broker_session_timeout_ms: 9000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1024 * 1024,
            // Kafka's default is 1 (a thread each); here a fetcher is a task on the
            // shard, and one round trip bounds each fetcher's rate (benches/cluster).
            num_replica_fetchers: 4,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_secs: 300,
            leader_imbalance_per_broker_percentage: 10,
            replica_fetch_response_max_bytes: 10 * 1024 * 1024,
            min_insync_replicas: 1,
            unclean_leader_election: true,
            offsets_topic_replication_factor: 3,
            transaction_state_log_replication_factor: 3,
            transaction_state_log_min_isr: 2,
            transaction_max_timeout_ms: 900_000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            transactional_id_expiration_ms: 604_800_000,
            listeners: vec![Listener {
                name: "PLAINTEXT".into(),
                protocol: SecurityProtocol::Plaintext,
                bind: SocketAddr::from(([127, 0, 0, 1], 9092)),
                advertised: ("127.0.0.1".into(), 9092),
                props: BTreeMap::new(),
            }],
            advertised_specs: Vec::new(),
            inter_broker_listener_name: None,
            security_props: BTreeMap::new(),
            listener_prefixed: BTreeMap::new(),
            initial_user: None,
            initial_user_password: None,
            max_sasl_users: 20,
            ssl_reload_check_ms: 10_000,
            authorizer: Default::default(),
            data_dir: PathBuf::from("./ringmq-data"),
            extra_log_dirs: Vec::new(),
            shards: cores.len(),
            cores,
            pin_cores: true,
            auto_create_topics: true,
            num_partitions: 3,
            default_replication_factor: 3,
            message_max_bytes: ringmq_engine::config::DEFAULT_MAX_MESSAGE_BYTES,
            log_retention_ms: ringmq_engine::config::DEFAULT_RETENTION_MS,
            log_segment_bytes: ringmq_engine::config::DEFAULT_SEGMENT_BYTES,
            socket_request_max_bytes: 100 * 1024 * 1024,
            cluster_id: "ringmq-cluster".into(),
            retention_check_interval_ms: 30_000,
            group_initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 20_160 * 60_000,
            offsets_retention_check_interval_ms: 600_000,
            max_broker_partitions: None,
            max_connections: i32::MAX as usize,
            max_connections_per_ip: 1000,
            max_connections_per_ip_overrides: Default::default(),
            connections_max_idle_ms: 600_000,
            queued_max_request_bytes: -1,
            append_method: Default::default(),
            writeback_bytes: LogConfig::default().writeback_bytes,
            group_commit_window_us: 0,
            read_ahead_bytes: 0,
            cache_retain_bytes: -1,
            io_depth: 1024,
            disk_write_mbps: 0,
        }
    }
}

/// Kafka's default `listener.security.protocol.map`.
fn default_protocol_map() -> BTreeMap<String, String> {
    ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
        .into_iter()
        .map(|p| (p.to_owned(), p.to_owned()))
        .chain([("CONTROLLER".to_owned(), "PLAINTEXT".to_owned())])
        .collect()
}

/// What to advertise for a listener bound to `addr` when `advertised.listeners` does not
/// name it: its address, or 127.0.0.1 for a wildcard bind.
pub fn advertise_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        "127.0.0.1".into()
    } else {
        addr.ip().to_string()
    }
}

/// `[NAME://]host:port` -> (NAME, host, port); the name defaults to PLAINTEXT.
pub fn parse_listener(s: &str) -> Result<(String, String, u16), String> {
    let s = s.trim();
    let (name, rest) = match s.split_once("://") {
        Some((name, rest)) => (name.to_owned(), rest),
        None => ("PLAINTEXT".to_owned(), s),
    };
    let (host, port) = parse_host_port(rest)?;
    Ok((name, host, port))
}

/// `[NAME://]host:port` -> (host, port).
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let s = match s.split_once("://") {
        Some((_, rest)) => rest,
        None => s,
    };
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{s:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((
        if host.is_empty() {
            "0.0.0.0".into()
        } else {
            host.to_owned()
        },
        port,
    ))
}

pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))
}

/// Parses a core list like `0,2-3`.
pub fn parse_cores(s: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad core list {s:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cores.is_empty() {
        return Err(format!("empty core list {s:?}"));
    }
    Ok(cores)
}

/// Reads a `server.properties` file (`key=value`, `#` comments).
pub fn read_properties(text: &str) -> Result<BTreeMap<String, String>, String> {
    // Java's format (backslash-continued lines, escapes, `:` or `=` or a blank between key
    // and value), as Kafka reads server.properties; values are trimmed.
    let props = java_properties::read(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(props
        .into_iter()
        .map(|(k, v)| (k, v.trim().to_owned()))
        .collect())
}

impl BrokerConfig {
    /// Applies properties; unknown keys are an error (a typo must not silently default).
    pub fn apply_properties(&mut self, props: &BTreeMap<String, String>) -> Result<(), String> {
        for (k, v) in props {
            let bad = |what: &str| format!("{k}={v}: {what}");
            match k.as_str() {
                "node.id" | "broker.id" => {
                    self.node_id = v.parse().map_err(|_| bad("not an integer"))?
                }
                "listeners" => {
                    self.listener_specs = v
                        .split(',')
                        .filter(|l| !l.trim().is_empty())
                        .map(parse_listener)
                        .collect::<Result<_, _>>()?;
                }
                "advertised.listeners" => {
                    self.advertised_specs = v
                        .split(',')
                        .filter(|l| !l.trim().is_empty())
                        .map(parse_listener)
                        .collect::<Result<_, _>>()?;
                }
                "process.roles" => {
                    self.process_roles = v.split(',').map(|r| r.trim().to_owned()).collect();
                    if self.process_roles.is_empty()
                        || self
                            .process_roles
                            .iter()
                            .any(|r| r != "broker" && r != "controller")
                    {
                        return Err(bad("roles are broker and/or controller"));
                    }
                }
                "controller.quorum.voters" => {
                    self.controller_quorum_voters = v
                        .split(',')
                        .filter(|x| !x.trim().is_empty())
                        .map(|x| {
                            let (id, addr) = x
                                .trim()
                                .split_once('@')
                                .ok_or_else(|| bad("voters are id@host:port"))?;
                            let id = id.parse().map_err(|_| bad("voter id is not an integer"))?;
                            let (h, p) = parse_host_port(addr)?;
                            Ok((id, format!("{h}:{p}")))
                        })
                        .collect::<Result<_, String>>()?;
                }
                "controller.quorum.bootstrap.servers" => {
                    self.controller_quorum_bootstrap = v
                        .split(',')
                        .filter(|x| !x.trim().is_empty())
                        .map(|x| {
                            let (h, p) = parse_host_port(x.trim())?;
                            Ok(format!("{h}:{p}"))
                        })
                        .collect::<Result<_, String>>()?;
                }
                "controller.quorum.auto.join.enable" => {
                    self.controller_quorum_auto_join =
                        v.parse().map_err(|_| bad("not true/false"))?
                }
                "controller.listener.names" => {
                    self.controller_listener_names =
                        v.split(',').map(|n| n.trim().to_owned()).collect();
                }
                "listener.security.protocol.map" => {
                    for pair in v.split(',').filter(|x| !x.trim().is_empty()) {
                        let (name, proto) = pair
                            .trim()
                            .split_once(':')
                            .ok_or_else(|| bad("entries are NAME:PROTOCOL"))?;
                        self.listener_protocols
                            .insert(name.to_owned(), proto.to_owned());
                    }
                }
                "inter.broker.listener.name" => {
                    self.inter_broker_listener_name = Some(v.trim().to_owned())
                }
                "ringmq.sasl.initial.user" => {
                    self.initial_user = Some(v.trim().to_owned()).filter(|u| !u.is_empty())
                }
                "ringmq.sasl.initial.user.password" => self.initial_user_password = Some(v.clone()),
                "authorizer.class.name" => self.authorizer.enabled = !v.trim().is_empty(),
                "super.users" => {
                    self.authorizer.super_users = v
                        .split(';')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "allow.everyone.if.no.acl.found" => {
                    self.authorizer.allow_if_no_acl = v.parse().map_err(|_| bad("true or false"))?
                }
                "ringmq.open.resources" => {
                    use crate::security::acl::resource;
                    self.authorizer.open_resources = v
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| match t.to_ascii_lowercase().as_str() {
                            "topic" => Ok(resource::TOPIC),
                            "group" => Ok(resource::GROUP),
                            "transactional-id" | "transactional_id" => {
                                Ok(resource::TRANSACTIONAL_ID)
                            }
                            _ => Err(bad("a list of topic, group, transactional-id")),
                        })
                        .collect::<Result<_, _>>()?
                }
                "ringmq.ssl.reload.check.ms" => {
                    self.ssl_reload_check_ms = v.parse().map_err(|_| bad("not a duration in ms"))?
                }
                "ringmq.sasl.max.users" => {
                    self.max_sasl_users = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("at least 1"))?
                }
                "security.inter.broker.protocol" => {
                    // Kafka's older form: the listener named as the protocol.
                    let p = SecurityProtocol::parse(v).ok_or_else(|| bad("not a protocol"))?;
                    self.inter_broker_listener_name = Some(p.name().to_owned());
                }
                k if listener::is_security_key(k) => {
                    self.security_props.insert(k.to_owned(), v.clone());
                }
                k if listener::split_listener_key(k).is_some_and(|(_, key)| {
                    listener::is_security_key(key) || key == "max.connections"
                }) =>
                {
                    self.listener_prefixed.insert(k.to_owned(), v.clone());
                }
                "controller.quorum.election.timeout.ms" | "controller.quorum.fetch.timeout.ms" => {}
                "auto.leader.rebalance.enable" => {
                    self.auto_leader_rebalance = v.parse().map_err(|_| bad("true or false"))?
                }
                "leader.imbalance.check.interval.seconds" => {
                    self.leader_imbalance_check_interval_secs = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("at least 1"))?
                }
                "leader.imbalance.per.broker.percentage" => {
                    self.leader_imbalance_per_broker_percentage = v
                        .parse()
                        .ok()
                        .filter(|n| *n <= 100)
                        .ok_or_else(|| bad("in 0..100"))?
                }
                "num.replica.fetchers" => {
                    self.num_replica_fetchers = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| bad("must be in 1..64"))?
                }
                "broker.rack" => self.broker_rack = Some(v.clone()),
                "broker.heartbeat.interval.ms" => {
                    self.broker_heartbeat_interval_ms =
                        v.parse().map_err(|_| bad("not an integer"))?
                }
                "broker.session.timeout.ms" => {
                    self.broker_session_timeout_ms = v.parse().map_err(|_| bad("not an integer"))?
                }
                "replica.lag.time.max.ms" => {
                    self.replica_lag_time_max_ms = v.parse().map_err(|_| bad("not an integer"))?
                }
                "replica.fetch.wait.max.ms" => {
                    self.replica_fetch_wait_max_ms = v.parse().map_err(|_| bad("not an integer"))?
                }
                "replica.fetch.max.bytes" => {
                    self.replica_fetch_max_bytes = v.parse().map_err(|_| bad("not an integer"))?
                }
                "replica.fetch.response.max.bytes" => {
                    self.replica_fetch_response_max_bytes =
                        v.parse().map_err(|_| bad("not an integer"))?
                }
                "min.insync.replicas" => {
                    self.min_insync_replicas = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=3).contains(n))
                        .ok_or_else(|| bad("must be in 1..3"))?
                }
                "unclean.leader.election.enable" => {
                    self.unclean_leader_election =
                        v.parse().map_err(|_| bad("not true or false"))?
                }
                "offsets.topic.replication.factor" => {
                    self.offsets_topic_replication_factor = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("must be at least 1"))?
                }
                "transaction.state.log.replication.factor" => {
                    self.transaction_state_log_replication_factor = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("must be at least 1"))?
                }
                "transaction.state.log.min.isr" => {
                    self.transaction_state_log_min_isr = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("must be at least 1"))?
                }
                "transaction.max.timeout.ms" => {
                    self.transaction_max_timeout_ms = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("must be at least 1"))?
                }
                "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                    self.transaction_abort_timed_out_transaction_cleanup_interval_ms = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("must be at least 1"))?
                }
                "transactional.id.expiration.ms" => {
                    self.transactional_id_expiration_ms = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("must be at least 1"))?
                }
                "log.dirs" | "log.dir" => {
                    let mut dirs = v.split(',').map(str::trim).filter(|d| !d.is_empty());
                    self.data_dir = PathBuf::from(dirs.next().unwrap_or_default());
                    self.extra_log_dirs = dirs.map(PathBuf::from).collect();
                }
                "ringmq.shards" => self.shards = v.parse().map_err(|_| bad("not an integer"))?,
                "ringmq.cores" => self.cores = parse_cores(v)?,
                "ringmq.pin.cores" => {
                    self.pin_cores = v.parse().map_err(|_| bad("not true/false"))?
                }
                "auto.create.topics.enable" => {
                    self.auto_create_topics = v.parse().map_err(|_| bad("not true/false"))?
                }
                "num.partitions" => {
                    self.num_partitions = v.parse().map_err(|_| bad("not an integer"))?
                }
                "default.replication.factor" => {
                    self.default_replication_factor =
                        v.parse().map_err(|_| bad("not an integer"))?
                }
                "message.max.bytes" => {
                    self.message_max_bytes = v.parse().map_err(|_| bad("not an integer"))?
                }
                "log.retention.hours" => {
                    let h: i64 = v.parse().map_err(|_| bad("not an integer"))?;
                    self.log_retention_ms = h * 3_600_000;
                }
                "log.retention.ms" => {
                    self.log_retention_ms = v.parse().map_err(|_| bad("not an integer"))?
                }
                "log.segment.bytes" => {
                    self.log_segment_bytes = v.parse().map_err(|_| bad("not an integer"))?
                }
                "socket.request.max.bytes" => {
                    self.socket_request_max_bytes = v.parse().map_err(|_| bad("not an integer"))?
                }
                "cluster.id" => self.cluster_id = v.clone(),
                "offsets.retention.minutes" => {
                    let m: i64 = v.parse().map_err(|_| bad("not an integer"))?;
                    self.offsets_retention_ms = m * 60_000;
                }
                "ringmq.offsets.retention.ms" => {
                    self.offsets_retention_ms = v.parse().map_err(|_| bad("not an integer"))?
                }
                "offsets.retention.check.interval.ms" => {
                    self.offsets_retention_check_interval_ms =
                        v.parse().map_err(|_| bad("not an integer"))?
                }
                "group.initial.rebalance.delay.ms" => {
                    self.group_initial_rebalance_delay_ms =
                        v.parse().map_err(|_| bad("not an integer"))?
                }
                "log.retention.check.interval.ms" => {
                    self.retention_check_interval_ms =
                        v.parse().map_err(|_| bad("not an integer"))?
                }
                "max.broker.partitions" => {
                    let n: i64 = v.parse().map_err(|_| bad("not an integer"))?;
                    self.max_broker_partitions = u32::try_from(n).ok();
                }
                "max.connections" => {
                    self.max_connections = v.parse().map_err(|_| bad("not a count"))?
                }
                "max.connections.per.ip.overrides" => {
                    self.max_connections_per_ip_overrides.clear();
                    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                        let (host, n) = entry
                            .rsplit_once(':')
                            .ok_or_else(|| bad("entries are host:count"))?;
                        let n: usize = n.trim().parse().map_err(|_| bad("a count per host"))?;
                        let ips = (host.trim(), 0u16)
                            .to_socket_addrs()
                            .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?;
                        for a in ips {
                            self.max_connections_per_ip_overrides.insert(a.ip(), n);
                        }
                    }
                }
                "max.connections.per.ip" => {
                    let n: usize = v.parse().map_err(|_| bad("not a count"))?;
                    if !(1..=20_000).contains(&n) {
                        return Err(bad("must be in 1..20000"));
                    }
                    self.max_connections_per_ip = n;
                }
                "connections.max.idle.ms" => {
                    let ms: u64 = v.parse().map_err(|_| bad("not a duration in ms"))?;
                    if ms == 0 {
                        return Err(bad("must be positive"));
                    }
                    self.connections_max_idle_ms = ms;
                }
                "queued.max.request.bytes" => {
                    self.queued_max_request_bytes = v.parse().map_err(|_| bad("not an integer"))?
                }
                "ringmq.append.method" => {
                    self.append_method = ringmq_engine::config::AppendMethod::parse(v)
                        .ok_or_else(|| bad("expected pwritev, io_uring or direct"))?
                }
                "ringmq.writeback.bytes" => {
                    self.writeback_bytes = v.parse().map_err(|_| bad("not a byte count"))?
                }
                "ringmq.group.commit.window.us" => {
                    self.group_commit_window_us = v.parse().map_err(|_| bad("not an integer"))?
                }
                "ringmq.cache.retain.bytes" => {
                    let n: i64 = v.parse().map_err(|_| bad("not a byte count or -1"))?;
                    if n < -1 {
                        return Err(bad("must be -1 (off) or a byte count"));
                    }
                    self.cache_retain_bytes = n;
                }
                "ringmq.read.ahead.bytes" => {
                    self.read_ahead_bytes = v.parse().map_err(|_| bad("not a byte count"))?
                }
                "ringmq.io.depth" => {
                    let n: u32 = v.parse().map_err(|_| bad("not an integer"))?;
                    if !(8..=32_768).contains(&n) || !n.is_power_of_two() {
                        return Err(bad("must be a power of two in 8..32768"));
                    }
                    self.io_depth = n;
                }
                "ringmq.disk.write.mbps" => {
                    self.disk_write_mbps = v.parse().map_err(|_| bad("not an integer"))?
                }
                // A Kafka broker key ringmq has no use for (thread pools, transaction and
                // share-group logs, ...): a server.properties written for Kafka still
                // starts, and the broker names what it ignores.
                _ if crate::config::kafka_broker_configs::KAFKA_BROKER_CONFIGS
                    .binary_search_by(|c| c.name.cmp(k))
                    .is_ok() =>
                {
                    self.ignored_kafka_keys.push(k.clone());
                }
                _ => return Err(format!("unknown configuration key {k}")),
            }
        }
        Ok(())
    }

    /// Resolves `listener_specs` into the Kafka listeners (protocol, advertised address,
    /// security settings) and the controller listener.
    pub fn resolve_listeners(&mut self) -> Result<(), String> {
        let mut kafka: Vec<Listener> = Vec::new();
        self.controller_listener = None;
        for (name, host, port) in &self.listener_specs {
            let proto = self.listener_protocols.get(name).ok_or_else(|| {
                format!("listener {name} has no listener.security.protocol.map entry")
            })?;
            let protocol = SecurityProtocol::parse(proto)
                .ok_or_else(|| format!("listener {name}: unknown security protocol {proto}"))?;
            let bind = resolve(host, *port)?;
            if self.controller_listener_names.contains(name) {
                self.controller_listener = Some(bind);
                continue;
            }
            if kafka.iter().any(|l| l.name == *name) {
                return Err(format!("listener {name} is listed twice"));
            }
            let advertised = self
                .advertised_specs
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, h, p)| (h.clone(), *p))
                .unwrap_or_else(|| (advertise_host(bind), bind.port()));
            kafka.push(Listener {
                name: name.clone(),
                protocol,
                bind,
                advertised,
                props: listener::listener_props(
                    name,
                    &self.security_props,
                    &self.listener_prefixed,
                ),
            });
        }
        if let Some((n, _, _)) = self.advertised_specs.iter().find(|(n, _, _)| {
            !kafka.iter().any(|l| l.name == *n) && !self.controller_listener_names.contains(n)
        }) {
            return Err(format!(
                "advertised.listeners names {n}, which is not one of the listeners"
            ));
        }
        if !kafka.is_empty() {
            self.listeners = kafka;
        }
        if let Some(name) = self.controller_listener_names.first() {
            let protocol = match self.listener_protocols.get(name) {
                Some(p) => SecurityProtocol::parse(p)
                    .ok_or_else(|| format!("listener {name}: unknown security protocol {p}"))?,
                None => SecurityProtocol::Plaintext,
            };
            if protocol.sasl() {
                return Err(format!(
                    "controller listener {name} is {}: the controller quorum speaks PLAINTEXT \
                     or SSL (with ssl.client.auth=required for mutual TLS)",
                    protocol.name()
                ));
            }
            let props =
                listener::listener_props(name, &self.security_props, &self.listener_prefixed);
            self.controller_security = (protocol, props);
        }
        if let Some(n) = &self.inter_broker_listener_name
            && !self.listeners.iter().any(|l| l.name == *n)
        {
            return Err(format!(
                "inter.broker.listener.name={n} is not one of the listeners"
            ));
        }
        Ok(())
    }

    /// The listener other brokers replicate through: `inter.broker.listener.name`, else
    /// the first PLAINTEXT listener, else the first.
    pub fn inter_broker_listener(&self) -> Option<&Listener> {
        match &self.inter_broker_listener_name {
            Some(n) => self.listeners.iter().find(|l| l.name == *n),
            None => self
                .listeners
                .iter()
                .find(|l| l.protocol == SecurityProtocol::Plaintext)
                .or_else(|| self.listeners.first()),
        }
    }

    /// Replaces the Kafka listeners with PLAINTEXT ones on `addrs` (the `--listen` flag),
    /// keeping the controller listener.
    pub fn listen_plaintext_on(&mut self, addrs: &[SocketAddr]) {
        self.listeners = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Listener {
                name: if i == 0 {
                    "PLAINTEXT".into()
                } else {
                    format!("PLAINTEXT_{}", i + 1)
                },
                protocol: SecurityProtocol::Plaintext,
                bind: *a,
                advertised: (advertise_host(*a), a.port()),
                props: BTreeMap::new(),
            })
            .collect();
        self.inter_broker_listener_name = None;
    }

    /// Whether the quorum is dynamic (KIP-853): found through
    /// `controller.quorum.bootstrap.servers`, its voters kept in the metadata log.
    /// `controller.quorum.voters` wins when both are set.
    pub fn dynamic_quorum(&self) -> bool {
        self.controller_quorum_voters.is_empty() && !self.controller_quorum_bootstrap.is_empty()
    }

    /// The controller quorum's static voters as (node id, controller address); a single
    /// node with neither voters nor bootstrap servers configured is a quorum of itself.
    /// Empty for a dynamic quorum.
    pub fn quorum_voters(&self) -> Vec<(i32, String)> {
        if self.dynamic_quorum() {
            Vec::new()
        } else if self.controller_quorum_voters.is_empty() {
            let addr = self
                .controller_listener
                .map(|a| a.to_string())
                .unwrap_or_default();
            vec![(self.node_id, addr)]
        } else {
            self.controller_quorum_voters.clone()
        }
    }

    /// The controller listener's address as other nodes reach it: its
    /// `advertised.listeners` entry, else the bound address.
    pub fn controller_advertised(&self) -> Option<String> {
        let bind = self.controller_listener?;
        let advertised = self
            .advertised_specs
            .iter()
            .find(|(n, _, _)| self.controller_listener_names.contains(n))
            .map(|(_, h, p)| format!("{h}:{p}"));
        Some(advertised.unwrap_or_else(|| format!("{}:{}", advertise_host(bind), bind.port())))
    }

    /// Whether this node is a broker (serves Kafka clients and holds replicas).
    pub fn is_broker(&self) -> bool {
        self.process_roles.iter().any(|r| r == "broker")
    }

    /// Whether this node is one of several (a quorum of more than one voter, a dynamic
    /// quorum, or a broker-only node following controllers).
    pub fn multi_node(&self) -> bool {
        self.quorum_voters().len() > 1 || self.dynamic_quorum() || !self.is_controller()
    }

    /// Whether this node is a controller-quorum voter.
    pub fn is_controller(&self) -> bool {
        self.process_roles.iter().any(|r| r == "controller")
    }

    /// Checks what the broker cannot run with.
    pub fn validate(&mut self) -> Result<(), String> {
        let in_voters = self
            .controller_quorum_voters
            .iter()
            .any(|(id, _)| *id == self.node_id);
        if !self.is_controller() {
            // A broker-only node follows the metadata of a quorum it is not part of.
            if self.controller_quorum_voters.is_empty()
                && self.controller_quorum_bootstrap.is_empty()
            {
                return Err("process.roles=broker needs controller.quorum.voters or \
                     controller.quorum.bootstrap.servers (the controllers it follows)"
                    .into());
            }
            if in_voters {
                return Err(format!(
                    "node.id={} is in controller.quorum.voters but process.roles has no \
                     controller",
                    self.node_id
                ));
            }
        } else if self.dynamic_quorum() {
            if self.controller_listener.is_none() {
                return Err(format!(
                    "controller.quorum.bootstrap.servers is set but no listener is named in \
                     controller.listener.names={}",
                    self.controller_listener_names.join(",")
                ));
            }
        } else if !self.controller_quorum_voters.is_empty() {
            if !in_voters {
                return Err(format!(
                    "node.id={} is not in controller.quorum.voters",
                    self.node_id
                ));
            }
            if self.controller_listener.is_none() {
                return Err(format!(
                    "controller.quorum.voters is set but no listener is named in \
                     controller.listener.names={}",
                    self.controller_listener_names.join(",")
                ));
            }
        }
        if self.initial_user.is_some() != self.initial_user_password.is_some() {
            return Err(
                "ringmq.sasl.initial.user and ringmq.sasl.initial.user.password go together".into(),
            );
        }
        if !self.is_broker() {
            // A controller-only node serves no Kafka clients.
            if self.controller_listener.is_none() {
                return Err(
                    "process.roles=controller needs a CONTROLLER listener (listeners and \
                     controller.listener.names)"
                        .into(),
                );
            }
            self.listeners.clear();
        } else if self.listeners.is_empty() {
            return Err("no listeners".into());
        }
        if self.shards == 0 {
            return Err("ringmq.shards must be at least 1".into());
        }
        if !(1..=1000).contains(&self.num_partitions) {
            return Err("num.partitions must be in 1..1000".into());
        }
        if self.message_max_bytes == 0 || self.message_max_bytes > self.log_segment_bytes {
            return Err("message.max.bytes must be in 1..=log.segment.bytes".into());
        }
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(c) = self.cores.iter().find(|c| **c >= available) {
            return Err(format!(
                "core {c} does not exist (this machine has {available})"
            ));
        }
        Ok(())
    }

    /// The engine config for a new log of a topic with `overrides` (Kafka topic keys).
    /// Every log directory, the first (`data_dir`) first.
    pub fn log_dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.data_dir.clone())
            .chain(self.extra_log_dirs.iter().cloned())
            .collect()
    }

    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> Result<LogConfig, String> {
        let mut c = LogConfig {
            segment_bytes: self.log_segment_bytes,
            retention_ms: self.log_retention_ms,
            max_message_bytes: self.message_max_bytes,
            append_method: self.append_method,
            writeback_bytes: self.writeback_bytes,
            group_commit_window_us: self.group_commit_window_us,
            cache_retain_bytes: u64::try_from(self.cache_retain_bytes).ok(),
            ..LogConfig::default()
        };
        for (k, v) in overrides {
            crate::config::topic_config::apply(&mut c, k, v)?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> BTreeMap<String, String> {
        read_properties(text).unwrap()
    }

    #[test]
    fn properties_are_read_as_java_reads_them() {
        let p = parsed(
            "listeners=PLAINTEXT://:9092,\\\n    CONTROLLER://:9093\nlog.dirs : /a\n! a comment\n\
             key\\ with\\ space = v\\u0041 \n",
        );
        assert_eq!(p["listeners"], "PLAINTEXT://:9092,CONTROLLER://:9093");
        assert_eq!(p["log.dirs"], "/a");
        assert_eq!(p["key with space"], "vA");
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn properties_listeners_and_cores_parse() {
        let props = parsed(
            "# c\nlisteners=PLAINTEXT://127.0.0.1:19092\nadvertised.listeners=PLAINTEXT://broker.example:9094\nringmq.cores=0\nnum.partitions = 5\n",
        );
        let mut c = BrokerConfig::default();
        c.apply_properties(&props).unwrap();
        c.resolve_listeners().unwrap();
        assert_eq!(c.listeners[0].bind, "127.0.0.1:19092".parse().unwrap());
        assert_eq!(c.listeners[0].advertised, ("broker.example".into(), 9094));
        assert_eq!(c.num_partitions, 5);
        assert_eq!(parse_cores("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cores("3-1").is_err());
        let mut odd = BrokerConfig::default();
        odd.apply_properties(&parsed(
            "listeners=ODD://127.0.0.1:1\nlistener.security.protocol.map=ODD:KERBEROS\n",
        ))
        .unwrap();
        assert!(
            odd.resolve_listeners()
                .unwrap_err()
                .contains("unknown security protocol")
        );
        let mut bad = BTreeMap::new();
        bad.insert("num.partitons".to_string(), "3".to_string());
        assert!(c.apply_properties(&bad).unwrap_err().contains("unknown"));
    }

    #[test]
    fn a_kraft_server_properties_configures_the_quorum() {
        let props = parsed(
            "process.roles=broker,controller\nnode.id=2\n\
             controller.quorum.voters=1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293\n\
             listeners=PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\nbroker.rack=az1\n",
        );
        let mut c = BrokerConfig::default();
        c.apply_properties(&props).unwrap();
        c.resolve_listeners().unwrap();
        c.validate().unwrap();
        assert_eq!(c.listeners[0].bind, "127.0.0.1:9192".parse().unwrap());
        assert_eq!(
            c.controller_listener,
            Some("127.0.0.1:9193".parse().unwrap())
        );
        assert_eq!(c.quorum_voters().len(), 3);
        assert_eq!(c.broker_rack.as_deref(), Some("az1"));
        let mut lone = BrokerConfig::default();
        lone.apply_properties(&parsed(
            "node.id=9\ncontroller.quorum.voters=1@127.0.0.1:9093\n\
             listeners=PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193\n",
        ))
        .unwrap();
        lone.resolve_listeners().unwrap();
        assert!(
            lone.validate()
                .unwrap_err()
                .contains("not in controller.quorum.voters")
        );
    }

    #[test]
    fn kafka_4_quickstart_server_properties_is_a_dynamic_quorum() {
        // config/server.properties as Apache Kafka 4.x ships it (the keys that matter).
        let props = parsed(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.bootstrap.servers=localhost:9093\n\
             listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n\
             inter.broker.listener.name=PLAINTEXT\n\
             advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,\
             SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL\n\
             log.dirs=/tmp/kraft-combined-logs\nnum.partitions=1\n\
             offsets.topic.replication.factor=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             num.network.threads=3\nnum.recovery.threads.per.data.dir=1\n",
        );
        let mut c = BrokerConfig::default();
        c.apply_properties(&props).unwrap();
        c.resolve_listeners().unwrap();
        c.validate().unwrap();
        assert!(c.dynamic_quorum());
        assert!(c.quorum_voters().is_empty());
        assert_eq!(
            c.ignored_kafka_keys,
            [
                "num.network.threads",
                "num.recovery.threads.per.data.dir",
                "share.coordinator.state.topic.replication.factor"
            ]
        );
        let mut typo = BrokerConfig::default();
        let err = typo
            .apply_properties(&parsed("num.partitons=3\n"))
            .unwrap_err();
        assert!(
            err.contains("unknown configuration key num.partitons"),
            "{err}"
        );
        assert_eq!(
            c.controller_quorum_bootstrap,
            vec!["localhost:9093".to_owned()]
        );
        assert_eq!(c.controller_advertised().as_deref(), Some("localhost:9093"));
        // Static voters win when both are given.
        let mut both = BrokerConfig::default();
        both.apply_properties(&parsed(
            "node.id=1\ncontroller.quorum.bootstrap.servers=localhost:9093\n\
             controller.quorum.voters=1@localhost:9093\n\
             listeners=PLAINTEXT://:9092,CONTROLLER://:9093\n",
        ))
        .unwrap();
        both.resolve_listeners().unwrap();
        both.validate().unwrap();
        assert!(!both.dynamic_quorum());
        assert_eq!(both.quorum_voters().len(), 1);
    }

    #[test]
    fn broker_only_and_controller_only_roles_are_checked_as_kraft_checks_them() {
        let load = |text: &str| {
            let mut c = BrokerConfig::default();
            c.apply_properties(&parsed(text)).unwrap();
            c.resolve_listeners().unwrap();
            c
        };
        let map = "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                   controller.listener.names=CONTROLLER\n";
        // A broker following three controllers.
        let mut broker = load(&format!(
            "process.roles=broker\nnode.id=4\n{map}\
             controller.quorum.voters=1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093\n\
             listeners=PLAINTEXT://127.0.0.1:9092\n"
        ));
        broker.validate().unwrap();
        assert!(broker.is_broker() && !broker.is_controller());
        // ... which may not be a voter, nor run without any.
        let mut voter = load(&format!(
            "process.roles=broker\nnode.id=1\n{map}\
             controller.quorum.voters=1@10.0.0.1:9093\nlisteners=PLAINTEXT://127.0.0.1:9092\n"
        ));
        assert!(voter.validate().unwrap_err().contains("has no controller"));
        let mut alone = load("process.roles=broker\nnode.id=4\n");
        assert!(
            alone
                .validate()
                .unwrap_err()
                .contains("needs controller.quorum.voters")
        );
        // A controller serves no Kafka clients.
        let mut controller = load(&format!(
            "process.roles=controller\nnode.id=1\n{map}\
             controller.quorum.voters=1@127.0.0.1:9093\nlisteners=CONTROLLER://127.0.0.1:9093\n"
        ));
        controller.validate().unwrap();
        assert!(controller.listeners.is_empty() && !controller.is_broker());
        let mut deaf = load("process.roles=controller\nnode.id=1\n");
        assert!(
            deaf.validate()
                .unwrap_err()
                .contains("needs a CONTROLLER listener")
        );
    }

    #[test]
    fn every_embedded_profile_applies() {
        for p in ringmq_tuning::core_profiles().unwrap() {
            let mut c = BrokerConfig::default();
            c.apply_properties(&p.broker).unwrap();
            assert_eq!(
                c.max_broker_partitions,
                Some(p.published.max_partitions_per_broker)
            );
            assert_eq!(
                c.max_connections,
                p.published.max_connections_per_broker as usize
            );
            assert_eq!(c.queued_max_request_bytes, (p.memory_gib << 30 >> 3) as i64);
        }
        for p in ringmq_tuning::disk_profiles().unwrap() {
            let mut c = BrokerConfig::default();
            c.apply_properties(&p.broker).unwrap();
            let log = c.log_config(&BTreeMap::new()).unwrap();
            assert_eq!(
                log.writeback_bytes.to_string(),
                p.broker["ringmq.writeback.bytes"]
            );
            let retain: i64 = p.broker["ringmq.cache.retain.bytes"].parse().unwrap();
            assert_eq!(log.cache_retain_bytes, u64::try_from(retain).ok());
        }
    }

    #[test]
    fn limit_keys_reject_bad_values() {
        let mut c = BrokerConfig::default();
        for (k, v) in [
            ("max.connections.per.ip", "0"),
            ("max.connections.per.ip", "20001"),
            ("ringmq.io.depth", "1000"),
            ("ringmq.append.method", "mmap"),
            ("max.connections", "-1"),
        ] {
            let props = BTreeMap::from([(k.to_owned(), v.to_owned())]);
            assert!(c.apply_properties(&props).is_err(), "{k}={v}");
        }
        let props = BTreeMap::from([("max.broker.partitions".to_owned(), "-1".to_owned())]);
        c.apply_properties(&props).unwrap();
        assert_eq!(c.max_broker_partitions, None);
    }
}
