//! Fetch (key 1): reads each partition on its owner shard, bounded by the high watermark,
//! `partition_max_bytes` and the response's `max_bytes` (the first batch always fits,
//! KIP-74), and long-polls: with fewer than `min_bytes` ready it waits until an append to
//! one of the partitions or `max_wait_ms`.
//!
//! Zero-copy: records are not read into memory. The response is encoded by
//! kafka-protocol with a unique 16-byte marker as each partition's records; the encoded
//! frame is then cut at the markers, each records length prefix is rewritten for the real
//! length (int32 before v12, unsigned varint of length+1 from v12), and the partition's
//! segment file range takes the marker's place. The connection sends those ranges with
//! splice.
//!
//! Fetch sessions (KIP-227): a request with epoch 0 opens a session holding its partitions
//! and fetch offsets; later requests (epoch 1, 2, ...) carry only changed partitions
//! and `forgotten_topics_data`, and the response lists only partitions with records or a
//! changed high watermark / log start offset / error. Sessions live in the shard that
//! serves the connection (no locks); a client that lands on another shard gets
//! FETCH_SESSION_ID_NOT_FOUND and opens a new session, as KIP-227 allows. At most
//! [`SESSIONS_PER_SHARD_MAX`] per shard; the least recently used is evicted. Epoch -1
//! means no session (librdkafka's full fetches).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::{join_all, select, select_all};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringmq_engine::{FileRange, Offset, ReadError};

use super::Request;
use super::leader_hint::{LeaderHints, node_endpoints};
use crate::metrics::Metrics;
use crate::protocol::{self, CloseConnection, Piece, Response};
use crate::runtime::shard::ShardCtx;

/// When a refused replica fetch was last reported (an ERROR every
/// [`crate::security::acl::REPORT_EVERY`]).
static REPLICA_FETCH_REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Fetch sessions kept per shard (Kafka's max.incremental.fetch.session.cache.slots).
pub const SESSIONS_PER_SHARD_MAX: usize = 1000;

/// A partition in a fetch session, with what the client last saw of it.
#[derive(Clone)]
struct SessionPartition {
    target: Target,
    sent_high_watermark: i64,
    sent_log_start_offset: i64,
}

struct FetchSession {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: Vec<SessionPartition>,
    last_used: Instant,
}

thread_local! {
    static SESSIONS: RefCell<HashMap<i32, FetchSession>> = RefCell::new(HashMap::new());
    static NEXT_SESSION: Cell<i32> = const { Cell::new(1) };
}

/// How a request relates to a fetch session.
enum SessionMode {
    /// Epoch -1: a full fetch without a session.
    None,
    /// A new session: every partition is answered and remembered.
    New(i32),
    /// An incremental fetch in an existing session.
    Incremental(i32),
}

/// Longest wait a fetch may ask for (Kafka clients use 500 ms by default).
pub const MAX_WAIT_MS_MAX: i32 = 30_000;

#[derive(Clone)]
struct Target {
    name: String,
    wire_name: TopicName,
    topic_id: uuid::Uuid,
    partition: i32,
    owner: Option<usize>,
    offset: i64,
    max_bytes: i32,
    /// The fetching follower's broker id, or -1 for a consumer.
    replica_id: i32,
    /// The leader epoch the fetcher knows (-1: unknown, not checked).
    leader_epoch: i32,
    /// read_committed (isolation level 1): up to the last stable offset only.
    read_committed: bool,
    /// The fetcher may not read this partition (READ on the topic for consumers,
    /// CLUSTER_ACTION for followers).
    denied: Option<ResponseError>,
}

#[derive(Debug)]
struct Fetched {
    error: ResponseError,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    range: Option<FileRange>,
    /// read_committed: the aborted transactions in the range read.
    aborted: Vec<crate::storage::txn_state::AbortedTxn>,
    /// A follower outside the ISR held back by the leader's replication throttle: how
    /// long until the rate allows more.
    held_back: Option<Duration>,
}

impl Fetched {
    fn error(code: ResponseError) -> Self {
        Fetched {
            error: code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            range: None,
            aborted: Vec::new(),
            held_back: None,
        }
    }
}

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: FetchRequest = protocol::decode_body(req.body.clone(), v)?;
    Metrics::add(&ctx.broker.metrics.fetch_requests, 1);
    let requested = targets(ctx, &body, v, &req.session);
    let (mode, targets) = match open_session(ctx, &body, requested) {
        Ok(x) => x,
        Err(code) => {
            let resp = FetchResponse::default()
                .with_error_code(code.code())
                .with_session_id(0);
            return protocol::single(ApiKey::Fetch, v, req.correlation_id(), &resp);
        }
    };
    let max_bytes = if body.max_bytes <= 0 {
        i32::MAX
    } else {
        body.max_bytes
    };
    let wait = Duration::from_millis(body.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    let deadline = std::time::Instant::now() + wait;
    let mut fetched = read_all(ctx, &targets, max_bytes).await;
    loop {
        let bytes: i64 = fetched
            .iter()
            .filter_map(|f| f.range.as_ref())
            .map(|r| i64::from(r.length))
            .sum();
        let has_error = fetched.iter().any(|f| f.error.code() != 0);
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if bytes >= i64::from(body.min_bytes.max(1))
            || has_error
            || left.is_zero()
            || targets.is_empty()
        {
            break;
        }
        // A partition held back by the replication throttle has data, but may not send
        // it before its wait: watch the others, and read again by then.
        let hold = fetched.iter().filter_map(|f| f.held_back).min();
        let watched: Vec<Target> = match hold {
            None => targets.clone(),
            Some(_) => targets
                .iter()
                .zip(&fetched)
                .filter(|(_, f)| f.held_back.is_none())
                .map(|(t, _)| t.clone())
                .collect(),
        };
        wait_for_data(ctx, &watched, hold.map_or(left, |h| h.min(left))).await;
        fetched = read_all(ctx, &targets, max_bytes).await;
    }
    let (session_id, targets, fetched) = session_filter(&mode, targets, fetched);
    encode(ctx, &req, v, session_id, &targets, fetched)
}
/// Applies KIP-227 to the request: the session mode and the partitions to fetch.
fn open_session(
    ctx: &ShardCtx,
    body: &FetchRequest,
    requested: Vec<Target>,
) -> Result<(SessionMode, Vec<Target>), ResponseError> {
    let (id, epoch) = (body.session_id, body.session_epoch);
    SESSIONS.with(|sessions| {
        let mut sessions = sessions.borrow_mut();
        match epoch {
            -1 => {
                sessions.remove(&id);
                Ok((SessionMode::None, requested))
            }
            0 => {
                sessions.remove(&id);
                if sessions.len() >= SESSIONS_PER_SHARD_MAX
                    && let Some(oldest) = sessions
                        .iter()
                        .min_by_key(|(_, s)| s.last_used)
                        .map(|(k, _)| *k)
                {
                    sessions.remove(&oldest);
                }
                let new_id = NEXT_SESSION.with(|n| {
                    let id = n.get();
                    n.set(if id >= i32::MAX / 64 { 1 } else { id + 1 });
                    // Unique across shards: the shard number in the low bits.
                    id * 64 + (ctx.id % 64) as i32
                });
                let partitions = requested.iter().map(|t| fresh(t.clone())).collect();
                sessions.insert(
                    new_id,
                    FetchSession {
                        next_epoch: 1,
                        partitions,
                        last_used: Instant::now(),
                    },
                );
                Metrics::add(&ctx.broker.metrics.fetch_sessions_opened, 1);
                Ok((SessionMode::New(new_id), requested))
            }
            e => {
                let s = sessions
                    .get_mut(&id)
                    .ok_or(ResponseError::FetchSessionIdNotFound)?;
                if e != s.next_epoch {
                    return Err(ResponseError::InvalidFetchSessionEpoch);
                }
                s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
                s.last_used = Instant::now();
                for t in requested {
                    match s.partitions.iter_mut().find(|p| same(&p.target, &t)) {
                        Some(p) => p.target = t,
                        None => s.partitions.push(fresh(t)),
                    }
                }
                let image = ctx.broker.image();
                for f in &body.forgotten_topics_data {
                    let name = match image.topic_by_id(f.topic_id) {
                        Some(m) if !f.topic_id.is_nil() => m.name.clone(),
                        _ => f.topic.0.as_str().to_owned(),
                    };
                    s.partitions.retain(|p| {
                        !(p.target.name == name && f.partitions.contains(&p.target.partition))
                    });
                }
                let targets = s.partitions.iter().map(|p| p.target.clone()).collect();
                Metrics::add(&ctx.broker.metrics.fetch_incremental_requests, 1);
                Ok((SessionMode::Incremental(id), targets))
            }
        }
    })
}

fn fresh(target: Target) -> SessionPartition {
    SessionPartition {
        target,
        sent_high_watermark: -2,
        sent_log_start_offset: -2,
    }
}

fn same(a: &Target, b: &Target) -> bool {
    a.name == b.name && a.partition == b.partition
}

/// For session fetches: remembers what is sent and, for incremental ones, keeps only the
/// partitions that changed. Returns the session id to answer with.
fn session_filter(
    mode: &SessionMode,
    targets: Vec<Target>,
    fetched: Vec<Fetched>,
) -> (i32, Vec<Target>, Vec<Fetched>) {
    let (id, incremental) = match mode {
        SessionMode::None => return (0, targets, fetched),
        SessionMode::New(id) => (*id, false),
        SessionMode::Incremental(id) => (*id, true),
    };
    SESSIONS.with(|sessions| {
        let mut sessions = sessions.borrow_mut();
        let Some(s) = sessions.get_mut(&id) else {
            return (id, targets, fetched);
        };
        let mut keep = (Vec::new(), Vec::new());
        for (t, f) in targets.into_iter().zip(fetched) {
            let changed = match s.partitions.iter_mut().find(|p| same(&p.target, &t)) {
                Some(p) => {
                    let changed = f.range.is_some()
                        || f.error.code() != 0
                        || p.sent_high_watermark != f.high_watermark
                        || p.sent_log_start_offset != f.log_start_offset;
                    p.sent_high_watermark = f.high_watermark;
                    p.sent_log_start_offset = f.log_start_offset;
                    changed
                }
                None => true,
            };
            if !incremental || changed {
                keep.0.push(t);
                keep.1.push(f);
            }
        }
        (id, keep.0, keep.1)
    })
}

fn targets(
    ctx: &ShardCtx,
    body: &FetchRequest,
    v: i16,
    session: &crate::security::Session,
) -> Vec<Target> {
    use crate::security::acl::{op, resource};
    let image = ctx.broker.image();
    // The follower's id moved into ReplicaState in v15.
    let replica_id = if v >= 15 {
        body.replica_state.replica_id.0
    } else {
        body.replica_id.0
    };
    let mut out = Vec::new();
    for t in &body.topics {
        let meta = if v >= 13 {
            image.topic_by_id(t.topic_id)
        } else {
            image.topic(t.topic.0.as_str())
        };
        let denied = if replica_id >= 0 {
            let refused = !ctx.broker.authorize_cluster(session, op::CLUSTER_ACTION);
            if refused && crate::security::acl::due_to_report(&REPLICA_FETCH_REFUSED) {
                tracing::error!(
                    replica_id, principal = %session.principal(), peer = %session.peer,
                    "refusing replica fetches: the follower's principal lacks CLUSTER_ACTION on the cluster, so replication to it has stopped (grant it, or make it a super user)"
                );
            }
            refused.then_some(ResponseError::ClusterAuthorizationFailed)
        } else {
            let name = meta.map_or(t.topic.0.as_str(), |m| m.name.as_str());
            (!ctx
                .broker
                .authorize(session, op::READ, resource::TOPIC, name))
            .then_some(ResponseError::TopicAuthorizationFailed)
        };
        for p in &t.partitions {
            let owner = meta.and_then(|m| m.owner_shard(p.partition, ctx.shard_count()));
            out.push(Target {
                name: meta.map(|m| m.name.clone()).unwrap_or_default(),
                wire_name: t.topic.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
                owner,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                replica_id: replica_id.max(-1),
                leader_epoch: p.current_leader_epoch,
                read_committed: replica_id < 0 && body.isolation_level == 1,
                denied,
            });
        }
    }
    out
}

/// Reads every target on its owner shard, in parallel, each up to the smaller of its
/// `partition_max_bytes` and the response's `max_bytes`; then bounds the whole response
/// by `max_bytes` in request order (KIP-74): a partition that no longer fits is read
/// again with what is left, whole batches only, and only the first non-empty partition
/// may exceed the limit, by its first batch.
async fn read_all(ctx: &Rc<ShardCtx>, targets: &[Target], max_bytes: i32) -> Vec<Fetched> {
    let max_bytes = max_bytes.max(0);
    let reads = targets.iter().map(|t| {
        let limit = t.max_bytes.min(max_bytes);
        read_on_owner(ctx, t, limit, true)
    });
    let mut fetched = join_all(reads).await;
    let mut budget = i64::from(max_bytes);
    let mut first = true;
    for (t, f) in targets.iter().zip(fetched.iter_mut()) {
        let Some(r) = &f.range else { continue };
        // Past the first non-empty partition no batch may exceed its partition limit
        // either (the parallel read let every partition keep one).
        let len = i64::from(r.length);
        if len > budget || (!first && len > i64::from(t.max_bytes)) {
            let left = i32::try_from(budget.max(0)).unwrap_or(0).min(t.max_bytes);
            let again = read_on_owner(ctx, t, left, first).await;
            f.range = again.range.filter(|r| r.length > 0);
        }
        if let Some(r) = &f.range {
            budget -= i64::from(r.length);
            first = false;
        }
    }
    fetched
}

async fn read_on_owner(ctx: &Rc<ShardCtx>, t: &Target, limit: i32, min_one: bool) -> Fetched {
    if let Some(code) = t.denied {
        return Fetched::error(code);
    }
    let Some(owner) = t.owner else {
        return Fetched::error(ResponseError::UnknownTopicOrPartition);
    };
    let t = t.clone();
    ctx.on_shard(
        owner,
        move |c| async move { read_one(&c, &t, limit, min_one) },
    )
    .await
    .unwrap_or_else(|_| Fetched::error(ResponseError::UnknownServerError))
}

/// Reads one partition on its owner shard: consumers up to the high watermark, followers
/// (whose fetch offset is their log end, recorded here) up to the log end.
fn read_one(ctx: &Rc<ShardCtx>, t: &Target, limit: i32, min_one: bool) -> Fetched {
    let Some(part) = ctx
        .partition(&t.name, t.partition)
        .filter(|p| p.is_leader())
    else {
        return Fetched::error(ResponseError::NotLeaderOrFollower);
    };
    let epoch = part.leader_epoch();
    if t.leader_epoch >= 0 && t.leader_epoch < epoch {
        return Fetched::error(ResponseError::FencedLeaderEpoch);
    }
    if t.leader_epoch > epoch {
        return Fetched::error(ResponseError::UnknownLeaderEpoch);
    }
    if t.replica_id >= 0 {
        part.follower_fetched(ctx, t.replica_id, t.offset);
    }
    let throttled = t.replica_id >= 0 && ctx.broker.quotas.leader_throttled(&part);
    if throttled && !part.replica.borrow().isr.contains(&t.replica_id) {
        let wait = ctx.broker.quotas.leader.wait();
        if !wait.is_zero() {
            Metrics::add(&ctx.broker.quotas.leader.held_back, 1);
            let log = part.log.log();
            return Fetched {
                error: ResponseError::Unknown(0),
                high_watermark: log.high_watermark().0,
                last_stable_offset: -1,
                log_start_offset: log.log_start_offset().0,
                range: None,
                aborted: Vec::new(),
                held_back: Some(wait),
            };
        }
    }
    let lso = part.last_stable_offset();
    let log = part.log.log();
    let hw = log.high_watermark();
    let upper = if t.replica_id >= 0 {
        log.log_end_offset()
    } else if t.read_committed {
        lso
    } else {
        hw
    };
    let mut f = Fetched {
        error: ResponseError::Unknown(0),
        high_watermark: hw.0,
        last_stable_offset: lso.0,
        log_start_offset: log.log_start_offset().0,
        range: None,
        aborted: Vec::new(),
        held_back: None,
    };
    let max = u32::try_from(limit.max(0)).unwrap_or(0);
    match log.read(Offset(t.offset), max, upper, min_one) {
        Ok(info) => {
            if throttled && let Some(r) = &info.range {
                ctx.broker.quotas.leader.record(u64::from(r.length));
            }
            f.range = info.range;
            if t.read_committed && f.range.is_some() {
                f.aborted = part.aborted_between(Offset(t.offset), upper);
            }
        }
        Err(ReadError::OffsetOutOfRange { .. }) => f.error = ResponseError::OffsetOutOfRange,
        Err(e) => {
            tracing::warn!(topic = %t.name, partition = t.partition, error = %e, "fetch read failed");
            f.error = ResponseError::KafkaStorageError;
        }
    }
    f
}

/// Waits until any target gets data past its fetch offset, or `left` passes.
async fn wait_for_data(ctx: &Rc<ShardCtx>, targets: &[Target], left: Duration) {
    let watches = targets.iter().filter_map(|t| {
        let owner = t.owner?;
        let t = t.clone();
        Some(Box::pin(async move {
            let rx = ctx
                .on_shard(owner, move |c| async move {
                    let part = c.partition(&t.name, t.partition)?;
                    let rx = part.watch();
                    // Data that arrived since our read: do not wait for the next append.
                    let visible = if t.replica_id >= 0 {
                        part.log.log().log_end_offset()
                    } else if t.read_committed {
                        part.last_stable_offset()
                    } else {
                        part.log.log().high_watermark()
                    };
                    if visible.0 > t.offset {
                        part.wake_fetchers();
                    }
                    Some(rx)
                })
                .await;
            if let Ok(Some(rx)) = rx {
                let _ = rx.await;
            }
        }))
    });
    let watches: Vec<_> = watches.collect();
    if watches.is_empty() {
        compio::time::sleep(left).await;
        return;
    }
    let timeout = Box::pin(compio::time::sleep(left));
    let _ = select(select_all(watches), timeout).await;
}

fn encode(
    ctx: &ShardCtx,
    req: &Request,
    v: i16,
    session_id: i32,
    targets: &[Target],
    fetched: Vec<Fetched>,
) -> Result<Response, CloseConnection> {
    let marker_base = uuid::Uuid::new_v4().as_u128();
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut ranges = Vec::new();
    let image = ctx.broker.image();
    let mut hints = LeaderHints::new(req.session.listener_name());
    for (t, f) in targets.iter().zip(fetched) {
        let hint = hints.hint(&image, &t.name, t.partition, f.error);
        let mut pd = PartitionData::default()
            .with_partition_index(t.partition)
            .with_error_code(f.error.code())
            .with_high_watermark(f.high_watermark)
            .with_last_stable_offset(f.last_stable_offset)
            .with_aborted_transactions(Some(
                f.aborted
                    .iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_first_offset(a.first_offset.0)
                    })
                    .collect(),
            ));
        // log_start_offset exists from v5.
        if v >= 5 {
            pd = pd.with_log_start_offset(f.log_start_offset);
        }
        // KIP-951: the current leader, from v12.
        if v >= 12
            && let Some((leader, epoch)) = hint
        {
            pd = pd.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch),
            );
        }
        match f.range {
            Some(range) => {
                let marker = (marker_base.wrapping_add(ranges.len() as u128)).to_be_bytes();
                pd = pd.with_records(Some(Bytes::copy_from_slice(&marker)));
                ranges.push((marker, range));
            }
            None => pd = pd.with_records(Some(Bytes::new())),
        }
        match topics.last_mut() {
            Some(last) if last.topic == t.wire_name && last.topic_id == t.topic_id => {
                last.partitions.push(pd)
            }
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(
                        t.wire_name.0.as_str().to_owned(),
                    )))
                    .with_topic_id(t.topic_id)
                    .with_partitions(vec![pd]),
            ),
        }
    }
    // session_id exists from v7.
    let mut resp = FetchResponse::default()
        .with_session_id(if v >= 7 { session_id } else { 0 })
        .with_responses(topics);
    // The hinted leaders' endpoints, from v16.
    if v >= 16 {
        resp.node_endpoints = node_endpoints!(hints, NodeEndpoint);
    }
    let frame = protocol::encode(ApiKey::Fetch, v, req.correlation_id(), &resp)?;
    splice_ranges(frame, ranges, v >= 12)
}

/// Replaces each marker (and its length prefix) in `frame` with the real length prefix
/// and the file range; fixes the frame length.
fn splice_ranges(
    frame: Bytes,
    ranges: Vec<([u8; 16], FileRange)>,
    flexible: bool,
) -> Result<Response, CloseConnection> {
    let mut pieces = Vec::new();
    let mut cursor = 4usize; // after the frame length, rewritten below
    let mut total: u64 = 0;
    let mut head = BytesMut::new();
    for (marker, range) in ranges {
        let at = find(&frame[cursor..], &marker)
            .map(|i| cursor + i)
            .ok_or_else(|| CloseConnection::Malformed("fetch response marker not found".into()))?;
        let prefix_len = if flexible { 1 } else { 4 };
        let expected: &[u8] = if flexible {
            &[17]
        } else {
            &16i32.to_be_bytes()
        };
        if at < cursor + prefix_len || &frame[at - prefix_len..at] != expected {
            return Err(CloseConnection::Malformed(
                "unexpected records length encoding".into(),
            ));
        }
        head.extend_from_slice(&frame[cursor..at - prefix_len]);
        if flexible {
            put_uvarint(&mut head, range.length + 1);
        } else {
            head.put_i32(range.length as i32);
        }
        total += head.len() as u64 + u64::from(range.length);
        pieces.push(Piece::Bytes(head.split().freeze()));
        pieces.push(Piece::File(range));
        cursor = at + 16;
    }
    head.extend_from_slice(&frame[cursor..]);
    total += head.len() as u64;
    pieces.push(Piece::Bytes(head.split().freeze()));
    let len = i32::try_from(total)
        .map_err(|_| CloseConnection::Malformed("fetch response too large".into()))?;
    pieces.insert(0, Piece::Bytes(Bytes::copy_from_slice(&len.to_be_bytes())));
    Ok(Response { pieces })
}

fn put_uvarint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
