//! Several log directories per broker (`log.dirs`, SPEC O7): where a replica's files
//! live, and moving a replica from one directory to another while it keeps serving
//! (AlterReplicaLogDirs, `kafka-reassign-partitions` with `log_dirs`).
//!
//! A new replica goes to the directory holding the fewest partitions (Kafka's rule); an
//! existing one is found where its `topic-partition` directory is. A move copies the
//! replica into `<target>/<topic>-<p>.<nanos>-future` while appends go on (Kafka's future
//! replica, listed by DescribeLogDirs with `is_future_key`), having first rolled a new
//! active segment so that everything written so far sits in sealed segments. Then it
//! stops the partition's writers for the tail: flushes it, brings the copy up to date
//! (only files changed since: the new active segment, indexes and checkpoints), syncs
//! it, renames it into place, opens it and swaps it in, and deletes the old directory in
//! the background. Produce to that partition waits during the tail only; fetches already
//! reading old files finish on them (open files outlive the rename). Retention and
//! compaction skip a partition while it moves.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ringmq_engine::{Offset, UnifiedLog};

use crate::storage::now_ms;
use crate::storage::partition::Partition;

/// The coarsest file-time granularity allowed for (a kernel tick at HZ=100).
const MTIME_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Marks a directory a move is filling.
const FUTURE: &str = "-future";

/// The lock file Kafka keeps in every log directory.
pub const LOCK_FILE: &str = ".lock";

/// Takes the exclusive lock on `dir` (an `flock` on `dir/.lock`, as Kafka does) for as
/// long as the returned file is open, so two brokers never write the same files. Fails
/// when another process holds it.
pub fn lock(dir: &Path) -> Result<fs::File, String> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "failed to acquire lock on file {LOCK_FILE} in {}: another ringmqd (or Kafka) process is using this directory",
            dir.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Whether `name` is a partition directory (not the metadata, nor one being deleted or
/// filled).
pub(crate) fn is_partition_dir(name: &str) -> bool {
    !name.starts_with("__cluster_metadata")
        && !name.ends_with(FUTURE)
        && !name.ends_with("-delete")
        && name
            .rsplit_once('-')
            .is_some_and(|(_, p)| p.parse::<u32>().is_ok())
}

fn partition_count(root: &Path) -> usize {
    fs::read_dir(root).map_or(usize::MAX, |entries| {
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter(|e| e.file_name().to_str().is_some_and(is_partition_dir))
            .count()
    })
}

/// Where new replicas go: each log directory's partition count, read once and kept up to
/// date as replicas are placed (a topic of many partitions is spread over the
/// directories, not put wholly in the emptiest one).
pub struct Placement {
    roots: Vec<(PathBuf, usize)>,
}

impl Placement {
    pub fn new(roots: &[PathBuf]) -> Self {
        Placement {
            roots: roots
                .iter()
                .map(|r| (r.clone(), partition_count(r)))
                .collect(),
        }
    }

    /// The directory of `topic`-`index` on this broker: where it already is, else in the
    /// log directory with the fewest partitions.
    pub fn place(&mut self, topic: &str, index: i32) -> PathBuf {
        let name = format!("{topic}-{index}");
        if let Some(existing) = self
            .roots
            .iter()
            .map(|(r, _)| r.join(&name))
            .find(|d| d.is_dir())
        {
            return existing;
        }
        match self.roots.iter_mut().min_by_key(|(_, n)| *n) {
            Some((root, n)) => {
                *n += 1;
                root.join(name)
            }
            None => PathBuf::from(name),
        }
    }
}

/// Bytes under `dir` (a future replica's size so far).
pub fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

/// The future directory of a move of `part` to `root`.
pub fn future_dir(root: &Path, part: &Partition) -> PathBuf {
    root.join(format!("{}-{}.move{FUTURE}", part.topic, part.index))
}

/// Copies every file of `from` into `to` that is missing there, differs in length, or
/// (with `since`) was modified since then; removes files of `to` that `from` no longer
/// has. With `sync`, each file copied and the directory are synced.
fn mirror(
    from: &Path,
    to: &Path,
    since: Option<std::time::SystemTime>,
    sync: bool,
) -> io::Result<u64> {
    fs::create_dir_all(to)?;
    let mut copied = 0;
    let mut names = Vec::new();
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        names.push(entry.file_name());
        let dst = to.join(entry.file_name());
        let touched = since.is_some_and(|t| meta.modified().is_ok_and(|m| m >= t));
        let same = !touched && fs::metadata(&dst).is_ok_and(|d| d.len() == meta.len());
        if !same {
            copied += fs::copy(entry.path(), &dst)?;
            if sync {
                fs::File::open(&dst)?.sync_all()?;
            }
        }
    }
    for entry in fs::read_dir(to)? {
        let entry = entry?;
        if !names.contains(&entry.file_name()) {
            fs::remove_file(entry.path())?;
        }
    }
    if sync {
        fs::File::open(to)?.sync_all()?;
    }
    Ok(copied)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, String> {
    compio::runtime::spawn_blocking(f)
        .await
        .map_err(|_| "a log directory move panicked".to_string())?
        .map_err(|e| e.to_string())
}

/// Moves `part`'s files to log directory `root` (runs on its owner shard). Errors leave
/// the replica where it was.
pub async fn move_replica(part: Rc<Partition>, root: PathBuf) {
    let started = std::time::Instant::now();
    let result = move_files(&part, &root).await;
    *part.moving_to.borrow_mut() = None;
    match result {
        Ok(paused) => {
            tracing::info!(topic = %part.topic, partition = part.index, dir = %root.display(), millis = started.elapsed().as_millis() as u64, writes_paused_ms = paused.as_millis() as u64, "moved a replica to another log directory")
        }
        Err(e) => {
            let _ = fs::remove_dir_all(future_dir(&root, &part));
            tracing::warn!(topic = %part.topic, partition = part.index, dir = %root.display(), error = %e, "moving a replica to another log directory failed")
        }
    }
}

/// Returns how long the partition's writers were paused.
async fn move_files(part: &Rc<Partition>, root: &Path) -> Result<std::time::Duration, String> {
    // Retention and compaction stay away until the end (see the maintenance loop).
    let _maintenance = part.maintenance.lock().await;
    let from = part.log.log().dir().to_path_buf();
    let future = future_dir(root, part);
    {
        // A new active segment first: everything written so far is then in sealed
        // segments, copied without stopping anyone, and the tail copied under the pause
        // is only what arrives during that copy.
        let _writers = part.log.quiesce().await;
        let mut log = part.log.log_mut();
        let leo = log.log_end_offset();
        if log.log_end_offset() > log.log_start_offset() {
            log.roll(leo, now_ms()).map_err(|e| e.to_string())?;
        }
    }
    // Files modified from here on are copied again. File times come from the kernel's
    // coarse clock (one tick, 10 ms at most, behind): the margin covers it, and the
    // pause before makes the just-sealed segment older than the margin.
    compio::time::sleep(MTIME_TICK * 3).await;
    let copy_started = std::time::SystemTime::now() - MTIME_TICK;
    let (src, dst) = (from.clone(), future.clone());
    blocking(move || mirror(&src, &dst, None, true)).await?;
    // The tail: no writer runs while the copy catches up and the log is swapped. The
    // partition lock keeps follower truncation away too (taken first, as appends do).
    let _partition = part.lock.lock().await;
    let _writers = part.log.quiesce().await;
    let paused = std::time::Instant::now();
    let final_dir = root.join(format!("{}-{}", part.topic, part.index));
    // What else may change the log meanwhile (a leader epoch, DeleteRecords) is seen by
    // comparing its state before the copy and before the swap: then copy again.
    for _attempt in 0..3 {
        part.log
            .log_mut()
            .flush_for_shutdown()
            .map_err(|e| e.to_string())?;
        let before = fingerprint(&part.log.log());
        let (src, dst, into) = (from.clone(), future.clone(), final_dir.clone());
        blocking(move || {
            mirror(&src, &dst, Some(copy_started), true)?;
            fs::rename(&dst, &into)?;
            fs::File::open(into.parent().unwrap_or(&into))?.sync_all()
        })
        .await?;
        let config = part.log.log().config().clone();
        let opened = {
            let dir = final_dir.clone();
            compio::runtime::spawn_blocking(move || UnifiedLog::open(dir, config, now_ms()))
                .await
                .map_err(|_| "opening the moved log panicked".to_string())?
        };
        let mut moved = match opened {
            Ok(log) => log,
            Err(e) => {
                // The old files are intact: keep serving from them.
                let _ = fs::remove_dir_all(&final_dir);
                return Err(format!("opening the moved log: {e}"));
            }
        };
        if fingerprint(&part.log.log()) != before || fingerprint(&moved) != before {
            tracing::debug!(topic = %part.topic, partition = part.index, ?before, now = ?fingerprint(&part.log.log()), copy = ?fingerprint(&moved), "the log changed under its copy: copying again");
            drop(moved);
            let (from_final, back) = (final_dir.clone(), future.clone());
            blocking(move || fs::rename(&from_final, &back)).await?;
            continue;
        }
        moved.update_config(part.log.log().config().clone());
        moved.update_high_watermark(part.log.log().high_watermark());
        // An epoch that starts at the log end has no record yet, so opening a log drops
        // it (as Kafka's loader does); the leader's current epoch must stay.
        let pending: Vec<(i32, Offset)> = {
            let log = part.log.log();
            let leo = log.log_end_offset();
            log.leader_epochs()
                .entries()
                .iter()
                .filter(|e| e.start_offset >= leo)
                .map(|e| (e.epoch, e.start_offset))
                .collect()
        };
        for (epoch, start) in pending {
            moved
                .assign_leader_epoch(epoch, start)
                .map_err(|e| e.to_string())?;
        }
        drop(part.log.replace(moved));
        let paused = paused.elapsed();
        crate::storage::log_deleter::delete(&from)?;
        return Ok(paused);
    }
    let _ = fs::remove_dir_all(&final_dir);
    Err("the log kept changing while it was copied".into())
}

/// What a copy must agree on with the log it replaces (the high watermark, which moves
/// with every follower fetch, is carried over instead).
fn fingerprint(log: &UnifiedLog) -> (i64, i64, Vec<(i32, i64)>) {
    let leo = log.log_end_offset();
    (
        leo.0,
        log.log_start_offset().0,
        // Epochs with records (one starting at the log end is carried over at the swap).
        log.leader_epochs()
            .entries()
            .iter()
            .filter(|e| e.start_offset < leo)
            .map(|e| (e.epoch, e.start_offset.0))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_replicas_go_where_the_fewest_partitions_are_and_stay_where_they_are() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir_all(a.join("t-0")).unwrap();
        fs::create_dir_all(a.join("__cluster_metadata")).unwrap();
        fs::create_dir_all(&b).unwrap();
        let roots = vec![a.clone(), b.clone()];
        let place = |topic: &str, index: i32| Placement::new(&roots).place(topic, index);
        assert_eq!(place("t", 1), b.join("t-1"));
        assert_eq!(place("t", 0), a.join("t-0"));
        fs::create_dir_all(b.join("t-1")).unwrap();
        fs::create_dir_all(b.join("u-0.1-delete")).unwrap();
        assert_eq!(place("t", 2), a.join("t-2"), "ties go to the first");
        // One change's replicas spread as they are placed, before any directory exists.
        let mut change = Placement::new(&roots);
        let placed: Vec<PathBuf> = (0..4).map(|i| change.place("w", i)).collect();
        assert_eq!(
            placed,
            [a.join("w-0"), b.join("w-1"), a.join("w-2"), b.join("w-3")]
        );
    }

    #[test]
    fn mirror_copies_what_changed_and_drops_what_went() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        fs::create_dir_all(&from).unwrap();
        fs::write(from.join("0.log"), b"sealed").unwrap();
        fs::write(from.join("9.log"), b"act").unwrap();
        assert_eq!(mirror(&from, &to, None, false).unwrap(), 9);
        let since = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
        fs::write(from.join("9.log"), b"active grew").unwrap();
        fs::write(to.join("stale.index"), b"x").unwrap();
        // Rewritten to the same length (a truncation and re-append): copied by time.
        assert_eq!(
            mirror(&from, &to, Some(since), true).unwrap(),
            17,
            "the grown file and every file touched since"
        );
        assert_eq!(fs::read(to.join("9.log")).unwrap(), b"active grew");
        assert!(!to.join("stale.index").exists());
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(
            mirror(&from, &to, Some(later), true).unwrap(),
            0,
            "nothing changed"
        );
    }
}
