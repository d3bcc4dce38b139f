//! Transaction markers: the control batches that end a transaction in a partition
//! (Kafka's `EndTransactionMarker`). A control batch holds one record whose key is
//! `version i16 = 0 | type i16` (0 abort, 1 commit) and whose value is
//! `version i16 = 0 | coordinator_epoch i32`; the batch carries the producer's id and
//! epoch and both the transactional and the control attribute bits.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{self, BatchBuilder, BatchError, BatchHeader, NewRecord};

/// A control record's type (its key's second field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
}

/// The marker batch ending `producer_id`'s transaction (base offset 0; the log assigns
/// the real one).
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    kind: ControlType,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Bytes {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(kind.code());
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(coordinator_epoch);
    BatchBuilder {
        producer_id,
        producer_epoch,
        base_sequence: -1,
        attributes: batch::TRANSACTIONAL_BIT | batch::CONTROL_BIT,
        ..BatchBuilder::default()
    }
    .build(&[NewRecord {
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Vec::new(),
        timestamp_ms,
    }])
}

/// The type of a control batch (`batch` holds it whole), from its first record's key.
/// Types other than abort and commit (Kafka's KRaft control records) are `None`.
pub fn control_type(header: &BatchHeader, batch: &[u8]) -> Result<Option<ControlType>, BatchError> {
    if !header.is_control() {
        return Ok(None);
    }
    let record = batch::records(batch)?
        .next()
        .ok_or(BatchError::InvalidRecord("control batch without a record"))??;
    let key = record
        .key
        .filter(|k| k.len() >= 4)
        .ok_or(BatchError::InvalidRecord("control record key too short"))?;
    Ok(match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(ControlType::Abort),
        1 => Some(ControlType::Commit),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_as_its_type() {
        for kind in [ControlType::Abort, ControlType::Commit] {
            let b = marker_batch(42, 3, kind, 7, 1000);
            let h = batch::validate_batch(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (42, 3));
            assert_eq!(control_type(&h, &b).unwrap(), Some(kind));
        }
    }

    #[test]
    fn a_data_batch_has_no_control_type() {
        let b = BatchBuilder::default().build(&[NewRecord::default()]);
        let h = batch::validate_batch(&b).unwrap();
        assert_eq!(control_type(&h, &b).unwrap(), None);
    }
}
