//! Clean shutdown on SIGTERM / SIGINT: a controlled shutdown first (the controller moves
//! this broker's leaderships to other in-sync replicas, so clients see only retriable
//! errors), then every shard flushes its partitions and writes their checkpoints (so the
//! next start validates nothing), and the process exits 0.
//! The signals are blocked in every thread and taken synchronously by one thread
//! (`sigwait`), so no handler runs on a shard.

use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::runtime::Broker;

/// Longest the controlled shutdown may wait for leadership to move.
pub const CONTROLLED_SHUTDOWN_MAX: Duration = Duration::from_secs(30);

/// Longest a shard may take to flush before the process exits anyway.
pub const SHUTDOWN_FLUSH_MAX: Duration = Duration::from_secs(60);

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM/SIGINT in the calling thread; threads spawned afterwards inherit it.
/// Call before starting the shards.
pub fn block() {
    let set = signal_set();
    // SAFETY: pthread_sigmask with a valid set and a null old-set pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for SIGTERM/SIGINT on a dedicated thread, then shuts the broker down cleanly.
/// `listening` holds a duplicate of every listening socket: they stop listening before the
/// process exits, since the kernel tears an io_uring down after the process is gone and
/// an accept still queued there would keep the port in LISTEN, so that a broker restarted
/// at once found its address in use.
pub fn spawn_handler(
    broker: Arc<Broker>,
    listening: Vec<std::net::TcpListener>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = signal_set();
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait with a valid, blocked signal set and an out-pointer we own.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            tracing::info!(signal = sig, "shutting down: moving leadership away");
            let others = broker
                .image()
                .live_brokers()
                .any(|b| b.id != broker.config.node_id);
            if others && !broker.cluster.controlled_shutdown(CONTROLLED_SHUTDOWN_MAX) {
                tracing::warn!("controlled shutdown did not finish (no controller answered in time); stopping anyway");
            }
            tracing::info!("flushing partitions");
            let mut waits = Vec::new();
            for shard in 0..broker.shard_count() {
                let (tx, rx) = oneshot::channel();
                let task: crate::runtime::shard::ShardTask = Box::new(move |ctx| {
                    let _ = tx.send(ctx.flush_all_for_shutdown());
                });
                if broker.inboxes.send(shard, task).is_ok() {
                    waits.push(rx);
                }
            }
            let deadline = std::time::Instant::now() + SHUTDOWN_FLUSH_MAX;
            let mut closed = 0;
            for mut rx in waits {
                loop {
                    match rx.try_recv() {
                        Ok(Some(n)) => {
                            closed += n;
                            break;
                        }
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::park_timeout(Duration::from_millis(5))
                        }
                        _ => break,
                    }
                }
            }
            for l in &listening {
                // Leaves LISTEN at once, whoever else holds the socket.
                let _ = socket2::SockRef::from(l).shutdown(std::net::Shutdown::Both);
            }
            tracing::info!(partitions = closed, "shutdown complete");
            std::process::exit(0);
        })?;
    Ok(())
}
