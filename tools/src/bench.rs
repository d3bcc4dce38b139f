//! `ringmq bench produce|consume`: load against any Kafka-compatible broker through
//! librdkafka, messages generated in-process (no stdin in the way). Prints msgs/s and
//! MB/s as a line and as JSON. The full bench tool (latency percentiles, scenarios,
//! flavor table) grows from here (issue 5).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce N messages of SIZE bytes as fast as the broker takes them.
    Produce(ProduceBench),
    /// Consume a topic from the beginning until N messages were read.
    Consume(ConsumeBench),
}

#[derive(Debug, Args)]
pub struct ProduceBench {
    #[arg(long, short = 't')]
    topic: String,
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    messages: u64,
    #[arg(long, short = 's', default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    #[arg(long, default_value_t = 1_048_576)]
    batch_bytes: u32,
    #[arg(long, default_value = "none")]
    compression: String,
}

#[derive(Debug, Args)]
pub struct ConsumeBench {
    #[arg(long, short = 't')]
    topic: String,
    #[arg(long, short = 'n')]
    messages: u64,
}

pub async fn run(bootstrap: &str, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce(b) => produce(bootstrap, b),
        BenchCommand::Consume(b) => consume(bootstrap, b),
    }
}

fn report(what: &str, messages: u64, bytes: u64, secs: f64) {
    let (mps, mbps) = (messages as f64 / secs, bytes as f64 / secs / 1e6);
    println!("{what}: {messages} messages in {secs:.2} s: {mps:.0} msgs/s, {mbps:.1} MB/s");
    println!(
        "{{\"test\":\"{what}\",\"messages\":{messages},\"seconds\":{secs:.3},\"msgs_per_s\":{mps:.0},\"MB_per_s\":{mbps:.1}}}"
    );
}

fn produce(bootstrap: &str, b: ProduceBench) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", &b.acks)
        .set("linger.ms", b.linger_ms.to_string())
        .set("batch.size", b.batch_bytes.to_string())
        .set("compression.type", &b.compression)
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .context("creating the producer")?;
    let payload: Vec<u8> = (0..b.size).map(|i| (i * 31 % 251) as u8).collect();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < b.messages {
        match producer.send(BaseRecord::<(), [u8]>::to(&b.topic).payload(&payload)) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => anyhow::bail!("produce failed: {e}"),
        }
        if sent.is_multiple_of(4096) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing")?;
    report(
        "produce",
        b.messages,
        b.messages * b.size as u64,
        start.elapsed().as_secs_f64(),
    );
    Ok(())
}

fn consume(bootstrap: &str, b: ConsumeBench) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ringmq-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .context("creating the consumer")?;
    let md = consumer.fetch_metadata(Some(&b.topic), Duration::from_secs(30))?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == b.topic)
        .context("topic not in metadata")?;
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        tpl.add_partition_offset(&b.topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    while count < b.messages {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.context("consuming")?;
            count += 1;
            bytes += m.payload_len() as u64;
        }
        if start.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("only {count} of {} messages after 300 s", b.messages);
        }
    }
    report("consume", count, bytes, start.elapsed().as_secs_f64());
    Ok(())
}
