//! [`UnpackedLayers`]: layers decompressed once into a scratch directory. Patching reads
//! an image's layers several times (its tree, its database, the root for scripts, the
//! check afterwards); after the first read each is a plain tar from the page cache instead
//! of another gzip pass.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::durable::TempFile;
use crate::image::layer::decompressed;
use crate::image::{LayerDescriptor, LayerSource, Limits};

pub struct UnpackedLayers<S> {
    inner: S,
    dir: PathBuf,
    /// Where tars are kept across patches by blob digest, when set (see
    /// `patch::unpack_cache`); `dir` holds the rest.
    shared: Option<PathBuf>,
    max_bytes: u64,
    files: Mutex<HashMap<usize, PathBuf>>,
}

impl<S: LayerSource> UnpackedLayers<S> {
    /// Layers from `inner`, unpacked into `dir` (which must exist) on first use.
    pub fn new(inner: S, dir: PathBuf, limits: &Limits) -> UnpackedLayers<S> {
        UnpackedLayers {
            inner,
            dir,
            shared: None,
            max_bytes: limits.max_decompressed_bytes,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps the tars in `shared` (which must exist), named by blob digest, and finds
    /// them there on later runs. The blobs are verified content, so their tars are too.
    pub fn shared_in(mut self, shared: PathBuf) -> UnpackedLayers<S> {
        self.shared = Some(shared);
        self
    }

    /// The shared file for `layer`, when its digest makes a safe file name.
    fn shared_path(&self, layer: &LayerDescriptor) -> Option<PathBuf> {
        let shared = self.shared.as_ref()?;
        let (algorithm, hex) = layer.digest.split_once(':')?;
        let safe = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && hex.len() >= 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        safe.then(|| shared.join(format!("{algorithm}-{hex}.tar")))
    }
}

impl<S: LayerSource> LayerSource for UnpackedLayers<S> {
    fn open_layer(&self, index: usize, layer: &LayerDescriptor) -> io::Result<Box<dyn Read + '_>> {
        let known = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&index)
            .cloned()
            .or_else(|| self.shared_path(layer));
        if let Some(path) = known {
            // A shared tar may have been evicted since: then it is made again.
            match File::open(&path) {
                Ok(file) => {
                    if self.shared.is_some() {
                        let _ = file.set_modified(std::time::SystemTime::now());
                    }
                    return Ok(Box::new(BufReader::new(file)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let path = self
            .shared_path(layer)
            .unwrap_or_else(|| self.dir.join(format!("layer-{index}.tar")));
        // Named only once complete: a reader never sees half a tar under `path`.
        let dir = path.parent().unwrap_or(&self.dir);
        let mut partial = TempFile::new_in(dir)?;
        let blob = self.inner.open_layer(index, layer)?;
        let mut tar = decompressed(blob, self.max_bytes)?;
        let mut out = io::BufWriter::new(partial.file_mut());
        io::copy(&mut tar, &mut out)?;
        out.into_inner().map_err(io::IntoInnerError::into_error)?;
        if self.shared.is_some() {
            // Kept for later runs: on disk before it can be found by name.
            partial.commit(&path)?;
        } else {
            partial.rename_unsynced(&path)?;
        }
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(index, path.clone());
        Ok(Box::new(BufReader::new(File::open(path)?)))
    }
}
