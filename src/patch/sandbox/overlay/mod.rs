//! Overlay roots: an image's unpacked tree as a read-only lower directory, and everything
//! that changes in it in an upper directory of its own; [`super::run`] mounts the two as
//! an overlayfs inside the sandbox (`userxattr`: unprivileged, Linux 5.11 and later).
//! Nothing is copied before scripts run, the lower tree (a cached unpack shared by jobs)
//! is never written, and what changed is read from the upper directory alone.
//!
//! Writes made from the host between two runs (the layer's entries) follow overlayfs's own
//! format, so that the next mount sees them as it would its own: a whiteout is a
//! character device 0/0, and a directory that hides the lower one's contents carries
//! `user.overlay.opaque=y`.

mod changes;
mod mount;

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{lchown, DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{effective_uid, Change, SandboxError};

pub use mount::overlay_available;
pub(crate) use mount::{mount_safe, OverlayWork};

const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// A lower tree and the upper directory that records changes to it.
#[derive(Debug, Clone)]
pub struct OverlayRoot {
    lower: PathBuf,
    upper: PathBuf,
}

/// Where a path of the merged view comes from.
enum Found {
    Absent,
    Upper(Metadata),
    Lower(Metadata),
}

impl OverlayRoot {
    /// Creates `upper` (which must not exist) with the owner and mode of `lower`'s top
    /// directory: the mounted root shows the upper directory's metadata.
    ///
    /// Errors: I/O errors; [`SandboxError::UnsafeRoot`] when a path cannot be passed to
    /// the overlay mount (`,`, `:` or `\` in it).
    pub fn create(lower: &Path, upper: &Path) -> Result<OverlayRoot, SandboxError> {
        let top = fs::symlink_metadata(lower).map_err(|e| SandboxError::io("stat", lower, e))?;
        if !top.is_dir() {
            return Err(SandboxError::UnsafeRoot {
                root: lower.to_path_buf(),
                reason: "the lower tree is not a directory".to_owned(),
            });
        }
        mount_safe(lower)?;
        mount_safe(upper)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(upper)
            .map_err(|e| SandboxError::io("mkdir", upper, e))?;
        take_metadata(upper, &top)?;
        Ok(OverlayRoot {
            lower: lower.to_path_buf(),
            upper: upper.to_path_buf(),
        })
    }

    /// An overlay root made earlier by [`OverlayRoot::create`].
    pub fn open(lower: &Path, upper: &Path) -> OverlayRoot {
        OverlayRoot {
            lower: lower.to_path_buf(),
            upper: upper.to_path_buf(),
        }
    }

    pub fn lower(&self) -> &Path {
        &self.lower
    }

    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// Whether the merged view has `rel` (a relative path without `..`), and its metadata.
    pub fn merged_metadata(&self, rel: &str) -> Result<Option<Metadata>, SandboxError> {
        Ok(match self.find(rel)? {
            Found::Absent => None,
            Found::Upper(meta) | Found::Lower(meta) => Some(meta),
        })
    }

    /// Looks `rel` up as the mounted overlay would, refusing a symbolic link on the way
    /// (writes must stay inside the root).
    fn find(&self, rel: &str) -> Result<Found, SandboxError> {
        let parts: Vec<&str> = components(rel)?;
        let mut upper = self.upper.clone();
        let mut lower = self.lower.clone();
        let mut lower_visible = true;
        let mut upper_present = true;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            upper.push(part);
            lower.push(part);
            let in_upper = if upper_present { lstat(&upper)? } else { None };
            let meta = match in_upper {
                Some(meta) if is_whiteout(&meta) => return Ok(Found::Absent),
                Some(meta) => {
                    if last {
                        return Ok(Found::Upper(meta));
                    }
                    if meta.is_dir() && lower_visible && is_opaque(&upper) {
                        lower_visible = false;
                    }
                    meta
                }
                None => {
                    upper_present = false;
                    if !lower_visible {
                        return Ok(Found::Absent);
                    }
                    match lstat(&lower)? {
                        None => return Ok(Found::Absent),
                        Some(meta) if last => return Ok(Found::Lower(meta)),
                        Some(meta) => meta,
                    }
                }
            };
            if meta.file_type().is_symlink() {
                return Err(SandboxError::UnsafeRoot {
                    root: self.upper.clone(),
                    reason: format!(
                        "/{}: a directory on the way is a symbolic link",
                        parts[..=i].join("/")
                    ),
                });
            }
            if !meta.is_dir() {
                return Ok(Found::Absent);
            }
        }
        Ok(Found::Absent)
    }

    /// Makes `rel` and every directory above it a directory of the upper tree, each with
    /// the owner and mode of the directory it stands for below. Returns its host path.
    pub fn ensure_dir(&self, rel: &str) -> Result<PathBuf, SandboxError> {
        let parts = components(rel)?;
        let mut at = self.upper.clone();
        for i in 0..parts.len() {
            at.push(parts[i]);
            let prefix = parts[..=i].join("/");
            match lstat(&at)? {
                Some(meta) if meta.is_dir() => continue,
                Some(meta) if is_whiteout(&meta) => {
                    // Deleted earlier: a new, empty directory that keeps the old contents hidden.
                    fs::remove_file(&at).map_err(|e| SandboxError::io("remove", &at, e))?;
                    make_dir(&at, None)?;
                    set_opaque(&at)?;
                }
                Some(_) => {
                    return Err(SandboxError::UnsafeRoot {
                        root: self.upper.clone(),
                        reason: format!("/{prefix} is not a directory"),
                    })
                }
                None => match self.find(&prefix)? {
                    Found::Lower(meta) if meta.is_dir() => make_dir(&at, Some(&meta))?,
                    Found::Absent => make_dir(&at, None)?,
                    _ => {
                        return Err(SandboxError::UnsafeRoot {
                            root: self.upper.clone(),
                            reason: format!("/{prefix} is not a directory"),
                        })
                    }
                },
            }
        }
        Ok(at)
    }

    /// The host path where an entry at `rel` goes: its parents made in the upper tree,
    /// whatever the upper tree had at `rel` removed.
    pub fn prepare_entry(&self, rel: &str) -> Result<PathBuf, SandboxError> {
        let (parent, _) = split_parent(rel);
        if !parent.is_empty() {
            self.ensure_dir(parent)?;
        }
        let at = self.upper.join(rel);
        remove_any(&at).map_err(|e| SandboxError::io("remove", &at, e))?;
        Ok(at)
    }

    /// Deletes `rel` from the merged view: the upper entry goes, and a whiteout hides the
    /// lower one.
    pub fn remove(&self, rel: &str) -> Result<(), SandboxError> {
        if matches!(self.find(rel)?, Found::Absent) {
            return Ok(());
        }
        let at = self.prepare_entry(rel)?;
        if matches!(self.find(rel)?, Found::Lower(_)) {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &at,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .map_err(|e| SandboxError::io("make a whiteout at", &at, e.into()))?;
        }
        Ok(())
    }

    /// Empties the directory `rel` of the merged view (it stays).
    pub fn clear_dir(&self, rel: &str) -> Result<(), SandboxError> {
        match self.find(rel)? {
            Found::Upper(meta) | Found::Lower(meta) if meta.is_dir() => {}
            _ => return Ok(()),
        }
        let at = self.ensure_dir(rel)?;
        let listing = fs::read_dir(&at).map_err(|e| SandboxError::io("read", &at, e))?;
        for child in listing {
            let child = child.map_err(|e| SandboxError::io("read", &at, e))?;
            remove_any(&child.path()).map_err(|e| SandboxError::io("remove", child.path(), e))?;
        }
        set_opaque(&at)
    }

    /// Makes sure the regular file `rel` is in the upper tree (a hard link's target must
    /// be), copying it up from the lower one with its owner and mode.
    pub fn copy_up(&self, rel: &str) -> Result<PathBuf, SandboxError> {
        match self.find(rel)? {
            Found::Upper(_) => Ok(self.upper.join(rel)),
            Found::Lower(meta) if meta.is_file() => {
                let (parent, _) = split_parent(rel);
                if !parent.is_empty() {
                    self.ensure_dir(parent)?;
                }
                let at = self.upper.join(rel);
                let from = self.lower.join(rel);
                fs::copy(&from, &at).map_err(|e| SandboxError::io("copy up", &from, e))?;
                take_metadata(&at, &meta)?;
                Ok(at)
            }
            _ => Err(SandboxError::UnsafeRoot {
                root: self.upper.clone(),
                reason: format!("/{rel}: not a regular file to link to"),
            }),
        }
    }

    /// What differs between the lower tree and the merged view, exactly as
    /// [`super::diff`] of two snapshots would say it (same changes, same order), with
    /// `exclude` left out as [`super::snapshot`] leaves it out.
    pub fn changes(&self, exclude: &[&str]) -> Result<Vec<Change>, SandboxError> {
        let exclude: Vec<&str> = exclude.iter().map(|e| e.trim_matches('/')).collect();
        changes::Walk {
            root: self,
            exclude: &exclude,
            upper_ids: changes::ids_of(&self.upper)?,
            lower_ids: changes::ids_of(&self.lower)?,
            out: std::collections::BTreeMap::new(),
        }
        .run()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn split_parent(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

fn components(rel: &str) -> Result<Vec<&str>, SandboxError> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(SandboxError::InvalidCommand(format!(
            "{rel:?} is not a normal relative path"
        )));
    }
    Ok(parts)
}

/// `symlink_metadata`, with "not there" (also below a non-directory) as `None`.
fn lstat(path: &Path) -> Result<Option<Metadata>, SandboxError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(SandboxError::io("stat", path, e)),
    }
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(dir, OPAQUE_XATTR, &mut value), Ok(1) if value[0] == b'y')
}

fn set_opaque(dir: &Path) -> Result<(), SandboxError> {
    rustix::fs::lsetxattr(dir, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
        .map_err(|e| SandboxError::io("mark opaque", dir, e.into()))
}

fn make_dir(at: &Path, like: Option<&Metadata>) -> Result<(), SandboxError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(at)
        .map_err(|e| SandboxError::io("mkdir", at, e))?;
    match like {
        Some(meta) => take_metadata(at, meta),
        None => Ok(()),
    }
}

/// Gives `at` the owner and permission bits of `like` (owners only when the caller can
/// set them: a root caller's trees carry shifted ids, anyone else's are the caller's).
fn take_metadata(at: &Path, like: &Metadata) -> Result<(), SandboxError> {
    if effective_uid()? == 0 {
        lchown(at, Some(like.uid()), Some(like.gid()))
            .map_err(|e| SandboxError::io("chown", at, e))?;
    }
    fs::set_permissions(at, fs::Permissions::from_mode(like.mode() & 0o7777))
        .map_err(|e| SandboxError::io("chmod", at, e))
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
