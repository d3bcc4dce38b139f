//! Cluster metadata: brokers, topics, their partitions' replicas, leaders and in-sync
//! replicas, owner shards and configs.
//!
//! [`MetadataRecord`]s are the entries of the metadata log the controller quorum
//! replicates (`cluster::raft_store`); every node applies them in log order to its
//! [`MetadataImage`] and publishes each new image as an immutable `Arc` snapshot that every
//! shard reads without locking (`ArcSwap`). Records are idempotent to re-apply and carry
//! whole values (a partition's new state, a topic's configs), never deltas, so a follower
//! that replays the log from any snapshot reaches the same image.
//!
//! A partition's owner shard on a broker is `placement[p] % shards` (the controller
//! balances `placement` by count over its own shard count; brokers with other core counts
//! fold it onto theirs).

pub mod security_records;
pub mod tasks;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead};
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The internal topic holding committed offsets (the controller creates it; the group
/// coordinator runs on its leaders).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// `offsets.topic.num.partitions`.
pub const OFFSETS_PARTITIONS: usize = 50;
/// The internal topic holding transactions' state (created on the first transactional
/// FindCoordinator, as Kafka does; the transaction coordinator runs on its leaders).
pub const TXN_TOPIC: &str = "__transaction_state";
/// `transaction.state.log.num.partitions`.
pub const TXN_PARTITIONS: usize = 50;
/// `transaction.state.log.segment.bytes` (Kafka's default, 100 MiB).
pub const TXN_SEGMENT_BYTES: &str = "104857600";
/// `offsets.topic.segment.bytes` (Kafka's default, 100 MiB).
pub const OFFSETS_SEGMENT_BYTES: &str = "104857600";

/// No leader (every replica that could lead is fenced or offline).
pub const NO_LEADER: i32 = -1;

/// One partition's replica set and leadership, as the controller decided it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct PartitionState {
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replicas (the leader included while it leads).
    pub isr: Vec<i32>,
    /// Leader broker id, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped on every leader change (fences the old leader's requests).
    pub leader_epoch: i32,
    /// Bumped on every change of this state (AlterPartition's optimistic check).
    pub partition_epoch: i32,
    /// A reassignment in progress (KIP-455): replicas being added (in `replicas`, to
    /// catch up) and being removed (in `replicas` until the added ones are in sync).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
}

impl PartitionState {
    /// A new partition led by its first replica, every replica in sync.
    pub fn new(replicas: Vec<i32>) -> Self {
        PartitionState {
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// The replica set a reassignment in progress moves to.
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }

    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    /// Owner shard hint of each partition (index = partition id): `% shards` on a broker.
    pub placement: Vec<usize>,
    /// Replicas and leadership of each partition (index = partition id).
    #[serde(default)]
    pub partitions: Vec<PartitionState>,
    /// Topic config overrides (Kafka keys).
    pub configs: BTreeMap<String, String>,
    pub internal: bool,
}

impl TopicMeta {
    pub fn partition_count(&self) -> usize {
        self.placement.len()
    }
    /// The shard of a broker with `shards` shards that owns partition `p`.
    pub fn owner_shard(&self, p: i32, shards: usize) -> Option<usize> {
        let p = usize::try_from(p).ok()?;
        self.placement.get(p).map(|s| s % shards.max(1))
    }
    pub fn state(&self, p: i32) -> Option<&PartitionState> {
        usize::try_from(p).ok().and_then(|p| self.partitions.get(p))
    }
}

/// A registered broker (KRaft's BrokerRegistration): where clients reach it, its rack,
/// and whether the controller currently fences it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokerMeta {
    pub id: i32,
    /// Changes at every process start: a new incarnation replaces the old one's state.
    pub incarnation: Uuid,
    /// The inter-broker listener's advertised address (followers fetch from it).
    pub host: String,
    pub port: u16,
    /// Every Kafka listener, advertised (Metadata answers with the one a client used).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are not in any ISR.
    pub fenced: bool,
    /// Metadata log index of the registration (the broker is unfenced once it has
    /// applied the log this far).
    pub epoch: u64,
    /// In controlled shutdown: leads nothing and takes no new leadership.
    #[serde(default)]
    pub shutting_down: bool,
}

/// One of a broker's listeners as clients reach it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl BrokerMeta {
    /// Where a client that came in through listener `name` reaches this broker; `None`
    /// when the broker has no such listener (Kafka leaves it out of Metadata). A
    /// registration written before brokers had several listeners has one, under any name.
    pub fn endpoint(&self, name: &str) -> Option<(&str, u16)> {
        if self.endpoints.is_empty() {
            return Some((&self.host, self.port));
        }
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .map(|e| (e.host.as_str(), e.port))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicMeta>,
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// Next producer id InitProducerId hands out.
    pub next_producer_id: i64,
    /// Metadata log index this image reflects.
    pub offset: u64,
    /// Dynamic broker configs (IncrementalAlterConfigs on a BROKER resource), by resource
    /// name: a broker id, or "" for the cluster-wide default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Background tasks (reassignments), running and recently finished, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<u64, crate::metadata::tasks::Task>,
    /// SASL users and their SCRAM credentials (SPEC S3), by user name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, UserMeta>,
    /// ACL bindings (SPEC S4), sorted, no duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<security_records::AclBinding>,
}

/// A SASL user: its SCRAM credentials by mechanism name (salted and hashed, never the
/// password).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserMeta {
    pub scram: BTreeMap<String, security_records::Credential>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }
    /// Brokers clients may use (registered and not fenced).
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values().filter(|b| !b.fenced)
    }
    /// `host:port` of live broker `id`'s first listener (where brokers reach each other).
    pub fn broker_address(&self, id: i32) -> Option<String> {
        self.brokers
            .get(&id)
            .filter(|b| !b.fenced)
            .map(|b| format!("{}:{}", b.host, b.port))
    }
    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }
    /// A partition's replicas on brokers that are not live (Metadata's offline_replicas).
    pub fn offline_replicas(&self, s: &PartitionState) -> Vec<i32> {
        s.replicas
            .iter()
            .copied()
            .filter(|r| !self.is_live(*r))
            .collect()
    }
    /// Partitions per shard, for balanced placement.
    fn load_per_shard(&self, shards: usize) -> Vec<usize> {
        let mut load = vec![0usize; shards];
        for t in self.topics.values() {
            for &s in &t.placement {
                load[s % shards] += 1;
            }
        }
        load
    }
    /// Owner shards for `count` new partitions, least-loaded first.
    pub fn place(&self, count: usize, shards: usize) -> Vec<usize> {
        let mut load = self.load_per_shard(shards.max(1));
        (0..count)
            .map(|_| {
                let (s, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, l)| (**l, *i))
                    .unwrap_or((0, &0));
                load[s] += 1;
                s
            })
            .collect()
    }
    /// A pre-quorum single-node image: every partition's only replica is `node_id`.
    pub fn adopt_single_node(&mut self, node_id: i32) {
        for t in self.topics.values_mut() {
            if t.partitions.len() < t.placement.len() {
                let from = t.partitions.len();
                t.partitions
                    .extend((from..t.placement.len()).map(|_| PartitionState::new(vec![node_id])));
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    TopicCreated(TopicMeta),
    TopicDeleted {
        name: String,
    },
    PartitionsAdded {
        name: String,
        placement: Vec<usize>,
        #[serde(default)]
        partitions: Vec<PartitionState>,
    },
    TopicConfigChanged {
        name: String,
        configs: BTreeMap<String, String>,
    },
    PartitionsMoved {
        name: String,
        placement: Vec<usize>,
    },
    ProducerIdsAllocated {
        next: i64,
    },
    BrokerRegistered(BrokerMeta),
    BrokerFenced {
        id: i32,
    },
    BrokerUnfenced {
        id: i32,
    },
    BrokerShuttingDown {
        id: i32,
    },
    /// A partition's new replica set / ISR / leader (elections, AlterPartition).
    PartitionChanged {
        name: String,
        partition: i32,
        state: PartitionState,
    },
    /// A broker resource's whole set of dynamic configs ("" = the cluster default).
    BrokerConfigChanged {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    /// UnregisterBroker: the broker leaves the cluster (it holds no replicas).
    BrokerUnregistered {
        id: i32,
    },
    /// A background task started or changed state.
    TaskChanged(crate::metadata::tasks::Task),
    /// A user's SCRAM credential for a mechanism, new or replaced.
    ScramCredentialUpserted {
        user: String,
        mechanism: String,
        credential: security_records::Credential,
    },
    /// A user's SCRAM credential removed (the user goes with its last one).
    ScramCredentialDeleted {
        user: String,
        mechanism: String,
    },
    AclCreated(security_records::AclBinding),
    AclDeleted(security_records::AclBinding),
}

impl MetadataImage {
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::TopicCreated(t) => {
                self.topics.insert(t.name.clone(), t.clone());
            }
            MetadataRecord::TopicDeleted { name } => {
                self.topics.remove(name);
            }
            MetadataRecord::PartitionsAdded {
                name,
                placement,
                partitions,
            } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.placement.extend_from_slice(placement);
                    t.partitions.extend_from_slice(partitions);
                }
            }
            MetadataRecord::TopicConfigChanged { name, configs } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.configs = configs.clone();
                }
            }
            MetadataRecord::PartitionsMoved { name, placement } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.placement = placement.clone();
                }
            }
            MetadataRecord::ProducerIdsAllocated { next } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
            MetadataRecord::BrokerRegistered(b) => {
                self.brokers.insert(b.id, b.clone());
            }
            MetadataRecord::BrokerFenced { id } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.fenced = true;
                }
            }
            MetadataRecord::BrokerUnfenced { id } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.fenced = false;
                    b.shutting_down = false;
                }
            }
            MetadataRecord::BrokerShuttingDown { id } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.shutting_down = true;
                }
            }
            MetadataRecord::PartitionChanged {
                name,
                partition,
                state,
            } => {
                if let Some(slot) = self
                    .topics
                    .get_mut(name)
                    .and_then(|t| t.partitions.get_mut(*partition as usize))
                {
                    *slot = state.clone();
                }
            }
            MetadataRecord::BrokerConfigChanged { resource, configs } => {
                if configs.is_empty() {
                    self.broker_configs.remove(resource);
                } else {
                    self.broker_configs
                        .insert(resource.clone(), configs.clone());
                }
            }
            MetadataRecord::BrokerUnregistered { id } => {
                self.brokers.remove(id);
                self.broker_configs.remove(&id.to_string());
            }
            MetadataRecord::TaskChanged(task) => {
                crate::metadata::tasks::apply(&mut self.tasks, task);
            }
            MetadataRecord::ScramCredentialUpserted {
                user,
                mechanism,
                credential,
            } => {
                self.users
                    .entry(user.clone())
                    .or_default()
                    .scram
                    .insert(mechanism.clone(), credential.clone());
            }
            MetadataRecord::AclCreated(acl) => {
                if let Err(at) = self.acls.binary_search(acl) {
                    self.acls.insert(at, acl.clone());
                }
            }
            MetadataRecord::AclDeleted(acl) => {
                if let Ok(at) = self.acls.binary_search(acl) {
                    self.acls.remove(at);
                }
            }
            MetadataRecord::ScramCredentialDeleted { user, mechanism } => {
                if let Some(u) = self.users.get_mut(user) {
                    u.scram.remove(mechanism);
                    if u.scram.is_empty() {
                        self.users.remove(user);
                    }
                }
            }
        }
    }
}

/// Reads the metadata a single-node ringmq before the controller quorum wrote
/// (`metadata.snapshot` + `metadata.log`), or `None` when there is none. The quorum's
/// store starts from it once, so an old data directory keeps its topics and offsets.
pub fn load_legacy(dir: &Path) -> io::Result<Option<MetadataImage>> {
    let snapshot_path = dir.join("metadata.snapshot");
    let log_path = dir.join("metadata.log");
    if !snapshot_path.exists() && !log_path.exists() {
        return Ok(None);
    }
    let mut image: MetadataImage = match fs::read(&snapshot_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", snapshot_path.display()),
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => MetadataImage {
            next_producer_id: 1000,
            ..Default::default()
        },
        Err(e) => return Err(ctx("read", &snapshot_path, e)),
    };
    if let Ok(f) = File::open(&log_path) {
        for line in io::BufReader::new(f).split(b'\n') {
            let line = line.map_err(|e| ctx("read", &log_path, e))?;
            match serde_json::from_slice::<MetadataRecord>(&line) {
                Ok(r) => image.apply(&r),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping torn metadata log tail");
                    break;
                }
            }
        }
    }
    Ok(Some(image))
}

/// Renames the legacy files once the quorum's store holds their content.
pub fn retire_legacy(dir: &Path) -> io::Result<()> {
    for name in ["metadata.snapshot", "metadata.log"] {
        let path = dir.join(name);
        if path.exists() {
            fs::rename(&path, dir.join(format!("{name}.migrated")))?;
        }
    }
    Ok(())
}

fn ctx(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn topic(name: &str, placement: Vec<usize>) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: placement
                .iter()
                .map(|_| PartitionState::new(vec![1]))
                .collect(),
            placement,
            configs: BTreeMap::new(),
            internal: false,
        }
    }

    #[test]
    fn legacy_files_load_with_a_torn_tail_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = MetadataImage::default();
        let records = [
            MetadataRecord::TopicCreated(topic("a", vec![0, 1, 0])),
            MetadataRecord::TopicCreated(topic("b", vec![1])),
            MetadataRecord::TopicDeleted { name: "a".into() },
        ];
        let mut log = File::create(dir.path().join("metadata.log")).unwrap();
        for r in &records {
            expected.apply(r);
            serde_json::to_writer(&mut log, r).unwrap();
            log.write_all(b"\n").unwrap();
        }
        log.write_all(b"{\"type\":\"TopicDel").unwrap();
        let loaded = load_legacy(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.topics, expected.topics);
        retire_legacy(dir.path()).unwrap();
        assert!(load_legacy(dir.path()).unwrap().is_none());
    }

    #[test]
    fn owner_shard_folds_onto_fewer_shards() {
        let t = topic("t", vec![0, 1, 2, 3]);
        assert_eq!(t.owner_shard(3, 4), Some(3));
        assert_eq!(t.owner_shard(3, 2), Some(1));
        assert_eq!(t.owner_shard(4, 2), None);
        assert_eq!(t.owner_shard(-1, 2), None);
    }

    #[test]
    fn partition_changes_replace_the_whole_state() {
        let mut image = MetadataImage::default();
        image.apply(&MetadataRecord::TopicCreated(topic("t", vec![0, 1])));
        let state = PartitionState {
            replicas: vec![1, 2, 3],
            isr: vec![2, 3],
            leader: 2,
            leader_epoch: 4,
            partition_epoch: 7,
            ..Default::default()
        };
        let change = MetadataRecord::PartitionChanged {
            name: "t".into(),
            partition: 1,
            state: state.clone(),
        };
        image.apply(&change);
        image.apply(&change);
        assert_eq!(image.topic("t").unwrap().state(1), Some(&state));
        assert_eq!(image.topic("t").unwrap().state(0).unwrap().leader, 1);
    }
}
