//! `ringmq topic ...`: topic administration through the Kafka Admin APIs.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::key_value;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Let a user (or every user, `*`) publish to, subscribe to, or both, a topic
    /// (Kafka ACLs: WRITE, READ; the broker needs an authorizer).
    Grant(crate::acl::GrantArgs),
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (-1: the broker's num.partitions).
        #[arg(long, short = 'p', default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor (-1: the broker's default).
        #[arg(long, short = 'r', default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i32,
        /// Topic config KEY=VALUE (repeatable), e.g. retention.ms=3600000, flush.messages=1.
        #[arg(long = "config", short = 'c', value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions (leader, replicas, ISR) and configs.
    Describe { name: String },
    /// Change a topic's configs and/or grow its partition count.
    Alter {
        name: String,
        /// Topic config KEY=VALUE to set (repeatable); other overrides are kept.
        #[arg(long = "config", short = 'c', value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// New (larger) partition count.
        #[arg(long, short = 'p')]
        partitions: Option<usize>,
    },
    /// Delete a topic.
    Delete { name: String },
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    crate::client_config::apply(&mut ClientConfig::new())
        .set("bootstrap.servers", bootstrap)
        // Describing a topic must not create it on brokers with auto-creation on.
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating the admin client")
}

pub async fn run(bootstrap: &str, cmd: TopicCommand) -> anyhow::Result<()> {
    let cmd = match cmd {
        TopicCommand::Grant(args) => return crate::acl::grant(bootstrap, args),
        other => other,
    };
    let admin = admin(bootstrap)?;
    let opts = AdminOptions::new()
        .request_timeout(Some(TIMEOUT))
        .operation_timeout(Some(TIMEOUT));
    match cmd {
        TopicCommand::Grant(_) => {}
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut t = NewTopic::new(
                &name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            );
            for (k, v) in &configs {
                t = t.set(k, v);
            }
            for r in admin.create_topics(&[t], &opts).await? {
                r.map_err(|(topic, code)| anyhow::anyhow!("cannot create topic {topic}: {code}"))?;
            }
            println!("created topic {name}");
        }
        TopicCommand::List => {
            let md = admin
                .inner()
                .fetch_metadata(None, TIMEOUT)
                .context("fetching metadata")?;
            let mut names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
            names.sort_unstable();
            for n in names {
                println!("{n}");
            }
        }
        TopicCommand::Describe { name } => describe(&admin, &opts, &name).await?,
        TopicCommand::Alter {
            name,
            configs,
            partitions,
        } => {
            if configs.is_empty() && partitions.is_none() {
                bail!("nothing to alter: give --config KEY=VALUE and/or --partitions N");
            }
            if !configs.is_empty() {
                // AlterConfigs replaces the overrides: start from the current ones.
                let mut merged = current_overrides(&admin, &opts, &name).await?;
                for (k, v) in configs {
                    merged.retain(|(ek, _)| *ek != k);
                    merged.push((k, v));
                }
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&name));
                for (k, v) in &merged {
                    alter = alter.set(k, v);
                }
                for r in admin.alter_configs(&[alter], &opts).await? {
                    r.map_err(|(_, code)| {
                        anyhow::anyhow!("cannot alter configs of {name}: {code}")
                    })?;
                }
            }
            if let Some(count) = partitions {
                for r in admin
                    .create_partitions(&[NewPartitions::new(&name, count)], &opts)
                    .await?
                {
                    r.map_err(|(topic, code)| {
                        anyhow::anyhow!("cannot grow {topic} to {count} partitions: {code}")
                    })?;
                }
            }
            println!("altered topic {name}");
        }
        TopicCommand::Delete { name } => {
            for r in admin.delete_topics(&[&name], &opts).await? {
                r.map_err(|(topic, code)| anyhow::anyhow!("cannot delete topic {topic}: {code}"))?;
            }
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

async fn current_overrides(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    name: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(name)], opts)
        .await?;
    let mut out = Vec::new();
    for r in results {
        let r = r.map_err(|code| anyhow::anyhow!("cannot describe {name}: {code}"))?;
        for e in r.entries {
            if matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic)
                && let Some(v) = e.value
            {
                out.push((e.name, v));
            }
        }
    }
    Ok(out)
}

/// `name` in a metadata answer, or why it is not usable.
fn find_topic<'a>(
    md: &'a rdkafka::metadata::Metadata,
    name: &str,
) -> anyhow::Result<&'a rdkafka::metadata::MetadataTopic> {
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == name)
        .context("topic not in metadata")?;
    if let Some(e) = topic.error() {
        bail!(
            "topic {name}: {}",
            rdkafka::error::RDKafkaErrorCode::from(e)
        );
    }
    Ok(topic)
}

/// How many partitions `name` has (an error if the cluster does not know it).
pub fn partition_count(bootstrap: &str, name: &str) -> anyhow::Result<i32> {
    let consumer: rdkafka::consumer::BaseConsumer =
        crate::client_config::apply(&mut ClientConfig::new())
            .set("bootstrap.servers", bootstrap)
            .set("allow.auto.create.topics", "false")
            .create()
            .context("creating a metadata client")?;
    let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, Some(name), TIMEOUT)
        .context("fetching metadata")?;
    let topic = find_topic(&md, name)?;
    Ok(topic.partitions().len() as i32)
}

async fn describe(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    name: &str,
) -> anyhow::Result<()> {
    let md = admin
        .inner()
        .fetch_metadata(Some(name), TIMEOUT)
        .context("fetching metadata")?;
    let topic = find_topic(&md, name)?;
    println!(
        "Topic: {name}\tPartitionCount: {}",
        topic.partitions().len()
    );
    for p in topic.partitions() {
        println!(
            "\tPartition: {}\tLeader: {}\tReplicas: {:?}\tIsr: {:?}",
            p.id(),
            p.leader(),
            p.replicas(),
            p.isr()
        );
    }
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(name)], opts)
        .await?;
    println!("Configs:");
    for r in results {
        let r = r.map_err(|code| anyhow::anyhow!("cannot describe configs of {name}: {code}"))?;
        let mut entries = r.entries;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            let source = if matches!(e.source, rdkafka::admin::ConfigSource::DynamicTopic) {
                " (override)"
            } else {
                ""
            };
            println!("\t{}={}{source}", e.name, e.value.unwrap_or_default());
        }
    }
    Ok(())
}
