//! [`UnpackedLayers`]: layers decompressed once into a scratch directory. Patching reads
//! an image's layers several times (its tree, its database, the root for scripts, the
//! check afterwards); after the first read each is a plain tar from the page cache instead
//! of another gzip pass.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::image::layer::decompressed;
use crate::image::{LayerDescriptor, LayerSource, Limits};

pub struct UnpackedLayers<S> {
    inner: S,
    dir: PathBuf,
    max_bytes: u64,
    files: Mutex<HashMap<usize, PathBuf>>,
}

impl<S: LayerSource> UnpackedLayers<S> {
    /// Layers from `inner`, unpacked into `dir` (which must exist) on first use.
    pub fn new(inner: S, dir: PathBuf, limits: &Limits) -> UnpackedLayers<S> {
        UnpackedLayers {
            inner,
            dir,
            max_bytes: limits.max_decompressed_bytes,
            files: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: LayerSource> LayerSource for UnpackedLayers<S> {
    fn open_layer(&self, index: usize, layer: &LayerDescriptor) -> io::Result<Box<dyn Read + '_>> {
        let known = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&index)
            .cloned();
        if let Some(path) = known {
            return Ok(Box::new(BufReader::new(File::open(path)?)));
        }
        let path = self.dir.join(format!("layer-{index}.tar"));
        let partial = self.dir.join(format!("layer-{index}.tar.part"));
        {
            let blob = self.inner.open_layer(index, layer)?;
            let mut tar = decompressed(blob, self.max_bytes)?;
            let mut out = io::BufWriter::new(File::create(&partial)?);
            io::copy(&mut tar, &mut out)?;
            io::Write::flush(&mut out)?;
        }
        std::fs::rename(&partial, &path)?;
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(index, path.clone());
        Ok(Box::new(BufReader::new(File::open(path)?)))
    }
}
