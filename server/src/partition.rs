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
//! The check and the append happen under the partition's lock so two requests of one
//! producer cannot pass the check in the wrong order; the fdatasync of a synchronous-
//! flush append is awaited outside the lock so concurrent appends share it.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::lock::Mutex;
use kafka_protocol::ResponseError;
use ringmq_engine::batch::BatchIter;
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
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// How a produce to one partition failed, as a Kafka error.
#[derive(Debug, Clone)]
pub struct PartitionError {
    pub code: ResponseError,
    pub message: String,
}

impl PartitionError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        PartitionError {
            code,
            message: message.into(),
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

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub log: LogHandle,
    lock: Mutex<()>,
    fetchers: RefCell<Vec<oneshot::Sender<()>>>,
    producers: RefCell<HashMap<i64, ProducerEntry>>,
}

enum SequenceCheck {
    Append,
    Duplicate(BatchMeta),
}

impl Partition {
    pub fn new(topic: Arc<str>, index: i32, log: LogHandle) -> Self {
        Partition {
            topic,
            index,
            log,
            lock: Mutex::new(()),
            fetchers: RefCell::new(Vec::new()),
            producers: RefCell::new(HashMap::new()),
        }
    }

    /// Rebuilds producer sequence state from the log's batch headers.
    pub fn rebuild_producer_state(&self) {
        let mut producers = self.producers.borrow_mut();
        let log = self.log.log();
        let result = log.scan_headers(|h| {
            if h.has_producer_id() && !h.is_control() {
                remember(&mut producers, h, h.base_offset);
            }
        });
        if let Err(e) = result {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "producer state rebuild failed");
        }
    }

    /// The high watermark on one node: everything appended, or for a synchronous-flush
    /// log everything durable.
    pub fn refresh_high_watermark(&self) -> Offset {
        let mut log = self.log.log_mut();
        let hw = match log.flush_policy() {
            FlushPolicy::Sync => log.durable_offset(),
            FlushPolicy::Async => log.log_end_offset(),
        };
        log.update_high_watermark(hw)
    }

    /// Appends a produce request's records for this partition.
    pub async fn append(
        &self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<LogAppendInfo, PartitionError> {
        let guard = self.lock.lock().await;
        let headers = producer_headers(&records);
        for h in &headers {
            match self.check_sequence(h)? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(m) => return Ok(self.duplicate_info(m)),
            }
        }
        let info = self
            .log
            .append_written(vec![records], AppendOptions::client(now_ms))
            .await
            .map_err(|e| append_error(&e))?;
        let mut offset = info.first_offset;
        for h in &headers {
            remember(&mut self.producers.borrow_mut(), h, offset);
            offset = offset.plus(i64::from(h.last_offset_delta) + 1);
        }
        drop(guard);
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
    });
    while entry.batches.len() > PRODUCER_BATCHES_REMEMBERED {
        entry.batches.pop_front();
    }
}
