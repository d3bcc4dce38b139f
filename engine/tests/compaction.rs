//! Log compaction: latest value per key, tombstones and delete.retention.ms, offsets kept,
//! appends during a round, crash leftovers, and a property test against a model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::*;
use proptest::prelude::*;
use ringmq_engine::batch;
use ringmq_engine::{AppendOptions, CleanupPolicy, LogConfig, LogHandle, Offset, UnifiedLog};

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes: 2048,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 60_000,
        ..LogConfig::default()
    }
}

/// `(offset, key, value)` of every record in the log.
fn records(log: &UnifiedLog) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    for (_, raw) in read_all(log, log.log_start_offset()) {
        let h = batch::validate_batch(&raw).unwrap();
        for r in batch::records(&raw).unwrap() {
            let r = r.unwrap();
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
            out.push((h.base_offset.0 + i64::from(r.offset_delta), key, value));
        }
    }
    out
}

fn compact(log: &mut UnifiedLog, now_ms: i64) -> Option<ringmq_engine::cleaner::CleanStats> {
    let task = log.clean_task(now_ms)?;
    let cleaned = task.run().unwrap();
    Some(log.install_cleaned(cleaned).unwrap())
}

#[test]
fn keeps_the_latest_value_per_key_with_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    for round in 0..20 {
        for key in ["a", "b", "c"] {
            let v = format!("{key}{round}-{:0>80}", 0);
            append(&mut log, keyed(&[(key, Some(&v))], NOW));
        }
    }
    assert!(log.segment_count() > 3);
    let before = records(&log);
    let stats = compact(&mut log, NOW).unwrap();
    assert!(stats.records_removed > 0);
    let after = records(&log);
    let active_base = log.active_segment().base_offset.0;
    // In the cleaned part each key appears once, with its latest value before the active segment.
    let cleaned: Vec<_> = after.iter().filter(|r| r.0 < active_base).collect();
    let mut seen = HashMap::new();
    for (offset, key, value) in &cleaned {
        assert!(seen.insert(key.clone(), *offset).is_none(), "{key} twice");
        let latest = before
            .iter()
            .filter(|r| &r.1 == key)
            .map(|r| r.0)
            .max()
            .unwrap();
        if latest < active_base {
            assert_eq!(*offset, latest);
        }
        assert_eq!(
            value.as_deref(),
            before.iter().find(|r| r.0 == *offset).unwrap().2.as_deref()
        );
    }
    // The active segment is untouched and the log end did not move.
    assert_eq!(
        after.iter().filter(|r| r.0 >= active_base).count(),
        before.iter().filter(|r| r.0 >= active_base).count()
    );
    assert_eq!(log.log_end_offset(), Offset(60));
    // Nothing left to do until more is written.
    assert!(compact(&mut log, NOW).is_none());
    // Survives reopening.
    drop(log);
    let log = open(dir.path(), compact_config());
    assert_eq!(records(&log), after);
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    append(
        &mut log,
        keyed(&[("gone", Some("v1")), ("kept", Some("k1"))], NOW),
    );
    append(&mut log, keyed(&[("gone", None)], NOW));
    for i in 0..40 {
        append(
            &mut log,
            keyed(&[("filler", Some(&format!("{i:0>100}")))], NOW),
        );
    }
    compact(&mut log, NOW + 1000).unwrap();
    let r = records(&log);
    assert!(
        r.iter().any(|x| x.1 == "gone" && x.2.is_none()),
        "tombstone kept within delete.retention.ms"
    );
    assert!(!r.iter().any(|x| x.1 == "gone" && x.2.is_some()));
    assert!(r.iter().any(|x| x.1 == "kept"));
    // More writes make the log dirty again; past the horizon the tombstone is removed.
    for i in 0..40 {
        append(
            &mut log,
            keyed(&[("filler", Some(&format!("{i:0>100}")))], NOW),
        );
    }
    let stats = compact(&mut log, NOW + 61_000).unwrap();
    assert_eq!(stats.tombstones_removed, 1);
    let r = records(&log);
    assert!(!r.iter().any(|x| x.1 == "gone"));
    assert!(r.iter().any(|x| x.1 == "kept"));
}

#[test]
fn appends_continue_while_a_round_runs_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let handle = LogHandle::new(open(dir.path(), compact_config()));
        for i in 0..200 {
            let k = format!("k{}", i % 10);
            handle
                .append(
                    vec![keyed(&[(&k, Some(&format!("{i}")))], NOW)],
                    AppendOptions::client(NOW),
                )
                .await
                .unwrap();
        }
        let compactor = handle.clone();
        let round = compio::runtime::spawn(async move { compactor.compact(NOW).await });
        for i in 200..300 {
            let k = format!("k{}", i % 10);
            handle
                .append(
                    vec![keyed(&[(&k, Some(&format!("{i}")))], NOW)],
                    AppendOptions::client(NOW),
                )
                .await
                .unwrap();
        }
        round.await.unwrap().unwrap().unwrap();
        let r = records(&handle.log());
        // Every key's latest value (from the last 100 appends) is present.
        for k in 0..10 {
            let latest = (200..300).filter(|i| i % 10 == k).max().unwrap();
            assert!(
                r.iter()
                    .any(|x| x.1 == format!("k{k}")
                        && x.2.as_deref() == Some(&latest.to_string()[..]))
            );
        }
        assert_eq!(handle.log().log_end_offset(), Offset(300));
    });
}

#[test]
fn loader_finishes_or_discards_interrupted_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    for i in 0..60 {
        append(
            &mut log,
            keyed(&[(&format!("k{}", i % 3), Some(&format!("{i:0>50}")))], NOW),
        );
    }
    let before = records(&log);
    let task = log.clean_task(NOW).unwrap();
    let _cleaned = task.run().unwrap(); // committed .swap files, never installed
    drop(log);
    let pdir = log_dir(dir.path());
    std::fs::write(pdir.join("00000000000000000999.log.cleaned"), b"partial").unwrap();
    let log = open(dir.path(), compact_config());
    let after = records(&log);
    assert!(after.len() < before.len());
    let names: Vec<String> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".swap") || n.ends_with(".cleaned")),
        "{names:?}"
    );
    // The latest value of each key is intact.
    for k in 0..3 {
        let latest = before.iter().rfind(|r| r.1 == format!("k{k}")).unwrap();
        assert!(after.contains(latest));
    }
}

#[test]
fn a_compressed_batch_that_does_not_decode_is_kept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    // A batch marked gzip (attributes bit 1) whose payload is not gzip: kept as it is.
    let b = ringmq_engine::BatchBuilder {
        attributes: 1,
        ..Default::default()
    }
    .assemble(0, NOW, NOW, 1, b"opaque-compressed-bytes");
    let info = append(&mut log, b.clone());
    for i in 0..40 {
        append(&mut log, keyed(&[("x", Some(&format!("{i:0>100}")))], NOW));
    }
    compact(&mut log, NOW).unwrap();
    let first = read_all(&log, Offset(0)).remove(0);
    assert_eq!(first, (info.first_offset, stamped(&b, info.first_offset)));
}

/// A batch of `pairs` compressed with codec `attributes` (1 gzip, 2 snappy, 3 lz4, 4 zstd).
fn compressed(attributes: i16, pairs: &[(&str, &str)]) -> bytes::Bytes {
    let plain = keyed(
        &pairs
            .iter()
            .map(|(k, v)| (*k, Some(*v)))
            .collect::<Vec<_>>(),
        NOW,
    );
    let h = batch::validate_batch(&plain).unwrap();
    let codec = ringmq_engine::BatchBuilder {
        attributes,
        ..Default::default()
    };
    let header = batch::validate_batch(&codec.assemble(0, NOW, NOW, 0, b"")).unwrap();
    let payload =
        ringmq_engine::codec::compress(header.compression(), &plain[batch::BATCH_HEADER_SIZE..])
            .unwrap();
    codec.assemble(h.last_offset_delta, NOW, NOW, h.records_count, &payload)
}

#[test]
fn compressed_batches_are_compacted_record_by_record_with_their_codec() {
    for attributes in 1..=4i16 {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), compact_config());
        let first = append(
            &mut log,
            compressed(attributes, &[("a", "a0"), ("b", "b0"), ("c", "c0")]),
        );
        append(
            &mut log,
            keyed(&[("a", Some("a1")), ("c", Some("c1"))], NOW),
        );
        for i in 0..40 {
            append(&mut log, keyed(&[("x", Some(&format!("{i:0>100}")))], NOW));
        }
        compact(&mut log, NOW).unwrap();
        let (base, raw) = read_all(&log, Offset(0)).remove(0);
        let h = batch::validate_batch(&raw).unwrap();
        // The same batch: its base offset, last offset delta and codec; only b0 left.
        assert_eq!(base, first.first_offset);
        assert_eq!(
            (h.base_offset, h.last_offset_delta, h.records_count),
            (first.first_offset, 2, 1)
        );
        assert_eq!(h.attributes & 7, attributes);
        let encoded =
            ringmq_engine::codec::decompress(h.compression(), &raw[batch::BATCH_HEADER_SIZE..])
                .unwrap();
        let kept: Vec<_> = batch::records_in(&encoded).map(|r| r.unwrap()).collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].key, kept[0].value),
            (Some(&b"b"[..]), Some(&b"b0"[..]))
        );
        assert_eq!(kept[0].offset_delta, 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn compaction_matches_a_latest_per_key_model(
        writes in prop::collection::vec((0u8..12, prop::option::weighted(0.85, "[a-z]{1,40}")), 20..200)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { delete_retention_ms: i64::MAX / 4, ..compact_config() };
        let mut log = open(dir.path(), cfg);
        let mut model: HashMap<String, (i64, Option<String>)> = HashMap::new();
        for (i, (k, v)) in writes.iter().enumerate() {
            let key = format!("key{k}");
            append(&mut log, keyed(&[(&key, v.as_deref())], NOW));
            model.insert(key, (i as i64, v.clone()));
        }
        compact(&mut log, NOW);
        let after = records(&log);
        // Every key's latest write is still there with its offset and value...
        for (key, (offset, value)) in &model {
            prop_assert!(after.contains(&(*offset, key.clone(), value.clone())), "lost latest {key}@{offset}");
        }
        // ...offsets strictly increase, and below the active segment no key repeats.
        prop_assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
        let active = log.active_segment().base_offset.0;
        let mut seen = std::collections::HashSet::new();
        for r in after.iter().filter(|r| r.0 < active) {
            prop_assert!(seen.insert(r.1.clone()));
        }
    }
}

/// A transactional batch of `producer` with one keyed record.
fn txn_record(producer: i64, sequence: i32, key: &str, value: &str) -> bytes::Bytes {
    ringmq_engine::BatchBuilder {
        producer_id: producer,
        producer_epoch: 0,
        base_sequence: sequence,
        attributes: batch::TRANSACTIONAL_BIT,
        ..Default::default()
    }
    .build(&[ringmq_engine::NewRecord {
        key: Some(bytes::Bytes::copy_from_slice(key.as_bytes())),
        value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![],
        timestamp_ms: NOW,
    }])
}

fn marker(producer: i64, kind: ringmq_engine::control::ControlType) -> bytes::Bytes {
    ringmq_engine::control::marker_batch(producer, 0, kind, 0, NOW)
}

#[test]
fn an_aborted_write_never_supersedes_a_committed_value_and_open_transactions_stay() {
    use ringmq_engine::control::ControlType;
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compact_config());
    let pad = format!("{:0>120}", 0);
    append(&mut log, keyed(&[("k", Some("committed"))], NOW));
    append(&mut log, txn_record(7, 0, "k", "aborted"));
    append(&mut log, marker(7, ControlType::Abort));
    append(&mut log, txn_record(8, 0, "c", "in-a-committed-txn"));
    append(&mut log, marker(8, ControlType::Commit));
    for i in 0..30 {
        append(
            &mut log,
            keyed(&[("filler", Some(&format!("{i}{pad}")))], NOW),
        );
    }
    // An open transaction, then more data behind it.
    let open_at = log.log_end_offset();
    append(&mut log, txn_record(9, 0, "o", "open"));
    for i in 0..30 {
        append(
            &mut log,
            keyed(&[("filler", Some(&format!("late{i}{pad}")))], NOW),
        );
    }
    assert!(log.segment_count() > 4);
    let stats = compact(&mut log, NOW).unwrap();
    let after: Vec<(i64, String, Option<String>)> = records(&log)
        .into_iter()
        .filter(|(_, k, _)| !k.starts_with('\0'))
        .collect();
    let values = |key: &str| -> Vec<String> {
        after
            .iter()
            .filter(|r| r.1 == key)
            .filter_map(|r| r.2.clone())
            .collect()
    };
    assert_eq!(
        values("k"),
        vec!["committed"],
        "the aborted write is gone, the committed one stays"
    );
    assert_eq!(values("c"), vec!["in-a-committed-txn"]);
    assert_eq!(values("o"), vec!["open"]);
    // Nothing from the open transaction's segment on was compacted: every late filler
    // is still there.
    let late = after
        .iter()
        .filter(|r| r.0 > open_at.0 && r.1 == "filler")
        .count();
    assert_eq!(late, 30);
    assert!(stats.records_removed > 0);
    // The markers are kept.
    let markers = read_all(&log, log.log_start_offset())
        .into_iter()
        .filter(|(_, raw)| batch::validate_batch(raw).unwrap().is_control())
        .count();
    assert_eq!(markers, 2);
}

#[test]
fn markers_go_once_their_transaction_has_no_data_left_and_delete_retention_passed() {
    use ringmq_engine::control::ControlType;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        delete_retention_ms: 1000,
        ..compact_config()
    };
    let mut log = open(dir.path(), config.clone());
    let pad = format!("{:0>120}", 0);
    // 7: aborted (its data is removed). 8: committed, its record later superseded.
    // 9: committed, its record is the key's latest.
    append(&mut log, txn_record(7, 0, "a", "aborted"));
    append(&mut log, marker(7, ControlType::Abort));
    append(&mut log, txn_record(8, 0, "b", "old"));
    append(&mut log, marker(8, ControlType::Commit));
    append(&mut log, txn_record(9, 0, "c", "latest"));
    append(&mut log, marker(9, ControlType::Commit));
    append(&mut log, keyed(&[("b", Some("new"))], NOW));
    for i in 0..30 {
        append(
            &mut log,
            keyed(&[("filler", Some(&format!("{i}{pad}")))], NOW),
        );
    }
    let control = |log: &UnifiedLog| -> Vec<i64> {
        read_all(log, log.log_start_offset())
            .into_iter()
            .map(|(_, raw)| batch::validate_batch(&raw).unwrap())
            .filter(|h| h.is_control())
            .map(|h| h.producer_id)
            .collect()
    };
    // Within delete.retention.ms every marker stays.
    compact(&mut log, NOW).unwrap();
    assert_eq!(control(&log), vec![7, 8, 9]);
    // After it: the markers whose transactions have nothing left go; 9's stays.
    for i in 0..20 {
        append(
            &mut log,
            keyed(&[("filler", Some(&format!("late{i}{pad}")))], NOW),
        );
    }
    let stats = compact(&mut log, NOW + 10_000).unwrap();
    assert_eq!(control(&log), vec![9]);
    assert_eq!(stats.markers_removed, 2);
    let values: Vec<_> = records(&log).into_iter().filter(|r| r.1 == "c").collect();
    assert_eq!(values.len(), 1);
}
