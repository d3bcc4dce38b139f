//! Where connections arrive: each shard accepts on its own SO_REUSEPORT socket of every
//! listener, asks [`crate::runtime::Broker::admit`] for a place under the connection limits, and serves
//! the connection where it was placed — here, or on another shard it is handed to (a
//! duplicate of the socket crosses threads in that shard's inbox). Kafka clients reaching
//! the controller listener are adopted the same way ([`adopt`]).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::shard::{ShardCtx, ShardTask};

/// One shard's socket of a listener, and the listener it serves.
pub type BoundListener = (std::net::TcpListener, Arc<crate::security::ListenerRuntime>);

pub async fn accept_loop(ctx: Rc<ShardCtx>, (listener, runtime): BoundListener) {
    let listener = match compio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = ctx.id, error = %e, "cannot use listener");
            return;
        }
    };
    // Connections wait in the listen backlog until the broker may serve clients.
    ctx.broker.cluster.wait_serving().await;
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let slot = match ctx.broker.admit(peer.ip(), ctx.id, &runtime) {
                    Ok(slot) => slot,
                    Err(reason) => {
                        // Kafka closes such connections as they arrive; say why, at most
                        // once a second per shard.
                        crate::metrics::Metrics::add(&ctx.broker.metrics.connections_rejected, 1);
                        if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            last_warned = Some(std::time::Instant::now());
                            tracing::warn!(shard = ctx.id, %peer, %reason, "connection refused");
                        }
                        drop(stream);
                        continue;
                    }
                };
                crate::metrics::Metrics::add(&ctx.broker.metrics.connections_accepted, 1);
                let target = slot.shard;
                let runtime = Arc::clone(&runtime);
                if target == ctx.id {
                    serve_here(&ctx, runtime, stream, peer, slot);
                } else if let Err(e) = hand_over(&ctx, target, runtime, stream, peer, slot) {
                    tracing::debug!(shard = ctx.id, %peer, error = %e, "hand-over failed");
                }
            }
            // The socket no longer listens: the broker is shutting down (signals.rs).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(shard = ctx.id, "listener closed");
                return;
            }
            Err(e) => {
                tracing::warn!(shard = ctx.id, error = %e, "accept failed");
                compio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves a connection on this shard (its slot already counts it here).
fn serve_here(
    ctx: &Rc<ShardCtx>,
    runtime: Arc<crate::security::ListenerRuntime>,
    stream: compio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: crate::runtime::ConnectionSlot,
) {
    let c = Rc::clone(ctx);
    let id = ctx.broker.connection_id();
    compio::runtime::spawn(async move {
        crate::net::connection::serve(c, runtime, stream, peer, id).await;
        drop(slot);
    })
    .detach();
}

/// Gives a connection accepted here to the shard [`crate::runtime::Broker::admit`] placed it on: a
/// duplicate of the socket crosses threads and this shard closes its own.
fn hand_over(
    ctx: &Rc<ShardCtx>,
    target: usize,
    runtime: Arc<crate::security::ListenerRuntime>,
    stream: compio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: crate::runtime::ConnectionSlot,
) -> std::io::Result<()> {
    let socket: std::net::TcpStream = socket2::SockRef::from(&stream).try_clone()?.into();
    drop(stream);
    send_connection(&ctx.broker, target, runtime, socket, peer, slot)
}

/// Serves a Kafka client accepted off the shards (on the controller listener, which the
/// controller thread owns): [`crate::runtime::Broker::admit`] places it on a shard like any other.
pub fn adopt(
    broker: &Arc<crate::runtime::Broker>,
    runtime: Arc<crate::security::ListenerRuntime>,
    socket: std::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Result<(), String> {
    let slot = broker.admit(peer.ip(), 0, &runtime)?;
    crate::metrics::Metrics::add(&broker.metrics.connections_accepted, 1);
    send_connection(broker, slot.shard, runtime, socket, peer, slot).map_err(|e| e.to_string())
}

/// Sends a connection to shard `target`'s inbox, which serves it there.
fn send_connection(
    broker: &crate::runtime::Broker,
    target: usize,
    runtime: Arc<crate::security::ListenerRuntime>,
    socket: std::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: crate::runtime::ConnectionSlot,
) -> std::io::Result<()> {
    let task: ShardTask = Box::new(
        move |ctx: Rc<ShardCtx>| match compio::net::TcpStream::from_std(socket) {
            Ok(stream) => serve_here(&ctx, runtime, stream, peer, slot),
            Err(e) => tracing::debug!(shard = ctx.id, %peer, error = %e, "cannot adopt connection"),
        },
    );
    broker
        .inboxes
        .send(target, task)
        .map_err(std::io::Error::other)
}
