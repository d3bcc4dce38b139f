//! `GroupCoordinator`: the classic consumer-group protocol (SPEC G1, G3) for the groups
//! whose `__consumer_offsets` partition this shard owns. Single-threaded: no locks.
//!
//! States and transitions (Kafka's):
//! ```text
//! Empty --join--> PreparingRebalance --all joined / deadline--> CompletingRebalance
//! CompletingRebalance --leader's SyncGroup--> Stable
//! Stable / CompletingRebalance --join, leave, expiry--> PreparingRebalance
//! any --last member gone--> Empty;   Empty --DeleteGroups--> Dead
//! ```
//! A rebalance completes when every known member has rejoined, or at the deadline (the
//! largest member rebalance timeout; `group.initial.rebalance.delay.ms` for a group that
//! was empty), dropping members that did not rejoin. The leader (first member) gets
//! everyone's subscription metadata and sends the assignments in SyncGroup.
//! Members are expired after `session.timeout.ms` without a heartbeat.
//!
//! Static membership (KIP-345): a member with a `group.instance.id` that rejoins with an
//! empty member id replaces its previous incarnation (which is fenced with
//! FENCED_INSTANCE_ID) and, if the group is Stable, keeps its assignment without a
//! rebalance; static members skip the MEMBER_ID_REQUIRED round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use kafka_protocol::ResponseError;

/// `group.min.session.timeout.ms` / `group.max.session.timeout.ms` (seeds: 6000 / 1,800,000).
pub const GROUP_MIN_SESSION_TIMEOUT_MS: i32 = 6_000;
pub const GROUP_MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's names, as ListGroups/DescribeGroups report them.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What JoinGroup answers.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// For the leader: `(member id, instance id, metadata)` of every member.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error_of(e: ResponseError) -> Self {
        Self::error(e, "")
    }
    pub fn with_member(mut self, member_id: &str) -> Self {
        self.member_id = member_id.to_owned();
        self
    }
    fn error(e: ResponseError, member_id: &str) -> Self {
        JoinResult {
            error: Some(e),
            generation: -1,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

pub type SyncResult = Result<Bytes, ResponseError>;

pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an unknown member must first obtain an id (MEMBER_ID_REQUIRED, KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

#[derive(Debug)]
pub struct Group {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending_ids: HashSet<String>,
    rebalance_deadline: Option<Instant>,
    /// True while waiting out the initial delay (complete only at the deadline).
    initial_delay: bool,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_ids: HashSet::new(),
            rebalance_deadline: None,
            initial_delay: false,
        }
    }

    /// The member id a `group.instance.id` currently maps to (static membership).
    fn static_member(&self, instance: &str) -> Option<&str> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.as_str())
    }
}

pub struct GroupCoordinator {
    groups: HashMap<String, Group>,
    initial_rebalance_delay: Duration,
    next_member: u64,
}

impl GroupCoordinator {
    pub fn new(initial_rebalance_delay: Duration) -> Self {
        GroupCoordinator {
            groups: HashMap::new(),
            initial_rebalance_delay,
            next_member: 0,
        }
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &Group)> {
        self.groups.iter()
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    /// JoinGroup: the answer now, or a receiver answered when the rebalance completes.
    pub fn join(
        &mut self,
        req: JoinRequest,
        now: Instant,
    ) -> Result<oneshot::Receiver<JoinResult>, Box<JoinResult>> {
        if req.group.is_empty() {
            return Err(Box::new(JoinResult::error(
                ResponseError::InvalidGroupId,
                &req.member_id,
            )));
        }
        if !(GROUP_MIN_SESSION_TIMEOUT_MS..=GROUP_MAX_SESSION_TIMEOUT_MS)
            .contains(&req.session_timeout_ms)
        {
            return Err(Box::new(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &req.member_id,
            )));
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Err(Box::new(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            )));
        }
        let new_id = if req.member_id.is_empty() {
            Some(self.new_member_id(&req.client_id))
        } else {
            None
        };
        let group = self
            .groups
            .entry(req.group.clone())
            .or_insert_with(Group::new);
        if group.state == GroupState::Dead {
            return Err(Box::new(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &req.member_id,
            )));
        }
        if let Some(t) = &group.protocol_type
            && !group.members.is_empty()
            && *t != req.protocol_type
        {
            return Err(Box::new(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            )));
        }
        if let (Some(instance), Some(id)) = (&req.instance_id, &new_id)
            && let Some(old) = group.static_member(instance).map(str::to_owned)
            && let Some(answer) = replace_static_member(group, &old, id.clone(), &req, now)
        {
            return answer;
        }
        let member_id = match new_id {
            Some(id) if req.require_known_member_id && req.instance_id.is_none() => {
                group.pending_ids.insert(id.clone());
                return Err(Box::new(JoinResult::error(
                    ResponseError::MemberIdRequired,
                    &id,
                )));
            }
            Some(id) => id,
            None => {
                if let Some(instance) = &req.instance_id
                    && group
                        .static_member(instance)
                        .is_some_and(|id| id != req.member_id)
                {
                    return Err(Box::new(JoinResult::error(
                        ResponseError::FencedInstanceId,
                        &req.member_id,
                    )));
                }
                if !group.members.contains_key(&req.member_id)
                    && !group.pending_ids.remove(&req.member_id)
                {
                    return Err(Box::new(JoinResult::error(
                        ResponseError::UnknownMemberId,
                        &req.member_id,
                    )));
                }
                req.member_id.clone()
            }
        };
        let (tx, rx) = oneshot::channel();
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                id: member_id.clone(),
                instance_id: None,
                client_id: String::new(),
                client_host: String::new(),
                session_timeout: Duration::ZERO,
                rebalance_timeout: Duration::ZERO,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heartbeat: now,
                join_waiter: None,
                sync_waiter: None,
            });
        member.instance_id = req.instance_id;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        member.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        member.protocols = req.protocols;
        member.last_heartbeat = now;
        member.join_waiter = Some(tx);
        group.protocol_type = Some(req.protocol_type);
        let delay = self.initial_rebalance_delay;
        match group.state {
            GroupState::Empty => {
                group.state = GroupState::PreparingRebalance;
                group.initial_delay = !delay.is_zero();
                group.rebalance_deadline = Some(now + delay);
            }
            GroupState::Stable | GroupState::CompletingRebalance => prepare_rebalance(group, now),
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
        maybe_complete_join(group, now);
        Ok(rx)
    }

    /// SyncGroup: the member's assignment now, or when the leader sends it.
    pub fn sync(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<oneshot::Receiver<SyncResult>, ResponseError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        validate_member(group, member_id, instance_id)?;
        let is_leader = group.leader.as_deref() == Some(member_id);
        let member = group
            .members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        member.last_heartbeat = now;
        match group.state {
            GroupState::PreparingRebalance => return Err(ResponseError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => return Err(ResponseError::UnknownMemberId),
            GroupState::Stable => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Ok(member.assignment.clone()));
                return Ok(rx);
            }
            GroupState::CompletingRebalance => {}
        }
        let (tx, rx) = oneshot::channel();
        member.sync_waiter = Some(tx);
        if is_leader {
            let given: HashMap<String, Bytes> = assignments.into_iter().collect();
            for m in group.members.values_mut() {
                m.assignment = given.get(&m.id).cloned().unwrap_or_default();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Ok(m.assignment.clone()));
                }
            }
            group.state = GroupState::Stable;
        }
        Ok(rx)
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ResponseError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        validate_member(group, member_id, instance_id)?;
        let member = group
            .members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        member.last_heartbeat = now;
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        match group.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(ResponseError::UnknownMemberId),
        }
    }

    /// LeaveGroup of one member; a static member may leave by instance id alone (member
    /// id ""), as Kafka allows.
    pub fn leave(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ResponseError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let member_id = match instance_id {
            Some(instance) if member_id.is_empty() => group
                .static_member(instance)
                .map(str::to_owned)
                .ok_or(ResponseError::UnknownMemberId)?,
            _ => {
                validate_member(group, member_id, instance_id)?;
                member_id.to_owned()
            }
        };
        remove_member(group, &member_id, now)
            .then_some(())
            .ok_or(ResponseError::UnknownMemberId)
    }

    /// Commits from members must carry the current generation; commits from outside
    /// group management (generation -1) are allowed while the group has no members.
    pub fn validate_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        has_offsets: bool,
    ) -> Result<(), ResponseError> {
        let Some(group) = self.groups.get(group_id) else {
            // A group known only by its committed offsets is an empty group to Kafka:
            // a member id it does not have is UNKNOWN_MEMBER_ID.
            return if generation < 0 {
                Ok(())
            } else if has_offsets && !member_id.is_empty() {
                Err(ResponseError::UnknownMemberId)
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if group.members.is_empty() {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        validate_member(group, member_id, instance_id)?;
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Forgets groups without members for which `keep` (they still have offsets) is false.
    pub fn forget_empty(&mut self, keep: impl Fn(&str) -> bool) {
        self.groups
            .retain(|id, g| !g.members.is_empty() || keep(id));
    }

    /// Forgets the groups coordinated by `__consumer_offsets-<partition>` (the coordinator
    /// moved away; their members find the new one at their next request).
    pub fn unload(&mut self, partition: i32) {
        self.groups
            .retain(|id, _| crate::coordinator::offsets::partition_for(id) != partition);
    }

    /// DeleteGroups: only groups without members.
    pub fn delete(&mut self, group_id: &str) -> Result<(), ResponseError> {
        match self.groups.get(group_id) {
            None => Err(ResponseError::GroupIdNotFound),
            Some(g) if !g.members.is_empty() => Err(ResponseError::NonEmptyGroup),
            Some(_) => {
                self.groups.remove(group_id);
                Ok(())
            }
        }
    }

    /// Expires silent members and completes rebalances whose deadline passed.
    pub fn tick(&mut self, now: Instant) {
        for group in self.groups.values_mut() {
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none()
                        && now.duration_since(m.last_heartbeat) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(member = %id, "group member expired (no heartbeat within session.timeout.ms)");
                remove_member(group, &id, now);
            }
            if group.state == GroupState::PreparingRebalance
                && group.rebalance_deadline.is_some_and(|d| now >= d)
            {
                group.initial_delay = false;
                complete_join(group, now);
            }
        }
    }
}

fn prepare_rebalance(group: &mut Group, now: Instant) {
    for m in group.members.values_mut() {
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(Err(ResponseError::RebalanceInProgress));
        }
    }
    let timeout = group
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or_default();
    group.state = GroupState::PreparingRebalance;
    group.rebalance_deadline = Some(now + timeout);
    group.initial_delay = false;
}

/// Removes a member; rebalances the rest, or empties the group.
fn remove_member(group: &mut Group, id: &str, now: Instant) -> bool {
    let Some(mut m) = group.members.remove(id) else {
        return false;
    };
    if let Some(w) = m.join_waiter.take() {
        let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, id));
    }
    if let Some(w) = m.sync_waiter.take() {
        let _ = w.send(Err(ResponseError::UnknownMemberId));
    }
    if group.leader.as_deref() == Some(id) {
        group.leader = None;
    }
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.generation += 1;
        group.protocol = None;
        group.rebalance_deadline = None;
    } else if group.state != GroupState::PreparingRebalance {
        prepare_rebalance(group, now);
        maybe_complete_join(group, now);
    } else {
        maybe_complete_join(group, now);
    }
    true
}

fn maybe_complete_join(group: &mut Group, now: Instant) {
    if group.state == GroupState::PreparingRebalance
        && !group.initial_delay
        && group.members.values().all(|m| m.join_waiter.is_some())
    {
        complete_join(group, now);
    }
}

/// Ends the join phase: drops members that did not rejoin, picks the protocol and the
/// leader, answers every JoinGroup, and waits for the leader's SyncGroup.
fn complete_join(group: &mut Group, now: Instant) {
    let absent: Vec<String> = group
        .members
        .values()
        .filter(|m| m.join_waiter.is_none())
        .map(|m| m.id.clone())
        .collect();
    for id in absent {
        group.members.remove(&id);
    }
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.generation += 1;
        return;
    }
    group.generation += 1;
    let leader = group
        .leader
        .clone()
        .filter(|l| group.members.contains_key(l))
        .or_else(|| group.members.keys().next().cloned())
        .unwrap_or_default();
    let protocol = group.members.get(&leader).and_then(|l| {
        l.protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                group
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    });
    let Some(protocol) = protocol else {
        for m in group.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(
                    ResponseError::InconsistentGroupProtocol,
                    &m.id,
                ));
            }
        }
        group.members.clear();
        group.state = GroupState::Empty;
        return;
    };
    let all = member_list(group, &protocol);
    group.leader = Some(leader.clone());
    group.protocol = Some(protocol.clone());
    group.state = GroupState::CompletingRebalance;
    group.rebalance_deadline = None;
    let protocol_type = group.protocol_type.clone().unwrap_or_default();
    for m in group.members.values_mut() {
        m.last_heartbeat = now;
        m.assignment = Bytes::new();
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult {
                error: None,
                generation: group.generation,
                protocol_type: protocol_type.clone(),
                protocol: protocol.clone(),
                leader: leader.clone(),
                member_id: m.id.clone(),
                members: if m.id == leader {
                    all.clone()
                } else {
                    Vec::new()
                },
            });
        }
    }
}

/// Kafka's member check for Heartbeat, SyncGroup, OffsetCommit and LeaveGroup: a request
/// carrying a `group.instance.id` must come from the member that instance currently maps
/// to; an older incarnation (replaced by a newer join) is FENCED_INSTANCE_ID, which the
/// client treats as fatal. Without an instance id the member id must be known.
fn validate_member(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), ResponseError> {
    if let Some(instance) = instance_id {
        return match group.static_member(instance) {
            None => Err(ResponseError::UnknownMemberId),
            Some(id) if id != member_id => Err(ResponseError::FencedInstanceId),
            Some(_) => Ok(()),
        };
    }
    if group.members.contains_key(member_id) {
        Ok(())
    } else {
        Err(ResponseError::UnknownMemberId)
    }
}

/// A static member's new incarnation takes over `old`'s place. `Some(answer)` when that
/// ends the join (a Stable group: no rebalance); `None` to join normally.
fn replace_static_member(
    group: &mut Group,
    old: &str,
    new_id: String,
    req: &JoinRequest,
    now: Instant,
) -> Option<Result<oneshot::Receiver<JoinResult>, Box<JoinResult>>> {
    let mut m = group.members.remove(old)?;
    if let Some(w) = m.join_waiter.take() {
        let _ = w.send(JoinResult::error(ResponseError::FencedInstanceId, old));
    }
    if let Some(w) = m.sync_waiter.take() {
        let _ = w.send(Err(ResponseError::FencedInstanceId));
    }
    let same_protocols = m.protocols == req.protocols;
    m.id = new_id.clone();
    m.client_id = req.client_id.clone();
    m.client_host = req.client_host.clone();
    m.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
    m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
    m.protocols = req.protocols.clone();
    m.last_heartbeat = now;
    if group.leader.as_deref() == Some(old) {
        group.leader = Some(new_id.clone());
    }
    group.members.insert(new_id.clone(), m);
    tracing::info!(old, new = %new_id, "static member rejoined");
    if group.state != GroupState::Stable || !same_protocols {
        group.pending_ids.insert(new_id);
        return None;
    }
    let (tx, rx) = oneshot::channel();
    let leader = group.leader.clone().unwrap_or_default();
    let protocol = group.protocol.clone().unwrap_or_default();
    let members = if leader == new_id {
        member_list(group, &protocol)
    } else {
        Vec::new()
    };
    let _ = tx.send(JoinResult {
        error: None,
        generation: group.generation,
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol,
        leader,
        member_id: new_id,
        members,
    });
    Some(Ok(rx))
}

/// Every member with its subscription metadata for `protocol` (what the leader gets).
fn member_list(group: &Group, protocol: &str) -> Vec<(String, Option<String>, Bytes)> {
    group
        .members
        .values()
        .map(|m| {
            let meta = m
                .protocols
                .iter()
                .find(|(n, _)| n == protocol)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            (m.id.clone(), m.instance_id.clone(), meta)
        })
        .collect()
}
