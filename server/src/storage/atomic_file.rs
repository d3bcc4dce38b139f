//! Small files written whole and durably: a temporary file beside the target, synced,
//! renamed over it, and the directory synced, so a crash leaves the old file or the new
//! one, never a torn one (the metadata quorum's state, `meta.properties`,
//! `partition.metadata`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `dir/name` with `bytes`.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}
