//! [`read_files`]: a few files out of an image, reading as few layers as possible.
//!
//! Layers are read from the top down. After each layer, every request is resolved against
//! the layers read so far ([`crate::image::index::lookup`]); reading stops as soon as no
//! request is undecided, so a file the top layer holds costs one layer. Contents are kept
//! only for the paths still asked for (and, speculatively, for targets of symbolic links met
//! on the way); a file whose contents were passed over (a link target earlier in the stream,
//! in an upper layer, or a hard link's target) is read again from its one layer at the end.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::image::error::{ImageError, LayerRef};
use crate::image::index::{list_dir, lookup, LayerIndex};
use crate::image::layer::{LayerEntry, Usage};
use crate::image::node::{EntryKind, Node};
use crate::image::path::{
    self, ancestors, display, is_below, join, normalize_request_path, parent, Resolved,
};
use crate::image::{LayerDescriptor, LayerSource, Limits};

/// Speculative capture targets added while scanning one layer, at most. Misses cost a
/// second read of one layer, never a wrong answer.
const MAX_CAPTURE_PATHS: usize = 1024;

/// Reads the contents of `wanted` paths from the image whose layers (bottom first) are
/// `layers`, opening blobs through `source`.
///
/// A wanted path is absolute or relative to the image root (`/etc/os-release`). One ending
/// in `/` asks for every regular file directly inside that directory
/// (`/var/lib/dpkg/status.d/`); its results are keyed by the wanted string followed by the
/// file's name. Other results are keyed by the wanted string. Symbolic links are followed
/// within the image (absolute targets from the image root, at most `limits.max_symlinks`);
/// hard links give their target's contents. Paths that are absent, or are not regular files,
/// are left out of the map. `limits` count over every layer read, re-reads included.
///
/// Errors: any [`ImageError`] of opening or reading a layer; [`ImageError::TooManySymlinks`];
/// [`ImageError::NonUtf8Path`] for a file in a wanted directory whose name is not UTF-8;
/// [`ImageError::HardlinkTargetMissing`].
pub fn read_files(
    source: &dyn LayerSource,
    layers: &[LayerDescriptor],
    wanted: &[&str],
    limits: &Limits,
) -> Result<HashMap<String, Vec<u8>>, ImageError> {
    let requests: Vec<Request> = wanted.iter().map(|w| Request::new(w)).collect();
    let mut scanned: Vec<LayerIndex> = Vec::new();
    let mut captured: HashMap<(usize, Vec<u8>), Vec<u8>> = HashMap::new();
    let mut usage = Usage::default();
    let mut next = layers.len();
    let hits = loop {
        let complete = next == 0;
        let (hits, candidates) = evaluate(&requests, &scanned, complete, layers, limits)?;
        if candidates.is_empty() || complete {
            break hits;
        }
        next -= 1;
        let mut capture = candidates;
        let (index, contents) = LayerIndex::scan(source, layers, next, limits, &mut usage, |e| {
            capture.wants(e)
        })?;
        captured.extend(
            contents
                .into_iter()
                .map(|(path, data)| ((next, path), data)),
        );
        scanned.push(index);
    };

    let mut missing: BTreeMap<usize, HashSet<Vec<u8>>> = BTreeMap::new();
    for hit in &hits {
        if !captured.contains_key(&(hit.layer, hit.path.clone())) {
            missing
                .entry(hit.layer)
                .or_default()
                .insert(hit.path.clone());
        }
    }
    for (layer, paths) in missing {
        let (_, contents) = LayerIndex::scan(source, layers, layer, limits, &mut usage, |e| {
            paths.contains(e.path())
        })?;
        for path in paths {
            let Some(data) = contents.get(&path) else {
                return Err(ImageError::Inconsistent {
                    layer: layer_ref(layers, layer),
                    path: display(&path),
                });
            };
            captured.insert((layer, path), data.clone());
        }
    }

    let mut files = HashMap::with_capacity(hits.len());
    for hit in hits {
        if let Some(data) = captured.get(&(hit.layer, hit.path)) {
            files.insert(hit.key, data.clone());
        }
    }
    Ok(files)
}

fn layer_ref(layers: &[LayerDescriptor], index: usize) -> LayerRef {
    LayerRef {
        index,
        digest: layers
            .get(index)
            .map(|l| l.digest.clone())
            .unwrap_or_default(),
    }
}

/// One wanted path.
struct Request {
    /// The wanted string, as the result's key (or its prefix, for a directory).
    key: String,
    path: Vec<u8>,
    directory: bool,
}

impl Request {
    fn new(wanted: &str) -> Request {
        Request {
            key: wanted.to_string(),
            path: normalize_request_path(wanted.as_bytes()),
            directory: wanted.ends_with('/'),
        }
    }
}

/// A decided file: its result key, and the layer and path its contents are read from.
struct Hit {
    key: String,
    layer: usize,
    path: Vec<u8>,
}

/// Resolves every request against the layers read so far (top first): the decided files,
/// and the paths lower layers must be searched for.
fn evaluate(
    requests: &[Request],
    scanned: &[LayerIndex],
    complete: bool,
    layers: &[LayerDescriptor],
    limits: &Limits,
) -> Result<(Vec<Hit>, Capture), ImageError> {
    let mut hits = Vec::new();
    let mut capture = Capture::default();
    let resolve = |path: &[u8]| {
        let resolved = path::resolve(path, limits.max_symlinks, |p| {
            Ok::<_, ImageError>(lookup(scanned, p, complete))
        })?;
        if resolved == Resolved::TooManyLinks {
            return Err(ImageError::TooManySymlinks {
                path: display(path),
                max: limits.max_symlinks,
            });
        }
        Ok(resolved)
    };
    for request in requests {
        let resolved = resolve(&request.path)?;
        if !request.directory {
            match resolved {
                Resolved::Found { path, layer, node } => {
                    if let Some(source) = contents_of(scanned, layers, layer, &path, node)? {
                        hits.push(Hit {
                            key: request.key.clone(),
                            layer,
                            path: source,
                        });
                    }
                }
                Resolved::Pending { path } => capture.add_file(path),
                Resolved::Absent | Resolved::TooManyLinks => {}
            }
            continue;
        }
        let dir = match resolved {
            Resolved::Found { path, node, .. } if node.is_dir() => path,
            Resolved::Pending { path } => {
                capture.add_dir(path);
                continue;
            }
            _ => continue,
        };
        let Some(names) = list_dir(scanned, &dir, complete) else {
            capture.add_dir(dir);
            continue;
        };
        for name in names {
            let child = join(&dir, &name);
            match resolve(&child)? {
                Resolved::Found { path, layer, node } => {
                    let Some(source) = contents_of(scanned, layers, layer, &path, node)? else {
                        continue;
                    };
                    let Ok(name) = String::from_utf8(name) else {
                        return Err(ImageError::NonUtf8Path {
                            layer: layer_ref(layers, layer),
                            path: display(&child),
                        });
                    };
                    hits.push(Hit {
                        key: format!("{}{name}", request.key),
                        layer,
                        path: source,
                    });
                }
                Resolved::Pending { path } => capture.add_file(path),
                Resolved::Absent | Resolved::TooManyLinks => {}
            }
        }
    }
    Ok((hits, capture))
}

/// Where the contents of the entry found at `path` live: itself for a regular file, its
/// target in the same layer for a hard link, nowhere for anything else.
fn contents_of(
    scanned: &[LayerIndex],
    layers: &[LayerDescriptor],
    layer: usize,
    path: &[u8],
    node: &Node,
) -> Result<Option<Vec<u8>>, ImageError> {
    match node.kind {
        EntryKind::File => Ok(Some(path.to_vec())),
        EntryKind::Hardlink => {
            let target = node.link_target.as_deref().unwrap_or_default();
            let in_layer = scanned
                .iter()
                .find(|index| index.layer == layer)
                .and_then(|index| index.entries.get(target));
            match in_layer {
                Some(target_node) if target_node.kind == EntryKind::File => {
                    Ok(Some(target.to_vec()))
                }
                // A hard link to a link or device: nothing to read as a file.
                Some(_) => Ok(None),
                None => Err(ImageError::HardlinkTargetMissing {
                    layer: layer_ref(layers, layer),
                    path: display(path),
                    target: display(target),
                }),
            }
        }
        _ => Ok(None),
    }
}

/// The paths whose contents are kept while one layer is scanned.
#[derive(Default)]
struct Capture {
    files: HashSet<Vec<u8>>,
    /// Directories whose direct children are kept.
    dirs: HashSet<Vec<u8>>,
    /// Every `files`/`dirs` path and its ancestors: a symbolic link at one of these
    /// redirects a capture path.
    prefixes: HashSet<Vec<u8>>,
}

impl Capture {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }

    fn full(&self) -> bool {
        self.files.len() + self.dirs.len() >= MAX_CAPTURE_PATHS
    }

    fn add_prefixes(&mut self, path: &[u8]) {
        self.prefixes.extend(ancestors(path).map(<[u8]>::to_vec));
        self.prefixes.insert(path.to_vec());
    }

    fn add_file(&mut self, path: Vec<u8>) {
        self.add_prefixes(&path);
        self.files.insert(path);
    }

    fn add_dir(&mut self, path: Vec<u8>) {
        self.add_prefixes(&path);
        self.dirs.insert(path);
    }

    /// Decides for one entry, in stream order, whether to keep its contents; a symbolic
    /// link on the way to a capture path adds the redirected path.
    fn wants(&mut self, entry: &LayerEntry<'_>) -> bool {
        let path = entry.path();
        if entry.kind() == EntryKind::Symlink && !self.full() {
            let target = entry.link_target().unwrap_or_default();
            let base = if target.starts_with(b"/") {
                Vec::new()
            } else {
                parent(path).to_vec()
            };
            let redirected = normalize_request_path(&join(&base, target));
            if self.dirs.contains(parent(path)) {
                self.add_file(redirected.clone());
            }
            if self.prefixes.contains(path) {
                let rebase = |p: &Vec<u8>| {
                    (p.as_slice() == path || is_below(p, path))
                        .then(|| normalize_request_path(&join(&redirected, &p[path.len()..])))
                };
                let files: Vec<Vec<u8>> = self.files.iter().filter_map(rebase).collect();
                let dirs: Vec<Vec<u8>> = self.dirs.iter().filter_map(rebase).collect();
                files.into_iter().for_each(|f| self.add_file(f));
                dirs.into_iter().for_each(|d| self.add_dir(d));
            }
        }
        entry.kind() == EntryKind::File
            && (self.files.contains(path) || self.dirs.contains(parent(path)))
    }
}
