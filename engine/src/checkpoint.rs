//! Checkpoint files in Kafka's text format, written atomically.
//!
//! ```text
//! 0                      <- version
//! 2                      <- entry count
//! <field> <field> ...    <- one entry per line
//! ```
//! Kafka keeps `recovery-point-offset-checkpoint`, `log-start-offset-checkpoint` and
//! `replication-offset-checkpoint` per log directory with `topic partition offset` entries.
//! ringmq writes the same files with the same entry format **per partition directory**:
//! partitions belong to shards, and a per-directory file would be mutable state shared by
//! every shard. `leader-epoch-checkpoint` (`epoch startOffset` entries) is per partition in
//! Kafka too.
//!
//! A write goes to `<name>.<n>.tmp` (unique per write, so a background flush and a
//! foreground write of the same checkpoint never share a temp file), is fdatasync'ed,
//! renamed over the old file, and the directory is fsync'ed, so a crash leaves either the
//! old or the new checkpoint. The loader removes stray `.tmp` files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_OFFSET_CHECKPOINT: &str = "log-start-offset-checkpoint";
pub const REPLICATION_OFFSET_CHECKPOINT: &str = "replication-offset-checkpoint";
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
pub const CLEANER_OFFSET_CHECKPOINT: &str = "cleaner-offset-checkpoint";

const VERSION: &str = "0";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path}: malformed ({reason})")]
    Malformed { path: PathBuf, reason: String },
}

/// Writes `entries` (each a line of space-separated fields) atomically.
pub fn write(path: &Path, entries: &[String]) -> Result<(), CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{n}.tmp"));
    let tmp = path.with_file_name(tmp_name);
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    for e in entries {
        text.push_str(e);
        text.push('\n');
    }
    let mut f = File::create(&tmp).map_err(io_err)?;
    f.write_all(text.as_bytes()).map_err(io_err)?;
    f.sync_data().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    }
    Ok(())
}

/// Reads a checkpoint; `Ok(None)` when the file does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<Vec<String>>>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let malformed = |reason: &str| CheckpointError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err(malformed("unknown version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| malformed("missing entry count"))?;
    let entries: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    if entries.len() != count {
        return Err(malformed("entry count does not match"));
    }
    Ok(Some(entries))
}

/// Reads a single `topic partition offset` entry (ringmq's per-partition checkpoints).
pub fn read_offset(path: &Path) -> Result<Option<i64>, CheckpointError> {
    let Some(entries) = read(path)? else {
        return Ok(None);
    };
    let offset = entries
        .first()
        .and_then(|e| e.get(2))
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| CheckpointError::Malformed {
            path: path.to_path_buf(),
            reason: "expected `topic partition offset`".into(),
        })?;
    Ok(Some(offset))
}

/// Writes a single `topic partition offset` entry.
pub fn write_offset(
    path: &Path,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), CheckpointError> {
    write(path, &[format!("{topic} {partition} {offset}")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(RECOVERY_POINT_CHECKPOINT);
        assert_eq!(read_offset(&p).unwrap(), None);
        write_offset(&p, "orders", 3, 12345).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "0\n1\norders 3 12345\n");
        assert_eq!(read_offset(&p).unwrap(), Some(12345));
        fs::write(&p, "0\n2\norders 3 1\n").unwrap();
        assert!(read(&p).is_err());
        fs::write(&p, "9\n0\n").unwrap();
        assert!(read(&p).is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(RECOVERY_POINT_CHECKPOINT)]
        );
    }
}
