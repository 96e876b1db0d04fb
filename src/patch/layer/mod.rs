//! The deterministic layer writer: the patch layer as a gzip-compressed tar whose bytes
//! depend only on the entries given, never on insertion order, the clock, the host or the
//! way the file data is read. Replicas that patch the same image with the same plan then
//! produce the same digest without talking to each other.
//!
//! The tar is GNU format (long names and link targets as `././@LongLink` records), entries
//! sorted by their tar name's bytes, owners, modes and times taken from the entries. Whiteouts
//! follow the OCI layer convention (`.wh.<name>`, `.wh..wh..opq`).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::distribution::reference::Digest;

mod pgzip;
mod write;

#[cfg(test)]
mod tests;

/// The prefix that marks a whiteout in a layer; no ordinary entry may use it.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the marker that makes a directory opaque.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// One path of the layer.
#[derive(Debug, Clone)]
pub struct LayerEntry {
    /// `usr/bin/perl`: relative, no `./` prefix, no trailing `/`, no empty, `.` or `..`
    /// components.
    pub path: String,
    /// Permission bits including setuid, setgid and sticky; file type bits are ignored.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    /// Seconds since the epoch, as the package records it (never the clock).
    pub mtime: u64,
    pub kind: EntryKind,
}

#[cfg(test)]
impl LayerEntry {
    /// A root-owned entry with a fixed mtime, for tests.
    pub(crate) fn for_test(path: &str, mode: u32, kind: EntryKind) -> LayerEntry {
        LayerEntry {
            path: path.to_owned(),
            mode,
            uid: 0,
            gid: 0,
            uname: "root".to_owned(),
            gname: "root".to_owned(),
            mtime: 1_700_000_000,
            kind,
        }
    }
}

#[derive(Debug, Clone)]
pub enum EntryKind {
    Dir,
    File(FileData),
    /// The link target, verbatim.
    Symlink(String),
    /// The target's path in the image, in the same form as [`LayerEntry::path`].
    Hardlink(String),
    /// Deletes the path from the layers below: written as `<dir>/.wh.<name>`.
    Whiteout,
    /// A directory that hides everything below it in lower layers: written as the directory
    /// itself followed by `<path>/.wh..wh..opq` with the directory's owner and permissions,
    /// as Docker and containerd write it.
    OpaqueDir,
}

/// Where a regular file's bytes come from. `Slice` and `Path` are streamed while writing,
/// so a layer of any size is written in bounded memory.
#[derive(Debug, Clone)]
pub enum FileData {
    Bytes(Vec<u8>),
    /// `len` bytes at `offset` of an open file (for example a member of a package archive),
    /// read positionally so one file can back many entries.
    Slice {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// A file on the local disk; its length when writing starts is its expected length.
    Path(PathBuf),
}

/// The written layer. The file is the caller's: move it into the store or delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    /// The `.tar.gz` file.
    pub path: PathBuf,
    /// Of the gzip bytes: the blob digest in the manifest.
    pub digest: Digest,
    /// Of the uncompressed tar: the `rootfs.diff_ids` entry in the config.
    pub diff_id: Digest,
    /// Of the gzip bytes.
    pub size: u64,
    /// Of the tar.
    pub uncompressed_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {path:?}: invalid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("layer entry {path:?}: invalid link target {target:?}: {reason}")]
    InvalidLink {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("layer entry {path:?}: its parent {parent:?} is not a directory in this layer")]
    ParentNotDirectory { path: String, parent: String },
    #[error("layer entry {path:?}: the file has {actual} bytes, {expected} were expected")]
    LengthMismatch {
        path: String,
        expected: u64,
        /// What was found: the length on disk, or how far reading got before it ended.
        actual: u64,
    },
    #[error("layer entry {path:?}: cannot read its data from {source_name}")]
    Read {
        path: String,
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer entry {path:?}: cannot encode its tar header")]
    Header {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the layer file {file}")]
    Write {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The entries of one layer, keyed by path: inserting a path again replaces its entry.
#[derive(Debug, Default, Clone)]
pub struct LayerBuilder {
    entries: BTreeMap<String, LayerEntry>,
}

impl LayerBuilder {
    /// Adds `entry`, replacing any entry with the same path. Paths are checked by
    /// [`LayerBuilder::write_gzip`].
    pub fn insert(&mut self, entry: LayerEntry) {
        self.entries.insert(entry.path.clone(), entry);
    }

    pub fn remove(&mut self, path: &str) -> Option<LayerEntry> {
        self.entries.remove(path)
    }

    pub fn get(&self, path: &str) -> Option<&LayerEntry> {
        self.entries.get(path)
    }

    /// Marks `path` deleted. Whiteouts carry no metadata of their own, so they are
    /// root-owned with mode 0 and mtime 0, like containerd's differ writes them (minus its
    /// clock time).
    pub fn whiteout(&mut self, path: &str) {
        self.insert(LayerEntry {
            path: path.to_owned(),
            mode: 0,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 0,
            kind: EntryKind::Whiteout,
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries sorted by path bytes.
    pub fn iter(&self) -> impl Iterator<Item = &LayerEntry> {
        self.entries.values()
    }

    /// Writes the layer as gzip into a new temporary file in `dir` and returns it with its
    /// digests, computed while writing. Nothing is left behind on error.
    pub fn write_gzip(&self, dir: &Path) -> Result<BuiltLayer, LayerError> {
        let records = self.records()?;
        write::write_gzip(&records, dir)
    }

    /// Validates every entry and returns the tar records in writing order.
    fn records(&self) -> Result<Vec<Record<'_>>, LayerError> {
        for entry in self.entries.values() {
            self.check(entry)?;
        }
        let mut sorted: Vec<Record<'_>> = Vec::with_capacity(self.entries.len());
        for entry in self.entries.values() {
            match &entry.kind {
                EntryKind::Whiteout => sorted.push(Record {
                    name: whiteout_name(&entry.path),
                    entry,
                    part: Part::Whiteout,
                }),
                EntryKind::OpaqueDir => {
                    sorted.push(Record {
                        name: entry.path.clone(),
                        entry,
                        part: Part::Main,
                    });
                    sorted.push(Record {
                        name: format!("{}/{OPAQUE_MARKER}", entry.path),
                        entry,
                        part: Part::OpaqueMarker,
                    });
                }
                _ => sorted.push(Record {
                    name: entry.path.clone(),
                    entry,
                    part: Part::Main,
                }),
            }
        }
        sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));

        // A hard link must follow its target: links whose target (in this layer) sorts
        // after them are moved right behind it, in their own sorted order.
        let mut deferred: BTreeMap<String, Vec<Record<'_>>> = BTreeMap::new();
        let mut ordered = Vec::with_capacity(sorted.len());
        for record in sorted {
            match &record.entry.kind {
                EntryKind::Hardlink(target)
                    if self.entries.contains_key(target)
                        && target.as_bytes() > record.name.as_bytes() =>
                {
                    deferred.entry(target.clone()).or_default().push(record);
                }
                _ => ordered.push(record),
            }
        }
        let mut records = Vec::with_capacity(ordered.len());
        for record in ordered {
            let links = match record.part {
                Part::Main => deferred.remove(&record.name),
                _ => None,
            };
            records.push(record);
            records.extend(links.into_iter().flatten());
        }
        Ok(records)
    }

    fn check(&self, entry: &LayerEntry) -> Result<(), LayerError> {
        let path = &entry.path;
        check_path(path).map_err(|reason| LayerError::InvalidPath {
            path: path.clone(),
            reason,
        })?;
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            if let Some(p) = self.entries.get(parent) {
                if !matches!(p.kind, EntryKind::Dir | EntryKind::OpaqueDir) {
                    return Err(LayerError::ParentNotDirectory {
                        path: path.clone(),
                        parent: parent.to_owned(),
                    });
                }
            }
        }
        let bad_link = |target: &str, reason| LayerError::InvalidLink {
            path: path.clone(),
            target: target.to_owned(),
            reason,
        };
        match &entry.kind {
            EntryKind::Symlink(target) => {
                if target.is_empty() {
                    return Err(bad_link(target, "empty"));
                }
                if target.contains('\0') {
                    return Err(bad_link(target, "contains a NUL byte"));
                }
            }
            EntryKind::Hardlink(target) => {
                check_path(target).map_err(|reason| bad_link(target, reason))?;
                if target == path {
                    return Err(bad_link(target, "a hard link to itself"));
                }
                if let Some(t) = self.entries.get(target) {
                    if !matches!(t.kind, EntryKind::File(_) | EntryKind::Symlink(_)) {
                        return Err(bad_link(
                            target,
                            "the target in this layer is not a regular file or symlink",
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// One tar record: an entry, or the opaque marker that follows an opaque directory.
#[derive(Debug)]
struct Record<'a> {
    /// The tar name without a directory's trailing `/`: the sort key.
    name: String,
    entry: &'a LayerEntry,
    part: Part,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Main,
    Whiteout,
    OpaqueMarker,
}

/// `a/b/c` -> `a/b/.wh.c`.
fn whiteout_name(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{WHITEOUT_PREFIX}{name}"),
        None => format!("{WHITEOUT_PREFIX}{path}"),
    }
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    if path.starts_with('/') {
        return Err("absolute (must not start with '/')");
    }
    if path.ends_with('/') {
        return Err("must not end with '/'");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty component ('//')"),
            "." => return Err("'.' component"),
            ".." => return Err("'..' component"),
            c if c.starts_with(WHITEOUT_PREFIX) => {
                return Err("component starts with '.wh.', reserved for whiteouts")
            }
            _ => {}
        }
    }
    Ok(())
}
