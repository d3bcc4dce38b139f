//! `ringmq reassign plan|execute|status|cancel`: partition reassignment through Kafka's
//! own APIs (AlterPartitionReassignments, ListPartitionReassignments, DescribeLogDirs,
//! IncrementalAlterConfigs), so it works against any Kafka-compatible cluster.
//!
//! Two modes, as the seeds' console has them. Automatic: `--topics` and `--brokers` (and
//! optionally a new replication factor) spread each topic's partitions evenly over the
//! chosen brokers, leaders rotating, replicas of a partition on distinct racks while
//! racks remain. Manual: a plan file in `kafka-reassign-partitions`' JSON format, or
//! `--replicas TOPIC:PARTITION=B1,B2,...` for one partition. `--throttle` takes the
//! seeds' single value in MB/s (-1: none) and sets what Kafka's tool sets: both
//! replication rates on every broker involved, and the topics' throttled-replica lists
//! (existing replicas as leaders, added ones as followers). `status` shows each moving
//! partition's progress (bytes left, rate, ETA) and clears the throttles once nothing is
//! moving, as `kafka-reassign-partitions --verify` does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, DescribeLogDirsRequest, IncrementalAlterConfigsRequest,
    ListPartitionReassignmentsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};

use crate::bench::Wire;

#[derive(Debug, Subcommand)]
pub enum ReassignCommand {
    /// Print a plan (kafka-reassign-partitions JSON): automatic with --topics/--brokers.
    Plan {
        #[command(flatten)]
        auto: AutoArgs,
        /// Write the plan here as well as to stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Start a reassignment: a plan file, --replicas, or automatic with --topics/--brokers.
    Execute {
        /// A plan in kafka-reassign-partitions' JSON format (manual mode).
        #[arg(long, conflicts_with_all = ["topics", "replicas"])]
        plan: Option<PathBuf>,
        /// One partition's new replicas, TOPIC:PARTITION=B1,B2,... (repeatable).
        #[arg(long, conflicts_with = "topics")]
        replicas: Vec<String>,
        #[command(flatten)]
        auto: AutoArgs,
        /// Replication throttle in MB/s (10^6 bytes) for the move; -1: none.
        #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
        throttle: f64,
    },
    /// Progress of every reassignment in progress; clears the throttles once none is.
    Status {
        /// Seconds between the two size samples the rate comes from.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Leave the throttles in place even when nothing is moving.
        #[arg(long)]
        keep_throttles: bool,
    },
    /// Cancel reassignments in progress: all, or those of --topic.
    Cancel {
        #[arg(long, short = 't')]
        topic: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct AutoArgs {
    /// Topics to spread (automatic mode), comma-separated.
    #[arg(long, value_delimiter = ',')]
    topics: Vec<String>,
    /// Brokers to spread them over, comma-separated ids.
    #[arg(long, value_delimiter = ',')]
    brokers: Vec<i32>,
    /// Replicas per partition (default: each topic's current count).
    #[arg(long)]
    replication_factor: Option<usize>,
    /// Ignore broker racks.
    #[arg(long)]
    no_rack_aware: bool,
}

/// kafka-reassign-partitions' plan format.
#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    pub version: i32,
    pub partitions: Vec<PlanPartition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanPartition {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// Brokers with their racks.
type Brokers = Vec<(i32, Option<String>)>;
/// Every partition's replicas, by topic.
type Assignment = BTreeMap<String, Vec<Vec<i32>>>;

/// The cluster as Metadata describes it.
struct Cluster {
    brokers: BTreeMap<i32, (String, Option<String>)>,
    /// Replicas of each partition, by topic.
    topics: BTreeMap<String, Vec<Vec<i32>>>,
}

fn first(bootstrap: &str) -> &str {
    bootstrap.split(',').next().unwrap_or(bootstrap)
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn describe(wire: &mut Wire, topics: Option<&[String]>) -> anyhow::Result<Cluster> {
    let req = MetadataRequest::default().with_topics(topics.map(|ts| {
        ts.iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
            .collect()
    }));
    let resp = wire.call(12, &req)?;
    let brokers = resp
        .brokers
        .iter()
        .map(|b| {
            (
                b.node_id.0,
                (
                    format!("{}:{}", b.host, b.port),
                    b.rack.as_ref().map(|r| r.to_string()),
                ),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for t in &resp.topics {
        let Some(n) = &t.name else { continue };
        ensure!(
            t.error_code == 0,
            "topic {}: error {} from Metadata",
            n.0,
            t.error_code
        );
        let mut parts: Vec<_> = t.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition_index);
        out.insert(
            n.0.to_string(),
            parts
                .iter()
                .map(|p| p.replica_nodes.iter().map(|b| b.0).collect())
                .collect(),
        );
    }
    Ok(Cluster {
        brokers,
        topics: out,
    })
}

/// The automatic mode's assignment: per topic, partition p's leader is the
/// (start + p)-th broker of a rack-alternating order, and each further replica the next
/// one in that order on a rack the partition does not use yet (any unused broker once
/// every rack is used). Leaders and replicas come out even; `start` moves on per topic
/// so several topics do not all lead on the same broker.
pub fn spread(
    topics: &BTreeMap<String, usize>,
    brokers: &[(i32, Option<String>)],
    replication_factor: Option<&BTreeMap<String, usize>>,
) -> anyhow::Result<Vec<PlanPartition>> {
    ensure!(!brokers.is_empty(), "no brokers to spread over");
    // Rack-alternating order: the first broker of each rack, then the second of each...
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        by_rack.entry(rack.as_deref()).or_default().push(*id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut order = Vec::new();
    for i in 0.. {
        let round: Vec<i32> = by_rack
            .values()
            .filter_map(|ids| ids.get(i))
            .copied()
            .collect();
        if round.is_empty() {
            break;
        }
        order.extend(round);
    }
    let rack: HashMap<i32, Option<&str>> =
        brokers.iter().map(|(id, r)| (*id, r.as_deref())).collect();
    let n = order.len();
    let mut out = Vec::new();
    let mut start = 0;
    for (topic, &partitions) in topics {
        let rf = replication_factor
            .and_then(|m| m.get(topic))
            .copied()
            .unwrap_or(0);
        ensure!(
            (1..=n).contains(&rf),
            "{topic}: {rf} replicas need 1..{n} brokers (the seeds' rule: replicas <= brokers)"
        );
        for p in 0..partitions {
            let mut replicas: Vec<i32> = Vec::with_capacity(rf);
            let mut k = start + p;
            while replicas.len() < rf {
                let used: BTreeSet<Option<&str>> = replicas.iter().map(|r| rack[r]).collect();
                let racks_left = by_rack.len() > used.len();
                let pick = (0..n)
                    .map(|i| order[(k + i) % n])
                    .find(|b| !replicas.contains(b) && (!racks_left || !used.contains(&rack[b])))
                    .context("no broker left for a replica")?;
                replicas.push(pick);
                k += 1;
            }
            out.push(PlanPartition {
                topic: topic.clone(),
                partition: p as i32,
                replicas,
            });
        }
        start += partitions;
    }
    Ok(out)
}

fn auto_plan(wire: &mut Wire, auto: &AutoArgs) -> anyhow::Result<Vec<PlanPartition>> {
    ensure!(
        !auto.topics.is_empty() && !auto.brokers.is_empty(),
        "the automatic mode needs --topics and --brokers"
    );
    let cluster = describe(wire, Some(&auto.topics))?;
    let mut brokers = Vec::new();
    for b in &auto.brokers {
        let (_, rack) = cluster
            .brokers
            .get(b)
            .with_context(|| format!("broker {b} is not in the cluster (or not live)"))?;
        brokers.push((*b, rack.clone().filter(|_| !auto.no_rack_aware)));
    }
    let mut counts = BTreeMap::new();
    let mut rfs = BTreeMap::new();
    for t in &auto.topics {
        let parts = cluster
            .topics
            .get(t)
            .with_context(|| format!("topic {t} does not exist"))?;
        counts.insert(t.clone(), parts.len());
        let current = parts.first().map_or(1, Vec::len);
        rfs.insert(t.clone(), auto.replication_factor.unwrap_or(current));
    }
    spread(&counts, &brokers, Some(&rfs))
}

fn manual_plan(plan: Option<&PathBuf>, replicas: &[String]) -> anyhow::Result<Vec<PlanPartition>> {
    if let Some(path) = plan {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let plan: Plan = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a reassignment plan", path.display()))?;
        return Ok(plan.partitions);
    }
    replicas
        .iter()
        .map(|spec| {
            let (tp, list) = spec
                .split_once('=')
                .with_context(|| format!("{spec:?}: expected TOPIC:PARTITION=B1,B2,..."))?;
            let (topic, partition) = tp
                .rsplit_once(':')
                .with_context(|| format!("{spec:?}: expected TOPIC:PARTITION=B1,B2,..."))?;
            Ok(PlanPartition {
                topic: topic.to_owned(),
                partition: partition.parse().context("partition")?,
                replicas: list
                    .split(',')
                    .map(|b| b.trim().parse().context("broker id"))
                    .collect::<anyhow::Result<_>>()?,
            })
        })
        .collect()
}

fn print_plan(parts: &[PlanPartition]) -> anyhow::Result<String> {
    let plan = Plan {
        version: 1,
        partitions: parts.to_vec(),
    };
    Ok(serde_json::to_string_pretty(&plan)?)
}

pub async fn run(bootstrap: &str, cmd: ReassignCommand) -> anyhow::Result<()> {
    let mut wire = Wire::connect(first(bootstrap))?;
    match cmd {
        ReassignCommand::Plan { auto, output } => {
            let plan = auto_plan(&mut wire, &auto)?;
            let text = print_plan(&plan)?;
            println!("{text}");
            if let Some(path) = output {
                std::fs::write(&path, format!("{text}\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        ReassignCommand::Execute {
            plan,
            replicas,
            auto,
            throttle,
        } => {
            let parts = if plan.is_some() || !replicas.is_empty() {
                manual_plan(plan.as_ref(), &replicas)?
            } else {
                auto_plan(&mut wire, &auto)?
            };
            execute(&mut wire, &parts, throttle)
        }
        ReassignCommand::Status {
            interval,
            keep_throttles,
        } => {
            status(
                &mut wire,
                Duration::from_secs_f64(interval.max(0.1)),
                keep_throttles,
            )
            .await
        }
        ReassignCommand::Cancel { topic } => cancel(&mut wire, topic.as_deref()),
    }
}

fn execute(wire: &mut Wire, parts: &[PlanPartition], throttle_mbps: f64) -> anyhow::Result<()> {
    ensure!(!parts.is_empty(), "the plan moves no partition");
    let topics: Vec<String> = parts
        .iter()
        .map(|p| p.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cluster = describe(wire, Some(&topics))?;
    for p in parts {
        let current = cluster
            .topics
            .get(&p.topic)
            .and_then(|t| t.get(p.partition as usize))
            .with_context(|| format!("{}-{} does not exist", p.topic, p.partition))?;
        let unique: BTreeSet<_> = p.replicas.iter().collect();
        ensure!(
            unique.len() == p.replicas.len() && !p.replicas.is_empty(),
            "{}-{}: replicas {:?} must be distinct and not empty",
            p.topic,
            p.partition,
            p.replicas
        );
        if let Some(b) = p.replicas.iter().find(|b| !cluster.brokers.contains_key(b)) {
            bail!(
                "{}-{}: broker {b} is not in the cluster",
                p.topic,
                p.partition
            );
        }
        println!(
            "{}-{}: {:?} -> {:?}",
            p.topic, p.partition, current, p.replicas
        );
    }
    if throttle_mbps >= 0.0 {
        let rate = (throttle_mbps * 1e6).round() as u64;
        set_throttles(wire, &cluster, parts, rate)?;
        println!("Replication throttle set to {throttle_mbps} MB/s ({rate} B/s) for the move");
    }
    let moves: Vec<_> = parts
        .iter()
        .map(|p| (p.topic.clone(), p.partition, Some(p.replicas.clone())))
        .collect();
    let mut failed = 0;
    for (topic, partition, code, message) in alter_reassignments(wire, &moves)? {
        if code != 0 {
            failed += 1;
            println!("{topic}-{partition}: refused, error {code} ({message})");
        }
    }
    ensure!(failed == 0, "{failed} partition(s) could not be reassigned");
    println!(
        "Started reassigning {} partition(s); follow it with `ringmq reassign status`",
        parts.len()
    );
    Ok(())
}

/// AlterPartitionReassignments: each partition to its replicas, or (None) its move
/// cancelled. Per partition: (topic, partition, error code, message).
fn alter_reassignments(
    wire: &mut Wire,
    moves: &[(String, i32, Option<Vec<i32>>)],
) -> anyhow::Result<Vec<(String, i32, i16, String)>> {
    let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
    for (topic, partition, replicas) in moves {
        by_topic.entry(topic).or_default().push(
            ReassignablePartition::default()
                .with_partition_index(*partition)
                .with_replicas(
                    replicas
                        .as_ref()
                        .map(|r| r.iter().map(|b| (*b).into()).collect()),
                ),
        );
    }
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    ReassignableTopic::default()
                        .with_name(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = wire.call(0, &req)?;
    ensure!(
        resp.error_code == 0,
        "AlterPartitionReassignments was refused: error {} {}",
        resp.error_code,
        resp.error_message.as_deref().unwrap_or("")
    );
    Ok(resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.error_code,
                    p.error_message.as_deref().unwrap_or("").to_owned(),
                )
            })
        })
        .collect())
}

/// What Kafka's tool sets for a throttled move: the rates on every broker involved and
/// the per-topic lists (sources as leaders, destinations as followers).
fn set_throttles(
    wire: &mut Wire,
    cluster: &Cluster,
    parts: &[PlanPartition],
    rate: u64,
) -> anyhow::Result<()> {
    // Moves in progress keep their throttles (the lists are replaced as a whole), as in
    // Kafka's tool: (topic, partition) -> (sources, destinations).
    let mut moves: BTreeMap<(String, i32), (Vec<i32>, Vec<i32>)> = BTreeMap::new();
    for m in list(wire, None)? {
        let sources = m
            .replicas
            .iter()
            .copied()
            .filter(|b| !m.adding.contains(b))
            .collect();
        moves.insert((m.topic, m.partition), (sources, m.adding));
    }
    for p in parts {
        let current = cluster
            .topics
            .get(&p.topic)
            .and_then(|t| t.get(p.partition as usize))
            .cloned()
            .unwrap_or_default();
        let key = (p.topic.clone(), p.partition);
        let sources = moves.get(&key).map_or(current, |(s, _)| s.clone());
        let destinations = p
            .replicas
            .iter()
            .copied()
            .filter(|b| !sources.contains(b))
            .collect();
        moves.insert(key, (sources, destinations));
    }
    let mut leaders: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut followers: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut involved = BTreeSet::new();
    for ((topic, partition), (sources, destinations)) in &moves {
        for b in sources {
            leaders
                .entry(topic)
                .or_default()
                .insert(format!("{partition}:{b}"));
            involved.insert(*b);
        }
        for b in destinations {
            followers
                .entry(topic)
                .or_default()
                .insert(format!("{partition}:{b}"));
            involved.insert(*b);
        }
    }
    let set = |key: &str, value: String| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(key.to_owned()))
            .with_config_operation(0)
            .with_value(Some(StrBytes::from_string(value)))
    };
    let topics: BTreeSet<&str> = leaders.keys().chain(followers.keys()).copied().collect();
    let resources = topics
        .into_iter()
        .map(|t| {
            let join = |m: &BTreeMap<&str, BTreeSet<String>>| {
                m.get(t)
                    .map(|s| s.iter().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            };
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(t.to_owned()))
                .with_configs(vec![
                    set(LEADER_REPLICAS, join(&leaders)),
                    set(FOLLOWER_REPLICAS, join(&followers)),
                ])
        })
        .collect();
    alter_configs(wire, resources)?;
    for b in involved {
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_string(b.to_string()))
            .with_configs(vec![
                set(LEADER_RATE, rate.to_string()),
                set(FOLLOWER_RATE, rate.to_string()),
            ]);
        broker_alter_configs(wire, cluster, b, resource)?;
    }
    Ok(())
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const LEADER_RATE: &str = "leader.replication.throttled.rate";
const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

fn alter_configs(wire: &mut Wire, resources: Vec<AlterConfigsResource>) -> anyhow::Result<()> {
    let req = IncrementalAlterConfigsRequest::default().with_resources(resources);
    let resp = wire.call(1, &req)?;
    for r in &resp.responses {
        ensure!(
            r.error_code == 0,
            "altering {} configs failed: error {} {}",
            r.resource_name,
            r.error_code,
            r.error_message.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// A broker's own configs go to that broker (what Kafka's admin client does).
fn broker_alter_configs(
    wire: &mut Wire,
    cluster: &Cluster,
    broker: i32,
    resource: AlterConfigsResource,
) -> anyhow::Result<()> {
    match cluster.brokers.get(&broker) {
        Some((addr, _)) => {
            let mut to = Wire::connect(addr)?;
            alter_configs(&mut to, vec![resource])
        }
        None => alter_configs(wire, vec![resource]),
    }
}

/// Removes the throttles a move set: the rates on every broker, the topics' lists.
fn clear_throttles(
    wire: &mut Wire,
    cluster: &Cluster,
    topics: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let delete = |key: &str| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(key.to_owned()))
            .with_config_operation(1)
    };
    for b in cluster.brokers.keys() {
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_string(b.to_string()))
            .with_configs(vec![delete(LEADER_RATE), delete(FOLLOWER_RATE)]);
        broker_alter_configs(wire, cluster, *b, resource)?;
    }
    let resources = topics
        .iter()
        .map(|t| {
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(t.clone()))
                .with_configs(vec![delete(LEADER_REPLICAS), delete(FOLLOWER_REPLICAS)])
        })
        .collect::<Vec<_>>();
    if !resources.is_empty() {
        alter_configs(wire, resources)?;
    }
    Ok(())
}

/// One reassignment in progress, as ListPartitionReassignments describes it.
struct Moving {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

fn list(wire: &mut Wire, topic: Option<&str>) -> anyhow::Result<Vec<Moving>> {
    let topics = match topic {
        None => None,
        Some(t) => {
            let count = describe(wire, Some(&[t.to_owned()]))?
                .topics
                .get(t)
                .map_or(0, Vec::len);
            Some(vec![
                ListPartitionReassignmentsTopics::default()
                    .with_name(name(t))
                    .with_partition_indexes((0..count as i32).collect()),
            ])
        }
    };
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(topics);
    let resp = wire.call(0, &req)?;
    ensure!(
        resp.error_code == 0,
        "listing reassignments failed: error {} {}",
        resp.error_code,
        resp.error_message.as_deref().unwrap_or("")
    );
    let mut out = Vec::new();
    for t in &resp.topics {
        for p in &t.partitions {
            out.push(Moving {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: p.replicas.iter().map(|b| b.0).collect(),
                adding: p.adding_replicas.iter().map(|b| b.0).collect(),
                removing: p.removing_replicas.iter().map(|b| b.0).collect(),
            });
        }
    }
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// Every replica's size in bytes, by (topic, partition, broker), from DescribeLogDirs on
/// each broker (a broker that does not answer is left out).
fn replica_sizes(cluster: &Cluster, topics: &BTreeSet<String>) -> HashMap<(String, i32, i32), i64> {
    let mut out = HashMap::new();
    let req = DescribeLogDirsRequest::default().with_topics(Some(
        topics
            .iter()
            .map(|t| {
                let count = cluster.topics.get(t).map_or(0, Vec::len) as i32;
                DescribableLogDirTopic::default()
                    .with_topic(name(t))
                    .with_partitions((0..count).collect())
            })
            .collect(),
    ));
    for (id, (addr, _)) in &cluster.brokers {
        let Ok(resp) = Wire::connect(addr).and_then(|mut w| w.call(1, &req)) else {
            continue;
        };
        for dir in &resp.results {
            for t in &dir.topics {
                for p in &t.partitions {
                    if !p.is_future_key {
                        *out.entry((t.name.0.to_string(), p.partition_index, *id))
                            .or_default() += p.partition_size;
                    }
                }
            }
        }
    }
    out
}

/// Bytes for people: kB, MB or GB (powers of ten).
pub(crate) fn human(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.2} GB", bytes / 1e9)
    } else if bytes >= 1e6 {
        format!("{:.1} MB", bytes / 1e6)
    } else {
        format!("{:.0} kB", bytes / 1e3)
    }
}

async fn status(wire: &mut Wire, interval: Duration, keep_throttles: bool) -> anyhow::Result<()> {
    let moving = list(wire, None)?;
    let topics: BTreeSet<String> = moving.iter().map(|m| m.topic.clone()).collect();
    let cluster = describe(wire, Some(&topics.iter().cloned().collect::<Vec<_>>()))?;
    if moving.is_empty() {
        println!("No reassignment in progress.");
        if !keep_throttles {
            let all = describe(wire, None)?;
            let every: BTreeSet<String> = all.topics.keys().cloned().collect();
            clear_throttles(wire, &all, &every)?;
            println!(
                "Cleared the replication throttles on brokers {:?}",
                all.brokers.keys().collect::<Vec<_>>()
            );
        }
        return Ok(());
    }
    let before = replica_sizes(&cluster, &topics);
    let started = Instant::now();
    tokio::time::sleep(interval).await;
    let after = replica_sizes(&cluster, &topics);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<28} {:<12} {:<10} {:<10} {:>10} {:>12} {:>8}",
        "PARTITION", "REPLICAS", "ADDING", "REMOVING", "LEFT", "RATE", "ETA"
    );
    for m in &moving {
        // The source: the largest copy among the replicas not being added.
        let source = m
            .replicas
            .iter()
            .filter(|b| !m.adding.contains(b))
            .filter_map(|b| after.get(&(m.topic.clone(), m.partition, *b)))
            .copied()
            .max()
            .unwrap_or(0);
        let (mut left, mut rate) = (0f64, 0f64);
        for b in &m.adding {
            let key = (m.topic.clone(), m.partition, *b);
            let now = after.get(&key).copied().unwrap_or(0);
            let then = before.get(&key).copied().unwrap_or(0);
            left += (source - now).max(0) as f64;
            rate += (now - then).max(0) as f64 / secs;
        }
        let eta = if left <= 0.0 {
            "catching up".to_owned()
        } else if rate > 0.0 {
            format!("{:.0}s", left / rate)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<28} {:<12} {:<10} {:<10} {:>10} {:>10}/s {:>8}",
            format!("{}-{}", m.topic, m.partition),
            format!("{:?}", m.replicas),
            format!("{:?}", m.adding),
            format!("{:?}", m.removing),
            human(left),
            human(rate),
            eta
        );
    }
    Ok(())
}

fn cancel(wire: &mut Wire, topic: Option<&str>) -> anyhow::Result<()> {
    cancel_where(wire, topic, |_| true)
}

/// Cancels the moves in progress of `topic`'s partitions that `wanted` picks (a task's).
pub fn cancel_topic(
    bootstrap: &str,
    topic: &str,
    wanted: impl Fn(i32) -> bool,
) -> anyhow::Result<()> {
    let mut wire = Wire::connect(first(bootstrap))?;
    cancel_where(&mut wire, Some(topic), wanted)
}

fn cancel_where(
    wire: &mut Wire,
    topic: Option<&str>,
    wanted: impl Fn(i32) -> bool,
) -> anyhow::Result<()> {
    let moving: Vec<Moving> = list(wire, topic)?
        .into_iter()
        .filter(|m| wanted(m.partition))
        .collect();
    if moving.is_empty() {
        println!("No reassignment in progress.");
        return Ok(());
    }
    let cancels: Vec<_> = moving
        .iter()
        .map(|m| (m.topic.clone(), m.partition, None))
        .collect();
    let mut failed = 0;
    for (topic, partition, code, message) in alter_reassignments(wire, &cancels)? {
        if code == 0 {
            println!("{topic}-{partition}: cancelled");
        } else {
            failed += 1;
            println!("{topic}-{partition}: not cancelled, error {code} ({message})");
        }
    }
    ensure!(
        failed == 0,
        "{failed} reassignment(s) could not be cancelled"
    );
    // Other moves still in progress keep the throttles they run under.
    let others = list(wire, None)?
        .into_iter()
        .filter(|m| {
            !moving
                .iter()
                .any(|c| c.topic == m.topic && c.partition == m.partition)
        })
        .count();
    if others == 0 {
        let topics: BTreeSet<String> = moving.iter().map(|m| m.topic.clone()).collect();
        let cluster = describe(wire, None)?;
        clear_throttles(wire, &cluster, &topics)?;
        println!("Cleared the replication throttles");
    } else {
        println!("Kept the replication throttles: {others} other move(s) in progress");
    }
    Ok(())
}

/// Replacement for `drained` in each partition that has it: a live broker not already a
/// replica, on the drained broker's rack if one is free (rack spread kept), else the
/// least loaded; replicas keep their order, so a drained preferred leader's replacement
/// becomes preferred.
pub fn drain_plan(
    topics: &Assignment,
    brokers: &[(i32, Option<String>)],
    drained: i32,
) -> anyhow::Result<Vec<PlanPartition>> {
    let rack: HashMap<i32, Option<&str>> =
        brokers.iter().map(|(id, r)| (*id, r.as_deref())).collect();
    let mut load: BTreeMap<i32, usize> = brokers
        .iter()
        .filter(|(id, _)| *id != drained)
        .map(|(id, _)| (*id, 0))
        .collect();
    for parts in topics.values() {
        for replicas in parts {
            for b in replicas {
                if let Some(n) = load.get_mut(b) {
                    *n += 1;
                }
            }
        }
    }
    let home = rack.get(&drained).copied().flatten();
    let mut out = Vec::new();
    for (topic, parts) in topics {
        for (p, replicas) in parts.iter().enumerate() {
            if !replicas.contains(&drained) {
                continue;
            }
            let pick = load
                .iter()
                .filter(|(b, _)| !replicas.contains(b))
                .min_by_key(|(b, n)| (rack.get(b).copied().flatten() != home || home.is_none(), **n, **b))
                .map(|(b, _)| *b)
                .with_context(|| {
                    format!(
                        "{topic}-{p} has {} replicas and no other broker is free to take broker {drained}'s",
                        replicas.len()
                    )
                })?;
            if let Some(n) = load.get_mut(&pick) {
                *n += 1;
            }
            out.push(PlanPartition {
                topic: topic.clone(),
                partition: p as i32,
                replicas: replicas
                    .iter()
                    .map(|b| if *b == drained { pick } else { *b })
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// Moves replicas onto a new broker until it holds its share (total / brokers): each
/// move takes a replica from the most loaded broker, preferring one on the new broker's
/// rack (rack spread kept) and partitions the new broker does not hold yet. Fewer moves
/// than a full re-plan.
pub fn grow_plan(
    topics: &Assignment,
    brokers: &[(i32, Option<String>)],
    added: i32,
) -> Vec<PlanPartition> {
    let rack: HashMap<i32, Option<&str>> =
        brokers.iter().map(|(id, r)| (*id, r.as_deref())).collect();
    let home = rack.get(&added).copied().flatten();
    let mut assignment: BTreeMap<(String, usize), Vec<i32>> = BTreeMap::new();
    for (t, parts) in topics {
        for (p, r) in parts.iter().enumerate() {
            assignment.insert((t.clone(), p), r.clone());
        }
    }
    let total: usize = assignment.values().map(Vec::len).sum();
    let share = total / brokers.len().max(1);
    let mut changed = BTreeSet::new();
    loop {
        let mut load: BTreeMap<i32, usize> = brokers.iter().map(|(id, _)| (*id, 0)).collect();
        for r in assignment.values() {
            for b in r {
                *load.entry(*b).or_default() += 1;
            }
        }
        if load.get(&added).copied().unwrap_or(0) >= share {
            break;
        }
        // The move: (from broker, partition) with the busiest source, same rack first.
        let candidate = assignment
            .iter()
            .filter(|(_, r)| !r.contains(&added))
            .flat_map(|(key, r)| r.iter().map(move |b| (key.clone(), *b)))
            .filter(|(_, b)| load.get(b).copied().unwrap_or(0) > share)
            .max_by_key(|(key, b)| {
                (
                    rack.get(b).copied().flatten() == home,
                    load.get(b).copied().unwrap_or(0),
                    std::cmp::Reverse(key.clone()),
                )
            });
        let Some((key, from)) = candidate else { break };
        if let Some(r) = assignment.get_mut(&key) {
            for b in r.iter_mut() {
                if *b == from {
                    *b = added;
                }
            }
        }
        changed.insert(key);
    }
    changed
        .into_iter()
        .filter_map(|key| {
            let replicas = assignment.get(&key)?.clone();
            Some(PlanPartition {
                topic: key.0,
                partition: key.1 as i32,
                replicas,
            })
        })
        .collect()
}

/// The cluster's brokers (id, rack) and every topic's replicas.
fn layout(wire: &mut Wire) -> anyhow::Result<(Brokers, Assignment)> {
    let cluster = describe(wire, None)?;
    let brokers = cluster
        .brokers
        .iter()
        .map(|(id, (_, rack))| (*id, rack.clone()))
        .collect();
    Ok((brokers, cluster.topics))
}

/// `ringmq cluster drain BROKER`: every replica off `broker`, then (with `wait`) until
/// the moves are done, with progress.
pub async fn drain(bootstrap: &str, broker: i32, throttle: f64, wait: bool) -> anyhow::Result<()> {
    let mut wire = Wire::connect(first(bootstrap))?;
    let (brokers, topics) = layout(&mut wire)?;
    ensure!(
        brokers.iter().any(|(id, _)| *id == broker),
        "broker {broker} is not a live broker of this cluster"
    );
    let plan = drain_plan(&topics, &brokers, broker)?;
    if plan.is_empty() {
        println!("Broker {broker} holds no replicas.");
    } else {
        execute(&mut wire, &plan, throttle)?;
    }
    if wait {
        follow(&mut wire).await?;
        let (_, topics) = layout(&mut wire)?;
        let left = topics
            .values()
            .flatten()
            .filter(|r| r.contains(&broker))
            .count();
        ensure!(left == 0, "broker {broker} still holds {left} replica(s)");
        println!(
            "Broker {broker} is drained: stop it, then `ringmq cluster remove-broker {broker}`"
        );
    }
    Ok(())
}

/// `ringmq cluster add-broker BROKER`: waits for it to register, then moves its share
/// of the replicas of `topics` (default: all but internal ones) onto it.
pub async fn add_broker(
    bootstrap: &str,
    broker: i32,
    only: &[String],
    throttle: f64,
    wait: bool,
) -> anyhow::Result<()> {
    let mut wire = Wire::connect(first(bootstrap))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (brokers, topics) = loop {
        let (brokers, topics) = layout(&mut wire)?;
        if brokers.iter().any(|(id, _)| *id == broker) {
            break (brokers, topics);
        }
        ensure!(
            Instant::now() < deadline,
            "broker {broker} did not register within 60 s: start it with node.id={broker} and the cluster's controller.quorum.voters"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let topics: BTreeMap<String, Vec<Vec<i32>>> = topics
        .into_iter()
        .filter(|(t, _)| {
            if only.is_empty() {
                !t.starts_with("__")
            } else {
                only.contains(t)
            }
        })
        .collect();
    let plan = grow_plan(&topics, &brokers, broker);
    if plan.is_empty() {
        println!("Broker {broker} already holds its share; nothing to move.");
        return Ok(());
    }
    execute(&mut wire, &plan, throttle)?;
    if wait {
        follow(&mut wire).await?;
    }
    Ok(())
}

/// Prints progress until no reassignment is in progress, then clears the throttles.
async fn follow(wire: &mut Wire) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if list(wire, None)?.is_empty() {
            break;
        }
        status(wire, Duration::from_secs(1), true).await?;
        if started.elapsed() > Duration::from_secs(24 * 3600) {
            bail!("still moving after a day");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (brokers, topics) = layout(wire)?;
    let cluster = describe(wire, None)?;
    clear_throttles(wire, &cluster, &topics.keys().cloned().collect())?;
    println!(
        "Reassignment done in {:.1}s; throttles cleared on brokers {:?}",
        started.elapsed().as_secs_f64(),
        brokers.iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        parts: &[PlanPartition],
        f: impl Fn(&PlanPartition) -> Vec<i32>,
    ) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for p in parts {
            for b in f(p) {
                *m.entry(b).or_default() += 1;
            }
        }
        m
    }

    #[test]
    fn spread_is_even_in_leaders_and_replicas() {
        let topics = BTreeMap::from([("a".to_owned(), 8), ("b".to_owned(), 4)]);
        let rf = BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 3)]);
        let brokers: Vec<_> = (1..=4).map(|b| (b, None)).collect();
        let plan = spread(&topics, &brokers, Some(&rf)).unwrap();
        assert_eq!(plan.len(), 12);
        let leaders = counts(&plan, |p| vec![p.replicas[0]]);
        assert!(leaders.values().all(|n| *n == 3), "{leaders:?}");
        let replicas = counts(&plan, |p| p.replicas.clone());
        assert!(replicas.values().all(|n| *n == 9), "{replicas:?}");
        assert!(
            plan.iter()
                .all(|p| p.replicas.iter().collect::<BTreeSet<_>>().len() == 3)
        );
    }

    #[test]
    fn spread_puts_each_partitions_replicas_on_distinct_racks() {
        let topics = BTreeMap::from([("t".to_owned(), 6)]);
        let rf = BTreeMap::from([("t".to_owned(), 3)]);
        let racks = ["r1", "r1", "r2", "r2", "r3", "r3"];
        let brokers: Vec<_> = (1..=6)
            .map(|b| (b, Some(racks[b as usize - 1].to_owned())))
            .collect();
        let plan = spread(&topics, &brokers, Some(&rf)).unwrap();
        for p in &plan {
            let used: BTreeSet<_> = p.replicas.iter().map(|b| racks[*b as usize - 1]).collect();
            assert_eq!(used.len(), 3, "{p:?}");
        }
        // Two racks, three replicas: both racks used, no broker twice.
        let brokers: Vec<_> = (1..=4)
            .map(|b| (b, Some(racks[b as usize - 1].to_owned())))
            .collect();
        for p in spread(&topics, &brokers, Some(&rf)).unwrap() {
            let used: BTreeSet<_> = p.replicas.iter().map(|b| racks[*b as usize - 1]).collect();
            assert_eq!(used.len(), 2, "{p:?}");
        }
    }

    #[test]
    fn drain_replaces_the_broker_on_its_rack_and_spreads_the_rest() {
        let topics = BTreeMap::from([(
            "t".to_owned(),
            vec![vec![1, 2, 3], vec![2, 3, 4], vec![3, 4, 1], vec![4, 1, 2]],
        )]);
        let brokers: Vec<_> = [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")]
            .iter()
            .map(|(b, r)| (*b, Some((*r).to_owned())))
            .collect();
        let plan = drain_plan(&topics, &brokers, 1).unwrap();
        assert_eq!(plan.len(), 3);
        for p in &plan {
            assert!(!p.replicas.contains(&1), "{p:?}");
            // Broker 1 was on rack a: the free rack-a broker takes it where it can.
            assert!(p.replicas.contains(&5), "{p:?}");
        }
        assert_eq!(plan[0].replicas, vec![5, 2, 3], "order kept");
        // Three replicas on three brokers: draining one leaves nowhere to go.
        let small = BTreeMap::from([("t".to_owned(), vec![vec![1, 2, 3]])]);
        let three: Vec<_> = (1..=3).map(|b| (b, None)).collect();
        assert!(drain_plan(&small, &three, 1).is_err());
    }

    #[test]
    fn a_new_broker_gets_its_share_with_few_moves() {
        let topics = BTreeMap::from([(
            "t".to_owned(),
            (0..6)
                .map(|p| vec![p % 3 + 1, (p + 1) % 3 + 1, (p + 2) % 3 + 1])
                .collect::<Vec<_>>(),
        )]);
        let brokers: Vec<_> = (1..=4).map(|b| (b, None)).collect();
        let plan = grow_plan(&topics, &brokers, 4);
        // 18 replicas over 4 brokers: broker 4 takes 4, one move each.
        assert_eq!(plan.len(), 4, "{plan:?}");
        assert!(plan.iter().all(|p| p.replicas.contains(&4)));
        let mut load = BTreeMap::new();
        let moved: BTreeMap<i32, &PlanPartition> = plan.iter().map(|p| (p.partition, p)).collect();
        for (p, r) in topics["t"].iter().enumerate() {
            let r = moved.get(&(p as i32)).map_or(r, |m| &m.replicas);
            for b in r {
                *load.entry(*b).or_insert(0) += 1;
            }
        }
        assert!(load.values().all(|n| (4..=5).contains(n)), "{load:?}");
    }

    #[test]
    fn more_replicas_than_brokers_is_refused() {
        let topics = BTreeMap::from([("t".to_owned(), 1)]);
        let rf = BTreeMap::from([("t".to_owned(), 3)]);
        assert!(spread(&topics, &[(1, None), (2, None)], Some(&rf)).is_err());
    }
}
