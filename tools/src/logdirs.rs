//! `ringmq logdirs`: disk usage per broker, log directory, topic and partition
//! (DescribeLogDirs on every broker, SPEC O7), and `ringmq logdirs move` to move a
//! replica to another log directory of its broker (AlterReplicaLogDirs) — against any
//! Kafka-compatible cluster.

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use clap::Subcommand;
use kafka_protocol::messages::alter_replica_log_dirs_request::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic,
};
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::{AlterReplicaLogDirsRequest, DescribeLogDirsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::bench::Wire;

#[derive(Debug, Subcommand)]
pub enum LogDirsCommand {
    /// Each broker's log directories: capacity, usage, and every partition's size.
    Describe {
        /// Only these brokers (repeatable; default all).
        #[arg(long)]
        broker: Vec<i32>,
        /// Only this topic's partitions.
        #[arg(long, short = 't')]
        topic: Option<String>,
    },
    /// Move a replica to another log directory of its broker.
    Move {
        #[arg(long)]
        broker: i32,
        #[arg(long, short = 't')]
        topic: String,
        #[arg(long, short = 'p')]
        partition: i32,
        /// The target directory, one of the broker's log.dirs.
        #[arg(long)]
        dir: String,
    },
}

/// Every live broker's id and address.
fn brokers(bootstrap: &str) -> anyhow::Result<BTreeMap<i32, String>> {
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let mut wire = Wire::connect(first)?;
    let resp = wire.call(
        12,
        &MetadataRequest::default().with_topics(Some(Vec::new())),
    )?;
    Ok(resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect())
}

fn human(bytes: i64) -> String {
    crate::reassign::human(bytes as f64)
}

pub async fn run(bootstrap: &str, cmd: LogDirsCommand) -> anyhow::Result<()> {
    let all = brokers(bootstrap)?;
    match cmd {
        LogDirsCommand::Describe { broker, topic } => {
            for (id, addr) in all
                .iter()
                .filter(|(id, _)| broker.is_empty() || broker.contains(id))
            {
                let mut wire = Wire::connect(addr)?;
                // Every topic (--topic filters what is printed).
                let req = DescribeLogDirsRequest::default().with_topics(None);
                let resp = wire.call(4, &req)?;
                println!("Broker {id} ({addr})");
                for dir in &resp.results {
                    let used: i64 = dir
                        .topics
                        .iter()
                        .flat_map(|t| t.partitions.iter())
                        .filter(|p| !p.is_future_key)
                        .map(|p| p.partition_size)
                        .sum();
                    let capacity = if dir.total_bytes >= 0 {
                        format!(
                            "{} of {} free",
                            human(dir.usable_bytes),
                            human(dir.total_bytes)
                        )
                    } else {
                        "capacity unknown".into()
                    };
                    println!(
                        "  {}: {} in partitions, {capacity}",
                        dir.log_dir,
                        human(used)
                    );
                    if dir.error_code != 0 {
                        println!("    error {}", dir.error_code);
                    }
                    for t in dir
                        .topics
                        .iter()
                        .filter(|t| topic.as_deref().is_none_or(|n| n == t.name.0.as_str()))
                    {
                        let total: i64 = t.partitions.iter().map(|p| p.partition_size).sum();
                        println!("    {}: {}", t.name.0, human(total));
                        for p in &t.partitions {
                            println!(
                                "      {}-{}: {}{}",
                                t.name.0,
                                p.partition_index,
                                human(p.partition_size),
                                if p.is_future_key {
                                    " (moving here)"
                                } else {
                                    ""
                                }
                            );
                        }
                    }
                }
            }
            Ok(())
        }
        LogDirsCommand::Move {
            broker,
            topic,
            partition,
            dir,
        } => {
            let addr = all
                .get(&broker)
                .with_context(|| format!("broker {broker} is not a live broker"))?;
            let mut wire = Wire::connect(addr)?;
            let req = AlterReplicaLogDirsRequest::default().with_dirs(vec![
                AlterReplicaLogDir::default()
                    .with_path(StrBytes::from_string(dir.clone()))
                    .with_topics(vec![
                        AlterReplicaLogDirTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.clone())))
                            .with_partitions(vec![partition]),
                    ]),
            ]);
            let resp = wire.call(2, &req)?;
            let code = resp
                .results
                .first()
                .and_then(|t| t.partitions.first())
                .map_or(-1, |p| p.error_code);
            ensure!(
                code == 0,
                "broker {broker} refused to move {topic}-{partition} to {dir}: error {code}{}",
                match code {
                    57 => " (LOG_DIR_NOT_FOUND: not one of its log.dirs)",
                    9 => " (REPLICA_NOT_AVAILABLE: it holds no replica of it)",
                    3 => " (UNKNOWN_TOPIC_OR_PARTITION)",
                    _ => "",
                }
            );
            println!(
                "Moving {topic}-{partition} on broker {broker} to {dir}; `ringmq logdirs describe --broker {broker}` shows it as moving until done"
            );
            Ok(())
        }
    }
}
