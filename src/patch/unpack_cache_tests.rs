//! The unpack cache over synthetic gzip layers held in memory: roots made once and found
//! again, holds that eviction respects, leftovers of interrupted writes, failed unpacks
//! that leave nothing behind, and the shared layer tars of [`UnpackedLayers`].
//!
//! Run as root, the trees carry shifted owners (`ROOT_ID_BASE + id`): only contents and
//! modes are compared.

use std::io::{Read, Write};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::image::{ImageError, UnpackedLayers, MEDIA_TYPE_OCI_LAYER_GZIP};

/// A layer's tar, entries in call order; names are written raw so `..` can be in them.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn entry(mut self, name: &str, kind: tar::EntryType, mode: u32, data: &[u8]) -> Layer {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Layer {
        self.entry(name, tar::EntryType::Regular, 0o644, data)
    }

    fn exe(self, name: &str, data: &[u8]) -> Layer {
        self.entry(name, tar::EntryType::Regular, 0o755, data)
    }

    fn dir(self, name: &str, mode: u32) -> Layer {
        self.entry(name, tar::EntryType::Directory, mode, b"")
    }

    fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }

    fn gzip(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// In-memory blobs that count how often a layer is opened.
struct Counting {
    blobs: Vec<Vec<u8>>,
    opens: Arc<AtomicUsize>,
}

impl Counting {
    fn new(blobs: Vec<Vec<u8>>) -> Counting {
        Counting {
            blobs,
            opens: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn opens(&self) -> usize {
        self.opens.load(Ordering::SeqCst)
    }

    /// Descriptors naming each blob by its SHA-256, as a manifest does.
    fn descriptors(&self) -> Vec<LayerDescriptor> {
        self.blobs
            .iter()
            .map(|b| descriptor(&sha256_of(b)))
            .collect()
    }
}

impl LayerSource for Counting {
    fn open_layer(
        &self,
        index: usize,
        layer: &LayerDescriptor,
    ) -> io::Result<Box<dyn io::Read + '_>> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.blobs.open_layer(index, layer)
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn descriptor(digest: &str) -> LayerDescriptor {
    LayerDescriptor::new(digest, MEDIA_TYPE_OCI_LAYER_GZIP)
}

fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc", 0o755)
        .file("etc/keep", b"keep\n")
        .file("etc/gone", b"remove me\n")
        .dir("bin", 0o755)
        .exe("bin/tool", b"#!/bin/sh\n")
        .gzip()
}

fn upper_layer() -> Vec<u8> {
    Layer::new()
        .file("etc/.wh.gone", b"")
        .file("etc/new", b"new\n")
        .gzip()
}

/// A layer of `size` bytes of one file, so roots of known sizes can be made.
fn sized_layer(name: &str, size: usize) -> Vec<u8> {
    Layer::new().file(name, &vec![b'x'; size]).gzip()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The size a root records for itself (what eviction counts).
fn recorded_size(root: &CachedRoot) -> u64 {
    fs::read_to_string(root.dir.join(READY))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn root_is_unpacked_once_and_found_again() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = UnpackCache::open(cache_dir.path(), 1 << 30).unwrap();
    let source = Counting::new(vec![base_layer(), upper_layer()]);
    let layers = source.descriptors();

    let first = cache.root(&source, &layers).unwrap();
    assert_eq!(source.opens(), 2, "each layer read once");
    let tree = first.tree();
    assert!(tree.starts_with(cache.roots_dir()), "{}", tree.display());
    assert_eq!(fs::read(tree.join("etc/keep")).unwrap(), b"keep\n");
    assert_eq!(fs::read(tree.join("etc/new")).unwrap(), b"new\n");
    assert!(!tree.join("etc/gone").exists(), "whiteout applied");
    assert!(!tree.join("etc/.wh.gone").exists(), "no marker left");
    assert_eq!(fs::read(tree.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(mode(&tree.join("bin/tool")), 0o755);
    assert_eq!(mode(&tree.join("etc/keep")), 0o644);

    // The same chain again, while the first hold is alive: no read of the source.
    let second = cache.root(&source, &layers).unwrap();
    assert_eq!(second.tree(), tree);
    assert_eq!(source.opens(), 2, "the cached root was not unpacked again");
    drop((first, second));

    // After a restart (a new cache over the same directory), it is still found.
    let reopened = UnpackCache::open(cache_dir.path(), 1 << 30).unwrap();
    let third = reopened.root(&source, &layers).unwrap();
    assert_eq!(third.tree(), tree);
    assert_eq!(source.opens(), 2);

    // Another chain (the base alone) is another root, with the file the upper one hid.
    let base_only = reopened.root(&source, &layers[..1]).unwrap();
    assert_ne!(base_only.tree(), tree);
    assert_eq!(source.opens(), 3);
    assert_eq!(
        fs::read(base_only.tree().join("etc/gone")).unwrap(),
        b"remove me\n"
    );
    assert!(!base_only.tree().join("etc/new").exists());
    // Two complete roots, nothing half-made.
    let roots = names(&reopened.roots_dir());
    assert_eq!(roots.len(), 2, "{roots:?}");
    assert!(roots.iter().all(|n| !n.starts_with('.')), "{roots:?}");
}

#[test]
fn a_held_root_is_never_evicted() {
    let cache_dir = tempfile::tempdir().unwrap();
    // Smaller than any root: everything not held goes at the next eviction.
    let cache = UnpackCache::open(cache_dir.path(), 1).unwrap();
    let source = Counting::new(vec![base_layer()]);
    let layers = source.descriptors();

    let held = cache.root(&source, &layers).unwrap();
    let tree = held.tree();
    assert!(recorded_size(&held) > 1);
    // `root` evicted after taking its hold, and eviction again keeps it.
    assert!(tree.join("etc/keep").exists());
    cache.evict();
    assert_eq!(fs::read(tree.join("etc/keep")).unwrap(), b"keep\n");

    // Another cache over the same directory (another process) cannot evict it either.
    UnpackCache::open(cache_dir.path(), 1).unwrap().evict();
    assert!(tree.join("etc/keep").exists());

    drop(held);
    assert!(tree.exists(), "dropping a hold removes nothing by itself");
    cache.evict();
    assert!(!tree.exists(), "evicted once no longer held");
    assert!(names(&cache.roots_dir()).is_empty(), "no trash left");

    // Asked for again, it is unpacked again.
    let again = cache.root(&source, &layers).unwrap();
    assert_eq!(source.opens(), 2);
    assert_eq!(fs::read(again.tree().join("etc/keep")).unwrap(), b"keep\n");
}

#[test]
fn a_dropped_hold_frees_the_root_even_if_a_copy_of_its_descriptor_lives_on() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = UnpackCache::open(cache_dir.path(), 1).unwrap();
    let source = Counting::new(vec![base_layer()]);
    let held = cache.root(&source, &source.descriptors()).unwrap();
    let tree = held.tree();
    // What a child forked by another thread has until its exec: the same open lock.
    let copy = held.lock.try_clone().unwrap();
    drop(held);
    cache.evict();
    assert!(
        !tree.exists(),
        "a copy of the descriptor does not keep the root"
    );
    drop(copy);
}

#[test]
fn least_recently_used_root_goes_first() {
    let cache_dir = tempfile::tempdir().unwrap();
    let big = UnpackCache::open(cache_dir.path(), 1 << 30).unwrap();
    let source = Counting::new(vec![
        sized_layer("a", 64 * 1024),
        sized_layer("b", 64 * 1024),
    ]);
    let layers = source.descriptors();
    let (only_a, only_b) = (&layers[..1], &layers[1..]);

    let a = big.root(&source, only_a).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let b = big.root(&source, only_b).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // Using `a` again makes `b` the least recently used.
    let a_again = big.root(&source, only_a).unwrap();
    assert_eq!(source.opens(), 2);
    let (tree_a, tree_b) = (a.tree(), b.tree());
    let room = recorded_size(&a).max(recorded_size(&b));
    assert!(room < recorded_size(&a) + recorded_size(&b));
    drop((a, b, a_again));

    // Room for one root only.
    let small = UnpackCache::open(cache_dir.path(), room).unwrap();
    small.evict();
    assert!(tree_a.join("a").exists(), "the recently used root stays");
    assert!(!tree_b.exists(), "the least recently used root goes");
    assert_eq!(names(&small.roots_dir()).len(), 1);

    // Within the bound now: nothing more goes.
    small.evict();
    assert!(tree_a.join("a").exists());
}

#[test]
fn open_removes_leftovers_of_interrupted_writes() {
    let cache_dir = tempfile::tempdir().unwrap();
    let dir = cache_dir.path();
    let cache = UnpackCache::open(dir, 1 << 30).unwrap();
    let source = Counting::new(vec![base_layer()]);
    let kept_root = cache.root(&source, &source.descriptors()).unwrap().tree();
    drop(cache);

    // A half-made root (with a directory its owner cannot write) and a half-written tar,
    // by a writer that is gone: a child that has exited (a fixed pid may be alive).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let partial_root = dir.join(format!("roots/.tmp-0123-{gone}-0"));
    fs::create_dir_all(partial_root.join("rootfs/usr/bin")).unwrap();
    fs::write(partial_root.join("rootfs/usr/bin/half"), b"half").unwrap();
    fs::set_permissions(
        partial_root.join("rootfs/usr"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    let partial_tar = dir.join(format!("layers/.tmp-sha256-00.tar-{gone}-0"));
    fs::write(&partial_tar, b"half a tar").unwrap();
    let kept_tar = dir.join(format!("layers/sha256-{}.tar", "0".repeat(64)));
    fs::write(&kept_tar, b"a whole tar").unwrap();

    let cache = UnpackCache::open(dir, 1 << 30).unwrap();
    assert!(!partial_root.exists(), "half-made root removed");
    assert!(!partial_tar.exists(), "half-written tar removed");
    assert_eq!(fs::read(&kept_tar).unwrap(), b"a whole tar");
    assert!(kept_root.join("etc/keep").exists(), "complete root kept");
    assert_eq!(names(&cache.roots_dir()).len(), 1);
}

#[test]
fn a_failed_unpack_leaves_nothing() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = UnpackCache::open(cache_dir.path(), 1 << 30).unwrap();

    // A gzip stream cut short, after a good layer was already written out.
    let mut corrupt = sized_layer("big", 256 * 1024);
    corrupt.truncate(corrupt.len() / 2);
    let source = Counting::new(vec![base_layer(), corrupt]);
    let err = cache.root(&source, &source.descriptors()).unwrap_err();
    assert!(matches!(err, SandboxError::Image(_)), "{err}");
    assert!(names(&cache.roots_dir()).is_empty(), "{err}");

    // Not gzip at all.
    let source = Counting::new(vec![b"\x1f\x8bnot really gzip".to_vec()]);
    let err = cache.root(&source, &source.descriptors()).unwrap_err();
    assert!(matches!(err, SandboxError::Image(_)), "{err}");
    assert!(names(&cache.roots_dir()).is_empty(), "{err}");

    // A hostile name, after an entry that was written.
    let hostile = Layer::new()
        .file("ok", b"written first\n")
        .file("../x", b"escape\n")
        .gzip();
    let source = Counting::new(vec![hostile]);
    let err = cache.root(&source, &source.descriptors()).unwrap_err();
    assert!(
        matches!(err, SandboxError::Image(ImageError::UnsafePath { .. })),
        "{err}"
    );
    assert!(names(&cache.roots_dir()).is_empty(), "{err}");
    assert!(!cache_dir.path().join("x").exists());
    assert!(!cache_dir.path().join("roots/x").exists());

    // A blob the source cannot give.
    let source = Counting::new(Vec::new());
    let err = cache
        .root(&source, &[descriptor(&sha256_of(b"missing"))])
        .unwrap_err();
    assert!(matches!(err, SandboxError::Image(_)), "{err}");
    assert!(names(&cache.roots_dir()).is_empty(), "{err}");

    // The failures did not poison the cache.
    let source = Counting::new(vec![base_layer()]);
    let root = cache.root(&source, &source.descriptors()).unwrap();
    assert!(root.tree().join("etc/keep").exists());
}

#[test]
fn package_data_path_takes_only_a_sha256() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = UnpackCache::open(cache_dir.path(), 1 << 30).unwrap();
    let hex = format!("{:x}", Sha256::digest(b"a package"));
    let expected = cache.layers_dir().join(format!("deb-sha256-{hex}.tar"));
    assert_eq!(cache.package_data_path(&hex), Some(expected.clone()));
    assert_eq!(
        cache.package_data_path(&format!("sha256:{hex}")),
        Some(expected)
    );
    for bad in [
        String::new(),
        "sha256:".to_owned(),
        "../x".to_owned(),
        format!("../{}", &hex[3..]),
        format!("sha256:../{}", &hex[3..]),
        hex.to_uppercase(),
        hex[1..].to_owned(),
        format!("{hex}0"),
        format!("{}g", &hex[1..]),
        format!("sha512:{hex}"),
        format!("{}/{}", &hex[..31], &hex[32..]),
    ] {
        assert_eq!(cache.package_data_path(&bad), None, "{bad:?}");
    }
}

fn read_layer_tar(source: &dyn LayerSource, index: usize, layer: &LayerDescriptor) -> Vec<u8> {
    let mut tar = Vec::new();
    source
        .open_layer(index, layer)
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    tar
}

#[test]
fn shared_layer_tars_are_kept_by_digest_and_made_again_when_evicted() {
    let shared = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tar = Layer::new().file("etc/keep", b"keep\n").tar();
    let blob = gzip(&tar);
    let digest = sha256_of(&blob);
    let layer = descriptor(&digest);
    let kept = shared
        .path()
        .join(format!("sha256-{}.tar", &digest["sha256:".len()..]));

    let first_source = Counting::new(vec![blob.clone()]);
    let first_opens = Arc::clone(&first_source.opens);
    let first = UnpackedLayers::new(
        first_source,
        scratch.path().to_path_buf(),
        &Limits::default(),
    )
    .shared_in(shared.path().to_path_buf());
    assert_eq!(read_layer_tar(&first, 0, &layer), tar);
    assert_eq!(first_opens.load(Ordering::SeqCst), 1);
    assert_eq!(fs::read(&kept).unwrap(), tar, "decompressed tar kept");
    assert_eq!(names(shared.path()).len(), 1, "no temporary file left");
    assert!(names(scratch.path()).is_empty(), "not in the scratch dir");
    // Read again: from the file.
    assert_eq!(read_layer_tar(&first, 0, &layer), tar);
    assert_eq!(first_opens.load(Ordering::SeqCst), 1);

    // Another run over the same shared dir never reads its source.
    let second_source = Counting::new(vec![blob.clone()]);
    let second_opens = Arc::clone(&second_source.opens);
    let other_scratch = tempfile::tempdir().unwrap();
    let second = UnpackedLayers::new(
        second_source,
        other_scratch.path().to_path_buf(),
        &Limits::default(),
    )
    .shared_in(shared.path().to_path_buf());
    assert_eq!(read_layer_tar(&second, 0, &layer), tar);
    assert_eq!(second_opens.load(Ordering::SeqCst), 0);

    // Evicted: both make it again, whether they had made it or found it.
    fs::remove_file(&kept).unwrap();
    assert_eq!(read_layer_tar(&second, 0, &layer), tar);
    assert_eq!(second_opens.load(Ordering::SeqCst), 1);
    assert_eq!(fs::read(&kept).unwrap(), tar);
    fs::remove_file(&kept).unwrap();
    assert_eq!(read_layer_tar(&first, 0, &layer), tar);
    assert_eq!(first_opens.load(Ordering::SeqCst), 2);
    assert_eq!(fs::read(&kept).unwrap(), tar);
    assert_eq!(names(shared.path()).len(), 1);
}

#[test]
fn unsafe_digests_stay_out_of_the_shared_dir() {
    let outer = tempfile::tempdir().unwrap();
    let shared = outer.path().join("a/b/shared");
    fs::create_dir_all(&shared).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tar = Layer::new().file("f", b"f\n").tar();
    let blob = gzip(&tar);
    let hex = format!("{:x}", Sha256::digest(&blob));
    let bad = [
        "sha256:../../x".to_owned(),
        format!("sha256:../../{hex}"),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}", &hex[..16]),
        format!("../sha256:{hex}"),
        format!("SHA256:{hex}"),
        hex.clone(),
    ];
    let source = Counting::new(vec![blob; bad.len()]);
    let opens = Arc::clone(&source.opens);
    let layers = UnpackedLayers::new(source, scratch.path().to_path_buf(), &Limits::default())
        .shared_in(shared.clone());
    for (index, digest) in bad.iter().enumerate() {
        assert_eq!(
            read_layer_tar(&layers, index, &descriptor(digest)),
            tar,
            "{digest}"
        );
    }
    assert_eq!(opens.load(Ordering::SeqCst), bad.len());
    assert!(names(&shared).is_empty(), "{:?}", names(&shared));
    assert_eq!(names(outer.path()), ["a"], "nothing written above the dir");
    assert!(!outer.path().join("a/x").exists());
    assert_eq!(names(scratch.path()).len(), bad.len(), "kept per run only");
}

#[test]
fn a_failed_layer_leaves_no_file_in_the_shared_dir() {
    let shared = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut blob = sized_layer("big", 256 * 1024);
    blob.truncate(blob.len() / 2);
    let layer = descriptor(&sha256_of(&blob));
    let layers = UnpackedLayers::new(vec![blob], scratch.path().to_path_buf(), &Limits::default())
        .shared_in(shared.path().to_path_buf());
    assert!(layers.open_layer(0, &layer).is_err());
    assert!(
        names(shared.path()).is_empty(),
        "{:?}",
        names(shared.path())
    );
    assert!(names(scratch.path()).is_empty());
}

#[test]
fn for_config_follows_the_size_setting() {
    let storage = tempfile::tempdir().unwrap();
    let toml = |size: &str| {
        format!(
            "[storage]\npath = {:?}\n[patch]\nunpack_cache_size = {size:?}\n",
            storage.path().display().to_string()
        )
    };
    let off = crate::config::Config::from_toml_str(&toml("0")).unwrap();
    assert!(UnpackCache::for_config(&off).is_none());
    assert!(!storage.path().join("unpacked").exists());

    let on = crate::config::Config::from_toml_str(&toml("64MiB")).unwrap();
    let cache = UnpackCache::for_config(&on).unwrap();
    assert_eq!(cache.max_size, 64 << 20);
    assert_eq!(cache.layers_dir(), storage.path().join("unpacked/layers"));
    assert_eq!(cache.roots_dir(), storage.path().join("unpacked/roots"));
    assert!(cache.layers_dir().is_dir() && cache.roots_dir().is_dir());
}

/// A source whose second layer waits until released, to catch a build in progress.
struct Gated {
    blobs: Vec<Vec<u8>>,
    reached: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl LayerSource for Gated {
    fn open_layer(
        &self,
        index: usize,
        layer: &LayerDescriptor,
    ) -> io::Result<Box<dyn io::Read + '_>> {
        if index == 1 {
            let _ = self.reached.send(());
            let _ = self.release.lock().unwrap().recv();
        }
        self.blobs.open_layer(index, layer)
    }
}

#[test]
fn opening_the_cache_again_spares_a_build_in_progress() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(UnpackCache::open(cache_dir.path(), 1 << 30).unwrap());
    let (reached_tx, reached) = std::sync::mpsc::sync_channel(1);
    let (release, release_rx) = std::sync::mpsc::sync_channel(1);
    let blobs = vec![base_layer(), upper_layer()];
    let layers = Counting::new(blobs.clone()).descriptors();
    let source = Gated {
        blobs,
        reached: reached_tx,
        release: std::sync::Mutex::new(release_rx),
    };
    let building = {
        let cache = Arc::clone(&cache);
        std::thread::spawn(move || cache.root(&source, &layers).map(|r| r.tree()))
    };
    reached.recv().unwrap();
    // Another process sharing the directory starts (a `patchpull patch` next to the server).
    UnpackCache::open(cache_dir.path(), 1 << 30).unwrap();
    release.send(()).unwrap();
    let tree = building.join().unwrap().unwrap();
    assert!(tree.join("etc/new").exists());
}

#[test]
fn a_root_from_an_earlier_boot_is_made_again() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = UnpackCache::open(cache_dir.path(), 1 << 30).unwrap();
    let source = Counting::new(vec![base_layer(), upper_layer()]);
    let layers = source.descriptors();
    let first = cache.root(&source, &layers).unwrap();
    let ready = first.dir.join(READY);
    let text = fs::read_to_string(&ready).unwrap();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(text.lines().nth(1), Some(boot.trim()), "{text}");
    drop(first);
    // Written before a crash and a reboot: its files may never have reached the disk.
    let size = text.lines().next().unwrap();
    fs::write(
        &ready,
        format!("{size}\n00000000-0000-0000-0000-000000000000\n"),
    )
    .unwrap();
    fs::remove_file(first_tree_file(&cache, &layers)).unwrap();
    let again = cache.root(&source, &layers).unwrap();
    assert_eq!(source.opens(), 4, "unpacked a second time");
    assert_eq!(fs::read(again.tree().join("etc/keep")).unwrap(), b"keep\n");
    let roots = names(&cache.roots_dir());
    assert_eq!(roots.len(), 1, "{roots:?}");
    // A tree marked as synced is trusted whatever the boot.
    fs::write(again.dir.join(READY), format!("{size}\nsynced\n")).unwrap();
    drop(again);
    cache.root(&source, &layers).unwrap();
    assert_eq!(source.opens(), 4);
}

/// A file of the root of `layers`, to damage as a crash would.
fn first_tree_file(cache: &UnpackCache, layers: &[LayerDescriptor]) -> PathBuf {
    let key = root_key(layers, sandbox::owners_kept().unwrap());
    cache.roots_dir().join(key).join(TREE).join("etc/keep")
}
