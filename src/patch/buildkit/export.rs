//! The patch layer out of BuildKit's result. dockerd's `moby` exporter leaves the solved
//! image in its image store; `docker save` of it is a tar holding `manifest.json`, the
//! config and each layer as an uncompressed `layer.tar`. The original's layers must come
//! back unchanged (their diff_ids, in order); the one layer after them is the patch. Its
//! bytes are checked against the diff_id the config names, then rewritten entry by entry
//! into patchpull's deterministic layer format, leaving out the package managers' logs and
//! caches, so both engines' layers look alike.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::distribution::Digest;
use crate::patch::layer::{
    BuiltLayer, EntryKind, FileData, LayerBuilder, LayerEntry, OPAQUE_MARKER, WHITEOUT_PREFIX,
};

/// Paths the package managers write that are not part of a patch: logs, backups of the
/// database, caches (most are on cache mounts already).
const LEFT_OUT: &[&str] = &[
    "var/log/apt",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/cache/ldconfig/aux-cache",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
    "var/lib/dpkg/lock",
    "var/lib/dpkg/lock-frontend",
    "var/lib/dpkg/triggers/Lock",
    "var/cache/apk",
    "var/cache/dnf",
    "var/cache/yum",
    "var/cache/tdnf",
    "var/log/dnf.log",
    "var/log/dnf.librepo.log",
    "var/log/dnf.rpm.log",
    "var/log/hawkey.log",
    "var/log/yum.log",
    "tmp",
    "run",
];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the saved image: {0}")]
    Saved(String),
    #[error("BuildKit's result does not keep the original layers: {0}")]
    BaseChanged(String),
    #[error("BuildKit's patch layer: {0}")]
    Layer(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where each member of the saved tar is: offset of its data, length.
type Members = HashMap<String, (u64, u64)>;

fn members(file: &mut File) -> Result<Members, ExportError> {
    let mut archive = tar::Archive::new(&mut *file);
    let mut members = HashMap::new();
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.header().entry_type().is_file() {
            let name = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
    }
    Ok(members)
}

fn read_member(
    file: &mut File,
    members: &Members,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, ExportError> {
    let (offset, len) = *members
        .get(name)
        .ok_or_else(|| ExportError::Saved(format!("no member {name:?}")))?;
    if len > limit {
        return Err(ExportError::Saved(format!(
            "{name}: {len} bytes, more than {limit}"
        )));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; len as usize];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The patch layer of the image saved at `saved`, whose first layers must have
/// `base_diff_ids`; written into `dir`.
///
/// # Errors
/// [`ExportError`]: the saved image is malformed, its base layers differ from the
/// original's, it has no new layer or more than one, or the new layer is corrupt or holds
/// entries a layer must not (devices, paths out of the root).
pub fn patch_layer(
    saved: &Path,
    base_diff_ids: &[Digest],
    dir: &Path,
) -> Result<BuiltLayer, ExportError> {
    let mut file = File::open(saved)?;
    let members = members(&mut file)?;
    #[derive(serde::Deserialize)]
    struct SavedManifest {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "Layers")]
        layers: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct SavedConfig {
        rootfs: RootFs,
    }
    let manifest: Vec<SavedManifest> =
        serde_json::from_slice(&read_member(&mut file, &members, "manifest.json", 1 << 20)?)
            .map_err(|e| ExportError::Saved(format!("manifest.json: {e}")))?;
    let [manifest] = manifest.as_slice() else {
        return Err(ExportError::Saved(format!(
            "{} images in manifest.json, expected 1",
            manifest.len()
        )));
    };
    let config: SavedConfig = serde_json::from_slice(&read_member(
        &mut file,
        &members,
        &manifest.config,
        4 << 20,
    )?)
    .map_err(|e| ExportError::Saved(format!("{}: {e}", manifest.config)))?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(ExportError::Saved(format!(
            "{} layers but {} diff_ids",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let at = new_layer(diff_ids, base_diff_ids)?;
    let layer_name = &manifest.layers[at];
    let expected = &diff_ids[at];
    let (offset, len) = *members
        .get(layer_name.trim_start_matches("./"))
        .ok_or_else(|| ExportError::Saved(format!("no member {layer_name:?}")))?;

    // Verified before a byte of it is used.
    file.seek(SeekFrom::Start(offset))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut (&mut file).take(len), &mut hasher)?;
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != *expected {
        return Err(ExportError::Layer(format!(
            "its bytes hash to {actual}, the config says {expected}"
        )));
    }
    let builder = rewrite(file, offset, len)?;
    builder
        .write_gzip(dir)
        .map_err(|e| ExportError::Layer(e.to_string()))
}

/// The index of the one layer after the original's: `diff_ids` must start with
/// `base_diff_ids` and have exactly one more.
pub(super) fn new_layer(
    diff_ids: &[String],
    base_diff_ids: &[Digest],
) -> Result<usize, ExportError> {
    let base: Vec<String> = base_diff_ids.iter().map(|d| d.to_string()).collect();
    if diff_ids.len() < base.len() || diff_ids[..base.len()] != base[..] {
        return Err(ExportError::BaseChanged(format!(
            "expected the diff_ids {base:?} first, found {diff_ids:?}"
        )));
    }
    let added = diff_ids.len() - base.len();
    if added != 1 {
        return Err(ExportError::Layer(format!(
            "{added} new layers, expected exactly 1"
        )));
    }
    Ok(base.len())
}

/// The patch layer from an uncompressed layer tar already checked against its diff_id.
pub(super) fn rewrite_tar(tar: &Path, dir: &Path) -> Result<BuiltLayer, ExportError> {
    let file = File::open(tar)?;
    let len = file.metadata()?.len();
    rewrite(file, 0, len)?
        .write_gzip(dir)
        .map_err(|e| ExportError::Layer(e.to_string()))
}

/// The entries of the layer tar at `offset..offset+len` of `file`, file data referenced in
/// place.
fn rewrite(mut file: File, offset: u64, len: u64) -> Result<LayerBuilder, ExportError> {
    file.seek(SeekFrom::Start(offset))?;
    let shared = Arc::new(file.try_clone()?);
    let mut archive = tar::Archive::new(file.take(len));
    let mut builder = LayerBuilder::default();
    let mut opaque = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let header = entry.header();
        let raw_path = entry.path()?.to_string_lossy().into_owned();
        let path = normalize(&raw_path)?;
        if path.is_empty() || left_out(&path) {
            continue;
        }
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", path.as_str()),
        };
        if name == OPAQUE_MARKER {
            opaque.push(parent.to_owned());
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let target = if parent.is_empty() {
                hidden.to_owned()
            } else {
                format!("{parent}/{hidden}")
            };
            builder.whiteout(&target);
            continue;
        }
        let kind = match header.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                EntryKind::File(FileData::Slice {
                    file: shared.clone(),
                    offset: offset + entry.raw_file_position(),
                    len: entry.size(),
                })
            }
            tar::EntryType::Symlink => EntryKind::Symlink(link(&entry, &path)?),
            tar::EntryType::Link => EntryKind::Hardlink(normalize(&link(&entry, &path)?)?),
            other => {
                return Err(ExportError::Layer(format!(
                    "{path}: a {other:?} entry; patch layers hold files, directories and links"
                )))
            }
        };
        builder.insert(LayerEntry {
            path,
            mode: header.mode()? & 0o7777,
            uid: header.uid()?,
            gid: header.gid()?,
            uname: header
                .username()
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_owned(),
            gname: header
                .groupname()
                .ok()
                .flatten()
                .unwrap_or_default()
                .to_owned(),
            mtime: header.mtime()?,
            kind,
        });
    }
    for dir in opaque {
        let Some(mut entry) = builder.get(&dir).cloned() else {
            return Err(ExportError::Layer(format!(
                "{dir}: an opaque marker without its directory"
            )));
        };
        entry.kind = EntryKind::OpaqueDir;
        builder.insert(entry);
    }
    Ok(builder)
}

fn link<R: Read>(entry: &tar::Entry<'_, R>, path: &str) -> Result<String, ExportError> {
    entry
        .link_name()?
        .map(|target| target.to_string_lossy().into_owned())
        .ok_or_else(|| ExportError::Layer(format!("{path}: a link without a target")))
}

/// `./usr/bin/x/` -> `usr/bin/x`; `..` is refused.
fn normalize(path: &str) -> Result<String, ExportError> {
    crate::pkgs::archive::normal_components(path)
        .map_err(|_| ExportError::Layer(format!("{path:?}: a path that leaves the root")))
}

fn left_out(path: &str) -> bool {
    LEFT_OUT.iter().any(|prefix| {
        path == *prefix
            || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
    })
}

#[cfg(test)]
mod tests;
