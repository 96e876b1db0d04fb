//! Reading an image's file system without running anything: layer blobs (plain, gzip or
//! zstd tar) are walked entry by entry under [`Limits`], with the OCI whiteout rules applied.
//!
//! Two ways in:
//! - [`read_files`] reads a few files (`/etc/os-release`, `/var/lib/dpkg/status`, every file
//!   in `/var/lib/dpkg/status.d/`) from the top layer down, and stops as soon as the upper
//!   layers decide every path; this is what scanning uses.
//! - [`Filesystem::from_layers`] applies every layer bottom-up into a metadata-only tree: per
//!   path, the entry type, size and the layer that holds it.
//!
//! [`read_layer`] is the single-layer walker both are built on. All of it is blocking I/O
//! over a [`LayerSource`]; async callers run it with `tokio::task::spawn_blocking`. Hostile
//! input (truncated streams, bad headers, `..` names, decompression bombs) gives an
//! [`ImageError`], never a panic.

mod error;
mod fs;
mod index;
pub(crate) mod layer;
mod node;
mod path;
mod read;
#[cfg(test)]
mod tests;
mod unpacked;

use std::io::{self, Read};

pub use error::{ImageError, LayerRef, Limit};
pub use fs::Filesystem;
pub use layer::{is_readable_media_type, read_layer, Compression, LayerEntry, Usage};
pub use node::{EntryKind, Node};
pub use read::read_files;
pub use unpacked::UnpackedLayers;

/// `application/vnd.oci.image.layer.v1.tar`
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// `application/vnd.oci.image.layer.v1.tar+gzip`
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `application/vnd.oci.image.layer.v1.tar+zstd`
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// `application/vnd.docker.image.rootfs.diff.tar.gzip`
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One layer of an image manifest, in manifest order (index 0 is the bottom layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// The blob digest (`sha256:...`); named in errors and passed back to the source.
    pub digest: String,
    /// The descriptor's media type; see [`is_readable_media_type`].
    pub media_type: String,
}

impl LayerDescriptor {
    /// A descriptor from the manifest's `digest` and `mediaType`.
    pub fn new(digest: impl Into<String>, media_type: impl Into<String>) -> LayerDescriptor {
        LayerDescriptor {
            digest: digest.into(),
            media_type: media_type.into(),
        }
    }
}

/// Where layer blobs come from (the store, or memory in tests). Implementations hand out
/// the blob as stored (compressed), already verified against its digest.
pub trait LayerSource {
    /// Opens layer `index` (0 = bottom) of the image, described by `layer`. May be called
    /// more than once for the same layer, and never for layers a read does not need.
    ///
    /// Errors: any I/O error; it is reported as [`ImageError::Open`] for that layer.
    fn open_layer(&self, index: usize, layer: &LayerDescriptor) -> io::Result<Box<dyn Read + '_>>;
}

/// In-memory blobs, by layer index.
impl LayerSource for Vec<Vec<u8>> {
    fn open_layer(&self, index: usize, layer: &LayerDescriptor) -> io::Result<Box<dyn Read + '_>> {
        match self.get(index) {
            Some(blob) => Ok(Box::new(blob.as_slice())),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no blob for layer {index} ({})", layer.digest),
            )),
        }
    }
}

/// Bounds on the work one operation ([`read_files`], [`Filesystem::from_layers`]) may do,
/// counted over all the layers it reads: a hostile image can make it fail, not exhaust
/// memory or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tar entries, over all layers read.
    pub max_entries: u64,
    /// Decompressed bytes (tar headers and padding included), over all layers read.
    pub max_decompressed_bytes: u64,
    /// Size of one file whose contents are read into memory.
    pub max_file_bytes: u64,
    /// Symbolic links followed while resolving one path (Linux allows 40).
    pub max_symlinks: u32,
}

impl Default for Limits {
    /// Generous for real images (the largest common images decompress to a few GiB and
    /// hold a few hundred thousand entries; an rpmdb is tens of MiB), small enough to stop a
    /// decompression bomb.
    fn default() -> Limits {
        Limits {
            max_entries: 2_000_000,
            max_decompressed_bytes: 32 << 30,
            max_file_bytes: 256 << 20,
            max_symlinks: 40,
        }
    }
}
