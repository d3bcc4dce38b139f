//! Sparse indexes of a segment: `.index` (offset -> file position) and `.timeindex`
//! (timestamp -> offset), in Kafka's on-disk format.
//!
//! On disk (big-endian, no header):
//! ```text
//! .index      entry = relativeOffset u32 | position u32          (8 bytes)
//! .timeindex  entry = timestamp i64      | relativeOffset u32    (12 bytes)
//! ```
//! An entry is added after every `index.interval.bytes` of appended log bytes, pointing at
//! the start of a batch. The entries live in memory (a `Vec`, binary-searched) and are
//! written to the file lazily, when the log flushes or rolls: they are a pure function of
//! the `.log` file, so after a crash the loader rebuilds any index it cannot trust.
//!
//! Invariants: offset-index relative offsets and positions strictly increase; time-index
//! timestamps strictly increase (an entry is only added for a new maximum timestamp).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::offset::{FilePosition, Offset, RelativeOffset};

/// One entry kind: its fixed size and encoding.
pub trait IndexEntry: Copy + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
    /// Whether `self` may follow `prev` (strict monotonicity).
    fn follows(&self, prev: &Self) -> bool;
    fn relative_offset(&self) -> RelativeOffset;
}

/// `.index` entry: the batch starting at `position` has last offset `base + relative`
/// (Kafka indexes a batch by its last offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative: RelativeOffset,
    pub position: FilePosition,
}

/// `.timeindex` entry: records up to `timestamp` end at or before offset `base + relative`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative: RelativeOffset,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative.0.to_be_bytes());
        out.extend_from_slice(&self.position.0.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative: RelativeOffset(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            position: FilePosition(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
        }
    }
    fn follows(&self, prev: &Self) -> bool {
        self.relative > prev.relative && self.position > prev.position
    }
    fn relative_offset(&self) -> RelativeOffset {
        self.relative
    }
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative.0.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative: RelativeOffset(u32::from_be_bytes([b[8], b[9], b[10], b[11]])),
        }
    }
    fn follows(&self, prev: &Self) -> bool {
        self.timestamp > prev.timestamp && self.relative >= prev.relative
    }
    fn relative_offset(&self) -> RelativeOffset {
        self.relative
    }
}

/// Why an index file cannot be trusted (the loader then rebuilds it from the log).
#[derive(Debug, thiserror::Error)]
pub enum IndexLoadError {
    #[error("index {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("index {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// A sparse index over one segment.
#[derive(Debug)]
pub struct SparseIndex<E: IndexEntry> {
    path: PathBuf,
    base_offset: Offset,
    entries: Vec<E>,
    /// Entries `0..persisted` are in the file.
    persisted: usize,
    file: Option<File>,
}

pub type OffsetIndex = SparseIndex<OffsetEntry>;
pub type TimeIndex = SparseIndex<TimeEntry>;

impl<E: IndexEntry> SparseIndex<E> {
    /// A new empty index; the file is created (truncated) on first flush.
    pub fn new(path: PathBuf, base_offset: Offset) -> Self {
        SparseIndex {
            path,
            base_offset,
            entries: Vec::new(),
            persisted: 0,
            file: None,
        }
    }

    /// Loads and checks an index file. `check` rejects entries pointing outside the log.
    pub fn load(
        path: PathBuf,
        base_offset: Offset,
        check: impl Fn(&E) -> bool,
    ) -> Result<Self, IndexLoadError> {
        let io_err = |source| IndexLoadError::Io {
            path: path.clone(),
            source,
        };
        let bytes = std::fs::read(&path).map_err(io_err)?;
        let corrupt = |reason: String| IndexLoadError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() % E::SIZE != 0 {
            return Err(corrupt(format!(
                "size {} not a multiple of {}",
                bytes.len(),
                E::SIZE
            )));
        }
        let mut entries: Vec<E> = Vec::with_capacity(bytes.len() / E::SIZE);
        for chunk in bytes.chunks_exact(E::SIZE) {
            let e = E::decode(chunk);
            if let Some(prev) = entries.last()
                && !e.follows(prev)
            {
                return Err(corrupt(format!("entry {e:?} does not follow {prev:?}")));
            }
            if !check(&e) {
                return Err(corrupt(format!("entry {e:?} points outside the log")));
            }
            entries.push(e);
        }
        let persisted = entries.len();
        Ok(SparseIndex {
            path,
            base_offset,
            entries,
            persisted,
            file: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry; it must follow the last one (a durability invariant: a misordered
    /// index would serve wrong data).
    pub fn append(&mut self, e: E) {
        if let Some(prev) = self.entries.last() {
            assert!(
                e.follows(prev),
                "{}: index entry {e:?} after {prev:?}",
                self.path.display()
            );
        }
        self.entries.push(e);
    }

    /// Index of the last entry for which `le(entry)` holds, given `le` is monotone.
    fn floor_by(&self, le: impl Fn(&E) -> bool) -> Option<&E> {
        let n = self.entries.partition_point(|e| le(e));
        n.checked_sub(1).map(|i| &self.entries[i])
    }

    /// Drops entries at or after `offset` (log truncation).
    pub fn truncate_to(&mut self, offset: Offset) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset().absolute(self.base_offset) < offset);
        self.entries.truncate(keep);
        if self.persisted > keep {
            self.persisted = keep;
            if let Some(f) = self.file_mut()? {
                f.set_len((keep * E::SIZE) as u64)?;
            }
        }
        Ok(())
    }

    fn file_mut(&mut self) -> io::Result<Option<&File>> {
        if self.file.is_none() && self.path.exists() {
            self.file = Some(OpenOptions::new().read(true).write(true).open(&self.path)?);
        }
        Ok(self.file.as_ref())
    }

    /// Writes entries not yet in the file (page cache; fdatasync of [`Self::sync_handle`]
    /// makes them durable).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            // Not truncated on open: cut to the persisted entries just below.
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            f.set_len((self.persisted * E::SIZE) as u64)?;
            self.file = Some(f);
        }
        if self.persisted == self.entries.len() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * E::SIZE);
        for e in &self.entries[self.persisted..] {
            e.encode(&mut buf);
        }
        if let Some(f) = &self.file {
            f.write_all_at(&buf, (self.persisted * E::SIZE) as u64)?;
        }
        self.persisted = self.entries.len();
        Ok(())
    }

    /// A handle for fdatasync off the shard thread (None before the first flush).
    pub fn sync_handle(&self) -> io::Result<Option<File>> {
        self.file.as_ref().map(File::try_clone).transpose()
    }

    /// Renames the file (segment swap by the cleaner).
    pub fn rename_to(&mut self, path: PathBuf) -> io::Result<()> {
        if self.path.exists() {
            std::fs::rename(&self.path, &path)?;
        }
        self.path = path;
        Ok(())
    }
}

impl OffsetIndex {
    /// Where to start scanning for the batch holding `target`: the position of the last
    /// indexed batch whose last offset is <= `target`, or the segment start.
    pub fn lookup(&self, target: Offset) -> FilePosition {
        let base = self.base_offset;
        self.floor_by(|e| e.relative.absolute(base) <= target)
            .map_or(FilePosition(0), |e| e.position)
    }

    /// The position of the last indexed batch starting at or before byte `position`.
    pub fn lookup_position(&self, position: FilePosition) -> FilePosition {
        self.floor_by(|e| e.position <= position)
            .map_or(FilePosition(0), |e| e.position)
    }
}

impl TimeIndex {
    /// The offset to start scanning from for the first record with timestamp >= `target`:
    /// the offset of the last entry whose timestamp is < `target` (all records before it
    /// are older), or the segment start.
    pub fn lookup(&self, target: i64) -> Offset {
        let base = self.base_offset;
        self.floor_by(|e| e.timestamp < target)
            .map_or(base, |e| e.relative.absolute(base))
    }

    /// Largest timestamp recorded in this index.
    pub fn max_timestamp(&self) -> Option<(i64, Offset)> {
        self.entries
            .last()
            .map(|e| (e.timestamp, e.relative.absolute(self.base_offset)))
    }

    /// Adds an entry when `timestamp` is a new maximum.
    pub fn maybe_append(&mut self, timestamp: i64, offset: Offset) {
        let Some(relative) = offset.relative_to(self.base_offset) else {
            return;
        };
        let e = TimeEntry {
            timestamp,
            relative,
        };
        if self.entries.last().is_none_or(|prev| e.follows(prev)) {
            self.entries.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_floor_and_persist_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let mut idx = OffsetIndex::new(path.clone(), Offset(100));
        for i in 1..=10u32 {
            idx.append(OffsetEntry {
                relative: RelativeOffset(i * 10),
                position: FilePosition(i * 4096),
            });
        }
        assert_eq!(idx.lookup(Offset(99)), FilePosition(0));
        assert_eq!(idx.lookup(Offset(110)), FilePosition(4096));
        assert_eq!(idx.lookup(Offset(125)), FilePosition(8192));
        assert_eq!(idx.lookup(Offset(10_000)), FilePosition(40960));
        assert_eq!(idx.lookup_position(FilePosition(5000)), FilePosition(4096));
        idx.flush().unwrap();
        idx.truncate_to(Offset(150)).unwrap();
        assert_eq!(idx.len(), 4);
        idx.append(OffsetEntry {
            relative: RelativeOffset(60),
            position: FilePosition(30000),
        });
        idx.flush().unwrap();
        let loaded = OffsetIndex::load(path, Offset(100), |_| true).unwrap();
        assert_eq!(loaded.entries(), idx.entries());
    }

    #[test]
    fn corrupt_index_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(OffsetIndex::load(path.clone(), Offset(0), |_| true).is_err());
        let mut b = Vec::new();
        OffsetEntry {
            relative: RelativeOffset(5),
            position: FilePosition(100),
        }
        .encode(&mut b);
        OffsetEntry {
            relative: RelativeOffset(4),
            position: FilePosition(200),
        }
        .encode(&mut b);
        std::fs::write(&path, &b).unwrap();
        assert!(OffsetIndex::load(path.clone(), Offset(0), |_| true).is_err());
        b.truncate(8);
        std::fs::write(&path, &b).unwrap();
        assert!(OffsetIndex::load(path.clone(), Offset(0), |e| e.position.0 < 50).is_err());
        assert!(OffsetIndex::load(path, Offset(0), |_| true).is_ok());
    }

    #[test]
    fn time_index_only_grows_and_finds_scan_start() {
        let mut t = TimeIndex::new(PathBuf::from("/nonexistent"), Offset(0));
        t.maybe_append(100, Offset(5));
        t.maybe_append(90, Offset(9)); // not a new maximum
        t.maybe_append(200, Offset(20));
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(50), Offset(0));
        assert_eq!(t.lookup(150), Offset(5));
        assert_eq!(t.lookup(200), Offset(5));
        assert_eq!(t.lookup(201), Offset(20));
        assert_eq!(t.max_timestamp(), Some((200, Offset(20))));
    }
}
