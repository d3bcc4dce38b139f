//! Pre-vote and leader stickiness around openraft, which has neither (KRaft has both,
//! KIP-996): a voter may stand for election only after a majority of the voters said
//! they would vote for it, and a voter says so only when it has not heard from a leader
//! for an election timeout and the candidate's log is at least as long as its own.
//!
//! Without this, a voter cut off from the others stands for election again and again,
//! each time with a higher term; when the network heals, its term deposes the healthy
//! leader (observed: the quorum epoch went 1, 12, 18, 27 over four cuts of one node, and
//! the cluster had no controller for about 2.7 s at each heal). With it, the cut-off
//! voter cannot gather a majority, so its elections stay off (openraft's runtime `elect`
//! switch) and its term stays where it was; the leader never notices it was gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::LogId;

use super::Raft;
use super::network::{Peer, Rpc, RpcReply, Security};
use super::raft_store::MetaStore;

type NodeId = u64;

/// How often a voter checks whether it may stand for election.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long a pre-vote request may take.
const ASK_TIMEOUT: Duration = Duration::from_millis(400);

/// What a voter knows for pre-votes: when it last heard from a leader, and its log.
pub struct PreVote {
    started: Instant,
    /// Milliseconds since `started` of the last append a leader sent that this node
    /// accepted as coming from its leader (0: never).
    last_leader_contact: AtomicU64,
    /// No leader contact for this long: a pre-vote may be granted (openraft's minimum
    /// election timeout).
    stickiness: Duration,
    store: Arc<MetaStore>,
}

impl PreVote {
    pub fn new(store: Arc<MetaStore>, stickiness: Duration) -> Arc<Self> {
        Arc::new(PreVote {
            started: Instant::now(),
            last_leader_contact: AtomicU64::new(0),
            stickiness,
            store,
        })
    }

    /// An append from the leader was accepted (not refused for a higher term).
    pub fn leader_contact(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_leader_contact
            .store(now.max(1), Ordering::Relaxed);
    }

    /// Whether a leader was heard from within the stickiness window.
    fn leader_alive(&self) -> bool {
        let last = self.last_leader_contact.load(Ordering::Relaxed);
        last != 0
            && self.started.elapsed().as_millis() as u64 - last < self.stickiness.as_millis() as u64
    }

    /// Answers a candidate's pre-vote: yes when no leader is alive as far as this node
    /// knows (it is not the leader itself, and heard from none lately) and the
    /// candidate's log is at least as up to date as this node's.
    pub fn grant(&self, raft: &Raft, me: NodeId, candidate_last: Option<LogId<NodeId>>) -> bool {
        let leads = raft.metrics().borrow().current_leader == Some(me)
            && raft.metrics().borrow().state.is_leader();
        !leads && !self.leader_alive() && candidate_last >= self.store.last_log_id()
    }
}

/// Turns this voter's elections on only while a pre-vote would win; runs for the life of
/// the process.
pub async fn watch(raft: Raft, me: NodeId, pre_vote: Arc<PreVote>, security: Security) {
    let mut peers: HashMap<NodeId, (String, Peer)> = HashMap::new();
    let mut electing: Option<bool> = None;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let may_elect = if m.state.is_leader() || !voters.contains(&me) {
            // A leader does not elect; a learner cannot.
            true
        } else if pre_vote.leader_alive() {
            false
        } else {
            let last = pre_vote.store.last_log_id();
            let mut asks = Vec::new();
            for id in voters.iter().copied().filter(|v| *v != me) {
                let Some(node) = membership.get_node(&id) else {
                    continue;
                };
                let entry = peers.entry(id).or_insert_with(|| {
                    (node.addr.clone(), Peer::new(node.addr.clone(), &security))
                });
                if entry.0 != node.addr {
                    *entry = (node.addr.clone(), Peer::new(node.addr.clone(), &security));
                }
                asks.push(id);
            }
            let calls = peers.iter_mut().filter(|(id, _)| asks.contains(id)).map(
                |(_, (_, peer))| async move {
                    let rpc = Rpc::PreVote { last_log_id: last };
                    matches!(
                        peer.call(&rpc, ASK_TIMEOUT).await,
                        Ok(RpcReply::PreVote(true))
                    )
                },
            );
            let granted = futures_util::future::join_all(calls)
                .await
                .into_iter()
                .filter(|g| *g)
                .count();
            // This voter's own vote counts.
            granted + 1 > voters.len() / 2
        };
        if electing != Some(may_elect) {
            raft.runtime_config().elect(may_elect);
            if electing.is_some() {
                tracing::debug!(may_elect, "pre-vote: elections switched");
            }
            electing = Some(may_elect);
        }
    }
}
