//! Model-based property test: random sequences of log operations against a plain vector
//! of batches. After every step the log must serve exactly the model's batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use ringmq_engine::{LogConfig, Offset, ReadError, UnifiedLog};

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize },
    Reopen { clean: bool },
    Truncate { at_permille: u16 },
    DeleteRecords { at_permille: u16 },
    RetainBytes { bytes: i64 },
    Read { at_permille: u16, max_bytes: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (1usize..20, 0usize..1500).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        2 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => (0u16..1000).prop_map(|at_permille| Op::Truncate { at_permille }),
        1 => (0u16..1000).prop_map(|at_permille| Op::DeleteRecords { at_permille }),
        1 => (2_000i64..40_000).prop_map(|bytes| Op::RetainBytes { bytes }),
        4 => (0u16..1000, 1u32..20_000).prop_map(|(at_permille, max_bytes)| Op::Read { at_permille, max_bytes }),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

struct Model {
    /// (base offset, last offset, stored bytes), only batches not wholly below log_start.
    batches: Vec<(i64, i64, Vec<u8>)>,
    log_start: i64,
    end: i64,
}

impl Model {
    fn end(&self) -> i64 {
        self.end
    }
    fn offset_at(&self, permille: u16) -> i64 {
        let (lo, hi) = (self.log_start, self.end());
        lo + (hi - lo) * i64::from(permille) / 1000
    }
    fn check(&self, log: &UnifiedLog) {
        assert_eq!(log.log_end_offset(), Offset(self.end()));
        assert_eq!(log.log_start_offset(), Offset(self.log_start));
        let served = read_all(log, Offset(self.log_start));
        let expected: Vec<(Offset, Vec<u8>)> = self
            .batches
            .iter()
            .filter(|b| b.1 >= self.log_start)
            .map(|b| (Offset(b.0), b.2.clone()))
            .collect();
        assert_eq!(served, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn log_serves_exactly_what_the_model_holds(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Some(open(dir.path(), config()));
        let mut model = Model { batches: Vec::new(), log_start: 0, end: 0 };
        for (step, op) in ops.into_iter().enumerate() {
            let l = log.as_mut().unwrap();
            match op {
                Op::Append { records, value_len } => {
                    let b = batch(step as u64, records, value_len, NOW + step as i64);
                    let info = append(l, b.clone());
                    prop_assert_eq!(info.first_offset, Offset(model.end()));
                    model.batches.push((info.first_offset.0, info.last_offset.0, stamped(&b, info.first_offset)));
                    model.end = info.last_offset.0 + 1;
                    l.update_high_watermark(l.log_end_offset());
                }
                Op::Reopen { clean } => {
                    let old = log.take().unwrap();
                    if clean { old.close().unwrap() } else { drop(old) }
                    let mut reopened = open(dir.path(), config());
                    reopened.update_high_watermark(reopened.log_end_offset());
                    log = Some(reopened);
                }
                Op::Truncate { at_permille } => {
                    let at = model.offset_at(at_permille);
                    l.truncate_to(Offset(at)).unwrap();
                    // The batch holding `at` goes too; the log ends where it started.
                    if let Some(cut) = model.batches.iter().find(|b| b.1 >= at).map(|b| b.0) {
                        model.batches.retain(|b| b.1 < at);
                        model.end = cut;
                        model.log_start = model.log_start.min(cut);
                    }
                    l.update_high_watermark(l.log_end_offset());
                }
                Op::DeleteRecords { at_permille } => {
                    let at = model.offset_at(at_permille);
                    let start = l.delete_records_before(Offset(at)).unwrap();
                    model.log_start = model.log_start.max(at);
                    prop_assert_eq!(start, Offset(model.log_start));
                }
                Op::RetainBytes { bytes } => {
                    let mut cfg = config();
                    cfg.retention_bytes = bytes;
                    l.update_config(cfg);
                    l.apply_retention(NOW).unwrap();
                    l.update_config(config());
                    model.log_start = l.log_start_offset().0;
                    model.batches.retain(|b| b.1 >= model.log_start || b.0 >= model.log_start);
                }
                Op::Read { at_permille, max_bytes } => {
                    let at = model.offset_at(at_permille);
                    let info = l.read(Offset(at), max_bytes, l.log_end_offset(), true).unwrap();
                    match info.range {
                        None => prop_assert_eq!(at, model.end()),
                        Some(r) => {
                            let holder = model.batches.iter().find(|b| b.1 >= at).unwrap();
                            prop_assert_eq!(r.first_offset, Offset(holder.0));
                            prop_assert!(r.length <= max_bytes.max(holder.2.len() as u32));
                            let bytes = UnifiedLog::read_range_bytes(&r).unwrap();
                            prop_assert_eq!(&bytes[..holder.2.len()], &holder.2[..]);
                        }
                    }
                    if model.log_start > 0 {
                        let below = l.read(Offset(model.log_start - 1), 100, l.log_end_offset(), true);
                        let out_of_range = matches!(below, Err(ReadError::OffsetOutOfRange { .. }));
                        prop_assert!(out_of_range);
                    }
                }
            }
            let start = model.log_start;
            model.batches.retain(|b| b.1 >= start);
            model.check(log.as_ref().unwrap());
        }
    }
}
