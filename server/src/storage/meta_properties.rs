//! `meta.properties`, Kafka's identity file in every log directory: the cluster id, the
//! node id and the directory's own id (`directory.id`, a Kafka UUID). ringmq writes it on
//! first start, as `kafka-storage format` would, so Kafka's tools that read it work
//! against ringmq's directories (`kafka-metadata-quorum add-controller` takes the new
//! controller's directory id from it), and a directory moved to a node with another
//! `node.id` is refused instead of being served under a second identity.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use base64::Engine as _;

const FILE: &str = "meta.properties";

/// A random Kafka UUID in Kafka's text form (URL-safe base64 of 16 bytes, no padding).
/// Like Kafka's `Uuid.randomUuid`, it never starts with '-' and is never the reserved
/// all-zero or all-ones-but-one ids.
pub fn random_kafka_uuid() -> String {
    loop {
        let id = uuid::Uuid::new_v4();
        if let Some(text) = kafka_uuid_text(&id)
            && !text.starts_with('-')
            && id.as_u128() > 1
        {
            return text;
        }
    }
}

/// A Kafka UUID's text form; `None` for the all-zero id (Kafka's "none").
pub fn kafka_uuid_text(id: &uuid::Uuid) -> Option<String> {
    (!id.is_nil()).then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes()))
}

/// A Kafka UUID from its text form (the all-zero id when it is not one).
pub fn kafka_uuid(text: &str) -> uuid::Uuid {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| uuid::Uuid::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Reads `dir/meta.properties`, or writes it for `node_id` and `cluster_id` with a new
/// directory id; returns the directory id. A file written for another node id is an
/// error (the directory belongs to that node).
pub fn ensure(dir: &Path, cluster_id: &str, node_id: i32) -> io::Result<String> {
    let path = dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let props = parse(&text);
            if let Some(stored) = props.get("node.id")
                && stored != &node_id.to_string()
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} says node.id={stored} but this node is node.id={node_id}: the \
                         directory belongs to another node",
                        path.display()
                    ),
                ));
            }
            if let Some(id) = props.get("directory.id") {
                return Ok(id.clone());
            }
            // Written by Kafka without a directory id (before KIP-858): add one.
            let id = random_kafka_uuid();
            let mut props = props;
            props.insert("directory.id".into(), id.clone());
            write(&path, &props)?;
            Ok(id)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            let id = random_kafka_uuid();
            let props = BTreeMap::from([
                ("version".to_owned(), "1".to_owned()),
                ("cluster.id".to_owned(), cluster_id.to_owned()),
                ("node.id".to_owned(), node_id.to_string()),
                ("directory.id".to_owned(), id.clone()),
            ]);
            write(&path, &props)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Writes the file whole and durably.
fn write(path: &Path, props: &BTreeMap<String, String>) -> io::Result<()> {
    let mut text = String::from("#\n#written by ringmqd\n");
    for (k, v) in props {
        text.push_str(&format!("{k}={v}\n"));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::storage::atomic_file::write(dir, FILE, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_id_is_written_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), "c1", 3).unwrap();
        assert_eq!(first.len(), 22, "{first}");
        assert_eq!(
            kafka_uuid_text(&kafka_uuid(&first)).as_deref(),
            Some(&*first)
        );
        assert_eq!(ensure(dir.path(), "c1", 3).unwrap(), first);
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(
            text.contains("node.id=3") && text.contains("version=1"),
            "{text}"
        );
        let err = ensure(dir.path(), "c1", 4).unwrap_err().to_string();
        assert!(err.contains("node.id=3"), "{err}");
    }

    #[test]
    fn a_kafka_file_without_a_directory_id_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(FILE),
            "#\nnode.id=1\nversion=1\ncluster.id=abc\n",
        )
        .unwrap();
        let id = ensure(dir.path(), "other", 1).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains(&format!("directory.id={id}")) && text.contains("cluster.id=abc"));
    }
}
