//! A partition's transactions, as its log says (Kafka's `ProducerStateManager`, the
//! transactional half): which producers have a transaction open here and from which
//! offset, which transactions were aborted (the ranges a read_committed consumer must
//! skip), and from those the last stable offset (LSO): below the first offset of any
//! transaction not yet decided, or decided by a marker the high watermark has not
//! passed. Rebuilt from the log whenever the producer state is.

use std::collections::HashMap;

use ringmq_engine::control::ControlType;
use ringmq_engine::{BatchHeader, Offset};

/// An aborted transaction: its producer, first offset and marker offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

#[derive(Debug, Default, Clone)]
pub struct TxnState {
    /// Open transactions: producer id → (epoch, first offset).
    ongoing: HashMap<i64, (i16, Offset)>,
    /// Decided transactions whose markers are not yet below the high watermark:
    /// (first offset, marker offset).
    deciding: Vec<(Offset, Offset)>,
    /// Aborted transactions in marker order.
    aborted: Vec<AbortedTxn>,
}

impl TxnState {
    /// Takes one batch appended at `base` (its marker type if it is a control batch).
    pub fn on_batch(&mut self, h: &BatchHeader, base: Offset, marker: Option<ControlType>) {
        if !h.is_transactional() || !h.has_producer_id() {
            return;
        }
        if !h.is_control() {
            self.ongoing
                .entry(h.producer_id)
                .or_insert((h.producer_epoch, base));
            return;
        }
        let Some(kind) = marker else { return };
        // A marker for a producer with nothing open here ends nothing (a retried marker).
        if let Some((_, first)) = self.ongoing.remove(&h.producer_id) {
            self.deciding.push((first, base));
            if kind == ControlType::Abort {
                self.aborted.push(AbortedTxn {
                    producer_id: h.producer_id,
                    first_offset: first,
                    last_offset: base,
                });
            }
        }
    }

    /// The last stable offset under high watermark `hw`.
    pub fn last_stable_offset(&mut self, hw: Offset) -> Offset {
        self.deciding.retain(|(_, marker)| *marker >= hw);
        self.ongoing
            .values()
            .map(|(_, first)| *first)
            .chain(self.deciding.iter().map(|(first, _)| *first))
            .min()
            .map_or(hw, |first| first.min(hw))
    }

    /// Aborted transactions with data in `[from, to)`: what a read_committed fetch of
    /// that range sends so the client drops their records.
    pub fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly before the log start (deleted data).
    pub fn forget_before(&mut self, log_start: Offset) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// Open transactions: (producer id, epoch, first offset).
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i16, Offset)> + '_ {
        self.ongoing.iter().map(|(pid, (e, o))| (*pid, *e, *o))
    }

    /// The first offset of `producer_id`'s open transaction here.
    pub fn open_since(&self, producer_id: i64) -> Option<Offset> {
        self.ongoing.get(&producer_id).map(|(_, o)| *o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_engine::NewRecord;
    use ringmq_engine::batch::{self, BatchBuilder};
    use ringmq_engine::control::marker_batch;

    fn data(pid: i64, transactional: bool) -> BatchHeader {
        let b = BatchBuilder {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            attributes: if transactional {
                batch::TRANSACTIONAL_BIT
            } else {
                0
            },
            ..BatchBuilder::default()
        }
        .build(&[NewRecord::default()]);
        batch::validate_batch(&b).unwrap()
    }

    fn marker(pid: i64, kind: ControlType) -> BatchHeader {
        batch::validate_batch(&marker_batch(pid, 0, kind, 0, 0)).unwrap()
    }

    #[test]
    fn an_open_transaction_holds_the_lso_until_its_marker_is_replicated() {
        let mut t = TxnState::default();
        t.on_batch(&data(1, false), Offset(0), None);
        t.on_batch(&data(7, true), Offset(1), None);
        t.on_batch(&data(7, true), Offset(2), None);
        assert_eq!(t.last_stable_offset(Offset(3)), Offset(1));
        t.on_batch(
            &marker(7, ControlType::Commit),
            Offset(3),
            Some(ControlType::Commit),
        );
        // The marker is at 3: stable only once the high watermark passes it.
        assert_eq!(t.last_stable_offset(Offset(3)), Offset(1));
        assert_eq!(t.last_stable_offset(Offset(4)), Offset(4));
        assert!(t.aborted_between(Offset(0), Offset(4)).is_empty());
    }

    #[test]
    fn aborted_ranges_are_listed_for_the_fetched_range_only() {
        let mut t = TxnState::default();
        t.on_batch(&data(7, true), Offset(10), None);
        t.on_batch(
            &marker(7, ControlType::Abort),
            Offset(12),
            Some(ControlType::Abort),
        );
        t.on_batch(&data(8, true), Offset(20), None);
        t.on_batch(
            &marker(8, ControlType::Abort),
            Offset(21),
            Some(ControlType::Abort),
        );
        let a = t.aborted_between(Offset(0), Offset(11));
        assert_eq!(a.iter().map(|a| a.producer_id).collect::<Vec<_>>(), vec![7]);
        assert_eq!(t.aborted_between(Offset(13), Offset(20)), vec![]);
        assert_eq!(t.aborted_between(Offset(12), Offset(30)).len(), 2);
        t.forget_before(Offset(13));
        assert_eq!(t.aborted_between(Offset(0), Offset(30)).len(), 1);
    }

    #[test]
    fn a_marker_without_an_open_transaction_changes_nothing() {
        let mut t = TxnState::default();
        t.on_batch(
            &marker(7, ControlType::Abort),
            Offset(0),
            Some(ControlType::Abort),
        );
        assert_eq!(t.last_stable_offset(Offset(1)), Offset(1));
        assert!(t.aborted_between(Offset(0), Offset(1)).is_empty());
    }
}
