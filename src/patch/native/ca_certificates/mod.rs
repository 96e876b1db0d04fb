//! Trigger emulation for distroless images: what ca-certificates' `postinst configure` and
//! its `update-ca-certificates` trigger leave, reproduced natively where no script can
//! run. Distroless images have no shell and no dpkg, so the native engine installs files
//! and database only; without this, an upgrade of `ca-certificates` would leave
//! `/etc/ssl/certs` trusting the roots the new version removed and missing the ones it
//! added. The result is byte-for-byte what the real scripts make ([`conf`], [`update`]),
//! written into the layer with the layer's epoch as mtime.
//!
//! Not reproduced, and said: the hooks in `/etc/ca-certificates/update.d` (the trigger
//! runs them; `ca-certificates-java`'s needs a JVM to rebuild `/etc/ssl/certs/java`).

pub mod conf;
pub mod subject_hash;
pub mod tree;
pub mod update;

use std::collections::BTreeMap;

use crate::image::EntryKind as NodeKind;
use crate::patch::dpkg::{DpkgChanges, ImageFiles, NewPackage};
use crate::patch::layer::{EntryKind, FileData, LayerEntry};
use crate::pkgs::dpkg::version::DebVersion;

use super::NativeError;
use conf::{CERTS_DIR, CONF, LOCAL_CERTS_DIR};
use tree::{normalize, CaTree, Node};
use update::{ETC_CERTS_DIR, HOOKS_DIR};

const PACKAGE: &str = "ca-certificates";
const CONF_OLD: &str = "etc/ca-certificates.conf.dpkg-old";
/// The paths the scripts read or write.
const ROOTS: &[&str] = &[
    ETC_CERTS_DIR,
    CERTS_DIR,
    LOCAL_CERTS_DIR,
    HOOKS_DIR,
    CONF,
    CONF_OLD,
];

/// The scripts' whole effect on `tree`, as the upgrade from `old_version` runs them:
/// `postinst configure`, then the trigger it activates. `usr_local_mode` is /usr/local's
/// mode when /usr/local/share is a directory. Returns the hooks the trigger would have run.
///
/// # Errors
/// What the emulation cannot reproduce exactly, with the reason.
pub fn configure(
    tree: &mut CaTree,
    old_version: &str,
    certs_list: &[String],
    usr_local_mode: Option<u32>,
) -> Result<Vec<String>, String> {
    // The postinst makes the local directory, or resets it, with /usr/local's mode (and
    // group: the engine writes root-owned entries, as /usr/local is on Debian).
    if let Some(mode) = usr_local_mode {
        match tree.get(LOCAL_CERTS_DIR) {
            None => tree.insert(LOCAL_CERTS_DIR, Node::Dir { mode }),
            Some(Node::Dir { mode: current }) if *current != mode => {
                tree.insert(LOCAL_CERTS_DIR, Node::Dir { mode });
            }
            _ => {}
        }
    }
    let selection = conf::config(tree, certs_list);
    if let Some(change) = conf::postinst(tree, &selection)? {
        if let Some(old) = change.old {
            let mode = match tree.get(CONF) {
                Some(Node::File { mode, .. }) => *mode,
                _ => 0o644,
            };
            tree.insert(CONF_OLD, Node::File { data: old, mode });
        }
        tree.insert(
            CONF,
            Node::File {
                data: change.new,
                mode: 0o644,
            },
        );
    }
    // `dpkg --compare-versions "$2" lt-nl 20111025`: the bogus-link fix of wheezy.
    let fresh = match (
        DebVersion::parse(old_version),
        DebVersion::parse("20111025"),
    ) {
        (Ok(old), Ok(fix)) => old < fix,
        _ => false,
    };
    update::update_ca_certificates(tree, fresh, false)?;
    let trigger = update::update_ca_certificates(tree, false, true)?;
    Ok(trigger.hooks)
}

/// For a distroless image whose `ca-certificates` the upgrade changes: its scripts'
/// effect, written into `changes.layer`; `Ok(None)` when there is nothing to reproduce.
/// The `Some` note says what was reproduced and what was not.
///
/// # Errors
/// [`NativeError::ScriptsCannotRun`] with the reason when the effect cannot be
/// reproduced exactly; an I/O or image error reading the package's files.
pub fn reproduce_for_distroless(
    image: &dyn ImageFiles,
    packages: &[NewPackage<'_>],
    changes: &mut DpkgChanges,
) -> Result<Option<String>, NativeError> {
    let Some(outcome) = changes.outcomes.iter().find(|o| o.name == PACKAGE) else {
        return Ok(None);
    };
    let refuse = |reason: String| NativeError::ScriptsCannotRun {
        reasons: vec![format!(
            "{PACKAGE} postinst configure (distroless image, reproduced natively): {reason}"
        )],
    };
    let certs_list = packages
        .iter()
        .find(|p| p.name == PACKAGE)
        .and_then(|p| p.deb.control_members().get("config"))
        .and_then(|m| conf::certs_list(&String::from_utf8_lossy(&m.data)))
        .ok_or_else(|| refuse("the package's config script has no CERTS_LIST".to_owned()))?;
    if let Some(node) = image.tree().get(ETC_CERTS_DIR) {
        if node.kind != NodeKind::Dir {
            return Err(refuse("/etc/ssl/certs is not a directory".to_owned()));
        }
    }
    let old_version = outcome.old_version.clone();
    let before = read_tree(image, changes)?;
    if !before.is_dir(ETC_CERTS_DIR) {
        // update-ca-certificates starts with `cd /etc/ssl/certs`: dpkg's run would fail.
        return Err(refuse(
            "the image has no /etc/ssl/certs directory".to_owned(),
        ));
    }
    let is_dir = |path: &str| match image.tree().resolve(path, 40) {
        Ok(Some((_, node))) if node.is_dir() => Some(node.mode & 0o7777),
        _ => None,
    };
    let usr_local_mode = is_dir("usr/local/share").and(is_dir("usr/local"));
    let mut after = before.clone();
    let hooks = configure(&mut after, &old_version, &certs_list, usr_local_mode).map_err(refuse)?;
    let (written, removed) = write_changes(image, changes, &before, &after);
    let certificates = after.read(update::BUNDLE).map_or(0, |b| {
        String::from_utf8_lossy(b)
            .matches("BEGIN CERTIFICATE")
            .count()
    });
    let mut note = format!(
        "{PACKAGE} postinst configure and its update-ca-certificates trigger: not run \
         (distroless image); reproduced natively: {written} path(s) of /etc/ssl/certs and \
         /etc/ca-certificates.conf written, {removed} removed, {certificates} certificates \
         in the bundle"
    );
    if !hooks.is_empty() {
        note.push_str(&format!(
            "; the hooks in /{HOOKS_DIR} were not run and their effect is not reproduced: {}",
            hooks.join(", ")
        ));
    }
    Ok(Some(note))
}

/// Whether `path` is one of [`ROOTS`] or below one.
fn in_roots(path: &str) -> bool {
    ROOTS.iter().any(|r| {
        path == *r
            || path
                .strip_prefix(r)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The model of the patched tree before the scripts: the image's paths below [`ROOTS`],
/// the layer's over them, and the files outside that their links name.
fn read_tree(image: &dyn ImageFiles, changes: &DpkgChanges) -> Result<CaTree, NativeError> {
    let mut tree = CaTree::default();
    let mut files = Vec::new();
    for (raw, node) in image.tree().iter() {
        let Ok(path) = std::str::from_utf8(raw) else {
            continue;
        };
        if !in_roots(path) {
            continue;
        }
        let mode = node.mode & 0o7777;
        match node.kind {
            NodeKind::Dir => tree.insert(path, Node::Dir { mode }),
            NodeKind::Symlink => {
                let target =
                    String::from_utf8_lossy(node.link_target.as_deref().unwrap_or_default());
                tree.insert(path, Node::Symlink(target.into_owned()));
            }
            NodeKind::File | NodeKind::Hardlink => files.push((format!("/{path}"), mode)),
            NodeKind::Other => tree.insert(path, Node::Other),
        }
    }
    let wanted: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let mut contents = image.read(&wanted)?;
    for (path, mode) in &files {
        let data = contents.remove(path).unwrap_or_default();
        tree.insert(path, Node::File { data, mode: *mode });
    }
    for entry in changes.layer.iter().filter(|e| in_roots(&e.path)) {
        let mode = entry.mode & 0o7777;
        match &entry.kind {
            EntryKind::Dir => tree.insert(&entry.path, Node::Dir { mode }),
            EntryKind::Symlink(target) => tree.insert(&entry.path, Node::Symlink(target.clone())),
            EntryKind::File(data) => {
                let data = file_data(data)
                    .map_err(|e| super::io_error(std::path::Path::new(&entry.path), e))?;
                tree.insert(&entry.path, Node::File { data, mode });
            }
            EntryKind::Hardlink(target) => {
                let data = match changes.layer.get(target).map(|e| &e.kind) {
                    Some(EntryKind::File(data)) => file_data(data)
                        .map_err(|e| super::io_error(std::path::Path::new(target), e))?,
                    _ => image
                        .read(&[&format!("/{target}")])?
                        .into_values()
                        .next()
                        .unwrap_or_default(),
                };
                tree.insert(&entry.path, Node::File { data, mode });
            }
            EntryKind::Whiteout => tree.remove(&entry.path),
            EntryKind::OpaqueDir => {
                tree.remove(&entry.path);
                tree.insert(&entry.path, Node::Dir { mode });
            }
        }
    }
    // Links that lead out of the model (a local certificate kept elsewhere): their final
    // file, read from the image, under the path the link names.
    let outside: Vec<String> = tree
        .below(ETC_CERTS_DIR)
        .chain(tree.below(LOCAL_CERTS_DIR))
        .filter_map(|(path, node)| match node {
            Node::Symlink(target) if !tree.exists(path) => {
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                let full = if target.starts_with('/') {
                    normalize(target)
                } else {
                    normalize(&format!("{dir}/{target}"))
                };
                (!in_roots(&full)).then_some(full)
            }
            _ => None,
        })
        .collect();
    let wanted: Vec<String> = outside.iter().map(|p| format!("/{p}")).collect();
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    for (path, data) in image.read(&wanted)? {
        tree.insert(&path, Node::File { data, mode: 0o644 });
    }
    Ok(tree)
}

fn file_data(data: &FileData) -> std::io::Result<Vec<u8>> {
    match data {
        FileData::Bytes(bytes) => Ok(bytes.clone()),
        FileData::Slice { file, offset, len } => {
            use std::os::unix::fs::FileExt;
            let mut out = vec![0; usize::try_from(*len).unwrap_or(usize::MAX)];
            file.read_exact_at(&mut out, *offset)?;
            Ok(out)
        }
        FileData::Path(path) => std::fs::read(path),
    }
}

/// Writes what the scripts changed below [`ROOTS`] into the layer: new and changed paths
/// as root-owned entries at the layer's epoch, removed ones as whiteouts (or dropped from
/// the layer when only the layer had them). Returns how many were written and removed.
fn write_changes(
    image: &dyn ImageFiles,
    changes: &mut DpkgChanges,
    before: &CaTree,
    after: &CaTree,
) -> (usize, usize) {
    let listed = |tree: &CaTree| -> BTreeMap<String, Node> {
        ROOTS
            .iter()
            .flat_map(|r| {
                let own = tree.get(r).map(|n| (r.to_string(), n.clone()));
                own.into_iter()
                    .chain(tree.below(r).map(|(p, n)| (p.to_owned(), n.clone())))
            })
            .collect()
    };
    let (old, new) = (listed(before), listed(after));
    let mut written = 0;
    for (path, node) in &new {
        if old.get(path) == Some(node) {
            continue;
        }
        let (mode, kind) = match node {
            Node::File { data, mode } => (*mode, EntryKind::File(FileData::Bytes(data.clone()))),
            Node::Symlink(target) => (0o777, EntryKind::Symlink(target.clone())),
            Node::Dir { mode } => (*mode, EntryKind::Dir),
            Node::Other => continue,
        };
        changes.layer.insert(LayerEntry {
            path: path.clone(),
            mode,
            uid: 0,
            gid: 0,
            uname: "root".to_owned(),
            gname: "root".to_owned(),
            mtime: changes.epoch,
            kind,
        });
        written += 1;
    }
    let mut removed = 0;
    for path in old.keys().filter(|p| !new.contains_key(*p)) {
        if image.tree().get(path).is_some() {
            changes.layer.whiteout(path);
        } else {
            changes.layer.remove(path);
        }
        removed += 1;
    }
    (written, removed)
}
