//! Files that appear whole or not at all: written under a temporary name in the target's
//! directory, fsynced, renamed over the target, the directory fsynced. A crash leaves the
//! old content or the new, never half of one; a [`TempFile`] dropped before its commit (an
//! error, a panic, a cancelled task) removes itself. The store's blob writer
//! (`store/writer.rs`) follows the same steps while hashing; everything else uses this.
//! Blocking I/O: call from a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` as a commit, creating the directory if needed.
///
/// # Errors
/// Any I/O failure; `path` then keeps its old content and no temp file is left.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    fs::create_dir_all(dir)?;
    let mut temp = TempFile::new_in(dir)?;
    temp.file_mut().write_all(bytes)?;
    temp.commit(path)
}

/// The pid in a [`TempFile`]'s name (`.tmp-<pid>-<n>`, maybe with a suffix); `None` for
/// any other name.
pub fn temp_file_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(".tmp-")?.split_once('-')?;
    n.starts_with(|c: char| c.is_ascii_digit())
        .then(|| pid.parse().ok())
        .flatten()
}

/// Removes the [`TempFile`]s in `dir` whose process no longer runs: a kill between their
/// creation and their rename (SIGKILL, OOM, power loss) never ran their drop. Another
/// process sharing the directory (a `patchpull patch`) keeps its own. Returns how many
/// were removed.
pub fn remove_abandoned_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_file_pid) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A file under a temporary name, removed on drop unless committed or kept.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// A new file in `dir` (readable and writable, mode 0644 before the umask), under a
    /// name no one else uses: `.tmp-<pid>-<n>`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn new_in(dir: &Path) -> io::Result<TempFile> {
        Self::with_mode(dir, 0o644)
    }

    /// [`TempFile::new_in`] with the file's permission bits (before the umask).
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn with_mode(dir: &Path, mode: u32) -> io::Result<TempFile> {
        Self::create(dir, mode, "")
    }

    /// [`TempFile::new_in`] with a name ending in `suffix` (`.tar.gz`), for a file that
    /// is kept under its temporary name and read by tools that go by the extension.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn with_suffix(dir: &Path, suffix: &str) -> io::Result<TempFile> {
        Self::create(dir, 0o644, suffix)
    }

    fn create(dir: &Path, mode: u32, suffix: &str) -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut last = None;
        // A name left by an earlier process with the same pid is skipped, not reused.
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".tmp-{}-{n}{suffix}", std::process::id()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempFile {
                        file,
                        path,
                        armed: true,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// fsyncs the file, renames it to `target` and fsyncs `target`'s directory: after a
    /// crash `target` is its old content or all of the new.
    ///
    /// # Errors
    /// Any I/O failure; the temp file is removed and `target` is unchanged.
    pub fn commit(mut self, target: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        fs::rename(&self.path, target)?;
        self.armed = false;
        File::open(parent(target))?.sync_all()
    }

    /// Renames the file to `target` without fsyncing: for scratch files a crash may lose
    /// (they are made again), which must still never be seen half-written by name.
    ///
    /// # Errors
    /// The rename fails; the temp file is removed.
    pub fn rename_unsynced(mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.armed = false;
        Ok(())
    }

    /// fsyncs the file and keeps it under its temporary name, for a caller that takes
    /// the path over (and removes the file when done with it).
    ///
    /// # Errors
    /// The fsync fails; the file is removed.
    pub fn keep(mut self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        self.armed = false;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dropped_write_leaves_the_old_content_and_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("record");
        fs::write(&target, b"old").expect("old content");
        let mut temp = TempFile::new_in(dir.path()).expect("temp file");
        temp.file_mut().write_all(b"new, half").expect("write");
        assert_eq!(names(dir.path()).len(), 2, "the temp file exists meanwhile");
        drop(temp);
        assert_eq!(names(dir.path()), ["record"]);
        assert_eq!(fs::read(&target).expect("read"), b"old");
    }

    #[test]
    fn a_failed_commit_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut temp = TempFile::new_in(dir.path()).expect("temp file");
        temp.file_mut().write_all(b"new").expect("write");
        // A rename over a non-empty directory fails.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).expect("dir");
        fs::write(target.join("x"), b"x").expect("file");
        assert!(temp.commit(&target).is_err());
        assert_eq!(names(dir.path()), ["occupied"]);
    }

    #[test]
    fn a_committed_write_replaces_the_target_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("sub").join("record");
        write_atomically(&target, b"first").expect("first write");
        write_atomically(&target, b"second").expect("second write");
        assert_eq!(fs::read(&target).expect("read"), b"second");
        assert_eq!(names(&dir.path().join("sub")), ["record"]);
    }

    #[test]
    fn a_kept_file_stays_under_its_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut temp = TempFile::new_in(dir.path()).expect("temp file");
        temp.file_mut().write_all(b"layer").expect("write");
        let path = temp.keep().expect("keep");
        assert_eq!(fs::read(&path).expect("read"), b"layer");
    }
}
