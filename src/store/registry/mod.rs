//! The backing-registry index (`storage.backend = "registry"`): what replicas share lives in
//! an existing OCI registry, under `storage.registry.repository_prefix`:
//!
//! ```text
//! <prefix>/<upstream>/<repository>      the patched content as blobs (patch layers, configs,
//!                                       patched manifests, VEX), and the entry below
//! <prefix>/index/<upstream>:sha256-<hex> the entry of original <hex>: an OCI manifest whose
//!                                       layers are that content (mounted from the
//!                                       repository above) and whose annotations say the
//!                                       patched digest, its media type, platforms and
//!                                       referrers (VEX, cosign signatures, attestations)
//! <prefix>/index/<upstream>:sha256-<hex>.entry
//!                                       the same entry, tagged by each manifest or blob
//!                                       <hex> it made or that one of its referrers is
//!                                       about: a replica asked for a blob, a manifest by
//!                                       digest, the referrers or the `.sig` of a patched
//!                                       image it never pulled (a client that pulled the
//!                                       tag through another replica) finds it there
//! ```
//!
//! Upstream blobs are not pushed: each replica keeps them in its local, size-bounded cache
//! (pass-through on a miss), so the backing registry holds only what patchpull made. The
//! entry is pushed last, after every blob it names: a replica that reads an entry can read
//! its content. Everything read back is verified against its digest before it is stored or
//! served; an entry that does not verify is a miss (the original is served).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};

use super::index::local::LocalIndex;
use super::index::{ContentDescriptor, IndexEntry, IndexError, IndexKey, PatchedIndex};
use super::{Store, StoredManifest};
use crate::distribution::reference::Reference;
use crate::distribution::Digest;
use crate::metrics::Metrics;
use crate::upstream::{BlobSource, Upstream, UpstreamError};

/// `artifactType` of an index entry.
pub const ENTRY_ARTIFACT_TYPE: &str = "application/vnd.patchpull.index-entry.v1+json";
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONFIG: &[u8] = b"{}";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ANNOTATION_ORIGINAL: &str = "dev.patchpull.original";
const ANNOTATION_PATCHED: &str = "dev.patchpull.patched";
const ANNOTATION_MEDIA_TYPE: &str = "dev.patchpull.media-type";
const ANNOTATION_PLATFORMS: &str = "dev.patchpull.platforms";
const ANNOTATION_REPOSITORY: &str = "dev.patchpull.repository";
const ANNOTATION_REFERRERS: &str = "dev.patchpull.referrers";
/// Marks a layer that is a manifest, with the manifest's media type.
const ANNOTATION_MANIFEST_TYPE: &str = "dev.patchpull.manifest-type";

pub struct RegistryIndex {
    local: LocalIndex,
    store: Arc<Store>,
    registry: Arc<Upstream>,
    prefix: String,
    /// The configured upstreams' names, for a forget that names no upstream.
    upstreams: Vec<String>,
    max_manifest_size: u64,
    metrics: Arc<Metrics>,
}

fn tag_of(original: &Digest) -> String {
    format!("{}-{}", original.algorithm().as_str(), original.hex())
}

/// The tag of an entry by a digest it made (or that one of its referrers is about).
fn digest_tag(digest: &Digest) -> String {
    format!("{}.entry", tag_of(digest))
}

/// Entry tags pushed at once.
const TAG_PUSHES: usize = 4;

/// What a client may ask a replica for by digest, each once: the patched manifest, every
/// piece of content and every referrer's subject.
fn digests_of(entry: &IndexEntry) -> Vec<&Digest> {
    let mut digests = vec![&entry.patched];
    let made = entry.content.iter().map(|c| &c.digest);
    for digest in made.chain(entry.referrers.iter().map(|(s, _)| s)) {
        if !digests.contains(&digest) {
            digests.push(digest);
        }
    }
    digests
}

impl RegistryIndex {
    pub fn new(
        local: LocalIndex,
        store: Arc<Store>,
        registry: Arc<Upstream>,
        prefix: String,
        upstreams: Vec<String>,
        metrics: Arc<Metrics>,
        max_manifest_size: u64,
    ) -> RegistryIndex {
        RegistryIndex {
            local,
            store,
            registry,
            prefix,
            upstreams,
            max_manifest_size,
            metrics,
        }
    }

    fn index_repository(&self, upstream: &str) -> String {
        format!("{}/index/{upstream}", self.prefix)
    }

    fn content_repository(&self, upstream: &str, repository: &str) -> String {
        format!("{}/{upstream}/{repository}", self.prefix)
    }

    fn backing<T>(&self, result: Result<T, UpstreamError>) -> Result<T, IndexError> {
        self.metrics.fleet.backing(result.is_ok());
        result.map_err(|e| IndexError::Backing(e.to_string()))
    }

    fn invalid(&self, reason: String) -> IndexError {
        self.metrics.fleet.backing(false);
        IndexError::Invalid(reason)
    }

    /// The bytes of one piece of content from the local store, to push.
    async fn source_of(&self, c: &ContentDescriptor) -> Result<BlobSource, IndexError> {
        if c.manifest_type.is_some() {
            let m = self
                .store
                .manifest(&c.digest)
                .await
                .map_err(|e| IndexError::Local(e.to_string()))?
                .ok_or_else(|| IndexError::Local(format!("{} left the store", c.digest)))?;
            return Ok(BlobSource::Bytes(m.bytes.clone()));
        }
        Ok(BlobSource::File(self.store.blob_path(&c.digest)))
    }

    fn entry_manifest(&self, key: &IndexKey, entry: &IndexEntry) -> Bytes {
        let layers: Vec<serde_json::Value> = entry
            .content
            .iter()
            .map(|c| {
                let mut d = serde_json::json!({
                    "mediaType": "application/octet-stream",
                    "digest": c.digest.to_string(),
                    "size": c.size,
                });
                if let Some(t) = &c.manifest_type {
                    d["annotations"] = serde_json::json!({ ANNOTATION_MANIFEST_TYPE: t });
                }
                d
            })
            .collect();
        let referrers: Vec<[String; 2]> = entry
            .referrers
            .iter()
            .map(|(s, r)| [s.to_string(), r.to_string()])
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ENTRY_ARTIFACT_TYPE,
            "config": {
                "mediaType": EMPTY_CONFIG_TYPE,
                "digest": Digest::sha256_of(EMPTY_CONFIG).to_string(),
                "size": EMPTY_CONFIG.len(),
            },
            "layers": layers,
            "annotations": {
                ANNOTATION_ORIGINAL: key.original.to_string(),
                ANNOTATION_PATCHED: entry.patched.to_string(),
                ANNOTATION_MEDIA_TYPE: entry.media_type,
                ANNOTATION_PLATFORMS: entry.platforms,
                ANNOTATION_REPOSITORY: entry.repository,
                ANNOTATION_REFERRERS: serde_json::to_string(&referrers).unwrap_or_default(),
            },
        });
        Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default())
    }

    async fn push_digest_tag(
        &self,
        repository: &str,
        digest: &Digest,
        manifest: Bytes,
    ) -> Result<(), UpstreamError> {
        let tag = Reference::Tag(digest_tag(digest));
        self.registry
            .push_manifest(repository, &tag, OCI_MANIFEST, manifest)
            .await
            .map(|_| ())
    }

    fn parse_entry(&self, key: &IndexKey, bytes: &[u8]) -> Result<IndexEntry, IndexError> {
        let bad = |why: &str| self.invalid(format!("index entry of {}: {why}", key.original));
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        if doc["artifactType"] != ENTRY_ARTIFACT_TYPE {
            return Err(bad("not a patchpull index entry"));
        }
        let annotation = |name: &str| doc["annotations"][name].as_str().unwrap_or_default();
        if annotation(ANNOTATION_ORIGINAL) != key.original.to_string() {
            return Err(bad("it names another original"));
        }
        let patched: Digest = annotation(ANNOTATION_PATCHED)
            .parse()
            .map_err(|_| bad("no patched digest"))?;
        let mut content = Vec::new();
        for layer in doc["layers"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let digest: Digest = layer["digest"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(|_| bad("a layer without a digest"))?;
            let size = layer["size"]
                .as_u64()
                .ok_or_else(|| bad("a layer without a size"))?;
            let manifest_type = layer["annotations"][ANNOTATION_MANIFEST_TYPE]
                .as_str()
                .map(str::to_owned);
            content.push(ContentDescriptor {
                digest,
                size,
                manifest_type,
            });
        }
        if !content.iter().any(|c| c.digest == patched) {
            return Err(bad("its content lacks the patched manifest"));
        }
        let pairs: Vec<[String; 2]> =
            serde_json::from_str(annotation(ANNOTATION_REFERRERS)).unwrap_or_default();
        let mut referrers = Vec::new();
        for [s, r] in pairs {
            match (s.parse(), r.parse()) {
                (Ok(s), Ok(r)) => referrers.push((s, r)),
                _ => return Err(bad("a referrer that is not a digest")),
            }
        }
        Ok(IndexEntry {
            patched,
            media_type: annotation(ANNOTATION_MEDIA_TYPE).to_owned(),
            platforms: annotation(ANNOTATION_PLATFORMS).to_owned(),
            repository: annotation(ANNOTATION_REPOSITORY).to_owned(),
            content,
            referrers,
        })
    }

    async fn fetch_remote(&self, key: &IndexKey) -> Result<Option<IndexEntry>, IndexError> {
        let repository = self.index_repository(&key.upstream);
        let reference = Reference::Tag(tag_of(&key.original));
        match self
            .registry
            .get_manifest(&repository, &reference, self.max_manifest_size)
            .await
        {
            Ok(fetched) => {
                self.metrics.fleet.backing(true);
                self.parse_entry(key, &fetched.bytes).map(Some)
            }
            Err(UpstreamError::NotFound { .. }) => {
                self.metrics.fleet.backing(true);
                Ok(None)
            }
            Err(e) => self.backing(Err(e)),
        }
    }

    /// Fetches one blob of `repository` into the local store, verified against `c`.
    async fn fetch_content(
        &self,
        repository: &str,
        c: &ContentDescriptor,
    ) -> Result<(), IndexError> {
        if let Some(media_type) = &c.manifest_type {
            if self.store.blob_size(&c.digest).is_some() {
                return Ok(());
            }
            if c.size > self.max_manifest_size {
                return Err(self.invalid(format!("manifest {} is too large", c.digest)));
            }
            let (response, _) =
                self.backing(self.registry.get_blob(repository, &c.digest, 0).await)?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| IndexError::Backing(e.to_string()))?;
            if !c.digest.verifies(&bytes) || bytes.len() as u64 != c.size {
                return Err(self.invalid(format!("manifest {} does not verify", c.digest)));
            }
            self.store
                .put_manifest(StoredManifest {
                    digest: c.digest.clone(),
                    media_type: media_type.clone(),
                    bytes,
                })
                .await
                .map_err(|e| IndexError::Local(e.to_string()))?;
            return Ok(());
        }
        if self.store.blob_size(&c.digest).is_some() {
            return Ok(());
        }
        let (response, _) = self.backing(self.registry.get_blob(repository, &c.digest, 0).await)?;
        let mut writer = self
            .store
            .blob_writer(&c.digest)
            .map_err(|e| IndexError::Local(e.to_string()))?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| IndexError::Backing(e.to_string()))?;
            if writer.written() + chunk.len() as u64 > c.size {
                return Err(self.invalid(format!("blob {} is longer than announced", c.digest)));
            }
            writer = tokio::task::spawn_blocking(move || writer.write(&chunk).map(|()| writer))
                .await
                .map_err(|e| IndexError::Local(e.to_string()))?
                .map_err(|e| IndexError::Local(e.to_string()))?;
        }
        let size = c.size;
        // The commit checks the size and the digest: a blob that does not verify is dropped.
        let committed = tokio::task::spawn_blocking(move || writer.commit(Some(size)))
            .await
            .map_err(|e| IndexError::Local(e.to_string()))?
            .map_err(|e| self.invalid(format!("blob {}: {e}", c.digest)))?;
        self.store.committed(&c.digest, committed);
        Ok(())
    }
}

impl PatchedIndex for RegistryIndex {
    fn get<'a>(
        &'a self,
        key: &'a IndexKey,
    ) -> BoxFuture<'a, Result<Option<IndexEntry>, IndexError>> {
        async move {
            if let Some(entry) = self.local.get(key).await? {
                return Ok(Some(entry));
            }
            self.fetch_remote(key).await
        }
        .boxed()
    }

    fn materialize<'a>(
        &'a self,
        key: &'a IndexKey,
        entry: &'a IndexEntry,
    ) -> BoxFuture<'a, Result<(), IndexError>> {
        async move {
            let repository = self.index_repository(&key.upstream);
            for c in &entry.content {
                self.fetch_content(&repository, c).await?;
            }
            for (subject, referrer) in &entry.referrers {
                self.local.add_referrer(subject, referrer).await?;
            }
            self.local.put(key, entry).await
        }
        .boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a IndexKey,
        entry: &'a IndexEntry,
    ) -> BoxFuture<'a, Result<(), IndexError>> {
        async move {
            let content_repo = self.content_repository(&key.upstream, &entry.repository);
            let index_repo = self.index_repository(&key.upstream);
            let empty = ContentDescriptor {
                digest: Digest::sha256_of(EMPTY_CONFIG),
                size: EMPTY_CONFIG.len() as u64,
                manifest_type: None,
            };
            for c in entry.content.iter().chain(std::iter::once(&empty)) {
                let source = if c.digest == empty.digest {
                    BlobSource::Bytes(Bytes::from_static(EMPTY_CONFIG))
                } else {
                    self.source_of(c).await?
                };
                self.backing(
                    self.registry
                        .push_blob(&content_repo, &c.digest, c.size, source.clone(), None)
                        .await,
                )?;
                self.backing(
                    self.registry
                        .push_blob(&index_repo, &c.digest, c.size, source, Some(&content_repo))
                        .await,
                )?;
            }
            let manifest = self.entry_manifest(key, entry);
            let tag = Reference::Tag(tag_of(&key.original));
            for repository in [&content_repo, &index_repo] {
                self.backing(
                    self.registry
                        .push_manifest(repository, &tag, OCI_MANIFEST, manifest.clone())
                        .await,
                )?;
            }
            // After the entry itself, so that a digest tag always names a readable entry.
            for batch in digests_of(entry).chunks(TAG_PUSHES) {
                let mut pushes = Vec::with_capacity(batch.len());
                for digest in batch {
                    pushes.push(self.push_digest_tag(&index_repo, digest, manifest.clone()));
                }
                for pushed in futures_util::future::join_all(pushes).await {
                    self.backing(pushed)?;
                }
            }
            let local = IndexEntry {
                content: Vec::new(),
                ..entry.clone()
            };
            self.local.put(key, &local).await
        }
        .boxed()
    }

    fn list<'a>(&'a self, upstream: &'a str) -> BoxFuture<'a, Result<Vec<Digest>, IndexError>> {
        self.local.list(upstream)
    }

    fn forget(&self, key: &IndexKey) {
        self.local.forget(key);
    }

    fn forget_everywhere<'a>(&'a self, original: &'a Digest) -> BoxFuture<'a, bool> {
        async move {
            let mut dropped = self.local.remove_everywhere(original);
            for upstream in &self.upstreams {
                let repository = self.index_repository(upstream);
                let tag = Reference::Tag(tag_of(original));
                let head = self
                    .registry
                    .head_manifest(&repository, &tag, self.max_manifest_size)
                    .await;
                let Ok((head, _)) = head else { continue };
                match self.registry.delete_manifest(&repository, &head.digest).await {
                    Ok(deleted) => dropped |= deleted,
                    Err(error) => {
                        tracing::warn!(%error, %original, "cannot delete the shared index entry; other replicas keep serving it");
                    }
                }
            }
            dropped
        }
        .boxed()
    }

    fn add_referrer<'a>(
        &'a self,
        subject: &'a Digest,
        referrer: &'a Digest,
    ) -> BoxFuture<'a, Result<(), IndexError>> {
        self.local.add_referrer(subject, referrer)
    }

    fn referrers<'a>(&'a self, subject: &'a Digest) -> BoxFuture<'a, Vec<Digest>> {
        self.local.referrers(subject)
    }

    fn find_by_digest<'a>(
        &'a self,
        upstream: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<IndexKey>, IndexError>> {
        async move {
            let repository = self.index_repository(upstream);
            let reference = Reference::Tag(digest_tag(subject));
            let fetched = match self
                .registry
                .get_manifest(&repository, &reference, self.max_manifest_size)
                .await
            {
                Ok(fetched) => fetched,
                Err(UpstreamError::NotFound { .. }) => {
                    self.metrics.fleet.backing(true);
                    return Ok(None);
                }
                Err(e) => return self.backing(Err(e)),
            };
            self.metrics.fleet.backing(true);
            let original = serde_json::from_slice::<serde_json::Value>(&fetched.bytes)
                .ok()
                .and_then(|doc| {
                    doc["annotations"][ANNOTATION_ORIGINAL]
                        .as_str()?
                        .parse()
                        .ok()
                })
                .ok_or_else(|| self.invalid(format!("the entry of {subject} names no original")))?;
            let key = IndexKey {
                upstream: upstream.to_owned(),
                original,
            };
            // The same checks as an entry read by its original, and it must be about
            // `subject`: a tag moved onto another entry is a miss, not that entry.
            let entry = self.parse_entry(&key, &fetched.bytes)?;
            if !digests_of(&entry).contains(&subject) {
                return Err(self.invalid(format!("the entry tagged by {subject} is not about it")));
            }
            Ok(Some(key))
        }
        .boxed()
    }
}
