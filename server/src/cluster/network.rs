//! The controller listener's wire: Raft RPCs between the quorum's voters, controller
//! requests (registration, heartbeats, topic changes, AlterPartition) from brokers to the
//! active controller, and metadata fetches from broker-only nodes. A frame is a 4-byte
//! big-endian length and a JSON body; one request at a time per connection. This traffic
//! is small and rare next to the data path, so it runs on the controller thread's tokio
//! runtime, not on the shards.
//!
//! Kafka clients reach the same port with `--bootstrap-controller` (KIP-919): a Kafka
//! request's fifth byte is the high byte of its API key, 0 for every key, where a JSON
//! body starts with `{` or `"`. Such a connection goes to the shards, which serve it the
//! controller's APIs ([`crate::handlers::CONTROLLER_APIS`]).
//!
//! An SSL controller listener (`listener.security.protocol.map`) carries all of this over
//! TLS: every node checks the controllers' certificates against the listener's trust
//! store, and with `ssl.client.auth=required` the controllers check the nodes' own
//! (mutual TLS). Kafka clients are not served on an SSL controller listener yet.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::BrokerConfig;
use crate::security::listener::SecurityProtocol;
use crate::security::tls::{self, Keys};

use super::controller::{ControllerReply, ControllerRequest};
use super::{QuorumNode, TypeConfig};

type NodeId = u64;

/// Serves a Kafka client accepted on the controller listener.
pub type KafkaClients = Box<dyn Fn(std::net::TcpStream, SocketAddr) + Send + Sync>;

/// How long a new connection may take to send the first five bytes of its first frame.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the connection speaks Kafka's protocol (see the module doc), from the first
/// five bytes it sent, left unread.
async fn speaks_kafka(stream: &TcpStream) -> io::Result<bool> {
    let mut head = [0u8; 5];
    loop {
        let n = stream.peek(&mut head).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if n == head.len() {
            return Ok(head[4] == 0);
        }
        // Fewer bytes so far: peek answers at once while any are queued.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Largest frame accepted (a metadata snapshot of a big cluster fits comfortably).
pub const FRAME_MAX: usize = 256 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Controller(ControllerRequest),
    /// A broker-only node asks for the metadata image once it is past `after` (waiting at
    /// most `wait_ms` for a change): KRaft brokers fetch the metadata log the same way.
    FetchMetadata {
        after: u64,
        wait_ms: u64,
    },
    /// Who answers at this address: how a node of a dynamic quorum (KIP-853) finds the
    /// controllers behind `controller.quorum.bootstrap.servers`.
    Probe,
    /// Would this voter vote for a candidate with this last log entry (pre-vote)?
    PreVote {
        last_log_id: Option<openraft::LogId<NodeId>>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Controller(ControllerReply),
    /// The image if newer than asked for, and who leads the quorum.
    Metadata {
        image: Option<Box<crate::metadata::MetadataImage>>,
        quorum: super::QuorumView,
    },
    Probe(ProbeReply),
    PreVote(bool),
}

/// A controller's answer to [`Rpc::Probe`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReply {
    pub node_id: i32,
    pub directory_id: String,
    /// Whether its quorum has a membership (it is a voter or a learner of one).
    pub initialized: bool,
    /// The quorum leader it knows, and that leader's address.
    pub leader: Option<(u64, String)>,
}

/// The controller listener's TLS: the server side where this node listens on it, the
/// client side to reach every controller.
pub struct ControllerTls {
    acceptor: Option<TlsAcceptor>,
    connector: TlsConnector,
}

/// The controller listener's security as this node uses it: `None` on PLAINTEXT.
pub type Security = Option<Arc<ControllerTls>>;

impl ControllerTls {
    pub fn new(config: &BrokerConfig) -> Result<Security, String> {
        let (protocol, props) = &config.controller_security;
        if *protocol == SecurityProtocol::Plaintext {
            return Ok(None);
        }
        let name = config
            .controller_listener_names
            .first()
            .map_or("CONTROLLER", String::as_str);
        let keys = Keys { name, props };
        let acceptor = match config.controller_listener {
            Some(_) => Some(TlsAcceptor::from(Arc::new(tls::server_config(
                keys, false,
            )?))),
            None => None,
        };
        let connector = TlsConnector::from(Arc::new(tls::client_config(keys)?));
        Ok(Some(Arc::new(ControllerTls {
            acceptor,
            connector,
        })))
    }
}

/// A connection of the controller listener, plaintext or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for S {}

pub async fn write_frame<T: Serialize, S: Stream + ?Sized>(
    stream: &mut S,
    msg: &T,
) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await
}

pub async fn read_frame<T: for<'de> Deserialize<'de>, S: Stream + ?Sized>(
    stream: &mut S,
) -> io::Result<T> {
    let body = read_frame_bytes(stream).await?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn read_frame_bytes<S: Stream + ?Sized>(stream: &mut S) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > FRAME_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("controller frame of {len} bytes is over {FRAME_MAX}"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// A connection to one peer, opened on first use and reopened after an error.
pub struct Peer {
    addr: String,
    security: Security,
    conn: Option<Box<dyn Stream>>,
}

impl Peer {
    pub fn new(addr: String, security: &Security) -> Self {
        Peer {
            addr,
            security: security.clone(),
            conn: None,
        }
    }

    /// Sends `rpc` and waits for the reply, at most `timeout`.
    pub async fn call(&mut self, rpc: &Rpc, timeout: Duration) -> io::Result<RpcReply> {
        let result = tokio::time::timeout(timeout, self.call_inner(rpc)).await;
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not answer", self.addr),
                ))
            }
        }
    }

    async fn call_inner(&mut self, rpc: &Rpc) -> io::Result<RpcReply> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.conn = Some(match &self.security {
                None => Box::new(s),
                Some(tls) => {
                    let name = crate::security::peer_client::server_name(&self.addr)?;
                    Box::new(tls.connector.connect(name, s).await?)
                }
            });
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        write_frame(conn, rpc).await?;
        read_frame(conn).await
    }
}

/// openraft's network: one [`Peer`] per replication stream.
pub struct Network(pub Security);

pub struct PeerClient(Peer);

fn unreachable<E: std::error::Error>(e: io::Error) -> RPCError<NodeId, QuorumNode, E> {
    RPCError::Unreachable(Unreachable::new(&e))
}

fn unexpected<E: std::error::Error>() -> RPCError<NodeId, QuorumNode, E> {
    unreachable(io::Error::other("unexpected reply type"))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;
    async fn new_client(&mut self, _target: NodeId, node: &QuorumNode) -> PeerClient {
        PeerClient(Peer::new(node.addr.clone(), &self.0))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, QuorumNode, RaftError<NodeId>>>
    {
        match self.0.call(&Rpc::Append(rpc), option.hard_ttl()).await {
            Ok(RpcReply::Append(r)) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, QuorumNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.0.call(&Rpc::Snapshot(rpc), option.hard_ttl()).await {
            Ok(RpcReply::Snapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, QuorumNode, RaftError<NodeId>>> {
        match self.0.call(&Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(RpcReply::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(unreachable(e)),
        }
    }
}

/// Serves the controller listener: Raft RPCs to the local Raft, controller requests to
/// the local controller (which answers "not the controller" when it is not).
pub async fn serve(
    listener: TcpListener,
    raft: super::Raft,
    controller: Arc<super::controller::Controller>,
    directory_id: Arc<str>,
    kafka_clients: Arc<std::sync::OnceLock<KafkaClients>>,
    security: Security,
    pre_vote: Arc<super::pre_vote::PreVote>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (raft, controller) = (raft.clone(), Arc::clone(&controller));
        let directory_id = Arc::clone(&directory_id);
        let kafka_clients = Arc::clone(&kafka_clients);
        let acceptor = security.as_ref().and_then(|t| t.acceptor.clone());
        let pre_vote = Arc::clone(&pre_vote);
        tokio::spawn(async move {
            let mut stream: Box<dyn Stream> = match acceptor {
                None => match accept_plaintext(stream, peer, &kafka_clients).await {
                    Some(s) => Box::new(s),
                    None => return,
                },
                Some(acceptor) => {
                    let shake = tokio::time::timeout(FIRST_BYTES_TIMEOUT, acceptor.accept(stream));
                    match shake.await {
                        Ok(Ok(s)) => Box::new(s),
                        // A refused certificate or protocol: the operator's business.
                        Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                            tracing::warn!(%peer, error = %e, "TLS handshake failed on the controller listener");
                            return;
                        }
                        // A peer gone mid-handshake (killed, restarted).
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "controller connection lost in its TLS handshake");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            loop {
                let body = match read_frame_bytes(&mut stream).await {
                    Ok(b) => b,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::UnexpectedEof {
                            tracing::debug!(%peer, error = %e, "controller connection closed");
                        }
                        return;
                    }
                };
                let rpc: Rpc = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(_) if body.first() == Some(&0) => {
                        tracing::warn!(%peer, "a Kafka client on the SSL controller listener: not served (--bootstrap-controller needs a PLAINTEXT controller listener for now)");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "malformed controller frame");
                        return;
                    }
                };
                let reply = match rpc {
                    Rpc::Append(r) => {
                        let reply = raft.append_entries(r).await;
                        // Accepted as from this node's leader (not refused for its term).
                        if matches!(&reply, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_)))
                        {
                            pre_vote.leader_contact();
                        }
                        RpcReply::Append(reply)
                    }
                    Rpc::Vote(r) => RpcReply::Vote(raft.vote(r).await),
                    Rpc::Snapshot(r) => RpcReply::Snapshot(raft.install_snapshot(r).await),
                    Rpc::Controller(r) => RpcReply::Controller(controller.handle_local(r).await),
                    Rpc::FetchMetadata { after, wait_ms } => {
                        let wait = Duration::from_millis(wait_ms.min(10_000));
                        RpcReply::Metadata {
                            image: controller.image_after(after, wait).await.map(Box::new),
                            quorum: super::quorum_view(&raft),
                        }
                    }
                    Rpc::Probe => RpcReply::Probe(probe(&raft, &controller, &directory_id)),
                    Rpc::PreVote { last_log_id } => RpcReply::PreVote(pre_vote.grant(
                        &raft,
                        controller.node_id() as NodeId,
                        last_log_id,
                    )),
                };
                if let Err(e) = write_frame(&mut stream, &reply).await {
                    tracing::debug!(%peer, error = %e, "controller reply failed");
                    return;
                }
            }
        });
    }
}

/// A plaintext connection: handed to the shards if it speaks Kafka (`None`), else kept
/// for the quorum's frames.
async fn accept_plaintext(
    stream: TcpStream,
    peer: SocketAddr,
    kafka_clients: &std::sync::OnceLock<KafkaClients>,
) -> Option<TcpStream> {
    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, speaks_kafka(&stream)).await {
        Ok(Ok(false)) => Some(stream),
        Ok(Ok(true)) => {
            match (kafka_clients.get(), stream.into_std()) {
                (Some(serve), Ok(socket)) => serve(socket, peer),
                (None, _) => {
                    tracing::debug!(%peer, "Kafka client on the controller listener before the shards run")
                }
                (_, Err(e)) => {
                    tracing::debug!(%peer, error = %e, "cannot hand over a Kafka client")
                }
            }
            None
        }
        Ok(Err(_)) | Err(_) => None,
    }
}

fn probe(
    raft: &super::Raft,
    controller: &super::controller::Controller,
    directory_id: &str,
) -> ProbeReply {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let leader = m.current_leader.and_then(|l| {
        let node = membership.get_node(&l)?;
        Some((l, node.addr.clone()))
    });
    ProbeReply {
        node_id: controller.node_id(),
        directory_id: directory_id.to_owned(),
        initialized: membership.nodes().next().is_some(),
        leader,
    }
}

/// Resolves `host:port` for a peer (kept as a string so names re-resolve on reconnect).
pub fn addr_string(addr: &SocketAddr) -> String {
    addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quorum's JSON frames and Kafka requests are told apart by their fifth byte,
    /// which stays unread for whoever serves the connection.
    #[test]
    fn kafka_requests_are_told_from_quorum_frames() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(told_apart());
    }

    async fn told_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let kafka_api_versions = [0, 0, 0, 10, 0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff];
        for (frame, kafka) in [
            (serde_json::to_vec(&Rpc::Probe).unwrap(), false),
            (
                serde_json::to_vec(&Rpc::FetchMetadata {
                    after: 1,
                    wait_ms: 2,
                })
                .unwrap(),
                false,
            ),
            (kafka_api_versions[4..].to_vec(), true),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&frame);
            // The first bytes arrive one at a time.
            for b in &bytes {
                client.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert_eq!(speaks_kafka(&server).await.unwrap(), kafka);
            let mut read = vec![0u8; bytes.len()];
            server.read_exact(&mut read).await.unwrap();
            assert_eq!(read, bytes);
        }
    }
}
