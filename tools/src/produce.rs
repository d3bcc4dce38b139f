//! `ringmq produce TOPIC`: one message per stdin line, with an optional key separator and
//! headers; exits non-zero if any message was not acknowledged.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::key_value;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long, short = 'K')]
    key_separator: Option<String>,
    /// Header KEY=VALUE added to every message (repeatable).
    #[arg(long = "header", short = 'H', value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Partition (default: the key's hash, or round robin).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
}

pub async fn run(bootstrap: &str, args: ProduceArgs) -> anyhow::Result<()> {
    let producer: FutureProducer = crate::client_config::apply(&mut ClientConfig::new())
        .set("bootstrap.servers", bootstrap)
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("linger.ms", "5")
        .create()
        .context("creating the producer")?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending = Vec::new();
    let mut count = 0u64;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut headers = OwnedHeaders::new();
        for (k, v) in &args.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let producer = producer.clone();
        let topic = args.topic.clone();
        let partition = args.partition;
        pending.push(tokio::spawn(async move {
            let mut record = FutureRecord::to(&topic)
                .payload(value.as_bytes())
                .headers(headers);
            if let Some(k) = &key {
                record = record.key(k.as_bytes());
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
        }));
        count += 1;
    }
    let mut failed = 0u64;
    for p in pending {
        let outcome = match p.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = outcome {
            failed += 1;
            if failed == 1 {
                eprintln!("ringmq: delivery failed: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {count} messages were not acknowledged");
    }
    eprintln!("produced {count} messages to {}", args.topic);
    Ok(())
}
