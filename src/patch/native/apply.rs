//! Writing the layer's entries into the tree the post-unpack scripts see: a plain tree, or
//! an overlay's upper directory. Hard links are made after the files they name.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::patch::layer::{EntryKind, FileData, LayerBuilder, LayerEntry};
use crate::patch::sandbox::{self, OverlayRoot, ID_RANGE, OVERFLOW_ID, ROOT_ID_BASE};

use super::scripts::Target;
use super::{io_error, NativeError};

/// Checks that no directory above `path` inside `root` is a symbolic link, so writing
/// there stays inside the root.
fn safe_target(root: &Path, path: &str) -> Result<PathBuf, NativeError> {
    let mut at = root.to_path_buf();
    let components: Vec<&str> = path.split('/').collect();
    for (i, part) in components.iter().enumerate() {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(NativeError::Io {
                path: root.join(path),
                reason: "not a normal path inside the root".to_owned(),
            });
        }
        at.push(part);
        if i + 1 < components.len() {
            if let Ok(meta) = fs::symlink_metadata(&at) {
                if meta.file_type().is_symlink() {
                    return Err(NativeError::Io {
                        path: at,
                        reason: "a directory on the way is a symbolic link".to_owned(),
                    });
                }
            }
        }
    }
    Ok(at)
}

/// `rel` under `root` as a new empty directory, made one component at a time: no
/// component may be a symbolic link (an image's own `var/lib/dpkg -> /` would otherwise
/// take the writes onto the host), and whatever the image had at `rel` itself (the name
/// is patchpull's) is removed first.
pub(super) fn fresh_dir(root: &Path, rel: &str) -> Result<PathBuf, NativeError> {
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&at) {
            Ok(meta) if last => {
                let removed = if meta.is_dir() {
                    fs::remove_dir_all(&at)
                } else {
                    fs::remove_file(&at)
                };
                removed.map_err(|e| io_error(&at, e))?;
            }
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => {
                return Err(NativeError::Io {
                    path: at,
                    reason: "a directory on the way is not a directory (a symbolic link?)"
                        .to_owned(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&at, e)),
        }
        fs::create_dir(&at).map_err(|e| io_error(&at, e))?;
    }
    Ok(at)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The layer's entries in the order an extractor needs them: everything else by path,
/// then hard links, whose targets may sort after them (`usr/bin/perl` links to a file the
/// layer writes later); linking first would leave the link on the old file.
fn in_extract_order(layer: &LayerBuilder) -> impl Iterator<Item = &LayerEntry> {
    let is_link = |e: &&LayerEntry| matches!(e.kind, EntryKind::Hardlink(_));
    layer
        .iter()
        .filter(move |e| !is_link(e))
        .chain(layer.iter().filter(is_link))
}

/// Which of the layer's entries to write.
pub(super) struct Selection<'a> {
    keep: Option<&'a dyn Fn(&LayerEntry) -> bool>,
}

impl<'a> Selection<'a> {
    pub(super) fn all() -> Selection<'a> {
        Selection { keep: None }
    }

    pub(super) fn new(keep: &'a dyn Fn(&LayerEntry) -> bool) -> Selection<'a> {
        Selection { keep: Some(keep) }
    }

    fn keeps(&self, entry: &LayerEntry) -> bool {
        self.keep.is_none_or(|keep| keep(entry))
    }
}

/// Writes the selected entries of the layer into the scripts' tree, as an extractor
/// would, each with its mtime (dpkg keeps the package's): a plain tree, or an overlay's
/// upper directory in overlayfs's format.
pub(super) fn apply(
    layer: &LayerBuilder,
    target: &Target<'_>,
    selection: Selection<'_>,
) -> Result<(), NativeError> {
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    let owners = owners_kept()?;
    for entry in in_extract_order(layer).filter(|e| selection.keeps(e)) {
        let written = match target {
            Target::Plain(root) => apply_plain(entry, root)?,
            Target::Overlay(overlay) => apply_overlay(entry, overlay)?,
        };
        if let Some(at) = written {
            if owners && !matches!(entry.kind, EntryKind::Hardlink(_)) {
                own(&at, entry)?;
            }
            if matches!(entry.kind, EntryKind::Dir) {
                dirs.push((at, entry.mtime));
            } else if !matches!(entry.kind, EntryKind::Hardlink(_)) {
                set_mtime(&at, entry.mtime)?;
            }
        }
    }
    // Directories last, deepest first: writing into one changes its mtime.
    dirs.sort();
    for (dir, mtime) in dirs.iter().rev() {
        set_mtime(dir, *mtime)?;
    }
    Ok(())
}

/// Whether the trees the scripts see carry the image's owners: only a root caller can
/// write them (shifted by [`ROOT_ID_BASE`], as `materialize` does); otherwise every path
/// belongs to the sandbox's root.
pub(super) fn owners_kept() -> Result<bool, NativeError> {
    Ok(sandbox::effective_uid()? == 0)
}

/// An image id as the sandbox shows it.
pub(super) fn in_sandbox(id: u64) -> u32 {
    u32::try_from(id)
        .ok()
        .filter(|id| *id < ID_RANGE)
        .unwrap_or(OVERFLOW_ID)
}

/// Gives a written entry its owners (as dpkg extracts it), so that the scripts see them
/// and a script's `chown` of the path shows in the tree afterwards. chown clears set-id
/// bits, so the mode is set again.
fn own(at: &Path, entry: &LayerEntry) -> Result<(), NativeError> {
    let host = |id: u64| ROOT_ID_BASE + in_sandbox(id);
    std::os::unix::fs::lchown(at, Some(host(entry.uid)), Some(host(entry.gid)))
        .map_err(|e| io_error(at, e))?;
    if !matches!(entry.kind, EntryKind::Symlink(_)) && entry.mode & 0o6000 != 0 {
        fs::set_permissions(at, fs::Permissions::from_mode(entry.mode & 0o7777))
            .map_err(|e| io_error(at, e))?;
    }
    Ok(())
}

/// Sets the mtime (and atime) of `path` itself, a symbolic link included.
fn set_mtime(path: &Path, mtime: u64) -> Result<(), NativeError> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let when = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: when,
        last_modification: when,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_error(path, e.into()))
}

/// Writes one entry into a plain tree; returns the path written, if any.
fn apply_plain(entry: &LayerEntry, root: &Path) -> Result<Option<PathBuf>, NativeError> {
    let target = safe_target(root, &entry.path)?;
    let io = |e: io::Error| io_error(&target, e);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    match &entry.kind {
        EntryKind::Dir => {
            if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                remove_any(&target).map_err(io)?;
                fs::create_dir(&target).map_err(io)?;
            }
            fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode & 0o7777))
                .map_err(io)?;
        }
        EntryKind::File(data) => {
            remove_any(&target).map_err(io)?;
            write_file(&target, data, entry.mode).map_err(io)?;
        }
        EntryKind::Symlink(link) => {
            remove_any(&target).map_err(io)?;
            symlink(link, &target).map_err(io)?;
        }
        EntryKind::Hardlink(link) => {
            remove_any(&target).map_err(io)?;
            let source = safe_target(root, link)?;
            fs::hard_link(&source, &target).map_err(io)?;
        }
        EntryKind::Whiteout => {
            remove_any(&target).map_err(io)?;
            return Ok(None);
        }
        EntryKind::OpaqueDir => {
            if let Ok(children) = fs::read_dir(&target) {
                for child in children.flatten() {
                    remove_any(&child.path()).map_err(io)?;
                }
            }
            return Ok(None);
        }
    }
    Ok(Some(target))
}

/// Writes one entry into the overlay's upper directory, in overlayfs's format, so that
/// the merged view is what an extractor would have left on the image; returns the path
/// written, if any.
fn apply_overlay(
    entry: &LayerEntry,
    overlay: &OverlayRoot,
) -> Result<Option<PathBuf>, NativeError> {
    let path = entry.path.as_str();
    let host = overlay.upper().join(path);
    let io = |e: io::Error| io_error(&host, e);
    let at = match &entry.kind {
        EntryKind::Dir => {
            let at = match overlay.merged_metadata(path)? {
                Some(meta) if !meta.is_dir() => {
                    let at = overlay.prepare_entry(path)?;
                    fs::create_dir(&at).map_err(io)?;
                    at
                }
                _ => overlay.ensure_dir(path)?,
            };
            fs::set_permissions(&at, fs::Permissions::from_mode(entry.mode & 0o7777))
                .map_err(io)?;
            at
        }
        EntryKind::File(data) => {
            let at = overlay.prepare_entry(path)?;
            write_file(&at, data, entry.mode).map_err(io)?;
            at
        }
        EntryKind::Symlink(link) => {
            let at = overlay.prepare_entry(path)?;
            symlink(link, &at).map_err(io)?;
            at
        }
        EntryKind::Hardlink(link) => {
            let source = overlay.copy_up(link)?;
            let at = overlay.prepare_entry(path)?;
            fs::hard_link(&source, &at).map_err(io)?;
            at
        }
        EntryKind::Whiteout => {
            overlay.remove(path)?;
            return Ok(None);
        }
        EntryKind::OpaqueDir => {
            overlay.clear_dir(path)?;
            return Ok(None);
        }
    };
    Ok(Some(at))
}

/// Creates `target` with the entry's contents and permission bits.
fn write_file(target: &Path, data: &FileData, mode: u32) -> io::Result<()> {
    let mut out = fs::File::create(target)?;
    match data {
        FileData::Bytes(bytes) => io::Write::write_all(&mut out, bytes)?,
        FileData::Slice { file, offset, len } => {
            let mut reader = SliceReader {
                file: file.clone(),
                offset: *offset,
                left: *len,
            };
            io::copy(&mut reader, &mut out)?;
        }
        FileData::Path(path) => {
            let mut input = fs::File::open(path)?;
            io::copy(&mut input, &mut out)?;
        }
    }
    fs::set_permissions(target, fs::Permissions::from_mode(mode & 0o7777))
}

struct SliceReader {
    file: std::sync::Arc<fs::File>,
    offset: u64,
    left: u64,
}

impl io::Read for SliceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn entry(path: &str, kind: EntryKind) -> LayerEntry {
        LayerEntry::for_test(path, 0o755, kind)
    }

    /// `usr/bin/perl` is a hard link to `usr/bin/perl5`, which sorts after it; the image
    /// has the old `perl5` (and its old link).
    fn layer_and_old_tree() -> (LayerBuilder, tempfile::TempDir) {
        let mut layer = LayerBuilder::default();
        layer.insert(entry(
            "usr/bin/perl",
            EntryKind::Hardlink("usr/bin/perl5".to_owned()),
        ));
        layer.insert(entry(
            "usr/bin/perl5",
            EntryKind::File(FileData::Bytes(b"new perl\n".to_vec())),
        ));
        let old = tempfile::tempdir().unwrap();
        fs::create_dir_all(old.path().join("usr/bin")).unwrap();
        fs::write(old.path().join("usr/bin/perl5"), "old perl\n").unwrap();
        fs::hard_link(
            old.path().join("usr/bin/perl5"),
            old.path().join("usr/bin/perl"),
        )
        .unwrap();
        (layer, old)
    }

    #[test]
    fn hard_links_are_made_after_the_files_they_name() {
        let (layer, root) = layer_and_old_tree();
        let order: Vec<&str> = in_extract_order(&layer).map(|e| e.path.as_str()).collect();
        assert_eq!(order, ["usr/bin/perl5", "usr/bin/perl"]);
        apply(&layer, &Target::Plain(root.path()), Selection::all()).unwrap();
        let link = root.path().join("usr/bin/perl");
        assert_eq!(fs::read(&link).unwrap(), b"new perl\n");
        let target = fs::metadata(root.path().join("usr/bin/perl5")).unwrap();
        assert_eq!(fs::metadata(&link).unwrap().ino(), target.ino());
    }

    #[test]
    fn hard_links_in_an_overlay_name_the_new_file() {
        let (layer, lower) = layer_and_old_tree();
        let scratch = tempfile::tempdir().unwrap();
        let overlay = OverlayRoot::create(lower.path(), &scratch.path().join("upper")).unwrap();
        apply(&layer, &Target::Overlay(&overlay), Selection::all()).unwrap();
        let link = overlay.upper().join("usr/bin/perl");
        assert_eq!(fs::read(&link).unwrap(), b"new perl\n");
        let target = fs::metadata(overlay.upper().join("usr/bin/perl5")).unwrap();
        assert_eq!(fs::metadata(&link).unwrap().ino(), target.ino());
        // The shared tree below is untouched.
        assert_eq!(
            fs::read(lower.path().join("usr/bin/perl")).unwrap(),
            b"old perl\n"
        );
    }

    #[test]
    fn patchpulls_own_directory_never_follows_the_images_links() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // The image's `var/lib/dpkg` is a link out of the root: refused, nothing written.
        fs::create_dir_all(root.path().join("var/lib")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("var/lib/dpkg")).unwrap();
        let error = fresh_dir(root.path(), "var/lib/dpkg/tmp.x").unwrap_err();
        assert!(error.to_string().contains("not a directory"), "{error}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);

        // The image has a link at the name itself: replaced by an empty directory.
        fs::remove_file(root.path().join("var/lib/dpkg")).unwrap();
        fs::create_dir(root.path().join("var/lib/dpkg")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("var/lib/dpkg/tmp.x")).unwrap();
        let dir = fresh_dir(root.path(), "var/lib/dpkg/tmp.x").unwrap();
        assert!(fs::symlink_metadata(&dir).unwrap().is_dir());
        fs::write(dir.join("driver"), "x").unwrap();
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);

        // Left over from a run before: emptied.
        let again = fresh_dir(root.path(), "var/lib/dpkg/tmp.x").unwrap();
        assert_eq!(fs::read_dir(again).unwrap().count(), 0);
    }
}
