//! `ringmq bench flavor-table`: for each core profile, starts `ringmqd --profile NAME`
//! (or measures the broker at `--bootstrap` with `--external`), finds the sustainable
//! maximum — the highest produce rate of 1 KB messages, read:write 1:1, at which the
//! producers keep up, the tail consumers keep up, nothing fails and the produce p99 stays
//! under the bound — and prints the seeds' table layout for this machine beside the
//! published row, with the ratios. The host probe (`ringmq tune`'s) is printed with it.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use ringmq_tuning::CoreProfile;
use serde::Serialize;

use super::stats::Report;
use super::workload::{self, ConsumeSpec, ProduceSpec, RunSpec, StartAt};

#[derive(Debug, Args)]
pub struct FlavorArgs {
    /// Core profiles to measure, comma-separated. Default: all five flavors.
    #[arg(long, value_delimiter = ',')]
    profiles: Vec<String>,
    /// Measure the broker at --bootstrap as it is, instead of starting ringmqd per profile
    /// (the row is labelled with the first --profiles entry, default kafka.2u4g).
    #[arg(long)]
    external: bool,
    /// The ringmqd binary (default: next to this ringmq).
    #[arg(long, value_name = "PATH")]
    ringmqd: Option<PathBuf>,
    /// Where the started brokers keep data (removed afterwards).
    #[arg(long, value_name = "DIR", default_value = "./ringmq-flavor-data")]
    data_dir: PathBuf,
    /// Disk profile for the started brokers.
    #[arg(long, value_name = "NAME|FILE")]
    disk_profile: Option<String>,
    /// Cap the started brokers' writes at the disk profile's class bandwidth.
    #[arg(long, requires = "disk_profile")]
    emulate_disk: bool,
    /// The latency bound: produce (send→ack) p99 in milliseconds.
    #[arg(long, default_value_t = 10.0, value_parser = positive_ms)]
    p99_ms: f64,
    /// Seconds per rate step.
    #[arg(long, default_value = "5", value_parser = super::parse_seconds)]
    step: Duration,
    /// Bisection steps after the doubling search found a failing rate.
    #[arg(long, default_value_t = 3)]
    refine: u32,
    /// Highest rate tried, msgs/s.
    #[arg(long, default_value_t = 5_000_000)]
    max_rate: u64,
    /// Partitions of the bench topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Producer and consumer clients.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Also measure a cluster of this many brokers per profile (a local one started with
    /// `ringmq cluster`'s layout, or the one at --bootstrap with --external), the topic
    /// with min(3, brokers) replicas: the seeds' per-broker figure is the cluster's total
    /// divided by the brokers. Printed beside the one-broker row.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=50))]
    brokers: u16,
    /// Producer acks (the seeds' figures are for acks=all, 3 replicas).
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all"])]
    acks: String,
    /// Client library for the traffic. The native client (see `ringmq bench mixed
    /// --help`) takes about half of librdkafka's CPU per GB, which on a machine shared
    /// with the broker leaves more for the broker being measured.
    #[arg(long, value_enum, default_value = "native")]
    client: workload::Client,
    /// Producer linger.ms.
    #[arg(long, default_value_t = 1)]
    linger_ms: u32,
    /// Producers only (no tail consumers): the write ceiling rather than the seeds'
    /// read:write 1:1 rule.
    #[arg(long)]
    write_only: bool,
    /// Skip the host probe (disk, fdatasync, loopback).
    #[arg(long)]
    no_probe: bool,
    /// Also check each profile's partition and connection limits against the broker.
    #[arg(long)]
    verify_limits: bool,
    /// Write the whole result as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn positive_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("--p99-ms {s:?}: must be a positive number")),
    }
}

/// One rate step's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: u64,
    pub pass: bool,
    pub why: String,
    pub report: Report,
}

/// What a step must show to count as sustained.
pub fn judge(rate: u64, r: &Report, p99_bound_ms: f64) -> (bool, String) {
    let (Some(p), Some(l)) = (&r.produced, &r.produce_latency) else {
        return (false, "no produce figures".into());
    };
    // Write-only runs have no consumers to check.
    let none = super::stats::Flow {
        messages: p.messages,
        ..Default::default()
    };
    let c = r.consumed.as_ref().unwrap_or(&none);
    if p.errors > 0 || c.errors > 0 {
        return (
            false,
            format!("{} produce / {} consume errors", p.errors, c.errors),
        );
    }
    if p.msgs_per_s < 0.95 * rate as f64 {
        return (
            false,
            format!("producers reached only {:.0} msgs/s", p.msgs_per_s),
        );
    }
    if c.messages < p.messages {
        return (
            false,
            format!("consumers read {} of {} messages", c.messages, p.messages),
        );
    }
    if l.p99_ms > p99_bound_ms {
        return (
            false,
            format!("produce p99 {:.2} ms > {p99_bound_ms} ms", l.p99_ms),
        );
    }
    (true, format!("produce p99 {:.2} ms", l.p99_ms))
}

/// The doubling-then-bisection search, driven by `try_rate`. A rate counts as failed only
/// when it fails twice in a row: one scheduling hiccup on a shared machine can push a
/// single step's p99 over the bound, and a search that believed it would stop far too low.
pub async fn search<F, Fut>(start: u64, max: u64, refine: u32, mut try_rate: F) -> Vec<(u64, bool)>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut tried = Vec::new();
    let (mut good, mut bad): (Option<u64>, Option<u64>) = (None, None);
    let mut rate = start.clamp(1, max);
    // Up while it holds; if the first rate fails, down until one holds.
    loop {
        if confirmed(&mut try_rate, rate, &mut tried).await {
            good = Some(rate);
            if bad.is_some() || rate >= max {
                break;
            }
            rate = (rate * 2).min(max);
        } else {
            bad = Some(rate);
            if good.is_some() || rate <= 1000 {
                break;
            }
            rate /= 2;
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (good, bad) {
        for _ in 0..refine {
            let mid = (lo + hi) / 2;
            if hi - lo <= lo / 50 {
                break;
            }
            if confirmed(&mut try_rate, mid, &mut tried).await {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    tried
}

/// Tries `rate`, and once more if it failed; records every try.
async fn confirmed<F, Fut>(try_rate: &mut F, rate: u64, tried: &mut Vec<(u64, bool)>) -> bool
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..2 {
        let ok = try_rate(rate).await;
        tried.push((rate, ok));
        if ok {
            return true;
        }
    }
    false
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub flavor: String,
    pub vcpus: usize,
    pub shards: usize,
    pub brokers: u32,
    /// Replicas of the bench topic.
    pub replicas: u32,
    /// Per broker: the cluster's total divided by `brokers`.
    pub max_tps: u64,
    /// The whole cluster's sustained rate.
    pub cluster_tps: u64,
    pub published_tps: u64,
    pub tps_ratio: f64,
    pub max_partitions: u32,
    pub consumer_groups: u32,
    pub max_connections: u32,
    pub traffic_mbps: f64,
    pub published_traffic_mbps: u32,
    pub traffic_ratio: f64,
    pub produce_p99_ms: f64,
    pub e2e_p99_ms: Option<f64>,
    pub write_mbps: f64,
    pub limits_verified: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
struct FlavorTable {
    host_cores: usize,
    client: workload::Client,
    write_only: bool,
    p99_bound_ms: f64,
    probe: Option<crate::tune::Probe>,
    rows: Vec<Row>,
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(
        bin: &PathBuf,
        profile: &str,
        dir: &PathBuf,
        port: u16,
        args: &FlavorArgs,
    ) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("ringmqd.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--profile")
            .arg(profile)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(d) = &args.disk_profile {
            cmd.arg("--disk-profile").arg(d);
            if args.emulate_disk {
                cmd.arg("--emulate-disk");
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut d = Daemon { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = d.child.try_wait()? {
                anyhow::bail!(
                    "ringmqd exited ({status}); see {}",
                    dir.join("ringmqd.log").display()
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!("ringmqd did not listen within 30 s");
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        Ok(d)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn delete_topic(bootstrap: &str, topic: &str) {
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        crate::client_config::apply(&mut ClientConfig::new())
            .set("bootstrap.servers", bootstrap)
            .create();
    if let Ok(a) = admin {
        let _ = a.delete_topics(&[topic], &AdminOptions::new()).await;
    }
}

/// The brokers measured together and the bench topic's replication factor.
#[derive(Debug, Clone, Copy)]
struct Shape {
    brokers: u32,
    replicas: i32,
}

impl Shape {
    fn of(brokers: u16) -> Shape {
        Shape {
            brokers: u32::from(brokers),
            replicas: i32::from(brokers.min(3)),
        }
    }
}

async fn measure(
    bootstrap: &str,
    p: &CoreProfile,
    args: &FlavorArgs,
    shards: usize,
    shape: Shape,
) -> anyhow::Result<Row> {
    // A fresh broker's first seconds (segment files, page cache, client connections) are
    // not what the search should judge: warm up at the starting rate first.
    let warm = format!("flavor-{}-warmup", p.name);
    let _ = step(
        bootstrap,
        &warm,
        p.published.max_tps_per_broker.min(args.max_rate),
        args,
        shape,
        Duration::from_secs(2),
    )
    .await;
    delete_topic(bootstrap, &warm).await;
    let steps: std::cell::RefCell<Vec<Step>> = Default::default();
    let failure: std::cell::RefCell<Option<anyhow::Error>> = Default::default();
    let n = std::cell::Cell::new(0u32);
    let (steps_ref, failure_ref, n_ref) = (&steps, &failure, &n);
    search(
        p.published.max_tps_per_broker,
        args.max_rate,
        args.refine,
        |rate| async move {
            n_ref.set(n_ref.get() + 1);
            let topic = format!("flavor-{}-{}", p.name, n_ref.get());
            let r = step(bootstrap, &topic, rate, args, shape, args.step).await;
            delete_topic(bootstrap, &topic).await;
            match r {
                Ok(report) => {
                    let (pass, why) = judge(rate, &report, args.p99_ms);
                    if !args.quiet {
                        eprintln!(
                            "{}: {rate} msgs/s -> {} ({why})",
                            p.name,
                            if pass { "sustained" } else { "not sustained" }
                        );
                    }
                    steps_ref.borrow_mut().push(Step {
                        rate,
                        pass,
                        why,
                        report,
                    });
                    pass
                }
                Err(e) => {
                    if !args.quiet {
                        eprintln!("{}: {rate} msgs/s -> failed: {e:#}", p.name);
                    }
                    failure_ref.borrow_mut().get_or_insert(e);
                    false
                }
            }
        },
    )
    .await;
    let steps = steps.into_inner();
    if let Some(e) = failure.into_inner()
        && steps.is_empty()
    {
        return Err(e);
    }
    let best = steps
        .iter()
        .filter(|s| s.pass)
        .max_by_key(|s| s.rate)
        .cloned();
    let (cluster_tps, traffic, write, p99, e2e) = match &best {
        Some(s) => {
            let r = &s.report;
            let pw = r.produced.as_ref().map_or(0.0, |f| f.mb_per_s);
            let cr = r.consumed.as_ref().map_or(0.0, |f| f.mb_per_s);
            (
                s.report.produced.as_ref().map_or(0.0, |f| f.msgs_per_s) as u64,
                pw + cr,
                pw,
                r.produce_latency.map_or(0.0, |l| l.p99_ms),
                r.e2e_latency.map(|l| l.p99_ms),
            )
        }
        None => (0, 0.0, 0.0, 0.0, None),
    };
    let limits_verified = if args.verify_limits && !args.external {
        Some(verify_limits(bootstrap, p).await)
    } else {
        None
    };
    // The seeds' figures are per broker: the cluster's total over its brokers.
    let per_broker = f64::from(shape.brokers.max(1));
    let max_tps = (cluster_tps as f64 / per_broker) as u64;
    let traffic = traffic / per_broker;
    Ok(Row {
        flavor: p.name.clone(),
        vcpus: p.vcpus,
        shards,
        brokers: shape.brokers,
        replicas: shape.replicas as u32,
        max_tps,
        cluster_tps,
        published_tps: p.published.max_tps_per_broker,
        tps_ratio: max_tps as f64 / p.published.max_tps_per_broker as f64,
        max_partitions: p.published.max_partitions_per_broker,
        consumer_groups: p.published.consumer_groups_per_broker,
        max_connections: p.published.max_connections_per_broker,
        traffic_mbps: traffic,
        published_traffic_mbps: p.published.traffic_per_broker_mbps,
        traffic_ratio: traffic / f64::from(p.published.traffic_per_broker_mbps),
        produce_p99_ms: p99,
        e2e_p99_ms: e2e,
        write_mbps: write,
        limits_verified,
        steps,
    })
}

async fn step(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    args: &FlavorArgs,
    shape: Shape,
    duration: Duration,
) -> anyhow::Result<Report> {
    super::ensure_topic(bootstrap, topic, args.partitions, shape.replicas).await?;
    let spec = RunSpec {
        scenario: "mixed".into(),
        client: args.client,
        bootstrap: bootstrap.into(),
        topic: topic.into(),
        produce: Some(ProduceSpec {
            size: 1024,
            rate: Some(rate),
            producers: args.clients as usize,
            config: vec![
                ("acks".into(), args.acks.clone()),
                ("linger.ms".into(), args.linger_ms.to_string()),
                ("batch.size".into(), "1048576".into()),
            ],
        }),
        consume: (!args.write_only).then(|| ConsumeSpec {
            consumers: args.clients as usize,
            group: None,
            start: StartAt::Latest,
            config: Vec::new(),
        }),
        messages: None,
        duration: Some(duration),
        warmup: Duration::from_millis(500),
        progress: false,
        drain_timeout: Duration::from_secs(5),
    };
    workload::run(&spec).await
}

/// Fills the partition limit and checks one more is refused; opens the connection limit
/// and checks one more is closed.
async fn verify_limits(bootstrap: &str, p: &CoreProfile) -> String {
    let limit = p.published.max_partitions_per_broker as i32;
    let mut notes = Vec::new();
    let fill = async {
        super::ensure_topic(bootstrap, "flavor-limit-fill", limit, 1).await?;
        let over = super::ensure_topic(bootstrap, "flavor-limit-over", 1, 1).await;
        delete_topic(bootstrap, "flavor-limit-fill").await;
        delete_topic(bootstrap, "flavor-limit-over").await;
        anyhow::Ok(over.is_err())
    };
    notes.push(match fill.await {
        Ok(true) => format!("{limit} partitions created, one more refused"),
        Ok(false) => format!("partition {} was NOT refused", limit + 1),
        Err(e) => format!("partition check failed: {e}"),
    });
    let conns = p.published.max_connections_per_broker as usize;
    let held: Vec<TcpStream> = (0..conns)
        .filter_map(|_| TcpStream::connect(bootstrap).ok())
        .collect();
    let opened = held.len();
    let refused = match TcpStream::connect(bootstrap) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            matches!(std::io::Read::read(&mut s, &mut [0u8; 1]), Ok(0) | Err(_))
        }
        Err(_) => true,
    };
    drop(held);
    notes.push(if opened == conns && refused {
        format!("{conns} connections held, one more closed")
    } else {
        format!("connections: {opened} of {conns} opened, extra closed: {refused}")
    });
    notes.join("; ")
}

fn ringmqd_path(args: &FlavorArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.ringmqd {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let sibling = exe.with_file_name("ringmqd");
    anyhow::ensure!(
        sibling.exists(),
        "ringmqd not found next to {}; pass --ringmqd PATH or --external",
        exe.display()
    );
    Ok(sibling)
}

pub async fn run(bootstrap: &str, args: FlavorArgs) -> anyhow::Result<()> {
    let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let names: Vec<String> = if args.profiles.is_empty() {
        ringmq_tuning::core_profiles()
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|p| p.name)
            .collect()
    } else {
        args.profiles.clone()
    };
    let profiles: Vec<CoreProfile> = names
        .iter()
        .map(|n| ringmq_tuning::core_profile(n))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let probe = if args.no_probe {
        None
    } else {
        if !args.quiet {
            eprintln!("probing the host (disk, fdatasync, loopback)...");
        }
        let dir = args.data_dir.clone();
        std::fs::create_dir_all(&dir)?;
        Some(tokio::task::spawn_blocking(move || crate::tune::probe(&dir, false)).await??)
    };
    let mut rows = Vec::new();
    if args.external {
        let p = &profiles[0];
        rows.push(measure(bootstrap, p, &args, 0, Shape::of(args.brokers)).await?);
    } else {
        let bin = ringmqd_path(&args)?;
        for p in &profiles {
            let dir = args.data_dir.join(&p.name);
            let port = free_port()?;
            let daemon = Daemon::start(&bin, &p.name, &dir, port, &args)?;
            let bs = format!("127.0.0.1:{port}");
            let row = measure(&bs, p, &args, p.shards_on(host_cores), Shape::of(1)).await;
            drop(daemon);
            let _ = std::fs::remove_dir_all(&dir);
            rows.push(row?);
            if args.brokers > 1 {
                rows.push(measure_cluster(&bin, p, &args, &dir, host_cores).await?);
            }
        }
        let _ = std::fs::remove_dir(&args.data_dir);
    }
    let table = FlavorTable {
        host_cores,
        client: args.client,
        write_only: args.write_only,
        p99_bound_ms: args.p99_ms,
        probe,
        rows,
    };
    print!("{}", render(&table));
    // stdout gets the rows; the --json file also has every step's full report.
    let json = serde_json::to_string(&table)?;
    let mut summary = serde_json::to_value(&table)?;
    if let Some(rows) = summary.get_mut("rows").and_then(|r| r.as_array_mut()) {
        for row in rows {
            if let Some(obj) = row.as_object_mut() {
                obj.remove("steps");
            }
        }
    }
    println!("{summary}");
    if let Some(p) = &args.json {
        std::fs::write(p, json + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Starts a local cluster of `args.brokers` with profile `p` and measures it.
async fn measure_cluster(
    bin: &std::path::Path,
    p: &CoreProfile,
    args: &FlavorArgs,
    dir: &std::path::Path,
    host_cores: usize,
) -> anyhow::Result<Row> {
    let brokers = args.brokers;
    // The brokers share this host: each gets its part of the profile's shards.
    let shards = (p.shards_on(host_cores) / usize::from(brokers)).max(1);
    let mut extra = vec!["--profile".to_string(), p.name.clone()];
    if let Some(d) = &args.disk_profile {
        extra.extend(["--disk-profile".to_string(), d.clone()]);
        if args.emulate_disk {
            extra.push("--emulate-disk".into());
        }
    }
    let base = crate::cluster::free_base_port(brokers)?;
    let cluster_dir = dir.with_file_name(format!("{}-cluster", p.name));
    let cluster =
        crate::cluster::LocalCluster::start(brokers, &cluster_dir, base, shards, bin, &[], &extra)?;
    let row = measure(&cluster.bootstrap, p, args, shards, Shape::of(brokers)).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&cluster_dir);
    row
}

fn render(t: &FlavorTable) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Flavor table for this machine ({} cores), 1 KB messages, {}, \
         produce p99 <= {} ms, {} client on the same machine; seeds' published row in \
         brackets; a cluster's figures are per broker (its total / brokers)",
        t.host_cores,
        if t.write_only {
            "write only"
        } else {
            "read:write 1:1"
        },
        t.p99_bound_ms,
        match t.client {
            workload::Client::Native => "native",
            workload::Client::Rdkafka => "librdkafka",
        }
    );
    if let Some(p) = &t.probe {
        let _ = writeln!(out, "host probe: {}", p.one_line());
    }
    let _ = writeln!(
        out,
        "{:<14} {:>7} {:>24} {:>10} {:>8} {:>11} {:>24} {:>9} {:>9}",
        "flavor",
        "brokers",
        "max TPS/broker",
        "max parts",
        "groups",
        "max conns",
        "traffic/broker MB/s",
        "p99 ms",
        "e2e p99"
    );
    for r in &t.rows {
        let shards = if r.shards > 0 && r.shards < r.vcpus {
            format!(" ({} of {} vCPUs)", r.shards, r.vcpus)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>24} {:>10} {:>8} {:>11} {:>24} {:>9.2} {:>9}{shards}",
            r.flavor,
            r.brokers,
            format!("{} [{}] {:.1}x", r.max_tps, r.published_tps, r.tps_ratio),
            r.max_partitions,
            r.consumer_groups,
            r.max_connections,
            format!(
                "{:.0} [{}] {:.1}x",
                r.traffic_mbps, r.published_traffic_mbps, r.traffic_ratio
            ),
            r.produce_p99_ms,
            r.e2e_p99_ms.map_or("-".into(), |v| format!("{v:.2}")),
        );
        if let Some(p) = &t.probe {
            let _ = writeln!(
                out,
                "{:<14} write {:.0} MB/s = {:.0}% of the disk's sequential write; traffic {:.0} MB/s = {:.0}% of loopback TCP",
                "",
                r.write_mbps,
                100.0 * r.write_mbps / p.seq_write_mbps.max(1e-9),
                r.traffic_mbps,
                100.0 * r.traffic_mbps / p.loopback_mbps.max(1e-9)
            );
        }
        if r.brokers > 1 {
            let _ = writeln!(
                out,
                "{:<14} cluster of {} brokers on this one host, {} replicas: {} msgs/s in total",
                "", r.brokers, r.replicas, r.cluster_tps
            );
        }
        if let Some(v) = &r.limits_verified {
            let _ = writeln!(out, "{:<14} limits: {v}", "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::{Flow, Latency};

    fn report(rate: f64, p99_us: u64, consumed: u64) -> Report {
        let mut l = Latency::new();
        (0..100).for_each(|_| l.record_us(p99_us));
        Report {
            produced: Some(Flow::new((rate * 5.0) as u64, 0, 0, 5.0)),
            consumed: Some(Flow::new(consumed, 0, 0, 5.0)),
            produce_latency: l.summary(),
            ..Default::default()
        }
    }

    #[test]
    fn judging_a_step() {
        assert!(judge(1000, &report(1000.0, 2000, 5000), 10.0).0);
        let (ok, why) = judge(1000, &report(900.0, 2000, 4500), 10.0);
        assert!(!ok && why.contains("only 900"), "{why}");
        let (ok, why) = judge(1000, &report(1000.0, 20_000, 5000), 10.0);
        assert!(!ok && why.contains("p99 20.0"), "{why}");
        let (ok, why) = judge(1000, &report(1000.0, 2000, 4000), 10.0);
        assert!(!ok && why.contains("4000 of 5000"), "{why}");
        assert!(!judge(1000, &Report::default(), 10.0).0);
        let mut write_only = report(1000.0, 2000, 0);
        write_only.consumed = None;
        assert!(judge(1000, &write_only, 10.0).0);
    }

    fn run_search(capacity: u64, start: u64) -> Vec<(u64, bool)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(search(
            start,
            5_000_000,
            3,
            |r| async move { r <= capacity },
        ))
    }

    #[test]
    fn search_doubles_then_bisects() {
        let tried = run_search(300_000, 30_000);
        let rates: Vec<u64> = tried.iter().map(|t| t.0).collect();
        // Each failure is confirmed by a second try.
        assert_eq!(
            &rates[..6],
            &[30_000, 60_000, 120_000, 240_000, 480_000, 480_000]
        );
        // Bisection between 240k and 480k converges towards 300k.
        let best = tried.iter().filter(|t| t.1).map(|t| t.0).max().unwrap();
        assert!((270_000..=300_000).contains(&best), "{tried:?}");
        assert!(tried.iter().all(|(r, ok)| *ok == (*r <= 300_000)));
    }

    #[test]
    fn search_goes_down_when_the_first_rate_fails() {
        let tried = run_search(20_000, 100_000);
        assert_eq!(tried[..2], [(100_000, false), (100_000, false)]);
        let best = tried.iter().filter(|t| t.1).map(|t| t.0).max().unwrap();
        assert!((12_500..=20_000).contains(&best), "{tried:?}");
        // Nothing sustainable: stops at the floor.
        let tried = run_search(0, 8000);
        assert!(tried.iter().all(|t| !t.1) && tried.last().unwrap().0 <= 1000);
    }

    #[test]
    fn one_failed_step_is_retried_before_the_rate_counts_as_failed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut calls = 0;
        // 30k fails once (a hiccup), then holds; capacity is 100k.
        let tried = rt.block_on(search(30_000, 5_000_000, 0, |r| {
            calls += 1;
            let hiccup = calls == 1;
            async move { !hiccup && r <= 100_000 }
        }));
        assert_eq!(
            tried[..3],
            [(30_000, false), (30_000, true), (60_000, true)]
        );
        let best = tried.iter().filter(|t| t.1).map(|t| t.0).max().unwrap();
        assert_eq!(best, 60_000);
    }

    #[test]
    fn search_stops_at_the_maximum() {
        let tried = run_search(u64::MAX, 1_000_000);
        assert_eq!(tried.last().unwrap(), &(5_000_000, true));
    }
}
