//! Commits content into the store: write to a temp file while hashing, check size and
//! digest, fsync, rename into place, fsync the directory. A writer dropped before commit
//! deletes its temp file. Writes are positional and buffered here, so a write that failed
//! (ENOSPC) can be retried with [`BlobWriter::flush`] once space was made, without losing
//! or repeating a byte. Blocking I/O: call from a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;
use crate::distribution::reference::Hasher;
use crate::distribution::Digest;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Buffer between the network and the disk; progress is published per flush.
const WRITE_BUFFER: usize = 256 * 1024;

/// A temp file that removes itself unless it was renamed into place.
struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub struct BlobWriter {
    file: File,
    /// Bytes accepted but not yet in the file; they start at `flushed`.
    pending: Vec<u8>,
    flushed: u64,
    temp: TempPath,
    hasher: Hasher,
    written: u64,
    expected: Digest,
    final_path: PathBuf,
}

impl BlobWriter {
    pub(super) fn create(
        tmp_dir: &Path,
        final_path: PathBuf,
        expected: &Digest,
    ) -> Result<BlobWriter, StoreError> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = tmp_dir.join(format!(
            "{}.{}.{n}.part",
            expected.hex(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("creating", &path, e))?;
        Ok(BlobWriter {
            file,
            pending: Vec::with_capacity(WRITE_BUFFER),
            flushed: 0,
            temp: TempPath { path, armed: true },
            hasher: Hasher::new(expected.algorithm()),
            written: 0,
            expected: expected.clone(),
            final_path,
        })
    }

    /// A second handle on the temp file, for readers that follow the download.
    pub fn open_reader(&self) -> Result<File, StoreError> {
        File::open(&self.temp.path).map_err(|e| StoreError::io("opening", &self.temp.path, e))
    }

    pub fn write(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(buf);
        self.write_unhashed(buf)
    }

    /// Writes without hashing, for callers that hash the same bytes on another thread and
    /// verify with [`BlobWriter::verify`] (hashing and writing then overlap). The bytes are
    /// accepted even when the write to disk fails; [`BlobWriter::flush`] retries it.
    pub fn write_unhashed(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.pending.extend_from_slice(buf);
        self.written += buf.len() as u64;
        if self.pending.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered bytes so readers of the temp file can see them; returns how many
    /// bytes are now in the file. After an error, calling it again retries the same write.
    pub fn flush(&mut self) -> Result<u64, StoreError> {
        if !self.pending.is_empty() {
            self.file
                .write_all_at(&self.pending, self.flushed)
                .map_err(|e| StoreError::io("writing", &self.temp.path, e))?;
            self.flushed += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(self.flushed)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies and moves the content into place. Content that does not hash to the
    /// expected digest is deleted, never kept.
    pub fn commit(mut self, expected_size: Option<u64>) -> Result<u64, StoreError> {
        let actual =
            std::mem::replace(&mut self.hasher, Hasher::new(self.expected.algorithm())).finish();
        self.verify(actual, expected_size)?.persist()
    }

    /// Checks size and digest of what was written (`actual` computed by the caller over
    /// exactly these bytes). The result can be served at once; [`VerifiedBlob::persist`]
    /// then makes it durable, which is slow for large blobs (fsync), so clients need not
    /// wait for it.
    pub fn verify(
        mut self,
        actual: Digest,
        expected_size: Option<u64>,
    ) -> Result<VerifiedBlob, StoreError> {
        self.flush()?;
        if let Some(size) = expected_size {
            if size != self.written {
                return Err(StoreError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: size,
                    actual: self.written,
                });
            }
        }
        if actual != self.expected {
            return Err(StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        Ok(VerifiedBlob { writer: self })
    }
}

/// Content that verified but is not in the store yet; dropped unpersisted, it is deleted.
pub struct VerifiedBlob {
    writer: BlobWriter,
}

impl VerifiedBlob {
    pub fn size(&self) -> u64 {
        self.writer.written
    }

    /// fsync, rename into place, fsync the directory.
    pub fn persist(mut self) -> Result<u64, StoreError> {
        let w = &mut self.writer;
        w.file
            .sync_all()
            .map_err(|e| StoreError::io("syncing", &w.temp.path, e))?;
        rename_into_place(&w.temp.path, &w.final_path)?;
        w.temp.armed = false;
        Ok(w.written)
    }
}

/// rename + fsync of the directory; an existing target holds the same verified content,
/// so it counts as success.
pub(super) fn rename_into_place(from: &Path, to: &Path) -> Result<(), StoreError> {
    let dir = to
        .parent()
        .ok_or_else(|| StoreError::io("renaming", to, io::ErrorKind::InvalidInput.into()))?;
    fs::create_dir_all(dir).map_err(|e| StoreError::io("creating", dir, e))?;
    fs::rename(from, to).map_err(|e| StoreError::io("renaming into", to, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing", dir, e))
}

/// Writes small content (a manifest, a media type) atomically.
pub(super) fn write_small(tmp_dir: &Path, to: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = tmp_dir.join(format!("small.{}.{n}.part", std::process::id()));
    let mut temp = TempPath { path, armed: true };
    let mut file =
        File::create(&temp.path).map_err(|e| StoreError::io("creating", &temp.path, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| StoreError::io("writing", &temp.path, e))?;
    rename_into_place(&temp.path, to)?;
    temp.armed = false;
    Ok(())
}
