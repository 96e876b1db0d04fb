//! [`Filesystem`]: an image's merged file tree as metadata, built by applying every layer in
//! order. It holds no file contents; [`crate::image::read_files`] reads contents.

use std::collections::BTreeMap;

use crate::image::error::ImageError;
use crate::image::index::LayerIndex;
use crate::image::layer::Usage;
use crate::image::node::Node;
use crate::image::path::{self, dir_prefix, display, normalize_request_path, Lookup, Resolved};
use crate::image::{LayerDescriptor, LayerSource, Limits};

/// The merged tree: per path, the visible entry and the layer that holds it. Paths are raw
/// bytes (tar names need not be UTF-8), without the leading `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filesystem {
    nodes: BTreeMap<Vec<u8>, Node>,
}

impl Filesystem {
    /// Reads every layer of `layers` (bottom first) through `source` and applies them in
    /// order, whiteouts and opaque directories included. `limits` count over all layers.
    ///
    /// Errors: any [`ImageError`] of opening or reading a layer.
    pub fn from_layers(
        source: &dyn LayerSource,
        layers: &[LayerDescriptor],
        limits: &Limits,
    ) -> Result<Filesystem, ImageError> {
        let mut filesystem = Filesystem::default();
        let mut usage = Usage::default();
        for index in 0..layers.len() {
            let (layer, _) =
                LayerIndex::scan(source, layers, index, limits, &mut usage, |_| false)?;
            filesystem.apply(layer);
        }
        Ok(filesystem)
    }

    /// Applies one layer on top: its opaque directories and whiteouts remove what lower
    /// layers put there, then its entries replace lower ones. A directory merges with a
    /// lower directory; anything else replaces the lower entry and all below it.
    pub(crate) fn apply(&mut self, layer: LayerIndex) {
        for dir in &layer.opaque {
            self.remove_below(dir);
        }
        for hidden in &layer.whiteouts {
            self.nodes.remove(hidden);
            self.remove_below(hidden);
        }
        for (path, node) in layer.entries {
            match self.nodes.get(&path) {
                // Extractors create missing parents with the lower directory's metadata.
                Some(old) if old.is_dir() && node.implicit => continue,
                Some(old) if old.is_dir() && !node.is_dir() => self.remove_below(&path),
                _ => {}
            }
            self.nodes.insert(path, node);
        }
    }

    fn remove_below(&mut self, dir: &[u8]) {
        let prefix = dir_prefix(dir);
        let below: Vec<Vec<u8>> = self
            .nodes
            .range(prefix.clone()..)
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(&prefix))
            .cloned()
            .collect();
        for path in below {
            self.nodes.remove(&path);
        }
    }

    /// The entry at `path` (`/etc/os-release` or `etc/os-release`), without following
    /// symbolic links.
    pub fn get(&self, path: impl AsRef<[u8]>) -> Option<&Node> {
        self.nodes.get(&normalize_request_path(path.as_ref()))
    }

    /// The entry `path` leads to, following symbolic links (at most `max_symlinks`) inside
    /// the image, with the real path it was found at. `Ok(None)` when nothing is there.
    ///
    /// Errors: [`ImageError::TooManySymlinks`].
    pub fn resolve(
        &self,
        path: impl AsRef<[u8]>,
        max_symlinks: u32,
    ) -> Result<Option<(Vec<u8>, &Node)>, ImageError> {
        let requested = normalize_request_path(path.as_ref());
        let lookup = |p: &[u8]| -> Result<Lookup<'_>, ImageError> {
            Ok(match self.nodes.get(p) {
                Some(node) => Lookup::Found {
                    layer: node.layer,
                    node,
                },
                None => Lookup::Absent,
            })
        };
        match path::resolve(&requested, max_symlinks, lookup)? {
            Resolved::Found { path, node, .. } => Ok(Some((path, node))),
            Resolved::Absent | Resolved::Pending { .. } => Ok(None),
            Resolved::TooManyLinks => Err(ImageError::TooManySymlinks {
                path: display(&requested),
                max: max_symlinks,
            }),
        }
    }

    /// The entries directly below directory `dir` (no symbolic links followed), by name.
    pub fn list_dir(&self, dir: impl AsRef<[u8]>) -> Vec<(&[u8], &Node)> {
        let prefix = dir_prefix(&normalize_request_path(dir.as_ref()));
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(path, _)| path.starts_with(&prefix))
            .filter(|(path, _)| !path[prefix.len()..].contains(&b'/'))
            .map(|(path, node)| (path::file_name(path), node))
            .collect()
    }

    /// Every visible path, sorted bytewise, with its entry.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Node)> {
        self.nodes
            .iter()
            .map(|(path, node)| (path.as_slice(), node))
    }

    /// The number of visible paths (the root not counted).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no layer left anything visible.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
