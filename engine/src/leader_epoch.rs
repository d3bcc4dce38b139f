//! `LeaderEpochFileCache`: the start offset of each leader epoch of a partition, persisted
//! as `leader-epoch-checkpoint` (`epoch startOffset` per line).
//!
//! Replication uses it to answer OffsetForLeaderEpoch and to truncate a follower's log
//! after a leader change. Invariant: epochs and start offsets both strictly increase.

use std::path::PathBuf;

use crate::checkpoint::{self, CheckpointError};
use crate::offset::Offset;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: Offset,
}

#[derive(Debug)]
pub struct LeaderEpochFileCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochFileCache {
    /// Loads the cache; a malformed file is an error (the caller decides to rebuild).
    pub fn load(path: PathBuf) -> Result<Self, CheckpointError> {
        let mut entries = Vec::new();
        for fields in checkpoint::read(&path)?.unwrap_or_default() {
            let parsed = match fields.as_slice() {
                [e, o] => e.parse().ok().zip(o.parse().ok()),
                _ => None,
            };
            let Some((epoch, start)) = parsed else {
                return Err(CheckpointError::Malformed {
                    path: path.clone(),
                    reason: format!("bad entry {fields:?}"),
                });
            };
            entries.push(EpochEntry {
                epoch,
                start_offset: Offset(start),
            });
        }
        Ok(LeaderEpochFileCache { path, entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`, if it is a new epoch. Returns whether
    /// the cache changed (and so must be persisted).
    pub fn assign(&mut self, epoch: i32, start_offset: Offset) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|e| e >= epoch) {
            return false;
        }
        // A new epoch starting at or before an older epoch's start supersedes it.
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// `(epoch, end offset)` for OffsetForLeaderEpoch: the end offset of the largest epoch
    /// <= `epoch` is the start offset of the next epoch, or `log_end_offset` for the latest.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: Offset) -> Option<(i32, Offset)> {
        let i = self
            .entries
            .partition_point(|e| e.epoch <= epoch)
            .checked_sub(1)?;
        let end = self
            .entries
            .get(i + 1)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((self.entries[i].epoch, end))
    }

    /// Drops epochs starting at or after `offset` (log truncation).
    pub fn truncate_from_end(&mut self, offset: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < offset);
        before != self.entries.len()
    }

    /// Drops epochs wholly before the new log start, keeping the one containing it.
    pub fn truncate_from_start(&mut self, log_start: Offset) -> bool {
        let keep_from = self
            .entries
            .partition_point(|e| e.start_offset <= log_start);
        if keep_from <= 1 {
            return false;
        }
        self.entries.drain(..keep_from - 1);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = first.start_offset.max(log_start);
        }
        true
    }

    pub fn persist(&self) -> Result<(), CheckpointError> {
        self.checkpoint().write()
    }

    /// The checkpoint file as the cache stands, to be written elsewhere (off a thread
    /// that must not wait for the disk).
    pub fn checkpoint(&self) -> EpochCheckpoint {
        EpochCheckpoint {
            path: self.path.clone(),
            lines: self
                .entries
                .iter()
                .map(|e| format!("{} {}", e.epoch, e.start_offset))
                .collect(),
        }
    }
}

/// A leader-epoch checkpoint's contents, taken from the cache, not yet written.
#[derive(Debug)]
pub struct EpochCheckpoint {
    path: PathBuf,
    lines: Vec<String>,
}

impl EpochCheckpoint {
    /// Writes the file durably (temporary file, sync, rename, directory sync).
    pub fn write(&self) -> Result<(), CheckpointError> {
        checkpoint::write(&self.path, &self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_assign_lookup_truncate_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(checkpoint::LEADER_EPOCH_CHECKPOINT);
        let mut c = LeaderEpochFileCache::load(path.clone()).unwrap();
        assert!(c.assign(0, Offset(0)));
        assert!(!c.assign(0, Offset(10)));
        assert!(c.assign(2, Offset(50)));
        assert!(c.assign(5, Offset(80)));
        assert_eq!(c.end_offset_for(0, Offset(100)), Some((0, Offset(50))));
        assert_eq!(c.end_offset_for(3, Offset(100)), Some((2, Offset(80))));
        assert_eq!(c.end_offset_for(9, Offset(100)), Some((5, Offset(100))));
        c.persist().unwrap();
        assert_eq!(
            LeaderEpochFileCache::load(path.clone()).unwrap().entries(),
            c.entries()
        );
        assert!(c.truncate_from_end(Offset(60)));
        assert_eq!(c.latest_epoch(), Some(2));
        assert!(c.truncate_from_start(Offset(55)));
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: Offset(55)
            }]
        );
    }
}
