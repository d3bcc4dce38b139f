//! The composition root: `start` checks the data directories, binds the listeners, starts
//! the cluster member and the shard threads, and wires the rooms together: what runs on
//! every shard (net's accept loops, replication's reconcile and ISR checks, the group
//! coordinator's timers), how the cluster publishes metadata to the shards, and how the
//! controller listener hands Kafka clients to them. Nothing below imports this file.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Barrier, Mutex};

use arc_swap::ArcSwap;
use futures_channel::mpsc;

use crate::cluster::{Cluster, NotifyShards};
use crate::config::BrokerConfig;
use crate::metadata::MetadataImage;
use crate::metrics::Metrics;
use crate::runtime::shard::{self, ShardServices};
use crate::runtime::{Broker, ConnectionCount, ShardInboxes};
use crate::security::peer_client::PeerSecurity;

/// Binds one SO_REUSEPORT socket per shard for `addr`, so the kernel spreads
/// connections over the shards.
///
/// Any process may join a SO_REUSEPORT group, so first the address is bound alone (no
/// SO_REUSEPORT): if another broker listens there, that fails with "address in use" as
/// Kafka's start does, instead of the two splitting the clients between them.
fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() != 0 {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    (0..count)
        .map(|_| {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.set_tcp_nodelay(true)?;
            s.bind(&addr.into())?;
            s.listen(1024)?;
            Ok(s.into())
        })
        .collect()
}

/// A running broker: its shard threads and bound addresses.
pub struct Running {
    pub broker: Arc<Broker>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    pub bound: Vec<SocketAddr>,
    /// The log directories' locks, held while the broker runs.
    pub dir_locks: Vec<std::fs::File>,
    /// A duplicate of every shard's listening socket, to stop listening at shutdown.
    pub listening: Vec<std::net::TcpListener>,
}

/// Opens the metadata, binds the listeners and starts the shards. Errors are the reasons
/// `ringmqd` stops with (unusable data dir, port in use, ...).
pub fn start(config: BrokerConfig) -> anyhow::Result<Running> {
    use anyhow::Context;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("data directory {} is not usable", config.data_dir.display()))?;
    let probe = config.data_dir.join(".write-probe");
    std::fs::write(&probe, b"ok").with_context(|| {
        format!(
            "data directory {} is not writable",
            config.data_dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    // Every directory is locked before anything in any of them is opened or swept.
    let mut dir_locks = Vec::new();
    for dir in config.log_dirs() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("log directory {} is not usable", dir.display()))?;
        dir_locks.push(crate::storage::log_dirs::lock(&dir).map_err(anyhow::Error::msg)?);
    }
    for dir in config.log_dirs() {
        crate::storage::log_deleter::sweep(&dir);
    }
    let shards = config.shards;
    let runtimes = config
        .listeners
        .iter()
        .map(|l| crate::security::ListenerRuntime::new(l.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)?;
    let mut listeners: Vec<Vec<crate::net::listener::BoundListener>> =
        (0..shards).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let mut listening = Vec::new();
    for runtime in &runtimes {
        let addr = runtime.listener.bind;
        let socks =
            bind_reuseport(addr, shards).with_context(|| format!("cannot listen on {addr}"))?;
        bound.push(socks[0].local_addr()?);
        for s in &socks {
            listening.push(s.try_clone()?);
        }
        for (i, s) in socks.into_iter().enumerate() {
            listeners[i].push((s, Arc::clone(runtime)));
        }
    }
    let mut receivers = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..shards {
        let (tx, rx) = mpsc::unbounded();
        inboxes.push(tx);
        receivers.push(rx);
    }
    let metadata = Arc::new(ArcSwap::from_pointee(MetadataImage::default()));
    let metrics = Arc::new(Metrics::default());
    let local = Arc::new(crate::storage::partition::LocalBroker {
        node_id: config.node_id,
        min_insync_replicas: config.min_insync_replicas,
        metadata: Arc::clone(&metadata),
        metrics: Arc::clone(&metrics),
    });
    let cluster = Cluster::start(
        &config,
        Arc::clone(&metadata),
        shards,
        notify_shards(ShardInboxes::new(inboxes.clone())),
    )?;
    let inter_broker = Arc::new(inter_broker_client(&config)?);
    let broker = Arc::new(Broker {
        metadata,
        cluster,
        producer_ids: Mutex::new(0..0),
        config,
        inboxes: ShardInboxes::new(inboxes),
        metrics,
        local,
        connections: Mutex::new(ConnectionCount {
            per_shard: vec![0; shards],
            ..ConnectionCount::default()
        }),
        next_connection_id: AtomicU64::new(0),
        quotas: Default::default(),
        listeners: runtimes,
        auth_failures: Default::default(),
        sasl_secret: crate::security::scram::random_bytes(32),
        inter_broker,
    });
    if let Some(runtime) = controller_listener_runtime(&broker.config) {
        let runtime = Arc::new(runtime);
        let weak = Arc::downgrade(&broker);
        broker.cluster.serve_kafka_clients(Box::new(move |socket, peer| {
            let Some(broker) = weak.upgrade() else { return };
            if let Err(reason) = crate::net::listener::adopt(&broker, Arc::clone(&runtime), socket, peer) {
                tracing::warn!(%peer, %reason, listener = %runtime.listener.name, "connection refused");
            }
        }));
    }
    let ready = Arc::new(Barrier::new(shards + 1));
    let mut threads = Vec::new();
    for (id, (inbox, socks)) in receivers.into_iter().zip(listeners).enumerate() {
        let broker = Arc::clone(&broker);
        let ready = Arc::clone(&ready);
        let core = broker
            .config
            .cores
            .get(id % broker.config.cores.len().max(1))
            .copied()
            .filter(|_| broker.config.pin_cores);
        let t = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || shard::run(id, core, broker, inbox, services(socks), ready))
            .context("spawning a shard thread")?;
        threads.push(t);
    }
    ready.wait();
    if broker.config.is_broker() {
        broker.cluster.start_heartbeats(&broker.config);
        // A quorum of one is registered, unfenced and holds __consumer_offsets before
        // it says ready, as the single-node broker always did.
        let single = broker.config.is_controller() && broker.config.quorum_voters().len() == 1;
        broker
            .cluster
            .serve_when_ready(single, std::time::Duration::from_secs(20));
        broker
            .cluster
            .remove_stray_replicas(broker.config.log_dirs());
        check_inter_broker_authorization(&broker);
        let c = &broker.config;
        if let (Some(user), Some(password)) = (&c.initial_user, &c.initial_user_password) {
            broker
                .cluster
                .ensure_initial_user(user.clone(), password.clone(), c.max_sasl_users);
        }
    }
    crate::security::tls::watch(
        broker.listeners.clone(),
        std::time::Duration::from_millis(broker.config.ssl_reload_check_ms),
    )
    .context("starting the TLS file watch")?;
    if let Some(why) = broker.config.authorizer.opens_the_cluster() {
        tracing::warn!("{why}");
    }
    if !broker.config.ignored_kafka_keys.is_empty() {
        tracing::warn!(
            keys = ?broker.config.ignored_kafka_keys,
            "Kafka broker settings ringmq does not use were ignored"
        );
    }
    tracing::info!(shards, listeners = ?bound, "ringmqd ready");
    Ok(Running {
        broker,
        threads,
        bound,
        dir_locks,
        listening,
    })
}

/// The controller listener as the shards serve the Kafka clients that reach it
/// (`--bootstrap-controller`), if this node is a controller.
/// How this broker connects to the others' inter-broker listener. A node that is part of
/// a cluster must be able to (it stops with the reason otherwise); a quorum of one has no
/// peers until a broker-only node joins, so it only says why it could not.
fn inter_broker_client(config: &BrokerConfig) -> anyhow::Result<PeerSecurity> {
    let Some(l) = config.inter_broker_listener() else {
        return Ok(PeerSecurity::plaintext("PLAINTEXT"));
    };
    let keys = crate::security::tls::Keys::of(l);
    match PeerSecurity::new(keys, l.protocol, "sasl.mechanism.inter.broker.protocol") {
        Ok(p) => Ok(p),
        Err(why) if config.multi_node() => {
            anyhow::bail!("inter-broker listener {}: {why}", l.name)
        }
        Err(why) => {
            tracing::debug!(listener = %l.name, %why, "no client side for the inter-broker listener");
            Ok(PeerSecurity::unusable(&l.name, why))
        }
    }
}

fn controller_listener_runtime(config: &BrokerConfig) -> Option<crate::security::ListenerRuntime> {
    let bind = config.controller_listener?;
    if config.controller_security.0 != crate::security::listener::SecurityProtocol::Plaintext {
        // Its TLS runs on the controller thread (see cluster::network).
        return None;
    }
    let name = config
        .listener_specs
        .iter()
        .map(|(n, _, _)| n)
        .find(|n| config.controller_listener_names.contains(n))?
        .clone();
    let advertised = config
        .controller_advertised()
        .and_then(|a| {
            let (host, port) = a.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .unwrap_or_else(|| (bind.ip().to_string(), bind.port()));
    Some(crate::security::ListenerRuntime::controller(
        name, bind, advertised,
    ))
}

/// Tells every shard to reconcile its partitions with the newest image (the cluster's
/// publisher calls it after each applied batch of metadata records).
fn notify_shards(inboxes: ShardInboxes) -> NotifyShards {
    Arc::new(move || inboxes.send_all(|| Box::new(crate::replication::reconcile::schedule)))
}

/// What runs on each shard: its partitions reconciled before it says ready, then the
/// accept loops of its listener sockets and the leaders' ISR checks.
fn services(listeners: Vec<crate::net::listener::BoundListener>) -> ShardServices {
    ShardServices {
        before_ready: Box::new(|ctx| {
            Box::pin(async move { crate::replication::reconcile::reconcile(&ctx).await })
        }),
        after_ready: Box::new(move |ctx| {
            for l in listeners {
                compio::runtime::spawn(crate::net::listener::accept_loop(Rc::clone(&ctx), l))
                    .detach();
            }
            compio::runtime::spawn(crate::transactions::driver::run(Rc::clone(&ctx))).detach();
            compio::runtime::spawn(crate::replication::isr_loop(ctx)).detach();
        }),
    }
}

/// With an authorizer, replica fetches need CLUSTER_ACTION for the principal brokers reach
/// each other with: say at start-up when it is missing, rather than let the followers fall
/// out of sync in silence.
fn check_inter_broker_authorization(broker: &Broker) {
    use crate::security::acl::{CLUSTER_NAME, op, resource};
    let c = &broker.config;
    let image = broker.image();
    let replicated = c.quorum_voters().len() > 1 || image.brokers.len() > 1;
    let host = c
        .inter_broker_listener()
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |l| l.bind.ip());
    if c.authorizer.enabled
        && replicated
        && !c.authorizer.authorize(
            &image.acls,
            &broker.inter_broker.principal,
            host,
            op::CLUSTER_ACTION,
            resource::CLUSTER,
            CLUSTER_NAME,
        )
    {
        tracing::error!(
            principal = %broker.inter_broker.principal,
            "the inter-broker principal lacks CLUSTER_ACTION on the cluster: other brokers' replica fetches will be refused (add it to super.users or grant it CLUSTER_ACTION)"
        );
    }
}
