//! How a controller of a dynamic quorum (KIP-853: `controller.quorum.bootstrap.servers`
//! instead of `controller.quorum.voters`) takes its place on its first start. Kafka asks
//! the operator to format each controller (`--standalone`, `--initial-controllers` or
//! `--no-initial-controllers`); ringmq finds out the same thing by asking every bootstrap
//! server who it is:
//! - when nobody has a quorum yet and every bootstrap server answers, those servers are
//!   the first voters (the lowest node id writes the membership; the others do too if it
//!   has not after a while). One bootstrap server naming this node is Kafka's
//!   `--standalone` quorum of one: the 4.x quickstart `server.properties` starts as it is.
//! - when a quorum is running, this node asks its leader to take it in as an observer (a
//!   Raft learner: it receives the metadata log, votes in nothing) until
//!   `kafka-metadata-quorum add-controller` makes it a voter, or at once as a voter with
//!   `controller.quorum.auto.join.enable=true`.
//!
//! After the first start the membership is in the metadata log, changed only by
//! AddRaftVoter / RemoveRaftVoter.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;

use super::controller::{ControllerReply, ControllerRequest, QUORUM_CHANGE_TIMEOUT};
use super::network::{Peer, ProbeReply, Rpc, RpcReply, Security};
use super::{INITIALIZE_FALLBACK, QuorumNode, Raft};

/// How often the bootstrap servers are asked again.
const RETRY: Duration = Duration::from_millis(500);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// After this long without a quorum, say what is missing (once).
const PATIENCE: Duration = Duration::from_secs(10);

/// This node, as it asks to join.
pub struct QuorumJoin {
    pub node_id: i32,
    /// The controller address the others reach this node at.
    pub addr: String,
    pub directory_id: String,
    pub bootstrap: Vec<String>,
    pub auto_join: bool,
    pub security: Security,
}

impl QuorumJoin {
    /// Runs until this node is a member (voter or observer) of the quorum.
    pub async fn run(self, raft: Raft) {
        let started = Instant::now();
        let mut peers: HashMap<String, Peer> = HashMap::new();
        let mut told = false;
        loop {
            if matches!(raft.is_initialized().await, Ok(true)) {
                return;
            }
            let mut answers: Vec<(String, ProbeReply)> = Vec::new();
            let mut everyone = true;
            for addr in &self.bootstrap {
                let peer = peers
                    .entry(addr.clone())
                    .or_insert_with(|| Peer::new(addr.clone(), &self.security));
                match peer.call(&Rpc::Probe, PROBE_TIMEOUT).await {
                    Ok(RpcReply::Probe(p)) => answers.push((addr.clone(), p)),
                    _ => everyone = false,
                }
            }
            let running = answers
                .iter()
                .find_map(|(_, p)| p.leader.clone().filter(|_| p.initialized));
            if let Some((leader, leader_addr)) = running {
                if self.ask_to_join(&mut peers, leader, leader_addr).await {
                    // Members hear from the leader shortly; the loop's check sees it.
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            } else if everyone && answers.iter().any(|(_, p)| p.node_id == self.node_id) {
                let members: BTreeMap<u64, QuorumNode> = answers
                    .iter()
                    .filter_map(|(addr, p)| {
                        let id = u64::try_from(p.node_id).ok()?;
                        let node = QuorumNode {
                            addr: addr.clone(),
                            directory_id: Some(p.directory_id.clone()),
                        };
                        Some((id, node))
                    })
                    .collect();
                let lowest = members.keys().next() == Some(&(self.node_id as u64));
                if lowest || started.elapsed() >= INITIALIZE_FALLBACK {
                    let ids: Vec<u64> = members.keys().copied().collect();
                    match raft.initialize(members).await {
                        Ok(()) => tracing::info!(voters = ?ids, "started the controller quorum"),
                        Err(e) => tracing::debug!(error = %e, "quorum already initialized"),
                    }
                }
            } else if !told && started.elapsed() >= PATIENCE {
                told = true;
                tracing::warn!(
                    bootstrap = ?self.bootstrap,
                    answered = answers.len(),
                    "waiting for the controllers of controller.quorum.bootstrap.servers: the \
                     first voters are those servers once all of them answer (this node among \
                     them), or a running quorum takes this node in"
                );
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Asks the quorum's leader to add this node; whether it did (or it already had).
    async fn ask_to_join(
        &self,
        peers: &mut HashMap<String, Peer>,
        leader: u64,
        leader_addr: String,
    ) -> bool {
        let req = ControllerRequest::AddVoter {
            id: self.node_id,
            addr: self.addr.clone(),
            directory_id: Some(self.directory_id.clone()),
            observer: !self.auto_join,
        };
        let peer = peers
            .entry(leader_addr.clone())
            .or_insert_with(|| Peer::new(leader_addr, &self.security));
        let reply = peer
            .call(
                &Rpc::Controller(req),
                QUORUM_CHANGE_TIMEOUT + Duration::from_secs(5),
            )
            .await;
        match reply {
            Ok(RpcReply::Controller(ControllerReply::Done { .. })) => {
                tracing::info!(
                    leader,
                    as_voter = self.auto_join,
                    "joined the running controller quorum"
                );
                true
            }
            Ok(RpcReply::Controller(ControllerReply::Error { code, .. }))
                if code == ResponseError::DuplicateVoter.code() =>
            {
                true
            }
            Ok(RpcReply::Controller(ControllerReply::Error { message, .. })) => {
                tracing::warn!(leader, %message, "the controller quorum did not take this node in");
                false
            }
            Ok(_) | Err(_) => false,
        }
    }
}
