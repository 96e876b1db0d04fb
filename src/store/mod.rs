//! The content-addressed store: blobs and manifests on disk by digest, written through
//! [`BlobWriter`] (verified, atomic), bounded by `storage.max_size` with least-recently-used
//! eviction. An in-memory index (moka) tracks sizes and recency; manifests are also kept in
//! memory, weighed by their size. Nothing here talks to the network.

pub mod layout;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use moka::notification::RemovalCause;

pub use writer::{BlobWriter, VerifiedBlob};

use crate::config::StorageConfig;
use crate::distribution::Digest;
use crate::error::ApiError;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content of {digest} has {actual} bytes, upstream announced {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

/// A manifest's exact bytes, as hashed, with the media type it is served as.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

pub struct Store {
    root: PathBuf,
    /// Every committed entry with its size; eviction deletes the files.
    index: moka::sync::Cache<Digest, u64>,
    manifests: moka::sync::Cache<Digest, Arc<StoredManifest>>,
}

/// moka weighs entries in u32; the index counts KiB so that entries up to 4 TiB fit.
fn weight_kib(size: u64) -> u32 {
    u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

impl Store {
    /// Opens (creating) the store at `config.path`: removes leftover temp files and indexes
    /// what is on disk, oldest first, so eviction order survives restarts.
    pub fn open(config: &StorageConfig, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let root = config.path.clone();
        for dir in [
            layout::blobs_dir(&root),
            layout::tmp_dir(&root),
            root.join("manifests"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating", &dir, e))?;
        }
        let tmp = layout::tmp_dir(&root);
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        metrics
            .store_max_bytes
            .set(i64::try_from(config.max_size).unwrap_or(i64::MAX));
        let evict_root = root.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity((config.max_size / 1024).max(1))
            .weigher(|_: &Digest, size: &u64| weight_kib(*size))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |digest: Arc<Digest>, _size, cause| {
                // Replaced entries are the same content; only capacity evictions delete.
                if cause == RemovalCause::Size {
                    let _ = std::fs::remove_file(layout::blob_path(&evict_root, &digest));
                    let _ = std::fs::remove_file(layout::manifest_type_path(&evict_root, &digest));
                    metrics.evictions.inc();
                }
            })
            .build();
        let manifests = moka::sync::Cache::builder()
            .max_capacity(config.memory_cache.max(1))
            .weigher(|_: &Digest, m: &Arc<StoredManifest>| {
                u32::try_from(m.bytes.len() + 256).unwrap_or(u32::MAX)
            })
            .build();
        let store = Store {
            root,
            index,
            manifests,
        };
        store.load_index()?;
        Ok(store)
    }

    fn load_index(&self) -> Result<(), StoreError> {
        let mut found: Vec<(SystemTime, Digest, u64)> = Vec::new();
        for alg in ["sha256", "sha512"] {
            let dir = layout::blobs_dir(&self.root).join(alg);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(digest) = name
                    .to_str()
                    .and_then(|hex| format!("{alg}:{hex}").parse::<Digest>().ok())
                else {
                    continue;
                };
                if let Ok(meta) = entry.metadata() {
                    found.push((
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        digest,
                        meta.len(),
                    ));
                }
            }
        }
        found.sort();
        for (_, digest, size) in found {
            self.index.insert(digest, size);
        }
        self.index.run_pending_tasks();
        Ok(())
    }

    /// The size of a committed blob, marking it used.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.index.get(digest)
    }

    /// Opens a committed blob for reading. `None` if absent (or evicted meanwhile).
    pub fn open_blob(&self, digest: &Digest) -> Option<(std::fs::File, u64)> {
        self.index.get(digest)?;
        let file = std::fs::File::open(layout::blob_path(&self.root, digest)).ok()?;
        let size = file.metadata().ok()?.len();
        Some((file, size))
    }

    /// A writer for new content; call [`Store::committed`] after its commit succeeds.
    pub fn blob_writer(&self, digest: &Digest) -> Result<BlobWriter, StoreError> {
        BlobWriter::create(
            &layout::tmp_dir(&self.root),
            layout::blob_path(&self.root, digest),
            digest,
        )
    }

    /// Records committed content in the index (may evict older content).
    pub fn committed(&self, digest: &Digest, size: u64) {
        self.index.insert(digest.clone(), size);
    }

    /// A manifest from memory or disk, marking it used.
    pub async fn manifest(
        &self,
        digest: &Digest,
    ) -> Result<Option<Arc<StoredManifest>>, StoreError> {
        if let Some(m) = self.manifests.get(digest) {
            self.index.get(digest);
            return Ok(Some(m));
        }
        if self.index.get(digest).is_none() {
            return Ok(None);
        }
        let root = self.root.clone();
        let d = digest.clone();
        let loaded =
            tokio::task::spawn_blocking(move || -> Result<Option<StoredManifest>, StoreError> {
                let path = layout::blob_path(&root, &d);
                let bytes = match std::fs::read(&path) {
                    Ok(b) => Bytes::from(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(StoreError::io("reading", &path, e)),
                };
                if !d.verifies(&bytes) {
                    // Bit rot or tampering: drop it so it is fetched again.
                    let _ = std::fs::remove_file(&path);
                    return Ok(None);
                }
                let media_type = std::fs::read_to_string(layout::manifest_type_path(&root, &d))
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty());
                let Some(media_type) = media_type else {
                    return Ok(None);
                };
                Ok(Some(StoredManifest {
                    digest: d,
                    media_type,
                    bytes,
                }))
            })
            .await
            .map_err(|e| StoreError::io("reading", &self.root, std::io::Error::other(e)))??;
        Ok(loaded.map(|m| {
            let m = Arc::new(m);
            self.manifests.insert(digest.clone(), m.clone());
            m
        }))
    }

    /// Stores a manifest whose bytes the caller verified against `digest`.
    pub async fn put_manifest(
        &self,
        manifest: StoredManifest,
    ) -> Result<Arc<StoredManifest>, StoreError> {
        let manifest = Arc::new(manifest);
        if self.index.get(&manifest.digest).is_none() {
            let root = self.root.clone();
            let m = manifest.clone();
            let size = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
                let tmp = layout::tmp_dir(&root);
                writer::write_small(
                    &tmp,
                    &layout::manifest_type_path(&root, &m.digest),
                    m.media_type.as_bytes(),
                )?;
                let mut w =
                    BlobWriter::create(&tmp, layout::blob_path(&root, &m.digest), &m.digest)?;
                w.write(&m.bytes)?;
                w.commit(Some(m.bytes.len() as u64))
            })
            .await
            .map_err(|e| StoreError::io("writing", &self.root, std::io::Error::other(e)))??;
            self.committed(&manifest.digest, size);
        }
        self.manifests
            .insert(manifest.digest.clone(), manifest.clone());
        Ok(manifest)
    }

    /// Writes `bytes` to `<storage.path>/<relative>` atomically (temp file, fsync, rename,
    /// fsync of the directory): the one helper for the small records patchpull keeps
    /// beside the content, such as the job list.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_record(&self, relative: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        writer::write_small(
            &layout::tmp_dir(&self.root),
            &self.root.join(relative),
            bytes,
        )
    }

    /// `<storage.path>/<relative>`, to read what [`Store::write_record`] wrote.
    pub fn record_path(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }

    /// Bytes of content in the store as `storage.max_size` counts them (each entry rounded
    /// up to KiB).
    pub fn used_bytes(&self) -> u64 {
        self.index.weighted_size().saturating_mul(1024)
    }

    /// Runs pending evictions now (tests and shutdown).
    pub fn sync(&self) {
        self.index.run_pending_tasks();
        self.manifests.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests;
