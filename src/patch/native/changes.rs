//! What the maintainer scripts changed, taken into the layer: every change the layer
//! does not already hold exactly (contents, mode and owners from disk, the layer's epoch
//! as mtime, so two runs give one digest).

use std::fs;
use std::path::Path;

use crate::patch::layer::{EntryKind, FileData, LayerBuilder, LayerEntry};
use crate::patch::sandbox::{self, Change};

use super::scripts::ScriptsReport;
use super::{io_error, NativeError};

/// Adds to `layer` what the scripts changed and it does not hold yet.
pub(super) fn fold_changes(
    layer: &mut LayerBuilder,
    target: &Path,
    changes: Vec<Change>,
    epoch: u64,
    report: &mut ScriptsReport,
) -> Result<(), NativeError> {
    for change in changes {
        match change {
            Change::Added(path) | Change::Modified(path) => {
                let record = sandbox::record_at(target, &path)?;
                if holds_exactly(layer, target, &path, &record) {
                    continue;
                }
                let entry = entry_from_disk(target, &path, epoch, &record)?;
                layer.insert(entry);
                report.changed.push(path);
            }
            Change::Removed(path) => {
                // Already a whiteout, or below one (a directory the package emptied and
                // removed whole): the layer says it is gone.
                if whited_out(layer, &path) {
                    continue;
                }
                layer.remove(&path);
                layer.whiteout(&path);
                report.changed.push(path);
            }
        }
    }
    Ok(())
}

/// Whether the layer removes `path`: a whiteout at it or at one of its parents.
fn whited_out(layer: &LayerBuilder, path: &str) -> bool {
    let is_whiteout = |p: &str| {
        layer
            .get(p)
            .is_some_and(|e| matches!(e.kind, EntryKind::Whiteout))
    };
    is_whiteout(path)
        || path
            .match_indices('/')
            .any(|(i, _)| is_whiteout(&path[..i]))
}

/// True when the layer's entry at `path` is what is on disk now (`record`): a script did
/// not touch it after it was applied, neither its contents nor its mode.
fn holds_exactly(
    layer: &LayerBuilder,
    root: &Path,
    path: &str,
    record: &sandbox::FileRecord,
) -> bool {
    let Some(entry) = layer.get(path) else {
        return false;
    };
    // Owners are not compared: `apply` writes the package's files as the sandbox's root
    // (their owners live in the layer entry only), so the tree cannot show a script's
    // `chown` of a packaged path apart from that. Known gap (issue 14).
    let same_mode = record.mode & 0o7777 == entry.mode & 0o7777;
    let is_file = matches!(record.kind, sandbox::FileKind::File);
    match &entry.kind {
        EntryKind::Dir => matches!(record.kind, sandbox::FileKind::Dir) && same_mode,
        EntryKind::Symlink(link) => record
            .link_target
            .as_ref()
            .is_some_and(|l| l.as_os_str().as_encoded_bytes() == link.as_bytes()),
        EntryKind::File(FileData::Bytes(bytes)) => {
            is_file && same_mode && fs::read(root.join(path)).is_ok_and(|data| data == *bytes)
        }
        // Package files applied from the .deb carry the package's mtime: a script that
        // rewrote one (even to the same size) gave it a new one.
        EntryKind::File(FileData::Slice { len, .. }) => {
            is_file
                && same_mode
                && record.size == *len
                && record.mtime_ns == i128::from(entry.mtime) * 1_000_000_000
        }
        EntryKind::File(FileData::Path(source)) => {
            is_file
                && same_mode
                && file_sha256(source)
                    .is_some_and(|want| file_sha256(&root.join(path)) == Some(want))
        }
        // A hard link shares its target's inode, so `record` is the target's too.
        EntryKind::Hardlink(target) => {
            is_file
                && layer
                    .get(target)
                    .is_some_and(|t| !matches!(t.kind, EntryKind::Hardlink(_)))
                && holds_exactly(layer, root, target, record)
        }
        EntryKind::Whiteout | EntryKind::OpaqueDir => false,
    }
}

/// The SHA-256 of a file's contents, `None` when it cannot be read.
fn file_sha256(path: &Path) -> Option<[u8; 32]> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = fs::File::open(path).ok()?;
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hasher.finalize().into())
}

/// A path the scripts changed, as a layer entry: contents and mode from disk, owners as
/// the image sees them, the layer's epoch as mtime.
fn entry_from_disk(
    root: &Path,
    path: &str,
    epoch: u64,
    record: &sandbox::FileRecord,
) -> Result<LayerEntry, NativeError> {
    use std::os::unix::fs::MetadataExt;
    let on_disk = root.join(path);
    let meta = fs::symlink_metadata(&on_disk).map_err(|e| io_error(&on_disk, e))?;
    let kind = if meta.file_type().is_symlink() {
        let link = fs::read_link(&on_disk).map_err(|e| io_error(&on_disk, e))?;
        EntryKind::Symlink(link.to_string_lossy().into_owned())
    } else if meta.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File(FileData::Path(on_disk.clone()))
    };
    let (uid, gid) = (u64::from(record.uid), u64::from(record.gid));
    Ok(LayerEntry {
        path: path.to_owned(),
        mode: meta.mode() & 0o7777,
        uid,
        gid,
        uname: if uid == 0 {
            "root".to_owned()
        } else {
            String::new()
        },
        gname: if gid == 0 {
            "root".to_owned()
        } else {
            String::new()
        },
        mtime: epoch,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use super::*;

    const EPOCH: u64 = 1_800_000_000;

    /// A tree holding `etc/conf` (bytes written by patchpull) and `usr/lib/libx.so` (a
    /// package file backed by a slice of an archive), as `apply` leaves them, and the
    /// layer holding both.
    fn applied() -> (tempfile::TempDir, LayerBuilder) {
        let root = tempfile::tempdir().unwrap();
        let mut layer = LayerBuilder::default();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/conf"), b"a=1\n").unwrap();
        fs::set_permissions(
            root.path().join("etc/conf"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        layer.insert(LayerEntry::for_test(
            "etc/conf",
            0o644,
            EntryKind::File(FileData::Bytes(b"a=1\n".to_vec())),
        ));
        let archive = root.path().join("archive");
        fs::write(&archive, b"....library!....").unwrap();
        let lib = root.path().join("usr/lib/libx.so");
        fs::create_dir_all(lib.parent().unwrap()).unwrap();
        fs::write(&lib, b"library!").unwrap();
        fs::set_permissions(&lib, fs::Permissions::from_mode(0o644)).unwrap();
        let entry = LayerEntry::for_test(
            "usr/lib/libx.so",
            0o644,
            EntryKind::File(FileData::Slice {
                file: Arc::new(fs::File::open(&archive).unwrap()),
                offset: 4,
                len: 8,
            }),
        );
        let mtime = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: entry.mtime as i64,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: entry.mtime as i64,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, &lib, &mtime, rustix::fs::AtFlags::empty()).unwrap();
        layer.insert(entry);
        (root, layer)
    }

    fn fold(root: &Path, layer: &mut LayerBuilder, paths: &[&str]) -> Vec<String> {
        let mut report = ScriptsReport {
            ran: Vec::new(),
            changed: Vec::new(),
        };
        let changes = paths
            .iter()
            .map(|p| Change::Modified((*p).into()))
            .collect();
        fold_changes(layer, root, changes, EPOCH, &mut report).unwrap();
        report.changed
    }

    #[test]
    fn what_the_layer_holds_exactly_is_not_taken_again() {
        let (root, mut layer) = applied();
        let changed = fold(root.path(), &mut layer, &["etc/conf", "usr/lib/libx.so"]);
        assert!(changed.is_empty(), "{changed:?}");
    }

    #[test]
    fn a_rewrite_to_the_same_size_is_taken() {
        let (root, mut layer) = applied();
        // `sed -i` keeping the length: a new file, so a new mtime.
        fs::write(root.path().join("usr/lib/libx.so"), b"LIBRARY!").unwrap();
        let changed = fold(root.path(), &mut layer, &["etc/conf", "usr/lib/libx.so"]);
        assert_eq!(changed, ["usr/lib/libx.so"]);
        let lib = layer.get("usr/lib/libx.so").unwrap();
        assert!(
            matches!(lib.kind, EntryKind::File(FileData::Path(_))),
            "{lib:?}"
        );
        assert_eq!(lib.mtime, EPOCH);
    }

    #[test]
    fn a_mode_change_is_taken() {
        let (root, mut layer) = applied();
        fs::set_permissions(
            root.path().join("etc/conf"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let changed = fold(root.path(), &mut layer, &["etc/conf", "usr/lib/libx.so"]);
        assert_eq!(changed, ["etc/conf"]);
        assert_eq!(layer.get("etc/conf").unwrap().mode, 0o600);
    }

    #[test]
    fn a_path_below_a_removed_directory_gets_no_whiteout_of_its_own() {
        let (root, mut layer) = applied();
        layer.whiteout("usr/share/man/de/man7");
        let mut report = ScriptsReport {
            ran: Vec::new(),
            changed: Vec::new(),
        };
        let changes = vec![
            Change::Removed("usr/share/man/de/man7".into()),
            Change::Removed("usr/share/man/de/man7/apt-patterns.7.gz".into()),
        ];
        fold_changes(&mut layer, root.path(), changes, EPOCH, &mut report).unwrap();
        assert!(report.changed.is_empty(), "{:?}", report.changed);
        assert!(layer
            .get("usr/share/man/de/man7/apt-patterns.7.gz")
            .is_none());
    }
}
