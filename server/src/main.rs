//! `ringmqd`, the ringmq broker daemon: a Kafka-compatible broker, thread-per-core on
//! io_uring. `ringmqd` with no arguments runs the embedded defaults (127.0.0.1:9092, data
//! in ./ringmq-data, a shard per core).

use std::path::PathBuf;

use clap::Parser;
use ringmq_server::admin::http as admin_http;
use ringmq_server::runtime::panic_hook;
use ringmq_server::{broker, config, signals};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Kafka-compatible streaming broker, thread-per-core on io_uring.
#[derive(Debug, Parser)]
#[command(name = "ringmqd", version, about)]
struct Args {
    /// Broker configuration in Kafka's server.properties format.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (log.dirs). Default ./ringmq-data.
    #[arg(long, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Listener address, [PLAINTEXT://]HOST:PORT; repeatable. Default 127.0.0.1:9092.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Vec<String>,
    /// Address clients are told to connect to (advertised.listeners), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Number of shards (threads); default one per core in --cores.
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Cores to pin shards to, e.g. 0-3 or 0,2. Default all.
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// Node id (node.id).
    #[arg(long, value_name = "ID")]
    node_id: Option<i32>,
    /// Core profile: a flavor (kafka.2u4g ... kafka.16u32g, see tuning/) or a .toml path.
    /// Sets shards and pinning (one per vCPU, capped at this host's cores) and the
    /// flavor's partition, connection and memory limits. --config and flags override it.
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<String>,
    /// Disk profile (evs-high-io, evs-ultra-high-io, local-nvme, page-cache, or a .toml
    /// path written by `ringmq tune`): append method, group commit, writeback, read-ahead.
    #[arg(long, value_name = "NAME|FILE")]
    disk_profile: Option<String>,
    /// Cap appends at the disk profile's published bandwidth, to emulate that disk class
    /// on a faster device.
    #[arg(long, requires = "disk_profile")]
    emulate_disk: bool,
    /// Admin HTTP address (GET /metrics in Prometheus format), HOST:PORT. Off by default.
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
}

fn build_config(args: &Args) -> Result<config::BrokerConfig, String> {
    let mut c = config::BrokerConfig::default();
    let mut cores_set = false;
    if let Some(name) = &args.profile {
        let p = ringmq_tuning::core_profile(name)?;
        let host = std::thread::available_parallelism().map_or(1, |n| n.get());
        c.shards = p.shards_on(host);
        c.cores = (0..c.shards).collect();
        c.apply_properties(&p.broker)
            .map_err(|e| format!("core profile {}: {e}", p.name))?;
        tracing::info!(profile = %p.name, vcpus = p.vcpus, shards = c.shards, "core profile");
    }
    if let Some(name) = &args.disk_profile {
        let p = ringmq_tuning::disk_profile(name)?;
        c.apply_properties(&p.broker)
            .map_err(|e| format!("disk profile {}: {e}", p.name))?;
        if args.emulate_disk {
            c.disk_write_mbps = u64::from(p.class.bandwidth_mbps);
        }
        tracing::info!(profile = %p.name, emulate = args.emulate_disk, "disk profile");
    }
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let props = config::read_properties(&text)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        cores_set = props.contains_key("ringmq.cores");
        let shards_set = props.contains_key("ringmq.shards");
        c.apply_properties(&props)?;
        c.resolve_listeners()?;
        if cores_set && !shards_set {
            c.shards = c.cores.len();
        }
    }
    if let Some(d) = &args.data_dir {
        c.data_dir = d.clone();
    }
    if !args.listen.is_empty() {
        let addrs: Vec<_> = args
            .listen
            .iter()
            .map(|l| config::parse_host_port(l).and_then(|(h, p)| config::resolve(&h, p)))
            .collect::<Result<_, _>>()?;
        c.listen_plaintext_on(&addrs);
    }
    if let Some(a) = &args.advertise {
        let first = c
            .listeners
            .first_mut()
            .ok_or("--advertise needs a listener")?;
        first.advertised = config::parse_host_port(a)?;
    }
    if let Some(list) = &args.cores {
        c.cores = config::parse_cores(list)?;
        cores_set = true;
    }
    match args.shards {
        Some(n) => c.shards = n,
        None if cores_set => c.shards = c.cores.len(),
        None => {}
    }
    if let Some(id) = args.node_id {
        c.node_id = id;
    }
    c.validate()?;
    Ok(c)
}

fn main() {
    ringmq_server::logging::init();
    panic_hook::install();
    let args = Args::parse();
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmqd: {e}");
            std::process::exit(2);
        }
    };
    signals::block();
    match broker::start(config) {
        Ok(running) => {
            if let Err(e) = signals::spawn_handler(running.broker.clone(), running.listening) {
                eprintln!("ringmqd: cannot handle signals: {e}");
                std::process::exit(1);
            }
            tracing::info!(listeners = ?running.bound, advertised = ?running.broker.config.listeners.iter().map(|l| format!("{}://{}:{}", l.name, l.advertised.0, l.advertised.1)).collect::<Vec<_>>(), "serving Kafka clients");
            if let Some(http) = &args.http {
                let addr = config::parse_host_port(http).and_then(|(h, p)| config::resolve(&h, p));
                match addr
                    .map_err(std::io::Error::other)
                    .and_then(|a| admin_http::start(a, running.broker.clone()))
                {
                    Ok(bound) => tracing::info!(%bound, "admin http listening"),
                    Err(e) => {
                        eprintln!("ringmqd: cannot serve admin http on {http}: {e}");
                        std::process::exit(1);
                    }
                }
            }
            for t in running.threads {
                let _ = t.join();
            }
        }
        Err(e) => {
            eprintln!("ringmqd: {e:#}");
            std::process::exit(1);
        }
    }
}
