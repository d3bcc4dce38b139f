//! `Partition`: a partition as its owner shard serves it — the log, the high watermark,
//! the idempotent producers' sequence state, and the fetches waiting for new data.
//!
//! Idempotence (Kafka's `ProducerStateManager` rules): per producer id the current epoch
//! and the last five batches' sequence ranges and offsets. A batch with the next sequence
//! is appended; a batch equal to one of the last five is a duplicate and answered with
//! the original offsets without being appended; any other sequence is
//! OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is INVALID_PRODUCER_EPOCH. The state is
//! rebuilt from the log's batch headers when the partition is opened, so it survives
//! restarts with the log as its only source of truth.
//!
//! Produce requests for a partition that arrive in one loop turn are written together:
//! the first becomes the writer and yields once so the rest of the turn's requests queue
//! behind it, then checks each request's sequences in arrival order (provisional
//! producer state, offsets predicted from the log end) and appends everything accepted
//! with one `pwritev`. If that grouped write fails on something one request caused (a
//! corrupt or oversized batch), the state is restored and the requests are retried one by
//! one, so a bad request never fails the others. The fdatasync of a synchronous-flush
//! append is awaited outside, so groups share it too (group commit).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::lock::Mutex;
use kafka_protocol::ResponseError;
use ringmq_engine::batch::BatchIter;
use ringmq_engine::handle::YieldOnce;
use ringmq_engine::{
    AppendError, AppendOptions, BatchHeader, FlushPolicy, LogAppendInfo, LogHandle, Offset,
};

/// Batches remembered per producer for duplicate detection (Kafka keeps 5).
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

#[derive(Debug, Clone, Copy)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    first_offset: Offset,
    last_offset: Offset,
    /// The batch's max timestamp (DescribeProducers' last timestamp).
    timestamp: i64,
}

#[derive(Debug, Default, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// How a produce to one partition failed, as a Kafka error.
#[derive(Debug, Clone)]
pub struct PartitionError {
    pub code: ResponseError,
    pub message: String,
    /// Records rejected one by one (KIP-467): (index in the batch, message).
    pub record_errors: crate::storage::record_policy::RecordErrors,
}

impl PartitionError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        PartitionError {
            code,
            message: message.into(),
            record_errors: Vec::new(),
        }
    }
}

/// Maps engine append errors to Kafka error codes (one place, used by Produce).
pub fn append_error(e: &AppendError) -> PartitionError {
    use ringmq_engine::BatchError;
    let code = match e {
        AppendError::Corrupt(BatchError::InvalidRecord(_)) => ResponseError::InvalidRecord,
        AppendError::Corrupt(_) => ResponseError::CorruptMessage,
        AppendError::Empty => ResponseError::InvalidRequest,
        AppendError::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        AppendError::OffsetsOutOfOrder { .. } => ResponseError::InvalidRequest,
        AppendError::DiskFull => ResponseError::PolicyViolation,
        AppendError::LogOffline(_) | AppendError::Io(_) => ResponseError::KafkaStorageError,
        AppendError::ShuttingDown => ResponseError::NotLeaderOrFollower,
    };
    PartitionError::new(code, e.to_string())
}

/// A produce request waiting for its partition's writer.
struct Waiting {
    records: Bytes,
    now_ms: i64,
    /// The verification a transactional write's first batch here passed (KIP-890).
    guard: Option<VerificationGuard>,
    done: oneshot::Sender<Result<LogAppendInfo, PartitionError>>,
}

/// Proof that the transaction coordinator said producer `producer_id`'s open
/// transaction includes this partition (KIP-890 part 1), valid until a marker for the
/// producer is written here: a write verified before its transaction ended (a late or
/// retried request) cannot open a transaction that nobody will end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerificationGuard {
    pub producer_id: i64,
    token: u64,
}

/// Requests written in one group at most (the rest wait for the next round).
pub const GROUP_REQUESTS_MAX: usize = 256;

/// What a partition reads from the broker that holds it (one per broker, shared by its
/// partitions): the broker's id and `min.insync.replicas`, its newest metadata image and
/// its counters.
pub struct LocalBroker {
    pub node_id: i32,
    /// The broker's `min.insync.replicas` (a topic's own setting wins).
    pub min_insync_replicas: i32,
    pub metadata: Arc<ArcSwap<crate::metadata::MetadataImage>>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub struct Partition {
    pub topic: Arc<str>,
    /// The topic's id (a topic re-created under the same name is another partition).
    pub topic_id: uuid::Uuid,
    pub index: i32,
    /// Replicas, ISR, leader and epochs as the metadata last said.
    pub replica: RefCell<crate::metadata::PartitionState>,
    pub log: LogHandle,
    /// Serialises writers (produce groups, replicated appends, truncation).
    pub(crate) lock: Mutex<()>,
    queue: RefCell<Vec<Waiting>>,
    writing: std::cell::Cell<bool>,
    /// The broker holding this replica, as a partition sees it.
    pub(super) local: Arc<LocalBroker>,
    /// Followers' progress (leader) or truncation state (follower).
    pub(crate) repl: RefCell<crate::storage::replica::ReplicationState>,
    fetchers: RefCell<Vec<oneshot::Sender<()>>>,
    producers: RefCell<HashMap<i64, ProducerEntry>>,
    /// Open and aborted transactions, the last stable offset.
    txns: RefCell<crate::storage::txn_state::TxnState>,
    /// Verifications in flight or passed, per producer (cleared by its next marker).
    verifying: RefCell<HashMap<i64, u64>>,
    /// Held by retention/compaction and by a move between log directories (never both).
    pub(crate) maintenance: Mutex<()>,
    /// The log directory a move is copying this replica to (DescribeLogDirs' future
    /// replica).
    pub moving_to: RefCell<Option<std::path::PathBuf>>,
}

enum SequenceCheck {
    Append,
    Duplicate(BatchMeta),
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        topic_id: uuid::Uuid,
        index: i32,
        log: LogHandle,
        local: Arc<LocalBroker>,
    ) -> Self {
        Partition {
            topic,
            topic_id,
            index,
            replica: RefCell::new(crate::metadata::PartitionState {
                leader: crate::metadata::NO_LEADER,
                leader_epoch: -1,
                ..Default::default()
            }),
            log,
            lock: Mutex::new(()),
            queue: RefCell::new(Vec::new()),
            writing: std::cell::Cell::new(false),
            local,
            repl: RefCell::new(Default::default()),
            fetchers: RefCell::new(Vec::new()),
            producers: RefCell::new(HashMap::new()),
            txns: RefCell::new(Default::default()),
            verifying: RefCell::new(HashMap::new()),
            maintenance: Mutex::new(()),
            moving_to: RefCell::new(None),
        }
    }

    /// Whether this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.replica.borrow().leader == self.local.node_id
    }

    /// This broker's `node.id`.
    pub fn node_id(&self) -> i32 {
        self.local.node_id
    }

    /// The newest metadata image this broker has.
    pub fn image(&self) -> Arc<crate::metadata::MetadataImage> {
        self.local.metadata.load_full()
    }

    /// The current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.replica.borrow().leader_epoch
    }

    /// Rebuilds producer sequence and transaction state from the log's batch headers
    /// (and its transaction markers).
    pub fn rebuild_producer_state(&self) {
        let mut producers = self.producers.borrow_mut();
        let mut txns = self.txns.borrow_mut();
        *txns = Default::default();
        let log = self.log.log();
        let result = log.scan_headers_and_markers(|h, marker| {
            take_batch(&mut producers, &mut txns, h, h.base_offset, marker);
        });
        if let Err(e) = result {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "producer state rebuild failed");
        }
    }

    /// Appends a produce request's records for this partition (grouped with the other
    /// requests of this loop turn), then waits for durability under a sync-flush policy.
    pub async fn append(
        &self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<LogAppendInfo, PartitionError> {
        self.append_guarded(records, now_ms, None).await
    }

    /// The transactional producer (id, epoch) whose write here would open a transaction
    /// (its first transactional batch in this partition since its last marker): such a
    /// write is verified with the coordinator first.
    pub fn needs_verification(&self, records: &[u8]) -> Option<(i64, i16)> {
        let h = producer_headers(records)
            .into_iter()
            .find(|h| h.is_transactional() && !h.is_control())?;
        self.txns
            .borrow()
            .open_since(h.producer_id)
            .is_none()
            .then_some((h.producer_id, h.producer_epoch))
    }

    /// Starts verifying `producer_id`'s write: the guard holds until the producer's next
    /// marker here. Writes of the producer verified at once (several in flight) share
    /// one guard, as in Kafka: a second verification must not revoke the first's.
    pub fn begin_verification(&self, producer_id: i64) -> VerificationGuard {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let token = *self
            .verifying
            .borrow_mut()
            .entry(producer_id)
            .or_insert_with(|| NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        VerificationGuard { producer_id, token }
    }

    /// Whether a transactional write verified with `guard` may still be appended: its
    /// transaction is open here, or no marker ended it since the verification began.
    fn guard_holds(&self, guard: &VerificationGuard) -> bool {
        self.txns.borrow().open_since(guard.producer_id).is_some()
            || self.verifying.borrow().get(&guard.producer_id) == Some(&guard.token)
    }

    async fn append_guarded(
        &self,
        records: Bytes,
        now_ms: i64,
        guard: Option<VerificationGuard>,
    ) -> Result<LogAppendInfo, PartitionError> {
        if !self.is_leader() {
            return Err(PartitionError::new(
                ResponseError::NotLeaderOrFollower,
                format!(
                    "this broker does not lead {}-{} (leader {})",
                    self.topic,
                    self.index,
                    self.replica.borrow().leader
                ),
            ));
        }
        let (done, result) = oneshot::channel();
        self.queue.borrow_mut().push(Waiting {
            records,
            now_ms,
            guard,
            done,
        });
        if !self.writing.get() {
            self.writing.set(true);
            let _writer = WriterGuard(&self.writing);
            YieldOnce(false).await;
            loop {
                let group: Vec<Waiting> = {
                    let mut q = self.queue.borrow_mut();
                    let n = q.len().min(GROUP_REQUESTS_MAX);
                    q.drain(..n).collect()
                };
                if group.is_empty() {
                    break;
                }
                self.write_group(group).await;
            }
        }
        let info = result.await.map_err(|_| {
            PartitionError::new(ResponseError::UnknownServerError, "append abandoned")
        })??;
        if self.log.log().flush_policy() == FlushPolicy::Sync {
            self.log
                .wait_durable(info.last_offset.plus(1))
                .await
                .map_err(|e| append_error(&e))?;
        }
        self.refresh_high_watermark();
        self.wake_fetchers();
        Ok(info)
    }

    /// A produce with `acks`: acks=all is refused while the ISR is below
    /// `min.insync.replicas` and answered once every in-sync replica has the records.
    pub async fn append_acked(
        &self,
        records: Bytes,
        now_ms: i64,
        acks: i16,
        timeout: std::time::Duration,
    ) -> Result<LogAppendInfo, PartitionError> {
        self.append_acked_guarded(records, now_ms, acks, timeout, None)
            .await
    }

    /// [`Self::append_acked`] for a transactional write verified with `guard`.
    pub async fn append_acked_guarded(
        &self,
        records: Bytes,
        now_ms: i64,
        acks: i16,
        timeout: std::time::Duration,
        guard: Option<VerificationGuard>,
    ) -> Result<LogAppendInfo, PartitionError> {
        if acks == -1 {
            self.check_min_isr(ResponseError::NotEnoughReplicas)?;
        }
        let info = self.append_guarded(records, now_ms, guard).await?;
        if acks == -1 {
            self.wait_replicated(info.last_offset.plus(1), timeout)
                .await?;
        }
        Ok(info)
    }

    /// Writes a group of requests with one append; answers each request.
    async fn write_group(&self, group: Vec<Waiting>) {
        let _guard = self.lock.lock().await;
        let saved = self.producers.borrow().clone();
        let mut next = self.log.log().log_end_offset();
        let mut accepted: Vec<(Waiting, Offset, Offset)> = Vec::new();
        for w in group {
            if w.guard.is_some_and(|g| !self.guard_holds(&g)) {
                let _ = w.done.send(Err(not_in_transaction()));
                continue;
            }
            match self.check_request(&w.records) {
                Err(e) => {
                    let _ = w.done.send(Err(e));
                }
                Ok(Some(dup)) => {
                    let _ = w.done.send(Ok(self.duplicate_info(dup)));
                }
                Ok(None) => {
                    let (first, last) = (next, self.remember_request(&w.records, next));
                    next = last.plus(1);
                    accepted.push((w, first, last));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        if accepted.len() > 1 {
            crate::metrics::Metrics::add(
                &self.local.metrics.produce_grouped_requests,
                accepted.len() as u64,
            );
        }
        let now_ms = accepted[0].0.now_ms;
        let records: Vec<Bytes> = accepted.iter().map(|(w, _, _)| w.records.clone()).collect();
        crate::storage::disk_throttle::acquire(records.iter().map(|r| r.len() as u64).sum()).await;
        match self
            .log
            .append_written(records, self.client_append_options(now_ms))
            .await
        {
            Ok(info) => {
                // Offsets were predicted from the log end; the engine assigned the same.
                assert_eq!(
                    info.first_offset, accepted[0].1,
                    "{}-{}: grouped offsets diverged",
                    self.topic, self.index
                );
                for (w, first, last) in accepted {
                    self.note_transactions(&w.records, first);
                    let _ = w.done.send(Ok(LogAppendInfo {
                        first_offset: first,
                        last_offset: last,
                        ..info
                    }));
                }
            }
            Err(e) if accepted.len() > 1 && request_specific(&e) => {
                *self.producers.borrow_mut() = saved;
                for (w, _, _) in accepted {
                    let result = self.append_alone(w.records, w.now_ms).await;
                    let _ = w.done.send(result);
                }
            }
            Err(e) => {
                *self.producers.borrow_mut() = saved;
                let err = append_error(&e);
                for (w, _, _) in accepted {
                    let _ = w.done.send(Err(err.clone()));
                }
            }
        }
    }

    /// One request on its own (the fallback when a grouped write fails).
    async fn append_alone(
        &self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<LogAppendInfo, PartitionError> {
        if let Some(dup) = self.check_request(&records)? {
            return Ok(self.duplicate_info(dup));
        }
        crate::storage::disk_throttle::acquire(records.len() as u64).await;
        let info = self
            .log
            .append_written(vec![records.clone()], self.client_append_options(now_ms))
            .await
            .map_err(|e| append_error(&e))?;
        self.remember_request(&records, info.first_offset);
        self.note_transactions(&records, info.first_offset);
        Ok(info)
    }

    /// Opens a transaction here for each transactional producer batch of a client's
    /// request appended from `first` (clients write no markers).
    fn note_transactions(&self, records: &[u8], first: Offset) {
        let mut txns = self.txns.borrow_mut();
        let mut offset = first;
        for (_, h, _) in BatchIter::new(records).map_while(Result::ok) {
            txns.on_batch(&h, offset, None);
            offset = offset.plus(i64::from(h.last_offset_delta) + 1);
        }
    }

    /// The last stable offset: what a read_committed consumer may read up to.
    pub fn last_stable_offset(&self) -> Offset {
        let hw = self.log.log().high_watermark();
        self.txns.borrow_mut().last_stable_offset(hw)
    }

    /// Aborted transactions with data in `[from, to)` (for a read_committed fetch).
    pub fn aborted_between(
        &self,
        from: Offset,
        to: Offset,
    ) -> Vec<crate::storage::txn_state::AbortedTxn> {
        let mut txns = self.txns.borrow_mut();
        txns.forget_before(self.log.log().log_start_offset());
        txns.aborted_between(from, to)
    }

    /// Open transactions here: (producer id, epoch, first offset); DescribeProducers.
    pub fn open_transactions(&self) -> Vec<(i64, i16, Offset)> {
        self.txns.borrow().ongoing().collect()
    }

    /// The producers this partition knows: (id, epoch, last sequence, last batch's
    /// timestamp, first offset of its open transaction); DescribeProducers.
    pub fn producer_states(&self) -> Vec<(i64, i16, i32, i64, Option<Offset>)> {
        let txns = self.txns.borrow();
        self.producers
            .borrow()
            .iter()
            .map(|(pid, e)| {
                let last = e.batches.back();
                (
                    *pid,
                    e.epoch,
                    last.map_or(-1, |m| m.last_seq),
                    last.map_or(-1, |m| m.timestamp),
                    txns.open_since(*pid),
                )
            })
            .collect()
    }

    /// Ends `producer_id`'s transaction here with a marker (WriteTxnMarkers, from the
    /// transaction coordinator): refused with INVALID_PRODUCER_EPOCH if the producer has
    /// written with a newer epoch; answered once the in-sync replicas have it.
    pub async fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        kind: ringmq_engine::control::ControlType,
        coordinator_epoch: i32,
        timeout: std::time::Duration,
    ) -> Result<Offset, PartitionError> {
        let batch = ringmq_engine::control::marker_batch(
            producer_id,
            producer_epoch,
            kind,
            coordinator_epoch,
            crate::storage::now_ms(),
        );
        self.append_coordinator_batch(batch, Some(kind), timeout)
            .await
    }

    /// Appends a batch the broker itself wrote for a producer (a transaction marker, or
    /// a transactional offset commit in `__consumer_offsets`): no sequence checks, but
    /// an epoch older than the producer's is INVALID_PRODUCER_EPOCH. Answered once the
    /// in-sync replicas have it.
    pub async fn append_coordinator_batch(
        &self,
        batch: Bytes,
        marker: Option<ringmq_engine::control::ControlType>,
        timeout: std::time::Duration,
    ) -> Result<Offset, PartitionError> {
        if !self.is_leader() {
            return Err(PartitionError::new(
                ResponseError::NotLeaderOrFollower,
                format!("this broker does not lead {}-{}", self.topic, self.index),
            ));
        }
        let header = ringmq_engine::batch::validate_batch(&batch)
            .map_err(|e| PartitionError::new(ResponseError::CorruptMessage, e.to_string()))?;
        let now = crate::storage::now_ms();
        let last = {
            let _guard = self.lock.lock().await;
            let known = self
                .producers
                .borrow()
                .get(&header.producer_id)
                .map(|e| e.epoch);
            if let Some(epoch) = known.filter(|e| *e > header.producer_epoch) {
                return Err(PartitionError::new(
                    ResponseError::InvalidProducerEpoch,
                    format!(
                        "epoch {} is older than producer {}'s {epoch}",
                        header.producer_epoch, header.producer_id
                    ),
                ));
            }
            let info = self
                .log
                .append_written(vec![batch], self.client_append_options(now))
                .await
                .map_err(|e| append_error(&e))?;
            let mut producers = self.producers.borrow_mut();
            let mut txns = self.txns.borrow_mut();
            if header.is_control() {
                take_batch(
                    &mut producers,
                    &mut txns,
                    &header,
                    info.first_offset,
                    marker,
                );
            } else {
                txns.on_batch(&header, info.first_offset, None);
            }
            info.last_offset
        };
        if self.log.log().flush_policy() == FlushPolicy::Sync {
            self.log
                .wait_durable(last.plus(1))
                .await
                .map_err(|e| append_error(&e))?;
        }
        self.refresh_high_watermark();
        self.wake_fetchers();
        self.wait_replicated(last.plus(1), timeout).await?;
        Ok(last)
    }

    /// Client appends carry this leader's epoch in every batch (what followers' epoch
    /// caches and OffsetForLeaderEpoch read).
    fn client_append_options(&self, now_ms: i64) -> AppendOptions {
        AppendOptions {
            leader_epoch: self.leader_epoch().max(-1),
            ..AppendOptions::client(now_ms)
        }
    }

    /// Follower: appends the leader's batches as they are (their offsets kept), and
    /// remembers their producers' sequences, so idempotence survives a leader change.
    pub async fn append_replicated(
        &self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<LogAppendInfo, AppendError> {
        let _guard = self.lock.lock().await;
        let opts = AppendOptions {
            origin: ringmq_engine::AppendOrigin::Replication,
            leader_epoch: -1,
            now_ms,
        };
        let info = self.log.append_written(vec![records.clone()], opts).await?;
        let mut producers = self.producers.borrow_mut();
        let mut txns = self.txns.borrow_mut();
        for (_, h, bytes) in BatchIter::new(&records).map_while(Result::ok) {
            let marker = ringmq_engine::control::control_type(&h, bytes).unwrap_or(None);
            take_batch(&mut producers, &mut txns, &h, h.base_offset, marker);
        }
        Ok(info)
    }

    /// Follower: truncation to the leader's history; producer state is rebuilt from
    /// what is left.
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), ringmq_engine::LogOpError> {
        let _guard = self.lock.lock().await;
        let truncated = self.log.log_mut().truncate_to(offset)?;
        if truncated {
            self.producers.borrow_mut().clear();
            self.rebuild_producer_state();
        }
        Ok(())
    }

    /// Follower: the log starts over at `offset` (it is behind the leader's log start).
    pub async fn restart_at(&self, offset: Offset) -> Result<(), ringmq_engine::LogOpError> {
        let _guard = self.lock.lock().await;
        self.log.log_mut().truncate_fully_and_start_at(offset)?;
        self.producers.borrow_mut().clear();
        *self.txns.borrow_mut() = Default::default();
        Ok(())
    }

    /// Sequence checks of every producer batch in a request: `Some` if it is a duplicate.
    fn check_request(&self, records: &[u8]) -> Result<Option<BatchMeta>, PartitionError> {
        for h in &producer_headers(records) {
            if let SequenceCheck::Duplicate(m) = self.check_sequence(h)? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Records a request's producer batches as appended from `first`; returns the last
    /// offset the request will occupy.
    fn remember_request(&self, records: &[u8], first: Offset) -> Offset {
        let mut offset = first;
        let mut producers = self.producers.borrow_mut();
        for h in BatchIter::new(records)
            .map_while(Result::ok)
            .map(|(_, h, _)| h)
        {
            if h.has_producer_id() {
                remember(&mut producers, &h, offset);
            }
            offset = offset.plus(i64::from(h.last_offset_delta) + 1);
        }
        offset.plus(-1)
    }

    fn check_sequence(&self, h: &BatchHeader) -> Result<SequenceCheck, PartitionError> {
        if !h.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let producers = self.producers.borrow();
        let last_seq = |seq: i32, delta: i32| seq.wrapping_add(delta);
        let Some(entry) = producers.get(&h.producer_id) else {
            return match h.base_sequence {
                0 => Ok(SequenceCheck::Append),
                s => Err(PartitionError::new(
                    ResponseError::OutOfOrderSequenceNumber,
                    format!(
                        "producer {} has no state here; sequence {s} is not 0",
                        h.producer_id
                    ),
                )),
            };
        };
        if h.producer_epoch < entry.epoch {
            return Err(PartitionError::new(
                ResponseError::InvalidProducerEpoch,
                format!(
                    "producer epoch {} is older than {}",
                    h.producer_epoch, entry.epoch
                ),
            ));
        }
        if h.producer_epoch > entry.epoch {
            return match h.base_sequence {
                0 => Ok(SequenceCheck::Append),
                s => Err(PartitionError::new(
                    ResponseError::OutOfOrderSequenceNumber,
                    format!(
                        "new epoch {} must start at sequence 0, not {s}",
                        h.producer_epoch
                    ),
                )),
            };
        }
        let (first, last) = (
            h.base_sequence,
            last_seq(h.base_sequence, h.last_offset_delta),
        );
        if let Some(m) = entry
            .batches
            .iter()
            .find(|m| m.first_seq == first && m.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*m));
        }
        let expected = entry.batches.back().map_or(0, |m| {
            if m.last_seq == i32::MAX {
                0
            } else {
                m.last_seq + 1
            }
        });
        if first != expected {
            return Err(PartitionError::new(
                ResponseError::OutOfOrderSequenceNumber,
                format!(
                    "sequence {first} of producer {} (expected {expected})",
                    h.producer_id
                ),
            ));
        }
        Ok(SequenceCheck::Append)
    }

    fn duplicate_info(&self, m: BatchMeta) -> LogAppendInfo {
        let log = self.log.log();
        LogAppendInfo {
            first_offset: m.first_offset,
            last_offset: m.last_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: m.last_offset,
            log_append_time_ms: -1,
            log_start_offset: log.log_start_offset(),
            batch_count: 0,
            record_count: 0,
            valid_bytes: 0,
        }
    }

    /// A receiver fired at the next append (or deletion): for long-polling fetches.
    pub fn watch(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut fetchers = self.fetchers.borrow_mut();
        fetchers.retain(|s| !s.is_canceled());
        fetchers.push(tx);
        rx
    }

    pub fn wake_fetchers(&self) {
        for f in self.fetchers.borrow_mut().drain(..) {
            let _ = f.send(());
        }
    }
}

/// Headers of the producer batches in a produce request's records (best effort: the
/// engine validates the bytes and rejects what does not parse).
fn producer_headers(records: &[u8]) -> Vec<BatchHeader> {
    BatchIter::new(records)
        .map_while(Result::ok)
        .map(|(_, h, _)| h)
        .filter(|h| h.has_producer_id())
        .collect()
}

/// Takes a batch found in the log (or replicated) at `base` into the producer and
/// transaction state. A marker with a newer epoch moves its producer to that epoch.
fn take_batch(
    producers: &mut HashMap<i64, ProducerEntry>,
    txns: &mut crate::storage::txn_state::TxnState,
    h: &BatchHeader,
    base: Offset,
    marker: Option<ringmq_engine::control::ControlType>,
) {
    if !h.has_producer_id() {
        return;
    }
    if h.is_control() {
        let entry = producers.entry(h.producer_id).or_default();
        if h.producer_epoch > entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
    } else {
        remember(producers, h, base);
    }
    txns.on_batch(h, base, marker);
}

fn remember(producers: &mut HashMap<i64, ProducerEntry>, h: &BatchHeader, first_offset: Offset) {
    let entry = producers.entry(h.producer_id).or_default();
    if h.producer_epoch != entry.epoch {
        entry.epoch = h.producer_epoch;
        entry.batches.clear();
    }
    entry.batches.push_back(BatchMeta {
        first_seq: h.base_sequence,
        last_seq: h.base_sequence.wrapping_add(h.last_offset_delta),
        first_offset,
        last_offset: first_offset.plus(i64::from(h.last_offset_delta)),
        timestamp: h.max_timestamp,
    });
    while entry.batches.len() > PRODUCER_BATCHES_REMEMBERED {
        entry.batches.pop_front();
    }
}

/// A transactional write whose transaction does not include this partition (or ended
/// since it was verified): Kafka's INVALID_TXN_STATE and text (the produce handler
/// answers TRANSACTION_ABORTABLE from v11).
pub fn not_in_transaction() -> PartitionError {
    PartitionError::new(
        ResponseError::InvalidTxnState,
        "Partition was not added to the transaction",
    )
}

/// Errors one request's bytes cause (others in its group deserve another try alone).
fn request_specific(e: &AppendError) -> bool {
    matches!(
        e,
        AppendError::Corrupt(_) | AppendError::RecordTooLarge { .. } | AppendError::Empty
    )
}

/// Clears the writer flag even if the writer's future is dropped.
struct WriterGuard<'a>(&'a std::cell::Cell<bool>);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}
