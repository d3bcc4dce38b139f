//! `ringmq bench`: load tests against any Kafka-compatible broker, on librdkafka.
//!
//! Scenarios: `produce`, `consume`, `e2e` (end-to-end latency at a steady rate) and
//! `mixed` (read:write 1:1, the seeds' traffic rule), plus `flavor-table`, which finds
//! each core profile's sustainable maximum and prints it beside the seeds' published row.
//! Every scenario prints a live progress line (stderr), a table and a JSON line (stdout),
//! and optionally a CSV time series and an HTML plot.

mod flavor;
mod native;
pub(crate) use native::Wire;
pub mod stats;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use stats::Report;
use workload::{Client, ConsumeSpec, ProduceSpec, RunSpec, StartAt};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce messages (flat out or at a target rate) and measure send→ack latency.
    Produce(ProduceArgs),
    /// Consume a topic (from the earliest offset or the tail) and measure throughput.
    Consume(ConsumeArgs),
    /// End-to-end latency: produce at a steady rate while consumers read the tail.
    E2e(MixedArgs),
    /// Read:write 1:1: producers and tail consumers at once (the seeds' traffic rule).
    Mixed(MixedArgs),
    /// Find each core profile's sustainable maximum and print the seeds' flavor table.
    FlavorTable(flavor::FlavorArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Topic to use; created with --partitions if it does not exist.
    #[arg(long, short = 't', default_value = "ringmq-bench")]
    pub topic: String,
    /// Partitions for a topic the bench creates.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Replication factor for a topic the bench creates (-1: the broker's
    /// default.replication.factor).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1..=3))]
    pub replication_factor: i32,
}

#[derive(Debug, Clone, Args)]
pub struct LengthArgs {
    /// Messages to produce (consume: to read). Default: 1,000,000 unless --duration.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// Run for this many seconds instead of a message count.
    #[arg(long, short = 'd', value_parser = parse_seconds)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct ProducerArgs {
    /// Message size in bytes (at least 16: the bench's timestamp header).
    #[arg(long, short = 's', default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=100_000_000))]
    pub size: u64,
    /// Target rate in messages per second over all producers; 0 = as fast as possible.
    #[arg(long, short = 'r', default_value_t = 0)]
    pub rate: u64,
    /// Producer clients (threads), each with its share of the rate and count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub producers: u64,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all", "-1"])]
    pub acks: String,
    /// compression.type: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
    /// linger.ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u32,
    /// batch.size in bytes.
    #[arg(long, default_value_t = 1_048_576)]
    pub batch_bytes: u32,
    /// Extra producer property (librdkafka), KEY=VALUE; repeatable.
    #[arg(long = "producer-property", value_parser = crate::key_value)]
    pub producer_properties: Vec<(String, String)>,
}

#[derive(Debug, Clone, Args)]
pub struct ConsumerArgs {
    /// Consumer clients (threads).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub consumers: u64,
    /// Consume as this consumer group (subscribe); default: assign partitions directly.
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Extra consumer property (librdkafka), KEY=VALUE; repeatable.
    #[arg(long = "consumer-property", value_parser = crate::key_value)]
    pub consumer_properties: Vec<(String, String)>,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Client library for the traffic: rdkafka (librdkafka: every setting, compression,
    /// groups) or native (the bench's own Produce/Fetch client: uncompressed, assigned
    /// partitions, a fraction of librdkafka's CPU, so more of a shared machine is left
    /// to the broker).
    #[arg(long, value_enum, default_value = "rdkafka")]
    pub client: Client,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Write the report as JSON to this file (it is also the last line on stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the per-second time series as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write an HTML page plotting throughput and p99 latency over time.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    topic: TopicArgs,
    #[command(flatten)]
    length: LengthArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    topic: TopicArgs,
    #[command(flatten)]
    length: LengthArgs,
    #[command(flatten)]
    consumer: ConsumerArgs,
    /// Where to start: earliest (what is stored) or latest (only new messages).
    #[arg(long, default_value = "earliest", value_parser = ["earliest", "latest"])]
    from: String,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct MixedArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    topic: TopicArgs,
    #[command(flatten)]
    length: LengthArgs,
    #[command(flatten)]
    producer: ProducerArgs,
    #[command(flatten)]
    consumer: ConsumerArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// `10`, `2.5`, `10s`, `500ms`, `2m`.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10, 10s, 500ms, 2m)"))?;
    if !(v > 0.0 && v * scale <= 7.0 * 86_400.0) {
        return Err(format!("{s:?}: must be more than 0 and at most a week"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

impl ProducerArgs {
    pub fn spec(&self, default_rate: Option<u64>) -> ProduceSpec {
        let mut config = vec![
            ("acks".to_owned(), self.acks.clone()),
            ("compression.type".to_owned(), self.compression.clone()),
            ("linger.ms".to_owned(), self.linger_ms.to_string()),
            ("batch.size".to_owned(), self.batch_bytes.to_string()),
        ];
        config.extend(self.producer_properties.iter().cloned());
        ProduceSpec {
            size: self.size as usize,
            rate: if self.rate > 0 {
                Some(self.rate)
            } else {
                default_rate
            },
            producers: self.producers as usize,
            config,
        }
    }
}

impl ConsumerArgs {
    pub fn spec(&self, start: StartAt) -> ConsumeSpec {
        ConsumeSpec {
            consumers: self.consumers as usize,
            group: self.group.clone(),
            start,
            config: self.consumer_properties.clone(),
        }
    }
}

impl TopicArgs {
    /// Creates the bench topic as asked unless it exists.
    pub async fn ensure(&self, bootstrap: &str) -> anyhow::Result<()> {
        ensure_topic(
            bootstrap,
            &self.topic,
            self.partitions,
            self.replication_factor,
        )
        .await
    }
}

/// Creates `topic` with `partitions` unless it exists.
pub async fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        crate::client_config::apply(&mut ClientConfig::new())
            .set("bootstrap.servers", bootstrap)
            .create()
            .context("creating an admin client")?;
    let new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .context("creating the topic")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Prints the table and the JSON line, and writes the requested files.
pub fn emit(report: &Report, out: &OutputArgs) -> anyhow::Result<()> {
    print!("{}", report.table());
    println!("{}", report.json());
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    if let Some(p) = &out.json {
        write(p, report.json() + "\n")?;
    }
    if let Some(p) = &out.csv {
        write(p, report.csv())?;
    }
    if let Some(p) = &out.plot {
        write(p, report.html())?;
    }
    Ok(())
}

fn length(l: &LengthArgs, default_messages: Option<u64>) -> (Option<u64>, Option<Duration>) {
    match (l.messages, l.duration) {
        (None, None) => (default_messages, None),
        other => other,
    }
}

pub async fn run(bootstrap: &str, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce(a) => {
            a.topic.ensure(bootstrap).await?;
            let (messages, duration) = length(&a.length, Some(1_000_000));
            let spec = RunSpec {
                scenario: "produce".into(),
                client: a.client.client,
                bootstrap: bootstrap.into(),
                topic: a.topic.topic.clone(),
                produce: Some(a.producer.spec(None)),
                consume: None,
                messages,
                duration,
                warmup: Duration::ZERO,
                progress: !a.output.quiet,
                drain_timeout: Duration::from_secs(10),
            };
            emit(&workload::run(&spec).await?, &a.output)
        }
        BenchCommand::Consume(a) => {
            let start = if a.from == "latest" {
                StartAt::Latest
            } else {
                StartAt::Earliest
            };
            if start == StartAt::Latest
                && a.length.messages.is_none()
                && a.length.duration.is_none()
            {
                anyhow::bail!("--from latest needs --messages or --duration");
            }
            let spec = RunSpec {
                scenario: "consume".into(),
                client: a.client.client,
                bootstrap: bootstrap.into(),
                topic: a.topic.topic.clone(),
                produce: None,
                consume: Some(a.consumer.spec(start)),
                messages: a.length.messages,
                duration: a.length.duration,
                warmup: Duration::ZERO,
                progress: !a.output.quiet,
                drain_timeout: Duration::from_secs(10),
            };
            emit(&workload::run(&spec).await?, &a.output)
        }
        BenchCommand::E2e(a) => mixed(bootstrap, a, "e2e", Some(1000)).await,
        BenchCommand::Mixed(a) => mixed(bootstrap, a, "mixed", None).await,
        BenchCommand::FlavorTable(a) => flavor::run(bootstrap, a).await,
    }
}

async fn mixed(
    bootstrap: &str,
    a: MixedArgs,
    scenario: &str,
    default_rate: Option<u64>,
) -> anyhow::Result<()> {
    a.topic.ensure(bootstrap).await?;
    let default_length = if scenario == "e2e" {
        None
    } else {
        Some(1_000_000)
    };
    let (mut messages, mut duration) = length(&a.length, default_length);
    if messages.is_none() && duration.is_none() {
        duration = Some(Duration::from_secs(10));
        messages = None;
    }
    let spec = RunSpec {
        scenario: scenario.into(),
        client: a.client.client,
        bootstrap: bootstrap.into(),
        topic: a.topic.topic.clone(),
        produce: Some(a.producer.spec(default_rate)),
        consume: Some(a.consumer.spec(StartAt::Latest)),
        messages,
        duration,
        // Timed runs leave out the first half second (connections, metadata); a count
        // may be over before then.
        warmup: if duration.is_some() {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        },
        progress: !a.output.quiet,
        drain_timeout: Duration::from_secs(10),
    };
    emit(&workload::run(&spec).await?, &a.output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BenchCommand,
    }

    fn parse(args: &[&str]) -> Result<BenchCommand, String> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|c| c.cmd)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_seconds("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_seconds("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_seconds("2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "0", "-1", "abc", "1h", "nan", "inf", "1e9"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn produce_arguments_become_librdkafka_settings() {
        let BenchCommand::Produce(a) = parse(&[
            "produce",
            "--rate",
            "5000",
            "--acks",
            "1",
            "--compression",
            "lz4",
            "--producers",
            "3",
            "--producer-property",
            "enable.idempotence=true",
        ])
        .unwrap() else {
            panic!("not produce")
        };
        let spec = a.producer.spec(None);
        assert_eq!(spec.rate, Some(5000));
        assert_eq!(spec.producers, 3);
        assert_eq!(spec.size, 1024);
        let get = |k: &str| {
            spec.config
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("acks").as_deref(), Some("1"));
        assert_eq!(get("compression.type").as_deref(), Some("lz4"));
        assert_eq!(get("enable.idempotence").as_deref(), Some("true"));
        assert_eq!(a.topic.partitions, 6);
    }

    #[test]
    fn rate_zero_means_max_unless_the_scenario_has_a_default() {
        let BenchCommand::E2e(a) = parse(&["e2e"]).unwrap() else {
            panic!("not e2e")
        };
        assert_eq!(a.producer.spec(Some(1000)).rate, Some(1000));
        assert_eq!(a.producer.spec(None).rate, None);
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        for (args, words) in [
            (&["produce", "--size", "8"][..], "16"),
            (&["produce", "--acks", "2"][..], "possible values"),
            (
                &["produce", "--compression", "brotli"][..],
                "possible values",
            ),
            (&["produce", "--duration", "soon"][..], "not a duration"),
            (&["produce", "--producers", "0"][..], "0"),
            (&["produce", "--partitions", "0"][..], "0"),
            (&["consume", "--from", "middle"][..], "possible values"),
            (
                &["mixed", "--producer-property", "novalue"][..],
                "KEY=VALUE",
            ),
            (&["flavor-table", "--p99-ms", "0"][..], "p99"),
            (&["flavor-table", "--clients", "0"][..], "0"),
            (&["flavor-table", "--partitions", "0"][..], "0"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(words), "{args:?}: {e}");
        }
    }
}
