//! Synthetic layers for the image tests: tar built in memory (names written raw, so hostile
//! names are possible), gzip through flate2, zstd from fixtures or the `zstd` tool.

mod hostile;
mod layer;
mod read;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};

use super::*;

/// Builds one layer's tar in memory, entries in call order.
pub(super) struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

impl Layer {
    pub(super) fn new() -> Layer {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn entry(
        mut self,
        name: &[u8],
        kind: tar::EntryType,
        link: Option<&[u8]>,
        data: &[u8],
    ) -> Layer {
        let mut header = tar::Header::new_gnu();
        assert!(name.len() < 100, "test names fit the v7 name field");
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            header.set_link_name_literal(link).unwrap();
        }
        header.set_cksum();
        self.tar.append(&header, data).unwrap();
        self
    }

    pub(super) fn file(self, name: &str, data: &[u8]) -> Layer {
        self.raw_file(name.as_bytes(), data)
    }

    pub(super) fn raw_file(self, name: &[u8], data: &[u8]) -> Layer {
        self.entry(name, tar::EntryType::Regular, None, data)
    }

    pub(super) fn dir(self, name: &str) -> Layer {
        self.entry(name.as_bytes(), tar::EntryType::Directory, None, b"")
    }

    pub(super) fn symlink(self, name: &str, target: &str) -> Layer {
        self.entry(
            name.as_bytes(),
            tar::EntryType::Symlink,
            Some(target.as_bytes()),
            b"",
        )
    }

    pub(super) fn hardlink(self, name: &str, target: &str) -> Layer {
        self.entry(
            name.as_bytes(),
            tar::EntryType::Link,
            Some(target.as_bytes()),
            b"",
        )
    }

    /// `.wh.<name>` next to `path`'s file name.
    pub(super) fn whiteout(self, path: &str) -> Layer {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let marker = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&marker, b"")
    }

    pub(super) fn opaque(self, dir: &str) -> Layer {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    pub(super) fn tar(self) -> Vec<u8> {
        self.tar.into_inner().unwrap()
    }

    pub(super) fn gzip(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Blobs in memory that record which layers were opened, in order.
pub(super) struct Blobs {
    blobs: Vec<Vec<u8>>,
    pub(super) opened: RefCell<Vec<usize>>,
}

impl Blobs {
    pub(super) fn new(blobs: Vec<Vec<u8>>) -> Blobs {
        Blobs {
            blobs,
            opened: RefCell::new(Vec::new()),
        }
    }

    pub(super) fn descriptors(&self) -> Vec<LayerDescriptor> {
        (0..self.blobs.len())
            .map(|i| LayerDescriptor::new(format!("sha256:{i:064x}"), MEDIA_TYPE_OCI_LAYER_GZIP))
            .collect()
    }

    pub(super) fn opened(&self) -> Vec<usize> {
        self.opened.borrow().clone()
    }

    pub(super) fn read(&self, wanted: &[&str]) -> Result<HashMap<String, Vec<u8>>, ImageError> {
        self.read_with(wanted, &Limits::default())
    }

    pub(super) fn read_with(
        &self,
        wanted: &[&str],
        limits: &Limits,
    ) -> Result<HashMap<String, Vec<u8>>, ImageError> {
        read_files(self, &self.descriptors(), wanted, limits)
    }

    pub(super) fn filesystem(&self) -> Result<Filesystem, ImageError> {
        Filesystem::from_layers(self, &self.descriptors(), &Limits::default())
    }
}

impl LayerSource for Blobs {
    fn open_layer(&self, index: usize, _: &LayerDescriptor) -> io::Result<Box<dyn Read + '_>> {
        self.opened.borrow_mut().push(index);
        Ok(Box::new(self.blobs[index].as_slice()))
    }
}

/// The map's entries as sorted (key, text) pairs, for readable assertions.
pub(super) fn sorted(files: &HashMap<String, Vec<u8>>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = files
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    pairs.sort();
    pairs
}
