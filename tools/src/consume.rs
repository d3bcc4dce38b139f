//! `ringmq consume TOPIC`: prints messages (value, optionally key and headers) from every
//! partition or one, from the beginning or the end, until `--max-messages` or until no
//! message arrived for `--idle-timeout-ms`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Start at the earliest offset (default: only new messages).
    #[arg(long)]
    from_beginning: bool,
    /// Only this partition.
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    max_messages: Option<u64>,
    /// Stop when no message arrived for this long (0: never).
    #[arg(long, default_value_t = 0)]
    idle_timeout_ms: u64,
    /// Print KEY<separator>VALUE.
    #[arg(long)]
    print_key: bool,
    /// Print headers after the value, as [k=v,...].
    #[arg(long)]
    print_headers: bool,
    /// Separator between key, value and headers.
    #[arg(long, default_value = "\t")]
    separator: String,
}

pub async fn run(bootstrap: &str, args: ConsumeArgs) -> anyhow::Result<()> {
    let consumer: BaseConsumer = crate::client_config::apply(&mut ClientConfig::new())
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ringmq-console")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating the consumer")?;
    let md = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))
        .context("fetching metadata")?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == args.topic)
        .context("topic not in metadata")?;
    if let Some(e) = topic.error() {
        anyhow::bail!(
            "topic {}: {}",
            args.topic,
            rdkafka::error::RDKafkaErrorCode::from(e)
        );
    }
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut tpl = TopicPartitionList::new();
    for p in topic
        .partitions()
        .iter()
        .map(|p| p.id())
        .filter(|id| args.partition.is_none_or(|want| want == *id))
    {
        tpl.add_partition_offset(&args.topic, p, start)?;
    }
    if tpl.count() == 0 {
        anyhow::bail!("topic {} has no partition {:?}", args.topic, args.partition);
    }
    consumer.assign(&tpl)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    let mut last = Instant::now();
    loop {
        if args.max_messages.is_some_and(|m| count >= m) {
            break;
        }
        if args.idle_timeout_ms > 0 && last.elapsed() >= Duration::from_millis(args.idle_timeout_ms)
        {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            out.flush()?;
            continue;
        };
        // librdkafka reports transient conditions (a broker restarting) as errors and
        // recovers by itself; only fatal ones end the consumer.
        let msg = match msg {
            Ok(m) => m,
            Err(e)
                if e.rdkafka_error_code()
                    .is_some_and(|c| c == rdkafka::error::RDKafkaErrorCode::Fatal) =>
            {
                return Err(e).context("consuming");
            }
            Err(e) => {
                eprintln!("ringmq: {e} (retrying)");
                continue;
            }
        };
        last = Instant::now();
        count += 1;
        if args.print_key {
            out.write_all(msg.key().unwrap_or_default())?;
            out.write_all(args.separator.as_bytes())?;
        }
        out.write_all(msg.payload().unwrap_or_default())?;
        if args.print_headers {
            out.write_all(args.separator.as_bytes())?;
            let headers: Vec<String> = msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            format!(
                                "{}={}",
                                h.key,
                                String::from_utf8_lossy(h.value.unwrap_or_default())
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            write!(out, "[{}]", headers.join(","))?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
