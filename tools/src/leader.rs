//! `ringmq leader elect`: preferred-leader (or unclean) election on demand through Kafka's
//! ElectLeaders API, against any broker (it forwards to the active controller) — what
//! `kafka-leader-election` does, e.g. after a rolling restart left leadership skewed.

use clap::{Subcommand, ValueEnum};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{ElectLeadersRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ElectionType {
    /// The first assigned replica leads again, if it is live and in sync.
    Preferred,
    /// A partition without a leader gets any live replica (may lose records).
    Unclean,
}

#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Elect leaders: every partition (default) or those of --topic [--partition ...].
    Elect {
        #[arg(long = "type", value_enum, default_value = "preferred")]
        election: ElectionType,
        /// Only this topic's partitions.
        #[arg(long, short = 't')]
        topic: Option<String>,
        /// Only these partitions of --topic (repeatable).
        #[arg(long, short = 'p', requires = "topic")]
        partition: Vec<i32>,
    },
}

/// Kafka's ELECTION_NOT_NEEDED.
const ELECTION_NOT_NEEDED: i16 = 84;

pub async fn run(bootstrap: &str, cmd: LeaderCommand) -> anyhow::Result<()> {
    let LeaderCommand::Elect {
        election,
        topic,
        partition,
    } = cmd;
    let partitions = match (&topic, partition.is_empty()) {
        (None, _) => None,
        (Some(t), false) => Some(vec![
            TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_string(t.clone())))
                .with_partitions(partition),
        ]),
        (Some(t), true) => {
            let count = crate::topic::partition_count(bootstrap, t)?;
            Some(vec![
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions((0..count).collect()),
            ])
        }
    };
    let req = ElectLeadersRequest::default()
        .with_election_type(match election {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        })
        .with_topic_partitions(partitions)
        .with_timeout_ms(30_000);
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let mut wire = crate::bench::Wire::connect(first)?;
    let resp = wire.call(2, &req)?;
    anyhow::ensure!(
        resp.error_code == 0,
        "the election was refused (error {})",
        resp.error_code
    );
    let (mut elected, mut unneeded, mut failed) = (0, 0, 0);
    for t in &resp.replica_election_results {
        for p in &t.partition_result {
            let message = p.error_message.as_deref().unwrap_or("");
            match p.error_code {
                0 => {
                    elected += 1;
                    println!("{}-{}: elected", t.topic.0, p.partition_id);
                }
                ELECTION_NOT_NEEDED => {
                    unneeded += 1;
                    println!(
                        "{}-{}: no election needed ({message})",
                        t.topic.0, p.partition_id
                    );
                }
                code => {
                    failed += 1;
                    println!(
                        "{}-{}: failed, error {code} ({message})",
                        t.topic.0, p.partition_id
                    );
                }
            }
        }
    }
    println!("{elected} elected, {unneeded} needed none, {failed} failed");
    anyhow::ensure!(failed == 0, "{failed} partition(s) could not be elected");
    Ok(())
}
