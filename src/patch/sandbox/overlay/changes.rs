//! [`OverlayRoot::changes`]: the upper directory read against the lower tree, with the
//! same answers as a before/after snapshot diff of a plain tree.

use std::collections::BTreeMap;
use std::fs::{self, DirEntry, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::super::snapshot::{excluded, hash_file, record, FileKind, FileRecord, Ids};
use super::super::{Change, SandboxError};
use super::{is_opaque, is_whiteout, join, lstat, OverlayRoot};

pub(super) struct Walk<'a> {
    pub(super) root: &'a OverlayRoot,
    pub(super) exclude: &'a [&'a str],
    pub(super) upper_ids: Ids,
    pub(super) lower_ids: Ids,
    pub(super) out: BTreeMap<String, Change>,
}

impl Walk<'_> {
    pub(super) fn run(mut self) -> Result<Vec<Change>, SandboxError> {
        self.dir("")?;
        Ok(self.out.into_values().collect())
    }

    /// The entries of the directory `rel` under `tree` that are not excluded, each with its
    /// path in the tree.
    fn children(&self, tree: &Path, rel: &str) -> Result<Vec<(String, DirEntry)>, SandboxError> {
        let host = tree.join(rel);
        let listing = fs::read_dir(&host).map_err(|e| SandboxError::io("read", &host, e))?;
        let mut children = Vec::new();
        for child in listing {
            let child = child.map_err(|e| SandboxError::io("read", &host, e))?;
            let name = child
                .file_name()
                .into_string()
                .map_err(|_| SandboxError::NonUtf8Path(child.path()))?;
            let path = join(rel, &name);
            if !excluded(self.exclude, &path) {
                children.push((path, child));
            }
        }
        Ok(children)
    }

    fn dir(&mut self, rel: &str) -> Result<(), SandboxError> {
        for (path, child) in self.children(&self.root.upper, rel)? {
            let upper = child
                .metadata()
                .map_err(|e| SandboxError::io("stat", child.path(), e))?;
            let lower_host = self.root.lower.join(&path);
            let lower = lstat(&lower_host)?;
            if is_whiteout(&upper) {
                if let Some(lower) = lower {
                    self.removed(&path, &lower)?;
                }
                continue;
            }
            let new = self.record(&child.path(), &upper, &self.upper_ids)?;
            match &lower {
                None => {
                    self.out.insert(path.clone(), Change::Added(path.clone()));
                }
                Some(meta) => {
                    let old = self.record(&lower_host, meta, &self.lower_ids)?;
                    if !new.same_content(&old) {
                        self.out
                            .insert(path.clone(), Change::Modified(path.clone()));
                    }
                }
            }
            let lower_dir = lower.as_ref().is_some_and(Metadata::is_dir);
            if upper.is_dir() {
                if lower_dir && is_opaque(&child.path()) {
                    // Lower entries the upper tree does not have again are gone.
                    for below in self.lower_below(&path)? {
                        let again =
                            lstat(&self.root.upper.join(&below))?.is_some_and(|m| !is_whiteout(&m));
                        if !again {
                            self.out.insert(below.clone(), Change::Removed(below));
                        }
                    }
                }
                self.dir(&path)?;
            } else if lower_dir {
                for below in self.lower_below(&path)? {
                    self.out.insert(below.clone(), Change::Removed(below));
                }
            }
        }
        Ok(())
    }

    fn removed(&mut self, path: &str, lower: &Metadata) -> Result<(), SandboxError> {
        self.out
            .insert(path.to_owned(), Change::Removed(path.to_owned()));
        if lower.is_dir() {
            for below in self.lower_below(path)? {
                self.out.insert(below.clone(), Change::Removed(below));
            }
        }
        Ok(())
    }

    /// Every path below the lower directory `rel`, exclusions left out.
    fn lower_below(&self, rel: &str) -> Result<Vec<String>, SandboxError> {
        let mut found = Vec::new();
        let mut pending = vec![rel.to_owned()];
        while let Some(dir) = pending.pop() {
            for (path, child) in self.children(&self.root.lower, &dir)? {
                let is_dir = child
                    .file_type()
                    .map_err(|e| SandboxError::io("stat", child.path(), e))?
                    .is_dir();
                if is_dir {
                    pending.push(path.clone());
                }
                found.push(path);
            }
        }
        Ok(found)
    }

    fn record(&self, host: &Path, meta: &Metadata, ids: &Ids) -> Result<FileRecord, SandboxError> {
        let mut record = record(host, meta, ids)?;
        if record.kind == FileKind::File {
            record.sha256 = Some(hash_file(host).map_err(|e| SandboxError::io("hash", host, e))?);
        }
        Ok(record)
    }
}

pub(super) fn ids_of(root: &Path) -> Result<Ids, SandboxError> {
    let meta = fs::symlink_metadata(root).map_err(|e| SandboxError::io("stat", root, e))?;
    Ok(Ids {
        uid_base: meta.uid(),
        gid_base: meta.gid(),
    })
}
