//! Crash test (harness = false): a child process appends to a synchronous-flush log with
//! 8 concurrent appenders and prints every acknowledgement; the parent kills it with
//! SIGKILL at a random moment, sometimes also tears the segment tail (a torn write a
//! kill -9 rarely produces on its own), reopens the log and checks that
//!   - every acknowledged batch is there, byte-identical, at its offset;
//!   - every served batch validates and offsets are contiguous from the log start;
//!   - nothing after the last whole batch survived (file length == segment size).
//!
//! The child reopens the same directory each round, so recovery runs repeatedly, and the
//! append method rotates through pwritev, io_uring and O_DIRECT.
//!
//! `RINGMQ_CRASH_ROUNDS` sets the number of kill rounds (default 12).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use ringmq_engine::{AppendMethod, AppendOptions, LogConfig, LogHandle, Offset};

const APPENDERS: u64 = 8;
const CHILD_ENV: &str = "RINGMQ_CRASH_CHILD_DIR";

fn config(method: AppendMethod) -> LogConfig {
    LogConfig {
        flush_messages: 1,
        segment_bytes: 96 * 1024,
        append_method: method,
        ..LogConfig::default()
    }
}

fn method_for(round: u64) -> AppendMethod {
    [
        AppendMethod::Pwritev,
        AppendMethod::IoUring,
        AppendMethod::Direct,
    ][(round % 3) as usize]
}

/// The batch appender `a` sends as its `seq`-th append in `round` (deterministic).
fn expected_batch(round: u64, a: u64, seq: u64) -> bytes::Bytes {
    let seed = round * 1_000_000 + a * 10_000 + seq;
    batch(
        seed,
        1 + (seed % 5) as usize,
        50 + (seed as usize * 37) % 4000,
        NOW,
    )
}

fn child(dir: &Path, round: u64) {
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let handle = LogHandle::new(open(dir, config(method_for(round))));
        let tasks = (0..APPENDERS).map(|a| {
            let h = handle.clone();
            async move {
                for seq in 0..100_000 {
                    let b = expected_batch(round, a, seq);
                    let info = h.append(vec![b], AppendOptions::client(NOW)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {round} {a} {seq}", info.first_offset.0).unwrap();
                    out.flush().unwrap();
                }
            }
        });
        join_all(tasks).await;
    });
}

fn parent() {
    let rounds: u64 = std::env::var("RINGMQ_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(12);
    let root = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, root.path())
            .env("RINGMQ_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        let delay = Duration::from_millis(30 + next() % 400);
        let start = Instant::now();
        while start.elapsed() < delay {
            std::thread::yield_now();
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap())
                .collect();
            let prev = acked.insert(f[0] as i64, (f[1], f[2], f[3]));
            assert!(prev.is_none(), "offset {} acknowledged twice", f[0]);
        }
        if round % 2 == 1 {
            tear_tail(root.path(), next());
        }
        verify(root.path(), &acked, round);
        eprintln!(
            "round {round} ({:?}): {} acks this round, {} in total",
            method_for(round),
            lines.len(),
            acked.len()
        );
    }
    assert!(
        acked.len() as u64 > rounds * 10,
        "too few acknowledgements to mean anything"
    );
}

/// Appends a partial batch or garbage to the active segment, as a torn write would leave.
fn tear_tail(root: &Path, r: u64) {
    let dir = log_dir(root);
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let active = logs.last().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(active)
        .unwrap();
    let torn = stamped(&expected_batch(999, 0, r % 100), Offset(0));
    let cut = 1 + (r as usize % (torn.len() - 1));
    if r.is_multiple_of(3) {
        f.write_all(&[0x5a; 333]).unwrap();
    } else {
        f.write_all(&torn[..cut]).unwrap();
    }
}

fn verify(root: &Path, acked: &BTreeMap<i64, (u64, u64, u64)>, round: u64) {
    let log = open(root, config(AppendMethod::Pwritev));
    let served = read_all(&log, log.log_start_offset());
    let mut expected_next = log.log_start_offset();
    for (base, bytes) in &served {
        assert_eq!(*base, expected_next, "round {round}: gap in offsets");
        let h = ringmq_engine::batch::validate_batch(bytes).unwrap();
        expected_next = h.next_offset();
    }
    assert_eq!(expected_next, log.log_end_offset());
    let by_offset: BTreeMap<i64, &Vec<u8>> = served.iter().map(|(o, b)| (o.0, b)).collect();
    for (offset, (r, a, seq)) in acked {
        let stored = by_offset
            .get(offset)
            .unwrap_or_else(|| panic!("round {round}: acknowledged batch at {offset} lost"));
        let want = stamped(&expected_batch(*r, *a, *seq), Offset(*offset));
        assert_eq!(**stored, want, "round {round}: batch at {offset} differs");
    }
    for seg in log.segments() {
        let len = std::fs::metadata(seg.log_path()).unwrap().len();
        assert_eq!(
            len,
            u64::from(seg.size()),
            "round {round}: bytes after the last batch survived"
        );
    }
    log.close().unwrap();
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let round = std::env::var("RINGMQ_CRASH_ROUND")
            .unwrap()
            .parse()
            .unwrap();
        child(Path::new(&dir), round);
        return;
    }
    let start = Instant::now();
    parent();
    println!(
        "test kill_9_mid_append_loses_no_acknowledged_batch ... ok ({:.1}s)",
        start.elapsed().as_secs_f64()
    );
    println!("\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
