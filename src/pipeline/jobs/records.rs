//! What a job leaves on disk under `<storage.path>/patched/`: the original -> patched
//! record per upstream (`<upstream>/<original hex>`: the patched digest, its media type
//! and the platforms as JSON, one per line), the VEX referrers of a patched manifest
//! (`referrers/<patched hex>`), and the patched blobs and manifests, put into the store.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use super::flight::Key;
use super::JobOutcome;
use crate::distribution::Digest;
use crate::durable::write_atomically;
use crate::patch::referrer;
use crate::pipeline::patcher::PatchedImage;
use crate::store::{Store, StoredManifest};

pub(super) struct Records {
    pub dir: PathBuf,
    pub store: Arc<Store>,
}

impl Records {
    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(&key.0).join(key.1.hex())
    }

    fn referrer_path(&self, subject: &Digest) -> PathBuf {
        self.dir.join("referrers").join(subject.hex())
    }

    /// A patched result from an earlier run of the process: the digest, the media type,
    /// and (written since partial indexes) the platforms as JSON.
    pub async fn load(&self, key: &Key) -> Option<JobOutcome> {
        let text = tokio::fs::read_to_string(self.path(key)).await.ok()?;
        let mut lines = text.lines();
        let digest: Digest = lines.next()?.parse().ok()?;
        let media_type = lines.next()?.to_owned();
        let platforms = lines
            .next()
            .and_then(|line| serde_json::from_str(line).ok())
            .unwrap_or_default();
        Some(JobOutcome::Patched {
            digest,
            media_type,
            platforms,
        })
    }

    pub async fn save(&self, key: &Key, outcome: &JobOutcome) {
        let JobOutcome::Patched {
            digest,
            media_type,
            platforms,
        } = outcome
        else {
            return;
        };
        let path = self.path(key);
        let platforms = serde_json::to_string(platforms).unwrap_or_default();
        let text = format!("{digest}\n{media_type}\n{platforms}\n");
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record the patched image; it is patched again after a restart");
        }
    }

    /// Removes the record of `key`.
    pub fn forget(&self, key: &Key) {
        let _ = std::fs::remove_file(self.path(key));
    }

    /// Removes the records of `digest` under every upstream; true when there was one.
    pub fn forget_everywhere(&self, digest: &Digest) -> bool {
        let mut dropped = false;
        if let Ok(upstreams) = std::fs::read_dir(&self.dir) {
            for upstream in upstreams.flatten() {
                dropped |= std::fs::remove_file(upstream.path().join(digest.hex())).is_ok();
            }
        }
        dropped
    }

    /// Stores the VEX artifact and records it as a referrer of `subject`.
    pub async fn store_referrer(
        &self,
        subject: &Digest,
        artifact: referrer::Artifact,
    ) -> Result<(), String> {
        let store = self.store.clone();
        let blobs = artifact.blobs.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            for (digest, bytes) in &blobs {
                put_blob(&store, digest, bytes.len() as u64, &mut bytes.as_slice())?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;
        self.store
            .put_manifest(StoredManifest {
                digest: artifact.digest.clone(),
                media_type: crate::distribution::media_type::OCI_MANIFEST.to_owned(),
                bytes: artifact.manifest.into(),
            })
            .await
            .map_err(|e| e.to_string())?;
        let path = self.referrer_path(subject);
        // One line per referrer (the VEX document, signatures, attestations).
        let mut text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
        let line = artifact.digest.to_string();
        if text.lines().any(|l| l == line) {
            return Ok(());
        }
        text.push_str(&line);
        text.push('\n');
        tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("recording the VEX referrer: {e}"))
    }

    /// The referrers patchpull made for `subject` (a patched manifest): descriptors for a
    /// referrers index.
    pub async fn referrers(&self, subject: &Digest) -> Vec<serde_json::Value> {
        let Ok(text) = tokio::fs::read_to_string(self.referrer_path(subject)).await else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for line in text.lines() {
            let Ok(digest) = line.parse::<Digest>() else {
                continue;
            };
            if let Ok(Some(manifest)) = self.store.manifest(&digest).await {
                let artifact_type = artifact_type_of(&manifest.bytes);
                found.push(serde_json::json!({
                    "mediaType": manifest.media_type,
                    "digest": manifest.digest.to_string(),
                    "size": manifest.bytes.len(),
                    "artifactType": artifact_type,
                }));
            }
        }
        found
    }

    /// The stored referrer of `subject` whose artifact type is `artifact_type`.
    pub async fn attachment(
        &self,
        subject: &Digest,
        artifact_type: &str,
    ) -> Option<crate::mirror::ServedManifest> {
        let text = tokio::fs::read_to_string(self.referrer_path(subject))
            .await
            .ok()?;
        for line in text.lines() {
            let Ok(digest) = line.parse::<Digest>() else {
                continue;
            };
            if let Ok(Some(manifest)) = self.store.manifest(&digest).await {
                if artifact_type_of(&manifest.bytes) == artifact_type {
                    return Some(manifest);
                }
            }
        }
        None
    }

    /// Puts every new blob and manifest of `patched` into the store, verified.
    pub async fn store_patched(&self, patched: PatchedImage) -> Result<(), String> {
        let store = &self.store;
        let store_for_blobs = store.clone();
        let patched = tokio::task::spawn_blocking(move || -> Result<PatchedImage, String> {
            for platform in patched.patched() {
                let layer = &platform.layer;
                let mut file = std::fs::File::open(&layer.path)
                    .map_err(|e| format!("{}: {e}", layer.path.display()))?;
                put_blob(&store_for_blobs, &layer.digest, layer.size, &mut file)?;
                let config = &platform.image.config;
                put_blob(
                    &store_for_blobs,
                    &platform.image.config_digest,
                    config.len() as u64,
                    &mut config.as_slice(),
                )?;
            }
            Ok(patched)
        })
        .await
        .map_err(|e| e.to_string())??;
        for platform in patched.patched() {
            store
                .put_manifest(StoredManifest {
                    digest: platform.image.manifest_digest.clone(),
                    media_type: platform.image.manifest_media_type.clone(),
                    bytes: platform.image.manifest.clone().into(),
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        if let Some((bytes, digest, media_type)) = &patched.top {
            store
                .put_manifest(StoredManifest {
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                    bytes: bytes.clone().into(),
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn put_blob(store: &Store, digest: &Digest, size: u64, from: &mut dyn Read) -> Result<(), String> {
    if store.blob_size(digest).is_some() {
        return Ok(());
    }
    let mut writer = store.blob_writer(digest).map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = from.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        writer.write(&buffer[..n]).map_err(|e| e.to_string())?;
    }
    let size = writer.commit(Some(size)).map_err(|e| e.to_string())?;
    store.committed(digest, size);
    Ok(())
}

/// A referrer manifest's `artifactType` (the VEX document's for older records without one).
fn artifact_type_of(manifest: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(manifest)
        .ok()
        .and_then(|m| m["artifactType"].as_str().map(str::to_owned))
        .unwrap_or_else(|| referrer::VEX_ARTIFACT_TYPE.to_owned())
}
