//! The controller quorum's storage: the Raft log of metadata records, the vote, and the
//! state machine (the [`MetadataImage`]) with its snapshots — openraft's `RaftStorage`.
//!
//! On disk, in `<data dir>/__cluster_metadata/`:
//! - `raft.log`: one JSON entry per line, appended and fdatasync'ed before openraft is
//!   told; truncation (a new leader's conflicting suffix) and purging (after a snapshot)
//!   rewrite it atomically (both are rare: the metadata log is small);
//! - `raft.vote`, `raft.committed`: rewritten atomically (write, fdatasync, rename);
//! - `raft.snapshot`: the image with its last log id and membership.
//!
//! Applying an entry updates the image and hands it to the [`Publisher`], which makes it
//! the snapshot every shard reads and asks each shard to reconcile its partitions.
//! A data directory written before the quorum existed (`metadata.snapshot` +
//! `metadata.log`) is adopted once as the initial image.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Cursor, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftStorage, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::{Applied, QuorumNode, TypeConfig};
use crate::metadata::{self, MetadataImage};

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}
fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read(AnyError::new(&e)).into()
}

/// Where applied images go (the broker's published snapshot and its shards).
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, image: Arc<MetadataImage>);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, QuorumNode>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, QuorumNode>,
    image: MetadataImage,
}

struct Inner {
    dir: PathBuf,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    log_file: File,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, QuorumNode>,
    image: MetadataImage,
    snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
    /// The image came from a pre-quorum data directory and is not yet in a snapshot.
    legacy_pending: bool,
}

/// The store; cloned as `Arc` into openraft's log and state-machine halves.
pub struct MetaStore {
    inner: Mutex<Inner>,
    publisher: Box<dyn Publisher>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl MetaStore {
    /// Opens the store in `dir` (creating it). `node_id` owns the partitions of an adopted
    /// single-node data directory.
    pub fn open(
        dir: PathBuf,
        node_id: i32,
        publisher: Box<dyn Publisher>,
    ) -> io::Result<Arc<Self>> {
        fs::create_dir_all(&dir)?;
        let snapshot: Option<StoredSnapshot> = read_json(&dir.join("raft.snapshot"))?;
        let vote = read_json(&dir.join("raft.vote"))?;
        let committed = read_json(&dir.join("raft.committed"))?.flatten();
        let mut legacy_pending = false;
        let (image, last_applied, membership) = match &snapshot {
            Some(s) => (s.image.clone(), s.last_applied, s.membership.clone()),
            None => {
                let mut image = match metadata::load_legacy(&dir)? {
                    Some(image) => {
                        legacy_pending = true;
                        tracing::info!(
                            topics = image.topics.len(),
                            "adopting the single-node metadata into the controller quorum"
                        );
                        image
                    }
                    None => MetadataImage {
                        next_producer_id: 1000,
                        ..Default::default()
                    },
                };
                image.adopt_single_node(node_id);
                (image, None, StoredMembership::default())
            }
        };
        let log_path = dir.join("raft.log");
        let mut log = BTreeMap::new();
        let mut valid_len = 0u64;
        if let Ok(f) = File::open(&log_path) {
            for line in io::BufReader::new(f).split(b'\n') {
                let line = line?;
                match serde_json::from_slice::<Entry<TypeConfig>>(&line) {
                    Ok(e) => {
                        valid_len += line.len() as u64 + 1;
                        log.insert(e.log_id.index, e);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping a torn metadata log tail");
                        break;
                    }
                }
            }
        }
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        log_file.set_len(valid_len)?;
        let last_purged = snapshot.as_ref().and_then(|s| s.meta.last_log_id);
        let store = Arc::new(MetaStore {
            inner: Mutex::new(Inner {
                dir,
                log,
                log_file,
                last_purged,
                vote,
                committed,
                last_applied,
                membership,
                image,
                snapshot,
                snapshot_seq: 0,
                legacy_pending,
            }),
            publisher,
        });
        store.publish_current();
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic mid-update in this store: the process is going
        // down through the panic hook anyway; keep serving what is there.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last log index this node knows is committed (replayed at startup).
    /// The id of the last entry in the log (or of the last one purged into a snapshot).
    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let inner = self.lock();
        inner
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged)
    }

    pub fn committed_index(&self) -> u64 {
        self.lock().committed.map_or(0, |l| l.index)
    }

    /// The current image (what was last published).
    pub fn image(&self) -> MetadataImage {
        self.lock().image.clone()
    }

    fn publish_current(&self) {
        let image = Arc::new(self.lock().image.clone());
        self.publisher.publish(image);
    }
}

impl Inner {
    fn rewrite_log(&mut self) -> io::Result<()> {
        let mut text = Vec::new();
        for e in self.log.values() {
            serde_json::to_writer(&mut text, e).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        crate::storage::atomic_file::write(&self.dir, "raft.log", &text)?;
        self.log_file = OpenOptions::new()
            .append(true)
            .open(self.dir.join("raft.log"))?;
        Ok(())
    }

    fn build_snapshot(&mut self) -> io::Result<StoredSnapshot> {
        self.snapshot_seq += 1;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.snapshot_seq),
            None => format!("none-{}", self.snapshot_seq),
        };
        let s = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            image: self.image.clone(),
        };
        let bytes = serde_json::to_vec(&s).map_err(io::Error::other)?;
        crate::storage::atomic_file::write(&self.dir, "raft.snapshot", &bytes)?;
        if self.legacy_pending {
            metadata::retire_legacy(&self.dir)?;
            self.legacy_pending = false;
        }
        self.snapshot = Some(s.clone());
        Ok(s)
    }
}

// openraft's StorageError is what its traits return; boxing it here would not shrink theirs.
#[allow(clippy::result_large_err)]
fn to_snapshot(s: &StoredSnapshot) -> StorageResult<Snapshot<TypeConfig>> {
    let bytes = serde_json::to_vec(&s).map_err(read_err)?;
    Ok(Snapshot {
        meta: s.meta.clone(),
        snapshot: Box::new(Cursor::new(bytes)),
    })
}

impl RaftLogReader<TypeConfig> for Arc<MetaStore> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(self
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Arc<MetaStore> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let s = self.lock().build_snapshot().map_err(write_err)?;
        to_snapshot(&s)
    }
}

impl RaftStorage<TypeConfig> for Arc<MetaStore> {
    type LogReader = Self;
    type SnapshotBuilder = Self;

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        let bytes = serde_json::to_vec(vote).map_err(write_err)?;
        crate::storage::atomic_file::write(&inner.dir, "raft.vote", &bytes).map_err(write_err)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut inner = self.lock();
        let bytes = serde_json::to_vec(&committed).map_err(write_err)?;
        crate::storage::atomic_file::write(&inner.dir, "raft.committed", &bytes)
            .map_err(write_err)?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.lock().committed)
    }

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_log_id = self.last_log_id();
        Ok(LogState {
            last_purged_log_id: self.lock().last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        Arc::clone(self)
    }

    async fn append_to_log<I>(&mut self, entries: I) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let mut inner = self.lock();
        let mut text = Vec::new();
        let mut added = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut text, &e).map_err(write_err)?;
            text.push(b'\n');
            added.push(e);
        }
        inner.log_file.write_all(&text).map_err(write_err)?;
        inner.log_file.sync_data().map_err(write_err)?;
        for e in added {
            inner.log.insert(e.log_id.index, e);
        }
        Ok(())
    }

    async fn delete_conflict_logs_since(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        inner.log.split_off(&log_id.index);
        inner.rewrite_log().map_err(write_err)
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.lock();
        let keep = inner.log.split_off(&(log_id.index + 1));
        inner.log = keep;
        inner.last_purged = Some(log_id);
        inner.rewrite_log().map_err(write_err)
    }

    async fn last_applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, QuorumNode>)> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> StorageResult<Vec<Applied>> {
        let mut replies = Vec::with_capacity(entries.len());
        let image = {
            let mut inner = self.lock();
            for e in entries {
                inner.last_applied = Some(e.log_id);
                match &e.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(p) => {
                        for r in &p.records {
                            inner.image.apply(r);
                        }
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    }
                }
                inner.image.offset = e.log_id.index;
                replies.push(Applied {
                    index: e.log_id.index,
                });
            }
            if inner.legacy_pending {
                inner.build_snapshot().map_err(write_err)?;
            }
            Arc::new(inner.image.clone())
        };
        self.publisher.publish(image);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Arc::clone(self)
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, QuorumNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let s: StoredSnapshot = serde_json::from_slice(snapshot.get_ref()).map_err(read_err)?;
        let image = {
            let mut inner = self.lock();
            let bytes = serde_json::to_vec(&s).map_err(write_err)?;
            crate::storage::atomic_file::write(&inner.dir, "raft.snapshot", &bytes)
                .map_err(write_err)?;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.image = s.image.clone();
            inner.legacy_pending = false;
            inner.snapshot = Some(StoredSnapshot {
                meta: meta.clone(),
                ..s
            });
            Arc::new(inner.image.clone())
        };
        self.publisher.publish(image);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.lock();
        inner.snapshot.as_ref().map(to_snapshot).transpose()
    }
}
