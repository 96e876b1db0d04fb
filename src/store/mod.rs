//! The content-addressed store: blobs and manifests on disk by digest, written through
//! [`BlobWriter`] (verified, atomic), bounded by `storage.max_size` with least-recently-used
//! eviction. An in-memory index (moka) tracks sizes and recency; manifests are also kept in
//! memory, weighed by their size. Nothing here talks to the network.
//!
//! A blob download reserves its size before it starts ([`Store::reserve`]): the reservation
//! sits in the index, so `max_size` counts downloads in flight and eviction makes room for
//! them first. When the disk itself is short (the file system is smaller than `max_size`,
//! or something else filled it), [`Store::make_room`] evicts the oldest stored blobs; a
//! blob that still does not fit is not stored, and [`Store::state`] says so until a later
//! commit succeeds.

pub mod check;
pub mod index;
pub mod layout;
pub mod registry;
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
    /// The disk (or a quota) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull
                || source.kind() == std::io::ErrorKind::QuotaExceeded)
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<StoreError> for ApiError {
    /// The full error (with the host path) goes to the log only; see `server::respond`.
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

/// Why a blob cannot be stored now.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the store cannot take {size} bytes: {reason}")]
pub struct StoreFull {
    pub size: u64,
    pub reason: String,
}

/// What the index knows of a digest.
#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    /// A download in progress holding room for itself; not readable.
    reserved: bool,
}

/// Room held in the store for one blob download; released on drop unless committed.
pub struct Reservation {
    store: Arc<Store>,
    digest: Digest,
    size: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.store
            .reserved_bytes
            .fetch_sub(self.size, std::sync::atomic::Ordering::Relaxed);
        if self
            .store
            .index
            .get(&self.digest)
            .is_some_and(|e| e.reserved)
        {
            self.store.index.invalidate(&self.digest);
        }
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
    /// Every committed entry with its size, and reservations; eviction deletes the files.
    index: moka::sync::Cache<Digest, Entry>,
    manifests: moka::sync::Cache<Digest, Arc<StoredManifest>>,
    /// Bytes reserved by downloads in progress.
    reserved_bytes: std::sync::atomic::AtomicU64,
    max_size: u64,
    /// `Some(reason)` while the store cannot take new content.
    full: std::sync::Mutex<Option<String>>,
    metrics: Arc<Metrics>,
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
        let evict_metrics = metrics.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity((config.max_size / 1024).max(1))
            .weigher(|_: &Digest, e: &Entry| weight_kib(e.size))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |digest: Arc<Digest>, _entry, cause| {
                // Replaced entries are the same content; only capacity evictions delete.
                if cause == RemovalCause::Size {
                    // The type file first: a crash between leaves a blob, never a type file
                    // naming a missing blob.
                    let _ = std::fs::remove_file(layout::manifest_type_path(&evict_root, &digest));
                    let _ = std::fs::remove_file(layout::blob_path(&evict_root, &digest));
                    evict_metrics.evictions.inc();
                }
            })
            .build();
        let manifests = moka::sync::Cache::builder()
            .max_capacity(config.memory_cache.max(1))
            .weigher(|_: &Digest, m: &Arc<StoredManifest>| {
                u32::try_from(m.bytes.len() + 256).unwrap_or(u32::MAX)
            })
            .build();
        metrics.store_writable.set(1);
        let store = Store {
            root,
            index,
            manifests,
            reserved_bytes: Default::default(),
            max_size: config.max_size,
            full: Default::default(),
            metrics,
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
        self.remove_dangling_manifest_types(&found);
        found.sort();
        for (_, digest, size) in found {
            self.index.insert(
                digest,
                Entry {
                    size,
                    reserved: false,
                },
            );
        }
        self.index.run_pending_tasks();
        Ok(())
    }

    /// Removes the type files (`manifests/<alg>/<hex>`) whose blob is not among `blobs`:
    /// left by a crash in a put or an eviction of an older version, which wrote or removed
    /// the two files in the other order. Such a manifest is fetched or made again.
    fn remove_dangling_manifest_types(&self, blobs: &[(SystemTime, Digest, u64)]) {
        let stored: std::collections::HashSet<&Digest> = blobs.iter().map(|(_, d, _)| d).collect();
        let mut removed = 0u32;
        for alg in ["sha256", "sha512"] {
            let dir = self.root.join("manifests").join(alg);
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let digest = entry
                    .file_name()
                    .to_str()
                    .and_then(|hex| format!("{alg}:{hex}").parse::<Digest>().ok());
                if digest.is_some_and(|d| !stored.contains(&d))
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed manifest type files whose blob is missing");
        }
    }

    /// The size of a committed blob, marking it used.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.committed_entry(digest)
    }

    fn committed_entry(&self, digest: &Digest) -> Option<u64> {
        self.index
            .get(digest)
            .filter(|e| !e.reserved)
            .map(|e| e.size)
    }

    /// Opens a committed blob for reading. `None` if absent (or evicted meanwhile).
    pub fn open_blob(&self, digest: &Digest) -> Option<(std::fs::File, u64)> {
        self.committed_entry(digest)?;
        let file = std::fs::File::open(layout::blob_path(&self.root, digest)).ok()?;
        let size = file.metadata().ok()?.len();
        Some((file, size))
    }

    /// Where a committed blob's file is (to stream it elsewhere; it may be evicted meanwhile).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        layout::blob_path(&self.root, digest)
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
        self.index.insert(
            digest.clone(),
            Entry {
                size,
                reserved: false,
            },
        );
        self.set_full(None);
    }

    /// `None` when the store takes new content; else why not (the last failure).
    pub fn state(&self) -> Option<String> {
        self.full.lock().ok().and_then(|f| f.clone())
    }

    /// Records that the store could not take content (`Some`) or took some again (`None`).
    pub fn set_full(&self, reason: Option<String>) {
        if let Ok(mut full) = self.full.lock() {
            if full.is_some() == reason.is_some() && reason.is_none() {
                return;
            }
            self.metrics
                .store_writable
                .set(if reason.is_some() { 0 } else { 1 });
            *full = reason;
        }
    }

    /// Holds room for a blob of `size` bytes before its download starts: counted against
    /// `max_size` (older content is evicted for it) and checked against the disk's free
    /// space (the oldest blobs are evicted when the disk is short). Fails when the blob
    /// cannot fit; the caller then serves it without storing it.
    pub fn reserve(self: &Arc<Self>, digest: &Digest, size: u64) -> Result<Reservation, StoreFull> {
        use std::sync::atomic::Ordering;
        let full = |reason: String| {
            self.set_full(Some(reason.clone()));
            StoreFull { size, reason }
        };
        if size > self.max_size {
            return Err(full(format!(
                "the blob is larger than storage.max_size ({} bytes)",
                self.max_size
            )));
        }
        if let Some(capacity) = self.capacity().filter(|c| *c < size) {
            return Err(full(format!(
                "the blob is larger than the store's disk ({capacity} bytes)"
            )));
        }
        let others = self.reserved_bytes.fetch_add(size, Ordering::Relaxed);
        let reservation = Reservation {
            store: self.clone(),
            digest: digest.clone(),
            size,
        };
        self.index.insert(
            digest.clone(),
            Entry {
                size,
                reserved: true,
            },
        );
        self.index.run_pending_tasks();
        // Other downloads in flight will write their bytes too: keep room for them.
        let needed = size.saturating_add(others);
        if self.free_space().is_some_and(|free| free < needed) {
            self.make_room(needed);
            if let Some(free) = self.free_space().filter(|free| *free < needed) {
                return Err(full(format!(
                    "the disk has {free} bytes free, downloads in flight need {needed}"
                )));
            }
        }
        Ok(reservation)
    }

    /// The size of the store's file system (`None` if it cannot be asked).
    fn capacity(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.root).ok()?;
        Some(st.f_blocks.saturating_mul(st.f_frsize))
    }

    /// Bytes free on the store's file system for us (`None` if it cannot be asked).
    pub fn free_space(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.root).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Evicts the oldest stored blobs (by the time they were stored) until `needed` bytes
    /// are free on the disk or nothing is left to evict. For a full disk (ENOSPC or a disk
    /// smaller than `max_size`); readers of an evicted blob keep their open file.
    pub fn make_room(&self, needed: u64) {
        let mut stored: Vec<(SystemTime, Digest)> = self
            .index
            .iter()
            .filter(|(_, e)| !e.reserved)
            .filter_map(|(d, _)| {
                let path = layout::blob_path(&self.root, &d);
                let modified = std::fs::metadata(path).ok()?.modified().ok()?;
                Some((modified, (*d).clone()))
            })
            .collect();
        stored.sort();
        for (_, digest) in stored {
            if self.free_space().is_none_or(|free| free >= needed) {
                return;
            }
            self.index.invalidate(&digest);
            self.manifests.invalidate(&digest);
            let _ = std::fs::remove_file(layout::manifest_type_path(&self.root, &digest));
            let _ = std::fs::remove_file(layout::blob_path(&self.root, &digest));
            self.metrics.evictions.inc();
            tracing::info!(%digest, needed, "evicted to make room on a full disk");
        }
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
        if self.committed_entry(digest).is_none() {
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
        let type_path = layout::manifest_type_path(&self.root, &manifest.digest);
        let need_blob = self.committed_entry(&manifest.digest).is_none();
        if need_blob || !type_path.is_file() {
            let root = self.root.clone();
            let m = manifest.clone();
            // The blob first, its type file second: a crash between them leaves a stored
            // blob that the next put of this manifest completes, never a type file that
            // names a missing blob (`store check`: a dangling manifest entry).
            let size = tokio::task::spawn_blocking(move || -> Result<Option<u64>, StoreError> {
                let tmp = layout::tmp_dir(&root);
                let size = if need_blob {
                    let mut w =
                        BlobWriter::create(&tmp, layout::blob_path(&root, &m.digest), &m.digest)?;
                    w.write(&m.bytes)?;
                    Some(w.commit(Some(m.bytes.len() as u64))?)
                } else {
                    None
                };
                writer::write_small(&tmp, &type_path, m.media_type.as_bytes())?;
                Ok(size)
            })
            .await
            .map_err(|e| StoreError::io("writing", &self.root, std::io::Error::other(e)))??;
            if let Some(size) = size {
                self.committed(&manifest.digest, size);
            }
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

/// The original -> patched index `config` asks for (`storage.backend`), over `store`.
///
/// # Errors
/// Its directory cannot be created, or the backing registry's client cannot be built.
pub fn open_index(
    config: &crate::config::Config,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn index::PatchedIndex>, String> {
    let local = index::local::LocalIndex::open(config.storage.path.join("patched"))?;
    match &config.storage.backend {
        crate::config::StorageBackend::Local => Ok(Arc::new(local)),
        crate::config::StorageBackend::Registry(backing) => {
            let client = crate::upstream::backing_registry(
                &backing.client,
                metrics.clone(),
                config.clock.clone(),
            )
            .map_err(|e| e.to_string())?;
            Ok(Arc::new(registry::RegistryIndex::new(
                local,
                store.clone(),
                client,
                backing.repository_prefix.clone(),
                config.upstream.iter().map(|u| u.name.clone()).collect(),
                metrics.clone(),
                config.storage.max_manifest_size,
            )))
        }
    }
}

#[cfg(test)]
mod tests;
