//! [`LayerIndex`]: the metadata of one layer (entries, whiteouts, opaque directories) and the
//! OCI rules that decide, layer by layer from the top, what is visible at a path.
//!
//! The rules (image-spec `layer.md`, "Whiteouts"), as overlayfs applies them:
//! - an entry in a layer hides the same path in every lower layer, whatever order the
//!   layer's own entries and whiteouts come in;
//! - `.wh.<name>` hides `<name>` and everything below it in lower layers only;
//! - `.wh..wh..opq` hides everything lower layers have below its directory;
//! - a non-directory hides everything lower layers have below its path;
//! - an entry implies its parent directories in its layer, as an extractor creates them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::image::error::{ImageError, LayerRef};
use crate::image::layer::{read_layer, LayerEntry, Usage};
use crate::image::node::{classify, EntryKind, Marker, Node};
use crate::image::path::{ancestors, dir_prefix, display, file_name, Lookup};
use crate::image::{LayerDescriptor, LayerSource, Limits};

/// One layer's entries without their contents.
#[derive(Debug, Default)]
pub(crate) struct LayerIndex {
    /// 0 = bottom.
    pub(crate) layer: usize,
    pub(crate) entries: BTreeMap<Vec<u8>, Node>,
    /// Paths deleted from lower layers.
    pub(crate) whiteouts: BTreeSet<Vec<u8>>,
    /// Directories whose lower contents are hidden (the empty path is the root).
    pub(crate) opaque: BTreeSet<Vec<u8>>,
}

/// File contents kept while scanning a layer, by normalised path.
pub(crate) type Captured = HashMap<Vec<u8>, Vec<u8>>;

impl LayerIndex {
    /// Opens layer `index` through `source` and indexes it. `capture` sees every ordinary
    /// entry (not whiteouts) in stream order and returns true to keep a regular file's
    /// contents.
    pub(crate) fn scan(
        source: &dyn LayerSource,
        layers: &[LayerDescriptor],
        index: usize,
        limits: &Limits,
        usage: &mut Usage,
        mut capture: impl FnMut(&LayerEntry<'_>) -> bool,
    ) -> Result<(LayerIndex, Captured), ImageError> {
        let descriptor = &layers[index];
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
        let mut built = LayerIndex {
            layer: index,
            ..LayerIndex::default()
        };
        let mut captured = Captured::new();
        read_layer(
            blob,
            &layer,
            &descriptor.media_type,
            limits,
            usage,
            |entry| {
                match classify(entry.path()) {
                    Marker::Plain => {}
                    Marker::Whiteout(hidden) => {
                        built.add_parents(&hidden);
                        built.whiteouts.insert(hidden);
                        return Ok(());
                    }
                    Marker::Opaque(dir) => {
                        built.add_parents(&dir);
                        if !dir.is_empty() {
                            built.add_implicit_dir(&dir);
                        }
                        built.opaque.insert(dir);
                        return Ok(());
                    }
                    Marker::Ignored => return Ok(()),
                    Marker::Invalid => {
                        return Err(ImageError::UnsafePath {
                            layer: layer.clone(),
                            path: display(entry.path()),
                        })
                    }
                }
                if capture(entry) && entry.kind() == EntryKind::File {
                    let contents = entry.read_contents()?;
                    captured.insert(entry.path().to_vec(), contents);
                } else {
                    // A later duplicate of a captured path replaces it, as extraction would.
                    captured.remove(entry.path());
                }
                built.add_parents(entry.path());
                built
                    .entries
                    .insert(entry.path().to_vec(), entry.to_node(index));
                Ok(())
            },
        )?;
        built.size_hardlinks();
        Ok((built, captured))
    }

    fn add_parents(&mut self, path: &[u8]) {
        for ancestor in ancestors(path) {
            self.add_implicit_dir(ancestor);
        }
    }

    fn add_implicit_dir(&mut self, path: &[u8]) {
        match self.entries.get(path) {
            Some(node) if node.is_dir() => {}
            _ => {
                self.entries
                    .insert(path.to_vec(), Node::implicit_dir(self.layer));
            }
        }
    }

    /// Hard links carry no size in tar; give them their target's.
    fn size_hardlinks(&mut self) {
        let sizes: Vec<(Vec<u8>, u64)> = self
            .entries
            .iter()
            .filter(|(_, node)| node.kind == EntryKind::Hardlink)
            .filter_map(|(path, node)| {
                let target = self.entries.get(node.link_target.as_deref()?)?;
                (target.kind == EntryKind::File).then(|| (path.clone(), target.size))
            })
            .collect();
        for (path, size) in sizes {
            if let Some(node) = self.entries.get_mut(&path) {
                node.size = size;
            }
        }
    }

    /// Whether this layer hides lower layers' entry at `path` (when it has none there itself).
    pub(crate) fn hides(&self, path: &[u8]) -> bool {
        if self.whiteouts.contains(path) || self.opaque.contains(&b""[..]) {
            return true;
        }
        ancestors(path).any(|ancestor| {
            self.whiteouts.contains(ancestor)
                || self.opaque.contains(ancestor)
                || self.entries.get(ancestor).is_some_and(|n| !n.is_dir())
        })
    }

    /// Direct children of directory `dir` in this layer, by name.
    pub(crate) fn children<'a>(&'a self, dir: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let prefix = dir_prefix(dir);
        let skip = prefix.len();
        self.entries
            .range(prefix.clone()..)
            .map(|(path, _)| path.as_slice())
            .take_while(move |path| path.starts_with(&prefix))
            .filter(move |path| !path[skip..].contains(&b'/'))
            .map(file_name)
    }
}

/// What is visible at `path` given `layers`, ordered top first. `complete` says whether
/// `layers` reaches the bottom of the image; if not, an undecided path is
/// [`Lookup::Pending`].
pub(crate) fn lookup<'n>(layers: &'n [LayerIndex], path: &[u8], complete: bool) -> Lookup<'n> {
    for layer in layers {
        if let Some(node) = layer.entries.get(path) {
            return Lookup::Found {
                layer: layer.layer,
                node,
            };
        }
        if layer.hides(path) {
            return Lookup::Absent;
        }
    }
    if complete {
        Lookup::Absent
    } else {
        Lookup::Pending
    }
}

/// Names of the entries visible directly below directory `dir` (a real path: every
/// component a directory), given `layers` top first. `None` when lower layers not yet read
/// may add more. Names are candidates: a name may still be hidden, so callers look each
/// child up.
pub(crate) fn list_dir(
    layers: &[LayerIndex],
    dir: &[u8],
    complete: bool,
) -> Option<BTreeSet<Vec<u8>>> {
    let mut names = BTreeSet::new();
    for layer in layers {
        match layer.entries.get(dir) {
            Some(node) if node.is_dir() => {
                names.extend(layer.children(dir).map(<[u8]>::to_vec));
                if layer.opaque.contains(dir) || layer.hides(dir) {
                    return Some(names);
                }
            }
            Some(_) => return Some(names),
            None if layer.hides(dir) => return Some(names),
            None => {}
        }
    }
    complete.then_some(names)
}
