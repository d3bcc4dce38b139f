//! Runs a bench workload: producer threads (paced to a target rate, or flat out) and
//! consumer threads (assigned partitions or a consumer group), each its own librdkafka
//! client, while the calling task samples them once a second for the live progress line
//! and the time series.
//!
//! Latency is measured without coordinated omission: a paced message's latency starts at
//! the moment the schedule said it should be sent, not when the (possibly late) producer
//! got round to it. Each bench payload starts with a 16-byte header (magic + send time in
//! ns since the Unix epoch), from which consumers in this or another process measure
//! end-to-end latency; payloads without it are counted but not timed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::stats::{Flow, Latency, Report, Sample};

/// First bytes of every payload the bench writes.
pub const MAGIC: &[u8; 8] = b"RINGMQB1";
/// Magic + send time.
pub const HEADER_BYTES: usize = 16;

#[derive(Debug, Clone)]
pub struct ProduceSpec {
    pub size: usize,
    /// Messages per second over all producers; None = as fast as possible.
    pub rate: Option<u64>,
    pub producers: usize,
    /// librdkafka producer properties (acks, compression.type, linger.ms, batch.size, ...).
    pub config: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    /// The end of each partition when the run starts (tail reading).
    Latest,
}

#[derive(Debug, Clone)]
pub struct ConsumeSpec {
    pub consumers: usize,
    /// Consume as this consumer group (subscribe); None assigns partitions directly.
    pub group: Option<String>,
    pub start: StartAt,
    pub config: Vec<(String, String)>,
}

/// The client library that carries the bench's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// librdkafka (through the rdkafka crate): any setting, compression, groups.
    Rdkafka,
    /// The bench's own Produce/Fetch client: uncompressed, assigned partitions, and far
    /// less CPU per message (see `native`).
    Native,
}

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub scenario: String,
    pub client: Client,
    pub bootstrap: String,
    pub topic: String,
    pub produce: Option<ProduceSpec>,
    pub consume: Option<ConsumeSpec>,
    /// Messages to produce (or, consume-only, to read); None with a duration = unbounded.
    pub messages: Option<u64>,
    pub duration: Option<Duration>,
    /// Latency of messages scheduled in the first `warmup` is not recorded.
    pub warmup: Duration,
    /// Print the live progress line on stderr.
    pub progress: bool,
    /// After producers stop, how long consumers may take to catch up.
    pub drain_timeout: Duration,
}

/// Counters and histograms one worker thread updates and the sampler reads.
#[derive(Default)]
pub(super) struct WorkerStats {
    pub(super) messages: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) errors: AtomicU64,
    /// A producer: ns from the run's start until its flush completed.
    pub(super) finished_ns: AtomicU64,
    /// (whole run, current interval)
    latency: Mutex<(Latency, Latency)>,
}

impl WorkerStats {
    fn record(&self, us: u64) {
        if let Ok(mut l) = self.latency.lock() {
            l.0.record_us(us);
            l.1.record_us(us);
        }
    }
    /// Records many latencies under one lock.
    pub(super) fn record_all(&self, us: impl Iterator<Item = u64>) {
        if let Ok(mut l) = self.latency.lock() {
            for v in us {
                l.0.record_us(v);
                l.1.record_us(v);
            }
        }
    }
    fn take_interval(&self) -> Latency {
        self.latency
            .lock()
            .map(|mut l| std::mem::take(&mut l.1))
            .unwrap_or_default()
    }
    fn total(&self) -> Latency {
        self.latency.lock().map(|l| l.0.clone()).unwrap_or_default()
    }
}

fn sum(stats: &[Arc<WorkerStats>], f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
    stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
}

struct DeliveryTimer {
    start: Instant,
    warmup_ns: u64,
    stats: Arc<WorkerStats>,
}

impl ClientContext for DeliveryTimer {}

impl ProducerContext for DeliveryTimer {
    /// When the message was due, in ns since the run's start.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, due_ns: usize) {
        match result {
            Ok(m) => {
                self.stats.messages.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes
                    .fetch_add(m.payload_len() as u64, Ordering::Relaxed);
                let due_ns = due_ns as u64;
                if due_ns >= self.warmup_ns {
                    let now = self.start.elapsed().as_nanos() as u64;
                    self.stats.record(now.saturating_sub(due_ns) / 1000);
                }
            }
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The process's CPU time (all threads).
pub fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Splits `total` into `n` shares that add up to it.
pub fn shares(total: u64, n: usize) -> Vec<u64> {
    let n = n.max(1) as u64;
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

pub(super) struct ProducerJob {
    pub(super) spec: ProduceSpec,
    bootstrap: String,
    pub(super) topic: String,
    /// This producer's message count (None: until `stop`).
    pub(super) messages: Option<u64>,
    /// This producer's share of the rate.
    pub(super) rate: Option<f64>,
    pub(super) start: Instant,
    pub(super) warmup: Duration,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) stats: Arc<WorkerStats>,
}

fn run_producer(job: ProducerJob) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new();
    crate::client_config::apply(&mut cfg);
    cfg.set("bootstrap.servers", &job.bootstrap)
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    for (k, v) in &job.spec.config {
        cfg.set(k, v);
    }
    let producer: BaseProducer<DeliveryTimer> = cfg
        .create_with_context(DeliveryTimer {
            start: job.start,
            warmup_ns: job.warmup.as_nanos() as u64,
            stats: Arc::clone(&job.stats),
        })
        .context("creating a producer")?;
    let mut payload: Vec<u8> = (0..job.spec.size.max(HEADER_BYTES))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    payload[..8].copy_from_slice(MAGIC);
    payload.truncate(job.spec.size.max(HEADER_BYTES));
    let interval_ns = job.rate.map(|r| 1e9 / r.max(1e-3));
    let mut sent = 0u64;
    // The clock is read once per wake-up, not per message: a burst of messages that fell
    // due meanwhile goes out on one reading. Payload send times are the due times on the
    // wall clock (what a consumer in another process compares against).
    let unix_start = unix_ns().saturating_sub(job.start.elapsed().as_nanos() as u64);
    let mut now_ns = 0u64;
    loop {
        if job.stop.load(Ordering::Relaxed) || job.messages.is_some_and(|m| sent >= m) {
            break;
        }
        let due_ns = match interval_ns {
            Some(i) => {
                let due = (sent as f64 * i) as u64;
                if due > now_ns {
                    now_ns = job.start.elapsed().as_nanos() as u64;
                }
                if due > now_ns {
                    // Ahead of schedule: serve delivery reports until the next message
                    // is due. Sub-millisecond gaps park the thread (librdkafka's poll
                    // timeout has millisecond resolution); at high rates a wake-up sends
                    // every message that fell due meanwhile, as a burst.
                    let gap = Duration::from_nanos(due - now_ns);
                    producer.poll(Duration::ZERO);
                    if gap >= Duration::from_millis(1) {
                        producer.poll(Duration::from_millis(1));
                    } else {
                        std::thread::park_timeout(gap.max(Duration::from_micros(200)));
                    }
                    continue;
                }
                due
            }
            None => {
                now_ns = job.start.elapsed().as_nanos() as u64;
                now_ns
            }
        };
        payload[8..16].copy_from_slice(&(unix_start + due_ns).to_be_bytes());
        let record = BaseRecord::<(), [u8], usize>::with_opaque_to(&job.topic, due_ns as usize)
            .payload(&payload[..job.spec.size]);
        match producer.send(record) {
            Ok(()) => {
                sent += 1;
                if sent.is_multiple_of(256) {
                    producer.poll(Duration::ZERO);
                }
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => anyhow::bail!("produce failed: {e}"),
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the producer")?;
    job.stats
        .finished_ns
        .store(job.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(())
}

pub(super) struct ConsumerJob {
    pub(super) spec: ConsumeSpec,
    bootstrap: String,
    pub(super) topic: String,
    /// Explicit (partition, offset) assignment; empty with a group.
    pub(super) assignment: Vec<(i32, i64)>,
    pub(super) warmup_unix_ns: u64,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) stats: Arc<WorkerStats>,
    /// Partitions this consumer holds (for the group: once assigned).
    pub(super) assigned: Arc<AtomicUsize>,
}

fn run_consumer(job: ConsumerJob) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new();
    crate::client_config::apply(&mut cfg);
    let group = job
        .spec
        .group
        .clone()
        .unwrap_or_else(|| format!("ringmq-bench-{}", std::process::id()));
    // Fetch sizes are the clients' defaults, as for the native consumer (see
    // `native::PARTITION_FETCH_BYTES`); --consumer-property overrides them.
    cfg.set("bootstrap.servers", &job.bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "1048576");
    for (k, v) in &job.spec.config {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = cfg.create().context("creating a consumer")?;
    if job.spec.group.is_some() {
        consumer
            .subscribe(&[&job.topic])
            .context("subscribing to the topic")?;
    } else {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &job.assignment {
            tpl.add_partition_offset(&job.topic, *p, Offset::Offset(*o))?;
        }
        consumer.assign(&tpl).context("assigning partitions")?;
        job.assigned.store(job.assignment.len(), Ordering::Relaxed);
    }
    while !job.stop.load(Ordering::Relaxed) {
        if job.spec.group.is_some() {
            let n = consumer.assignment().map_or(0, |a| a.count());
            job.assigned.store(n, Ordering::Relaxed);
        }
        let Some(m) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        match m {
            Ok(m) => {
                let payload = m.payload().unwrap_or_default();
                job.stats.messages.fetch_add(1, Ordering::Relaxed);
                job.stats
                    .bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                if payload.len() >= HEADER_BYTES && &payload[..8] == MAGIC {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&payload[8..16]);
                    let sent = u64::from_be_bytes(ts);
                    if sent >= job.warmup_unix_ns {
                        job.stats.record(unix_ns().saturating_sub(sent) / 1000);
                    }
                }
            }
            Err(e) => {
                job.stats.errors.fetch_add(1, Ordering::Relaxed);
                warn(&format!("consumer error: {e}"));
            }
        }
    }
    Ok(())
}

/// Client-side problems go to stderr (the CLI has no log subscriber).
pub(super) fn warn(msg: &str) {
    eprintln!("ringmq bench: {msg}");
}

/// One partition of the bench topic when the run starts.
#[derive(Debug, Clone)]
struct PartitionState {
    id: i32,
    low: i64,
    high: i64,
    /// The leader's HOST:PORT.
    leader: String,
}

/// The topic's partitions: watermarks and leaders.
fn watermarks(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<PartitionState>> {
    let c: BaseConsumer = crate::client_config::apply(&mut ClientConfig::new())
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a metadata client")?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(15))
        .context("fetching metadata")?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic not in metadata")?;
    if let Some(e) = t.error() {
        anyhow::bail!("topic {topic}: {e:?}");
    }
    let mut out = Vec::new();
    for p in t.partitions() {
        let (low, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(15))
            .with_context(|| format!("watermarks of partition {}", p.id()))?;
        let leader = md
            .brokers()
            .iter()
            .find(|b| b.id() == p.leader())
            .map(|b| format!("{}:{}", b.host(), b.port()))
            .with_context(|| format!("partition {} has no leader", p.id()))?;
        out.push(PartitionState {
            id: p.id(),
            low,
            high,
            leader,
        });
    }
    out.sort_by_key(|p| p.id);
    Ok(out)
}

/// Commits `offsets` for `group`, so its members start exactly there.
fn commit_group_start(
    bootstrap: &str,
    topic: &str,
    group: &str,
    offsets: &[(i32, i64)],
) -> anyhow::Result<()> {
    let c: BaseConsumer = crate::client_config::apply(&mut ClientConfig::new())
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
    }
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .context("committing the group's start offsets")?;
    Ok(())
}

fn merged(stats: &[Arc<WorkerStats>]) -> Latency {
    let mut l = Latency::new();
    for s in stats {
        l.add(&s.total());
    }
    l
}

fn interval(stats: &[Arc<WorkerStats>]) -> Option<f64> {
    let mut l = Latency::new();
    for s in stats {
        l.add(&s.take_interval());
    }
    l.summary().map(|s| s.p99_ms)
}

/// Runs `spec` and returns its report. The topic must exist.
pub async fn run(spec: &RunSpec) -> anyhow::Result<Report> {
    let parts = {
        let (b, t) = (spec.bootstrap.clone(), spec.topic.clone());
        tokio::task::spawn_blocking(move || watermarks(&b, &t)).await??
    };
    let leaders: Vec<(i32, String)> = parts.iter().map(|p| (p.id, p.leader.clone())).collect();
    let client = spec.client;
    if client == Client::Native {
        // Refuse what the native client cannot do before any thread starts.
        if let Some(p) = &spec.produce {
            super::native::ProducerSettings::from_config(&p.config)?;
        }
        if let Some(c) = &spec.consume {
            super::native::check_consumer(c)?;
        }
    }
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let (mut producer_stats, mut consumer_stats) = (Vec::new(), Vec::new());
    type Worker = std::thread::JoinHandle<anyhow::Result<()>>;
    let mut threads: Vec<Worker> = Vec::new();
    let mut producer_threads: Vec<Worker> = Vec::new();
    let mut assigned = Vec::new();
    // What consume-only runs read when no count is given: everything there now.
    let consume_target = match (&spec.produce, spec.messages) {
        (None, Some(n)) => Some(n),
        (None, None) if spec.duration.is_none() => {
            let (start, end): (i64, i64) = parts
                .iter()
                .fold((0, 0), |(s, e), p| (s + p.low, e + p.high));
            Some((end - start).max(0) as u64)
        }
        _ => None,
    };
    // Without a warmup, messages written before the run count too (their age at read).
    let warmup_unix_ns = if spec.warmup.is_zero() {
        0
    } else {
        unix_ns() + spec.warmup.as_nanos() as u64
    };
    if let Some(c) = &spec.consume {
        let starts: Vec<(i32, i64)> = parts
            .iter()
            .map(|p| {
                (
                    p.id,
                    match c.start {
                        StartAt::Earliest => p.low,
                        StartAt::Latest => p.high,
                    },
                )
            })
            .collect();
        if let Some(g) = &c.group {
            let (b, t, g, s) = (
                spec.bootstrap.clone(),
                spec.topic.clone(),
                g.clone(),
                starts.clone(),
            );
            tokio::task::spawn_blocking(move || commit_group_start(&b, &t, &g, &s)).await??;
        }
        for i in 0..c.consumers.max(1) {
            let stats = Arc::new(WorkerStats::default());
            consumer_stats.push(Arc::clone(&stats));
            let held = Arc::new(AtomicUsize::new(0));
            assigned.push(Arc::clone(&held));
            let assignment = if c.group.is_some() {
                Vec::new()
            } else {
                starts
                    .iter()
                    .copied()
                    .skip(i)
                    .step_by(c.consumers.max(1))
                    .collect()
            };
            let job = ConsumerJob {
                spec: c.clone(),
                bootstrap: spec.bootstrap.clone(),
                topic: spec.topic.clone(),
                assignment,
                warmup_unix_ns,
                stop: Arc::clone(&stop_consumers),
                stats,
                assigned: held,
            };
            let leaders = leaders.clone();
            threads.push(std::thread::spawn(move || match client {
                Client::Rdkafka => run_consumer(job),
                Client::Native => super::native::run_consumer(job, &leaders),
            }));
        }
        // Producers start once every partition has a consumer.
        let deadline = Instant::now() + Duration::from_secs(60);
        while assigned
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum::<usize>()
            < parts.len()
        {
            if Instant::now() > deadline {
                stop_consumers.store(true, Ordering::Relaxed);
                anyhow::bail!("consumers were not assigned all partitions within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    if let Some(p) = &spec.produce {
        let n = p.producers.max(1);
        let counts = spec.messages.map(|m| shares(m, n));
        for i in 0..n {
            let stats = Arc::new(WorkerStats::default());
            producer_stats.push(Arc::clone(&stats));
            let job = ProducerJob {
                spec: p.clone(),
                bootstrap: spec.bootstrap.clone(),
                topic: spec.topic.clone(),
                messages: counts.as_ref().map(|c| c[i]),
                rate: p.rate.map(|r| r as f64 / n as f64),
                start,
                warmup: spec.warmup,
                stop: Arc::clone(&stop_producers),
                stats,
            };
            let leaders = leaders.clone();
            producer_threads.push(std::thread::spawn(move || match client {
                Client::Rdkafka => run_producer(job),
                Client::Native => super::native::run_producer(job, &leaders),
            }));
        }
    }
    let producing = spec.produce.is_some();
    let mut series = Vec::new();
    let (mut last_p, mut last_pb, mut last_c, mut last_cb) = (0, 0, 0, 0);
    let mut last_t = 0.0;
    let mut producers_done_at: Option<Instant> = None;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    loop {
        // A sample each second; a consume by message count ends as soon as it has them
        // (its time is not rounded up to the next second).
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !producing
                && consume_target.is_some_and(|n| sum(&consumer_stats, |s| &s.messages) >= n)
            {
                break;
            }
        }
        let t = start.elapsed().as_secs_f64();
        let dt = (t - last_t).max(1e-6);
        let (p, pb) = (
            sum(&producer_stats, |s| &s.messages),
            sum(&producer_stats, |s| &s.bytes),
        );
        let (c, cb) = (
            sum(&consumer_stats, |s| &s.messages),
            sum(&consumer_stats, |s| &s.bytes),
        );
        let sample = Sample {
            t,
            produced_msgs_per_s: (p - last_p) as f64 / dt,
            produced_mb_per_s: (pb - last_pb) as f64 / dt / 1e6,
            consumed_msgs_per_s: (c - last_c) as f64 / dt,
            consumed_mb_per_s: (cb - last_cb) as f64 / dt / 1e6,
            produce_p99_ms: interval(&producer_stats),
            e2e_p99_ms: interval(&consumer_stats),
        };
        if spec.progress {
            let mut line = format!("[{t:6.1}s]");
            if producing {
                line += &format!(
                    " produced {p} ({:.0} msgs/s, {:.1} MB/s, p99 {})",
                    sample.produced_msgs_per_s,
                    sample.produced_mb_per_s,
                    sample
                        .produce_p99_ms
                        .map_or("-".into(), |v| format!("{v:.2} ms"))
                );
            }
            if spec.consume.is_some() {
                line += &format!(
                    " consumed {c} ({:.0} msgs/s, {:.1} MB/s, e2e p99 {})",
                    sample.consumed_msgs_per_s,
                    sample.consumed_mb_per_s,
                    sample
                        .e2e_p99_ms
                        .map_or("-".into(), |v| format!("{v:.2} ms"))
                );
            }
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
        series.push(sample);
        (last_p, last_pb, last_c, last_cb, last_t) = (p, pb, c, cb, t);
        // Producers stop by count (their threads end) or by duration.
        if spec.duration.is_some_and(|d| start.elapsed() >= d) {
            stop_producers.store(true, Ordering::Relaxed);
        }
        let producer_errors = sum(&producer_stats, |s| &s.errors);
        // Finished = every producer thread has flushed and exited, so `p` is final
        // before the consumers are checked against it.
        let producers_finished = !producing
            || (producer_threads.iter().all(|t| t.is_finished())
                && (stop_producers.load(Ordering::Relaxed)
                    || spec.messages.is_some_and(|m| p + producer_errors >= m)));
        // The threads have exited: their final deliveries are in now.
        let p = if producers_finished && producing {
            sum(&producer_stats, |s| &s.messages)
        } else {
            p
        };
        if producing && producers_finished && producers_done_at.is_none() {
            producers_done_at = Some(Instant::now());
        }
        let consumers_finished = match (&spec.consume, producing) {
            (None, _) => true,
            // Tail/mixed: the consumers have what the producers wrote.
            (Some(_), true) => {
                producers_finished
                    && (c >= p
                        || producers_done_at.is_some_and(|d| d.elapsed() > spec.drain_timeout))
            }
            (Some(_), false) => {
                consume_target.is_some_and(|n| c >= n)
                    || spec.duration.is_some_and(|d| start.elapsed() >= d)
            }
        };
        if producers_finished && consumers_finished {
            break;
        }
        if threads
            .iter()
            .chain(&producer_threads)
            .all(|t| t.is_finished())
        {
            break;
        }
    }
    stop_producers.store(true, Ordering::Relaxed);
    stop_consumers.store(true, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    if spec.progress && tty {
        eprintln!();
    }
    for t in producer_threads.into_iter().chain(threads) {
        match t.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("a bench thread panicked"),
        }
    }
    let cpu = cpu_seconds() - cpu_start;
    // Producers' throughput is over their own sending time, not the consumers' drain.
    let produce_secs = producer_stats
        .iter()
        .map(|s| s.finished_ns.load(Ordering::Relaxed))
        .max()
        .filter(|ns| *ns > 0)
        .map_or(seconds, |ns| ns as f64 / 1e9);
    let produced = producing.then(|| {
        Flow::new(
            sum(&producer_stats, |s| &s.messages),
            sum(&producer_stats, |s| &s.bytes),
            sum(&producer_stats, |s| &s.errors),
            produce_secs,
        )
    });
    let consumed = spec.consume.as_ref().map(|_| {
        Flow::new(
            sum(&consumer_stats, |s| &s.messages),
            sum(&consumer_stats, |s| &s.bytes),
            sum(&consumer_stats, |s| &s.errors),
            seconds,
        )
    });
    let moved = produced.as_ref().map_or(0, |f| f.bytes) + consumed.as_ref().map_or(0, |f| f.bytes);
    if let (Some(n), Some(c)) = (consume_target, &consumed)
        && c.messages < n
    {
        anyhow::bail!("consumed {} of {n} messages", c.messages);
    }
    Ok(Report {
        scenario: spec.scenario.clone(),
        client: match spec.client {
            Client::Rdkafka => "rdkafka",
            Client::Native => "native",
        }
        .into(),
        bootstrap: spec.bootstrap.clone(),
        topic: spec.topic.clone(),
        message_bytes: spec.produce.as_ref().map_or(0, |p| p.size),
        target_msgs_per_s: spec.produce.as_ref().and_then(|p| p.rate),
        seconds,
        produced,
        consumed,
        produce_latency: merged(&producer_stats).summary(),
        e2e_latency: merged(&consumer_stats).summary(),
        client_cpu_cores: cpu / seconds.max(1e-9),
        client_cpu_s_per_gb: cpu / (moved as f64 / 1e9).max(1e-12),
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for (total, n) in [(10, 3), (0, 4), (7, 1), (1_000_001, 8), (3, 5)] {
            let s = shares(total, n);
            assert_eq!(s.len(), n.max(1));
            assert_eq!(s.iter().sum::<u64>(), total);
            assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
        }
        assert_eq!(shares(5, 0), vec![5]);
    }

    #[test]
    fn cpu_time_advances() {
        let a = cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() > a);
    }
}
