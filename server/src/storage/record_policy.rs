//! Topic policies that need the records themselves, applied to a produce request's
//! batches before they are appended (so only the topics that set them pay for decoding):
//!
//! - **Compacted topics require keys.** A record without a key in a `cleanup.policy`
//!   with `compact` is rejected with INVALID_RECORD and per-record `record_errors`
//!   (KIP-467), compressed batches included, as Kafka's LogValidator does.
//! - **Topic `compression.type`.** When it names a codec (or `uncompressed`) and a batch
//!   arrives in another, the batch is decompressed and recompressed with the topic's
//!   codec, keeping its producer id, epoch, base sequence and transactional flag.
//!   Those topics' appends leave the zero-copy path; fetches still splice from the file.
//!
//! Codecs are kafka-protocol's (gzip, xerial-framed snappy, Kafka's LZ4 frame, zstd); a
//! batch that decompresses past `kafka_protocol::compression::MAX_DECOMPRESSED_BYTES`
//! (256 MiB, ringmq's patch) is refused as CORRUPT_MESSAGE rather than allocated.

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::records::{
    Compression as Codec, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use ringmq_engine::batch::{BatchIter, Compression};
use std::collections::BTreeMap;

use crate::storage::partition::PartitionError;

/// Records of one batch that a policy rejected: (index in the batch, message).
pub type RecordErrors = Vec<(i32, String)>;

/// What a topic's configs ask of each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordPolicy {
    /// `cleanup.policy` includes `compact`.
    pub require_keys: bool,
    /// `compression.type` other than `producer`: the codec batches are stored in.
    pub codec: Option<Compression>,
}

impl RecordPolicy {
    pub fn for_topic(configs: &BTreeMap<String, String>) -> Self {
        let require_keys = configs
            .get("cleanup.policy")
            .is_some_and(|p| p.split(',').any(|s| s.trim() == "compact"));
        let codec = match configs.get("compression.type").map(String::as_str) {
            Some("uncompressed") => Some(Compression::None),
            Some("gzip") => Some(Compression::Gzip),
            Some("snappy") => Some(Compression::Snappy),
            Some("lz4") => Some(Compression::Lz4),
            Some("zstd") => Some(Compression::Zstd),
            _ => None,
        };
        RecordPolicy {
            require_keys,
            codec,
        }
    }

    /// Whether the policy never changes nor rejects a batch (the common case).
    pub fn is_noop(&self) -> bool {
        !self.require_keys && self.codec.is_none()
    }

    /// Applies the policy to a produce request's batches of `topic`-`partition`: the
    /// batches to append (rewritten where the codec differs), or the error to answer.
    pub fn apply(
        &self,
        records: Bytes,
        topic: &str,
        partition: i32,
    ) -> Result<Bytes, PartitionError> {
        if self.is_noop() {
            return Ok(records);
        }
        let mut out: Option<BytesMut> = None;
        let mut consumed = 0usize;
        for item in BatchIter::new(&records) {
            let (pos, header, bytes) = item
                .map_err(|e| PartitionError::new(ResponseError::CorruptMessage, e.to_string()))?;
            let len = bytes.len();
            let batch = records.slice(pos..pos + len);
            let recompress = self
                .codec
                .filter(|c| *c != header.compression() && !header.is_control());
            if !self.require_keys && recompress.is_none() {
                if let Some(out) = out.as_mut() {
                    out.extend_from_slice(&batch);
                }
                consumed = pos + len;
                continue;
            }
            // A batch is decoded only once its CRC holds (as the append path would check).
            ringmq_engine::batch::validate_batch(&batch)
                .map_err(|e| PartitionError::new(ResponseError::CorruptMessage, e.to_string()))?;
            let decoded = decode(&batch)?;
            if self.require_keys && !header.is_control() {
                check_keys(&decoded, topic, partition)?;
            }
            match recompress {
                Some(codec) => {
                    let buf = out.get_or_insert_with(|| BytesMut::from(&records[..pos]));
                    encode(&decoded, codec, buf)?;
                }
                None => {
                    if let Some(out) = out.as_mut() {
                        out.extend_from_slice(&batch);
                    }
                }
            }
            consumed = pos + len;
        }
        match out {
            Some(mut out) => {
                out.extend_from_slice(&records[consumed..]);
                Ok(out.freeze())
            }
            None => Ok(records),
        }
    }
}

fn decode(batch: &Bytes) -> Result<Vec<kafka_protocol::records::Record>, PartitionError> {
    let mut buf = batch.clone();
    RecordBatchDecoder::decode(&mut buf)
        .map(|set| set.records)
        .map_err(|e| PartitionError::new(ResponseError::CorruptMessage, format!("records: {e}")))
}

fn check_keys(
    records: &[kafka_protocol::records::Record],
    topic: &str,
    partition: i32,
) -> Result<(), PartitionError> {
    let errors: RecordErrors = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| {
            (
                i as i32,
                format!(
                    "Compacted topic cannot accept message without key in topic partition {topic}-{partition}"
                ),
            )
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
        .collect();
    let mut e = PartitionError::new(
        ResponseError::InvalidRecord,
        format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
            errors.len(),
            shown.join(", ")
        ),
    );
    e.record_errors = errors;
    Err(e)
}

fn encode(
    records: &[kafka_protocol::records::Record],
    codec: Compression,
    out: &mut BytesMut,
) -> Result<(), PartitionError> {
    let compression = match codec {
        Compression::None => Codec::None,
        Compression::Gzip => Codec::Gzip,
        Compression::Snappy => Codec::Snappy,
        Compression::Lz4 => Codec::Lz4,
        Compression::Zstd => Codec::Zstd,
    };
    // The encoder takes the batch fields (producer id, epoch, base sequence,
    // transactional flag, timestamp type) from the records, which carry them.
    RecordBatchEncoder::encode(
        out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| {
        PartitionError::new(
            ResponseError::UnknownServerError,
            format!("recompressing a batch to {codec:?}: {e}"),
        )
    })
}
