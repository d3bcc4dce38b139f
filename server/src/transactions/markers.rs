//! Ending a transaction (Kafka's `TransactionMarkerChannelManager`): once the decision
//! is recorded (PrepareCommit / PrepareAbort), a marker goes to every partition the
//! transaction wrote to — appended directly where this broker leads the partition, sent
//! as WriteTxnMarkers to the leader elsewhere — retried until each is written (or its
//! topic is gone), then the end (CompleteCommit / CompleteAbort) is recorded. A
//! coordinator that loses its partition stops; the next one finishes the job from the
//! log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use ringmq_engine::control::ControlType;

use crate::coordinator::transactions::{self, TxnMetadata, TxnStatus};
use crate::replication::peer::{Conn, call};
use crate::runtime::shard::ShardCtx;
use crate::storage::now_ms;

/// Pause between rounds of markers that could not be written yet.
const RETRY: Duration = Duration::from_millis(100);
/// How long a marker waits for the partition's in-sync replicas.
pub const MARKER_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// Writes the markers of `id`'s decided transaction and records its end. The id is busy
/// (pending) throughout; it is released at the end, whatever happened.
pub async fn complete(ctx: &Rc<ShardCtx>, id: &str) {
    let result = complete_inner(ctx, id).await;
    if let Some(e) = ctx.txns.borrow_mut().get_mut(id) {
        e.pending = false;
    }
    match result {
        Ok(status) => tracing::debug!(%id, status = status.name(), "transaction ended"),
        Err(e) => tracing::debug!(%id, error = ?e, "transaction end left to the next coordinator"),
    }
}

async fn complete_inner(ctx: &Rc<ShardCtx>, id: &str) -> Result<TxnStatus, ResponseError> {
    let partition = transactions::partition_for(id);
    let (meta, coordinator_epoch) = {
        let txns = ctx.txns.borrow();
        let meta = txns
            .get(id)
            .map(|e| e.meta.clone())
            .ok_or(ResponseError::NotCoordinator)?;
        let epoch = txns
            .coordinator_epoch(partition)
            .ok_or(ResponseError::NotCoordinator)?;
        (meta, epoch)
    };
    let (kind, done) = match meta.status {
        TxnStatus::PrepareCommit => (ControlType::Commit, TxnStatus::CompleteCommit),
        TxnStatus::PrepareAbort => (ControlType::Abort, TxnStatus::CompleteAbort),
        _ => return Ok(meta.status),
    };
    let mut left = meta.partitions.clone();
    let mut peers: HashMap<i32, Conn> = HashMap::new();
    while !left.is_empty() {
        if ctx.txns.borrow().coordinator_epoch(partition) != Some(coordinator_epoch) {
            return Err(ResponseError::NotCoordinator);
        }
        let image = ctx.broker.image();
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, p) in std::mem::take(&mut left) {
            // A deleted topic (or partition) needs no marker.
            let Some(state) = image.topic(&topic).and_then(|t| t.state(p)) else {
                continue;
            };
            by_leader.entry(state.leader).or_default().push((topic, p));
        }
        for (leader, parts) in by_leader {
            let marker = Marker {
                producer_id: meta.producer_id,
                producer_epoch: meta.producer_epoch,
                kind,
                coordinator_epoch,
            };
            let failed = if leader == ctx.broker.config.node_id {
                write_here(ctx, marker, &parts).await
            } else if leader == crate::metadata::NO_LEADER {
                parts.clone()
            } else {
                send(ctx, &mut peers, leader, marker, &parts).await
            };
            left.extend(failed);
        }
        if !left.is_empty() {
            compio::time::sleep(RETRY).await;
        }
    }
    let end = TxnMetadata {
        status: done,
        partitions: BTreeSet::new(),
        last_update_ms: now_ms(),
        ..meta
    };
    crate::transactions::write_state(ctx, id, end).await?;
    let m = &ctx.broker.metrics;
    crate::metrics::Metrics::add(
        if kind == ControlType::Commit {
            &m.transactions_committed
        } else {
            &m.transactions_aborted
        },
        1,
    );
    Ok(done)
}

/// One transaction's marker, as every partition gets it.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub kind: ControlType,
    pub coordinator_epoch: i32,
}

/// Appends `marker` to `topic`-`partition` on the shard that owns it (this broker leads
/// it); in `__consumer_offsets` the transaction's offsets become committed (or are
/// dropped) with it.
pub async fn apply(
    ctx: &Rc<ShardCtx>,
    topic: &str,
    partition: i32,
    marker: Marker,
) -> Result<(), ResponseError> {
    let name = topic.to_owned();
    ctx.with_partition_async(topic, partition, move |c, part| async move {
        part.append_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.kind,
            marker.coordinator_epoch,
            MARKER_TIMEOUT,
        )
        .await
        .map_err(|e| e.code)?;
        if name == crate::metadata::OFFSETS_TOPIC {
            let commit = marker.kind == ControlType::Commit;
            c.offsets
                .borrow_mut()
                .end_transaction(marker.producer_id, partition, commit);
        }
        Ok(())
    })
    .await
}

/// Whether a marker refused with `code` is done with (anything but a retriable error:
/// an epoch the partition already moved past, a partition deleted meanwhile).
fn settled(code: ResponseError) -> bool {
    !matches!(
        code,
        ResponseError::NotLeaderOrFollower
            | ResponseError::NotEnoughReplicas
            | ResponseError::NotEnoughReplicasAfterAppend
            | ResponseError::RequestTimedOut
            | ResponseError::KafkaStorageError
            | ResponseError::UnknownServerError
            | ResponseError::CoordinatorLoadInProgress
    )
}

/// Writes the markers of partitions this broker leads; returns those to retry.
async fn write_here(
    ctx: &Rc<ShardCtx>,
    marker: Marker,
    parts: &[(String, i32)],
) -> Vec<(String, i32)> {
    let writes = parts
        .iter()
        .map(|(t, p)| async move { (t.clone(), *p, apply(ctx, t, *p, marker).await) });
    futures_util::future::join_all(writes)
        .await
        .into_iter()
        .filter_map(|(t, p, r)| match r {
            Err(code) if !settled(code) => Some((t, p)),
            Err(code) => {
                tracing::debug!(topic = %t, partition = p, ?code, "marker not written");
                None
            }
            Ok(()) => None,
        })
        .collect()
}

/// Sends the markers of partitions `leader` leads; returns those to retry.
async fn send(
    ctx: &Rc<ShardCtx>,
    peers: &mut HashMap<i32, Conn>,
    leader: i32,
    marker: Marker,
    parts: &[(String, i32)],
) -> Vec<(String, i32)> {
    let address = ctx.broker.image().broker_address(leader);
    let Some(address) = address else {
        return parts.to_vec();
    };
    let conn = match peers.entry(leader) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            match Conn::connect(&address, "ringmq-txn-markers", &ctx.broker.inter_broker).await {
                Ok(c) => e.insert(c),
                Err(err) => {
                    tracing::debug!(leader, %address, error = %err, "cannot reach a partition leader for markers");
                    return parts.to_vec();
                }
            }
        }
    };
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        topics.entry(t).or_default().push(*p);
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id))
            .with_producer_epoch(marker.producer_epoch)
            .with_transaction_result(marker.kind == ControlType::Commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            ),
    ]);
    let resp: Result<WriteTxnMarkersResponse, _> = call(
        conn,
        ApiKey::WriteTxnMarkers,
        WRITE_TXN_MARKERS_VERSION,
        &req,
        MARKER_TIMEOUT + Duration::from_secs(1),
    )
    .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(leader, error = %e, "WriteTxnMarkers failed; reconnecting");
            peers.remove(&leader);
            return parts.to_vec();
        }
    };
    let mut retry = Vec::new();
    for m in resp.markers {
        for t in m.topics {
            for p in t.partitions {
                let code = ResponseError::try_from_code(p.error_code);
                if let Some(code) = code.filter(|c| !settled(*c)) {
                    tracing::debug!(leader, topic = %t.name.0.as_str(), partition = p.partition_index, ?code, "marker to retry");
                    retry.push((t.name.0.as_str().to_owned(), p.partition_index));
                }
            }
        }
    }
    retry
}
