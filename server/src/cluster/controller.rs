//! The active controller (KRaft's QuorumController): runs on the Raft leader and turns
//! requests — broker registrations and heartbeats, topic changes, AlterPartition — into
//! metadata records, which it proposes to the quorum one decision at a time (so each
//! decision reads the image every earlier one produced).
//!
//! It also keeps the brokers' leases: a broker that has not heartbeaten for
//! `broker.session.timeout.ms` is fenced, leaves every ISR it was in (except the last
//! member's place, so the partition can come back when it does) and loses its
//! leaderships to the next in-sync replica, or to any live replica when unclean election
//! is enabled for the topic. A broker that asks to shut down (controlled shutdown) first
//! hands its leaderships to other in-sync replicas.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::raft_store::MetaStore;
use super::{Proposal, QuorumNode, Raft};
use crate::metadata::tasks::{Task, TaskPartition};
use crate::metadata::{
    BrokerMeta, MetadataImage, MetadataRecord, NO_LEADER, PartitionState, TopicMeta,
};

/// Validates a topic's config overrides (the broker's `log_config`).
pub type ConfigCheck = Arc<dyn Fn(&BTreeMap<String, String>) -> Result<(), String> + Send + Sync>;

/// What the controller needs from the broker config.
#[derive(Clone)]
pub struct ControllerConfig {
    pub node_id: i32,
    pub shards: usize,
    pub session_timeout: Duration,
    pub unclean_default: bool,
    pub max_broker_partitions: Option<u32>,
    pub offsets_replication_factor: i16,
    /// Combined mode (brokers are the voters): brokers expected before
    /// `__consumer_offsets` is created are at most the current voters (a quorum of one
    /// makes a one-replica offsets topic); with separate controllers none below the
    /// replication factor (Kafka's rule).
    pub combined: bool,
    pub log_config_check: ConfigCheck,
    /// Automatic preferred-leader election: how often, and above which share of a
    /// broker's preferred partitions led elsewhere (percent); `None` when disabled.
    pub leader_rebalance: Option<(Duration, u32)>,
}

impl std::fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerConfig")
            .field("node_id", &self.node_id)
            .field("session_timeout", &self.session_timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    RegisterBroker {
        id: i32,
        incarnation: Uuid,
        host: String,
        port: u16,
        #[serde(default)]
        endpoints: Vec<crate::metadata::Endpoint>,
        rack: Option<String>,
    },
    Heartbeat {
        id: i32,
        incarnation: Uuid,
        applied: u64,
        shutting_down: bool,
    },
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        /// Explicit replicas per partition (CreateTopics assignments).
        assignment: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
        internal: bool,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        count: i32,
        validate_only: bool,
        /// Explicit replicas of each new partition (`kafka-topics --alter
        /// --replica-assignment`); none: the controller places them.
        #[serde(default)]
        assignment: Option<Vec<Vec<i32>>>,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    AllocateProducerIds {
        count: i64,
    },
    /// UnregisterBroker: a stopped broker that holds no replica leaves the cluster.
    UnregisterBroker {
        id: i32,
    },
    /// A broker resource's whole set of dynamic configs ("" = the cluster default).
    SetBrokerConfigs {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    /// AlterUserScramCredentials: SCRAM credentials set and removed, checked per user
    /// against the users that exist (at most `max_users`; `protected` keeps at least one
    /// credential). `only_if_absent` creates a user that does not exist and leaves an
    /// existing one alone (the initial user at startup).
    AlterScramCredentials {
        upserts: Vec<(String, String, crate::security::scram::Credential)>,
        deletions: Vec<(String, String)>,
        max_users: usize,
        protected: Option<String>,
        only_if_absent: bool,
    },
    /// CreateAcls: bindings added (already present ones are left as they are).
    CreateAcls {
        acls: Vec<crate::security::acl::AclBinding>,
    },
    /// DeleteAcls: every binding each filter matches is removed.
    DeleteAcls {
        filters: Vec<crate::security::acl::AclFilter>,
    },
    /// The quorum as the active controller sees it (DescribeQuorum).
    DescribeQuorum,
    /// AddRaftVoter (KIP-853): a controller joins the quorum, first as a learner that
    /// catches up on the metadata log, then as a voter. With `observer` it stays a
    /// learner (a controller finding a running dynamic quorum at its first start).
    AddVoter {
        id: i32,
        addr: String,
        directory_id: Option<String>,
        observer: bool,
    },
    /// RemoveRaftVoter (KIP-853): a voter leaves the quorum. A known directory id must
    /// match.
    RemoveVoter {
        id: i32,
        directory_id: Option<String>,
    },
    /// UpdateRaftVoter (KIP-853): a voter's controller endpoint changed (it restarted
    /// with another advertised address). A known directory id must match.
    UpdateVoter {
        id: i32,
        directory_id: Option<String>,
        addr: String,
    },
    /// ElectLeaders: the preferred replica (the first assigned) back as leader, or with
    /// `unclean` any live replica for a partition without a leader. `None`: all.
    ElectLeaders {
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// AlterPartitionReassignments (KIP-455): move each partition to the replica list, or
    /// with `None` cancel its reassignment. New replicas join first and catch up; the
    /// replica set switches once they are all in sync.
    Reassign {
        partitions: Vec<(String, i32, Option<Vec<i32>>)>,
        allow_replication_factor_change: bool,
    },
    /// A leader's ISR change (Kafka's AlterPartition).
    AlterPartition {
        name: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    None,
    ProducerIds {
        first: i64,
    },
    Topic(TopicMeta),
    Heartbeat {
        registered: bool,
        fenced: bool,
        shutdown_ready: bool,
    },
    Partition(PartitionState),
    Quorum(super::QuorumView),
    /// ElectLeaders, AlterPartitionReassignments: (topic, partition, error code,
    /// message) per partition.
    PartitionResults(Vec<(String, i32, i16, Option<String>)>),
    /// AlterScramCredentials: (user, error code, message) per user.
    UserResults(Vec<(String, i16, Option<String>)>),
    /// DeleteAcls: the bindings each filter removed.
    AclsDeleted(Vec<Vec<crate::security::acl::AclBinding>>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerReply {
    /// Done; the metadata log holds the decision at `index`.
    Done {
        index: u64,
        answer: Answer,
    },
    Error {
        code: i16,
        message: String,
    },
    NotController {
        leader: Option<u64>,
    },
}

/// Longest a proposal may wait for the quorum to commit it.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new voter may take to catch up and the quorum to commit a membership change.
pub const QUORUM_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

type Decision = Result<(Vec<MetadataRecord>, Answer), (ResponseError, String)>;

/// Decides an AlterScramCredentials: each user's changes apply together or not at all.
fn alter_scram(
    image: &MetadataImage,
    upserts: &[(String, String, crate::security::scram::Credential)],
    deletions: &[(String, String)],
    max_users: usize,
    protected: Option<&str>,
    only_if_absent: bool,
) -> (Vec<MetadataRecord>, Answer) {
    let mut users: Vec<&String> = upserts
        .iter()
        .map(|(u, _, _)| u)
        .chain(deletions.iter().map(|(u, _)| u))
        .collect();
    users.sort();
    users.dedup();
    let mut count = image.users.len();
    let mut records = Vec::new();
    let mut results = Vec::new();
    for user in users {
        let existing = image.users.get(user);
        if only_if_absent && existing.is_some() {
            results.push((user.clone(), 0, None));
            continue;
        }
        let mut mechs: std::collections::BTreeSet<&String> = existing
            .map(|u| u.scram.keys().collect())
            .unwrap_or_default();
        let mut mine = Vec::new();
        let mut error = None;
        for (_, mech) in deletions.iter().filter(|(u, _)| u == user) {
            if !mechs.remove(mech) {
                error = Some((
                    ResponseError::ResourceNotFound,
                    format!("user {user} has no {mech} credential"),
                ));
                break;
            }
            mine.push(MetadataRecord::ScramCredentialDeleted {
                user: user.clone(),
                mechanism: mech.clone(),
            });
        }
        for (_, mech, credential) in upserts.iter().filter(|(u, _, _)| u == user) {
            mechs.insert(mech);
            mine.push(MetadataRecord::ScramCredentialUpserted {
                user: user.clone(),
                mechanism: mech.clone(),
                credential: credential.clone(),
            });
        }
        if error.is_none() && mechs.is_empty() && protected == Some(user.as_str()) {
            error = Some((
                ResponseError::PolicyViolation,
                format!("{user} is the initial user and cannot be deleted"),
            ));
        }
        if error.is_none() && existing.is_none() && !mechs.is_empty() {
            if count >= max_users {
                error = Some((
                    ResponseError::PolicyViolation,
                    format!("at most {max_users} SASL users can be created"),
                ));
            } else {
                count += 1;
            }
        }
        if error.is_none() && existing.is_some() && mechs.is_empty() {
            count = count.saturating_sub(1);
        }
        match error {
            Some((code, message)) => results.push((user.clone(), code.code(), Some(message))),
            None => {
                records.extend(mine);
                results.push((user.clone(), 0, None));
            }
        }
    }
    (records, Answer::UserResults(results))
}

fn refuse(code: ResponseError, message: impl Into<String>) -> Decision {
    Err((code, message.into()))
}

struct LeaseState {
    leases: HashMap<i32, Instant>,
    /// The Raft term this controller's leases were started in.
    term: Option<u64>,
    /// When leadership balance was last checked.
    last_rebalance: Option<Instant>,
    /// The next background task's id (from the image when this term began).
    next_task: u64,
}

pub struct Controller {
    config: ControllerConfig,
    raft: Raft,
    store: Arc<MetaStore>,
    state: tokio::sync::Mutex<LeaseState>,
    quorum_change: tokio::sync::Mutex<()>,
    /// Set while this leader hands over after its removal from the voters.
    resigning: Arc<AtomicBool>,
}

impl Controller {
    pub fn new(config: ControllerConfig, raft: Raft, store: Arc<MetaStore>) -> Self {
        Controller {
            config,
            raft,
            store,
            state: tokio::sync::Mutex::new(LeaseState {
                leases: HashMap::new(),
                term: None,
                last_rebalance: None,
                next_task: 0,
            }),
            quorum_change: tokio::sync::Mutex::new(()),
            resigning: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The quorum's current voters.
    fn voter_ids(&self) -> BTreeSet<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// AddRaftVoter / RemoveRaftVoter: a membership change of the Raft quorum itself
    /// (joint consensus in openraft), not a metadata record.
    async fn change_quorum(&self, req: ControllerRequest) -> ControllerReply {
        let error = |code: ResponseError, message: String| ControllerReply::Error {
            code: code.code(),
            message,
        };
        let done = || ControllerReply::Done {
            index: 0,
            answer: Answer::None,
        };
        let voters = self.voter_ids();
        let nodes: BTreeMap<u64, QuorumNode> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        match req {
            ControllerRequest::AddVoter {
                id,
                addr,
                directory_id,
                observer,
            } => {
                let Ok(nid) = u64::try_from(id) else {
                    return error(ResponseError::InvalidRequest, format!("bad voter id {id}"));
                };
                if voters.contains(&nid) {
                    return if observer {
                        done()
                    } else {
                        error(
                            ResponseError::DuplicateVoter,
                            format!("node {id} is already a voter"),
                        )
                    };
                }
                let node = QuorumNode {
                    addr: addr.clone(),
                    directory_id,
                };
                // A learner first: it receives the log (blocking: until it caught up).
                if nodes.get(&nid) != Some(&node) {
                    let added = tokio::time::timeout(
                        QUORUM_CHANGE_TIMEOUT,
                        self.raft.add_learner(nid, node, !observer),
                    )
                    .await;
                    match added {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            return error(
                                ResponseError::RequestTimedOut,
                                format!("adding node {id} ({addr}) as a learner: {e}"),
                            );
                        }
                        Err(_) => {
                            return error(
                                ResponseError::RequestTimedOut,
                                format!(
                                    "node {id} ({addr}) did not catch up on the metadata log \
                                     within {} s: is it running with this address?",
                                    QUORUM_CHANGE_TIMEOUT.as_secs()
                                ),
                            );
                        }
                    }
                }
                if observer {
                    tracing::info!(node = id, %addr, "controller joined the quorum as an observer");
                    return done();
                }
                let mut next = voters;
                next.insert(nid);
                self.membership(next, format!("adding voter {id}")).await
            }
            ControllerRequest::RemoveVoter { id, directory_id } => {
                let nid = u64::try_from(id).unwrap_or(u64::MAX);
                if !voters.contains(&nid) {
                    return error(
                        ResponseError::VoterNotFound,
                        format!("node {id} is not a voter"),
                    );
                }
                let known = nodes.get(&nid).and_then(|n| n.directory_id.clone());
                if let (Some(asked), Some(known)) = (&directory_id, &known)
                    && asked != known
                {
                    return error(
                        ResponseError::VoterNotFound,
                        format!("voter {id} has directory id {known}, not {asked}"),
                    );
                }
                if voters.len() == 1 {
                    return error(
                        ResponseError::InvalidRequest,
                        format!("node {id} is the only voter: the quorum cannot lose it"),
                    );
                }
                let mut next = voters;
                next.remove(&nid);
                let reply = self.membership(next, format!("removing voter {id}")).await;
                if matches!(reply, ControllerReply::Done { .. }) && id == self.config.node_id {
                    self.resign();
                }
                reply
            }
            ControllerRequest::UpdateVoter {
                id,
                directory_id,
                addr,
            } => {
                let nid = u64::try_from(id).unwrap_or(u64::MAX);
                let Some(node) = nodes.get(&nid).filter(|_| voters.contains(&nid)) else {
                    return error(
                        ResponseError::VoterNotFound,
                        format!("node {id} is not a voter"),
                    );
                };
                if let (Some(asked), Some(known)) = (&directory_id, &node.directory_id)
                    && asked != known
                {
                    return error(
                        ResponseError::VoterNotFound,
                        format!("voter {id} has directory id {known}, not {asked}"),
                    );
                }
                if node.addr == addr {
                    return done();
                }
                let updated = QuorumNode {
                    addr: addr.clone(),
                    directory_id: node.directory_id.clone().or(directory_id),
                };
                let change = openraft::ChangeMembers::SetNodes(BTreeMap::from([(nid, updated)]));
                match tokio::time::timeout(
                    QUORUM_CHANGE_TIMEOUT,
                    self.raft.change_membership(change, false),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        tracing::info!(voter = id, %addr, previous = %node.addr, "voter endpoint updated");
                        done()
                    }
                    Ok(Err(e)) => error(
                        ResponseError::RequestTimedOut,
                        format!("updating voter {id}: {e}"),
                    ),
                    Err(_) => error(
                        ResponseError::RequestTimedOut,
                        format!("updating voter {id} did not commit in time"),
                    ),
                }
            }
            _ => error(ResponseError::InvalidRequest, "not a quorum change".into()),
        }
    }

    /// Commits `voters` as the voter set. A voter left out stays a learner (KIP-853's
    /// observer: it receives the log and has no vote). Dropped from the membership
    /// altogether, a running one would hear from no leader, stand for election again and
    /// again with ever higher terms, and unsettle the quorum it left.
    async fn membership(&self, voters: BTreeSet<u64>, what: String) -> ControllerReply {
        let changed = tokio::time::timeout(
            QUORUM_CHANGE_TIMEOUT,
            self.raft.change_membership(voters.clone(), true),
        )
        .await;
        match changed {
            Ok(Ok(r)) => {
                tracing::info!(voters = ?voters, "{what}: done");
                ControllerReply::Done {
                    index: r.log_id.index,
                    answer: Answer::None,
                }
            }
            Ok(Err(e)) => ControllerReply::Error {
                code: ResponseError::RequestTimedOut.code(),
                message: format!("{what}: {e}"),
            },
            Err(_) => ControllerReply::Error {
                code: ResponseError::RequestTimedOut.code(),
                message: format!("{what}: the quorum did not commit it in time"),
            },
        }
    }

    /// The term this node leads in, if it is the Raft leader.
    fn leading_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        (m.current_leader == Some(m.id) && !self.resigning.load(Ordering::Relaxed))
            .then_some(m.current_term)
    }

    /// This leader is no longer a voter: it stops deciding and stops its heartbeats, so
    /// the voters' election timeout elects one of them; it then follows as a learner.
    /// (openraft lets a leader that is a learner go on leading, and a Kafka controller
    /// removed from the voters resigns.)
    fn resign(&self) {
        self.resigning.store(true, Ordering::Relaxed);
        self.raft.runtime_config().heartbeat(false);
        let (raft, resigning) = (self.raft.clone(), Arc::clone(&self.resigning));
        let me = self.config.node_id as u64;
        tokio::spawn(async move {
            let elected = raft
                .wait(Some(QUORUM_CHANGE_TIMEOUT))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != me),
                    "a voter to take over",
                )
                .await;
            if elected.is_err() {
                tracing::warn!("no voter took over from the removed controller in time");
            }
            raft.runtime_config().heartbeat(true);
            resigning.store(false, Ordering::Relaxed);
        });
    }

    /// Handles a request if this node is the active controller.
    /// The committed image once its offset passes `after`, waiting at most `wait` (a
    /// broker-only node's metadata fetch); `None` if nothing changed meanwhile.
    pub async fn image_after(
        &self,
        after: u64,
        wait: Duration,
    ) -> Option<crate::metadata::MetadataImage> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.raft.metrics();
        loop {
            let image = self.store.image();
            if image.offset > after {
                return Some(image);
            }
            // Applied entries change the metrics; recheck the image after each.
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    pub async fn handle_local(&self, req: ControllerRequest) -> ControllerReply {
        let Some(term) = self.leading_term() else {
            let leader = self.raft.metrics().borrow().current_leader;
            return ControllerReply::NotController { leader };
        };
        if let ControllerRequest::DescribeQuorum = req {
            return ControllerReply::Done {
                index: 0,
                answer: Answer::Quorum(super::quorum_view(&self.raft)),
            };
        }
        if let ControllerRequest::AddVoter { .. }
        | ControllerRequest::RemoveVoter { .. }
        | ControllerRequest::UpdateVoter { .. } = req
        {
            // One quorum change at a time, as Raft requires; metadata decisions go on.
            let _one = self.quorum_change.lock().await;
            return self.change_quorum(req).await;
        }
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let image = self.store.image();
        if state.term != Some(term) {
            // A new controller gives every registered broker a full session.
            state.term = Some(term);
            state.leases = image.brokers.keys().map(|id| (*id, now)).collect();
        }
        let decision = self.decide(&req, &image, &mut state, now);
        self.propose(decision, &image, change_reason(&req)).await
    }

    /// Commits a decision's records through the quorum. Once committed, each partition
    /// whose leader changed is logged at INFO (partition, new leader, epoch, `reason`), so
    /// an operator can tell from the active controller's log who led when.
    async fn propose(
        &self,
        decision: Decision,
        image: &MetadataImage,
        reason: &str,
    ) -> ControllerReply {
        let current = image.offset;
        let elected = match &decision {
            Ok((records, _)) => leader_changes(image, records),
            Err(_) => Vec::new(),
        };
        let reply = self.commit(decision, current).await;
        if let ControllerReply::Done { .. } = reply {
            for (topic, partition, from, to, epoch) in elected {
                tracing::info!(
                    topic,
                    partition,
                    leader = to,
                    previous = from,
                    leader_epoch = epoch,
                    reason,
                    "partition leader changed"
                );
            }
        }
        reply
    }

    async fn commit(&self, decision: Decision, current: u64) -> ControllerReply {
        match decision {
            Err((code, message)) => ControllerReply::Error {
                code: code.code(),
                message,
            },
            Ok((records, answer)) if records.is_empty() => ControllerReply::Done {
                index: current,
                answer,
            },
            Ok((records, answer)) => match tokio::time::timeout(
                PROPOSE_TIMEOUT,
                self.raft.client_write(Proposal { records }),
            )
            .await
            {
                // A leader cut off from the quorum cannot commit: answer, do not hang.
                Err(_) => ControllerReply::NotController { leader: None },
                Ok(Ok(r)) => ControllerReply::Done {
                    index: r.log_id.index,
                    answer,
                },
                Ok(Err(e)) => match e.forward_to_leader() {
                    Some(f) => ControllerReply::NotController {
                        leader: f.leader_id,
                    },
                    None => ControllerReply::Error {
                        code: ResponseError::NotController.code(),
                        message: format!("metadata quorum: {e}"),
                    },
                },
            },
        }
    }

    /// Periodic duties of the active controller: fencing brokers whose lease expired and
    /// creating `__consumer_offsets` once the expected brokers are up.
    pub async fn tick(&self) {
        let Some(term) = self.leading_term() else {
            return;
        };
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let image = self.store.image();
        if state.term != Some(term) {
            state.term = Some(term);
            state.leases = image.brokers.keys().map(|id| (*id, now)).collect();
            // The first balance check comes one interval after taking over.
            state.last_rebalance = Some(now);
            state.next_task = image.tasks.keys().next_back().map_or(1, |id| id + 1);
        }
        let mut records = Vec::new();
        let mut scratch = image.clone();
        for b in image.brokers.values().filter(|b| !b.fenced) {
            let last = state.leases.get(&b.id).copied().unwrap_or(now);
            if now.duration_since(last) > self.config.session_timeout {
                tracing::warn!(broker = b.id, "broker session expired: fencing it");
                let fence = self.fence(&scratch, b.id);
                for r in &fence {
                    scratch.apply(r);
                }
                records.extend(fence);
            }
        }
        if scratch.topic(crate::metadata::OFFSETS_TOPIC).is_none() {
            let live = scratch.live_brokers().count();
            let wanted = (self.config.offsets_replication_factor.max(1) as usize).min(
                if self.config.combined {
                    self.voter_ids().len().max(1)
                } else {
                    usize::MAX
                },
            );
            if live >= wanted {
                let req = ControllerRequest::CreateTopic {
                    name: crate::metadata::OFFSETS_TOPIC.to_owned(),
                    partitions: crate::metadata::OFFSETS_PARTITIONS as i32,
                    replication_factor: wanted as i16,
                    assignment: None,
                    configs: [
                        ("cleanup.policy", "compact"),
                        ("segment.bytes", crate::metadata::OFFSETS_SEGMENT_BYTES),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                    validate_only: false,
                    internal: true,
                };
                if let Ok((r, _)) = self.decide(&req, &scratch, &mut state, now) {
                    records.extend(r);
                }
            }
        }
        records.extend(crate::metadata::tasks::finished(
            &scratch,
            crate::storage::now_ms(),
        ));
        if let Some((interval, percentage)) = self.config.leader_rebalance {
            let due = state
                .last_rebalance
                .is_none_or(|t| now.duration_since(t) >= interval);
            if due {
                state.last_rebalance = Some(now);
                records.extend(rebalance_leaders(&scratch, percentage));
            }
        }
        if !records.is_empty() {
            let reply = self
                .propose(
                    Ok((records, Answer::None)),
                    &image,
                    "controller duties (broker session expired, leader rebalance)",
                )
                .await;
            if let ControllerReply::Error { message, .. } = reply {
                tracing::warn!(error = %message, "controller tick proposal failed");
            }
        }
    }

    fn decide(
        &self,
        req: &ControllerRequest,
        image: &MetadataImage,
        state: &mut LeaseState,
        now: Instant,
    ) -> Decision {
        match req {
            ControllerRequest::DescribeQuorum
            | ControllerRequest::AddVoter { .. }
            | ControllerRequest::RemoveVoter { .. }
            | ControllerRequest::UpdateVoter { .. } => Ok((Vec::new(), Answer::None)),
            ControllerRequest::RegisterBroker {
                id,
                incarnation,
                host,
                port,
                endpoints,
                rack,
            } => {
                state.leases.insert(*id, now);
                let mut records = Vec::new();
                if let Some(old) = image.brokers.get(id) {
                    if old.incarnation == *incarnation {
                        return Ok((Vec::new(), Answer::None));
                    }
                    // A restarted broker: its old incarnation's leaderships move first.
                    records.extend(self.fence(image, *id));
                }
                records.push(MetadataRecord::BrokerRegistered(BrokerMeta {
                    id: *id,
                    incarnation: *incarnation,
                    host: host.clone(),
                    port: *port,
                    endpoints: endpoints.clone(),
                    rack: rack.clone(),
                    fenced: true,
                    epoch: image.offset + 1,
                    shutting_down: false,
                }));
                tracing::info!(broker = id, %host, port, "broker registered");
                Ok((records, Answer::None))
            }
            ControllerRequest::Heartbeat {
                id,
                incarnation,
                applied,
                shutting_down,
            } => {
                let Some(b) = image
                    .brokers
                    .get(id)
                    .filter(|b| b.incarnation == *incarnation)
                else {
                    return Ok((
                        Vec::new(),
                        Answer::Heartbeat {
                            registered: false,
                            fenced: true,
                            shutdown_ready: false,
                        },
                    ));
                };
                state.leases.insert(*id, now);
                if *shutting_down {
                    return Ok(controlled_shutdown(image, b));
                }
                if b.fenced && *applied >= b.epoch {
                    tracing::info!(broker = id, "broker caught up: unfencing it");
                    let records = self.unfence(image, *id);
                    return Ok((
                        records,
                        Answer::Heartbeat {
                            registered: true,
                            fenced: false,
                            shutdown_ready: false,
                        },
                    ));
                }
                Ok((
                    Vec::new(),
                    Answer::Heartbeat {
                        registered: true,
                        fenced: b.fenced,
                        shutdown_ready: false,
                    },
                ))
            }
            ControllerRequest::CreateTopic {
                name,
                partitions,
                replication_factor,
                assignment,
                configs,
                validate_only,
                internal,
            } => {
                if image.topic(name).is_some() {
                    return refuse(
                        ResponseError::TopicAlreadyExists,
                        format!("Topic '{name}' already exists."),
                    );
                }
                if let Err(m) = (self.config.log_config_check)(configs) {
                    return refuse(ResponseError::InvalidConfig, m);
                }
                let replicas = match assignment {
                    Some(a) => {
                        if let Some(unknown) =
                            a.iter().flatten().find(|b| !image.brokers.contains_key(b))
                        {
                            return refuse(
                                ResponseError::InvalidReplicaAssignment,
                                format!("Unknown broker(s) {unknown} in the replica assignment"),
                            );
                        }
                        a.clone()
                    }
                    None => self.assign(image, *partitions, *replication_factor, 0)?,
                };
                if !internal {
                    self.check_partition_limit(image, replicas.len() as i32)?;
                }
                let rf = replicas.first().map_or(0, Vec::len);
                check_replication_configs(configs, rf)?;
                let meta = TopicMeta {
                    name: name.clone(),
                    id: Uuid::new_v4(),
                    placement: image.place(replicas.len(), self.config.shards),
                    partitions: replicas.into_iter().map(PartitionState::new).collect(),
                    configs: configs.clone(),
                    internal: *internal,
                };
                if *validate_only {
                    return Ok((Vec::new(), Answer::Topic(meta)));
                }
                tracing::info!(topic = %name, partitions = meta.partitions.len(), "creating topic");
                Ok((
                    vec![MetadataRecord::TopicCreated(meta.clone())],
                    Answer::Topic(meta),
                ))
            }
            ControllerRequest::DeleteTopic { name } => {
                let Some(t) = image.topic(name) else {
                    return refuse(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    );
                };
                if t.internal {
                    return refuse(
                        ResponseError::InvalidTopicException,
                        format!("topic '{name}' is internal"),
                    );
                }
                Ok((
                    vec![MetadataRecord::TopicDeleted { name: name.clone() }],
                    Answer::Topic(t.clone()),
                ))
            }
            ControllerRequest::CreatePartitions {
                name,
                count,
                validate_only,
                assignment,
            } => {
                let Some(t) = image.topic(name) else {
                    return refuse(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    );
                };
                let current = t.partition_count() as i32;
                if *count <= current {
                    return refuse(
                        ResponseError::InvalidPartitions,
                        format!("topic has {current} partitions; the count can only grow"),
                    );
                }
                let rf = t.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
                let replicas = match assignment {
                    Some(a) => check_added_assignment(image, a, count - current, rf as usize)?,
                    None => self.assign(image, count - current, rf, current)?,
                };
                self.check_partition_limit(image, count - current)?;
                if *validate_only {
                    return Ok((Vec::new(), Answer::None));
                }
                Ok((
                    vec![MetadataRecord::PartitionsAdded {
                        name: name.clone(),
                        placement: image.place(replicas.len(), self.config.shards),
                        partitions: replicas.into_iter().map(PartitionState::new).collect(),
                    }],
                    Answer::None,
                ))
            }
            ControllerRequest::SetTopicConfigs { name, configs } => {
                let Some(t) = image.topic(name) else {
                    return refuse(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    );
                };
                let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
                check_replication_configs(configs, rf)?;
                if let Err(m) = (self.config.log_config_check)(configs) {
                    return refuse(ResponseError::InvalidConfig, m);
                }
                Ok((
                    vec![MetadataRecord::TopicConfigChanged {
                        name: name.clone(),
                        configs: configs.clone(),
                    }],
                    Answer::None,
                ))
            }
            ControllerRequest::UnregisterBroker { id } => {
                let Some(b) = image.brokers.get(id) else {
                    return refuse(
                        ResponseError::BrokerIdNotRegistered,
                        format!("broker {id} is not registered"),
                    );
                };
                if !b.fenced {
                    return refuse(
                        ResponseError::InvalidRequest,
                        format!("broker {id} is running: stop it before unregistering it"),
                    );
                }
                let held = image
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.iter())
                    .filter(|p| p.replicas.contains(id))
                    .count();
                if held > 0 {
                    return refuse(
                        ResponseError::InvalidRequest,
                        format!(
                            "broker {id} still holds {held} replica(s): drain it first (ringmq cluster drain {id})"
                        ),
                    );
                }
                Ok((
                    vec![MetadataRecord::BrokerUnregistered { id: *id }],
                    Answer::None,
                ))
            }
            ControllerRequest::SetBrokerConfigs { resource, configs } => {
                if !resource.is_empty() && resource.parse::<i32>().is_err() {
                    return refuse(
                        ResponseError::InvalidRequest,
                        format!("broker resource '{resource}': expected a broker id or \"\""),
                    );
                }
                for (k, v) in configs {
                    if let Err(m) = crate::quota::throttle::validate_broker_config(k, v) {
                        return refuse(ResponseError::InvalidConfig, m);
                    }
                }
                Ok((
                    vec![MetadataRecord::BrokerConfigChanged {
                        resource: resource.clone(),
                        configs: configs.clone(),
                    }],
                    Answer::None,
                ))
            }
            ControllerRequest::AlterScramCredentials {
                upserts,
                deletions,
                max_users,
                protected,
                only_if_absent,
            } => Ok(alter_scram(
                image,
                upserts,
                deletions,
                *max_users,
                protected.as_deref(),
                *only_if_absent,
            )),
            ControllerRequest::CreateAcls { acls } => {
                for acl in acls {
                    if let Err((code, message)) = crate::security::acl::validate(acl) {
                        return refuse(code, message);
                    }
                }
                let records = acls
                    .iter()
                    .filter(|a| image.acls.binary_search(a).is_err())
                    .map(|a| MetadataRecord::AclCreated(a.clone()))
                    .collect();
                Ok((records, Answer::None))
            }
            ControllerRequest::DeleteAcls { filters } => {
                let matched: Vec<Vec<_>> = filters
                    .iter()
                    .map(|f| {
                        image
                            .acls
                            .iter()
                            .filter(|a| f.matches(a))
                            .cloned()
                            .collect()
                    })
                    .collect();
                let mut gone: Vec<_> = matched.iter().flatten().cloned().collect();
                gone.sort();
                gone.dedup();
                let records = gone.into_iter().map(MetadataRecord::AclDeleted).collect();
                Ok((records, Answer::AclsDeleted(matched)))
            }
            ControllerRequest::AllocateProducerIds { count } => {
                let first = image.next_producer_id;
                Ok((
                    vec![MetadataRecord::ProducerIdsAllocated {
                        next: first + count.max(&1),
                    }],
                    Answer::ProducerIds { first },
                ))
            }
            ControllerRequest::ElectLeaders {
                unclean,
                partitions,
            } => {
                let all = partitions.is_none();
                let wanted: Vec<(String, i32)> = match partitions {
                    Some(p) => p.clone(),
                    None => image
                        .topics
                        .values()
                        .flat_map(|t| (0..t.partitions.len() as i32).map(|p| (t.name.clone(), p)))
                        .collect(),
                };
                let mut records = Vec::new();
                let mut results = Vec::new();
                for (name, p) in wanted {
                    let Some(s) = image.topic(&name).and_then(|t| t.state(p)) else {
                        results.push((
                            name,
                            p,
                            ResponseError::UnknownTopicOrPartition.code(),
                            Some("no such partition".into()),
                        ));
                        continue;
                    };
                    let mut new = s.clone();
                    let outcome = if *unclean {
                        unclean_election(&mut new, image)
                    } else {
                        preferred_election(&mut new, image)
                    };
                    match outcome {
                        Ok(()) => {
                            new.partition_epoch += 1;
                            records.push(MetadataRecord::PartitionChanged {
                                name: name.clone(),
                                partition: p,
                                state: new,
                            });
                            results.push((name, p, 0, None));
                        }
                        // Asked for everything: what needs nothing is not reported.
                        Err((ResponseError::ElectionNotNeeded, _)) if all => {}
                        Err((code, message)) => results.push((name, p, code.code(), Some(message))),
                    }
                }
                if !records.is_empty() {
                    tracing::info!(partitions = records.len(), unclean, "leader election");
                }
                Ok((records, Answer::PartitionResults(results)))
            }
            ControllerRequest::Reassign {
                partitions,
                allow_replication_factor_change,
            } => {
                let mut records = Vec::new();
                let mut results = Vec::new();
                for (name, p, target) in partitions {
                    let Some(s) = image.topic(name).and_then(|t| t.state(*p)) else {
                        results.push((
                            name.clone(),
                            *p,
                            ResponseError::UnknownTopicOrPartition.code(),
                            Some("no such partition".into()),
                        ));
                        continue;
                    };
                    let outcome = match target {
                        None => cancel_reassignment(s, image),
                        Some(t) => reassign(s, t, image, *allow_replication_factor_change),
                    };
                    match outcome {
                        Ok(new) => {
                            if new.reassigning() {
                                tracing::info!(topic = %name, partition = p, replicas = ?new.replicas, adding = ?new.adding, removing = ?new.removing, "reassigning");
                            }
                            records.push(MetadataRecord::PartitionChanged {
                                name: name.clone(),
                                partition: *p,
                                state: new,
                            });
                            results.push((name.clone(), *p, 0, None));
                        }
                        Err((code, message)) => {
                            results.push((name.clone(), *p, code.code(), Some(message)))
                        }
                    }
                }
                // Moves started (not cancellations) form one background task.
                let moved: Vec<TaskPartition> = partitions
                    .iter()
                    .zip(&results)
                    .filter(|(_, r)| r.2 == 0)
                    .filter_map(|((name, p, target), _)| {
                        Some(TaskPartition {
                            topic: name.clone(),
                            partition: *p,
                            target: target.clone()?,
                        })
                    })
                    .collect();
                if !moved.is_empty() {
                    let id = state
                        .next_task
                        .max(image.tasks.keys().next_back().map_or(1, |id| id + 1));
                    state.next_task = id + 1;
                    records.push(MetadataRecord::TaskChanged(Task::reassignment(
                        id,
                        moved,
                        crate::storage::now_ms(),
                    )));
                }
                Ok((records, Answer::PartitionResults(results)))
            }
            ControllerRequest::AlterPartition {
                name,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => self.alter_partition(
                image,
                name,
                *partition,
                *leader,
                *leader_epoch,
                *partition_epoch,
                isr,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn alter_partition(
        &self,
        image: &MetadataImage,
        name: &str,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> Decision {
        let Some(s) = image.topic(name).and_then(|t| t.state(partition)) else {
            return refuse(ResponseError::UnknownTopicOrPartition, "no such partition");
        };
        if s.leader != leader || s.leader_epoch != leader_epoch {
            return refuse(
                ResponseError::FencedLeaderEpoch,
                format!(
                    "leader {leader} epoch {leader_epoch} is not the current leader {} epoch {}",
                    s.leader, s.leader_epoch
                ),
            );
        }
        if s.partition_epoch != partition_epoch {
            return refuse(
                ResponseError::InvalidUpdateVersion,
                format!(
                    "partition epoch {partition_epoch} is not the current {}",
                    s.partition_epoch
                ),
            );
        }
        if !isr.contains(&leader) || isr.iter().any(|r| !s.replicas.contains(r)) {
            return refuse(
                ResponseError::InvalidRequest,
                format!(
                    "ISR {isr:?} must hold the leader and only replicas of {:?}",
                    s.replicas
                ),
            );
        }
        if let Some(r) = isr.iter().filter(|r| !s.isr.contains(r)).find(|r| {
            !image
                .brokers
                .get(r)
                .is_some_and(|b| !b.fenced && !b.shutting_down)
        }) {
            return refuse(
                ResponseError::IneligibleReplica,
                format!("replica {r} is fenced or shutting down"),
            );
        }
        let mut new = s.clone();
        new.isr = s
            .replicas
            .iter()
            .copied()
            .filter(|r| isr.contains(r))
            .collect();
        // The last new replica caught up: the reassignment completes.
        finish_reassignment(&mut new, image);
        new.partition_epoch += 1;
        Ok((
            vec![MetadataRecord::PartitionChanged {
                name: name.to_owned(),
                partition,
                state: new.clone(),
            }],
            Answer::Partition(new),
        ))
    }

    fn check_partition_limit(
        &self,
        image: &MetadataImage,
        adding: i32,
    ) -> Result<(), (ResponseError, String)> {
        let Some(limit) = self.config.max_broker_partitions else {
            return Ok(());
        };
        let brokers = image.brokers.len().max(1);
        let in_use: usize = image
            .topics
            .values()
            .filter(|t| !t.internal)
            .map(|t| t.partitions.iter().map(|p| p.replicas.len()).sum::<usize>())
            .sum();
        let per_broker = (in_use + adding.max(0) as usize).div_ceil(brokers);
        if per_broker > limit as usize {
            return Err((
                ResponseError::PolicyViolation,
                format!(
                    "adding {adding} partitions would exceed this broker's partition limit: \
                     {} of max.broker.partitions={limit} are in use; delete topics or use a \
                     larger flavor",
                    in_use.div_ceil(brokers)
                ),
            ));
        }
        Ok(())
    }

    /// Replicas for `count` new partitions (numbered from `first`), Kafka-style: brokers
    /// ordered so consecutive ones alternate racks, each partition starting one broker
    /// further, its replicas the next `rf` brokers — spread over brokers and racks.
    fn assign(
        &self,
        image: &MetadataImage,
        count: i32,
        rf: i16,
        first: i32,
    ) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
        let live: Vec<&BrokerMeta> = image.live_brokers().filter(|b| !b.shutting_down).collect();
        if rf < 1 || rf as usize > live.len() {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "Unable to replicate the partition {rf} time(s): The target replication \
                     factor of {rf} cannot be reached because only {} broker(s) are registered.",
                    live.len()
                ),
            ));
        }
        let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
        for b in &live {
            by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
        }
        let mut ordered = Vec::with_capacity(live.len());
        let mut i = 0;
        while ordered.len() < live.len() {
            for ids in by_rack.values() {
                if let Some(id) = ids.get(i) {
                    ordered.push(*id);
                }
            }
            i += 1;
        }
        let n = ordered.len();
        let start = image.topics.len() + first as usize;
        Ok((0..count as usize)
            .map(|p| {
                (0..rf as usize)
                    .map(|r| ordered[(start + p + r) % n])
                    .collect()
            })
            .collect())
    }

    /// Records fencing broker `id`: out of every ISR (but the last member), its
    /// leaderships elected elsewhere.
    fn fence(&self, image: &MetadataImage, id: i32) -> Vec<MetadataRecord> {
        let mut records = vec![MetadataRecord::BrokerFenced { id }];
        let mut after = image.clone();
        after.apply(&records[0]);
        for t in image.topics.values() {
            let unclean = self.unclean(t);
            for (p, s) in t.partitions.iter().enumerate() {
                if !s.replicas.contains(&id) {
                    continue;
                }
                let mut new = s.clone();
                if new.isr.len() > 1 {
                    new.isr.retain(|r| *r != id);
                }
                if s.leader == id {
                    elect(&mut new, &after, unclean, Some(id));
                }
                record_change(&mut records, &t.name, p, s, new);
            }
        }
        records
    }

    /// Records unfencing broker `id`, and leaders for partitions it can lead again.
    fn unfence(&self, image: &MetadataImage, id: i32) -> Vec<MetadataRecord> {
        let mut records = vec![MetadataRecord::BrokerUnfenced { id }];
        let mut after = image.clone();
        after.apply(&records[0]);
        for t in image.topics.values() {
            let unclean = self.unclean(t);
            for (p, s) in t.partitions.iter().enumerate() {
                if s.leader != NO_LEADER || !s.replicas.contains(&id) {
                    continue;
                }
                let mut new = s.clone();
                elect(&mut new, &after, unclean, None);
                record_change(&mut records, &t.name, p, s, new);
            }
        }
        records
    }

    fn unclean(&self, t: &TopicMeta) -> bool {
        t.configs
            .get("unclean.leader.election.enable")
            .map_or(self.config.unclean_default, |v| v == "true")
    }
}

/// Synchronous replication (SPEC T5) needs more than one replica, as the seeds say.
fn check_replication_configs(
    configs: &BTreeMap<String, String>,
    replicas: usize,
) -> Result<(), (ResponseError, String)> {
    let sync = configs
        .get(crate::config::topic_config::SYNC_REPLICATION)
        .is_some_and(|v| v == "true");
    if sync && replicas < 2 {
        return Err((
            ResponseError::InvalidConfig,
            format!(
                "{}=true needs 2 or more replicas; this topic has {replicas}",
                crate::config::topic_config::SYNC_REPLICATION
            ),
        ));
    }
    Ok(())
}

/// Kafka's auto leader rebalance: for each broker whose preferred partitions are led
/// elsewhere above `percentage` percent of them, preferred-leader elections where the
/// broker is live and in sync.
fn rebalance_leaders(image: &MetadataImage, percentage: u32) -> Vec<MetadataRecord> {
    let mut preferred: HashMap<i32, usize> = HashMap::new();
    let mut elsewhere: HashMap<i32, Vec<(&str, i32, &PartitionState)>> = HashMap::new();
    for t in image.topics.values() {
        for (p, s) in t.partitions.iter().enumerate() {
            let Some(&b) = s.replicas.first() else {
                continue;
            };
            *preferred.entry(b).or_default() += 1;
            if s.leader != b {
                elsewhere.entry(b).or_default().push((&t.name, p as i32, s));
            }
        }
    }
    let mut records = Vec::new();
    for (b, moved) in elsewhere {
        let total = preferred.get(&b).copied().unwrap_or(0);
        if total == 0 || moved.len() * 100 <= percentage as usize * total {
            continue;
        }
        for (name, p, s) in moved {
            let mut new = s.clone();
            if preferred_election(&mut new, image).is_ok() {
                new.partition_epoch += 1;
                records.push(MetadataRecord::PartitionChanged {
                    name: name.to_owned(),
                    partition: p,
                    state: new,
                });
            }
        }
    }
    if !records.is_empty() {
        tracing::info!(
            partitions = records.len(),
            "leader imbalance: moving leadership back to preferred replicas"
        );
    }
    records
}

/// Starts moving `s` to `target` (KIP-455): replicas = target then the ones leaving;
/// `adding` catch up as followers; done at once if nothing is added.
fn reassign(
    s: &PartitionState,
    target: &[i32],
    image: &MetadataImage,
    allow_rf_change: bool,
) -> Result<PartitionState, (ResponseError, String)> {
    let mut unique = target.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if target.is_empty() || unique.len() != target.len() {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("replicas {target:?} must be non-empty and distinct"),
        ));
    }
    if let Some(r) = target.iter().find(|r| !image.brokers.contains_key(r)) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("broker {r} is not registered"),
        ));
    }
    // A reassignment replacing one in progress starts from where that one started.
    let original = if s.reassigning() {
        revert(s, image)
    } else {
        s.clone()
    };
    if !allow_rf_change && target.len() != original.replicas.len() {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "{} replicas asked, {} assigned, and the request forbids changing the \
                 replication factor",
                target.len(),
                original.replicas.len()
            ),
        ));
    }
    let mut new = original.clone();
    new.adding = target
        .iter()
        .copied()
        .filter(|r| !original.replicas.contains(r))
        .collect();
    new.removing = original
        .replicas
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    new.replicas = target.to_vec();
    new.replicas.extend(new.removing.iter().copied());
    finish_reassignment(&mut new, image);
    new.partition_epoch = s.partition_epoch + 1;
    Ok(new)
}

/// Cancels a reassignment in progress: back to the replicas it started from.
fn cancel_reassignment(
    s: &PartitionState,
    image: &MetadataImage,
) -> Result<PartitionState, (ResponseError, String)> {
    if !s.reassigning() {
        return Err((
            ResponseError::NoReassignmentInProgress,
            "no reassignment in progress".into(),
        ));
    }
    let mut new = revert(s, image);
    new.partition_epoch = s.partition_epoch + 1;
    Ok(new)
}

/// `s` without its reassignment: the added replicas leave, leadership stays in the
/// original set.
fn revert(s: &PartitionState, image: &MetadataImage) -> PartitionState {
    let mut new = s.clone();
    new.replicas.retain(|r| !s.adding.contains(r));
    new.isr.retain(|r| new.replicas.contains(r));
    new.adding.clear();
    new.removing.clear();
    if !new.replicas.contains(&new.leader) {
        elect(&mut new, image, false, None);
    }
    bump_epoch_on_removal(&mut new, !s.adding.is_empty(), s.leader_epoch);
    new
}

/// Completes a reassignment once every added replica is in sync: the replica set becomes
/// the target, leaving replicas drop out of the ISR, and leadership moves into the
/// target if it was outside.
fn finish_reassignment(s: &mut PartitionState, image: &MetadataImage) {
    let target = s.target();
    let caught_up = s.adding.iter().all(|r| s.isr.contains(r));
    // Someone in sync must stay (a pure removal of every in-sync replica waits).
    if !s.reassigning() || !caught_up || !s.isr.iter().any(|r| target.contains(r)) {
        return;
    }
    let (old_leader, old_epoch) = (s.leader, s.leader_epoch);
    let removed = !s.removing.is_empty();
    s.isr.retain(|r| target.contains(r));
    s.replicas = target;
    s.adding.clear();
    s.removing.clear();
    if !s.replicas.contains(&old_leader) {
        elect(s, image, false, Some(old_leader));
    }
    bump_epoch_on_removal(s, removed, old_epoch);
    tracing::info!(replicas = ?s.replicas, leader = s.leader, "reassignment complete");
}

/// Removing replicas bumps the leader epoch even when the leader stays (as KRaft does):
/// a fetch still in flight from a removed replica then carries an old epoch and is
/// fenced, so if the broker is added back later that stale fetch cannot vouch for a log
/// the new, empty replica does not have.
fn bump_epoch_on_removal(s: &mut PartitionState, removed: bool, old_epoch: i32) {
    if removed && s.leader_epoch == old_epoch {
        s.leader_epoch += 1;
    }
}

/// Whether broker `r` may lead: registered, not fenced, not shutting down.
fn can_lead(image: &MetadataImage, r: i32) -> bool {
    image
        .brokers
        .get(&r)
        .is_some_and(|b| !b.fenced && !b.shutting_down)
}

/// Preferred-leader election: the first assigned replica leads again if it is in the
/// ISR and can lead (Kafka's PREFERRED election).
fn preferred_election(
    s: &mut PartitionState,
    image: &MetadataImage,
) -> Result<(), (ResponseError, String)> {
    let Some(&preferred) = s.replicas.first() else {
        return Err((
            ResponseError::PreferredLeaderNotAvailable,
            "no replicas".into(),
        ));
    };
    if s.leader == preferred {
        return Err((
            ResponseError::ElectionNotNeeded,
            format!("broker {preferred} already leads"),
        ));
    }
    if !s.isr.contains(&preferred) || !can_lead(image, preferred) {
        return Err((
            ResponseError::PreferredLeaderNotAvailable,
            format!(
                "preferred replica {preferred} is not live and in sync (ISR {:?})",
                s.isr
            ),
        ));
    }
    s.leader = preferred;
    s.leader_epoch += 1;
    Ok(())
}

/// Unclean election on demand: only for a partition without a leader, any live replica
/// (Kafka's UNCLEAN election).
fn unclean_election(
    s: &mut PartitionState,
    image: &MetadataImage,
) -> Result<(), (ResponseError, String)> {
    if s.leader != NO_LEADER {
        return Err((
            ResponseError::ElectionNotNeeded,
            format!("broker {} leads", s.leader),
        ));
    }
    elect(s, image, true, None);
    if s.leader == NO_LEADER {
        return Err((
            ResponseError::EligibleLeadersNotAvailable,
            "no replica of the partition is live".into(),
        ));
    }
    Ok(())
}

/// The partitions whose leader `records` change on `image`: (topic, partition, old leader,
/// new leader, new leader epoch); -1 is no leader.
fn leader_changes(
    image: &MetadataImage,
    records: &[MetadataRecord],
) -> Vec<(String, i32, i32, i32, i32)> {
    records
        .iter()
        .filter_map(|r| match r {
            MetadataRecord::PartitionChanged {
                name,
                partition,
                state,
            } => {
                let old = image.topic(name).and_then(|t| t.state(*partition));
                let from = old.map_or(NO_LEADER, |o| o.leader);
                let changed = old.is_none_or(|o| {
                    o.leader != state.leader || o.leader_epoch != state.leader_epoch
                });
                changed.then(|| {
                    (
                        name.clone(),
                        *partition,
                        from,
                        state.leader,
                        state.leader_epoch,
                    )
                })
            }
            _ => None,
        })
        .collect()
}

/// Checks the replicas given for partitions added to a topic of replication factor `rf`,
/// with Kafka's rules and messages (INVALID_REPLICA_ASSIGNMENT): one list per added
/// partition, each of `rf` distinct registered brokers.
fn check_added_assignment(
    image: &MetadataImage,
    assignment: &[Vec<i32>],
    added: i32,
    rf: usize,
) -> Result<Vec<Vec<i32>>, (ResponseError, String)> {
    let bad = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
    if assignment.len() != added as usize {
        return bad(format!(
            "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
            assignment.len()
        ));
    }
    for replicas in assignment {
        if replicas.is_empty() {
            return bad("The manual partition assignment includes an empty replica list.".into());
        }
        // Kafka's order: brokers in id order, each registered and named once; then the
        // replication factor.
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        for (i, b) in sorted.iter().enumerate() {
            if !image.brokers.contains_key(b) {
                return bad(format!(
                    "The manual partition assignment includes broker {b}, but no such broker is registered."
                ));
            }
            if i > 0 && sorted[i - 1] == *b {
                return bad(format!(
                    "The manual partition assignment includes the broker {b} more than once."
                ));
            }
        }
        if replicas.len() != rf {
            return bad(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).",
                replicas.len()
            ));
        }
    }
    Ok(assignment.to_vec())
}

/// Why a request changes leaders, for the log.
fn change_reason(req: &ControllerRequest) -> &'static str {
    match req {
        ControllerRequest::RegisterBroker { .. } => "broker registered",
        ControllerRequest::Heartbeat { .. } => "broker heartbeat (unfenced or shutting down)",
        ControllerRequest::UnregisterBroker { .. } => "broker unregistered",
        ControllerRequest::ElectLeaders { .. } => "leader election requested",
        ControllerRequest::Reassign { .. } => "reassignment",
        ControllerRequest::AlterPartition { .. } => "ISR change",
        ControllerRequest::CreateTopic { .. } | ControllerRequest::CreatePartitions { .. } => {
            "new partition"
        }
        _ => "metadata change",
    }
}

/// Records `new` as partition `p` of `topic` if it differs from `old`, one partition
/// epoch on.
fn record_change(
    records: &mut Vec<MetadataRecord>,
    topic: &str,
    p: usize,
    old: &PartitionState,
    mut new: PartitionState,
) {
    if new != *old {
        new.partition_epoch += 1;
        records.push(MetadataRecord::PartitionChanged {
            name: topic.to_owned(),
            partition: p as i32,
            state: new,
        });
    }
}

/// Elects a leader for `s` on `image` (which already reflects the change that caused the
/// election): the first replica in the ISR that is live and not shutting down, else with
/// `unclean` the first live replica (the ISR becomes just it), else none. `excluded` never
/// leads. The leader epoch moves on when the leader changes.
fn elect(s: &mut PartitionState, image: &MetadataImage, unclean: bool, excluded: Option<i32>) {
    let eligible = |r: &i32| Some(*r) != excluded && can_lead(image, *r);
    let clean = s
        .replicas
        .iter()
        .copied()
        .find(|r| s.isr.contains(r) && eligible(r));
    let new = match clean {
        Some(l) => l,
        None if unclean => match s.replicas.iter().copied().find(eligible) {
            Some(l) => {
                tracing::warn!(leader = l, isr = ?s.isr, "unclean leader election: records the old ISR had may be lost");
                s.isr = vec![l];
                l
            }
            None => NO_LEADER,
        },
        None => NO_LEADER,
    };
    if new != s.leader {
        s.leader = new;
        s.leader_epoch += 1;
    }
}

/// Controlled shutdown: leaderships move to other in-sync replicas and the broker
/// leaves the ISRs it follows in. A partition no other replica can lead (the broker is
/// its only in-sync replica, or the others are fenced or shutting down too) is left
/// without a leader, the broker kept in its ISR: it is offline until a replica of its
/// ISR is back, which the controller then elects — as Kafka's controller does, rather
/// than keep the broker waiting for a successor that cannot come. The broker is then
/// fenced and may exit.
fn controlled_shutdown(image: &MetadataImage, b: &BrokerMeta) -> (Vec<MetadataRecord>, Answer) {
    let mut records = Vec::new();
    if !b.shutting_down {
        records.push(MetadataRecord::BrokerShuttingDown { id: b.id });
        tracing::info!(broker = b.id, "controlled shutdown");
    }
    let mut after = image.clone();
    for r in &records {
        after.apply(r);
    }
    let mut offline = 0;
    for t in image.topics.values() {
        for (p, s) in t.partitions.iter().enumerate() {
            if !s.isr.contains(&b.id) && s.leader != b.id {
                continue;
            }
            let mut new = s.clone();
            if s.leader == NO_LEADER {
                // Already offline: its ISR is what a returning replica is elected from.
                continue;
            }
            if s.isr.len() >= 2 {
                new.isr.retain(|r| *r != b.id);
            }
            if s.leader == b.id {
                elect(&mut new, &after, false, Some(b.id));
                if new.leader == NO_LEADER {
                    // No successor: the ISR stays as it was (with this broker, whose
                    // log has every acknowledged record).
                    new.isr = s.isr.clone();
                    offline += 1;
                }
            }
            record_change(&mut records, &t.name, p, s, new);
        }
    }
    if offline > 0 {
        tracing::info!(
            broker = b.id,
            partitions = offline,
            "controlled shutdown: partitions without another in-sync replica are offline until one returns"
        );
    }
    if !b.fenced {
        records.push(MetadataRecord::BrokerFenced { id: b.id });
    }
    (
        records,
        Answer::Heartbeat {
            registered: true,
            fenced: true,
            shutdown_ready: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::BrokerMeta;

    fn image(brokers: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &id in brokers {
            image.brokers.insert(
                id,
                BrokerMeta {
                    id,
                    incarnation: Uuid::nil(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                    endpoints: Vec::new(),
                    rack: None,
                    fenced: false,
                    epoch: 0,
                    shutting_down: false,
                },
            );
        }
        image
    }

    #[test]
    fn removing_replicas_bumps_the_leader_epoch_even_when_the_leader_stays() {
        let image = image(&[1, 2, 3, 4]);
        let s = PartitionState::new(vec![1, 2, 3]);
        // {1,2,3} -> {1,2,4}: 4 catches up, then 3 leaves; 1 keeps leading.
        let mut moving = reassign(&s, &[1, 2, 4], &image, false).unwrap();
        assert_eq!(moving.leader_epoch, 0, "adding a replica changes no epoch");
        moving.isr.push(4);
        finish_reassignment(&mut moving, &image);
        assert_eq!((moving.replicas.clone(), moving.leader), (vec![1, 2, 4], 1));
        assert_eq!(
            moving.leader_epoch, 1,
            "a fetch from the removed replica 3 is fenced"
        );
        // Cancelling drops the added replica: the epoch moves too.
        let moving = reassign(&s, &[1, 2, 4], &image, false).unwrap();
        let back = cancel_reassignment(&moving, &image).unwrap();
        assert_eq!(
            (back.replicas, back.leader, back.leader_epoch),
            (vec![1, 2, 3], 1, 1)
        );
    }

    fn led_by(leader: i32, isr: &[i32]) -> PartitionState {
        let mut s = PartitionState::new(vec![1, 2, 3]);
        s.leader = leader;
        s.isr = isr.to_vec();
        s
    }

    fn shutdown_of(
        image: &MetadataImage,
        id: i32,
        parts: Vec<PartitionState>,
    ) -> Vec<PartitionState> {
        let mut image = image.clone();
        let topic = TopicMeta {
            name: "t".into(),
            id: Uuid::nil(),
            placement: vec![0; parts.len()],
            partitions: parts,
            configs: Default::default(),
            internal: false,
        };
        image.topics.insert("t".into(), topic);
        let b = image.brokers.get(&id).cloned().unwrap();
        let (records, answer) = controlled_shutdown(&image, &b);
        assert!(matches!(
            answer,
            Answer::Heartbeat {
                shutdown_ready: true,
                ..
            }
        ));
        for r in &records {
            image.apply(r);
        }
        // A second heartbeat while shutting down changes nothing more.
        let b = image.brokers.get(&id).cloned().unwrap();
        let (again, _) = controlled_shutdown(&image, &b);
        assert!(again.is_empty(), "{again:?}");
        image.topics["t"].partitions.clone()
    }

    /// A broker shutting down hands its leaderships to in-sync replicas and leaves the
    /// ISRs; a partition nobody else can lead goes offline at once with its ISR kept
    /// (the broker's log has every acknowledged record), and the broker may stop.
    #[test]
    fn a_controlled_shutdown_never_waits_for_a_successor_that_cannot_come() {
        let mut img = image(&[1, 2, 3]);
        let parts = shutdown_of(
            &img,
            1,
            vec![led_by(1, &[1, 2, 3]), led_by(1, &[1]), led_by(2, &[2, 1])],
        );
        assert_eq!((parts[0].leader, parts[0].isr.clone()), (2, vec![2, 3]));
        assert_eq!(
            (parts[1].leader, parts[1].isr.clone()),
            (NO_LEADER, vec![1])
        );
        assert_eq!(parts[1].leader_epoch, 1, "the old leader is fenced");
        assert_eq!((parts[2].leader, parts[2].isr.clone()), (2, vec![2]));
        // The other in-sync replica is shutting down too: offline, ISR kept.
        img.brokers.get_mut(&2).unwrap().shutting_down = true;
        let parts = shutdown_of(&img, 1, vec![led_by(1, &[1, 2])]);
        assert_eq!(
            (parts[0].leader, parts[0].isr.clone()),
            (NO_LEADER, vec![1, 2])
        );
    }
}
