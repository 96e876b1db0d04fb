//! [`ImageError`]: what went wrong while reading an image's layers, naming the layer (index
//! and digest) and, where there is one, the path.

use std::fmt;
use std::io;

use crate::error::Origin;

/// Which layer an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// 0 is the bottom (first) layer of the manifest.
    pub index: usize,
    pub digest: String,
}

impl fmt::Display for LayerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer {} ({})", self.index, self.digest)
    }
}

/// The limits of [`crate::image::Limits`], named as in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`crate::image::Limits::max_entries`]
    MaxEntries,
    /// [`crate::image::Limits::max_decompressed_bytes`]
    MaxDecompressedBytes,
    /// [`crate::image::Limits::max_file_bytes`]
    MaxFileBytes,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::MaxEntries => "max_entries",
            Limit::MaxDecompressedBytes => "max_decompressed_bytes",
            Limit::MaxFileBytes => "max_file_bytes",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The [`crate::image::LayerSource`] could not open the blob.
    #[error("{layer}: cannot open the blob: {source}")]
    Open { layer: LayerRef, source: io::Error },
    /// The layer's media type is not a (plain, gzip or zstd) tar layer we can read.
    #[error("{layer}: media type {media_type:?} is not a readable layer")]
    UnsupportedMediaType { layer: LayerRef, media_type: String },
    /// A limit was reached; `max` is the configured value (counted over the whole operation).
    #[error("{layer}: limit {limit} ({max}) exceeded{}", at_path(.path))]
    LimitExceeded {
        layer: LayerRef,
        limit: Limit,
        max: u64,
        path: Option<String>,
    },
    /// The compressed stream or the tar structure is broken (truncated, bad checksum, bad
    /// header field).
    #[error("{layer}: corrupt layer{}: {source}", at_path(.path))]
    Corrupt {
        layer: LayerRef,
        path: Option<String>,
        source: io::Error,
    },
    /// An entry name (or hard link target) climbs above the image root with `..`, or is a
    /// whiteout of `.`/`..`.
    #[error("{layer}: entry {path:?} escapes the image root")]
    UnsafePath { layer: LayerRef, path: String },
    /// A hard link names a target the same layer does not hold.
    #[error("{layer}: hard link {path} points to {target}, which the layer does not hold")]
    HardlinkTargetMissing {
        layer: LayerRef,
        path: String,
        target: String,
    },
    /// Resolving a requested path followed more symbolic links than allowed (a loop, or a
    /// hostile chain).
    #[error("{path}: more than {max} symbolic links to follow")]
    TooManySymlinks { path: String, max: u32 },
    /// A file below a requested directory has a name that is not UTF-8, so it cannot be a key
    /// of the result.
    #[error("{layer}: {path} is not a UTF-8 path")]
    NonUtf8Path { layer: LayerRef, path: String },
    /// A layer gave different entries when it was read a second time.
    #[error("{layer}: {path} was not found when the layer was read again")]
    Inconsistent { layer: LayerRef, path: String },
}

fn at_path(path: &Option<String>) -> String {
    match path {
        Some(p) => format!(" at {p}"),
        None => String::new(),
    }
}

impl ImageError {
    /// Opening a blob is our store's business; everything else is the image's content.
    pub fn origin(&self) -> Origin {
        match self {
            ImageError::Open { .. } => Origin::Internal,
            _ => Origin::Upstream,
        }
    }

    /// Only a failure to open the blob may go away on its own; the same bytes always give
    /// the same content error.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ImageError::Open { .. })
    }
}
