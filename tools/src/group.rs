//! `ringmq group ...`: consumer groups through the Kafka APIs — list, describe (with lag
//! per partition, like kafka-consumer-groups.sh --describe), delete, and reset-offsets
//! of a stopped group (to earliest, latest, a time, or an offset; with --dry-run).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups and their states.
    List,
    /// Members and, per partition, CURRENT-OFFSET, LOG-END-OFFSET, LAG and owner.
    Describe { group: String },
    /// Delete a group (only one without members).
    Delete { group: String },
    /// Move a stopped group's committed offsets.
    ResetOffsets(ResetArgs),
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    group: String,
    #[arg(long, short = 't')]
    topic: String,
    /// Only this partition (default: all).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    #[arg(long, group = "target")]
    to_earliest: bool,
    #[arg(long, group = "target")]
    to_latest: bool,
    /// Milliseconds since the epoch: the first offset at or after that time.
    #[arg(long, group = "target")]
    to_datetime: Option<i64>,
    #[arg(long, group = "target")]
    to_offset: Option<i64>,
    /// Print the plan without committing it.
    #[arg(long)]
    dry_run: bool,
}

fn consumer(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    crate::client_config::apply(&mut ClientConfig::new())
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating a client")
}

pub async fn run(bootstrap: &str, cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List => {
            let c = consumer(bootstrap, "ringmq-cli")?;
            let groups = c
                .fetch_group_list(None, TIMEOUT)
                .context("listing groups")?;
            println!("{:<40} {:<20} MEMBERS", "GROUP", "STATE");
            for g in groups.groups() {
                println!("{:<40} {:<20} {}", g.name(), g.state(), g.members().len());
            }
        }
        GroupCommand::Describe { group } => describe(bootstrap, &group)?,
        GroupCommand::Delete { group } => {
            let admin: AdminClient<DefaultClientContext> =
                crate::client_config::apply(&mut ClientConfig::new())
                    .set("bootstrap.servers", bootstrap)
                    .create()
                    .context("creating the admin client")?;
            for r in admin
                .delete_groups(
                    &[&group],
                    &AdminOptions::new().request_timeout(Some(TIMEOUT)),
                )
                .await?
            {
                r.map_err(|(g, code)| anyhow::anyhow!("cannot delete group {g}: {code}"))?;
            }
            println!("deleted group {group}");
        }
        GroupCommand::ResetOffsets(args) => reset(bootstrap, args)?,
    }
    Ok(())
}

/// `(topic, partition) -> (member id, host, client id)`.
type Owners = BTreeMap<(String, i32), (String, String, String)>;

/// The group's state and who owns each partition, from the members' consumer-protocol
/// assignments.
fn owners(c: &BaseConsumer, group: &str) -> anyhow::Result<(String, Owners)> {
    let list = c
        .fetch_group_list(Some(group), TIMEOUT)
        .context("describing the group")?;
    let mut out = BTreeMap::new();
    let mut state = String::from("Dead");
    for g in list.groups().iter().filter(|g| g.name() == group) {
        state = g.state().to_owned();
        for m in g.members() {
            for (topic, partition) in decode_assignment(m.assignment().unwrap_or_default()) {
                out.insert(
                    (topic, partition),
                    (
                        m.id().to_owned(),
                        m.client_host().to_owned(),
                        m.client_id().to_owned(),
                    ),
                );
            }
        }
    }
    Ok((state, out))
}

/// Kafka's consumer protocol assignment: version i16, [topic string, [partition i32]], user data.
fn decode_assignment(b: &[u8]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let mut at = 2usize;
    let read_i32 = |b: &[u8], at: &mut usize| -> Option<i32> {
        let v = i32::from_be_bytes(b.get(*at..*at + 4)?.try_into().ok()?);
        *at += 4;
        Some(v)
    };
    let Some(topics) = read_i32(b, &mut at) else {
        return out;
    };
    for _ in 0..topics.max(0) {
        let Some(len) = b.get(at..at + 2).map(|x| i16::from_be_bytes([x[0], x[1]])) else {
            break;
        };
        at += 2;
        let Some(topic) = b
            .get(at..at + len.max(0) as usize)
            .map(|x| String::from_utf8_lossy(x).into_owned())
        else {
            break;
        };
        at += len.max(0) as usize;
        let Some(n) = read_i32(b, &mut at) else { break };
        for _ in 0..n.max(0) {
            if let Some(p) = read_i32(b, &mut at) {
                out.push((topic.clone(), p));
            }
        }
    }
    out
}

/// The group's committed offsets, over every topic's partitions.
fn committed(c: &BaseConsumer) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let md = c
        .fetch_metadata(None, TIMEOUT)
        .context("fetching metadata")?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    let got = c
        .committed_offsets(tpl, TIMEOUT)
        .context("fetching committed offsets")?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.topic().to_owned(), e.partition(), o)),
            _ => None,
        })
        .collect())
}

fn describe(bootstrap: &str, group: &str) -> anyhow::Result<()> {
    let c = consumer(bootstrap, group)?;
    let (state, owners) = owners(&c, group)?;
    let commits = committed(&c)?;
    if state == "Dead" && commits.is_empty() {
        bail!("group {group} does not exist");
    }
    println!("Group: {group}\tState: {state}");
    println!(
        "{:<24} {:>9} {:>14} {:>14} {:>8}  {:<40} {:<16} CLIENT-ID",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST"
    );
    let mut rows: BTreeMap<(String, i32), Option<i64>> = commits
        .into_iter()
        .map(|(t, p, o)| ((t, p), Some(o)))
        .collect();
    for key in owners.keys() {
        rows.entry(key.clone()).or_insert(None);
    }
    for ((topic, partition), current) in rows {
        let (_, end) = c
            .fetch_watermarks(&topic, partition, TIMEOUT)
            .context("fetching the log end offset")?;
        let (member, host, client) = owners
            .get(&(topic.clone(), partition))
            .cloned()
            .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
        let (cur, lag) = match current {
            Some(o) => (o.to_string(), (end - o).max(0).to_string()),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{topic:<24} {partition:>9} {cur:>14} {end:>14} {lag:>8}  {member:<40} {host:<16} {client}"
        );
    }
    Ok(())
}

fn reset(bootstrap: &str, a: ResetArgs) -> anyhow::Result<()> {
    let c = consumer(bootstrap, &a.group)?;
    let (state, _) = owners(&c, &a.group)?;
    if !matches!(state.as_str(), "Empty" | "Dead") {
        bail!(
            "group {} is {state}: stop its consumers before resetting offsets",
            a.group
        );
    }
    let md = c
        .fetch_metadata(Some(&a.topic), TIMEOUT)
        .context("fetching metadata")?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == a.topic)
        .context("topic not in metadata")?;
    if topic.error().is_some() || topic.partitions().is_empty() {
        bail!("topic {} does not exist", a.topic);
    }
    let partitions: Vec<i32> = topic
        .partitions()
        .iter()
        .map(|p| p.id())
        .filter(|p| a.partition.is_none_or(|w| w == *p))
        .collect();
    if partitions.is_empty() {
        bail!("topic {} has no partition {:?}", a.topic, a.partition);
    }
    let current: BTreeMap<i32, i64> = committed(&c)?
        .into_iter()
        .filter(|(t, _, _)| *t == a.topic)
        .map(|(_, p, o)| (p, o))
        .collect();
    let mut plan = TopicPartitionList::new();
    println!(
        "{:<24} {:>9} {:>14} {:>10}",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"
    );
    for p in partitions {
        let (low, high) = c.fetch_watermarks(&a.topic, p, TIMEOUT)?;
        let target = if a.to_earliest {
            low
        } else if a.to_latest {
            high
        } else if let Some(o) = a.to_offset {
            o.clamp(low, high)
        } else if let Some(ts) = a.to_datetime {
            let mut q = TopicPartitionList::new();
            q.add_partition_offset(&a.topic, p, Offset::Offset(ts))?;
            let found = c.offsets_for_times(q, TIMEOUT)?;
            match found.elements().first().map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => high,
            }
        } else {
            bail!("give one of --to-earliest, --to-latest, --to-datetime MS, --to-offset N");
        };
        let cur = current.get(&p).map_or("-".to_string(), i64::to_string);
        println!("{:<24} {p:>9} {cur:>14} {target:>10}", a.topic);
        plan.add_partition_offset(&a.topic, p, Offset::Offset(target))?;
    }
    if a.dry_run {
        println!("(dry run: nothing committed)");
        return Ok(());
    }
    c.commit(&plan, CommitMode::Sync)
        .context("committing the new offsets")?;
    println!("offsets of group {} reset", a.group);
    Ok(())
}
