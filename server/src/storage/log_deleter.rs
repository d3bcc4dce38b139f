//! Deleting a partition's files without stalling its shard. Unlinking a large log
//! (a replica moved away, a topic deleted) can take hundreds of milliseconds on ext4;
//! done on the shard thread it would stall every produce and fetch the shard serves. As
//! Kafka does, the directory is first renamed (`topic-0.<nanos>-delete`, one metadata
//! operation) and then removed by a background thread; a restart sweeps what a crash
//! left behind.

use std::path::{Path, PathBuf};

const SUFFIX: &str = "-delete";

/// Renames `dir` out of the way and removes it in the background. A directory that does
/// not exist is already deleted.
pub fn delete(dir: &Path) -> Result<(), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return Err(format!("{} has no file name", dir.display()));
    };
    let doomed = dir.with_file_name(format!("{name}.{nanos}{SUFFIX}"));
    match std::fs::rename(dir, &doomed) {
        Ok(()) => {
            remove_in_background(vec![doomed]);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("rename {}: {e}", dir.display())),
    }
}

/// Removes directories a previous run renamed for deletion but did not finish, and the
/// copies of unfinished moves between log directories (`crate::storage::log_dirs`).
pub fn sweep(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    let left: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(SUFFIX) || n.ends_with("-future"))
        })
        .collect();
    if !left.is_empty() {
        remove_in_background(left);
    }
}

fn remove_in_background(dirs: Vec<PathBuf>) {
    let spawned = std::thread::Builder::new()
        .name("log-deleter".into())
        .spawn(move || {
            for d in dirs {
                if let Err(e) = std::fs::remove_dir_all(&d) {
                    tracing::warn!(dir = %d.display(), error = %e, "deleting old log files failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the log deleter thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_directory_disappears_and_a_missing_one_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-0");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000000.log"), vec![0u8; 1 << 20]).unwrap();
        delete(&dir).unwrap();
        assert!(!dir.exists(), "renamed at once");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_dir(tmp.path()).unwrap().next().is_some() {
            assert!(std::time::Instant::now() < deadline, "never removed");
            std::hint::spin_loop();
        }
        delete(&dir).unwrap();
        // A crash between rename and removal: the next start sweeps it.
        let left = tmp.path().join("t-1.123-delete");
        std::fs::create_dir(&left).unwrap();
        sweep(tmp.path());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while left.exists() {
            assert!(std::time::Instant::now() < deadline, "never swept");
            std::hint::spin_loop();
        }
    }
}
