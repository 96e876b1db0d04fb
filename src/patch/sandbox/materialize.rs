//! [`materialize`]: the image's layers applied bottom-up onto a real directory, with the
//! OCI whiteout rules as overlayfs applies them (the same rules as `image::Filesystem`):
//! an entry hides the lower layers' path whatever the order inside its layer, a whiteout or
//! an opaque marker hides lower layers only, and a layer's entry below a path where a lower
//! layer has a symbolic link or file turns that path into a directory.
//!
//! Nothing is ever written through a symbolic link: every parent is checked with
//! `symlink_metadata`, files are created with `O_EXCL`, and a link the same layer made in
//! a parent position is refused as hostile.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{effective_uid, SandboxError, ID_RANGE, OVERFLOW_ID, ROOT_ID_BASE};
use crate::image::{
    read_layer, EntryKind, ImageError, LayerDescriptor, LayerEntry, LayerRef, LayerSource, Limits,
    Usage,
};

/// What [`materialize`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Materialized {
    /// Tar entries applied (whiteout markers included).
    pub entries: u64,
    /// Device nodes and FIFOs, which cannot be made without privileges; not written.
    pub skipped_devices: u64,
    /// Whether files carry the image's owners (shifted by [`ROOT_ID_BASE`]); only a root
    /// caller can do that.
    pub owners_kept: bool,
}

/// Writes the image's merged file system (layers bottom-up, whiteouts and opaque
/// directories applied) into `root`, an existing empty directory. Modes, symbolic links
/// and hard links (within `root`) are kept; device nodes are counted and skipped.
///
/// Errors: [`SandboxError::NotEmpty`]; [`SandboxError::Image`] for unreadable layers,
/// limits and `..` names; [`SandboxError::UnsafeEntry`] for an entry below a symbolic link
/// or file of its own layer, or a hard link through a symbolic link; I/O errors.
pub fn materialize(
    source: &dyn LayerSource,
    layers: &[LayerDescriptor],
    root: &Path,
    limits: &Limits,
) -> Result<Materialized, SandboxError> {
    let meta = fs::symlink_metadata(root).map_err(|e| SandboxError::io("stat", root, e))?;
    let mut listing = fs::read_dir(root).map_err(|e| SandboxError::io("read", root, e))?;
    if !meta.is_dir() || listing.next().is_some() {
        return Err(SandboxError::NotEmpty(root.to_path_buf()));
    }
    let owners = effective_uid()? == 0;
    let mut writer = Writer {
        root: root.to_path_buf(),
        owners,
        layer: 0,
        created: HashSet::new(),
        dirs: BTreeMap::new(),
        done: Materialized {
            owners_kept: owners && HEADER_OWNERS,
            ..Materialized::default()
        },
    };
    writer.own(root, 0, 0)?;
    let mut usage = Usage::default();
    for (index, descriptor) in layers.iter().enumerate() {
        let layer = LayerRef {
            index,
            digest: descriptor.digest.clone(),
        };
        let blob = source
            .open_layer(index, descriptor)
            .map_err(|source| ImageError::Open {
                layer: layer.clone(),
                source,
            })?;
        writer.layer = index;
        writer.created.clear();
        let mut failure = None;
        let read = read_layer(
            blob,
            &layer,
            &descriptor.media_type,
            limits,
            &mut usage,
            |entry| {
                writer.apply(entry).map_err(|e| {
                    failure = Some(e);
                    // Only stops the walk; the real error is `failure`.
                    ImageError::Open {
                        layer: layer.clone(),
                        source: std::io::Error::other("materialize stopped"),
                    }
                })
            },
        );
        match (read, failure) {
            (_, Some(e)) => return Err(e),
            (Err(e), None) => return Err(e.into()),
            (Ok(()), None) => {}
        }
    }
    writer.finish_dirs()?;
    Ok(writer.done)
}

/// Gives every name of a hard-linked regular file under `root` an inode of its own (same
/// bytes, owner and mode). Scripts then see what they see through an overlay, where a
/// write copies up only the name written to (as under a container runtime's overlay
/// snapshotter): changing one name of an image's hard-linked file changes that name only,
/// whichever way the root was made.
///
/// Errors: I/O errors.
pub fn separate_hard_links(root: &Path) -> Result<u64, SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let mut separated = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let listing = fs::read_dir(&dir).map_err(|e| SandboxError::io("read", &dir, e))?;
        for child in listing {
            let child = child.map_err(|e| SandboxError::io("read", &dir, e))?;
            let path = child.path();
            let meta = child
                .metadata()
                .map_err(|e| SandboxError::io("stat", &path, e))?;
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            if !meta.is_file() || meta.nlink() < 2 {
                continue;
            }
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".patchpull-separate");
            let copy = path.with_file_name(name);
            fs::copy(&path, &copy).map_err(|e| SandboxError::io("copy", &path, e))?;
            lchown(&copy, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| SandboxError::io("chown", &copy, e))?;
            fs::set_permissions(&copy, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| SandboxError::io("chmod", &copy, e))?;
            fs::rename(&copy, &path).map_err(|e| SandboxError::io("rename", &copy, e))?;
            separated += 1;
        }
    }
    Ok(separated)
}

/// Whether [`LayerEntry`] tells owners and mtimes. It does not yet: files then belong to
/// image root and carry the extraction time.
const HEADER_OWNERS: bool = true;

/// The header fields kept on disk.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<SystemTime>,
}

fn meta_of(entry: &LayerEntry<'_>) -> Meta {
    let (uid, gid) = entry.owner();
    Meta {
        mode: entry.to_node(0).mode & 0o7777,
        uid: u32::try_from(uid).unwrap_or(OVERFLOW_ID),
        gid: u32::try_from(gid).unwrap_or(OVERFLOW_ID),
        mtime: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(entry.mtime())),
    }
}

/// What an entry's name means under the OCI whiteout rules.
enum Marker<'p> {
    Plain,
    /// `.wh.<name>`: the path hidden in lower layers.
    Whiteout(Vec<u8>),
    /// `.wh..wh..opq`: the directory whose lower contents are hidden.
    Opaque(&'p [u8]),
    /// Other `.wh..wh.` names (aufs metadata): ignored, as containerd does.
    Ignored,
    /// `.wh.`, `.wh..`, `.wh...`: would hide the directory itself or its parent.
    Invalid,
}

fn classify(path: &[u8]) -> Marker<'_> {
    let (dir, name) = split(path);
    let Some(hidden) = name.strip_prefix(b".wh.") else {
        return Marker::Plain;
    };
    if hidden == b".wh..opq" {
        return Marker::Opaque(dir);
    }
    if hidden.starts_with(b".wh.") {
        return Marker::Ignored;
    }
    match hidden {
        b"" | b"." | b".." => Marker::Invalid,
        _ if dir.is_empty() => Marker::Whiteout(hidden.to_vec()),
        _ => Marker::Whiteout([dir, b"/", hidden].concat()),
    }
}

/// (parent, name); the parent of a top-level name is the empty path.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

struct Writer {
    root: PathBuf,
    /// Running as root: chown to the shifted image owners.
    owners: bool,
    layer: usize,
    /// Paths this layer wrote (entries and the directories they imply).
    created: HashSet<Vec<u8>>,
    /// Directory modes and mtimes, applied last: children change a directory's mtime, and
    /// a read-only directory would refuse them.
    dirs: BTreeMap<Vec<u8>, (u32, Option<SystemTime>)>,
    done: Materialized,
}

impl Writer {
    fn host(&self, path: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(path))
    }

    fn refuse(&self, path: &[u8], reason: &'static str) -> SandboxError {
        SandboxError::UnsafeEntry {
            layer: self.layer,
            path: String::from_utf8_lossy(path).into_owned(),
            reason,
        }
    }

    fn apply(&mut self, entry: &mut LayerEntry<'_>) -> Result<(), SandboxError> {
        self.done.entries += 1;
        let path = entry.path().to_vec();
        match classify(&path) {
            Marker::Plain => {}
            Marker::Whiteout(hidden) => {
                self.parents(&hidden)?;
                return self.prune(&hidden);
            }
            Marker::Opaque(dir) => {
                let dir = dir.to_vec();
                if !dir.is_empty() {
                    self.parents(&dir)?;
                    self.make_dir(&dir, 0o755, None, false)?;
                }
                return self.prune_children(&dir);
            }
            Marker::Ignored => return Ok(()),
            Marker::Invalid => return Err(self.refuse(&path, "whiteout of . or ..")),
        }
        self.parents(&path)?;
        let meta = meta_of(entry);
        if entry.kind() == EntryKind::Dir {
            return self.make_dir(&path, meta.mode, meta.mtime, true);
        }
        let host = self.host(&path);
        self.clear(&host)?;
        match entry.kind() {
            EntryKind::File => {
                let contents = entry.read_contents()?;
                // O_CREAT|O_EXCL: never opens through a link, even a dangling one.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&host)
                    .map_err(|e| SandboxError::io("create", &host, e))?;
                file.write_all(&contents)
                    .map_err(|e| SandboxError::io("write", &host, e))?;
                self.own(&host, meta.uid, meta.gid)?;
                // After chown, which clears set-id bits.
                file.set_permissions(fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| SandboxError::io("chmod", &host, e))?;
                if let Some(mtime) = meta.mtime {
                    file.set_modified(mtime)
                        .map_err(|e| SandboxError::io("set mtime of", &host, e))?;
                }
            }
            EntryKind::Symlink => {
                let target = entry.link_target().unwrap_or_default();
                symlink(OsStr::from_bytes(target), &host)
                    .map_err(|e| SandboxError::io("symlink", &host, e))?;
                self.own(&host, meta.uid, meta.gid)?;
            }
            EntryKind::Hardlink => {
                let target = entry.link_target().unwrap_or_default().to_vec();
                let target_host = self.host(&target);
                if !self.real_dirs(split(&target).0)? {
                    return Err(self.refuse(&path, "hard link through a symbolic link"));
                }
                match fs::symlink_metadata(&target_host) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(self.refuse(&path, "hard link target missing or a directory")),
                }
                // linkat without AT_SYMLINK_FOLLOW: a link to a symbolic link stays one.
                fs::hard_link(&target_host, &host)
                    .map_err(|e| SandboxError::io("hard link", &host, e))?;
            }
            EntryKind::Dir => {}
            EntryKind::Other => {
                self.done.skipped_devices += 1;
            }
        }
        self.created.insert(path);
        Ok(())
    }

    /// Makes every parent of `path` a real directory: missing ones are created, a lower
    /// layer's link or file in the way is replaced, the same layer's is refused.
    fn parents(&mut self, path: &[u8]) -> Result<(), SandboxError> {
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|b| *b == b'/') {
            end += i;
            let dir = path[..end].to_vec();
            end += 1;
            let host = self.host(&dir);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) if self.created.contains(&dir) => {
                    return Err(self.refuse(path, "a parent is a link or file of the same layer"))
                }
                _ => self.make_dir(&dir, 0o755, None, false)?,
            }
        }
        Ok(())
    }

    /// Whether every component of `dir` is a real directory (not a link).
    fn real_dirs(&self, dir: &[u8]) -> Result<bool, SandboxError> {
        let mut end = 0;
        loop {
            let next = dir[end..].iter().position(|b| *b == b'/').map(|i| end + i);
            let prefix = &dir[..next.unwrap_or(dir.len())];
            if !prefix.is_empty() {
                match fs::symlink_metadata(self.host(prefix)) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Ok(false),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(SandboxError::io("stat", self.host(prefix), e)),
                }
            }
            match next {
                Some(i) => end = i + 1,
                None => return Ok(true),
            }
        }
    }

    /// A directory at `path` (whose parents are real directories): an existing one is kept
    /// with its contents, anything else there is replaced.
    fn make_dir(
        &mut self,
        path: &[u8],
        mode: u32,
        mtime: Option<SystemTime>,
        explicit: bool,
    ) -> Result<(), SandboxError> {
        let host = self.host(path);
        let exists = match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => true,
            Ok(_) => {
                self.clear(&host)?;
                false
            }
            Err(_) => false,
        };
        if !exists {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&host)
                .map_err(|e| SandboxError::io("mkdir", &host, e))?;
            self.own(&host, 0, 0)?;
        }
        if explicit {
            self.dirs.insert(path.to_vec(), (mode, mtime));
        } else if !exists {
            self.dirs.insert(path.to_vec(), (mode, None));
        }
        self.created.insert(path.to_vec());
        Ok(())
    }

    /// Removes whatever is at `host` (not following links).
    fn clear(&mut self, host: &Path) -> Result<(), SandboxError> {
        let result = match fs::symlink_metadata(host) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(host),
            Ok(_) => fs::remove_file(host),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
        };
        result.map_err(|e| SandboxError::io("remove", host, e))
    }

    /// Hides what lower layers have at `path`, keeping what this layer wrote there.
    fn prune(&mut self, path: &[u8]) -> Result<(), SandboxError> {
        if !self.created.contains(path) {
            let host = self.host(path);
            return self.clear(&host);
        }
        if fs::symlink_metadata(self.host(path)).is_ok_and(|m| m.is_dir()) {
            self.prune_children(path)?;
        }
        Ok(())
    }

    fn prune_children(&mut self, dir: &[u8]) -> Result<(), SandboxError> {
        let host = self.host(dir);
        let names: Vec<Vec<u8>> = fs::read_dir(&host)
            .map_err(|e| SandboxError::io("read", &host, e))?
            .map(|child| child.map(|c| c.file_name().as_bytes().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| SandboxError::io("read", &host, e))?;
        for name in names {
            let child = if dir.is_empty() {
                name
            } else {
                [dir, b"/", &name].concat()
            };
            self.prune(&child)?;
        }
        Ok(())
    }

    /// Gives `host` the image owner, shifted, when running as root.
    fn own(&self, host: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
        if !self.owners {
            return Ok(());
        }
        let shift = |id: u32| ROOT_ID_BASE + if id < ID_RANGE { id } else { OVERFLOW_ID };
        lchown(host, Some(shift(uid)), Some(shift(gid)))
            .map_err(|e| SandboxError::io("chown", host, e))
    }

    /// Directory modes and mtimes, deepest first so that setting one does not touch another.
    fn finish_dirs(&mut self) -> Result<(), SandboxError> {
        for (path, (mode, mtime)) in self.dirs.iter().rev() {
            let host = self.host(path);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                _ => continue,
            }
            fs::set_permissions(&host, fs::Permissions::from_mode(*mode))
                .map_err(|e| SandboxError::io("chmod", &host, e))?;
            if let Some(mtime) = mtime {
                File::open(&host)
                    .and_then(|dir| dir.set_modified(*mtime))
                    .map_err(|e| SandboxError::io("set mtime of", &host, e))?;
            }
        }
        Ok(())
    }
}
