//! The server's rooms and their one-way doors, checked.
//!
//! `server/src/` is divided into rooms (folders, plus the composition root's files at the
//! top). [`ROOMS`] lists them from the highest to the lowest; a file may name (`use
//! crate::…`, or a `crate::…` path in code) only its own room and the rooms below it. A
//! lower room that must call up owns a small trait or message type for it, implemented
//! above. This test reads every source file, finds each `crate::` path outside comments and
//! string literals, and fails on any path that runs upward, naming the file, the line and
//! the two rooms. The same order is written in the README's Layout section.
//!
//! Run it alone with `cargo test -p ringmq-server --test rooms`.

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The rooms, highest first, each with its one-line job. "root" is the composition root:
/// `lib.rs`, `main.rs`, `broker.rs` (wires the rooms and starts the shards), `signals.rs`
/// (process signals) and `logging.rs` (the log); everything else lives in a folder.
pub const ROOMS: &[(&str, &str)] = &[
    (
        "root",
        "composition root: starts the broker, wires the rooms, handles signals",
    ),
    (
        "admin",
        "the admin HTTP listener: metrics, tasks, TLS reload",
    ),
    (
        "net",
        "listeners, connections, framing, zero-copy and TLS sends",
    ),
    (
        "handlers",
        "one module per Kafka API, and the table that routes to them",
    ),
    (
        "transactions",
        "the transaction coordinator at work: state changes, markers, timeouts",
    ),
    (
        "replication",
        "follower fetchers, ISR changes, applying metadata to partitions",
    ),
    (
        "runtime",
        "the shards: threads, their context and inboxes, state they share",
    ),
    ("coordinator", "group coordinator and committed offsets"),
    (
        "cluster",
        "controller quorum, registration, metadata log and its publication",
    ),
    ("quota", "rate limits: replication throttles"),
    (
        "storage",
        "partitions on the engine: replica state, log dirs, deletion, strays",
    ),
    ("config", "broker and topic configs, Kafka's key tables"),
    (
        "security",
        "listeners' security: TLS, SASL/SCRAM, principals, ACL checks",
    ),
    ("metadata", "the metadata image and its records"),
    ("protocol", "Kafka wire framing helpers over kafka-protocol"),
    ("metrics", "the counters every room adds to"),
];

/// Top-level items of `lib.rs` that belong to the root room (its files and functions).
const ROOT_ITEMS: &[&str] = &["broker", "logging", "signals", "decode_request_frame"];

fn rank(room: &str) -> Option<usize> {
    ROOMS.iter().position(|(r, _)| *r == room)
}

/// The room a source file (relative to `src/`) belongs to.
fn room_of_file(rel: &Path) -> String {
    let mut parts = rel.components();
    let first = parts
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    if parts.next().is_none() {
        // A file at the top: the root's own, or a one-file room (`room.rs`).
        let stem = first.trim_end_matches(".rs");
        return match stem {
            "lib" | "main" => "root".to_owned(),
            s if ROOT_ITEMS.contains(&s) => "root".to_owned(),
            s => s.to_owned(),
        };
    }
    first
}

/// The room a `crate::<first>` path names.
fn room_of_path(first: &str) -> String {
    if ROOT_ITEMS.contains(&first) {
        "root".to_owned()
    } else {
        first.to_owned()
    }
}

/// Source text with comments, string and char literals blanked (lines kept), so doc links
/// and messages that mention a room are not imports.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if c == b'r' && (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"')) {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            i = j + close.len();
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if b.get(i) == Some(&b'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
        } else if c == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3; // 'x'
        } else if c == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// Every `crate::<name>` and `crate::{<name>, …}` in code, as (line, first path segment).
fn crate_paths(src: &str) -> Vec<(usize, String)> {
    let code = code_only(src);
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `ringmq_crate::`, not this crate
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push((n + 1, name));
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((n + 1, name));
                }
            }
        }
    }
    found
}

/// The upward paths of one file in room `from`: (line, room named).
fn back_edges(from: &str, src: &str) -> Vec<(usize, String)> {
    let Some(mine) = rank(from) else {
        return vec![(0, format!("<file in unknown room {from}>"))];
    };
    crate_paths(src)
        .into_iter()
        .filter_map(|(line, first)| {
            let to = room_of_path(&first);
            match rank(&to) {
                Some(r) if r >= mine => None,
                Some(_) => Some((line, to)),
                None => Some((line, format!("{to} (not a room)"))),
            }
        })
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_run_only_from_higher_rooms_to_lower_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut violations = Vec::new();
    let mut per_room: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let room = room_of_file(rel);
        *per_room.entry(room.clone()).or_default() += 1;
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, to) in back_edges(&room, &text) {
            violations.push(format!(
                "src/{}:{line}: room `{room}` names `{to}`, a room above it",
                rel.display()
            ));
        }
    }
    for (room, _) in ROOMS {
        assert!(
            per_room.contains_key(*room),
            "room `{room}` is listed but has no files"
        );
    }
    assert!(
        violations.is_empty(),
        "imports against the room order ({} rooms, highest first: {}):\n{}",
        ROOMS.len(),
        ROOMS
            .iter()
            .map(|(r, _)| *r)
            .collect::<Vec<_>>()
            .join(" > "),
        violations.join("\n")
    );
}

#[test]
fn a_planted_back_edge_is_found() {
    // storage naming runtime (above it), through a plain path and a grouped import.
    let planted = "use crate::metadata::MetadataImage;\n\
                   use crate::{config, runtime::shard::ShardCtx};\n\
                   fn f() { crate::handlers::dispatch(); }\n";
    let found = back_edges("storage", planted);
    assert_eq!(
        found,
        vec![(2, "runtime".to_owned()), (3, "handlers".to_owned())]
    );
    // The same names in comments, doc links and strings are not imports.
    let quiet = "//! See [`crate::handlers::HANDLERS`].\n\
                 /* crate::net */ const S: &str = \"crate::admin\";\n\
                 let r = r#\"crate::root\"#; let c = '\"';\n\
                 use crate::metadata::X;\n";
    assert!(back_edges("storage", quiet).is_empty());
    // A path to something that is no room is reported too.
    assert_eq!(
        back_edges("storage", "use crate::partition::Partition;\n"),
        vec![(1, "partition (not a room)".to_owned())]
    );
    // The root may name everything.
    assert!(back_edges("root", "use crate::admin::http;\nuse crate::net::x;\n").is_empty());
}
