//! The on-disk layout of the store, in one place:
//!
//! ```text
//! <storage.path>/
//!   blobs/<alg>/<hex>        verified content: layers, configs and manifests, by digest
//!   manifests/<alg>/<hex>    the media type of a manifest stored under blobs/ (text)
//!   tmp/<hex>.<n>.part       downloads in progress; removed at start-up
//! ```
//!
//! A file appears under `blobs/` only by `rename` after its digest verified and its data
//! was fsynced, so a crash at any point leaves either the complete file or none. A manifest
//! type file is written before its blob, so a blob that is a manifest always has one (an
//! orphaned type file after a crash is harmless).

use std::path::{Path, PathBuf};

use crate::distribution::Digest;

pub fn blobs_dir(root: &Path) -> PathBuf {
    root.join("blobs")
}

pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

pub fn manifest_type_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join("manifests")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

pub fn tmp_dir(root: &Path) -> PathBuf {
    root.join("tmp")
}
