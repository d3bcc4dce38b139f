//! A shard: one OS thread pinned to a core, running a single-threaded compio (io_uring)
//! runtime. It owns its partitions, its client connections and their buffers; nothing in
//! it is shared with other threads. Other shards reach its partitions only by sending a
//! [`ShardTask`] to its inbox ([`ShardCtx::on_shard`]), which runs on this thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use ringmq_engine::{LogHandle, UnifiedLog};

use crate::runtime::Broker;
use crate::storage::now_ms;
use crate::storage::partition::Partition;

/// How often group sessions and rebalance deadlines are checked.
pub const GROUP_TICK: Duration = Duration::from_millis(100);

/// Work sent to a shard: runs on that shard's thread with its context.
pub type ShardTask = Box<dyn FnOnce(Rc<ShardCtx>) + Send>;

/// `(topic, partition)`.
pub type TopicPartition = (Arc<str>, i32);

/// Items per blocking task in [`blocking_batches`].
const BLOCKING_BATCH: usize = 32;
/// Blocking tasks at once per shard in [`blocking_batches`].
const BLOCKING_TASKS: usize = 4;
/// Threads in a shard's blocking pool at most.
const BLOCKING_THREADS: usize = 32;

/// Runs `f` on every item off the shard, `BLOCKING_BATCH` items per blocking task and at
/// most `BLOCKING_TASKS` tasks at a time (file work for many partitions at once: their
/// creations and syncs overlap, without a thread per partition). Results in order; the
/// items of a task that panicked are errors.
pub async fn blocking_batches<T, R, F>(items: Vec<T>, f: F) -> Vec<Result<R, String>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Result<R, String> + Send + Sync + Copy + 'static,
{
    let mut out = Vec::with_capacity(items.len());
    let mut pending = items.into_iter().peekable();
    while pending.peek().is_some() {
        let wave = (0..BLOCKING_TASKS)
            .map(|_| pending.by_ref().take(BLOCKING_BATCH).collect::<Vec<_>>())
            .filter(|batch| !batch.is_empty())
            .map(|batch| async move {
                let n = batch.len();
                match compio::runtime::spawn_blocking(move || {
                    batch.into_iter().map(f).collect::<Vec<_>>()
                })
                .await
                {
                    Ok(results) => results,
                    Err(_) => (0..n)
                        .map(|_| Err("a blocking task panicked".to_owned()))
                        .collect(),
                }
            });
        for results in futures_util::future::join_all(wave).await {
            out.extend(results);
        }
    }
    out
}

pub struct ShardCtx {
    pub id: usize,
    pub broker: Arc<Broker>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    /// Committed offsets of the groups whose `__consumer_offsets` partitions live here.
    pub offsets: RefCell<crate::coordinator::offsets::OffsetsCache>,
    /// Group membership of the same groups.
    pub groups: RefCell<crate::coordinator::group::GroupCoordinator>,
    /// The transactional ids whose `__transaction_state` partitions live here.
    pub txns: RefCell<crate::coordinator::transactions::TxnCache>,
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
            crate::metrics::Metrics::add(&self.broker.metrics.request_queue_waits, 1);
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
        self.broker.inboxes.send(shard, task)?;
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

    /// Opens the logs of partitions this shard does not hold yet (creating new ones) in
    /// [`blocking_batches`]: a topic of many partitions is created in parallel. Returns
    /// each partition's result, in order.
    pub async fn open_partitions(
        self: &Rc<Self>,
        wanted: &[(Arc<str>, i32)],
    ) -> Vec<Result<Rc<Partition>, String>> {
        let image = self.broker.image();
        let mut placement =
            crate::storage::log_dirs::Placement::new(&self.broker.config.log_dirs());
        let mut results: Vec<Option<Result<Rc<Partition>, String>>> = Vec::new();
        // (index in `wanted`, directory, config, topic id) of the logs to open.
        let mut jobs = Vec::new();
        for (i, (topic, index)) in wanted.iter().enumerate() {
            if let Some(p) = self.partition(topic, *index) {
                results.push(Some(Ok(p)));
                continue;
            }
            results.push(None);
            let Some(meta) = image.topic(topic) else {
                results[i] = Some(Err(format!("unknown topic {topic}")));
                continue;
            };
            let config = match self.broker.config.log_config(&meta.configs) {
                Ok(c) => c,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            let mut dir = placement.place(topic, *index);
            if crate::storage::stray_replicas::of_another_topic(&dir, meta.id) {
                // The directory of a topic deleted and created again while this broker
                // was away: never the new topic's log.
                tracing::warn!(topic = %topic, partition = index, dir = %dir.display(), "removing a stray replica of a deleted topic with the same name");
                if let Err(e) = crate::storage::log_deleter::delete(&dir) {
                    results[i] = Some(Err(e));
                    continue;
                }
                dir = placement.place(topic, *index);
            }
            jobs.push((i, dir, config, meta.id));
        }
        let keys: Vec<(usize, uuid::Uuid)> = jobs.iter().map(|(i, _, _, id)| (*i, *id)).collect();
        let opened = blocking_batches(jobs, |(_, dir, config, topic_id)| {
            let log = UnifiedLog::open(dir.clone(), config, now_ms()).map_err(|e| e.to_string())?;
            crate::storage::stray_replicas::record_topic_id(&dir, topic_id)
                .map_err(|e| format!("{}: partition.metadata: {e}", dir.display()))?;
            Ok::<_, String>(log)
        })
        .await;
        for ((i, topic_id), log) in keys.into_iter().zip(opened) {
            let (topic, index) = &wanted[i];
            results[i] = Some(log.map(|log| self.adopt_log(topic, topic_id, *index, log)));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("not opened".to_owned())))
            .collect()
    }

    /// Makes an opened log this shard's partition: producer state, high watermark, its
    /// flusher.
    fn adopt_log(
        &self,
        topic: &Arc<str>,
        topic_id: uuid::Uuid,
        index: i32,
        log: UnifiedLog,
    ) -> Rc<Partition> {
        let handle = LogHandle::new(log);
        let partition = Rc::new(Partition::new(
            Arc::clone(topic),
            topic_id,
            index,
            handle,
            Arc::clone(&self.broker.local),
        ));
        partition.rebuild_producer_state();
        partition.refresh_high_watermark();
        let flusher = partition.log.clone();
        compio::runtime::spawn(async move {
            flusher.run_flusher(Duration::from_millis(50), now_ms).await
        })
        .detach();
        self.partitions
            .borrow_mut()
            .insert((Arc::clone(topic), index), Rc::clone(&partition));
        partition
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
            crate::storage::log_deleter::delete(&root.join(&name))?;
        }
        Ok(())
    }
}

/// A task on this shard's thread (not `Send`).
pub type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

/// What the rooms above the runtime run on every shard; the composition root supplies it,
/// so the runtime never names them.
pub struct ShardServices {
    /// Runs before the shard says it is ready (replication brings its partitions up to
    /// the metadata image).
    pub before_ready: Box<dyn FnOnce(Rc<ShardCtx>) -> LocalTask + Send>,
    /// Spawns the shard's long-running tasks once every shard is ready (the listeners'
    /// accept loops, the leaders' ISR checks).
    pub after_ready: Box<dyn FnOnce(Rc<ShardCtx>) + Send>,
}

/// The shard thread's body: builds the io_uring runtime, pins the thread, runs the inbox,
/// the services, the group timers and the retention loop.
pub fn run(
    id: usize,
    core: Option<usize>,
    broker: Arc<Broker>,
    inbox: mpsc::UnboundedReceiver<ShardTask>,
    services: ShardServices,
    ready: Arc<Barrier>,
) {
    // Create the runtime before pinning: its threads inherit this thread's affinity.
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor.capacity(broker.config.io_depth);
    // The shard's blocking pool (file work that io_uring does not do): bounded, and idle
    // threads leave after a while (compio's defaults, 256 threads kept a minute, left 361
    // idle threads behind after creating 6000 partitions). blocking_batches keeps at most
    // BLOCKING_TASKS of its own in flight, well under the limit.
    proactor.thread_pool_limit(BLOCKING_THREADS);
    proactor.thread_pool_recv_timeout(Duration::from_secs(10));
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
    crate::storage::disk_throttle::install(broker.config.disk_write_mbps, broker.config.shards);
    let initial_delay = broker.config.group_initial_rebalance_delay_ms;
    let ctx = Rc::new(ShardCtx {
        id,
        broker,
        partitions: RefCell::new(HashMap::new()),
        offsets: RefCell::new(crate::coordinator::offsets::OffsetsCache::default()),
        txns: RefCell::new(Default::default()),
        groups: RefCell::new(crate::coordinator::group::GroupCoordinator::new(
            Duration::from_millis(initial_delay),
        )),
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
        (services.before_ready)(Rc::clone(&ctx)).await;
        ready.wait();
        (services.after_ready)(Rc::clone(&ctx));
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
        maintenance_loop(ctx).await;
    });
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

    /// Like [`Self::with_partition`] for work that awaits on the owner shard (`f` gets
    /// that shard's context and the partition this broker leads).
    pub async fn with_partition_async<R, F, Fut>(
        self: &Rc<Self>,
        topic: &str,
        index: i32,
        f: F,
    ) -> Result<R, kafka_protocol::ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<ShardCtx>, Rc<Partition>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, kafka_protocol::ResponseError>> + 'static,
    {
        self.on_partition_owner(topic, index, true, f).await
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
        self.on_partition_owner(topic, index, false, move |_, p| async move { f(&p) })
            .await
    }

    /// Runs `f` on the shard owning partition `index` of `topic`, with the partition
    /// (which this broker must lead if `leader_only`).
    async fn on_partition_owner<R, F, Fut>(
        self: &Rc<Self>,
        topic: &str,
        index: i32,
        leader_only: bool,
        f: F,
    ) -> Result<R, kafka_protocol::ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<ShardCtx>, Rc<Partition>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, kafka_protocol::ResponseError>> + 'static,
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
                .filter(|p| !leader_only || p.is_leader())
                .ok_or(ResponseError::NotLeaderOrFollower)?;
            f(c, part).await
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
        use crate::coordinator::offsets::{OFFSETS_TOPIC, partition_for};
        self.on_internal_leader(OFFSETS_TOPIC, partition_for(group), f)
            .await
    }

    /// Runs `f` on the shard coordinating transactional id `id` (the owner of its
    /// `__transaction_state` partition).
    pub async fn on_txn_coordinator<R, F, Fut>(
        self: &Rc<Self>,
        id: &str,
        f: F,
    ) -> Result<R, kafka_protocol::ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<ShardCtx>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        use crate::coordinator::transactions::{TXN_TOPIC, partition_for};
        self.on_internal_leader(TXN_TOPIC, partition_for(id), f)
            .await
    }

    /// Runs `f` on the shard owning partition `partition` of internal topic `topic`, if
    /// this broker leads it (NOT_COORDINATOR otherwise).
    async fn on_internal_leader<R, F, Fut>(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        f: F,
    ) -> Result<R, kafka_protocol::ResponseError>
    where
        R: Send + 'static,
        F: FnOnce(Rc<ShardCtx>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let image = self.broker.image();
        let topic = image
            .topic(topic)
            .ok_or(kafka_protocol::ResponseError::CoordinatorNotAvailable)?;
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
            let partition = crate::coordinator::offsets::partition_for(&group);
            let Some(part) = ctx.partition(crate::coordinator::offsets::OFFSETS_TOPIC, partition)
            else {
                continue;
            };
            let tombstones = crate::coordinator::offsets::tombstone_batch(&group, &keys, now);
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
