//! Scratch files for decompressed package archives: created under names no one else
//! uses, read back through positional reads.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A new file in `dir` named `<prefix>-<pid>-<n>` (never an existing one), readable and
/// writable by its owner only.
pub(crate) fn new_file(dir: &Path, prefix: &str) -> io::Result<(File, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{prefix}-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free scratch file name in {} after 100 tries",
            dir.display()
        ),
    ))
}

/// A file in `dir` unlinked at once: it lives as long as its handles, and a crash or an
/// error leaves nothing behind.
pub(crate) fn anonymous_file(dir: &Path, prefix: &str) -> io::Result<File> {
    let (file, path) = new_file(dir, prefix)?;
    fs::remove_file(&path)?;
    Ok(file)
}
