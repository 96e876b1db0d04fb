//! [`snapshot`] and [`diff`]: an exact record of a tree (contents hashed) and what changed
//! in it. Modification times are recorded but are not changes: a script that rewrites a
//! file with the same bytes must not put it into the layer.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{SandboxError, ID_RANGE, OVERFLOW_ID};

/// The type of a path in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// Devices, FIFOs, sockets.
    Other,
}

/// One path of a [`Snapshot`]. Owners are as the sandbox sees them (image ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub kind: FileKind,
    /// Permission bits with set-id and sticky bits (`0o4755`), no type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// A symbolic link's target, as stored.
    pub link_target: Option<PathBuf>,
    /// SHA-256 of a regular file's contents.
    pub sha256: Option<[u8; 32]>,
    /// Inode number and link count: paths sharing an inode are hard links of each other.
    pub inode: u64,
    pub links: u64,
}

impl FileRecord {
    /// Whether `other` differs in anything but times and inode.
    pub(super) fn same_content(&self, other: &FileRecord) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.link_target == other.link_target
            && self.sha256 == other.sha256
            && (self.kind != FileKind::File || self.size == other.size)
    }
}

/// A record of every path under a root (the root itself excepted), by relative path
/// without a leading `/`, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    records: BTreeMap<String, FileRecord>,
}

impl Snapshot {
    pub fn get(&self, path: &str) -> Option<&FileRecord> {
        self.records.get(path)
    }

    /// Every path, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FileRecord)> {
        self.records.iter().map(|(p, r)| (p.as_str(), r))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A difference between two snapshots, by relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(String),
    /// Contents, type, mode, owner or link target changed.
    Modified(String),
    Removed(String),
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Added(p) | Change::Modified(p) | Change::Removed(p) => p,
        }
    }
}

/// Records the tree under `root`. `exclude` names paths (`"proc"`, `"var/lib/dpkg/tmp.ci"`)
/// left out with everything below them. Ids are made relative to the owner of `root` (the
/// sandbox's root user); paths the caller wrote itself count as owned by root.
///
/// Errors: I/O errors, and [`SandboxError::NonUtf8Path`] for a name that is not UTF-8.
pub fn snapshot(root: &Path, exclude: &[&str]) -> Result<Snapshot, SandboxError> {
    let top = fs::symlink_metadata(root).map_err(|e| SandboxError::io("stat", root, e))?;
    let ids = Ids {
        uid_base: top.uid(),
        gid_base: top.gid(),
    };
    let exclude: Vec<&str> = exclude.iter().map(|e| e.trim_matches('/')).collect();
    let mut records = BTreeMap::new();
    let mut files: Vec<String> = Vec::new();
    let mut pending: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        let listing = fs::read_dir(&dir).map_err(|e| SandboxError::io("read", &dir, e))?;
        for child in listing {
            let child = child.map_err(|e| SandboxError::io("read", &dir, e))?;
            let host = child.path();
            let name = child
                .file_name()
                .into_string()
                .map_err(|_| SandboxError::NonUtf8Path(host.clone()))?;
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if excluded(&exclude, &path) {
                continue;
            }
            // DirEntry::metadata does not follow symbolic links.
            let meta = child
                .metadata()
                .map_err(|e| SandboxError::io("stat", &host, e))?;
            let record = record(&host, &meta, &ids)?;
            match record.kind {
                FileKind::Dir => pending.push((host, path.clone())),
                FileKind::File => files.push(path.clone()),
                _ => {}
            }
            records.insert(path, record);
        }
    }
    for (path, digest) in hash_all(root, &files)? {
        if let Some(record) = records.get_mut(&path) {
            record.sha256 = Some(digest);
        }
    }
    Ok(Snapshot { records })
}

/// The record of one path under `root`, ids as [`snapshot`] reports them.
///
/// Errors: I/O errors.
pub fn record_at(root: &Path, rel: &str) -> Result<FileRecord, SandboxError> {
    let top = fs::symlink_metadata(root).map_err(|e| SandboxError::io("stat", root, e))?;
    let ids = Ids {
        uid_base: top.uid(),
        gid_base: top.gid(),
    };
    let host = root.join(rel);
    let meta = fs::symlink_metadata(&host).map_err(|e| SandboxError::io("stat", &host, e))?;
    record(&host, &meta, &ids)
}

pub(super) fn excluded(exclude: &[&str], path: &str) -> bool {
    exclude.iter().any(|e| {
        !e.is_empty()
            && path.starts_with(e)
            && (path.len() == e.len() || path.as_bytes()[e.len()] == b'/')
    })
}

pub(super) struct Ids {
    pub(super) uid_base: u32,
    pub(super) gid_base: u32,
}

/// `id` as the sandbox sees it. Host id 0 in a shifted tree is what a root caller wrote
/// itself ([`super::run`] hands such paths to the sandbox's root first).
fn relative(id: u32, base: u32) -> u32 {
    if id >= base && id - base < ID_RANGE {
        id - base
    } else if id == 0 {
        0
    } else {
        OVERFLOW_ID
    }
}

pub(super) fn record(
    host: &Path,
    meta: &fs::Metadata,
    ids: &Ids,
) -> Result<FileRecord, SandboxError> {
    let file_type = meta.file_type();
    let kind = if file_type.is_file() {
        FileKind::File
    } else if file_type.is_dir() {
        FileKind::Dir
    } else if file_type.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    let link_target = match kind {
        FileKind::Symlink => {
            Some(fs::read_link(host).map_err(|e| SandboxError::io("read link", host, e))?)
        }
        _ => None,
    };
    Ok(FileRecord {
        kind,
        mode: meta.mode() & 0o7777,
        uid: relative(meta.uid(), ids.uid_base),
        gid: relative(meta.gid(), ids.gid_base),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        link_target,
        sha256: None,
        inode: meta.ino(),
        links: meta.nlink(),
    })
}

/// Hashes `files` (relative to `root`) on a few threads.
fn hash_all(root: &Path, files: &[String]) -> Result<Vec<(String, [u8; 32])>, SandboxError> {
    crate::parallel::map(files, 4, |path| {
        let host = root.join(path);
        match hash_file(&host) {
            Ok(digest) => Ok((path.clone(), digest)),
            Err(e) => Err(SandboxError::io("hash", host, e)),
        }
    })
    .into_iter()
    .collect()
}

pub(super) fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// What differs between `before` and `after`, sorted by path. A path whose type changed
/// is [`Change::Modified`].
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut old = before.records.iter().peekable();
    let mut new = after.records.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some((path, _)), None) => {
                changes.push(Change::Removed((*path).clone()));
                old.next();
            }
            (None, Some((path, _))) => {
                changes.push(Change::Added((*path).clone()));
                new.next();
            }
            (Some((a, ra)), Some((b, rb))) => match a.cmp(b) {
                std::cmp::Ordering::Less => {
                    changes.push(Change::Removed((*a).clone()));
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    changes.push(Change::Added((*b).clone()));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if !ra.same_content(rb) {
                        changes.push(Change::Modified((*a).clone()));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
    changes
}
