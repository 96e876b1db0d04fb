//! Unpacked images kept between patches, as a container runtime keeps its snapshots: each
//! layer's decompressed tar (by blob digest) and the merged root tree of a chain of layers.
//! Patching an image whose layers were unpacked before (a new security update for an image
//! patched yesterday, a second tag on the same base) then skips every gzip pass and the
//! write of the whole tree: the scripts run over the cached tree through an overlay
//! ([`crate::patch::sandbox::OverlayRoot`]), which never writes into it.
//!
//! Everything is written under a temporary name and renamed into place once complete, so a
//! crash leaves at most a leftover that the next start removes. Files are synced before
//! they get their names; a root's `ready` mark names the boot it was written in, and a root
//! from an earlier boot is made again (syncing a whole tree would cost a third of writing it). A root in use is held with
//! a shared `flock`; eviction (least recently used first, past `max_size` bytes) takes the
//! exclusive lock, so it never removes a tree under a running job, in this process or
//! another one sharing the directory.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::image::{LayerDescriptor, LayerSource, Limits};
use crate::patch::sandbox::{self, SandboxError};

/// Bumped when the layout of a cached root changes: old entries are then never found and
/// age out.
const ROOT_FORMAT: &str = "patchpull-root-v1";
const READY: &str = "ready";
const LOCK: &str = "lock";
const TREE: &str = "rootfs";

#[derive(Debug)]
pub struct UnpackCache {
    dir: PathBuf,
    max_size: u64,
    /// One build per root at a time in this process: a second job for the same layers
    /// waits for the first one's tree instead of unpacking its own copy.
    building: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// A cached root, held for as long as this lives.
#[derive(Debug)]
pub struct CachedRoot {
    dir: PathBuf,
    lock: File,
}

impl Drop for CachedRoot {
    /// Unlocks before the descriptor closes: a child process forked meanwhile holds a copy
    /// of the descriptor until its exec, and closing ours alone would leave the shared lock
    /// held through that copy, keeping the root from eviction for no reason.
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.lock, rustix::fs::FlockOperation::Unlock);
    }
}

impl CachedRoot {
    /// The merged tree, read-only.
    pub fn tree(&self) -> PathBuf {
        self.dir.join(TREE)
    }
}

impl UnpackCache {
    /// A cache in `dir` (created) bounded to `max_size` bytes; leftovers of interrupted
    /// writes are removed.
    ///
    /// # Errors
    /// Creating the directories.
    pub fn open(dir: &Path, max_size: u64) -> io::Result<UnpackCache> {
        for sub in ["layers", "roots"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)?;
            for entry in fs::read_dir(&path)?.flatten() {
                if abandoned(&entry.file_name().to_string_lossy()) {
                    let _ = remove_tree(&entry.path());
                }
            }
        }
        Ok(UnpackCache {
            dir: dir.to_path_buf(),
            max_size,
            building: Mutex::new(HashMap::new()),
        })
    }

    /// The cache `config` asks for (`<storage.path>/unpacked`, `patch.unpack_cache_size`);
    /// `None` when switched off or when its directory cannot be made (patching then
    /// unpacks into scratch space, as without a cache).
    pub fn for_config(config: &crate::config::Config) -> Option<std::sync::Arc<UnpackCache>> {
        let size = config.patch.unpack_cache_size;
        if size == 0 {
            return None;
        }
        let dir = config.storage.path.join("unpacked");
        match UnpackCache::open(&dir, size) {
            Ok(cache) => Some(std::sync::Arc::new(cache)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no unpack cache");
                None
            }
        }
    }

    /// Where decompressed layer tars are kept (see [`crate::image::UnpackedLayers`]).
    pub fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }

    /// Where a package's decompressed data archive is kept, by the package's verified
    /// SHA-256 (`None` for anything but 64 lowercase hex digits).
    pub fn package_data_path(&self, sha256: &str) -> Option<PathBuf> {
        let hex = sha256.strip_prefix("sha256:").unwrap_or(sha256);
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| self.layers_dir().join(format!("deb-sha256-{hex}.tar")))
    }

    /// The directory that holds the roots (overlay probes run there too).
    pub fn roots_dir(&self) -> PathBuf {
        self.dir.join("roots")
    }

    /// The merged root of `layers`, unpacked from `source` on first use.
    ///
    /// # Errors
    /// Reading the layers ([`SandboxError::Image`], hostile entries) and I/O.
    pub fn root(
        &self,
        source: &dyn LayerSource,
        layers: &[LayerDescriptor],
    ) -> Result<CachedRoot, SandboxError> {
        let key = root_key(layers, sandbox::owners_kept()?);
        let dir = self.roots_dir().join(&key);
        if let Some(root) = self.hold(&dir)? {
            tracing::debug!(root = %dir.display(), "unpacked root from the cache");
            return Ok(root);
        }
        let turn = {
            let mut building = self.building.lock().unwrap_or_else(|p| p.into_inner());
            building.entry(key.clone()).or_default().clone()
        };
        let made = {
            let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
            self.make_root(&key, &dir, source, layers)
        };
        self.building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        made
    }

    /// [`UnpackCache::root`]'s work once it is this job's turn.
    fn make_root(
        &self,
        key: &str,
        dir: &Path,
        source: &dyn LayerSource,
        layers: &[LayerDescriptor],
    ) -> Result<CachedRoot, SandboxError> {
        if let Some(root) = self.hold(dir)? {
            return Ok(root);
        }
        if dir.exists() {
            // Made before the last boot and never synced, or half evicted: made again.
            self.evict_root(dir);
        }
        let started = std::time::Instant::now();
        let building = self.roots_dir().join(temp_name(key));
        let built = build_root(&building, source, layers);
        if let Err(e) = built {
            let _ = remove_tree(&building);
            return Err(e);
        }
        match fs::rename(&building, dir) {
            Ok(()) => {}
            // Another job finished the same root first: use that one.
            Err(_) if is_ready(&dir.join(READY)) => {
                let _ = remove_tree(&building);
            }
            Err(e) => {
                let _ = remove_tree(&building);
                return Err(SandboxError::io("rename", &building, e));
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "image unpacked into the cache"
        );
        let root = self.hold(dir)?.ok_or_else(|| {
            SandboxError::io("open", dir, io::Error::other("evicted while being made"))
        })?;
        self.evict();
        Ok(root)
    }

    /// A shared hold on the complete root at `dir`, if there is one.
    fn hold(&self, dir: &Path) -> Result<Option<CachedRoot>, SandboxError> {
        let ready = dir.join(READY);
        if !is_ready(&ready) {
            return Ok(None);
        }
        let lock_path = dir.join(LOCK);
        let lock = match File::open(&lock_path) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SandboxError::io("open", &lock_path, e)),
        };
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| SandboxError::io("lock", &lock_path, e.into()))?;
        // Evicted (renamed away) between the open and the lock: not ours to use.
        let same = match (lock.metadata(), fs::metadata(&lock_path)) {
            (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
            _ => false,
        };
        if !same || !is_ready(&ready) {
            return Ok(None);
        }
        touch(&ready);
        Ok(Some(CachedRoot {
            dir: dir.to_path_buf(),
            lock,
        }))
    }

    /// Removes the least recently used entries until the cache fits `max_size`. Roots in
    /// use are skipped; a layer tar in use stays readable through its open handle.
    pub fn evict(&self) {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        if total <= self.max_size {
            return;
        }
        entries.sort_by_key(|e| e.used);
        for entry in entries {
            if total <= self.max_size {
                break;
            }
            let removed = if entry.is_root {
                self.evict_root(&entry.path)
            } else {
                fs::remove_file(&entry.path).is_ok()
            };
            if removed {
                tracing::debug!(path = %entry.path.display(), size = entry.size, "evicted from the unpack cache");
                total = total.saturating_sub(entry.size);
            }
        }
    }

    fn evict_root(&self, dir: &Path) -> bool {
        let Ok(lock) = File::open(dir.join(LOCK)) else {
            return false;
        };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return false;
        }
        let trash = self.roots_dir().join(temp_name(
            &dir.file_name().unwrap_or_default().to_string_lossy(),
        ));
        let moved = fs::rename(dir, &trash).is_ok();
        drop(lock);
        if moved {
            let _ = remove_tree(&trash);
        }
        moved
    }

    fn entries(&self) -> Vec<Entry> {
        let mut entries = Vec::new();
        if let Ok(listing) = fs::read_dir(self.layers_dir()) {
            for item in listing.flatten() {
                let name = item.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                if let Ok(meta) = item.metadata() {
                    entries.push(Entry {
                        path: item.path(),
                        size: meta.len(),
                        used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        is_root: false,
                    });
                }
            }
        }
        if let Ok(listing) = fs::read_dir(self.roots_dir()) {
            for item in listing.flatten() {
                let path = item.path();
                if item.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let Ok(meta) = fs::metadata(path.join(READY)) else {
                    continue;
                };
                let size = fs::read_to_string(path.join(READY))
                    .ok()
                    .and_then(|t| t.lines().next()?.trim().parse().ok())
                    .unwrap_or(0);
                entries.push(Entry {
                    path,
                    size,
                    used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    is_root: true,
                });
            }
        }
        entries
    }
}

/// Whether `name` is a temporary entry whose writer is gone. Every writer names its
/// temporaries `.tmp-…-<pid>-<n>`; another live process may share the directory, so only
/// the temporaries of processes that no longer run are removed.
fn abandoned(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(".tmp-") else {
        return false;
    };
    let mut fields = rest.rsplit('-');
    let _counter = fields.next();
    match fields.next().and_then(|pid| pid.parse::<u32>().ok()) {
        Some(pid) => {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        }
        None => true,
    }
}

struct Entry {
    path: PathBuf,
    size: u64,
    used: SystemTime,
    is_root: bool,
}

/// The key of a layer chain's root: its blob digests in order, and whether the tree
/// carries the image's owners (only a root caller can write them).
fn root_key(layers: &[LayerDescriptor], owners: bool) -> String {
    let mut hash = Sha256::new();
    hash.update(ROOT_FORMAT.as_bytes());
    hash.update(if owners { b"\nowners" } else { b"\ncaller" });
    for layer in layers {
        hash.update(b"\n");
        hash.update(layer.digest.as_bytes());
    }
    let digest = hash.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn temp_name(key: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".tmp-{key}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn build_root(
    dir: &Path,
    source: &dyn LayerSource,
    layers: &[LayerDescriptor],
) -> Result<(), SandboxError> {
    let tree = dir.join(TREE);
    fs::create_dir_all(&tree).map_err(|e| SandboxError::io("mkdir", &tree, e))?;
    // The sandbox of a root caller runs as the tree's owner and must reach it.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
        .map_err(|e| SandboxError::io("chmod", dir, e))?;
    sandbox::materialize(source, layers, &tree, &Limits::default())?;
    let size = tree_size(&tree);
    // A crash can leave a tree whose files were never written out. Rather than syncing
    // the whole tree (a third of the time it takes to write it), `ready` names this boot:
    // a tree from an earlier boot is made again ([`is_ready`]). Without a boot id, sync.
    let boot = boot_id();
    if boot.is_none() {
        let sync =
            File::open(&tree).and_then(|dir| rustix::fs::syncfs(&dir).map_err(io::Error::from));
        sync.map_err(|e| SandboxError::io("sync", &tree, e))?;
    }
    let lock = dir.join(LOCK);
    File::create(&lock).map_err(|e| SandboxError::io("create", &lock, e))?;
    let ready = dir.join(READY);
    let text = format!("{size}\n{}\n", boot.unwrap_or(SYNCED));
    fs::write(&ready, text).map_err(|e| SandboxError::io("write", &ready, e))
}

/// What `ready` says of a tree written to disk before it was marked.
const SYNCED: &str = "synced";

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_owned())
    })
    .as_deref()
}

/// Whether the `ready` file marks a whole tree: synced, or written during this boot.
fn is_ready(ready: &Path) -> bool {
    let Ok(text) = fs::read_to_string(ready) else {
        return false;
    };
    match text.lines().nth(1) {
        Some(SYNCED) => true,
        Some(boot) => boot_id() == Some(boot),
        None => false,
    }
}

fn tree_size(root: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(listing) = fs::read_dir(&dir) else {
            continue;
        };
        for item in listing.flatten() {
            if let Ok(meta) = item.metadata() {
                total += meta.len();
                if meta.is_dir() {
                    pending.push(item.path());
                }
            }
        }
    }
    total
}

fn touch(path: &Path) {
    if let Ok(file) = File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Removes a tree whatever its directories' modes (a caller that is not root cannot
/// otherwise empty a directory of mode 0555 it owns).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        if let Ok(listing) = fs::read_dir(&dir) {
            for item in listing.flatten() {
                if item.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(item.path());
                }
            }
        }
    }
    fs::remove_dir_all(path)
}

#[cfg(test)]
#[path = "unpack_cache_tests.rs"]
mod tests;
