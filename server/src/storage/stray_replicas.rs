//! Partition directories left behind while a broker was down: a topic deleted meanwhile
//! (no reconcile ran here to delete its replicas), a topic deleted and created again
//! under the same name, or a replica moved to other brokers. Kafka calls them stray
//! replicas and removes them once the broker has caught up on the metadata; so does
//! ringmq.
//!
//! A partition directory records the topic id it belongs to in `partition.metadata`, in
//! Kafka's format, so a directory of a re-created topic is told apart from the new
//! topic's replica (by name they are the same) and never opened as its log.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::metadata::MetadataImage;
use crate::storage::meta_properties::{kafka_uuid, kafka_uuid_text};

const PARTITION_METADATA: &str = "partition.metadata";

/// The topic id `dir/partition.metadata` names, if the file is there and readable.
pub fn topic_id(dir: &Path) -> Option<uuid::Uuid> {
    let text = fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .map(|v| kafka_uuid(v.trim()))?;
    (!id.is_nil()).then_some(id)
}

/// Writes `dir/partition.metadata` for `id` unless it is there (atomically, synced).
pub fn record_topic_id(dir: &Path, id: uuid::Uuid) -> io::Result<()> {
    let path = dir.join(PARTITION_METADATA);
    if path.exists() {
        return Ok(());
    }
    let Some(text) = kafka_uuid_text(&id) else {
        return Ok(());
    };
    let text = format!("version: 0\ntopic_id: {text}\n");
    crate::storage::atomic_file::write(dir, PARTITION_METADATA, text.as_bytes())
}

/// Whether `dir` holds a replica of another topic than `id` (same name, deleted and
/// created again while this broker was away).
pub fn of_another_topic(dir: &Path, id: uuid::Uuid) -> bool {
    topic_id(dir).is_some_and(|on_disk| on_disk != id)
}

/// The partition directories under `roots` that broker `me` holds no replica for. The
/// image is taken after the directories are listed: a shard creates a replica's
/// directory only once an image assigning it is published, so every directory listed is
/// judged by an image at least as new as the one that created it.
pub fn find(
    roots: &[PathBuf],
    image: impl FnOnce() -> std::sync::Arc<MetadataImage>,
    me: i32,
) -> Vec<PathBuf> {
    let mut listed = Vec::new();
    for root in roots {
        let Ok(entries) = fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !path.is_dir() || !crate::storage::log_dirs::is_partition_dir(&name) {
                continue;
            }
            let Some((topic, index)) = name
                .rsplit_once('-')
                .and_then(|(t, p)| Some((t.to_owned(), p.parse::<usize>().ok()?)))
            else {
                continue;
            };
            listed.push((path, topic, index));
        }
    }
    let image = image();
    listed
        .into_iter()
        .filter(|(path, topic, index)| {
            let held = image.topic(topic).is_some_and(|t| {
                t.partitions
                    .get(*index)
                    .is_some_and(|p| p.replicas.contains(&me))
                    && !of_another_topic(path, t.id)
            });
            !held
        })
        .map(|(path, _, _)| path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_id_is_recorded_once_in_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(topic_id(dir.path()), None);
        let id = uuid::Uuid::new_v4();
        record_topic_id(dir.path(), id).unwrap();
        let text = fs::read_to_string(dir.path().join(PARTITION_METADATA)).unwrap();
        assert!(text.starts_with("version: 0\ntopic_id: "), "{text}");
        assert_eq!(topic_id(dir.path()), Some(id));
        record_topic_id(dir.path(), uuid::Uuid::new_v4()).unwrap();
        assert_eq!(topic_id(dir.path()), Some(id), "never overwritten");
        assert!(of_another_topic(dir.path(), uuid::Uuid::new_v4()));
        assert!(!of_another_topic(dir.path(), id));
    }
}
