//! Reading what an image holds without running it: its platform manifests, its config and
//! the few files that say which packages are installed. Blobs come through the mirror (so
//! they are verified and cached like any pull); only the layers that can hold the wanted
//! files are downloaded.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use serde::Deserialize;

use super::{Mirror, ServedManifest};
use crate::distribution::media_type::{self, Accept};
use crate::distribution::{Digest, ErrorCode, Reference};
use crate::error::ApiError;
use crate::image::{LayerDescriptor, LayerSource, Limits};
use crate::pkgs::{self, Inventory, MemoryFiles};
use crate::upstream::Route;

/// Where an image runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImagePlatform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for ImagePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One runnable image: a platform manifest and its layers.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: ImagePlatform,
    pub manifest: ServedManifest,
    pub config_digest: Digest,
    pub layers: Vec<LayerDescriptor>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    platform: Option<PlatformDoc>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

#[derive(Deserialize, Clone)]
struct PlatformDoc {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

fn invalid(what: impl Into<String>) -> ApiError {
    ApiError::upstream(
        ErrorCode::ManifestInvalid,
        http::StatusCode::BAD_GATEWAY,
        what,
    )
}

/// What [`Mirror::platform_images`] reads of a manifest or index, for the fuzz targets:
/// the document, each entry's digest and platform, the config and layer digests.
pub(crate) fn parse_manifest_doc(bytes: &[u8]) -> Result<usize, ApiError> {
    let doc: ManifestDoc = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let _ = serde_json::from_slice::<PlatformDoc>(bytes);
    let mut digests = 0;
    for entry in &doc.manifests {
        parse_digest(&entry.digest)?;
        digests += 1;
    }
    if let Some(config) = &doc.config {
        parse_digest(&config.digest)?;
        digests += 1;
    }
    Ok(digests + doc.layers.len())
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse::<Digest>().map_err(|e| invalid(e.to_string()))
}

impl Mirror {
    /// The runnable images behind a reference: one for a single manifest, one per platform
    /// for an index (attestation manifests, whose platform is `unknown/unknown`, skipped).
    pub async fn platform_images(
        &self,
        route: &Route,
        reference: &Reference,
    ) -> Result<Vec<PlatformImage>, ApiError> {
        let any = Accept::parse([]);
        let top = self.manifest(route, reference, &any).await?;
        if !media_type::is_index(&top.media_type) {
            return Ok(vec![self.platform_image(route, top, None).await?]);
        }
        let doc: ManifestDoc = serde_json::from_slice(&top.bytes)
            .map_err(|e| invalid(format!("index {}: {e}", top.digest)))?;
        let mut images = Vec::new();
        for entry in doc.manifests {
            let platform = entry.platform.clone();
            if platform.as_ref().is_some_and(|p| p.os == "unknown") {
                continue;
            }
            let digest = parse_digest(&entry.digest)?;
            let manifest = self
                .manifest(route, &Reference::Digest(digest), &any)
                .await?;
            if media_type::is_index(&manifest.media_type) {
                continue; // nested indexes are rare; not followed
            }
            images.push(self.platform_image(route, manifest, platform).await?);
        }
        Ok(images)
    }

    async fn platform_image(
        &self,
        route: &Route,
        manifest: ServedManifest,
        from_index: Option<PlatformDoc>,
    ) -> Result<PlatformImage, ApiError> {
        let doc: ManifestDoc = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| invalid(format!("manifest {}: {e}", manifest.digest)))?;
        let config = doc
            .config
            .ok_or_else(|| invalid(format!("manifest {} has no config", manifest.digest)))?;
        let config_digest = parse_digest(&config.digest)?;
        let platform = match from_index {
            Some(p) => p,
            None => {
                let bytes = self.read_small_blob(route, &config_digest).await?;
                serde_json::from_slice::<PlatformDoc>(&bytes)
                    .map_err(|e| invalid(format!("config {config_digest}: {e}")))?
            }
        };
        let layers = doc
            .layers
            .into_iter()
            .map(|l| LayerDescriptor::new(l.digest, l.media_type))
            .collect();
        Ok(PlatformImage {
            platform: ImagePlatform {
                os: platform.os,
                architecture: platform.architecture,
                variant: platform.variant.filter(|v| !v.is_empty()),
            },
            manifest,
            config_digest,
            layers,
        })
    }

    /// A whole blob, fetched and verified, as an open file.
    pub async fn blob_file(&self, route: &Route, digest: &Digest) -> Result<Arc<File>, ApiError> {
        let handle = self.open_blob(route, digest).await?;
        handle.complete_file().await
    }

    /// The layers of images behind `route`, for blocking readers. Call from the runtime.
    pub fn layer_source(self: &Arc<Self>, route: &Route) -> MirrorLayers {
        MirrorLayers {
            mirror: self.clone(),
            route: route.clone(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// A small blob (an image config), whole; at most 8 MiB.
    pub async fn read_small_blob(
        &self,
        route: &Route,
        digest: &Digest,
    ) -> Result<Vec<u8>, ApiError> {
        const MAX_CONFIG: u64 = 8 * 1024 * 1024;
        let file = self.blob_file(route, digest).await?;
        tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            FileCursor { file, pos: 0 }
                .take(MAX_CONFIG)
                .read_to_end(&mut bytes)
                .map(|_| bytes)
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("reading {digest}: {e}")))
    }

    /// The packages installed in an image, read from the few layers that hold the package
    /// database and os-release. `Ok(None)` when no supported package database is found.
    pub async fn inventory(
        self: &Arc<Self>,
        route: &Route,
        image: &PlatformImage,
    ) -> Result<Option<Inventory>, ApiError> {
        let source = self.layer_source(route);
        let layers = image.layers.clone();
        tokio::task::spawn_blocking(move || read_inventory(&source, &layers))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    }
}

/// The packages installed in the image of `layers`, read through `source` (blocking).
///
/// # Errors
/// 502 for unreadable layers, 422 for a package database that cannot be parsed.
pub fn read_inventory(
    source: &dyn crate::image::LayerSource,
    layers: &[crate::image::LayerDescriptor],
) -> Result<Option<Inventory>, ApiError> {
    let wanted = pkgs::database_paths();
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let files =
        crate::image::read_files(source, layers, &wanted, &Limits::default()).map_err(|e| {
            ApiError::upstream(
                ErrorCode::Unknown,
                http::StatusCode::BAD_GATEWAY,
                e.to_string(),
            )
        })?;
    pkgs::detect(&MemoryFiles::from(files)).map_err(|e| {
        ApiError::upstream(
            ErrorCode::Unknown,
            http::StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
        )
    })
}

impl Mirror {
    /// Writes one platform image as an OCI image layout in `dir` (for scanners that read
    /// layouts): `oci-layout`, `index.json` and every blob, each verified on the way in.
    pub async fn export_oci_layout(
        &self,
        route: &Route,
        image: &PlatformImage,
        dir: &std::path::Path,
    ) -> Result<(), ApiError> {
        let io = |e: std::io::Error| ApiError::internal(format!("writing the OCI layout: {e}"));
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(io)?;
        let mut digests: Vec<Digest> = vec![image.config_digest.clone()];
        for layer in &image.layers {
            digests.push(parse_digest(&layer.digest)?);
        }
        for digest in digests {
            let file = self.blob_file(route, &digest).await?;
            let target = blobs.join(digest.hex());
            tokio::task::spawn_blocking(move || {
                let mut out = std::fs::File::create(&target)?;
                std::io::copy(&mut FileCursor { file, pos: 0 }, &mut out).map(|_| ())
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(io)?;
        }
        let manifest = &image.manifest;
        std::fs::write(blobs.join(manifest.digest.hex()), &manifest.bytes).map_err(io)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [{
                "mediaType": manifest.media_type,
                "digest": manifest.digest.to_string(),
                "size": manifest.bytes.len(),
                "platform": {
                    "os": image.platform.os,
                    "architecture": image.platform.architecture,
                },
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| ApiError::internal(e.to_string()))?;
        std::fs::write(dir.join("index.json"), bytes).map_err(io)
    }
}

/// Layers fetched on demand through the mirror, from a blocking thread (it waits on the
/// runtime it was made on).
pub struct MirrorLayers {
    mirror: Arc<Mirror>,
    route: Route,
    runtime: tokio::runtime::Handle,
}

impl LayerSource for MirrorLayers {
    fn open_layer(
        &self,
        _index: usize,
        layer: &LayerDescriptor,
    ) -> std::io::Result<Box<dyn Read + '_>> {
        let digest: Digest = layer
            .digest
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}")))?;
        let file = self
            .runtime
            .block_on(self.mirror.blob_file(&self.route, &digest))
            .map_err(|e| std::io::Error::other(e.message))?;
        Ok(Box::new(FileCursor { file, pos: 0 }))
    }
}

/// Sequential reads over a shared file handle (positional, so handles can be shared).
struct FileCursor {
    file: Arc<File>,
    pos: u64,
}

impl Read for FileCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
