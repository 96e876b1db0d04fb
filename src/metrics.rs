//! Prometheus metrics, owned in one struct and registered under the `patchpull` prefix.
//! Label values come from closed sets (routes, outcomes, configured upstream names),
//! never from repositories, tags or digests.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Route {
    Base,
    Manifest,
    Blob,
    Tags,
    Referrers,
    Upload,
    Health,
    Metrics,
    Admin,
    Other,
}

/// Request methods as a closed label set (no allocation per request).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    GET,
    HEAD,
    PUT,
    POST,
    DELETE,
    PATCH,
    OTHER,
}

impl From<&http::Method> for HttpMethod {
    fn from(m: &http::Method) -> HttpMethod {
        match *m {
            http::Method::GET => HttpMethod::GET,
            http::Method::HEAD => HttpMethod::HEAD,
            http::Method::PUT => HttpMethod::PUT,
            http::Method::POST => HttpMethod::POST,
            http::Method::DELETE => HttpMethod::DELETE,
            http::Method::PATCH => HttpMethod::PATCH,
            _ => HttpMethod::OTHER,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Route,
    pub method: HttpMethod,
    pub status: u16,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CacheKind {
    Tag,
    Manifest,
    Blob,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CacheResult {
    Hit,
    Miss,
    /// Served from cache because upstream could not be asked (429, down).
    Stale,
    /// Joined a download already in flight.
    Joined,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub kind: CacheKind,
    pub result: CacheResult,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum UpstreamOp {
    HeadManifest,
    GetManifest,
    HeadBlob,
    GetBlob,
    Tags,
    Referrers,
    Token,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    pub op: UpstreamOp,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub route: Route,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum JobOutcomeLabel {
    Patched,
    /// Patched, but some platforms of the index failed and kept their originals.
    Partial,
    Unchanged,
    Failed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub outcome: JobOutcomeLabel,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PatchStage {
    /// Reading the package database and planning.
    Plan,
    /// Fetching the packages, building the layer (scripts included) and verifying it.
    Build,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: PatchStage,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum TagServed {
    /// The patched image.
    Patched,
    /// The original, because nothing needed patching.
    Unchanged,
    /// The original (or 503 when fail-closed) while no patched image exists: the patch
    /// runs, failed or could not be queued.
    Fallback,
    /// `<tag>-original`, or patching is off.
    Original,
}

/// Why a tag pull got the original (or a 503 when fail-closed): a closed set, so that the
/// series stay few whatever the errors say.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum FallbackReason {
    /// The patch is running (and `patch.wait_timeout` passed, or the mode does not wait).
    PatchRunning,
    /// No job could be queued.
    QueueFull,
    /// The patched image was evicted from the store; it is made again.
    Evicted,
    /// Maintainer scripts must run and this host cannot run the sandbox (and no BuildKit
    /// took the image).
    SandboxUnavailable,
    /// Maintainer scripts must run and cannot for the image's sake: no `/bin/sh`, another
    /// architecture, apk scripts.
    ScriptsCannotRun,
    /// The sandbox ran and a maintainer script (or its setup) failed.
    ScriptFailed,
    /// The BuildKit engine failed.
    BuildkitFailed,
    /// Reading the image or a package from upstream failed.
    UpstreamFailed,
    /// Any other patch failure (plan, verification, store).
    PatchFailed,
    /// `require_signature`: the original has no cosign signature upstream.
    SignatureMissing,
    /// `require_signature`: the original's signature does not verify with the key, or
    /// names another image.
    SignatureInvalid,
}

impl FallbackReason {
    /// Whether the original was refused by `require_signature` (not a patch failure).
    pub fn is_unverified(self) -> bool {
        matches!(
            self,
            FallbackReason::SignatureMissing | FallbackReason::SignatureInvalid
        )
    }
}

/// `served`, and `reason` for [`TagServed::Fallback`] only.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct TagLabels {
    pub served: TagServed,
    pub reason: Option<FallbackReason>,
}

impl EncodeLabelSet for TagLabels {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("served", self.served).encode(encoder.encode_label())?;
        if let Some(reason) = self.reason {
            ("reason", reason).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

/// The last answer an upstream gave, for the status page.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamSeen {
    /// HTTP status; 0 when no connection could be made.
    pub status: u16,
    pub at: std::time::Instant,
}

pub struct Metrics {
    pub store_used_bytes: prometheus_client::metrics::gauge::Gauge,
    pub store_max_bytes: prometheus_client::metrics::gauge::Gauge,
    /// Last answer per configured upstream name (bounded by the config).
    upstream_seen: std::sync::Mutex<std::collections::BTreeMap<String, UpstreamSeen>>,
    pub patch_stage_duration: Family<StageLabels, Histogram>,
    pub vulnerabilities_fixed: Counter,
    pub patch_jobs: Family<JobLabels, Counter>,
    pub patch_duration: Histogram,
    pub patch_jobs_active: prometheus_client::metrics::gauge::Gauge,
    pub tag_pulls: Family<TagLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub cache: Family<CacheLabels, Counter>,
    pub upstream_latency: Family<UpstreamLabels, Histogram>,
    pub bytes_served: Family<BytesLabels, Counter>,
    pub blob_fill_failures: Counter,
    pub evictions: Counter,
    /// 1 when the start-up probe found the sandbox for maintainer scripts usable.
    pub sandbox_available: Gauge,
    /// 1 when scripts can run over cached roots through an overlay.
    pub overlay_available: Gauge,
    /// Blob responses streamed from upstream without caching (the store could not take it).
    pub blobs_uncached: Counter,
    /// 1 while the store takes new content, 0 while it is full.
    pub store_writable: prometheus_client::metrics::gauge::Gauge,
    /// Patch work, coordination and backing-registry health of this replica.
    pub fleet: crate::coordination::metrics::FleetMetrics,
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("patchpull");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Cache lookups by kind and result",
            cache.clone(),
        );
        let upstream_latency = Family::<UpstreamLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "upstream_request_duration_seconds",
            "Latency of upstream requests until response headers",
            upstream_latency.clone(),
        );
        let bytes_served = Family::<BytesLabels, Counter>::default();
        registry.register(
            "bytes_served",
            "Response body bytes sent to clients",
            bytes_served.clone(),
        );
        let blob_fill_failures = Counter::default();
        registry.register(
            "blob_fill_failures",
            "Upstream blob downloads that failed or did not verify",
            blob_fill_failures.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            "store_evictions",
            "Store entries evicted to stay under max_size",
            evictions.clone(),
        );
        let blobs_uncached = Counter::default();
        registry.register(
            "blobs_uncached",
            "Blob responses streamed from upstream without caching because the store could not take the blob",
            blobs_uncached.clone(),
        );
        let store_writable = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "store_writable",
            "1 while the store takes new content, 0 while it is full (see /readyz)",
            store_writable.clone(),
        );
        let patch_stage_duration = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 14))
        });
        registry.register(
            "patch_stage_duration_seconds",
            "Time each stage of a platform's patch took",
            patch_stage_duration.clone(),
        );
        let vulnerabilities_fixed = Counter::default();
        registry.register(
            "vulnerabilities_fixed",
            "Vulnerability ids fixed by patched images made (per platform)",
            vulnerabilities_fixed.clone(),
        );
        let patch_jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "patch_jobs",
            "Patch jobs finished, by outcome",
            patch_jobs.clone(),
        );
        let patch_duration = Histogram::new(exponential_buckets(0.25, 2.0, 12));
        registry.register(
            "patch_duration_seconds",
            "Time from a patch job's start (queueing included) to its outcome",
            patch_duration.clone(),
        );
        let patch_jobs_active = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "patch_jobs_active",
            "Patch jobs running or waiting for a worker",
            patch_jobs_active.clone(),
        );
        let tag_pulls = Family::<TagLabels, Counter>::default();
        registry.register(
            "tag_pulls",
            "Manifest requests by tag, by what they were served",
            tag_pulls.clone(),
        );
        let sandbox_available = Gauge::default();
        registry.register(
            "sandbox_available",
            "1 when maintainer scripts can run in the sandbox here (probed at start)",
            sandbox_available.clone(),
        );
        let overlay_available = Gauge::default();
        registry.register(
            "overlay_available",
            "1 when the sandbox can run scripts over cached image roots through an overlay (probed at start)",
            overlay_available.clone(),
        );
        let store_used_bytes = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "store_used_bytes",
            "Bytes of content in the store, as storage.max_size counts them",
            store_used_bytes.clone(),
        );
        let store_max_bytes = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "store_max_bytes",
            "storage.max_size: the store evicts above it",
            store_max_bytes.clone(),
        );
        let build_info = Family::<BuildLabels, prometheus_client::metrics::gauge::Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version label says which patchpull runs",
            build_info,
        );
        let fleet = crate::coordination::metrics::FleetMetrics::register(&mut registry);
        Metrics {
            fleet,
            sandbox_available,
            overlay_available,
            store_used_bytes,
            store_max_bytes,
            upstream_seen: std::sync::Mutex::default(),
            patch_stage_duration,
            vulnerabilities_fixed,
            patch_jobs,
            patch_duration,
            patch_jobs_active,
            tag_pulls,
            requests,
            cache,
            upstream_latency,
            bytes_served,
            blob_fill_failures,
            evictions,
            blobs_uncached,
            store_writable,
            registry,
        }
    }

    pub fn patch_stage(&self, stage: PatchStage, seconds: f64) {
        self.patch_stage_duration
            .get_or_create(&StageLabels { stage })
            .observe(seconds);
    }

    /// Records an upstream's answer (`status` 0: no connection).
    pub fn upstream_seen(&self, upstream: &str, status: u16) {
        let mut seen = self.upstream_seen.lock().unwrap_or_else(|p| p.into_inner());
        let entry = UpstreamSeen {
            status,
            at: std::time::Instant::now(),
        };
        match seen.get_mut(upstream) {
            Some(last) => *last = entry,
            None => {
                seen.insert(upstream.to_owned(), entry);
            }
        }
    }

    /// The last answer of each upstream asked since the start.
    pub fn upstreams_seen(&self) -> std::collections::BTreeMap<String, UpstreamSeen> {
        self.upstream_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn tag_pull(&self, served: TagServed) {
        self.tag_pulls
            .get_or_create(&TagLabels {
                served,
                reason: None,
            })
            .inc();
    }

    /// A pull served the original (or refused, fail-closed) for `reason`.
    pub fn fallback_pull(&self, reason: FallbackReason) {
        self.tag_pulls
            .get_or_create(&TagLabels {
                served: TagServed::Fallback,
                reason: Some(reason),
            })
            .inc();
    }

    pub fn cache(&self, kind: CacheKind, result: CacheResult) {
        self.cache
            .get_or_create(&CacheLabels { kind, result })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
