//! The result of a standalone buildkitd, which has no image store patchpull can read: its
//! `image` exporter pushes the solved image to `patch.buildkit.export_registry`, and
//! patchpull reads the one new layer back from there. Every byte is checked: the config
//! against its digest, the layer blob against its digest and its uncompressed tar against
//! the diff_id the config names; the original's diff_ids must come first and unchanged.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::export::{self, ExportError};
use crate::distribution::Digest;
use crate::patch::layer::BuiltLayer;

/// Where a standalone buildkitd pushes, and patchpull reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRegistry {
    /// `host:port`.
    pub host: String,
    /// Plain HTTP (a registry on a private network).
    pub insecure: bool,
}

/// The repository solved images are pushed to; each under its own tag.
pub const REPOSITORY: &str = "patchpull/buildkit-export";
const MAX_CONFIG: u64 = 4 << 20;

impl ExportRegistry {
    /// The `image` exporter's attributes for pushing as `<host>/REPOSITORY:<tag>`.
    pub fn exporter_attrs(&self, tag: &str) -> BTreeMap<String, String> {
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "name".to_owned(),
            format!("{}/{REPOSITORY}:{tag}", self.host),
        );
        attrs.insert("push".to_owned(), "true".to_owned());
        attrs.insert("compression".to_owned(), "gzip".to_owned());
        attrs.insert("oci-mediatypes".to_owned(), "true".to_owned());
        if self.insecure {
            attrs.insert("registry.insecure".to_owned(), "true".to_owned());
        }
        attrs
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}/v2/{REPOSITORY}/{path}", self.host)
    }

    /// The patch layer of the image pushed as `tag`, written into `dir`.
    ///
    /// # Errors
    /// [`ExportError`]: the registry cannot be read, a digest does not verify, the base
    /// layers differ from the original's, or there is not exactly one new layer.
    pub async fn patch_layer(
        &self,
        client: &reqwest::Client,
        tag: &str,
        base_diff_ids: &[Digest],
        dir: &Path,
    ) -> Result<BuiltLayer, ExportError> {
        #[derive(serde::Deserialize)]
        struct Descriptor {
            #[serde(rename = "mediaType", default)]
            media_type: String,
            digest: String,
        }
        #[derive(serde::Deserialize)]
        struct Manifest {
            config: Descriptor,
            layers: Vec<Descriptor>,
        }
        #[derive(serde::Deserialize)]
        struct RootFs {
            diff_ids: Vec<String>,
        }
        #[derive(serde::Deserialize)]
        struct Config {
            rootfs: RootFs,
        }
        let manifest = self
            .get(
                client,
                &format!("manifests/{tag}"),
                "application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            )
            .await?;
        let manifest: Manifest = serde_json::from_slice(&read_limited(manifest, 1 << 20).await?)
            .map_err(|e| ExportError::Saved(format!("the pushed manifest: {e}")))?;
        let config_bytes = read_limited(
            self.get(client, &format!("blobs/{}", manifest.config.digest), "*/*")
                .await?,
            MAX_CONFIG,
        )
        .await?;
        check_digest(&config_bytes, &manifest.config.digest, "the pushed config")?;
        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|e| ExportError::Saved(format!("the pushed config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ExportError::Saved(format!(
                "{} layers but {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let at = export::new_layer(&config.rootfs.diff_ids, base_diff_ids)?;
        let layer = &manifest.layers[at];
        let blob = self
            .get(client, &format!("blobs/{}", layer.digest), "*/*")
            .await?;
        let tar_path = dir.join(format!("buildkit-layer-{tag}.tar"));
        let result = async {
            self::save_uncompressed(
                blob,
                &layer.media_type,
                &layer.digest,
                &config.rootfs.diff_ids[at],
                &tar_path,
            )
            .await?;
            let dir = dir.to_path_buf();
            let path = tar_path.clone();
            tokio::task::spawn_blocking(move || export::rewrite_tar(&path, &dir))
                .await
                .map_err(|e| ExportError::Layer(e.to_string()))?
        }
        .await;
        let _ = std::fs::remove_file(&tar_path);
        result
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        accept: &str,
    ) -> Result<reqwest::Response, ExportError> {
        let url = self.url(path);
        let response = client
            .get(&url)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| ExportError::Saved(format!("GET {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(ExportError::Saved(format!(
                "GET {url}: {}",
                response.status()
            )));
        }
        Ok(response)
    }
}

async fn read_limited(response: reqwest::Response, limit: u64) -> Result<Vec<u8>, ExportError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ExportError::Saved(format!("reading a response: {e}")))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(ExportError::Saved(format!(
                "a response larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn check_digest(bytes: &[u8], expected: &str, what: &str) -> Result<(), ExportError> {
    let actual = Digest::sha256_of(bytes).to_string();
    if actual != expected {
        return Err(ExportError::Layer(format!(
            "{what}: its bytes hash to {actual}, {expected} was expected"
        )));
    }
    Ok(())
}

/// Streams the layer blob to disk (checking its digest), then decompresses it into
/// `tar_path` (checking the diff_id).
async fn save_uncompressed(
    blob: reqwest::Response,
    media_type: &str,
    digest: &str,
    diff_id: &str,
    tar_path: &Path,
) -> Result<(), ExportError> {
    let blob_path = tar_path.with_extension("blob");
    let mut file = std::fs::File::create(&blob_path)?;
    let mut hasher = Sha256::new();
    let mut stream = blob.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ExportError::Saved(format!("reading the layer: {e}")))?;
        hasher.update(&chunk);
        file.write_all(&chunk)?;
    }
    drop(file);
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        let _ = std::fs::remove_file(&blob_path);
        return Err(ExportError::Layer(format!(
            "the layer blob hashes to {actual}, {digest} was expected"
        )));
    }
    let gzip = media_type.ends_with("gzip");
    let (blob, tar, diff_id) = (
        blob_path.clone(),
        tar_path.to_path_buf(),
        diff_id.to_owned(),
    );
    let decompressed = tokio::task::spawn_blocking(move || -> Result<(), ExportError> {
        let input = std::io::BufReader::new(std::fs::File::open(&blob)?);
        let mut reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(input))
        } else {
            Box::new(input)
        };
        let mut output = std::fs::File::create(&tar)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 16];
        loop {
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            output.write_all(&buffer[..n])?;
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != diff_id {
            return Err(ExportError::Layer(format!(
                "the layer's tar hashes to {actual}, the config says {diff_id}"
            )));
        }
        Ok(())
    })
    .await
    .map_err(|e| ExportError::Layer(e.to_string()))?;
    let _ = std::fs::remove_file(&blob_path);
    decompressed
}
