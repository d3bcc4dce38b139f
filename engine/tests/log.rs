//! UnifiedLog behaviour through its public API: append, read, roll, indexes, lookups,
//! reopen, truncation, DeleteRecords, retention and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use ringmq_engine::batch::{self, BatchError};
use ringmq_engine::{
    AppendError, AppendOptions, AppendOrigin, CleanupPolicy, LogConfig, LogOpError, Offset,
    ReadError, TimestampType, UnifiedLog,
};

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

#[test]
fn append_assigns_offsets_and_reads_back_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let batches: Vec<Bytes> = (0..3)
        .map(|i| batch(i, [10, 5, 1][i as usize], 100, NOW))
        .collect();
    let infos: Vec<_> = batches
        .iter()
        .map(|b| append(&mut log, b.clone()))
        .collect();
    assert_eq!(
        infos
            .iter()
            .map(|i| (i.first_offset.0, i.last_offset.0))
            .collect::<Vec<_>>(),
        vec![(0, 9), (10, 14), (15, 15)]
    );
    assert_eq!(log.log_end_offset(), Offset(16));
    let read = read_all(&log, Offset(0));
    assert_eq!(read.len(), 3);
    for ((base, bytes), (b, info)) in read.iter().zip(batches.iter().zip(&infos)) {
        assert_eq!(*base, info.first_offset);
        assert_eq!(bytes, &stamped(b, info.first_offset));
    }
    // A read from the middle of a batch starts at that batch (Kafka serves whole batches).
    let mid = log
        .read(Offset(12), 1 << 20, log.log_end_offset(), true)
        .unwrap()
        .range
        .unwrap();
    assert_eq!(mid.first_offset, Offset(10));
}

#[test]
fn read_respects_upper_bound_max_bytes_and_min_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..10 {
        append(&mut log, batch(i, 2, 500, NOW));
    }
    let size = batch(0, 2, 500, NOW).len() as u32;
    // Upper bound (high watermark) at offset 6: batches 0..3 only.
    let r = log
        .read(Offset(0), 1 << 20, Offset(6), true)
        .unwrap()
        .range
        .unwrap();
    assert_eq!(r.length, 3 * size);
    // max_bytes cuts at a whole batch.
    let r = log
        .read(Offset(0), 2 * size + 10, Offset(20), true)
        .unwrap()
        .range
        .unwrap();
    assert_eq!(r.length, 2 * size);
    // A batch larger than max_bytes is still returned with min_one_batch (KIP-74)...
    let r = log
        .read(Offset(4), 10, Offset(20), true)
        .unwrap()
        .range
        .unwrap();
    assert_eq!((r.first_offset, r.length), (Offset(4), size));
    // ...and not without it.
    assert!(
        log.read(Offset(4), 10, Offset(20), false)
            .unwrap()
            .range
            .is_none()
    );
    // At the upper bound: nothing, not an error.
    assert!(
        log.read(Offset(20), 100, Offset(20), true)
            .unwrap()
            .range
            .is_none()
    );
    assert!(matches!(
        log.read(Offset(21), 100, Offset(20), true),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn segments_roll_at_segment_bytes_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    let mut expected = Vec::new();
    for i in 0..100 {
        let b = batch(i, 3, 300, NOW + i as i64);
        let info = append(&mut log, b.clone());
        expected.push((info.first_offset, stamped(&b, info.first_offset)));
    }
    assert!(log.segment_count() >= 6, "{} segments", log.segment_count());
    for seg in log.segments() {
        assert!(seg.size() <= 16 * 1024);
        let name = seg
            .log_path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(name, format!("{:020}.log", seg.base_offset.0));
    }
    assert_eq!(read_all(&log, Offset(0)), expected);
    // Every offset resolves to the batch holding it.
    for o in 0..300 {
        let r = log
            .read(Offset(o), 1, log.log_end_offset(), true)
            .unwrap()
            .range
            .unwrap();
        assert_eq!(r.first_offset.0, o / 3 * 3);
    }
}

#[test]
fn reopen_after_clean_close_and_after_dropping_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..50 {
        append(&mut log, batch(i, 2, 400, NOW + i as i64));
    }
    log.update_high_watermark(Offset(60));
    let before = read_all(&log, Offset(0));
    log.close().unwrap();
    let log = open(dir.path(), small_segments());
    assert_eq!(log.log_end_offset(), Offset(100));
    assert_eq!(log.high_watermark(), Offset(60));
    assert_eq!(log.recovery_point(), Offset(100));
    assert_eq!(read_all(&log, Offset(0)), before);
    drop(log); // no close: indexes of the tail were never written
    let mut log = open(dir.path(), small_segments());
    assert_eq!(read_all(&log, Offset(0)), before);
    append(&mut log, batch(99, 1, 10, NOW));
    assert_eq!(log.log_end_offset(), Offset(101));
}

#[test]
fn recovery_truncates_a_torn_tail_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    for i in 0..5 {
        append(&mut log, batch(i, 4, 200, NOW));
    }
    let good = read_all(&log, Offset(0));
    let path = log.active_segment().log_path().to_owned();
    drop(log);
    // A torn write: half of a sixth batch.
    let sixth = stamped(&batch(5, 4, 200, NOW), Offset(20));
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes.extend_from_slice(&sixth[..sixth.len() / 2]);
    std::fs::write(&path, &bytes).unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), Offset(20));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len as u64);
    assert_eq!(read_all(&log, Offset(0)), good);
    drop(log);
    // A complete batch with a flipped bit and garbage after it.
    let mut corrupt = sixth.clone();
    *corrupt.last_mut().unwrap() ^= 0xff;
    bytes.truncate(len);
    bytes.extend_from_slice(&corrupt);
    bytes.extend_from_slice(&[0xab; 100]);
    std::fs::write(&path, &bytes).unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), Offset(20));
    assert_eq!(read_all(&log, Offset(0)), good);
}

#[test]
fn corrupt_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..60 {
        append(&mut log, batch(i, 2, 400, NOW + i as i64));
    }
    let before = read_all(&log, Offset(0));
    log.close().unwrap();
    for entry in std::fs::read_dir(log_dir(dir.path())).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "index") {
            std::fs::write(&p, [0xffu8; 13]).unwrap();
        }
    }
    let log = open(dir.path(), small_segments());
    assert_eq!(read_all(&log, Offset(0)), before);
    assert_eq!(
        log.offset_for_timestamp(NOW + 30).unwrap().map(|x| x.0),
        Some(Offset(59))
    );
}

#[test]
fn timestamp_lookups_find_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..40i64 {
        append(&mut log, batch(i as u64, 5, 300, NOW + i * 100)); // records at +0..+4 ms
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((Offset(0), NOW)));
    assert_eq!(
        log.offset_for_timestamp(NOW + 1002).unwrap(),
        Some((Offset(52), NOW + 1002))
    );
    assert_eq!(
        log.offset_for_timestamp(NOW + 1005).unwrap(),
        Some((Offset(55), NOW + 1100))
    );
    assert_eq!(log.offset_for_timestamp(NOW + 100_000).unwrap(), None);
    assert_eq!(
        log.max_timestamp_and_offset().unwrap(),
        Some((Offset(199), NOW + 3904))
    );
}

#[test]
fn log_append_time_topics_restamp_timestamp_and_crc() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    let info = log
        .append(vec![batch(1, 3, 10, 5)], AppendOptions::client(NOW + 42))
        .unwrap();
    assert_eq!(info.log_append_time_ms, NOW + 42);
    let (_, bytes) = &read_all(&log, Offset(0))[0];
    let h = batch::validate_batch(bytes).unwrap();
    assert_eq!(
        (h.max_timestamp, h.timestamp_type()),
        (NOW + 42, TimestampType::LogAppendTime)
    );
}

#[test]
fn bad_batches_are_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 2000,
            ..LogConfig::default()
        },
    );
    append(&mut log, batch(0, 1, 10, NOW));
    let size = log.active_segment().size();
    let good = batch(1, 1, 10, NOW);
    let mut crc = good.to_vec();
    *crc.last_mut().unwrap() ^= 1;
    let mut magic = good.to_vec();
    magic[16] = 1;
    type Case = (Vec<Bytes>, fn(&AppendError) -> bool);
    let cases: Vec<Case> = vec![
        (vec![Bytes::from(crc.clone())], |e| {
            matches!(e, AppendError::Corrupt(BatchError::CrcMismatch { .. }))
        }),
        (vec![Bytes::from(magic)], |e| {
            matches!(e, AppendError::Corrupt(BatchError::UnsupportedMagic(1)))
        }),
        (vec![good.slice(..good.len() - 3)], |e| {
            matches!(e, AppendError::Corrupt(BatchError::Truncated { .. }))
        }),
        (vec![Bytes::from_static(&[0u8; 5])], |e| {
            matches!(e, AppendError::Corrupt(_))
        }),
        (vec![], |e| matches!(e, AppendError::Empty)),
        (vec![batch(2, 1, 3000, NOW)], |e| {
            matches!(e, AppendError::RecordTooLarge { max: 2000, .. })
        }),
        // A good batch followed by a corrupt one in the same request: all or nothing.
        (vec![good.clone(), Bytes::from(crc)], |e| {
            matches!(e, AppendError::Corrupt(_))
        }),
    ];
    for (input, check) in cases {
        let err = log.append(input, AppendOptions::client(NOW)).unwrap_err();
        assert!(check(&err), "unexpected error {err:?}");
        assert_eq!(log.active_segment().size(), size);
        assert_eq!(log.log_end_offset(), Offset(1));
    }
    // Record count inconsistent with the offset range (client batches).
    let mut v = good.to_vec();
    v[57..61].copy_from_slice(&5i32.to_be_bytes());
    let crc = batch::compute_crc(&v);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = log
        .append(vec![Bytes::from(v)], AppendOptions::client(NOW))
        .unwrap_err();
    assert!(
        matches!(err, AppendError::Corrupt(BatchError::InvalidRecord(_))),
        "{err:?}"
    );
    append(&mut log, good);
    assert_eq!(log.log_end_offset(), Offset(2));
}

#[test]
fn replication_appends_keep_offsets_and_reject_going_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let opts = AppendOptions {
        origin: AppendOrigin::Replication,
        leader_epoch: -1,
        now_ms: NOW,
    };
    let mut b = batch(0, 2, 10, NOW).to_vec();
    batch::set_base_offset(&mut b, Offset(100));
    batch::set_partition_leader_epoch(&mut b, 3);
    // A follower far behind starts at the leader's log start.
    log.truncate_fully_and_start_at(Offset(100)).unwrap();
    let info = log.append(vec![Bytes::from(b.clone())], opts).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset),
        (Offset(100), Offset(101))
    );
    assert_eq!(log.leader_epochs().latest_epoch(), Some(3));
    let err = log.append(vec![Bytes::from(b)], opts).unwrap_err();
    assert!(matches!(err, AppendError::OffsetsOutOfOrder { .. }));
}

#[test]
fn truncate_to_removes_batches_segments_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..60 {
        let epoch = (i / 20) as i32;
        let opts = AppendOptions {
            leader_epoch: epoch,
            ..AppendOptions::client(NOW)
        };
        log.append(vec![batch(i, 2, 400, NOW)], opts).unwrap();
    }
    log.update_high_watermark(Offset(120));
    let before = read_all(&log, Offset(0));
    assert_eq!(log.leader_epochs().latest_epoch(), Some(2));
    assert!(log.truncate_to(Offset(51)).unwrap()); // mid-batch: the batch at 50 goes too
    assert_eq!(log.log_end_offset(), Offset(50));
    assert_eq!(log.high_watermark(), Offset(50));
    assert_eq!(log.leader_epochs().latest_epoch(), Some(1));
    assert_eq!(read_all(&log, Offset(0)), before[..25].to_vec());
    append(&mut log, batch(7, 1, 10, NOW));
    log.close().unwrap();
    let log = open(dir.path(), small_segments());
    assert_eq!(log.log_end_offset(), Offset(51));
    assert_eq!(read_all(&log, Offset(0))[..25], before[..25]);
}

#[test]
fn delete_records_moves_log_start_and_drops_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..60 {
        append(&mut log, batch(i, 2, 400, NOW));
    }
    let segments = log.segment_count();
    assert!(matches!(
        log.delete_records_before(Offset(10)),
        Err(LogOpError::BeyondHighWatermark { .. })
    ));
    log.update_high_watermark(Offset(120));
    assert_eq!(log.delete_records_before(Offset(55)).unwrap(), Offset(55));
    assert_eq!(log.log_start_offset(), Offset(55));
    assert!(log.segment_count() < segments);
    assert!(log.segments().next().unwrap().base_offset <= Offset(55));
    assert!(matches!(
        log.read(Offset(10), 100, Offset(120), true),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, Offset(55))[0].0, Offset(54)); // the batch holding 55
    drop(log);
    let log = open(dir.path(), small_segments());
    assert_eq!(log.log_start_offset(), Offset(55));
}

#[test]
fn retention_by_time_and_size_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1000,
        ..small_segments()
    };
    let mut log = open(dir.path(), config.clone());
    for i in 0..60i64 {
        append(&mut log, batch(i as u64, 2, 400, NOW + i * 100));
    }
    log.update_high_watermark(log.log_end_offset());
    let segs = log.segment_count();
    // Nothing is older than 1 s at NOW + 2 s? Records span NOW .. NOW+5.9 s.
    let d = log.apply_retention(NOW + 3000).unwrap();
    assert!(d.segments > 0 && log.segment_count() == segs - d.segments);
    assert!(
        log.segments().all(|s| s.max_timestamp() >= NOW + 2000
            || s.base_offset == log.active_segment().base_offset)
    );
    assert_eq!(
        log.log_start_offset(),
        log.segments().next().unwrap().base_offset
    );
    // Everything expired: all but the active segment go.
    log.apply_retention(NOW + 1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert!(log.active_segment().size() > 0);
    // Size retention.
    let dir2 = tempfile::tempdir().unwrap();
    let mut log = open(
        dir2.path(),
        LogConfig {
            retention_bytes: 40_000,
            retention_ms: -1,
            ..small_segments()
        },
    );
    for i in 0..100 {
        append(&mut log, batch(i, 2, 400, NOW));
    }
    log.update_high_watermark(log.log_end_offset());
    log.apply_retention(NOW).unwrap();
    assert!(
        log.size_bytes() <= 40_000 + 16 * 1024,
        "{}",
        log.size_bytes()
    );
    assert!(log.size_bytes() > 40_000 - 16 * 1024);
    // Compacted topics are not subject to retention.
    let dir3 = tempfile::tempdir().unwrap();
    let mut log = open(
        dir3.path(),
        LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            retention_ms: 1,
            ..small_segments()
        },
    );
    for i in 0..60 {
        append(&mut log, batch(i, 2, 400, NOW));
    }
    assert_eq!(log.apply_retention(NOW + 1_000_000).unwrap().segments, 0);
    // Nor are logs with an empty cleanup.policy, whatever their retention.
    let dir4 = tempfile::tempdir().unwrap();
    let mut log = open(
        dir4.path(),
        LogConfig {
            cleanup_policy: CleanupPolicy::None,
            retention_ms: 1,
            retention_bytes: 1,
            ..small_segments()
        },
    );
    for i in 0..60 {
        append(&mut log, batch(i, 2, 400, NOW));
    }
    log.update_high_watermark(log.log_end_offset());
    let segs = log.segment_count();
    assert!(segs > 1);
    assert_eq!(log.apply_retention(NOW + 1_000_000).unwrap().segments, 0);
    assert_eq!(log.segment_count(), segs);
}

#[test]
fn invalid_partition_directory_names_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["orders", "orders-x", "-1", "orders-1x"] {
        let err = UnifiedLog::open(dir.path().join(name), LogConfig::default(), NOW).unwrap_err();
        assert!(
            matches!(err, ringmq_engine::OpenError::InvalidDirName(_)),
            "{name}"
        );
    }
}
