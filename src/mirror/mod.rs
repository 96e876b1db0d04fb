//! The pull-through mirror: the OCI pull API's semantics over the upstream allowlist and
//! the store. Tags resolve with a HEAD upstream and are served from a tag cache for their
//! TTL (and past it while upstream refuses or is down); content by digest is cached for
//! good. `server` calls one method here per request; `pipeline` reads images through it
//! (platform images, their layer source) to patch them. It patches nothing itself.

pub mod blob;
mod buffers;
pub mod image;
mod scope;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::ops::compute::Op;

use crate::config::Config;
use crate::distribution::media_type::{self, Accept};
use crate::distribution::{Digest, ErrorCode, Reference};
use crate::error::ApiError;
use crate::metrics::{CacheKind, CacheResult, Metrics};
use crate::store::{Store, StoredManifest};
use crate::upstream::{Allowlist, ManifestHead, Route, UpstreamError};

pub use blob::{BlobFills, BlobHandle};
use scope::{Kind, ScopeKey, Scopes};

/// How many tags the tag cache remembers.
const TAG_CACHE_ENTRIES: u64 = 100_000;
/// Manifest downloads in flight that concurrent requests can join.
const MANIFEST_FETCHES: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TagKey {
    upstream: String,
    repository: String,
    tag: String,
}

#[derive(Clone, Debug)]
struct TagEntry {
    head: ManifestHead,
    checked: Instant,
}

pub struct Mirror {
    allowlist: Allowlist,
    store: Arc<Store>,
    tags: moka::future::Cache<TagKey, TagEntry>,
    blobs: BlobFills,
    /// What each upstream and repository may read from the shared store.
    scopes: Arc<Scopes>,
    /// Single flight of manifest downloads: one upstream GET per (upstream, repository,
    /// digest) however many clients ask at once. An entry lives while its download runs.
    manifest_fetches: moka::future::Cache<ScopeKey, ServedManifest>,
    max_manifest_size: u64,
    metrics: Arc<Metrics>,
    /// What the tag TTL goes by.
    clock: crate::clock::Clock,
}

/// A manifest as served: exact bytes and the media type.
pub type ServedManifest = Arc<StoredManifest>;

/// Answer for HEAD on a manifest: what GET would send, without the bytes when avoidable.
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A page of `tags/list`.
pub struct TagPage {
    pub tags: Vec<String>,
    /// The `last` value for the next page when there are more tags.
    pub next_last: Option<String>,
}

impl Mirror {
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Mirror, UpstreamError> {
        let allowlist =
            Allowlist::with_clock(&config.upstream, metrics.clone(), config.clock.clone())?;
        let tags = moka::future::Cache::builder()
            .max_capacity(TAG_CACHE_ENTRIES)
            .build();
        let scopes = Scopes::new(&config.storage.path, config.storage.max_manifest_size);
        Ok(Mirror {
            allowlist,
            blobs: BlobFills::new(
                store.clone(),
                scopes.clone(),
                config.storage.blob_fill_timeout,
                config.server.buffer_memory,
                metrics.clone(),
            ),
            store,
            tags,
            scopes,
            manifest_fetches: moka::future::Cache::builder()
                .max_capacity(MANIFEST_FETCHES)
                .build(),
            max_manifest_size: config.storage.max_manifest_size,
            metrics,
            clock: config.clock.clone(),
        })
    }

    pub fn route(&self, name: &str, ns: Option<&str>) -> Result<Route, ApiError> {
        self.allowlist.route(name, ns)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Lets downloads in progress finish within `grace`, then cancels the rest.
    pub async fn shutdown(&self, grace: Duration) {
        self.blobs.shutdown(grace).await;
    }

    /// Resolves a tag to the manifest upstream has for it now: from the tag cache within the
    /// TTL, else HEAD upstream (one request per tag at a time); when upstream is rate
    /// limiting or unreachable, the last known answer is served.
    async fn resolve_tag(&self, route: &Route, tag: &str) -> Result<ManifestHead, ApiError> {
        let key = TagKey {
            upstream: route.upstream.name().to_string(),
            repository: route.repository.clone(),
            tag: tag.to_string(),
        };
        let ttl = route.upstream.config().tag_ttl;
        if let Some(entry) = self.tags.get(&key).await {
            if self.clock.since(entry.checked) < ttl {
                self.metrics.cache(CacheKind::Tag, CacheResult::Hit);
                return Ok(entry.head);
            }
        }
        let reference = Reference::Tag(tag.to_string());
        let outcome = self
            .tags
            .entry(key)
            .and_try_compute_with(|existing| async {
                // Another request may have refreshed it while this one waited its turn.
                if let Some(e) = &existing {
                    if self.clock.since(e.value().checked) < ttl {
                        self.metrics.cache(CacheKind::Tag, CacheResult::Hit);
                        return Ok(Op::Nop);
                    }
                }
                match route
                    .upstream
                    .head_manifest(&route.repository, &reference, self.max_manifest_size)
                    .await
                {
                    Ok((head, fetched)) => {
                        self.metrics.cache(CacheKind::Tag, CacheResult::Miss);
                        // Upstream just said this repository has it.
                        self.scopes.grant(route, &head.digest).await;
                        if let Some(m) = fetched {
                            self.store
                                .put_manifest(StoredManifest {
                                    digest: m.digest,
                                    media_type: m.media_type,
                                    bytes: m.bytes,
                                })
                                .await?;
                        }
                        Ok(Op::Put(TagEntry {
                            head,
                            checked: self.clock.now(),
                        }))
                    }
                    Err(UpstreamError::NotFound { .. }) if existing.is_some() => {
                        // The tag is gone upstream: forget it, then report 404 below.
                        Ok(Op::Remove)
                    }
                    Err(
                        e @ (UpstreamError::RateLimited { .. } | UpstreamError::Unavailable { .. }),
                    ) if existing.is_some() => {
                        tracing::info!(error = %e, tag, "serving the cached tag while upstream cannot answer");
                        self.metrics.cache(CacheKind::Tag, CacheResult::Stale);
                        let stale = existing.map(|e| e.into_value());
                        Ok(stale.map_or(Op::Nop, |s| {
                            Op::Put(TagEntry {
                                head: s.head,
                                // Ask again after a short pause, not on every request.
                                checked: self.clock.now() - ttl + ttl.min(Duration::from_secs(5)),
                            })
                        }))
                    }
                    Err(e) => Err(e.into_api(ErrorCode::ManifestUnknown)),
                }
            })
            .await
            .map_err(|e: ApiError| e)?;
        match outcome.into_entry() {
            Some(entry) => Ok(entry.into_value().head),
            None => Err(ApiError::upstream(
                ErrorCode::ManifestUnknown,
                http::StatusCode::NOT_FOUND,
                format!(
                    "upstream {} has no manifest {}:{tag}",
                    route.upstream.name(),
                    route.repository
                ),
            )),
        }
    }

    /// A manifest by digest: store (when this upstream and repository may read it), else
    /// upstream (verified, then stored for good), one download for all who ask at once.
    async fn manifest_by_digest(
        &self,
        route: &Route,
        digest: &Digest,
    ) -> Result<ServedManifest, ApiError> {
        if let Some(m) = self.store.manifest(digest).await? {
            self.scopes.ensure(route, digest, Kind::Manifest).await?;
            self.metrics.cache(CacheKind::Manifest, CacheResult::Hit);
            return Ok(m);
        }
        let key = ScopeKey::new(route, digest);
        let fetched = self
            .manifest_fetches
            .try_get_with(key, async {
                // A download of this key that finished just before this one began.
                if let Some(m) = self.store.manifest(digest).await? {
                    self.scopes.ensure(route, digest, Kind::Manifest).await?;
                    return Ok(m);
                }
                self.metrics.cache(CacheKind::Manifest, CacheResult::Miss);
                let fetched = route
                    .upstream
                    .get_manifest(
                        &route.repository,
                        &Reference::Digest(digest.clone()),
                        self.max_manifest_size,
                    )
                    .await
                    .map_err(|e| e.into_api(ErrorCode::ManifestUnknown))?;
                let stored = self
                    .store
                    .put_manifest(StoredManifest {
                        digest: fetched.digest,
                        media_type: fetched.media_type,
                        bytes: fetched.bytes,
                    })
                    .await?;
                self.scopes.grant(route, digest).await;
                Ok::<_, ApiError>(stored)
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone());
        // Done (or failed): later requests read the store or try again.
        self.manifest_fetches.invalidate(&key).await;
        fetched
    }

    /// GET a manifest. A tag resolves through the tag cache; when the client does not accept
    /// an index, the linux/amd64 manifest from it is served, as Docker Hub does.
    pub async fn manifest(
        &self,
        route: &Route,
        reference: &Reference,
        accept: &Accept,
    ) -> Result<ServedManifest, ApiError> {
        match reference {
            Reference::Digest(d) => self.manifest_by_digest(route, d).await,
            Reference::Tag(tag) => {
                let head = self.resolve_tag(route, tag).await?;
                let manifest = self.manifest_by_digest(route, &head.digest).await?;
                if accept.allows(&manifest.media_type) {
                    return Ok(manifest);
                }
                let digest = self.negotiate(&manifest, accept)?;
                self.manifest_by_digest(route, &digest).await
            }
        }
    }

    /// HEAD a manifest: what GET would send. The size and type are those of the verified
    /// manifest (fetched once, then stored), never upstream's unverified headers, so a HEAD
    /// by tag never announces a length the GET then contradicts.
    pub async fn manifest_info(
        &self,
        route: &Route,
        reference: &Reference,
        accept: &Accept,
    ) -> Result<ManifestInfo, ApiError> {
        let m = self.manifest(route, reference, accept).await?;
        Ok(ManifestInfo {
            digest: m.digest.clone(),
            media_type: m.media_type.clone(),
            size: m.bytes.len() as u64,
        })
    }

    /// Picks the platform manifest a client that refuses indexes gets.
    pub fn negotiate(
        &self,
        manifest: &StoredManifest,
        accept: &Accept,
    ) -> Result<Digest, ApiError> {
        let refuse = || {
            ApiError::new(
                ErrorCode::ManifestUnknown,
                format!(
                    "manifest {} is {}, which the request's Accept header does not include",
                    manifest.digest, manifest.media_type
                ),
            )
        };
        if !media_type::is_index(&manifest.media_type) {
            return Err(refuse());
        }
        #[derive(serde::Deserialize)]
        struct Index {
            manifests: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "mediaType")]
            media_type: String,
            digest: String,
            platform: Option<Platform>,
        }
        #[derive(serde::Deserialize)]
        struct Platform {
            architecture: String,
            os: String,
        }
        let index: Index = serde_json::from_slice(&manifest.bytes).map_err(|_| refuse())?;
        index
            .manifests
            .iter()
            .find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                    && accept.allows(&e.media_type)
            })
            .and_then(|e| e.digest.parse::<Digest>().ok())
            .ok_or_else(refuse)
    }

    /// Records content patchpull made from `original` (an image of `route`'s upstream):
    /// readable through that upstream wherever `original` is, also after a restart.
    ///
    /// # Errors
    /// The record cannot be written.
    pub async fn record_made(
        &self,
        route: &Route,
        original: &Digest,
        made: &[Digest],
    ) -> Result<(), String> {
        self.scopes.record_made(route, original, made).await
    }

    /// Ok when `route` may read the stored `digest` (see [`scope`]).
    ///
    /// # Errors
    /// The upstream does not have it there (`404`) or cannot say.
    pub async fn ensure_readable(&self, route: &Route, digest: &Digest) -> Result<(), ApiError> {
        self.scopes.ensure(route, digest, Kind::Manifest).await
    }

    pub async fn blob_size(&self, route: &Route, digest: &Digest) -> Result<u64, ApiError> {
        self.blobs.size(route, digest).await
    }

    pub async fn open_blob(&self, route: &Route, digest: &Digest) -> Result<BlobHandle, ApiError> {
        self.blobs.open(route, digest).await
    }

    /// A page of upstream's tags, sorted lexically, after `last`, at most `n`.
    pub async fn tags(
        &self,
        route: &Route,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<TagPage, ApiError> {
        let mut tags = route
            .upstream
            .tags(&route.repository)
            .await
            .map_err(|e| e.into_api(ErrorCode::NameUnknown))?;
        tags.sort();
        tags.dedup();
        let start = match last {
            Some(last) => tags.partition_point(|t| t.as_str() <= last),
            None => 0,
        };
        let mut page: Vec<String> = tags[start..].to_vec();
        let mut next_last = None;
        if let Some(n) = n {
            if page.len() > n {
                page.truncate(n);
                next_last = page.last().cloned();
            }
        }
        Ok(TagPage {
            tags: page,
            next_last,
        })
    }

    /// Upstream's referrers of `subject`, or an empty index when it has none.
    pub async fn referrers(
        &self,
        route: &Route,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<(Bytes, bool), ApiError> {
        let found = route
            .upstream
            .referrers(&route.repository, subject, artifact_type)
            .await
            .map_err(|e| e.into_api(ErrorCode::ManifestUnknown))?;
        match found {
            Some(r) if r.filters_applied || artifact_type.is_none() => {
                Ok((r.bytes, r.filters_applied))
            }
            Some(r) => Ok((
                filter_referrers(&r.bytes, artifact_type.unwrap_or_default())?,
                true,
            )),
            None => Ok((empty_index(), artifact_type.is_some())),
        }
    }
}

fn empty_index() -> Bytes {
    Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#)
}

/// Applies an `artifactType` filter upstream did not apply.
pub(crate) fn filter_referrers(bytes: &[u8], artifact_type: &str) -> Result<Bytes, ApiError> {
    let mut index: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::upstream(
            ErrorCode::Unknown,
            http::StatusCode::BAD_GATEWAY,
            format!("upstream referrers index is not JSON: {e}"),
        )
    })?;
    if let Some(list) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        list.retain(|m| m.get("artifactType").and_then(|t| t.as_str()) == Some(artifact_type));
    }
    Ok(Bytes::from(serde_json::to_vec(&index).unwrap_or_default()))
}
