//! Cluster metadata: topics, their partitions' owner shards and their configs.
//!
//! A single writer ([`MetadataStore`], behind a mutex: changes are rare — topic creation,
//! deletion, config changes) applies [`MetadataRecord`]s to an in-memory
//! [`MetadataImage`] and publishes each new image as an immutable `Arc` snapshot that every
//! shard reads without locking (`ArcSwap`). This is the state machine the cluster issue
//! will replicate with openraft; on one node the log is a local file.
//!
//! On disk (`<data dir>/__cluster_metadata/`): `metadata.log` holds one JSON record per
//! line, appended and fdatasync'ed before the change is published; `metadata.snapshot`
//! is the whole image, rewritten atomically every [`SNAPSHOT_EVERY`] records, after which
//! the log restarts. Loading = snapshot + replay of the log (a torn last line is dropped).
//! When the shard count changes, partitions placed on shards that no longer exist are
//! re-placed (balanced by count).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Records appended to the metadata log after this many are replaced by a snapshot.
pub const SNAPSHOT_EVERY: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    /// Owner shard of each partition (index = partition id).
    pub placement: Vec<usize>,
    /// Topic config overrides (Kafka keys).
    pub configs: BTreeMap<String, String>,
    pub internal: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicMeta>,
    /// Next producer id InitProducerId hands out.
    pub next_producer_id: i64,
    /// Metadata log offset this image reflects.
    pub offset: u64,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }
    /// Partitions per shard, for balanced placement.
    fn load_per_shard(&self, shards: usize) -> Vec<usize> {
        let mut load = vec![0usize; shards];
        for t in self.topics.values() {
            for &s in &t.placement {
                if s < shards {
                    load[s] += 1;
                }
            }
        }
        load
    }
    /// Owner shards for `count` new partitions, least-loaded first.
    pub fn place(&self, count: usize, shards: usize) -> Vec<usize> {
        let mut load = self.load_per_shard(shards.max(1));
        (0..count)
            .map(|_| {
                let (s, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, l)| (**l, *i))
                    .unwrap_or((0, &0));
                load[s] += 1;
                s
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    TopicCreated(TopicMeta),
    TopicDeleted {
        name: String,
    },
    PartitionsAdded {
        name: String,
        placement: Vec<usize>,
    },
    TopicConfigChanged {
        name: String,
        configs: BTreeMap<String, String>,
    },
    PartitionsMoved {
        name: String,
        placement: Vec<usize>,
    },
    ProducerIdsAllocated {
        next: i64,
    },
}

impl MetadataImage {
    fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::TopicCreated(t) => {
                self.topics.insert(t.name.clone(), t.clone());
            }
            MetadataRecord::TopicDeleted { name } => {
                self.topics.remove(name);
            }
            MetadataRecord::PartitionsAdded { name, placement } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.placement.extend_from_slice(placement);
                }
            }
            MetadataRecord::TopicConfigChanged { name, configs } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.configs = configs.clone();
                }
            }
            MetadataRecord::PartitionsMoved { name, placement } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.placement = placement.clone();
                }
            }
            MetadataRecord::ProducerIdsAllocated { next } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
        }
        self.offset += 1;
    }
}

/// The single writer: persists records, then publishes the new image.
pub struct MetadataStore {
    dir: PathBuf,
    log: File,
    records_since_snapshot: usize,
    image: MetadataImage,
    published: Arc<ArcSwap<MetadataImage>>,
}

fn ctx(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl MetadataStore {
    /// Loads (or creates) the metadata in `dir` and re-places partitions onto `shards`.
    pub fn open(dir: PathBuf, shards: usize) -> io::Result<MetadataStore> {
        fs::create_dir_all(&dir).map_err(|e| ctx("create", &dir, e))?;
        let snapshot_path = dir.join("metadata.snapshot");
        let mut image: MetadataImage = match fs::read(&snapshot_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", snapshot_path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => MetadataImage {
                next_producer_id: 1000,
                ..Default::default()
            },
            Err(e) => return Err(ctx("read", &snapshot_path, e)),
        };
        let log_path = dir.join("metadata.log");
        let mut valid_len = 0u64;
        let mut replayed = 0usize;
        if let Ok(f) = File::open(&log_path) {
            for line in io::BufReader::new(f).split(b'\n') {
                let line = line.map_err(|e| ctx("read", &log_path, e))?;
                match serde_json::from_slice::<MetadataRecord>(&line) {
                    Ok(r) => {
                        image.apply(&r);
                        valid_len += line.len() as u64 + 1;
                        replayed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping torn metadata log tail");
                        break;
                    }
                }
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ctx("open", &log_path, e))?;
        log.set_len(valid_len)
            .map_err(|e| ctx("truncate", &log_path, e))?;
        let published = Arc::new(ArcSwap::from_pointee(image.clone()));
        let mut store = MetadataStore {
            dir,
            log,
            records_since_snapshot: replayed,
            image,
            published,
        };
        store.replace_missing_shards(shards)?;
        Ok(store)
    }

    /// The shared snapshot handle shards read from.
    pub fn published(&self) -> Arc<ArcSwap<MetadataImage>> {
        Arc::clone(&self.published)
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Persists and applies `records`, then publishes the image.
    pub fn commit(&mut self, records: &[MetadataRecord]) -> io::Result<Arc<MetadataImage>> {
        let mut text = Vec::new();
        for r in records {
            serde_json::to_writer(&mut text, r).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        self.log.write_all(&text)?;
        self.log.sync_data()?;
        for r in records {
            self.image.apply(r);
        }
        self.records_since_snapshot += records.len();
        if self.records_since_snapshot >= SNAPSHOT_EVERY {
            self.snapshot()?;
        }
        let image = Arc::new(self.image.clone());
        self.published.store(Arc::clone(&image));
        Ok(image)
    }

    fn snapshot(&mut self) -> io::Result<()> {
        let path = self.dir.join("metadata.snapshot");
        let tmp = self.dir.join("metadata.snapshot.tmp");
        let mut f = File::create(&tmp)?;
        serde_json::to_writer(&mut f, &self.image).map_err(io::Error::other)?;
        f.sync_data()?;
        fs::rename(&tmp, &path)?;
        self.log.set_len(0)?;
        self.log.sync_data()?;
        File::open(&self.dir)?.sync_all()?;
        self.records_since_snapshot = 0;
        Ok(())
    }

    fn replace_missing_shards(&mut self, shards: usize) -> io::Result<()> {
        let mut load = self.image.load_per_shard(shards.max(1));
        let mut moves = Vec::new();
        for t in self.image.topics.values() {
            let mut placement = t.placement.clone();
            let mut changed = false;
            for s in placement.iter_mut().filter(|s| **s >= shards) {
                let best = (0..load.len()).min_by_key(|&i| (load[i], i)).unwrap_or(0);
                load[best] += 1;
                *s = best;
                changed = true;
            }
            if changed {
                moves.push(MetadataRecord::PartitionsMoved {
                    name: t.name.clone(),
                    placement,
                });
            }
        }
        if !moves.is_empty() {
            tracing::info!(
                topics = moves.len(),
                shards,
                "re-placing partitions for the new shard count"
            );
            self.commit(&moves)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, placement: Vec<usize>) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: Uuid::new_v4(),
            placement,
            configs: BTreeMap::new(),
            internal: false,
        }
    }

    #[test]
    fn records_survive_reopen_snapshot_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path().into(), 2).unwrap();
        let place = store.image().place(3, 2);
        assert_eq!(place, vec![0, 1, 0]);
        store
            .commit(&[MetadataRecord::TopicCreated(topic("a", place))])
            .unwrap();
        store
            .commit(&[MetadataRecord::TopicCreated(topic("b", vec![1]))])
            .unwrap();
        store
            .commit(&[MetadataRecord::TopicDeleted { name: "a".into() }])
            .unwrap();
        let image = store.image().clone();
        drop(store);
        // A torn last line is dropped.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("metadata.log"))
            .unwrap();
        f.write_all(b"{\"type\":\"TopicDel").unwrap();
        let store = MetadataStore::open(dir.path().into(), 2).unwrap();
        assert_eq!(store.image(), &image);
        assert_eq!(
            store.published().load().topics.keys().collect::<Vec<_>>(),
            vec!["b"]
        );
    }

    #[test]
    fn fewer_shards_re_place_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path().into(), 4).unwrap();
        store
            .commit(&[MetadataRecord::TopicCreated(topic("t", vec![0, 1, 2, 3]))])
            .unwrap();
        drop(store);
        let store = MetadataStore::open(dir.path().into(), 2).unwrap();
        let p = &store.image().topic("t").unwrap().placement;
        assert!(p.iter().all(|s| *s < 2), "{p:?}");
        drop(store);
        let store = MetadataStore::open(dir.path().into(), 2).unwrap();
        assert!(
            store
                .image()
                .topic("t")
                .unwrap()
                .placement
                .iter()
                .all(|s| *s < 2)
        );
    }
}
