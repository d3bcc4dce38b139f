//! `ringmq cluster ...`: a local cluster in one command (`start`: N brokers on 127.0.0.1,
//! each a controller-quorum voter, with their own ports and data directories; stopped
//! cleanly on Ctrl-C), `describe` (brokers, controller, partitions' replication health),
//! and growing or shrinking a cluster: `add-broker` and `drain` (reassignments through
//! `crate::reassign`), `remove-broker` (UnregisterBroker) — against any Kafka-compatible
//! cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster: N ringmqd processes on 127.0.0.1, combined broker and
    /// controller, replication factor up to N. Prints the bootstrap list; Ctrl-C stops it.
    Start {
        /// Brokers (and quorum voters) to run.
        #[arg(long, default_value_t = 3)]
        brokers: u16,
        /// Directory for each node's config, data and log (node1/, node2/, ...).
        #[arg(long, default_value = "./ringmq-cluster")]
        dir: PathBuf,
        /// First Kafka port; node N listens on BASE+N-1 and its controller on
        /// BASE+100+N-1.
        #[arg(long, default_value_t = 9092)]
        base_port: u16,
        /// Shards per broker (default: cores / brokers, at least 1).
        #[arg(long)]
        shards: Option<usize>,
        /// The ringmqd binary (default: next to this one, else on PATH).
        #[arg(long)]
        ringmqd: Option<PathBuf>,
        /// Extra broker config KEY=VALUE for every node (repeatable), e.g.
        /// broker.session.timeout.ms=3000.
        #[arg(long = "property", short = 'p', value_parser = crate::key_value)]
        properties: Vec<(String, String)>,
    },
    /// Brokers, the active controller, and partitions whose ISR is short of their replicas.
    Describe,
    /// Move every replica off a broker (before retiring it); --wait follows the move.
    Drain {
        broker: i32,
        /// Replication throttle in MB/s for the move; -1: none.
        #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
        throttle: f64,
        /// Wait for the move to finish, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// A new broker (started with its node.id): move its share of replicas onto it.
    AddBroker {
        broker: i32,
        /// Only these topics (default: every topic but internal ones).
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        /// Replication throttle in MB/s for the move; -1: none.
        #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
        throttle: f64,
        #[arg(long)]
        wait: bool,
    },
    /// Unregister a stopped, drained broker (Kafka's UnregisterBroker).
    RemoveBroker { broker: i32 },
}

pub async fn run(bootstrap: &str, cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Start {
            brokers,
            dir,
            base_port,
            shards,
            ringmqd,
            properties,
        } => start(brokers, &dir, base_port, shards, ringmqd, &properties),
        ClusterCommand::Describe => describe(bootstrap),
        ClusterCommand::Drain {
            broker,
            throttle,
            wait,
        } => crate::reassign::drain(bootstrap, broker, throttle, wait).await,
        ClusterCommand::AddBroker {
            broker,
            topics,
            throttle,
            wait,
        } => crate::reassign::add_broker(bootstrap, broker, &topics, throttle, wait).await,
        ClusterCommand::RemoveBroker { broker } => remove_broker(bootstrap, broker),
    }
}

pub fn ringmqd_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| {
            let me = std::env::current_exe().ok()?;
            let sibling = me.with_file_name("ringmqd");
            sibling.exists().then_some(sibling)
        })
        .unwrap_or_else(|| PathBuf::from("ringmqd"))
}

/// The `server.properties` of node `id` in a local cluster.
pub fn node_properties(id: u16, brokers: u16, base_port: u16, shards: usize, dir: &Path) -> String {
    let voters: Vec<String> = (1..=brokers)
        .map(|n| format!("{n}@127.0.0.1:{}", base_port + 100 + n - 1))
        .collect();
    format!(
        "# ringmq local cluster node {id} (written by `ringmq cluster start`)\n\
         process.roles=broker,controller\n\
         node.id={id}\n\
         controller.quorum.voters={}\n\
         listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{}\n\
         controller.listener.names=CONTROLLER\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
         inter.broker.listener.name=PLAINTEXT\n\
         log.dirs={}\n\
         default.replication.factor={}\n\
         offsets.topic.replication.factor={}\n\
         ringmq.shards={shards}\n",
        voters.join(","),
        base_port + id - 1,
        base_port + 100 + id - 1,
        base_port + id - 1,
        dir.join("data").display(),
        brokers.min(3),
        brokers.min(3),
    )
}

/// A local cluster's running nodes; dropping it stops them (SIGTERM each, then waits).
pub struct LocalCluster {
    children: Vec<(u16, Child)>,
    pub bootstrap: String,
}

impl LocalCluster {
    /// Starts `brokers` nodes under `dir` (node1/, node2/, ...) and waits until all are
    /// live brokers. `extra_args` go to every ringmqd (e.g. `--profile kafka.4u8g`).
    pub fn start(
        brokers: u16,
        dir: &Path,
        base_port: u16,
        shards: usize,
        binary: &Path,
        properties: &[(String, String)],
        extra_args: &[String],
    ) -> anyhow::Result<LocalCluster> {
        if brokers == 0 || brokers > 50 {
            bail!("--brokers must be in 1..50");
        }
        let mut cluster = LocalCluster {
            children: Vec::new(),
            bootstrap: (1..=brokers)
                .map(|id| format!("127.0.0.1:{}", base_port + id - 1))
                .collect::<Vec<_>>()
                .join(","),
        };
        for id in 1..=brokers {
            let node_dir = dir.join(format!("node{id}"));
            std::fs::create_dir_all(&node_dir)
                .with_context(|| format!("creating {}", node_dir.display()))?;
            let config = node_dir.join("server.properties");
            let mut text = node_properties(id, brokers, base_port, shards, &node_dir);
            for (k, v) in properties {
                text.push_str(&format!("{k}={v}\n"));
            }
            std::fs::write(&config, text)?;
            let log = std::fs::File::create(node_dir.join("ringmqd.log"))?;
            let child = Command::new(binary)
                .args(extra_args)
                .arg("--config")
                .arg(&config)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            cluster.children.push((id, child));
        }
        wait_for_brokers(
            &cluster.bootstrap,
            brokers as usize,
            Duration::from_secs(60),
        )
        .with_context(|| format!("see the logs in {}/node*/ringmqd.log", dir.display()))?;
        Ok(cluster)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        stop_all(&mut self.children);
    }
}

/// `brokers` consecutive free ports from a base, and the same from base + 100 (their
/// controllers), below the ephemeral range so no client socket takes one meanwhile.
pub fn free_base_port(brokers: u16) -> anyhow::Result<u16> {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let seed = std::process::id() as u16;
    for attempt in 0..2000u16 {
        let base = 12_000 + (seed.wrapping_add(attempt.wrapping_mul(7919)) % 18_000);
        if (0..brokers).all(|i| free(base + i) && free(base + 100 + i)) {
            return Ok(base);
        }
    }
    bail!("no {brokers} free ports for a local cluster")
}

fn start(
    brokers: u16,
    dir: &Path,
    base_port: u16,
    shards: Option<usize>,
    ringmqd: Option<PathBuf>,
    properties: &[(String, String)],
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = shards.unwrap_or((cores / brokers.max(1) as usize).max(1));
    let binary = ringmqd_path(ringmqd);
    let cluster = LocalCluster::start(brokers, dir, base_port, shards, &binary, properties, &[])?;
    println!("ringmq cluster of {brokers} broker(s) is up");
    println!("bootstrap.servers={}", cluster.bootstrap);
    println!(
        "logs and data: {}/node*/  (Ctrl-C stops the cluster)",
        dir.display()
    );
    wait_for_signal();
    println!("stopping...");
    drop(cluster);
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() {
    // SAFETY: sigemptyset/sigaddset/pthread_sigmask/sigwait on a sigset_t we own; the
    // signals are blocked first so sigwait takes them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
}

/// SIGTERM to every node (a controlled shutdown each), then waits for them.
fn stop_all(children: &mut [(u16, Child)]) {
    for (_, c) in children.iter() {
        // SAFETY: kill(2) with a child pid we spawned and still own.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    for (id, c) in children.iter_mut() {
        match c.wait() {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("node {id} exited with {s}"),
            Err(e) => eprintln!("node {id}: {e}"),
        }
    }
}

fn wait_for_brokers(bootstrap: &str, n: usize, timeout: Duration) -> anyhow::Result<()> {
    // The CLI's current-thread runtime has nothing else to run meanwhile.
    let consumer: BaseConsumer = crate::client_config::apply(&mut ClientConfig::new())
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(2))
            && md.brokers().len() >= n
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the cluster did not reach {n} live brokers in {timeout:?}");
        }
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn describe(bootstrap: &str) -> anyhow::Result<()> {
    let consumer: BaseConsumer = crate::client_config::apply(&mut ClientConfig::new())
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .context("fetching metadata")?;
    let controller = controller_id(bootstrap).unwrap_or(-1);
    println!("brokers:");
    let mut brokers: Vec<_> = md.brokers().iter().collect();
    brokers.sort_by_key(|b| b.id());
    for b in brokers {
        let role = if b.id() == controller {
            "  (active controller)"
        } else {
            ""
        };
        println!("  {:>4}  {}:{}{role}", b.id(), b.host(), b.port());
    }
    match quorum(bootstrap) {
        Ok(line) => println!("{line}"),
        Err(e) => println!("quorum: not available ({e:#})"),
    }
    let (mut partitions, mut under, mut offline) = (0, Vec::new(), Vec::new());
    for t in md.topics() {
        for p in t.partitions() {
            partitions += 1;
            if p.leader() < 0 {
                offline.push(format!("{}-{}", t.name(), p.id()));
            } else if p.isr().len() < p.replicas().len() {
                under.push(format!("{}-{}", t.name(), p.id()));
            }
        }
    }
    println!(
        "partitions: {partitions}, under-replicated: {}, offline: {}",
        under.len(),
        offline.len()
    );
    for p in under.iter().take(20) {
        println!("  under-replicated {p}");
    }
    for p in offline.iter().take(20) {
        println!("  offline {p}");
    }
    Ok(())
}

/// UnregisterBroker: the controller refuses a running broker or one holding replicas.
fn remove_broker(bootstrap: &str, broker: i32) -> anyhow::Result<()> {
    use kafka_protocol::messages::UnregisterBrokerRequest;
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let mut wire = crate::bench::Wire::connect(first)?;
    let resp = wire.call(
        0,
        &UnregisterBrokerRequest::default().with_broker_id(broker.into()),
    )?;
    anyhow::ensure!(
        resp.error_code == 0,
        "broker {broker} was not unregistered: error {} ({})",
        resp.error_code,
        resp.error_message.as_deref().unwrap_or("")
    );
    println!("Broker {broker} unregistered");
    Ok(())
}

/// The active controller's id, from DescribeCluster.
/// The controller quorum as DescribeQuorum reports it: leader, epoch, voters, observers.
fn quorum(bootstrap: &str) -> anyhow::Result<String> {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    use kafka_protocol::messages::{DescribeQuorumRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let mut wire = crate::bench::Wire::connect(first)?;
    let req = DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ]);
    let resp = wire.call(2, &req)?;
    anyhow::ensure!(resp.error_code == 0, "error {}", resp.error_code);
    let p = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("no quorum partition in the answer")?;
    anyhow::ensure!(p.error_code == 0, "error {}", p.error_code);
    let ids = |r: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
        r.iter()
            .map(|s| s.replica_id.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(format!(
        "quorum: leader {}, epoch {}, voters [{}], observers [{}], high watermark {}",
        p.leader_id.0,
        p.leader_epoch,
        ids(&p.current_voters),
        ids(&p.observers),
        p.high_watermark
    ))
}

fn controller_id(bootstrap: &str) -> anyhow::Result<i32> {
    use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let mut wire = crate::bench::Wire::connect(first)?;
    let resp: DescribeClusterResponse = wire.call(0, &DescribeClusterRequest::default())?;
    Ok(resp.controller_id.0)
}
