//! Kafka record batches (message format v2, magic 2): validation, stamping, iteration.
//!
//! The engine never decodes records on the append or fetch path: a batch is validated by
//! its header and CRC32C, stamped in place (base offset, partition leader epoch and, for
//! `LogAppendTime` topics, the timestamp plus a new CRC) and stored as-is. Records are only
//! decoded by the cleaner (compaction) and by timestamp lookups.
//!
//! Byte layout of a batch (big-endian), as in Kafka's `DefaultRecordBatch`:
//! ```text
//!  0  baseOffset            i64   \
//!  8  batchLength           i32    | not covered by the CRC
//! 12  partitionLeaderEpoch  i32    |
//! 16  magic                 i8    /
//! 17  crc                   u32   CRC32C of bytes 21..end
//! 21  attributes            i16   bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control
//! 23  lastOffsetDelta       i32
//! 27  baseTimestamp         i64
//! 35  maxTimestamp          i64
//! 43  producerId            i64
//! 51  producerEpoch         i16
//! 53  baseSequence          i32
//! 57  recordsCount          i32
//! 61  records...
//! ```
//! `batchLength` counts the bytes after itself, so a batch occupies `12 + batchLength` bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::offset::Offset;

/// Bytes before `batchLength`'s payload starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 batch header, up to and including `recordsCount`.
pub const BATCH_HEADER_SIZE: usize = 61;
/// The only message format this engine stores.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;
const CRC_COVERED_FROM: usize = ATTRIBUTES_AT;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub const TRANSACTIONAL_BIT: i16 = 0x10;
pub const CONTROL_BIT: i16 = 0x20;

const _: () = assert!(RECORDS_COUNT_AT + 4 == BATCH_HEADER_SIZE);
const _: () = assert!(CRC_AT + 4 == CRC_COVERED_FROM);

/// Why bytes are not a valid v2 record batch. Maps to Kafka's CORRUPT_MESSAGE
/// (or INVALID_RECORD for [`BatchError::InvalidRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {available} bytes available, {needed} needed")]
    Truncated { available: usize, needed: usize },
    #[error("record batch length {0} is smaller than the v2 header")]
    LengthTooSmall(i32),
    #[error("unsupported message format magic {0} (only v2 is stored)")]
    UnsupportedMagic(i8),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid record batch: {0}")]
    InvalidRecord(&'static str),
}

/// Compression codec from the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Timestamp type of a batch (attributes bit 3) and of a topic (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

/// The parsed header of one batch. Cheap to copy; borrows nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks only that the header is present, the
    /// length is plausible and the magic is 2; the CRC is checked by [`validate_batch`].
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Truncated {
                available: buf.len(),
                needed: LOG_OVERHEAD + 5,
            });
        }
        let batch_length = be_i32(buf, LENGTH_AT);
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if batch_length < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32 {
            return Err(BatchError::LengthTooSmall(batch_length));
        }
        if buf.len() < BATCH_HEADER_SIZE {
            return Err(BatchError::Truncated {
                available: buf.len(),
                needed: BATCH_HEADER_SIZE,
            });
        }
        Ok(BatchHeader {
            base_offset: Offset(be_i64(buf, BASE_OFFSET_AT)),
            batch_length,
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Bytes the whole batch occupies (`12 + batchLength`).
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta))
    }

    /// Offset after the batch (`last_offset + 1`).
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    pub fn compression(&self) -> Compression {
        match self.attributes & COMPRESSION_MASK {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// True when a producer id is set (idempotent or transactional producer).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// CRC32C over the CRC-covered part of a complete batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_COVERED_FROM..])
}

/// Validates one complete batch at the start of `buf` (header, length, magic, CRC) and
/// returns its header. `buf` may hold more bytes after the batch.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let size = header.total_size();
    if buf.len() < size {
        return Err(BatchError::Truncated {
            available: buf.len(),
            needed: size,
        });
    }
    let computed = compute_crc(&buf[..size]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::InvalidRecord("negative lastOffsetDelta"));
    }
    if header.records_count < 0 {
        return Err(BatchError::InvalidRecord("negative records count"));
    }
    Ok(header)
}

/// Producer-side checks Kafka's `LogValidator` applies to batches from clients, on top of
/// [`validate_batch`]: a non-empty batch whose offset range matches its record count.
pub fn validate_client_batch(header: &BatchHeader) -> Result<(), BatchError> {
    if header.records_count == 0 {
        return Err(BatchError::InvalidRecord("record batch has no records"));
    }
    if i64::from(header.last_offset_delta) + 1 != i64::from(header.records_count) {
        return Err(BatchError::InvalidRecord(
            "inconsistent batch offset range and record count",
        ));
    }
    Ok(())
}

/// Writes the base offset of the batch at the start of `batch` (not CRC-covered).
pub fn set_base_offset(batch: &mut [u8], base: Offset) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base.0.to_be_bytes());
}

/// Writes the partition leader epoch (not CRC-covered).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch `LogAppendTime` with `now_ms` as its max timestamp and rewrites the CRC,
/// as Kafka's broker does for topics with `message.timestamp.type=LogAppendTime`.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Stamps a copy of a batch's header without touching its records: `header` is the
/// batch's first [`BATCH_HEADER_SIZE`] bytes, `records` the rest. Sets the base offset,
/// the partition leader epoch (when >= 0) and, with `log_append_time`, the timestamp type,
/// max timestamp and a CRC recomputed over header and records. The append path writes
/// the stamped header and the original record bytes as two iovecs: no copy of the data.
pub fn stamp_header(
    header: &mut [u8],
    records: &[u8],
    base: Offset,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) {
    debug_assert_eq!(header.len(), BATCH_HEADER_SIZE);
    set_base_offset(header, base);
    if leader_epoch >= 0 {
        set_partition_leader_epoch(header, leader_epoch);
    }
    if let Some(now_ms) = log_append_time {
        let attributes = be_i16(header, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
        header[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        header[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[CRC_COVERED_FROM..]), records);
        header[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Iterates the batch headers of a buffer holding whole batches back to back, as stored
/// in a segment. Stops with an error at the first malformed or truncated batch.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter { buf, position: 0 }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    /// `(position in the buffer, header, the batch's bytes)`.
    type Item = Result<(usize, BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.position..];
        if rest.is_empty() {
            return None;
        }
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.position = self.buf.len();
                return Some(Err(e));
            }
        };
        let size = header.total_size();
        if rest.len() < size {
            self.position = self.buf.len();
            return Some(Err(BatchError::Truncated {
                available: rest.len(),
                needed: size,
            }));
        }
        let position = self.position;
        self.position += size;
        Some(Ok((position, header, &rest[..size])))
    }
}

// ---- records (decoded only by the cleaner and timestamp lookups) ----

/// One record inside an uncompressed v2 batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's complete encoding, including its length prefix.
    pub encoded: &'a [u8],
}

fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or(BatchError::InvalidRecord("truncated varint"))?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(BatchError::InvalidRecord("varint too long"))
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, BatchError> {
    i32::try_from(read_varlong(buf, pos)?).map_err(|_| BatchError::InvalidRecord("varint overflow"))
}

fn read_nullable<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, BatchError> {
    let len = read_varint(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = *pos + len as usize;
    let bytes = buf
        .get(*pos..end)
        .ok_or(BatchError::InvalidRecord("field overruns record"))?;
    *pos = end;
    Ok(Some(bytes))
}

/// Appends a zigzag varint (Kafka's record encoding).
pub fn put_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// `(offset, timestamp)` of every record of a batch, compressed or not (compressed
/// records are decoded with kafka-protocol's codecs: gzip, xerial snappy, Kafka's LZ4
/// frame, zstd). A LogAppendTime batch's records all carry its max timestamp. Used by
/// the timestamp lookups, which must be exact per record (as Kafka 3.8+).
pub fn record_timestamps(h: &BatchHeader, batch: &[u8]) -> Result<Vec<(Offset, i64)>, BatchError> {
    let log_append = h.timestamp_type() == TimestampType::LogAppendTime;
    // Deltas come off the wire: add them as Java's longs do (wrapping), never panic.
    let stamp = |offset: i64, ts: i64| {
        (
            Offset(offset),
            if log_append { h.max_timestamp } else { ts },
        )
    };
    if h.compression() == Compression::None {
        return records(batch)?
            .map(|r| {
                r.map(|r| {
                    stamp(
                        h.base_offset.0.wrapping_add(i64::from(r.offset_delta)),
                        h.base_timestamp.wrapping_add(r.timestamp_delta),
                    )
                })
            })
            .collect();
    }
    let mut buf = Bytes::copy_from_slice(&batch[..h.total_size().min(batch.len())]);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
        .map_err(|_| BatchError::InvalidRecord("compressed records do not decode"))?;
    Ok(set
        .records
        .iter()
        .map(|r| stamp(r.offset, r.timestamp))
        .collect())
}

/// Iterates the records of an uncompressed batch (`batch` is the whole batch).
pub fn records(batch: &[u8]) -> Result<RecordIter<'_>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != Compression::None {
        return Err(BatchError::InvalidRecord("records of a compressed batch"));
    }
    let end = header.total_size().min(batch.len());
    Ok(RecordIter {
        buf: &batch[BATCH_HEADER_SIZE..end],
        pos: 0,
    })
}

/// Iterates encoded records laid end to end (a batch's payload, decompressed).
pub fn records_in(encoded: &[u8]) -> RecordIter<'_> {
    RecordIter {
        buf: encoded,
        pos: 0,
    }
}

pub struct RecordIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let result = self.parse_one();
        if result.is_err() {
            self.pos = self.buf.len();
        }
        Some(result)
    }
}

impl<'a> RecordIter<'a> {
    fn parse_one(&mut self) -> Result<Record<'a>, BatchError> {
        let start = self.pos;
        let len = read_varint(self.buf, &mut self.pos)?;
        if len < 0 {
            return Err(BatchError::InvalidRecord("negative record length"));
        }
        let end = self.pos + len as usize;
        let body = self
            .buf
            .get(..end)
            .ok_or(BatchError::InvalidRecord("record overruns batch"))?;
        let mut p = self.pos + 1; // attributes (unused in v2)
        let timestamp_delta = read_varlong(body, &mut p)?;
        let offset_delta = read_varint(body, &mut p)?;
        let key = read_nullable(body, &mut p)?;
        let value = read_nullable(body, &mut p)?;
        self.pos = end;
        Ok(Record {
            timestamp_delta,
            offset_delta,
            key,
            value,
            encoded: &self.buf[start..end],
        })
    }
}

/// One record for [`BatchBuilder`].
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

/// Builds uncompressed v2 batches: used by the broker for its own internal records
/// (`__consumer_offsets`), by the cleaner to rewrite batches, and by tests and benches.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    pub base_offset: Offset,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub attributes: i16,
    pub partition_leader_epoch: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            base_offset: Offset(0),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            partition_leader_epoch: -1,
        }
    }
}

impl BatchBuilder {
    /// Encodes `records` (offset deltas 0..n, timestamps relative to the first).
    pub fn build(&self, records: &[NewRecord]) -> Bytes {
        let base_ts = records.first().map_or(0, |r| r.timestamp_ms);
        let mut body = BytesMut::new();
        for (i, r) in records.iter().enumerate() {
            encode_record(&mut body, i as i32, r.timestamp_ms - base_ts, r);
        }
        let max_ts = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(-1);
        let last_delta = (records.len() as i32 - 1).max(0);
        self.assemble(last_delta, base_ts, max_ts, records.len() as i32, &body)
    }

    /// Wraps already-encoded records into a batch with a fresh CRC.
    pub fn assemble(
        &self,
        last_offset_delta: i32,
        base_timestamp: i64,
        max_timestamp: i64,
        records_count: i32,
        encoded_records: &[u8],
    ) -> Bytes {
        let mut b = BytesMut::with_capacity(BATCH_HEADER_SIZE + encoded_records.len());
        self.put_header(&mut b);
        b.extend_from_slice(encoded_records);
        seal(
            &mut b,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            records_count,
        );
        b.freeze()
    }

    /// Appends this builder's batch header with the length, offset delta, timestamps,
    /// count and CRC left zero: encoded records follow it in `out`, then [`seal`] fills
    /// them in. Lets a batch be built in place inside a larger buffer (a Produce request).
    pub fn put_header(&self, out: &mut BytesMut) {
        out.put_i64(self.base_offset.0);
        out.put_i32(0); // batch length
        out.put_i32(self.partition_leader_epoch);
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // crc
        out.put_i16(self.attributes);
        out.put_i32(0); // last offset delta
        out.put_i64(0); // base timestamp
        out.put_i64(0); // max timestamp
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(0); // records count
    }
}

/// Completes `batch` (a header from [`BatchBuilder::put_header`] followed by its encoded
/// records, nothing after them): writes its length, offset delta, timestamps and record
/// count, then the CRC.
pub fn seal(
    batch: &mut [u8],
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    records_count: i32,
) {
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&last_offset_delta.to_be_bytes());
    batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&base_timestamp.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    batch[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&records_count.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Appends the start of a record with no key and no headers whose value is
/// `value_len` bytes: its length, attributes, deltas, the null key and the value's
/// length. The caller appends the value, then [`put_varlong`]`(0)` for the header count.
pub fn put_record_prefix(out: &mut BytesMut, offset_delta: i32, ts_delta: i64, value_len: usize) {
    let body_len = 1
        + varlong_len(ts_delta)
        + varlong_len(i64::from(offset_delta))
        + varlong_len(-1)
        + varlong_len(value_len as i64)
        + value_len
        + varlong_len(0);
    put_varlong(out, body_len as i64);
    out.put_i8(0);
    put_varlong(out, ts_delta);
    put_varlong(out, i64::from(offset_delta));
    put_varlong(out, -1);
    put_varlong(out, value_len as i64);
}

/// Bytes [`put_varlong`] writes for `v`.
fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.max(1).leading_zeros() as usize).div_ceil(7)
}

fn encode_record(out: &mut BytesMut, offset_delta: i32, ts_delta: i64, r: &NewRecord) {
    let mut body = BytesMut::new();
    body.put_i8(0);
    put_varlong(&mut body, ts_delta);
    put_varlong(&mut body, i64::from(offset_delta));
    put_nullable(&mut body, r.key.as_deref());
    put_nullable(&mut body, r.value.as_deref());
    put_varlong(&mut body, r.headers.len() as i64);
    for (k, v) in &r.headers {
        put_nullable(&mut body, Some(k.as_bytes()));
        put_nullable(&mut body, v.as_deref());
    }
    put_varlong(out, body.len() as i64);
    out.extend_from_slice(&body);
}

fn put_nullable(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<&str>, ts: i64) -> NewRecord {
        NewRecord {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
            timestamp_ms: ts,
        }
    }

    #[test]
    fn varlong_lengths_match_the_encoding() {
        for v in [
            0,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i64::from(i32::MAX),
            i64::MAX,
            i64::MIN,
        ] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(varlong_len(v), b.len(), "{v}");
        }
    }

    #[test]
    fn a_batch_built_in_place_equals_the_assembled_one() {
        let values: Vec<Vec<u8>> = vec![b"x".to_vec(), vec![7; 300], vec![]];
        // Through build(): keyless, headerless records.
        let records: Vec<NewRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                key: None,
                value: Some(Bytes::copy_from_slice(v)),
                headers: Vec::new(),
                timestamp_ms: 1000 + i as i64,
            })
            .collect();
        let built = BatchBuilder::default().build(&records);
        // In place, after some unrelated leading bytes, as a request would hold it.
        let mut out = BytesMut::from(&b"prefix"[..]);
        BatchBuilder::default().put_header(&mut out);
        for (i, v) in values.iter().enumerate() {
            put_record_prefix(&mut out, i as i32, i as i64, v.len());
            out.extend_from_slice(v);
            put_varlong(&mut out, 0);
        }
        seal(&mut out[6..], 2, 1000, 1002, 3);
        assert_eq!(&out[6..], &built[..]);
        validate_batch(&out[6..]).unwrap();
    }

    #[test]
    fn built_batch_validates_and_decodes() {
        let b = BatchBuilder::default().build(&[rec("a", Some("1"), 10), rec("b", None, 12)]);
        let h = validate_batch(&b).unwrap();
        validate_client_batch(&h).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.max_timestamp, 12);
        let rs: Vec<_> = records(&b).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(rs[0].key, Some(&b"a"[..]));
        assert_eq!(rs[1].value, None);
        assert_eq!(rs[1].offset_delta, 1);
        assert_eq!(rs[1].timestamp_delta, 2);
    }

    #[test]
    fn every_single_bit_flip_in_crc_region_is_detected() {
        let b = BatchBuilder::default().build(&[rec("k", Some("value"), 1)]);
        for i in CRC_COVERED_FROM..b.len() {
            let mut c = b.to_vec();
            c[i] ^= 0x01;
            assert!(
                matches!(validate_batch(&c), Err(BatchError::CrcMismatch { .. })),
                "byte {i}"
            );
        }
    }

    #[test]
    fn stamping_keeps_crc_valid() {
        let mut b = BatchBuilder::default()
            .build(&[rec("k", Some("v"), 1)])
            .to_vec();
        set_base_offset(&mut b, Offset(77));
        set_partition_leader_epoch(&mut b, 5);
        validate_batch(&b).unwrap();
        set_log_append_time(&mut b, 123_456);
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.base_offset, Offset(77));
        assert_eq!(h.partition_leader_epoch, 5);
        assert_eq!(h.max_timestamp, 123_456);
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
    }

    #[test]
    fn header_stamping_matches_whole_batch_stamping() {
        let b = BatchBuilder::default().build(&[rec("k", Some("v"), 1), rec("l", Some("w"), 2)]);
        let mut whole = b.to_vec();
        set_base_offset(&mut whole, Offset(9));
        set_partition_leader_epoch(&mut whole, 4);
        set_log_append_time(&mut whole, 777);
        let mut header = b[..BATCH_HEADER_SIZE].to_vec();
        stamp_header(
            &mut header,
            &b[BATCH_HEADER_SIZE..],
            Offset(9),
            4,
            Some(777),
        );
        assert_eq!(header, whole[..BATCH_HEADER_SIZE]);
        validate_batch(&[&header[..], &b[BATCH_HEADER_SIZE..]].concat()).unwrap();
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let b = BatchBuilder::default().build(&[rec("k", Some("v"), 1)]);
        assert!(matches!(
            validate_batch(&b[..30]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate_batch(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        let mut m = b.to_vec();
        m[MAGIC_AT] = 1;
        assert_eq!(validate_batch(&m), Err(BatchError::UnsupportedMagic(1)));
        let mut l = b.to_vec();
        l[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(validate_batch(&l), Err(BatchError::LengthTooSmall(3)));
        assert!(validate_batch(&[]).is_err());
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            let mut p = 0;
            assert_eq!(read_varlong(&b, &mut p).unwrap(), v);
            assert_eq!(p, b.len());
        }
    }
}
