//! The bench's own Kafka client (`--client native`): the Produce and Fetch hot paths
//! written for load generation, so that on a machine shared with the broker the client
//! takes as little CPU as possible. Each connection is plain blocking TCP with pipelined
//! requests. Fetch and ApiVersions go through `kafka-protocol`; a Produce request is
//! written by hand (a short, fixed prefix) so its record batch can be built in place in
//! the request buffer with the engine's batch code, and its response is decoded by
//! `kafka-protocol` again.
//!
//! Producers build one uncompressed v2 batch per request (sticky partitioning: a batch
//! fills for one partition, then the next partition gets the next batch), bounded by
//! `batch.size` and `linger.ms` like the Java and librdkafka producers, with up to
//! `max.in.flight.requests.per.connection` requests outstanding per broker. A reader
//! thread per connection matches responses to requests in order and times every message
//! from when it was due. Consumers keep one Fetch in flight per leader and read each
//! record's value for the bench's timestamp header.
//!
//! Setup (metadata, watermarks, topic creation) stays on librdkafka: only the traffic
//! whose cost is being measured goes through this module.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, ProduceRequest, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use ringmq_engine::batch::{self, BatchBuilder, BatchError, BatchIter, Compression};

use super::workload::{
    ConsumeSpec, ConsumerJob, HEADER_BYTES, MAGIC, ProducerJob, WorkerStats, unix_ns,
};

/// Versions this client speaks. Magic v2 batches need Produce v3 and Fetch v4; Produce
/// v8 is the last before flexible encoding (the frame is written by hand, see
/// [`OpenBatch`]), and Fetch v12 the last to name topics (v13+ use topic ids).
const PRODUCE_VERSIONS: (i16, i16) = (3, 8);
const FETCH_VERSIONS: (i16, i16) = (4, 12);
/// Largest response frame accepted (a fetch is at most `fetch.max.bytes` plus framing).
const MAX_FRAME: usize = 256 << 20;
/// How long a connection may wait for a response before the run fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const CLIENT_ID: &str = "ringmq-bench";
/// Per-partition fetch size: the Java consumer's and librdkafka's default
/// (`max.partition.fetch.bytes`). Larger sizes let a consumer that fell behind for a
/// moment ask for tens of megabytes at once, and each such fetch took longer than the
/// lag it was catching up on (50 MB fetches took 250-360 ms here, e2e p99 300-500 ms);
/// at 1 MiB the same runs stayed at 13-56 ms.
const PARTITION_FETCH_BYTES: i32 = 1 << 20;

/// One Kafka connection: framing, correlation ids and version negotiation.
pub(crate) struct Wire {
    stream: crate::client_config::Transport,
    correlation: i32,
    buf: BytesMut,
    /// The receive buffer's allocation, between responses.
    rx: Vec<u8>,
    /// The last response's frame, reclaimed into `rx` once its slices are dropped.
    last: Option<Bytes>,
}

impl Wire {
    pub(crate) fn connect(addr: &str) -> anyhow::Result<Wire> {
        let tcp = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let mut wire = Wire {
            stream: crate::client_config::wrap(tcp, host)?,
            correlation: 0,
            buf: BytesMut::with_capacity(64 << 10),
            rx: Vec::new(),
            last: None,
        };
        if let Some(sasl) = crate::client_config::SaslClient::new() {
            wire.authenticate(sasl)
                .with_context(|| format!("authenticating to {addr}"))?;
        }
        Ok(wire)
    }

    /// SaslHandshake v1, then SaslAuthenticate rounds until the exchange is over.
    fn authenticate(&mut self, mut sasl: crate::client_config::SaslClient) -> anyhow::Result<()> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let hs = self.call(
            1,
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_string(sasl.mechanism().to_owned())),
        )?;
        anyhow::ensure!(
            hs.error_code == 0,
            "the broker does not take SASL {} (error {}; it offers {:?})",
            sasl.mechanism(),
            hs.error_code,
            hs.mechanisms.iter().map(|m| m.as_str()).collect::<Vec<_>>()
        );
        let mut token = sasl.first();
        loop {
            let r = self.call(
                1,
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
            )?;
            anyhow::ensure!(
                r.error_code == 0,
                "{}",
                r.error_message
                    .as_deref()
                    .unwrap_or("SASL authentication failed")
            );
            match sasl.next(&r.auth_bytes)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    /// Encodes and writes `req`; returns its correlation id.
    fn send<R: Request>(&mut self, version: i16, req: &R) -> anyhow::Result<i32> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        self.buf.clear();
        self.buf.put_i32(0);
        header.encode(&mut self.buf, R::header_version(version))?;
        req.encode(&mut self.buf, version)?;
        let len = (self.buf.len() - 4) as i32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream
            .write_all(&self.buf)
            .context("writing a request")?;
        Ok(self.correlation)
    }

    /// Sends `req` and waits for its response.
    pub(crate) fn call<R: Request>(
        &mut self,
        version: i16,
        req: &R,
    ) -> anyhow::Result<R::Response> {
        let correlation = self.send(version, req)?;
        self.stream.flush()?;
        if let Some(last) = self.last.take() {
            reclaim(last, &mut self.rx);
        }
        let frame = read_frame(&mut self.stream, &mut self.rx)?;
        self.last = Some(frame.clone());
        let (got, response) = decode::<R>(frame, version)?;
        anyhow::ensure!(
            got == correlation,
            "response correlation id {got}, expected {correlation}"
        );
        Ok(response)
    }

    /// The version of `key` to use: the broker's newest within `ours`.
    fn negotiate(&mut self, key: ApiKey, ours: (i16, i16)) -> anyhow::Result<i16> {
        let r = self.call(0, &ApiVersionsRequest::default())?;
        anyhow::ensure!(r.error_code == 0, "ApiVersions error {}", r.error_code);
        let theirs = r
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .with_context(|| format!("the broker does not serve {key:?}"))?;
        let v = theirs.max_version.min(ours.1);
        anyhow::ensure!(
            v >= ours.0 && v >= theirs.min_version,
            "the broker serves {key:?} v{}..v{}, this client v{}..v{}",
            theirs.min_version,
            theirs.max_version,
            ours.0,
            ours.1
        );
        Ok(v)
    }
}

/// Reads one size-prefixed frame into `buf`'s allocation and hands it out as `Bytes`.
/// `read_to_end` receives straight into spare capacity (nothing is zeroed first), and
/// [`reclaim`] takes the allocation back for the next frame, so a megabyte fetch does
/// not fault in fresh pages every time.
fn read_frame(stream: &mut impl Read, buf: &mut Vec<u8>) -> anyhow::Result<Bytes> {
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .context("reading a response (connection closed or timed out)")?;
    let size = i32::from_be_bytes(size);
    anyhow::ensure!(
        (4..=MAX_FRAME as i32).contains(&size),
        "response frame of {size} bytes"
    );
    let size = size as usize;
    buf.clear();
    buf.reserve(size);
    let got = stream
        .by_ref()
        .take(size as u64)
        .read_to_end(buf)
        .context("reading a response body")?;
    anyhow::ensure!(got == size, "connection closed after {got} of {size} bytes");
    Ok(Bytes::from(std::mem::take(buf)))
}

/// Gives `frame`'s allocation back to `buf` if nothing else holds a slice of it.
fn reclaim(frame: Bytes, buf: &mut Vec<u8>) {
    if let Ok(m) = frame.try_into_mut() {
        *buf = m.into();
    }
}

fn decode<R: Request>(mut frame: Bytes, version: i16) -> anyhow::Result<(i32, R::Response)> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))?;
    let body = R::Response::decode(&mut frame, version)?;
    Ok((header.correlation_id, body))
}

/// The producer settings the native client understands (librdkafka's names).
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerSettings {
    pub acks: i16,
    pub linger: Duration,
    pub batch_bytes: usize,
    pub max_in_flight: usize,
}

impl ProducerSettings {
    pub fn from_config(config: &[(String, String)]) -> anyhow::Result<ProducerSettings> {
        let mut s = ProducerSettings {
            acks: -1,
            linger: Duration::from_millis(5),
            batch_bytes: 1 << 20,
            max_in_flight: 5,
        };
        let number = |k: &str, v: &str| -> anyhow::Result<u64> {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{k}={v}: not a non-negative integer"))
        };
        for (k, v) in config {
            match k.as_str() {
                "acks" | "request.required.acks" => {
                    s.acks = match v.as_str() {
                        "all" | "-1" => -1,
                        "0" => 0,
                        "1" => 1,
                        _ => anyhow::bail!("acks={v}: expected 0, 1 or all"),
                    }
                }
                "linger.ms" | "queue.buffering.max.ms" => {
                    s.linger = Duration::from_millis(number(k, v)?);
                }
                "batch.size" => {
                    s.batch_bytes = number(k, v)?.clamp(1, i32::MAX as u64) as usize;
                }
                "max.in.flight.requests.per.connection" | "max.in.flight" => {
                    s.max_in_flight = number(k, v)?.clamp(1, 1_000_000) as usize;
                }
                "compression.type" | "compression.codec" if v == "none" => {}
                "compression.type" | "compression.codec" => anyhow::bail!(
                    "the native client sends uncompressed batches; use --client rdkafka \
                     for compression.type={v}"
                ),
                _ => anyhow::bail!(
                    "the native client does not take producer property {k} \
                     (use --client rdkafka)"
                ),
            }
        }
        Ok(s)
    }
}

/// A produce request on its way: when each of its messages was due.
struct InFlight {
    correlation: i32,
    due_ns: Vec<u64>,
    bytes: u64,
}

/// One broker connection of a producer; its reader thread takes the acks.
struct ProducerConn {
    wire: Wire,
    version: i16,
    in_flight: Arc<AtomicUsize>,
    /// Requests awaiting their response, oldest first; None with acks=0 (Kafka sends
    /// no response to those). The reader pops one per response, so it only ever blocks
    /// on the socket.
    acks: Option<Arc<AckQueue>>,
    reader: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

/// The batch being filled, already inside the Produce request that will carry it: the
/// frame is written once, in place, and each record's value is copied exactly once.
///
/// Layout (Produce v3-v8, one topic, one partition): frame size, request header v1,
/// transactional id, acks, timeout, the topic, the partition index, the records' length,
/// then the v2 batch header and the records. Sizes, counts, timestamps, the correlation
/// id and the CRC are patched in by [`OpenBatch::finish`].
struct OpenBatch {
    conn: usize,
    frame: BytesMut,
    /// Where the record batch starts in `frame`.
    batch_at: usize,
    due_ns: Vec<u64>,
    first_ts_ms: i64,
    last_ts_ms: i64,
    value_bytes: u64,
}

/// The correlation id's place in a frame with a v1 request header.
const CORRELATION_AT: usize = 8;

impl OpenBatch {
    /// Starts a batch for `partition` of `topic` in `frame` (emptied, kept for its capacity).
    fn new(
        conn: usize,
        mut frame: BytesMut,
        version: i16,
        acks: i16,
        topic: &str,
        partition: i32,
    ) -> OpenBatch {
        frame.clear();
        frame.put_i32(0); // frame size
        frame.put_i16(ApiKey::Produce as i16);
        frame.put_i16(version);
        frame.put_i32(0); // correlation id
        frame.put_i16(CLIENT_ID.len() as i16);
        frame.put_slice(CLIENT_ID.as_bytes());
        frame.put_i16(-1); // transactional id: null
        frame.put_i16(acks);
        frame.put_i32(30_000); // timeout ms
        frame.put_i32(1); // topics
        frame.put_i16(topic.len() as i16);
        frame.put_slice(topic.as_bytes());
        frame.put_i32(1); // partitions
        frame.put_i32(partition);
        frame.put_i32(0); // records length
        let batch_at = frame.len();
        // No compression, create time, no producer id.
        BatchBuilder::default().put_header(&mut frame);
        OpenBatch {
            conn,
            frame,
            batch_at,
            due_ns: Vec::new(),
            first_ts_ms: 0,
            last_ts_ms: 0,
            value_bytes: 0,
        }
    }

    /// Appends one record (no key, no headers) with `value`.
    fn push(&mut self, value: &[u8], due_ns: u64, ts_ms: i64) {
        if self.due_ns.is_empty() {
            self.first_ts_ms = ts_ms;
        }
        let offset_delta = self.due_ns.len() as i32;
        let ts_delta = ts_ms - self.first_ts_ms;
        batch::put_record_prefix(&mut self.frame, offset_delta, ts_delta, value.len());
        self.frame.extend_from_slice(value);
        batch::put_varlong(&mut self.frame, 0); // no headers
        self.last_ts_ms = ts_ms;
        self.due_ns.push(due_ns);
        self.value_bytes += value.len() as u64;
    }

    /// The record batch so far.
    fn batch_bytes(&self) -> usize {
        self.frame.len() - self.batch_at
    }

    /// Whether one more `record_bytes` record would take the batch past `limit`.
    fn full(&self, record_bytes: usize, limit: usize) -> bool {
        !self.due_ns.is_empty() && self.batch_bytes() + record_bytes > limit
    }

    /// Patches in sizes, counts, timestamps, the CRC and `correlation`: the frame is then
    /// ready to write.
    fn finish(&mut self, correlation: i32) {
        let b = self.batch_at;
        let count = self.due_ns.len() as i32;
        let records_len = self.batch_bytes() as i32;
        let size = (self.frame.len() - 4) as i32;
        let f = &mut self.frame;
        batch::seal(
            &mut f[b..],
            count - 1,
            self.first_ts_ms,
            self.last_ts_ms,
            count,
        );
        f[b - 4..b].copy_from_slice(&records_len.to_be_bytes());
        f[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&correlation.to_be_bytes());
        f[..4].copy_from_slice(&size.to_be_bytes());
    }
}

/// Distinct leader addresses, and for each partition (in `partitions` order) the index
/// of its leader's address.
fn by_leader<'a>(leaders: impl Iterator<Item = &'a str>) -> (Vec<String>, Vec<usize>) {
    let mut addrs: Vec<String> = Vec::new();
    let mut index = Vec::new();
    for a in leaders {
        let i = match addrs.iter().position(|x| x == a) {
            Some(i) => i,
            None => {
                addrs.push(a.to_owned());
                addrs.len() - 1
            }
        };
        index.push(i);
    }
    (addrs, index)
}

/// Runs one producer; `partitions` are (partition, leader address).
pub(super) fn run_producer(job: ProducerJob, partitions: &[(i32, String)]) -> anyhow::Result<()> {
    let settings = ProducerSettings::from_config(&job.spec.config)?;
    anyhow::ensure!(!partitions.is_empty(), "the topic has no partitions");
    let (addrs, conn_of) = by_leader(partitions.iter().map(|(_, a)| a.as_str()));
    let warmup_ns = job.warmup.as_nanos() as u64;
    let me = std::thread::current();
    let mut conns = Vec::new();
    for addr in &addrs {
        let mut wire = Wire::connect(addr)?;
        let version = wire.negotiate(ApiKey::Produce, PRODUCE_VERSIONS)?;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (acks, reader) = if settings.acks == 0 {
            (None, None)
        } else {
            let queue = Arc::new(AckQueue::default());
            let rx = Arc::clone(&queue);
            let stream = wire.stream.try_clone()?;
            let reader = AckReader {
                version,
                in_flight: Arc::clone(&in_flight),
                producer: me.clone(),
                max_in_flight: settings.max_in_flight,
                stats: Arc::clone(&job.stats),
                start: job.start,
                warmup_ns,
            };
            let reader = std::thread::spawn(move || {
                let r = take_acks(stream, rx, &reader);
                // The producer may be waiting for room: let it see the failure.
                reader.in_flight.store(0, Ordering::Relaxed);
                reader.producer.unpark();
                r
            });
            (Some(queue), Some(reader))
        };
        conns.push(ProducerConn {
            wire,
            version,
            in_flight,
            acks,
            reader,
        });
    }
    anyhow::ensure!(job.topic.len() <= i16::MAX as usize, "topic name too long");
    let size = job.spec.size.max(HEADER_BYTES);
    let mut payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    payload[..8].copy_from_slice(MAGIC);
    // Varint overheads of a record of this size, generously.
    let record_bytes = size + 24;
    let interval_ns = job.rate.map(|r| 1e9 / r.max(1e-3));
    let linger_ns = settings.linger.as_nanos() as u64;
    let unix_start = unix_ns().saturating_sub(job.start.elapsed().as_nanos() as u64);
    let mut next_partition = 0usize;
    let mut open: Option<OpenBatch> = None;
    // The frame buffer goes back and forth between the open batch and here.
    let mut spare = BytesMut::with_capacity(settings.batch_bytes.min(16 << 20) + 1024);
    let mut seq = 0u64;
    loop {
        let stopping = job.stop.load(Ordering::Relaxed) || job.messages.is_some_and(|m| seq >= m);
        let now = job.start.elapsed().as_nanos() as u64;
        // Take every message that is due, up to a full batch.
        while !stopping && job.messages.is_none_or(|m| seq < m) {
            let due = interval_ns.map_or(now, |i| (seq as f64 * i) as u64);
            if due > now
                || open
                    .as_ref()
                    .is_some_and(|b| b.full(record_bytes, settings.batch_bytes))
            {
                break;
            }
            let b = open.get_or_insert_with(|| {
                let i = next_partition % partitions.len();
                next_partition += 1;
                let c = conn_of[i];
                OpenBatch::new(
                    c,
                    std::mem::take(&mut spare),
                    conns[c].version,
                    settings.acks,
                    &job.topic,
                    partitions[i].0,
                )
            });
            let ts = unix_start + due;
            payload[8..16].copy_from_slice(&ts.to_be_bytes());
            b.push(&payload, due, (ts / 1_000_000) as i64);
            seq += 1;
        }
        if let Some(b) = &open {
            let ready = stopping
                || b.full(record_bytes, settings.batch_bytes)
                || now >= b.due_ns[0] + linger_ns;
            let conn = &conns[b.conn];
            if conn.reader.as_ref().is_some_and(|r| r.is_finished()) {
                break; // its error is reported below
            }
            if ready && conn.in_flight.load(Ordering::Relaxed) < settings.max_in_flight {
                if let Some(b) = open.take() {
                    spare = send_batch(&mut conns[b.conn], b, &job, warmup_ns)?;
                }
                continue;
            }
        } else if stopping {
            break;
        }
        // Sleep until the open batch must go: its linger ends, or the messages due by
        // then would fill it. Messages that fall due meanwhile are appended at the next
        // wake-up, not one by one (each is timed from when it was due). With no batch
        // open, sleep until the next message is due. A reader that frees an in-flight
        // slot this thread waits for unparks it.
        let mut wake = u64::MAX;
        if let (Some(i), false) = (interval_ns, stopping) {
            let room = open.as_ref().map_or(0, |b| {
                settings.batch_bytes.saturating_sub(b.batch_bytes()) / record_bytes
            });
            wake = wake.min(((seq + room as u64) as f64 * i) as u64);
        }
        if let Some(b) = &open {
            wake = wake.min(b.due_ns[0] + linger_ns);
        }
        let gap = Duration::from_nanos(wake.saturating_sub(now).min(1_000_000));
        std::thread::park_timeout(gap.max(Duration::from_micros(200)));
    }
    // Wait for the outstanding acks, then shut the read side so each reader, blocked
    // on a socket with nothing more to come, sees the end.
    let mut result = Ok(());
    for c in &mut conns {
        if let Some(q) = &c.acks {
            q.closed.store(true, Ordering::Release);
        }
        while c.in_flight.load(Ordering::Acquire) > 0
            && c.reader.as_ref().is_some_and(|r| !r.is_finished())
        {
            std::thread::park_timeout(Duration::from_millis(1));
        }
        let _ = c.wire.stream.shutdown(std::net::Shutdown::Read);
        if let Some(r) = c.reader.take() {
            let r = r
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a produce reader panicked")));
            if result.is_ok() {
                result = r;
            }
        }
    }
    job.stats
        .finished_ns
        .store(job.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    result
}

/// Sends one batch as a Produce request; returns its frame buffer for reuse.
fn send_batch(
    conn: &mut ProducerConn,
    mut b: OpenBatch,
    job: &ProducerJob,
    warmup_ns: u64,
) -> anyhow::Result<BytesMut> {
    conn.wire.correlation = conn.wire.correlation.wrapping_add(1);
    let correlation = conn.wire.correlation;
    b.finish(correlation);
    let due_ns = std::mem::take(&mut b.due_ns);
    if let Some(queue) = &conn.acks {
        // The reader must know of the request before its response can arrive.
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        queue
            .pending
            .lock()
            .map_err(|_| anyhow::anyhow!("the connection's reader panicked"))?
            .push_back(InFlight {
                correlation,
                due_ns,
                bytes: b.value_bytes,
            });
        conn.wire
            .stream
            .write_all(&b.frame)
            .context("writing a produce request")?;
    } else {
        conn.wire
            .stream
            .write_all(&b.frame)
            .context("writing a produce request")?;
        // acks=0: written is all a producer learns.
        let now = job.start.elapsed().as_nanos() as u64;
        delivered(&job.stats, &due_ns, b.value_bytes, now, warmup_ns);
    }
    Ok(b.frame)
}

/// Counts messages acknowledged (or, with acks=0, written) at `now_ns` and times those
/// due after the warm-up from when they were due.
fn delivered(stats: &WorkerStats, due_ns: &[u64], bytes: u64, now_ns: u64, warmup_ns: u64) {
    stats
        .messages
        .fetch_add(due_ns.len() as u64, Ordering::Relaxed);
    stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    stats.record_all(
        due_ns
            .iter()
            .filter(|d| **d >= warmup_ns)
            .map(|d| now_ns.saturating_sub(*d) / 1000),
    );
}

/// What a producer connection's reader needs.
struct AckReader {
    version: i16,
    in_flight: Arc<AtomicUsize>,
    /// Woken when an in-flight slot frees while all were taken.
    producer: std::thread::Thread,
    max_in_flight: usize,
    stats: Arc<WorkerStats>,
    start: std::time::Instant,
    warmup_ns: u64,
}

/// The requests of a producer connection that await a response.
#[derive(Default)]
struct AckQueue {
    pending: Mutex<VecDeque<InFlight>>,
    /// Set by the producer when it sends no more; the reader then ends once every
    /// request is answered (the producer shuts the socket's read side to wake it).
    closed: AtomicBool,
}

/// A producer connection's reader: matches responses to requests and times messages.
fn take_acks(stream: TcpStream, requests: Arc<AckQueue>, a: &AckReader) -> anyhow::Result<()> {
    // Produce responses are small: one receive usually holds the size and the body.
    let mut stream = std::io::BufReader::with_capacity(64 << 10, stream);
    let in_flight = &a.in_flight;
    let mut warned = false;
    let mut rx = Vec::new();
    loop {
        let done =
            || requests.closed.load(Ordering::Acquire) && in_flight.load(Ordering::Acquire) == 0;
        if done() {
            return Ok(());
        }
        let frame = match read_frame(&mut stream, &mut rx) {
            Ok(f) => f,
            Err(_) if done() => return Ok(()),
            Err(e) => return Err(e),
        };
        let req = requests
            .pending
            .lock()
            .map_err(|_| anyhow::anyhow!("the producer panicked"))?
            .pop_front()
            .context("a produce response with no request outstanding")?;
        let (correlation, resp) = decode::<ProduceRequest>(frame.clone(), a.version)?;
        anyhow::ensure!(
            correlation == req.correlation,
            "produce response correlation id {correlation}, expected {}",
            req.correlation
        );
        let now = a.start.elapsed().as_nanos() as u64;
        let error = resp
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.error_code != 0)
            .map(|p| {
                let message = p.error_message.as_deref().unwrap_or_default().to_owned();
                (p.error_code, message)
            });
        drop(resp);
        reclaim(frame, &mut rx);
        let n = req.due_ns.len() as u64;
        match error {
            Some((code, message)) => {
                a.stats.errors.fetch_add(n, Ordering::Relaxed);
                if !warned {
                    warned = true;
                    super::workload::warn(&format!(
                        "produce failed with Kafka error code {code} ({n} messages) {message}"
                    ));
                }
            }
            None => delivered(&a.stats, &req.due_ns, req.bytes, now, a.warmup_ns),
        }
        if in_flight.fetch_sub(1, Ordering::AcqRel) >= a.max_in_flight {
            a.producer.unpark();
        }
    }
}

/// Refuses what the native consumer does not do.
pub(super) fn check_consumer(spec: &ConsumeSpec) -> anyhow::Result<()> {
    anyhow::ensure!(
        spec.group.is_none(),
        "the native client assigns partitions; use --client rdkafka with --group"
    );
    anyhow::ensure!(
        spec.config.is_empty(),
        "the native client takes no consumer properties (use --client rdkafka)"
    );
    Ok(())
}

/// Runs one consumer over its assignment; `leaders` gives each assigned partition's
/// leader address.
pub(super) fn run_consumer(job: ConsumerJob, leaders: &[(i32, String)]) -> anyhow::Result<()> {
    check_consumer(&job.spec)?;
    let leader_of = |p: i32| {
        leaders
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, a)| a.as_str())
            .with_context(|| format!("partition {p} has no leader"))
    };
    let mut lead = Vec::new();
    for (p, _) in &job.assignment {
        lead.push(leader_of(*p)?);
    }
    let (addrs, conn_of) = by_leader(lead.into_iter());
    std::thread::scope(|s| {
        let threads: Vec<_> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let mine: Vec<(i32, i64)> = job
                    .assignment
                    .iter()
                    .zip(&conn_of)
                    .filter(|(_, c)| **c == i)
                    .map(|(a, _)| *a)
                    .collect();
                let job = &job;
                s.spawn(move || fetch_loop(job, addr, mine))
            })
            .collect();
        threads.into_iter().try_for_each(|t| {
            t.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a fetch thread panicked")))
        })
    })
}

/// Fetches `partitions` (partition, next offset) from one leader until told to stop.
fn fetch_loop(
    job: &ConsumerJob,
    addr: &str,
    mut partitions: Vec<(i32, i64)>,
) -> anyhow::Result<()> {
    let mut wire = Wire::connect(addr)?;
    let version = wire.negotiate(ApiKey::Fetch, FETCH_VERSIONS)?;
    // Producers start once every partition is held: here, once its leader answered.
    job.assigned.fetch_add(partitions.len(), Ordering::Relaxed);
    let topic = TopicName(StrBytes::from_string(job.topic.clone()));
    let mut latencies = Vec::new();
    while !job.stop.load(Ordering::Relaxed) {
        let req = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|(p, o)| {
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_current_leader_epoch(-1)
                                    .with_fetch_offset(*o)
                                    .with_last_fetched_epoch(-1)
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(PARTITION_FETCH_BYTES)
                            })
                            .collect(),
                    ),
            ]);
        let resp = wire.call(version, &req)?;
        anyhow::ensure!(resp.error_code == 0, "Fetch error code {}", resp.error_code);
        let now = unix_ns();
        for data in resp.responses.iter().flat_map(|t| &t.partitions) {
            let Some(slot) = partitions
                .iter_mut()
                .find(|(p, _)| *p == data.partition_index)
            else {
                continue;
            };
            if data.error_code != 0 {
                job.stats.errors.fetch_add(1, Ordering::Relaxed);
                anyhow::bail!(
                    "fetching partition {} at offset {}: Kafka error code {}",
                    slot.0,
                    slot.1,
                    data.error_code
                );
            }
            let Some(records) = &data.records else {
                continue;
            };
            let (messages, bytes) = read_batches(
                records,
                &mut slot.1,
                now,
                job.warmup_unix_ns,
                &mut latencies,
            )?;
            job.stats.messages.fetch_add(messages, Ordering::Relaxed);
            job.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        job.stats.record_all(latencies.drain(..));
    }
    Ok(())
}

/// Reads the whole batches in `records` from `*next` on, advancing it; a batch cut off at
/// the end (the fetch size limit) is read next time. Returns (messages, value bytes) and
/// pushes the age in µs of each bench message sent at or after `since_unix_ns`.
fn read_batches(
    records: &[u8],
    next: &mut i64,
    now_unix_ns: u64,
    since_unix_ns: u64,
    latencies: &mut Vec<u64>,
) -> anyhow::Result<(u64, u64)> {
    let (mut messages, mut bytes) = (0u64, 0u64);
    for item in BatchIter::new(records) {
        let (_, header, batch) = match item {
            Ok(b) => b,
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => anyhow::bail!("fetched a malformed batch at offset {next}: {e}"),
        };
        if header.next_offset().0 <= *next {
            continue;
        }
        anyhow::ensure!(
            header.compression() == Compression::None,
            "fetched a compressed batch; use --client rdkafka to read it"
        );
        if !header.is_control() {
            for r in batch::records(batch)? {
                let r = r?;
                if header.base_offset.0 + i64::from(r.offset_delta) < *next {
                    continue;
                }
                let value = r.value.unwrap_or_default();
                messages += 1;
                bytes += value.len() as u64;
                if value.len() >= HEADER_BYTES && &value[..8] == MAGIC {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&value[8..16]);
                    let sent = u64::from_be_bytes(ts);
                    if sent >= since_unix_ns {
                        latencies.push(now_unix_ns.saturating_sub(sent) / 1000);
                    }
                }
            }
        }
        *next = header.next_offset().0;
    }
    Ok((messages, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf as _;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn producer_settings_take_librdkafka_names_and_refuse_the_rest() {
        let s = ProducerSettings::from_config(&kv(&[
            ("acks", "1"),
            ("linger.ms", "2"),
            ("batch.size", "65536"),
            ("compression.type", "none"),
            ("max.in.flight.requests.per.connection", "8"),
        ]))
        .unwrap();
        assert_eq!(
            s,
            ProducerSettings {
                acks: 1,
                linger: Duration::from_millis(2),
                batch_bytes: 65536,
                max_in_flight: 8
            }
        );
        let refused = |pairs: &[(&str, &str)]| {
            ProducerSettings::from_config(&kv(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&[("compression.type", "lz4")]).contains("--client rdkafka"));
        assert!(refused(&[("enable.idempotence", "true")]).contains("enable.idempotence"));
        assert!(refused(&[("acks", "2")]).contains("expected 0, 1 or all"));
        assert!(refused(&[("linger.ms", "-1")]).contains("linger.ms"));
    }

    /// A Produce v`version` frame as the producer writes it, decoded by kafka-protocol.
    fn produce_frame(values: &[&[u8]], version: i16) -> (RequestHeader, ProduceRequest) {
        let mut b = OpenBatch::new(0, BytesMut::new(), version, -1, "bench-topic", 3);
        for (i, v) in values.iter().enumerate() {
            b.push(v, i as u64, 1_700_000_000_000 + i as i64);
        }
        b.finish(77);
        let mut frame = Bytes::copy_from_slice(&b.frame);
        let size = frame.get_i32();
        assert_eq!(size as usize, frame.len());
        let header = RequestHeader::decode(&mut frame, 1).unwrap();
        let req = ProduceRequest::decode(&mut frame, version).unwrap();
        assert!(frame.is_empty(), "trailing bytes");
        (header, req)
    }

    /// The batch of a produce frame, given `base_offset` as the broker would.
    fn batch_of(values: &[&[u8]], base_offset: i64) -> Bytes {
        let (_, req) = produce_frame(values, 8);
        let records = req.topic_data[0].partition_data[0].records.clone().unwrap();
        let mut batch = BytesMut::from(&records[..]);
        batch::set_base_offset(&mut batch, ringmq_engine::offset::Offset(base_offset));
        batch.freeze()
    }

    #[test]
    fn produce_frames_decode_as_kafka_requests() {
        for version in PRODUCE_VERSIONS.0..=PRODUCE_VERSIONS.1 {
            let (header, req) = produce_frame(&[b"a", b"bc"], version);
            assert_eq!(header.request_api_key, ApiKey::Produce as i16);
            assert_eq!(header.request_api_version, version);
            assert_eq!(header.correlation_id, 77);
            assert_eq!(header.client_id.as_deref(), Some(CLIENT_ID));
            assert_eq!((req.acks, req.timeout_ms), (-1, 30_000));
            assert!(req.transactional_id.is_none());
            assert_eq!(req.topic_data.len(), 1);
            assert_eq!(&*req.topic_data[0].name.0, "bench-topic");
            assert_eq!(req.topic_data[0].partition_data[0].index, 3);
        }
    }

    #[test]
    fn built_batches_are_valid_and_read_back() {
        let mut timed = vec![0u8; 100];
        timed[..8].copy_from_slice(MAGIC);
        timed[8..16].copy_from_slice(&1_000_000u64.to_be_bytes());
        let plain = b"no bench header here".to_vec();
        let large = vec![7u8; 5000];
        let batch = batch_of(&[&timed, &plain, &large], 40);
        // The engine accepts it as a client batch: length, magic and CRC are right.
        let header = batch::validate_batch(&batch).unwrap();
        batch::validate_client_batch(&header).unwrap();
        assert_eq!(header.records_count, 3);
        assert_eq!(header.next_offset().0, 43);
        let values: Vec<Vec<u8>> = batch::records(&batch)
            .unwrap()
            .map(|r| r.unwrap().value.unwrap().to_vec())
            .collect();
        assert_eq!(values, vec![timed.clone(), plain.clone(), large.clone()]);

        // Read from offset 41: the first record is skipped, the timed one is not counted.
        let mut next = 41;
        let mut lat = Vec::new();
        let (m, b) = read_batches(&batch, &mut next, 3_000_000, 0, &mut lat).unwrap();
        assert_eq!((m, b, next), (2, (plain.len() + large.len()) as u64, 43));
        assert!(lat.is_empty());

        // From 40, two batches back to back and a third cut off: the timed record's age
        // is 2 ms; the partial batch is left for the next fetch.
        let second = batch_of(&[&timed], 43);
        let third = batch_of(&[&large], 44);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&batch);
        buf.extend_from_slice(&second);
        buf.extend_from_slice(&third[..third.len() - 10]);
        let mut next = 40;
        let (m, _) = read_batches(&buf, &mut next, 3_000_000, 0, &mut lat).unwrap();
        assert_eq!((m, next), (4, 44));
        assert_eq!(lat, vec![2000, 2000]);
        // Messages sent before the warm-up ended are counted, not timed.
        let mut next = 43;
        lat.clear();
        read_batches(&second, &mut next, 3_000_000, 1_000_001, &mut lat).unwrap();
        assert!(lat.is_empty());
    }

    #[test]
    fn a_corrupt_batch_is_an_error_not_a_crash() {
        let mut bad = BytesMut::from(&batch_of(&[b"x"], 0)[..]);
        bad[16] = 9; // magic
        let mut next = 0;
        let err = read_batches(&bad, &mut next, 0, 0, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }

    #[test]
    fn batches_fill_up_to_the_limit() {
        let mut b = OpenBatch::new(0, BytesMut::new(), 8, -1, "t", 0);
        // An empty batch always takes one record, however large.
        assert!(!b.full(10_000, 100));
        let v = vec![0u8; 1000];
        let mut n = 0;
        while !b.full(v.len() + 24, 16_384) {
            b.push(&v, n, 0);
            n += 1;
        }
        // 1009-byte records: 16 fit beside the header, a 17th would not.
        assert_eq!(n, 16);
        assert!(b.batch_bytes() <= 16_384);
    }

    #[test]
    fn partitions_group_by_leader() {
        let (addrs, of) = by_leader(["a:1", "b:2", "a:1", "c:3"].into_iter());
        assert_eq!(addrs, vec!["a:1", "b:2", "c:3"]);
        assert_eq!(of, vec![0, 1, 0, 2]);
    }
}
