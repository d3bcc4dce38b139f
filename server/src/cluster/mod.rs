//! The cluster: the controller quorum (KRaft's model on openraft), this broker's
//! registration and lease, and the path by which metadata changes reach every shard.
//!
//! The controller-eligible nodes (`process.roles` containing `controller`, listed in
//! `controller.quorum.voters`) keep the metadata log and replicate it with Raft, and the
//! Raft leader is the active controller ([`controller::Controller`]). A single node runs
//! the same code with a quorum of one. A broker-only node (`process.roles=broker`) is no
//! Raft member: it long-polls the quorum for the committed image (as KRaft brokers fetch
//! the metadata log) and forwards its requests to the active controller. A
//! controller-only node serves no Kafka clients and registers no broker. Shards never talk to the quorum
//! directly: a metadata change (CreateTopics, AlterPartition, ...) is [`Cluster::submit`]ted
//! here, forwarded to the active controller, committed, applied by every node's state
//! machine ([`raft_store`]), published as the new image, and reconciled by each shard
//! against its partitions (the shards are told through [`NotifyShards`]; replication's
//! reconcile runs there). `submit` returns once this broker's shards have reconciled the
//! change, so a client that created a topic can use it on this broker.
//!
//! All of this runs on one "controller" thread with a small tokio runtime: it is control
//! traffic, rare next to the data path, and openraft is built on tokio.

pub mod controller;
pub mod network;
mod pre_vote;
mod quorum_join;
pub mod raft_store;

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::metadata::{MetadataImage, MetadataRecord};
use controller::{Answer, Controller, ControllerConfig, ControllerReply, ControllerRequest};
use quorum_join::QuorumJoin;

openraft::declare_raft_types!(
    /// The metadata quorum's types: entries carry metadata records.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        Node = QuorumNode,
);

/// A quorum member as the Raft membership records it: its controller address and the
/// directory id of its metadata log (`meta.properties`; KIP-853 names a voter by node id
/// and directory id). Serialized like openraft's `BasicNode` plus one optional field, so
/// metadata logs written before it still read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumNode {
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_id: Option<String>,
}

impl std::fmt::Display for QuorumNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

pub type Raft = openraft::Raft<TypeConfig>;

/// One controller decision: records committed together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub records: Vec<MetadataRecord>,
}

/// What applying an entry answers: its log index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
}

/// How long a metadata change may take before the client hears REQUEST_TIMED_OUT.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a voter other than the lowest-numbered waits before initializing a new quorum.
pub const INITIALIZE_FALLBACK: Duration = Duration::from_secs(5);
/// How often the active controller checks leases.
pub const CONTROLLER_TICK: Duration = Duration::from_millis(100);

/// A metadata change that failed, as a Kafka error.
#[derive(Debug, Clone)]
pub struct SubmitError {
    pub code: ResponseError,
    pub message: String,
}

/// The metadata log index each shard has reconciled its partitions to.
struct Reconciled {
    per_shard: Vec<AtomicU64>,
    min: tokio::sync::watch::Sender<u64>,
}

/// Tells every shard that a new image is published, so each reconciles its partitions
/// with it. The cluster knows nothing of shards: the composition root supplies this (it
/// sends each shard replication's reconcile task).
pub type NotifyShards = Arc<dyn Fn() + Send + Sync>;

/// Publishes applied images to the broker's shards.
struct BrokerPublisher {
    metadata: Arc<ArcSwap<MetadataImage>>,
    notify_shards: NotifyShards,
}

impl raft_store::Publisher for BrokerPublisher {
    fn publish(&self, image: Arc<MetadataImage>) {
        self.metadata.store(image);
        (self.notify_shards)();
    }
}

pub struct Cluster {
    node_id: i32,
    runtime: tokio::runtime::Handle,
    /// The Raft member and the controller, on a controller-quorum voter.
    voter: Option<Voter>,
    /// `controller.quorum.voters`: where a broker-only node finds the quorum.
    voters: Vec<(i32, String)>,
    /// `controller.quorum.bootstrap.servers`: where a node of a dynamic quorum finds it.
    bootstrap: Vec<String>,
    /// A broker-only node's last view of the quorum (from its metadata fetches).
    observed: std::sync::Mutex<Option<QuorumView>>,
    incarnation: Uuid,
    reconciled: Reconciled,
    /// Connections to other voters for forwarded requests, one per peer, each behind
    /// its own lock: a call stuck on an unreachable node holds up only calls to it.
    peers: std::sync::Mutex<HashMap<u64, Arc<tokio::sync::Mutex<network::Peer>>>>,
    shutting_down: AtomicBool,
    shutdown_ready: AtomicBool,
    /// A heartbeat sent while shutting down found no controller (no quorum).
    shutdown_unreachable: AtomicBool,
    /// The controller fences this broker (not registered or not caught up yet).
    fenced: AtomicBool,
    /// Whether the shards accept client connections yet (once unfenced, as Kafka
    /// brokers start serving clients only after catching up on the metadata).
    serving: tokio::sync::watch::Sender<bool>,
    metadata: Arc<ArcSwap<MetadataImage>>,
    /// Where the controller listener sends the Kafka clients it accepts (set once the
    /// shards exist; until then such a client is turned away).
    kafka_clients: Arc<std::sync::OnceLock<network::KafkaClients>>,
    /// The controller listener's TLS, when it is SSL.
    security: network::Security,
}

/// A controller-quorum voter's parts.
struct Voter {
    raft: Raft,
    controller: Arc<Controller>,
}

/// openraft's minimum election timeout; also how long a voter sticks to a leader it
/// heard from (pre-vote).
const ELECTION_TIMEOUT_MIN_MS: u64 = 1000;

/// How long a broker-only node's metadata fetch waits for a change.
const METADATA_FETCH_WAIT: Duration = Duration::from_millis(1000);

/// The controller thread's runtime, kept for the life of the process.
static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

impl Cluster {
    /// Opens the metadata store, starts the quorum member (and its controller listener),
    /// and replays the committed log. Each published image is stored in `metadata`, then
    /// `notify_shards` tells this broker's `shards` to reconcile with it.
    pub fn start(
        config: &BrokerConfig,
        metadata: Arc<ArcSwap<MetadataImage>>,
        shards: usize,
        notify_shards: NotifyShards,
    ) -> anyhow::Result<Arc<Cluster>> {
        use anyhow::Context;
        let runtime = match RUNTIME.get() {
            Some(rt) => rt,
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("controller")
                    .enable_all()
                    .build()
                    .context("starting the controller runtime")?;
                RUNTIME.get_or_init(|| rt)
            }
        };
        let publisher = BrokerPublisher {
            metadata: Arc::clone(&metadata),
            notify_shards,
        };
        let kafka_clients = Arc::new(std::sync::OnceLock::new());
        let security = network::ControllerTls::new(config)
            .map_err(|e| anyhow::anyhow!("controller listener: {e}"))?;
        let cluster = |voter: Option<Voter>| Cluster {
            security: security.clone(),
            kafka_clients: Arc::clone(&kafka_clients),
            node_id: config.node_id,
            runtime: runtime.handle().clone(),
            voter,
            voters: config.quorum_voters(),
            bootstrap: config.controller_quorum_bootstrap.clone(),
            observed: std::sync::Mutex::new(None),
            incarnation: Uuid::new_v4(),
            reconciled: Reconciled {
                per_shard: (0..shards).map(|_| AtomicU64::new(0)).collect(),
                min: tokio::sync::watch::channel(0).0,
            },
            peers: std::sync::Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            shutdown_ready: AtomicBool::new(false),
            shutdown_unreachable: AtomicBool::new(false),
            fenced: AtomicBool::new(true),
            serving: tokio::sync::watch::channel(false).0,
            metadata: Arc::clone(&metadata),
        };
        if !config.is_controller() {
            // A broker-only node: it follows the quorum's metadata by fetching it.
            let c = Arc::new(cluster(None));
            let follower = Arc::clone(&c);
            runtime.spawn(async move { follower.follow_metadata(publisher).await });
            return Ok(c);
        }
        let directory_id: Arc<str> = crate::storage::meta_properties::ensure(
            &config.data_dir,
            &config.cluster_id,
            config.node_id,
        )
        .context("meta.properties")?
        .into();
        for dir in &config.extra_log_dirs {
            crate::storage::meta_properties::ensure(dir, &config.cluster_id, config.node_id)
                .context("meta.properties")?;
        }
        let store = raft_store::MetaStore::open(
            config.data_dir.join("__cluster_metadata"),
            config.node_id,
            Box::new(publisher),
        )
        .context("loading cluster metadata")?;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: 150,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: 2000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .context("controller quorum config")?;
        let node_id = config.node_id as u64;
        let (log_store, state_machine) = openraft::storage::Adaptor::new(Arc::clone(&store));
        let raft = runtime
            .block_on(Raft::new(
                node_id,
                Arc::new(raft_config),
                network::Network(security.clone()),
                log_store,
                state_machine,
            ))
            .context("starting the controller quorum member")?;
        let voters = config.quorum_voters();
        let controller_config = ControllerConfig {
            node_id: config.node_id,
            shards,
            session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
            unclean_default: config.unclean_leader_election,
            max_broker_partitions: config.max_broker_partitions,
            offsets_replication_factor: config.offsets_topic_replication_factor,
            combined: config.is_broker(),
            leader_rebalance: config.auto_leader_rebalance.then(|| {
                (
                    Duration::from_secs(config.leader_imbalance_check_interval_secs),
                    config.leader_imbalance_per_broker_percentage,
                )
            }),
            log_config_check: {
                let c = config.clone();
                Arc::new(move |overrides| c.log_config(overrides).map(|_| ()))
            },
        };
        let controller = Arc::new(Controller::new(
            controller_config,
            raft.clone(),
            Arc::clone(&store),
        ));
        // Elections wait for a won pre-vote (see pre_vote).
        raft.runtime_config().elect(false);
        let pre_vote = pre_vote::PreVote::new(
            Arc::clone(&store),
            Duration::from_millis(ELECTION_TIMEOUT_MIN_MS),
        );
        runtime.spawn(pre_vote::watch(
            raft.clone(),
            config.node_id as u64,
            Arc::clone(&pre_vote),
            security.clone(),
        ));
        if let Some(addr) = config.controller_listener {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("cannot listen on the controller listener {addr}"))?;
            runtime.spawn(network::serve(
                listener,
                raft.clone(),
                Arc::clone(&controller),
                Arc::clone(&directory_id),
                Arc::clone(&kafka_clients),
                security.clone(),
                pre_vote,
            ));
        }
        let members: BTreeMap<u64, QuorumNode> = voters
            .iter()
            .map(|(id, addr)| {
                let node = QuorumNode {
                    addr: addr.clone(),
                    directory_id: (*id == config.node_id).then(|| directory_id.to_string()),
                };
                (*id as u64, node)
            })
            .collect();
        if config.dynamic_quorum() {
            if !runtime.block_on(raft.is_initialized())? {
                let join = QuorumJoin {
                    node_id: config.node_id,
                    addr: config.controller_advertised().unwrap_or_default(),
                    directory_id: directory_id.to_string(),
                    bootstrap: config.controller_quorum_bootstrap.clone(),
                    auto_join: config.controller_quorum_auto_join,
                    security: security.clone(),
                };
                runtime.spawn(join.run(raft.clone()));
            }
        } else if !runtime.block_on(raft.is_initialized())? {
            // A new quorum: the lowest voter id writes the first membership; the others do
            // too if they have heard from nobody after a while (the lowest may be down).
            let first = voters.iter().map(|(id, _)| *id).min() == Some(config.node_id);
            let delay = if first {
                Duration::ZERO
            } else {
                INITIALIZE_FALLBACK
            };
            let r = raft.clone();
            runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                if matches!(r.is_initialized().await, Ok(false))
                    && let Err(e) = r.initialize(members).await
                {
                    tracing::debug!(error = %e, "quorum already initialized elsewhere");
                }
            });
        }
        // Replay what this node knows is committed before anything reads the image.
        let committed = store.committed_index();
        if committed > 0 {
            let replayed = runtime.block_on(
                raft.wait(Some(Duration::from_secs(30)))
                    .applied_index_at_least(Some(committed), "replay the committed metadata log"),
            );
            if let Err(e) = replayed {
                anyhow::bail!("replaying the metadata log: {e}");
            }
        }
        let cluster = Arc::new(cluster(Some(Voter {
            raft,
            controller: Arc::clone(&controller),
        })));
        if let Some(addr) = config.controller_advertised() {
            let c = Arc::clone(&cluster);
            let directory_id = directory_id.to_string();
            runtime.spawn(async move { c.update_own_endpoint(addr, directory_id).await });
        }
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(CONTROLLER_TICK).await;
                controller.tick().await;
            }
        });
        Ok(cluster)
    }

    /// A broker-only node's metadata follower: long-polls the quorum (its leader when
    /// known, else each voter in turn) for images past the one it has, and publishes them
    /// to the shards as a voter's state machine would.
    async fn follow_metadata(self: Arc<Self>, publisher: BrokerPublisher) {
        use raft_store::Publisher as _;
        let mut after = 0u64;
        let mut attempt = 0usize;
        let mut peers: HashMap<u64, network::Peer> = HashMap::new();
        loop {
            let target = self.leader_or_voter(attempt);
            // A dynamic quorum's broker knows only addresses until a controller answers.
            let (id, addr) = match target.and_then(|t| self.voter_addr(t).map(|a| (t, a))) {
                Some(t) => t,
                None if !self.bootstrap.is_empty() => {
                    let addr = &self.bootstrap[attempt % self.bootstrap.len()];
                    (
                        u64::MAX - (attempt % self.bootstrap.len()) as u64,
                        addr.clone(),
                    )
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    attempt += 1;
                    continue;
                }
            };
            let peer = peers
                .entry(id)
                .or_insert_with(|| network::Peer::new(addr, &self.security));
            let rpc = network::Rpc::FetchMetadata {
                after,
                wait_ms: METADATA_FETCH_WAIT.as_millis() as u64,
            };
            match peer
                .call(&rpc, METADATA_FETCH_WAIT + Duration::from_secs(5))
                .await
            {
                Ok(network::RpcReply::Metadata { image, quorum }) => {
                    let known = quorum.leader >= 0;
                    *self.observed.lock().unwrap_or_else(|e| e.into_inner()) = Some(quorum);
                    if let Some(image) = image.filter(|i| i.offset > after) {
                        after = image.offset;
                        publisher.publish(Arc::new(*image));
                    }
                    if !known {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Ok(_) | Err(_) => {
                    tracing::debug!(voter = id, "metadata fetch failed; trying another voter");
                    if let Some(q) = self
                        .observed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                    {
                        q.leader = -1;
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// A broker-only node's next try: the leader it knows, else the voters in turn (one
    /// that does not lead names the leader).
    fn leader_or_voter(&self, attempt: usize) -> Option<u64> {
        self.current_leader().or_else(|| {
            if self.voters.is_empty() {
                // A dynamic quorum: the voters last heard of.
                let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
                let voters = &observed.as_ref()?.voters;
                let id = voters.get(attempt % voters.len().max(1))?;
                return u64::try_from(*id).ok();
            }
            let (id, _) = self.voters.get(attempt % self.voters.len().max(1))?;
            Some(*id as u64)
        })
    }

    /// The quorum leader (active controller) as this node knows it.
    fn current_leader(&self) -> Option<u64> {
        match &self.voter {
            Some(v) => v.raft.metrics().borrow().current_leader,
            None => self
                .observed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|q| u64::try_from(q.leader).ok()),
        }
    }

    /// A voter's controller-listener address.
    fn voter_addr(&self, id: u64) -> Option<String> {
        match &self.voter {
            Some(v) => v
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone()),
            None => self
                .voters
                .iter()
                .find(|(v, _)| *v as u64 == id)
                .map(|(_, a)| a.clone())
                .or_else(|| {
                    let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
                    let id = i32::try_from(id).ok()?;
                    observed.as_ref()?.addresses.get(&id).cloned()
                }),
        }
    }

    /// Starts registering and heartbeating (after the shards run).
    pub fn start_heartbeats(self: &Arc<Self>, config: &BrokerConfig) {
        let c = Arc::clone(self);
        let Some(inter_broker) = config.inter_broker_listener() else {
            tracing::error!("a broker without listeners cannot register");
            return;
        };
        let register = ControllerRequest::RegisterBroker {
            id: config.node_id,
            incarnation: self.incarnation,
            host: inter_broker.advertised.0.clone(),
            port: inter_broker.advertised.1,
            endpoints: config
                .listeners
                .iter()
                .map(|l| crate::metadata::Endpoint {
                    name: l.name.clone(),
                    host: l.advertised.0.clone(),
                    port: l.advertised.1,
                })
                .collect(),
            rack: config.broker_rack.clone(),
        };
        let interval = Duration::from_millis(config.broker_heartbeat_interval_ms.max(10));
        self.runtime
            .spawn(async move { c.heartbeat_loop(register, interval).await });
    }

    async fn heartbeat_loop(self: Arc<Self>, register: ControllerRequest, interval: Duration) {
        let mut registered = false;
        loop {
            let shutting_down = self.shutting_down.load(Ordering::Relaxed);
            if !registered {
                match self
                    .submit_inner(register.clone(), Duration::from_secs(2))
                    .await
                {
                    Ok(_) => registered = true,
                    Err(e) => tracing::debug!(error = %e.message, "broker registration pending"),
                }
                if registered {
                    continue;
                }
            } else {
                let hb = ControllerRequest::Heartbeat {
                    id: self.node_id,
                    incarnation: self.incarnation,
                    applied: self.applied(),
                    shutting_down,
                };
                match self.submit_inner(hb, Duration::from_secs(2)).await {
                    Ok((
                        _,
                        Answer::Heartbeat {
                            registered: r,
                            fenced,
                            shutdown_ready,
                        },
                    )) => {
                        registered = r;
                        self.fenced.store(fenced, Ordering::Relaxed);
                        if shutdown_ready {
                            self.shutdown_ready.store(true, Ordering::Relaxed);
                        }
                        if !fenced && !shutting_down {
                            // Caught up and serving: heartbeat at the configured pace.
                        } else {
                            tokio::time::sleep(interval.min(Duration::from_millis(100))).await;
                            continue;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e.message, "broker heartbeat failed");
                        if shutting_down {
                            self.shutdown_unreachable.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Waits until the broker may serve clients.
    /// Creates the initial SASL user (`ringmq.sasl.initial.user`) with SCRAM-SHA-256 and
    /// SCRAM-SHA-512 credentials once this broker serves, unless the cluster has it
    /// already (a changed password stays changed). Retries until the quorum takes it.
    pub fn ensure_initial_user(self: &Arc<Self>, user: String, password: String, max_users: usize) {
        use crate::security::{sasl::Mechanism, scram};
        let c = Arc::clone(self);
        self.runtime.spawn(async move {
            c.wait_serving().await;
            if c.metadata.load().users.contains_key(&user) {
                return;
            }
            let upserts: Vec<_> = Mechanism::SCRAM
                .iter()
                .map(|m| {
                    let cred = scram::credential_for_password(*m, &password, scram::MIN_ITERATIONS);
                    (user.clone(), m.name().to_owned(), cred)
                })
                .collect();
            loop {
                let req = ControllerRequest::AlterScramCredentials {
                    upserts: upserts.clone(),
                    deletions: Vec::new(),
                    max_users,
                    protected: Some(user.clone()),
                    only_if_absent: true,
                };
                match c.submit_inner(req, SUBMIT_TIMEOUT).await {
                    Ok(_) => {
                        tracing::info!(%user, "initial SASL user present");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e.message, "initial SASL user pending");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }

    pub async fn wait_serving(&self) {
        let mut rx = self.serving.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether this broker is ready for clients: unfenced and caught up on the
    /// metadata (and, as a quorum of one, holding `__consumer_offsets`).
    fn ready_for_clients(&self, single: bool) -> bool {
        let image = self.metadata.load();
        !self.is_fenced()
            && self.applied() >= image.offset
            && (!single || image.topic(crate::metadata::OFFSETS_TOPIC).is_some())
    }

    /// Opens the doors once ready: a quorum of one waits here (at most `timeout`), as
    /// the single-node broker always started ready; a cluster member opens them in the
    /// background when the controller unfences it.
    pub fn serve_when_ready(self: &Arc<Self>, single: bool, timeout: Duration) {
        if single {
            self.block_until(timeout, || self.ready_for_clients(true));
            self.serving.send_replace(true);
            return;
        }
        let c = Arc::clone(self);
        self.runtime.spawn(async move {
            while !c.ready_for_clients(false) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tracing::info!("unfenced and caught up: serving clients");
            c.serving.send_replace(true);
        });
    }

    /// Once serving (caught up on the metadata), removes the partition directories under
    /// `roots` this broker holds no replica for ([`crate::storage::stray_replicas`]).
    pub fn remove_stray_replicas(self: &Arc<Self>, roots: Vec<std::path::PathBuf>) {
        let c = Arc::clone(self);
        self.runtime.spawn(async move {
            c.wait_serving().await;
            let me = c.node_id;
            let metadata = Arc::clone(&c.metadata);
            let removed = tokio::task::spawn_blocking(move || {
                let strays = crate::storage::stray_replicas::find(&roots, || metadata.load_full(), me);
                let mut removed = 0;
                for dir in &strays {
                    tracing::warn!(dir = %dir.display(), "removing a stray replica: this broker holds no replica of it (its topic was deleted or it moved while the broker was down)");
                    match crate::storage::log_deleter::delete(dir) {
                        Ok(()) => removed += 1,
                        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "removing a stray replica failed"),
                    }
                }
                removed
            })
            .await;
            if let Ok(n) = removed
                && n > 0
            {
                tracing::info!(removed = n, "stray replicas removed");
            }
        });
    }

    /// The metadata index every shard of this broker has reconciled.
    pub fn applied(&self) -> u64 {
        *self.reconciled.min.borrow()
    }

    /// A shard reports it reconciled its partitions with the image at `index`.
    pub fn mark_reconciled(&self, shard: usize, index: u64) {
        if let Some(s) = self.reconciled.per_shard.get(shard) {
            s.fetch_max(index, Ordering::Relaxed);
        }
        let min = self
            .reconciled
            .per_shard
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .min()
            .unwrap_or(index);
        self.reconciled.min.send_if_modified(|v| {
            let grew = min > *v;
            *v = (*v).max(min);
            grew
        });
    }

    /// Hands the Kafka clients the controller listener accepts (`--bootstrap-controller`)
    /// to `serve` from now on.
    pub fn serve_kafka_clients(&self, serve: network::KafkaClients) {
        let _ = self.kafka_clients.set(serve);
    }

    /// Whether the controller currently fences this broker.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// This node's view of the quorum.
    pub fn quorum(&self) -> QuorumView {
        match &self.voter {
            Some(v) => quorum_view(&v.raft),
            None => self
                .observed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| QuorumView {
                    leader: -1,
                    term: 0,
                    high_watermark: 0,
                    last_index: 0,
                    voters: self.voters.iter().map(|(id, _)| *id).collect(),
                    observers: Vec::new(),
                    progress: BTreeMap::new(),
                    addresses: self.voters.iter().cloned().collect(),
                    directory_ids: BTreeMap::new(),
                }),
        }
    }

    /// The active controller's node id, if known.
    pub fn controller_id(&self) -> Option<i32> {
        self.current_leader().map(|l| l as i32)
    }

    /// The controller id clients are told (Metadata, DescribeCluster): the active
    /// controller when it is a live broker, else this broker, which forwards what a
    /// client sends its controller (KIP-590: clients cannot reach a controller-only node,
    /// and a client told -1 during an election stalls its admin requests).
    pub fn client_controller_id(&self, image: &MetadataImage) -> i32 {
        match self.controller_id() {
            Some(id) if image.is_live(id) => id,
            _ => self.node_id,
        }
    }

    /// Commits a metadata change through the active controller and waits until this
    /// broker's shards have reconciled it.
    pub async fn submit(
        self: &Arc<Self>,
        req: ControllerRequest,
    ) -> Result<(u64, Answer), SubmitError> {
        self.submit_waiting(req, SUBMIT_TIMEOUT).await
    }

    /// [`Self::submit`], waiting at most `apply_wait` for this broker's shards once the
    /// change is committed. Committed is done: a change is never reported failed because
    /// the shards are still applying it (a topic of many partitions being created);
    /// clients retry what they find not ready, as they do with Kafka, whose controller
    /// answers at the commit.
    pub async fn submit_waiting(
        self: &Arc<Self>,
        req: ControllerRequest,
        apply_wait: Duration,
    ) -> Result<(u64, Answer), SubmitError> {
        let c = Arc::clone(self);
        let job = self.runtime.spawn(async move {
            let (index, answer) = c.submit_inner(req, SUBMIT_TIMEOUT).await?;
            if let Err(e) = c.wait_reconciled(index, apply_wait).await {
                tracing::info!(index, reason = %e.message, "answering a committed metadata change before this broker applied it");
            }
            Ok((index, answer))
        });
        job.await.unwrap_or_else(|e| {
            Err(SubmitError {
                code: ResponseError::UnknownServerError,
                message: format!("controller task failed: {e}"),
            })
        })
    }

    /// A voter that starts with another controller address than the quorum's membership
    /// holds for it has it updated (Kafka's controllers send UpdateRaftVoter for this):
    /// until then the others would keep calling the old one.
    async fn update_own_endpoint(self: Arc<Self>, addr: String, directory_id: String) {
        let Some(voter) = &self.voter else { return };
        let me = self.node_id as u64;
        loop {
            let known = {
                let m = voter.raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                let is_voter = membership.voter_ids().any(|v| v == me);
                membership.get_node(&me).map(|n| (is_voter, n.addr.clone()))
            };
            match known {
                // Not a member yet: a joining node gives its address when it joins.
                None => {}
                // An observer is not called by the others; a voter at its address is done.
                Some((false, _)) => return,
                Some((true, known)) if known == addr => return,
                Some((true, known)) => {
                    let req = ControllerRequest::UpdateVoter {
                        id: self.node_id,
                        directory_id: Some(directory_id.clone()),
                        addr: addr.clone(),
                    };
                    match self.submit_inner(req, SUBMIT_TIMEOUT).await {
                        Ok(_) => {
                            tracing::info!(previous = %known, %addr, "this controller's endpoint is updated in the quorum");
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e.message, "updating this controller's endpoint failed; retrying");
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn wait_reconciled(&self, index: u64, timeout: Duration) -> Result<(), SubmitError> {
        let mut rx = self.reconciled.min.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|v| *v >= index)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(SubmitError {
                code: ResponseError::RequestTimedOut,
                message: format!("metadata change {index} was not applied here in time"),
            }),
        }
    }

    async fn submit_inner(
        &self,
        req: ControllerRequest,
        timeout: Duration,
    ) -> Result<(u64, Answer), SubmitError> {
        let deadline = Instant::now() + timeout;
        let mut attempt = 0usize;
        loop {
            // A broker-only node that knows no leader asks each voter in turn; one that
            // is not the leader names it.
            let leader = match self.voter {
                Some(_) => self.current_leader(),
                None => self.leader_or_voter(attempt),
            };
            attempt += 1;
            let reply = match (leader, &self.voter) {
                (Some(l), Some(v)) if l == self.node_id as u64 => {
                    v.controller.handle_local(req.clone()).await
                }
                (Some(l), _) => self.forward(l, &req, deadline).await,
                (None, _) => ControllerReply::NotController { leader: None },
            };
            if let (ControllerReply::NotController { leader: Some(l) }, None) =
                (&reply, &self.voter)
            {
                let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(q) = observed.as_mut() {
                    q.leader = *l as i32;
                }
            }
            match reply {
                ControllerReply::Done { index, answer } => return Ok((index, answer)),
                ControllerReply::Error { code, message } => {
                    return Err(SubmitError {
                        code: ResponseError::try_from_code(code)
                            .unwrap_or(ResponseError::UnknownServerError),
                        message,
                    });
                }
                ControllerReply::NotController { .. } if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ControllerReply::NotController { .. } => {
                    return Err(SubmitError {
                        code: ResponseError::RequestTimedOut,
                        message: "no active controller (is a quorum of the controllers up?)".into(),
                    });
                }
            }
        }
    }

    async fn forward(
        &self,
        leader: u64,
        req: &ControllerRequest,
        deadline: Instant,
    ) -> ControllerReply {
        let Some(addr) = self.voter_addr(leader) else {
            return ControllerReply::NotController { leader: None };
        };
        let peer = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(peers.entry(leader).or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(network::Peer::new(
                    addr,
                    &self.security,
                )))
            }))
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let Ok(mut peer) = tokio::time::timeout(left, peer.lock()).await else {
            return ControllerReply::NotController { leader: None };
        };
        // Calls queued behind one to a node that stopped answering: the quorum may have
        // moved on meanwhile.
        if self.current_leader().is_some_and(|l| l != leader) {
            return ControllerReply::NotController { leader: None };
        }
        match peer
            .call(&network::Rpc::Controller(req.clone()), left)
            .await
        {
            Ok(network::RpcReply::Controller(r)) => r,
            Ok(_) => ControllerReply::NotController { leader: None },
            Err(e) => {
                tracing::debug!(leader, error = %e, "forwarding to the controller failed");
                ControllerReply::NotController { leader: None }
            }
        }
    }

    /// Controlled shutdown: asks the controller to move this broker's leaderships away
    /// and waits (at most `timeout`) until it says the broker may stop.
    /// Call it from a thread outside every runtime (the signal handler's).
    /// Gives up early when no controller answers (the quorum is gone: nobody could take
    /// the leaderships anyway).
    pub fn controlled_shutdown(&self, timeout: Duration) -> bool {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.block_until(timeout, || {
            self.shutdown_ready.load(Ordering::Relaxed)
                || self.shutdown_unreachable.load(Ordering::Relaxed)
        });
        self.shutdown_ready.load(Ordering::Relaxed)
    }

    /// Blocks the calling (non-runtime) thread until `done()` or `timeout`; whether done.
    pub fn block_until(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        self.runtime.block_on(async {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if done() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            done()
        })
    }
}

/// The metadata quorum as DescribeQuorum reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuorumView {
    pub leader: i32,
    pub term: u64,
    pub high_watermark: u64,
    pub last_index: u64,
    pub voters: Vec<i32>,
    /// Controllers that receive the log without a vote (Raft learners; KIP-853's
    /// observers waiting for `add-controller`).
    #[serde(default)]
    pub observers: Vec<i32>,
    /// The leader's view of each member's replicated log index (on the leader only).
    pub progress: BTreeMap<i32, u64>,
    /// Each member's controller address.
    pub addresses: BTreeMap<i32, String>,
    /// Each member's metadata directory id, where known.
    #[serde(default)]
    pub directory_ids: BTreeMap<i32, String>,
}

/// This node's view of the quorum (complete on the leader).
pub fn quorum_view(raft: &Raft) -> QuorumView {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<i32> = membership.voter_ids().map(|v| v as i32).collect();
    let observers = membership.learner_ids().map(|v| v as i32).collect();
    let addresses = membership
        .nodes()
        .map(|(id, n)| (*id as i32, n.addr.clone()))
        .collect();
    let directory_ids = membership
        .nodes()
        .filter_map(|(id, n)| Some((*id as i32, n.directory_id.clone()?)))
        .collect();
    let progress = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(id, l)| (*id as i32, l.map_or(0, |l| l.index)))
                .collect()
        })
        .unwrap_or_default();
    QuorumView {
        leader: m.current_leader.map_or(-1, |l| l as i32),
        term: m.current_term,
        high_watermark: m.last_applied.map_or(0, |l| l.index),
        last_index: m.last_log_index.unwrap_or(0),
        voters,
        observers,
        progress,
        addresses,
        directory_ids,
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// `SnapshotData` of the type config.
pub type SnapshotData = Cursor<Vec<u8>>;
