//! Patch jobs: one per (upstream, original digest), joined by every pull that asks while it
//! runs; at most `patch.workers` running and `patch.queue` waiting. Outcomes are kept in
//! memory (a failure for `patch.retry_failed_after`, a result for `scan.result_ttl`, after
//! which the next pull re-patches in the background while the old result is served; a
//! partial index, some of whose platforms failed, is served and re-patched likewise but
//! after `patch.retry_failed_after`), and a patched result is also written under
//! `<storage.path>/patched/` so a restart finds it.

use crate::patch::buildkit::{BuildkitEngine, ImageSource};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::distribution::{Digest, Reference};
use crate::metrics::{JobLabels, JobOutcomeLabel, Metrics};
use crate::mirror::Mirror;
use crate::patch::job::{PatchOptions, PatchedImage, Patcher, PlatformOutcome};

use super::platforms::{PlatformView, PlatformsView};
use super::record::{self, JobRecord, SavedJob};

mod view;
use crate::patch::referrer;
use crate::scan::builtin::BuiltinScanner;
use crate::store::{Store, StoredManifest};
use crate::upstream::Route;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The patched image's top manifest (or index).
    Patched {
        digest: Digest,
        media_type: String,
        /// What became of each platform, and whether the index is partial.
        platforms: PlatformsView,
    },
    /// Nothing to patch; the original is served.
    Unchanged {
        reason: String,
    },
    Failed {
        error: String,
    },
}

/// Where a request stands.
pub enum JobStatus {
    Done(Arc<JobOutcome>),
    Running(Waiter),
    /// No job could be queued (the queue is full).
    Rejected(String),
}

/// Waits for a running job.
pub struct Waiter(watch::Receiver<Option<Arc<JobOutcome>>>);

impl Waiter {
    pub async fn finished(&mut self) -> Arc<JobOutcome> {
        loop {
            if let Some(outcome) = self.0.borrow().clone() {
                return outcome;
            }
            if self.0.changed().await.is_err() {
                return Arc::new(JobOutcome::Failed {
                    error: "the patch job ended without a result".to_owned(),
                });
            }
        }
    }
}

type Key = (String, Digest);

enum Entry {
    /// With the step it is at.
    Running(watch::Receiver<Option<Arc<JobOutcome>>>, Arc<Mutex<String>>),
    Done(Arc<JobOutcome>, Instant),
}

/// One job as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobView {
    pub upstream: String,
    pub original: String,
    /// `running`, `patched`, `unchanged` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patched: Option<String>,
    /// Why nothing was patched, the error, the step a running job is at, or for a
    /// partial index which platforms kept their originals and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Patched images: whether some platform failed and kept its original manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<bool>,
    /// Patched images: what became of each platform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_ago: Option<u64>,
    /// The image by name, its plan, engine and stage timings.
    #[serde(flatten)]
    pub record: JobRecord,
}

/// Counters of what jobs did, for metrics and tests.
#[derive(Debug, Default)]
pub struct JobCounts {
    pub started: AtomicUsize,
    pub patched: AtomicUsize,
    /// Patched, as a partial index (also counted in `patched`).
    pub partial: AtomicUsize,
    pub unchanged: AtomicUsize,
    pub failed: AtomicUsize,
}

pub struct Jobs {
    patcher: Patcher,
    /// Where what a job made is recorded as readable through its upstream.
    mirror: Arc<Mirror>,
    /// Uploaded reports, by image digest.
    reports: PathBuf,
    store: Arc<Store>,
    state: Mutex<HashMap<Key, Entry>>,
    workers: Arc<Semaphore>,
    /// Jobs started and not finished (running or waiting for a worker).
    active: AtomicUsize,
    capacity: usize,
    retry_failed_after: Duration,
    result_ttl: Duration,
    dir: PathBuf,
    pub counts: JobCounts,
    metrics: Arc<Metrics>,
    /// What the operator's view shows of each job of this process besides its outcome.
    records: Mutex<HashMap<Key, JobRecord>>,
    /// Jobs finished by earlier runs of the process, from the store.
    history: Mutex<HashMap<Key, SavedJob>>,
}

/// Where BuildKit reaches this patchpull: `patch.buildkit.registry`, else the listen
/// address (loopback for an unspecified one).
fn buildkit_registry(config: &Config, buildkit: &crate::config::BuildkitConfig) -> String {
    if !buildkit.registry.is_empty() {
        return buildkit.registry.clone();
    }
    let mut listen = config.server.listen;
    if listen.ip().is_unspecified() {
        listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    listen.to_string()
}

impl Jobs {
    pub(super) fn new(config: &Config, mirror: Arc<Mirror>) -> Result<Jobs, String> {
        let scanner =
            BuiltinScanner::new(crate::scan::builtin::BuiltinConfig::from_scan(&config.scan))
                .map_err(|e| format!("built-in scanner: {e}"))?;
        let dir = config.storage.path.join("patched");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let store = mirror.store().clone();
        let metrics = mirror.metrics().clone();
        let reports = config.storage.path.join("reports");
        std::fs::create_dir_all(&reports).map_err(|e| format!("{}: {e}", reports.display()))?;
        let patcher = Patcher::new(
            mirror.clone(),
            Arc::new(scanner),
            config.storage.path.join("patch-tmp"),
        )
        .with_reports(reports.clone())
        .with_unpack_cache(crate::patch::unpack_cache::UnpackCache::for_config(config))
        .with_scan_command(&config.scan)?
        .with_engine(
            config.patch.engine,
            config.patch.buildkit.address.as_ref().map(|address| {
                (
                    Arc::new(BuildkitEngine::new(
                        address.clone(),
                        config.patch.buildkit.clone(),
                    )),
                    ImageSource::Proxy(buildkit_registry(config, &config.patch.buildkit)),
                )
            }),
            &config.scan,
        );
        let history = Mutex::new(record::load_all(&store));
        Ok(Jobs {
            records: Mutex::default(),
            history,
            patcher,
            mirror,
            reports,
            store,
            state: Mutex::new(HashMap::new()),
            workers: Arc::new(Semaphore::new(config.patch.workers)),
            active: AtomicUsize::new(0),
            capacity: config.patch.workers + config.patch.queue,
            retry_failed_after: config.patch.retry_failed_after,
            result_ttl: config.scan.result_ttl,
            dir,
            counts: JobCounts::default(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The outcome for `digest`, starting a job when there is none (or the last one is
    /// stale).
    pub(super) async fn status_or_start(
        self: &Arc<Self>,
        route: &Route,
        digest: &Digest,
        options: impl FnOnce() -> PatchOptions,
    ) -> JobStatus {
        let key = (route.upstream.name().to_owned(), digest.clone());
        if !self.lock().contains_key(&key) {
            if let Some(outcome) = self.load(&key).await {
                self.lock()
                    .entry(key.clone())
                    .or_insert(Entry::Done(Arc::new(outcome), Instant::now()));
            }
        }
        let mut state = self.lock();
        let refresh = match state.get(&key) {
            Some(Entry::Running(rx, _)) => return JobStatus::Running(Waiter(rx.clone())),
            Some(Entry::Done(outcome, at)) => {
                let (fresh_for, serve_meanwhile) = match outcome.as_ref() {
                    JobOutcome::Failed { .. } => (self.retry_failed_after, false),
                    // The platforms that failed may patch next time.
                    JobOutcome::Patched { platforms, .. } if platforms.partial => {
                        (self.retry_failed_after, true)
                    }
                    _ => (self.result_ttl, true),
                };
                if at.elapsed() < fresh_for {
                    return JobStatus::Done(outcome.clone());
                }
                serve_meanwhile.then(|| outcome.clone())
            }
            None => None,
        };
        if self.active.load(Ordering::Relaxed) >= self.capacity {
            return match refresh {
                Some(old) => JobStatus::Done(old),
                None => JobStatus::Rejected(format!(
                    "{} patch jobs are running or queued, the limit",
                    self.capacity
                )),
            };
        }
        let options = options();
        self.note(&key, |r| {
            *r = JobRecord {
                image: (!options.base_name.is_empty()).then(|| options.base_name.clone()),
                started: Some(record::now()),
                ..JobRecord::default()
            }
        });
        let (tx, rx) = watch::channel(None);
        let step = Arc::new(Mutex::new("queued".to_owned()));
        state.insert(key.clone(), Entry::Running(rx.clone(), step.clone()));
        drop(state);
        self.active.fetch_add(1, Ordering::Relaxed);
        self.metrics.patch_jobs_active.inc();
        self.counts.started.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let jobs = self.clone();
        let route = route.clone();
        tokio::spawn(async move {
            let progress: crate::patch::job::Progress = Arc::new(move |message: &str| {
                *step.lock().unwrap_or_else(|p| p.into_inner()) = message.to_owned();
            });
            let outcome = Arc::new(
                crate::patch::job::JOB_PROGRESS
                    .scope(progress, jobs.run(&route, &key.1, &options))
                    .await,
            );
            let label = match outcome.as_ref() {
                JobOutcome::Patched { platforms, .. } if platforms.partial => {
                    JobOutcomeLabel::Partial
                }
                JobOutcome::Patched { .. } => JobOutcomeLabel::Patched,
                JobOutcome::Unchanged { .. } => JobOutcomeLabel::Unchanged,
                JobOutcome::Failed { .. } => JobOutcomeLabel::Failed,
            };
            jobs.metrics
                .patch_jobs
                .get_or_create(&JobLabels { outcome: label })
                .inc();
            jobs.metrics
                .patch_duration
                .observe(started.elapsed().as_secs_f64());
            let image = jobs.finish_record(&key, &outcome).await;
            match outcome.as_ref() {
                JobOutcome::Patched { platforms, .. } => {
                    jobs.counts.patched.fetch_add(1, Ordering::Relaxed);
                    if let Some(failures) = platforms.failures() {
                        jobs.counts.partial.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%image, upstream = %key.0, digest = %key.1, %failures, "patched in part; the platforms that failed keep their originals");
                    }
                    jobs.save(&key, &outcome).await;
                }
                JobOutcome::Unchanged { .. } => {
                    jobs.counts.unchanged.fetch_add(1, Ordering::Relaxed);
                }
                JobOutcome::Failed { error } => {
                    jobs.counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%image, upstream = %key.0, digest = %key.1, %error, "patch failed; serving the original");
                }
            }
            jobs.lock()
                .insert(key, Entry::Done(outcome.clone(), Instant::now()));
            jobs.active.fetch_sub(1, Ordering::Relaxed);
            jobs.metrics.patch_jobs_active.dec();
            let _ = tx.send(Some(outcome));
        });
        match refresh {
            // A stale result is served while its refresh runs.
            Some(old) => JobStatus::Done(old),
            None => JobStatus::Running(Waiter(rx)),
        }
    }

    /// The patched image already made for `digest` behind `upstream`, if any; never starts
    /// a job (admission webhooks must answer at once).
    pub async fn patched_for(&self, upstream: &str, digest: &Digest) -> Option<Digest> {
        let key = (upstream.to_owned(), digest.clone());
        let known = match self.lock().get(&key) {
            Some(Entry::Done(outcome, _)) => Some(outcome.clone()),
            _ => None,
        };
        let outcome = match known {
            Some(outcome) => outcome.as_ref().clone(),
            None => self.load(&key).await?,
        };
        match outcome {
            JobOutcome::Patched { digest, .. } => Some(digest),
            _ => None,
        }
    }

    /// What every job known to this process did, for the admin API.
    pub fn list(&self) -> Vec<JobView> {
        let records = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let history = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let state = self.lock();
        let mut views: Vec<JobView> = state
            .iter()
            .map(|((upstream, original), entry)| {
                let mut view = JobView {
                    upstream: upstream.clone(),
                    original: original.to_string(),
                    status: "running",
                    patched: None,
                    detail: None,
                    partial: None,
                    platforms: Vec::new(),
                    seconds_ago: None,
                    record: records
                        .get(&(upstream.clone(), original.clone()))
                        .cloned()
                        .unwrap_or_default(),
                };
                match entry {
                    Entry::Running(_, step) => {
                        view.detail = Some(step.lock().unwrap_or_else(|p| p.into_inner()).clone());
                    }
                    Entry::Done(outcome, at) => {
                        view.seconds_ago = Some(at.elapsed().as_secs());
                        match outcome.as_ref() {
                            JobOutcome::Patched {
                                digest, platforms, ..
                            } => {
                                view.status = "patched";
                                view.patched = Some(digest.to_string());
                                view.detail = platforms.failures().map(|failures| {
                                    format!("the originals are kept for {failures}")
                                });
                                view.partial = Some(platforms.partial);
                                view.platforms = platforms.platforms.clone();
                            }
                            JobOutcome::Unchanged { reason } => {
                                view.status = "unchanged";
                                view.detail = Some(reason.clone());
                            }
                            JobOutcome::Failed { error } => {
                                view.status = "failed";
                                view.detail = Some(error.clone());
                            }
                        }
                    }
                }
                view
            })
            .collect();
        drop(state);
        let known: std::collections::HashSet<(String, String)> = views
            .iter()
            .map(|v| (v.upstream.clone(), v.original.clone()))
            .collect();
        for saved in history.into_values() {
            if known.contains(&(saved.upstream.clone(), saved.original.clone())) {
                continue;
            }
            let status = match saved.status.as_str() {
                "patched" => "patched",
                "unchanged" => "unchanged",
                "failed" => "failed",
                _ => continue,
            };
            views.push(JobView {
                upstream: saved.upstream,
                original: saved.original,
                status,
                patched: saved.patched,
                detail: saved.detail,
                partial: None,
                platforms: Vec::new(),
                seconds_ago: None,
                record: saved.record,
            });
        }
        views.sort_by(|a, b| (&a.upstream, &a.original).cmp(&(&b.upstream, &b.original)));
        views
    }

    /// Stores an uploaded report (already parsed by the caller) for `digest` and drops
    /// what is known about that image, so its next pull plans from the report.
    ///
    /// # Errors
    /// The report cannot be written.
    pub async fn put_report(&self, digest: &Digest, bytes: Vec<u8>) -> Result<(), String> {
        let path = self.reports.join(digest.hex());
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("storing the report: {e}"))?;
        self.forget_everywhere(digest);
        Ok(())
    }

    /// Drops what is known about `digest` under every upstream; true when something was.
    pub fn forget_everywhere(&self, digest: &Digest) -> bool {
        let keys: Vec<Key> = self
            .lock()
            .keys()
            .filter(|(_, d)| d == digest)
            .cloned()
            .collect();
        let mut dropped = !keys.is_empty();
        dropped |= self.forget_records(digest);
        for key in keys {
            self.lock().remove(&key);
        }
        if let Ok(upstreams) = std::fs::read_dir(&self.dir) {
            for upstream in upstreams.flatten() {
                dropped |= std::fs::remove_file(upstream.path().join(digest.hex())).is_ok();
            }
        }
        dropped
    }

    /// Drops what is known about `digest`, so the next pull patches again.
    pub(super) fn forget(&self, route: &Route, digest: &Digest) {
        let key = (route.upstream.name().to_owned(), digest.clone());
        self.lock().remove(&key);
        let _ = std::fs::remove_file(self.path(&key));
    }

    async fn run(&self, route: &Route, digest: &Digest, options: &PatchOptions) -> JobOutcome {
        let key = (route.upstream.name().to_owned(), digest.clone());
        let queued = Instant::now();
        let Ok(_permit) = self.workers.clone().acquire_owned().await else {
            return JobOutcome::Failed {
                error: "shutting down".to_owned(),
            };
        };
        self.note(&key, |r| {
            r.stages.queued_seconds = Some(queued.elapsed().as_secs_f64());
        });
        let started = Instant::now();
        let patched = self
            .patcher
            .patch(route, &Reference::Digest(digest.clone()), options)
            .await;
        self.note(&key, |r| {
            r.stages.patch_seconds = Some(started.elapsed().as_secs_f64());
            if let Ok(patched) = &patched {
                r.note_patched(patched);
            }
        });
        let storing = Instant::now();
        let patched = match patched {
            Ok(patched) => patched,
            Err(e) => {
                return JobOutcome::Failed {
                    error: e.to_string(),
                }
            }
        };
        let Some((top_bytes, top_digest, media_type)) = patched.top.clone() else {
            let reason = patched
                .platforms
                .iter()
                .filter_map(|p| match &p.outcome {
                    PlatformOutcome::Unchanged { reason } => Some(reason.clone()),
                    PlatformOutcome::Patched(_) | PlatformOutcome::Failed { .. } => None,
                })
                .next()
                .unwrap_or_else(|| "nothing to patch".to_owned());
            return JobOutcome::Unchanged { reason };
        };
        let platforms = PlatformsView::of(&patched.platforms);
        let repository = format!("{}/{}", route.upstream.name(), route.repository);
        let timestamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let vex = match patched.vex_document(&repository, &timestamp) {
            Ok(vex) => vex,
            Err(e) => {
                return JobOutcome::Failed {
                    error: format!("the VEX document: {e}"),
                }
            }
        };
        // Everything made here belongs to the original's upstream: readable through it
        // wherever the original is, and through no other upstream.
        let mut made = vec![top_digest.clone()];
        for platform in patched.patched() {
            made.push(platform.layer.digest.clone());
            made.push(platform.image.config_digest.clone());
            made.push(platform.image.manifest_digest.clone());
        }
        if let Err(error) = store_patched(&self.store, patched).await {
            return JobOutcome::Failed { error };
        }
        if let Some(document) = vex {
            let subject = (&top_digest, media_type.as_str(), top_bytes.len() as u64);
            let artifact = referrer::vex_artifact(document, subject);
            made.push(artifact.digest.clone());
            made.extend(artifact.blobs.iter().map(|(d, _)| d.clone()));
            if let Err(error) = self.store_referrer(&top_digest, artifact).await {
                return JobOutcome::Failed { error };
            }
        }
        if let Err(error) = self.mirror.record_made(route, digest, &made).await {
            return JobOutcome::Failed { error };
        }
        self.note(&key, |r| {
            r.stages.store_seconds = Some(storing.elapsed().as_secs_f64());
        });
        tracing::info!(
            image = %options.base_name,
            original = %digest,
            patched = %top_digest,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "patched"
        );
        JobOutcome::Patched {
            digest: top_digest,
            media_type,
            platforms,
        }
    }

    /// Stores the VEX artifact and records it as a referrer of `subject`.
    async fn store_referrer(
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
        let text = format!("{}\n", artifact.digest);
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
                found.push(serde_json::json!({
                    "mediaType": manifest.media_type,
                    "digest": manifest.digest.to_string(),
                    "size": manifest.bytes.len(),
                    "artifactType": referrer::VEX_ARTIFACT_TYPE,
                }));
            }
        }
        found
    }

    fn referrer_path(&self, subject: &Digest) -> PathBuf {
        self.dir.join("referrers").join(subject.hex())
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(&key.0).join(key.1.hex())
    }

    /// A patched result from an earlier run of the process: the digest, the media type,
    /// and (written since partial indexes) the platforms as JSON.
    async fn load(&self, key: &Key) -> Option<JobOutcome> {
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

    async fn save(&self, key: &Key, outcome: &JobOutcome) {
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
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Puts every new blob and manifest of `patched` into the store, verified.
async fn store_patched(store: &Arc<Store>, patched: PatchedImage) -> Result<(), String> {
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
