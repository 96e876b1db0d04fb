//! What a job leaves behind: the patched blobs and manifests, put into the store, and the
//! original -> patched entry and VEX referrers, put into the index (`store::index`: files
//! under `<storage.path>/patched/`, or the backing registry replicas share).

use std::io::Read;
use std::sync::Arc;

use super::flight::Key;
use super::JobOutcome;
use crate::distribution::Digest;
use crate::patch::referrer;
use crate::pipeline::patcher::PatchedImage;
use crate::store::index::{ContentDescriptor, IndexEntry, IndexError, IndexKey, PatchedIndex};
use crate::store::{Store, StoredManifest};

pub(super) struct Records {
    pub index: Arc<dyn PatchedIndex>,
    pub store: Arc<Store>,
}

fn index_key(key: &Key) -> IndexKey {
    IndexKey {
        upstream: key.0.clone(),
        original: key.1.clone(),
    }
}

/// The outcome an index entry stands for.
pub(super) fn outcome_of(entry: &IndexEntry) -> JobOutcome {
    JobOutcome::Patched {
        digest: entry.patched.clone(),
        media_type: entry.media_type.clone(),
        platforms: serde_json::from_str(&entry.platforms).unwrap_or_default(),
    }
}

impl Records {
    /// The index entry for `key` (written by an earlier run or, over a backing registry,
    /// by any replica). An index that cannot answer is a miss: the pull is served as if
    /// nothing were patched yet, never a half-known answer.
    pub async fn load(&self, key: &Key) -> Option<IndexEntry> {
        match self.index.get(&index_key(key)).await {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(%error, upstream = %key.0, digest = %key.1, "the patched-image index cannot be read; treated as not patched");
                None
            }
        }
    }

    /// Fetches the content of an entry another replica made into the local store.
    pub async fn materialize(&self, key: &Key, entry: &IndexEntry) -> Result<(), IndexError> {
        self.index.materialize(&index_key(key), entry).await
    }

    /// Records `outcome` (a patched one) in the index, naming `made` (in the store) as its
    /// content and `referrers` as its referrers (VEX, signatures, attestations). A local record that cannot be written
    /// costs a re-patch after a restart and is only logged; a backing registry that refuses
    /// it fails the job (other replicas could not read it).
    pub async fn save(
        &self,
        key: &Key,
        outcome: &JobOutcome,
        repository: &str,
        made: &[Digest],
        referrers: Vec<(Digest, Digest)>,
    ) -> Result<(), String> {
        let JobOutcome::Patched {
            digest,
            media_type,
            platforms,
        } = outcome
        else {
            return Ok(());
        };
        let mut content = Vec::new();
        for d in made {
            if let Some(m) = self.store.manifest(d).await.map_err(|e| e.to_string())? {
                content.push(ContentDescriptor {
                    digest: d.clone(),
                    size: m.bytes.len() as u64,
                    manifest_type: Some(m.media_type.clone()),
                });
            } else if let Some(size) = self.store.blob_size(d) {
                content.push(ContentDescriptor {
                    digest: d.clone(),
                    size,
                    manifest_type: None,
                });
            } else {
                return Err(format!("{d} left the store before it was recorded"));
            }
        }
        let entry = IndexEntry {
            patched: digest.clone(),
            media_type: media_type.clone(),
            platforms: serde_json::to_string(platforms).unwrap_or_default(),
            repository: repository.to_owned(),
            content,
            referrers,
        };
        match self.index.put(&index_key(key), &entry).await {
            Ok(()) => Ok(()),
            Err(IndexError::Local(e)) => {
                tracing::warn!(error = %e, "cannot record the patched image; it is patched again after a restart");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The original whose shared entry `subject` belongs to, behind `route`'s upstream; a
    /// backing registry that cannot say is a miss.
    pub async fn find_by_digest(
        &self,
        route: &crate::upstream::Route,
        subject: &Digest,
    ) -> Option<Digest> {
        match self
            .index
            .find_by_digest(route.upstream.name(), subject)
            .await
        {
            Ok(key) => key.map(|k| k.original),
            Err(error) => {
                tracing::warn!(%error, %subject, "the backing registry cannot say which patched image this is; treated as none");
                None
            }
        }
    }

    /// Removes the record of `key` kept by this process.
    pub fn forget(&self, key: &Key) {
        self.index.forget(&index_key(key));
    }

    /// Removes the records of `digest` under every upstream; true when there was one.
    pub async fn forget_everywhere(&self, digest: &Digest) -> bool {
        self.index.forget_everywhere(digest).await
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
        self.index
            .add_referrer(subject, &artifact.digest)
            .await
            .map_err(|e| e.to_string())
    }

    /// The referrers patchpull made for `subject` (a patched manifest): descriptors for a
    /// referrers index.
    pub async fn referrers(&self, subject: &Digest) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        for digest in self.index.referrers(subject).await {
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
        for digest in self.index.referrers(subject).await {
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
