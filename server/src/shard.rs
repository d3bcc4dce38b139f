//! A shard: one OS thread pinned to a core, running a single-threaded compio (io_uring)
//! runtime. It owns its partitions, its client connections and their buffers; nothing in
//! it is shared with other threads. Other shards reach its partitions only by sending a
//! [`ShardTask`] to its inbox ([`ShardCtx::on_shard`]), which runs on this thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use ringmq_engine::{LogHandle, UnifiedLog};

use crate::broker::Broker;
use crate::partition::Partition;

/// How often group sessions and rebalance deadlines are checked.
pub const GROUP_TICK: Duration = Duration::from_millis(100);

/// Work sent to a shard: runs on that shard's thread with its context.
pub type ShardTask = Box<dyn FnOnce(Rc<ShardCtx>) + Send>;

/// `(topic, partition)`.
pub type TopicPartition = (Arc<str>, i32);

pub struct ShardCtx {
    pub id: usize,
    pub broker: Arc<Broker>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    /// Committed offsets of the groups whose `__consumer_offsets` partitions live here.
    pub offsets: RefCell<crate::offsets::OffsetsCache>,
    /// Group membership of the same groups.
    pub groups: RefCell<crate::group::GroupCoordinator>,
    /// Request bytes read on this shard and not yet handled (`queued.max.request.bytes`).
    pub queued_request_bytes: std::cell::Cell<u64>,
    /// Readers waiting for `queued_request_bytes` to drop under this shard's share.
    pub queue_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// The metadata index this shard's partitions were last reconciled to (held while
    /// reconciling, so reconciles run one at a time).
    pub reconciled: futures_util::lock::Mutex<u64>,
    /// This shard's replica fetchers: (leader broker, fetcher id).
    pub fetchers: RefCell<std::collections::HashSet<(i32, u32)>>,
}

/// The shard went away (shutting down) before answering.
#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not answering")]
pub struct ShardGone(pub usize);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl ShardCtx {
    /// This shard's share of `queued.max.request.bytes` (None: no limit).
    fn queue_budget(&self) -> Option<u64> {
        let total = self.broker.config.queued_max_request_bytes;
        (total > 0).then(|| (total as u64 / self.broker.shard_count() as u64).max(1))
    }

    /// Waits while this shard holds more unhandled request bytes than its budget.
    pub async fn wait_for_queue_room(&self) {
        let Some(budget) = self.queue_budget() else {
            return;
        };
        while self.queued_request_bytes.get() >= budget {
            crate::broker::Metrics::add(&self.broker.metrics.request_queue_waits, 1);
            let (tx, rx) = oneshot::channel();
            self.queue_waiters.borrow_mut().push(tx);
            let _ = rx.await;
        }
    }

    /// Counts a request's bytes as queued until [`Self::request_done`].
    pub fn request_queued(&self, bytes: u64) {
        self.queued_request_bytes
            .set(self.queued_request_bytes.get() + bytes);
    }

    pub fn request_done(&self, bytes: u64) {
        let left = self.queued_request_bytes.get().saturating_sub(bytes);
        self.queued_request_bytes.set(left);
        if self.queue_budget().is_some_and(|b| left < b) {
            for w in self.queue_waiters.borrow_mut().drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Runs `f` on shard `shard` (directly when it is this one) and returns its result.
    pub async fn on_shard<R, F, Fut>(self: &Rc<Self>, shard: usize, f: F) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<ShardCtx>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if shard == self.id {
            return Ok(f(Rc::clone(self)).await);
        }
        let (tx, rx) = oneshot::channel();
        let task: ShardTask = Box::new(move |ctx| {
            compio::runtime::spawn(async move {
                let _ = tx.send(f(ctx).await);
            })
            .detach();
        });
        let inbox = self.broker.inboxes.get(shard).ok_or(ShardGone(shard))?;
        inbox.unbounded_send(task).map_err(|_| ShardGone(shard))?;
        rx.await.map_err(|_| ShardGone(shard))
    }

    pub fn shard_count(&self) -> usize {
        self.broker.shard_count()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(Arc::from(topic), index))
            .cloned()
    }

    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Opens (creating or recovering) a partition this shard owns.
    pub async fn open_partition(
        self: &Rc<Self>,
        topic: &str,
        index: i32,
    ) -> Result<Rc<Partition>, String> {
        if let Some(p) = self.partition(topic, index) {
            return Ok(p);
        }
        let image = self.broker.image();
        let meta = image
            .topic(topic)
            .ok_or_else(|| format!("unknown topic {topic}"))?;
        let config = self.broker.config.log_config(&meta.configs)?;
        let roots = self.broker.config.log_dirs();
        let mut dir = crate::log_dirs::place(&roots, topic, index);
        let topic_id = meta.id;
        if crate::stray_replicas::of_another_topic(&dir, topic_id) {
            // The directory of a topic deleted and created again while this broker was
            // away: never the new topic's log.
            tracing::warn!(topic, partition = index, dir = %dir.display(), "removing a stray replica of a deleted topic with the same name");
            crate::log_deleter::delete(&dir)?;
            dir = crate::log_dirs::place(&roots, topic, index);
        }
        let log = compio::runtime::spawn_blocking(move || {
            let log = UnifiedLog::open(dir.clone(), config, now_ms()).map_err(|e| e.to_string())?;
            crate::stray_replicas::record_topic_id(&dir, topic_id)
                .map_err(|e| format!("{}: partition.metadata: {e}", dir.display()))?;
            Ok::<_, String>(log)
        })
        .await
        .map_err(|_| "opening the log panicked".to_string())??;
        let handle = LogHandle::new(log);
        let partition = Rc::new(Partition::new(
            Arc::from(topic),
            meta.id,
            index,
            handle,
            Arc::clone(&self.broker),
        ));
        partition.rebuild_producer_state();
        if topic == crate::offsets::OFFSETS_TOPIC {
            let loaded = self.offsets.borrow_mut().load(&partition.log.log());
            match loaded {
                Ok(n) => {
                    tracing::debug!(partition = index, records = n, "loaded committed offsets")
                }
                Err(e) => {
                    tracing::error!(partition = index, error = %e, "loading committed offsets failed")
                }
            }
        }
        partition.refresh_high_watermark();
        let flusher = partition.log.clone();
        compio::runtime::spawn(async move {
            flusher.run_flusher(Duration::from_millis(50), now_ms).await
        })
        .detach();
        self.partitions
            .borrow_mut()
            .insert((Arc::from(topic), index), Rc::clone(&partition));
        Ok(partition)
    }

    /// Closes and deletes a partition's log (DeleteTopics).
    pub fn delete_partition(&self, topic: &str, index: i32) -> Result<(), String> {
        let removed = self
            .partitions
            .borrow_mut()
            .remove(&(Arc::from(topic), index));
        if let Some(p) = removed {
            // No longer this broker's to lead: acks=all produces still waiting on it are
            // answered NOT_LEADER_OR_FOLLOWER now, not at their timeout (its followers
            // fetch elsewhere, so its high watermark would never move).
            p.replica.borrow_mut().leader = crate::metadata::NO_LEADER;
            p.log.close();
            p.wake_fetchers();
        }
        let name = format!("{topic}-{index}");
        for root in self.broker.config.log_dirs() {
            crate::log_deleter::delete(&root.join(&name))?;
        }
        Ok(())
    }
}

/// The shard thread's body.
pub fn run(
    id: usize,
    core: Option<usize>,
    broker: Arc<Broker>,
    inbox: mpsc::UnboundedReceiver<ShardTask>,
    listeners: Vec<BoundListener>,
    ready: Arc<Barrier>,
) {
    // Create the runtime before pinning: its threads inherit this thread's affinity.
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor.capacity(broker.config.io_depth);
    let runtime = match compio::runtime::Runtime::builder()
        .with_proactor(proactor)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(shard = id, error = %e, "cannot create the io_uring runtime");
            std::process::exit(1);
        }
    };
    if let Some(core) = core
        && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
    {
        tracing::warn!(shard = id, core, "could not pin the shard to its core");
    }
    crate::disk_throttle::install(broker.config.disk_write_mbps, broker.config.shards);
    let initial_delay = broker.config.group_initial_rebalance_delay_ms;
    let ctx = Rc::new(ShardCtx {
        id,
        broker,
        partitions: RefCell::new(HashMap::new()),
        offsets: RefCell::new(crate::offsets::OffsetsCache::default()),
        groups: RefCell::new(crate::group::GroupCoordinator::new(Duration::from_millis(
            initial_delay,
        ))),
        queued_request_bytes: std::cell::Cell::new(0),
        queue_waiters: RefCell::new(Vec::new()),
        reconciled: futures_util::lock::Mutex::new(0),
        fetchers: RefCell::new(std::collections::HashSet::new()),
    });
    runtime.block_on(async move {
        let c = Rc::clone(&ctx);
        compio::runtime::spawn(async move {
            let mut inbox = inbox;
            while let Some(task) = inbox.next().await {
                task(Rc::clone(&c));
            }
        })
        .detach();
        crate::cluster::reconcile::reconcile(&ctx).await;
        ready.wait();
        for l in listeners {
            let c = Rc::clone(&ctx);
            compio::runtime::spawn(accept_loop(c, l)).detach();
        }
        let c = Rc::clone(&ctx);
        compio::runtime::spawn(async move {
            loop {
                compio::time::sleep(GROUP_TICK).await;
                c.groups.borrow_mut().tick(std::time::Instant::now());
            }
        })
        .detach();
        let c = Rc::clone(&ctx);
        compio::runtime::spawn(offsets_expiry_loop(c)).detach();
        let c = Rc::clone(&ctx);
        compio::runtime::spawn(isr_loop(c)).detach();
        maintenance_loop(ctx).await;
    });
}

/// One shard's socket of a listener, and the listener it serves.
pub type BoundListener = (std::net::TcpListener, Arc<crate::security::ListenerRuntime>);

async fn accept_loop(ctx: Rc<ShardCtx>, (listener, runtime): BoundListener) {
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
                        crate::broker::Metrics::add(&ctx.broker.metrics.connections_rejected, 1);
                        if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            last_warned = Some(std::time::Instant::now());
                            tracing::warn!(shard = ctx.id, %peer, %reason, "connection refused");
                        }
                        drop(stream);
                        continue;
                    }
                };
                crate::broker::Metrics::add(&ctx.broker.metrics.connections_accepted, 1);
                let target = slot.shard;
                let runtime = Arc::clone(&runtime);
                if target == ctx.id {
                    serve_here(&ctx, runtime, stream, peer, slot);
                } else if let Err(e) = hand_over(&ctx, target, runtime, stream, peer, slot) {
                    tracing::debug!(shard = ctx.id, %peer, error = %e, "hand-over failed");
                }
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
    slot: crate::broker::ConnectionSlot,
) {
    let c = Rc::clone(ctx);
    let id = ctx.broker.connection_id();
    compio::runtime::spawn(async move {
        crate::connection::serve(c, runtime, stream, peer, id).await;
        drop(slot);
    })
    .detach();
}

/// Gives a connection accepted here to the shard [`Broker::admit`] placed it on: a
/// duplicate of the socket crosses threads and this shard closes its own.
fn hand_over(
    ctx: &Rc<ShardCtx>,
    target: usize,
    runtime: Arc<crate::security::ListenerRuntime>,
    stream: compio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: crate::broker::ConnectionSlot,
) -> std::io::Result<()> {
    let socket: std::net::TcpStream = socket2::SockRef::from(&stream).try_clone()?.into();
    drop(stream);
    send_connection(&ctx.broker, target, runtime, socket, peer, slot)
}

/// Serves a Kafka client accepted off the shards (on the controller listener, which the
/// controller thread owns): [`Broker::admit`] places it on a shard like any other.
pub fn adopt(
    broker: &Arc<crate::broker::Broker>,
    runtime: Arc<crate::security::ListenerRuntime>,
    socket: std::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Result<(), String> {
    let slot = broker.admit(peer.ip(), 0, &runtime)?;
    crate::broker::Metrics::add(&broker.metrics.connections_accepted, 1);
    send_connection(broker, slot.shard, runtime, socket, peer, slot).map_err(|e| e.to_string())
}

/// Sends a connection to shard `target`'s inbox, which serves it there.
fn send_connection(
    broker: &crate::broker::Broker,
    target: usize,
    runtime: Arc<crate::security::ListenerRuntime>,
    socket: std::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: crate::broker::ConnectionSlot,
) -> std::io::Result<()> {
    let task: ShardTask = Box::new(
        move |ctx: Rc<ShardCtx>| match compio::net::TcpStream::from_std(socket) {
            Ok(stream) => serve_here(&ctx, runtime, stream, peer, slot),
            Err(e) => tracing::debug!(shard = ctx.id, %peer, error = %e, "cannot adopt connection"),
        },
    );
    broker
        .inboxes
        .get(target)
        .ok_or_else(|| std::io::Error::other("no such shard"))?
        .unbounded_send(task)
        .map_err(|_| std::io::Error::other("shard inbox closed"))
}

/// Leaders check their followers' lag (`replica.lag.time.max.ms`) a few times per period.
async fn isr_loop(ctx: Rc<ShardCtx>) {
    let every =
        Duration::from_millis((ctx.broker.config.replica_lag_time_max_ms / 4).clamp(50, 1000));
    loop {
        compio::time::sleep(every).await;
        for p in ctx.partitions() {
            p.check_isr(&ctx);
        }
    }
}

/// Retention and compaction for this shard's partitions every
/// `log.retention.check.interval.ms`.
async fn maintenance_loop(ctx: Rc<ShardCtx>) {
    let interval = Duration::from_millis(ctx.broker.config.retention_check_interval_ms.max(10));
    loop {
        compio::time::sleep(interval).await;
        for p in ctx.partitions() {
            // A replica moving between log directories is left alone until it has moved.
            let Some(_maintenance) = p.maintenance.try_lock() else {
                continue;
            };
            let deleted = p.log.log_mut().apply_retention(now_ms());
            if let Err(e) = deleted {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed");
            }
            p.refresh_high_watermark();
            if let Err(e) = p.log.compact(now_ms()).await {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "compaction failed");
            }
        }
    }
}

impl ShardCtx {
    /// Flushes every partition of this shard and writes its checkpoints (shutdown).
    /// Returns how many partitions were closed cleanly.
    pub fn flush_all_for_shutdown(&self) -> usize {
        let mut clean = 0;
        for p in self.partitions() {
            let flushed = p.log.log_mut().flush_for_shutdown();
            match flushed {
                Ok(()) => clean += 1,
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush at shutdown failed")
                }
            }
        }
        clean
    }
}

impl ShardCtx {
    /// Runs `f` with partition `index` of `topic` on its owner shard, if this broker leads
    /// it. Errors are Kafka's: unknown topic/partition, or not led here
    /// (NOT_LEADER_OR_FOLLOWER).
    pub async fn with_partition<R, F>(
        self: &Rc<Self>,
        topic: &str,
        index: i32,
        f: F,
    ) -> Result<R, kafka_protocol::ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(&Partition) -> Result<R, kafka_protocol::ResponseError> + Send + 'static,
    {
        self.with_replica(topic, index, move |p| {
            if p.is_leader() {
                f(p)
            } else {
                Err(kafka_protocol::ResponseError::NotLeaderOrFollower)
            }
        })
        .await
    }

    /// Like [`Self::with_partition`] for any replica this broker holds (leader or follower).
    pub async fn with_replica<R, F>(
        self: &Rc<Self>,
        topic: &str,
        index: i32,
        f: F,
    ) -> Result<R, kafka_protocol::ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(&Partition) -> Result<R, kafka_protocol::ResponseError> + Send + 'static,
    {
        use kafka_protocol::ResponseError;
        let image = self.broker.image();
        let owner = image
            .topic(topic)
            .and_then(|m| m.owner_shard(index, self.shard_count()))
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        let name = topic.to_owned();
        self.on_shard(owner, move |c| async move {
            let part = c
                .partition(&name, index)
                .ok_or(ResponseError::NotLeaderOrFollower)?;
            f(&part)
        })
        .await
        .unwrap_or(Err(ResponseError::UnknownServerError))
    }
}

impl ShardCtx {
    /// Runs `f` on the shard coordinating `group` (the owner of its `__consumer_offsets`
    /// partition).
    pub async fn on_coordinator<R, F, Fut>(
        self: &Rc<Self>,
        group: &str,
        f: F,
    ) -> Result<R, kafka_protocol::ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<ShardCtx>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        use crate::offsets::{OFFSETS_TOPIC, partition_for};
        let image = self.broker.image();
        let topic = image
            .topic(OFFSETS_TOPIC)
            .ok_or(kafka_protocol::ResponseError::CoordinatorNotAvailable)?;
        let partition = partition_for(group);
        if topic.state(partition).map(|s| s.leader) != Some(self.broker.config.node_id) {
            return Err(kafka_protocol::ResponseError::NotCoordinator);
        }
        let owner = topic
            .owner_shard(partition, self.shard_count())
            .ok_or(kafka_protocol::ResponseError::CoordinatorNotAvailable)?;
        self.on_shard(owner, f)
            .await
            .map_err(|_| kafka_protocol::ResponseError::CoordinatorNotAvailable)
    }
}

/// `offsets.retention.minutes`: committed offsets of groups without members expire
/// (tombstones in `__consumer_offsets`); a group left with no members and no offsets is
/// forgotten.
async fn offsets_expiry_loop(ctx: Rc<ShardCtx>) {
    let interval = Duration::from_millis(
        ctx.broker
            .config
            .offsets_retention_check_interval_ms
            .max(10),
    );
    loop {
        compio::time::sleep(interval).await;
        let now = now_ms();
        let horizon = now.saturating_sub(ctx.broker.config.offsets_retention_ms);
        let expired: Vec<(String, Vec<(String, i32)>)> = {
            let cache = ctx.offsets.borrow();
            let groups = ctx.groups.borrow();
            cache
                .group_ids()
                .filter(|g| groups.group(g).is_none_or(|gr| gr.members.is_empty()))
                .filter_map(|g| {
                    let old: Vec<(String, i32)> = cache
                        .group(g)?
                        .iter()
                        .filter(|(_, c)| c.commit_timestamp < horizon)
                        .map(|(k, _)| k.clone())
                        .collect();
                    (!old.is_empty()).then(|| (g.clone(), old))
                })
                .collect()
        };
        for (group, keys) in expired {
            let partition = crate::offsets::partition_for(&group);
            let Some(part) = ctx.partition(crate::offsets::OFFSETS_TOPIC, partition) else {
                continue;
            };
            let tombstones = crate::offsets::tombstone_batch(&group, &keys, now);
            if let Err(e) = part.append(tombstones, now).await {
                tracing::warn!(%group, error = %e.message, "expiring offsets failed");
                continue;
            }
            let mut cache = ctx.offsets.borrow_mut();
            for (t, p) in &keys {
                cache.remove(&group, t, *p);
            }
            tracing::info!(%group, partitions = keys.len(), "expired committed offsets (offsets.retention.minutes)");
        }
        let cache = ctx.offsets.borrow();
        ctx.groups
            .borrow_mut()
            .forget_empty(|g| cache.group(g).is_some());
    }
}
