//! Patch jobs: one per (upstream, original digest), joined by every pull that asks while it
//! runs (see [`flight`]); at most `patch.workers` running and `patch.queue` waiting, each
//! for at most `patch.job_timeout`. Outcomes are kept in memory (a failure for
//! `patch.retry_failed_after`, a result for `scan.result_ttl`, after which the next pull
//! re-patches in the background while the old result is served; a partial index, some of
//! whose platforms failed, is served and re-patched likewise but after
//! `patch.retry_failed_after`), and a patched result is also written under
//! `<storage.path>/patched/` so a restart finds it (see [`records`]).

mod flight;
mod operator;
mod records;
mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::distribution::{Digest, Reference};
use crate::durable::write_atomically;
use crate::metrics::FallbackReason;
use crate::mirror::Mirror;
use crate::patch::buildkit::{BuildkitEngine, ImageSource};
use crate::patch::referrer;
use crate::pipeline::patcher::{PatchOptions, Patcher, PlatformOutcome};
use crate::scan::builtin::BuiltinScanner;
use crate::upstream::Route;

use super::platforms::PlatformsView;
use super::record::{self, JobRecord, SavedJob};
use flight::{Claim, Flights, Freshness, JobPermit, Key};
use records::Records;

pub use flight::{JobCounts, Waiter};
pub use view::JobView;

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
    Unchanged { reason: String },
    Failed {
        error: String,
        /// The closed class of `error`, for the pulls served the original meanwhile.
        reason: FallbackReason,
    },
}

/// Where a request stands.
pub enum JobStatus {
    Done(Arc<JobOutcome>),
    Running(Waiter),
    /// No job could be queued (the queue is full).
    Rejected(String),
}

pub struct Jobs {
    patcher: Patcher,
    /// Where what a job made is recorded as readable through its upstream.
    mirror: Arc<Mirror>,
    /// Uploaded reports, by image digest.
    reports: PathBuf,
    flights: Arc<Flights>,
    records: Records,
    /// What the operator's view shows of each job of this process besides its outcome.
    job_records: Mutex<HashMap<Key, JobRecord>>,
    /// Jobs finished by earlier runs of the process, from the store.
    history: Mutex<HashMap<Key, SavedJob>>,
    workers: Arc<Semaphore>,
    /// The longest a job may run (`patch.job_timeout`), waiting for a worker included.
    job_timeout: Duration,
    /// `[signing]`'s key: what a job makes is signed and attested with it.
    signer: Option<crate::sign::Signer>,
    /// Redis leases: one job per image across replicas.
    coordinator: Arc<crate::coordination::Coordinator>,
    /// `require_signature`: its refusals are listed with the jobs.
    trust: Arc<super::trust::Trust>,
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
    pub(super) fn new(
        config: &Config,
        mirror: Arc<Mirror>,
        trust: Arc<super::trust::Trust>,
    ) -> Result<Jobs, String> {
        let scanner =
            BuiltinScanner::new(crate::scan::builtin::BuiltinConfig::from_scan(&config.scan))
                .map_err(|e| format!("built-in scanner: {e}"))?;
        let store = mirror.store().clone();
        let index = crate::store::open_index(config, &store, mirror.metrics())?;
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
        .with_clock(&config.clock)
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
        let freshness = Freshness {
            retry_failed_after: config.patch.retry_failed_after,
            result_ttl: config.scan.result_ttl,
        };
        let capacity = config.patch.workers + config.patch.queue;
        let history = Mutex::new(record::load_all(&store));
        let signer = crate::sign::Signer::from_config(&config.signing)
            .map_err(|e| format!("signing key: {e}"))?;
        let coordinator = Arc::new(crate::coordination::Coordinator::new(
            &config.coordination,
            mirror.metrics().clone(),
        )?);
        match (&config.storage.backend, coordinator.enabled()) {
            (crate::config::StorageBackend::Local, _) => {}
            (crate::config::StorageBackend::Registry(r), true) => {
                tracing::info!(registry = %r.client.url, prefix = %r.repository_prefix, "patched images are shared through the backing registry; patch jobs are coordinated through Redis")
            }
            (crate::config::StorageBackend::Registry(r), false) => {
                tracing::warn!(registry = %r.client.url, prefix = %r.repository_prefix, "patched images are shared through the backing registry; no coordination.redis_url: replicas may patch the same image at once (same digest, duplicated work)")
            }
        }
        Ok(Jobs {
            trust,
            signer,
            job_records: Mutex::default(),
            history,
            patcher,
            mirror,
            reports,
            flights: Arc::new(Flights::new(
                capacity,
                freshness,
                metrics,
                config.clock.clone(),
            )),
            records: Records { index, store },
            workers: Arc::new(Semaphore::new(config.patch.workers)),
            job_timeout: config.patch.job_timeout,
            coordinator,
        })
    }

    /// What jobs did so far.
    pub fn counts(&self) -> &JobCounts {
        &self.flights.counts
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
        if !self.flights.lock().contains_key(&key) {
            if let Some(outcome) = self.adopt(route, &key).await {
                self.flights.remember(&key, outcome);
            }
        }
        let (permit, stale) = match self.flights.claim(&key) {
            Claim::Done(outcome) => return JobStatus::Done(outcome),
            Claim::Waiter(waiter) => return JobStatus::Running(waiter),
            Claim::Rejected(reason) => return JobStatus::Rejected(reason),
            Claim::Owner(permit, stale) => (permit, stale),
        };
        let waiter = permit.waiter();
        let options = options();
        self.note(&key, |r| {
            *r = JobRecord {
                image: (!options.base_name.is_empty()).then(|| options.base_name.clone()),
                started: Some(record::now()),
                ..JobRecord::default()
            }
        });
        let jobs = self.clone();
        let route = route.clone();
        // The permit moves into the task: however the task ends (a result, a panic, the
        // runtime shutting down), its drop finishes the entry.
        tokio::spawn(async move { jobs.own(permit, &route, &options).await });
        match stale {
            // A stale result is served while its refresh runs.
            Some(old) => JobStatus::Done(old),
            None => JobStatus::Running(waiter),
        }
    }

    /// Runs the job of `permit` within `patch.job_timeout` and records its outcome.
    async fn own(&self, permit: JobPermit, route: &Route, options: &PatchOptions) {
        let key = permit.key().clone();
        let step = permit.step();
        let progress: crate::pipeline::patcher::Progress = Arc::new(move |message: &str| {
            *step.lock().unwrap_or_else(|p| p.into_inner()) = message.to_owned();
        });
        let run = crate::pipeline::patcher::JOB_PROGRESS
            .scope(progress, self.run(route, &key.1, options));
        let outcome = match tokio::time::timeout(self.job_timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => JobOutcome::Failed {
                error: format!(
                    "the patch job took longer than patch.job_timeout ({})",
                    humantime::format_duration(self.job_timeout)
                ),
                reason: FallbackReason::PatchFailed,
            },
        };
        let image = self.finish_record(&key, &outcome).await;
        match &outcome {
            JobOutcome::Patched { platforms, .. } => {
                if let Some(failures) = platforms.failures() {
                    tracing::warn!(%image, upstream = %key.0, digest = %key.1, %failures, "patched in part; the platforms that failed keep their originals");
                }
            }
            JobOutcome::Unchanged { .. } => {}
            JobOutcome::Failed { error, .. } => {
                tracing::warn!(%image, upstream = %key.0, digest = %key.1, %error, "patch failed; serving the original");
            }
        }
        permit.finish(outcome);
    }

    /// The patched image already made for `digest` behind `upstream`, if any; never starts
    /// a job (admission webhooks must answer at once).
    pub async fn patched_for(&self, upstream: &str, digest: &Digest) -> Option<Digest> {
        let key = (upstream.to_owned(), digest.clone());
        let known = match self.flights.lock().get(&key) {
            Some(flight::Entry::Done(outcome, _)) => Some(outcome.clone()),
            _ => None,
        };
        let outcome = match known {
            Some(outcome) => outcome.as_ref().clone(),
            None => records::outcome_of(&self.records.load(&key).await?),
        };
        match outcome {
            JobOutcome::Patched { digest, .. } => Some(digest),
            _ => None,
        }
    }

    /// What every job known to this process did, for the admin API.
    pub fn list(&self) -> Vec<JobView> {
        let records = self
            .job_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let history = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut views: Vec<JobView> = self
            .flights
            .lock()
            .iter()
            .map(|(key, entry)| {
                let record = records.get(key).cloned().unwrap_or_default();
                JobView::of(key, entry, &self.flights.clock, record)
            })
            .collect();
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
        views.extend(self.trust.refusals());
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
        self.forget_everywhere(digest).await;
        Ok(())
    }

    /// Drops what is known about `digest` under every upstream; true when something was.
    pub async fn forget_everywhere(&self, digest: &Digest) -> bool {
        let dropped = {
            let mut flights = self.flights.lock();
            let before = flights.len();
            flights.retain(|(_, d), _| d != digest);
            flights.len() != before
        };
        let records = self.forget_records(digest);
        self.records.forget_everywhere(digest).await | dropped | records
    }

    /// Drops what is known about `digest`, so the next pull patches again.
    pub(super) fn forget(&self, route: &Route, digest: &Digest) {
        let key = (route.upstream.name().to_owned(), digest.clone());
        self.flights.lock().remove(&key);
        self.records.forget(&key);
    }

    /// The referrers patchpull made for `subject` (a patched manifest): descriptors for a
    /// referrers index. Over a backing registry, a subject this replica has no referrers
    /// of is looked up there first (another replica may have patched it).
    pub async fn referrers(&self, route: &Route, subject: &Digest) -> Vec<serde_json::Value> {
        let found = self.records.referrers(subject).await;
        if found.is_empty() && self.adopt_made(route, subject).await {
            return self.records.referrers(subject).await;
        }
        found
    }

    /// patchpull's own `kind` attachment of `subject` (the `sha256-<hex>.sig`/`.att` tag),
    /// looked up in the backing registry as [`Jobs::referrers`] does.
    pub async fn attachment(
        &self,
        route: &Route,
        subject: &Digest,
        kind: crate::sign::Attachment,
    ) -> Option<crate::mirror::ServedManifest> {
        let artifact_type = kind.artifact_type();
        if let Some(found) = self.records.attachment(subject, artifact_type).await {
            return Some(found);
        }
        if self.adopt_made(route, subject).await {
            return self.records.attachment(subject, artifact_type).await;
        }
        None
    }

    /// Adopts the shared entry `subject` (a manifest or blob) belongs to (see
    /// [`crate::store::index::PatchedIndex::find_by_digest`]); true when there was one and
    /// its content is now here. Over the local store there is never one.
    pub async fn adopt_made(&self, route: &Route, subject: &Digest) -> bool {
        let Some(original) = self.records.find_by_digest(route, subject).await else {
            return false;
        };
        let key = (route.upstream.name().to_owned(), original);
        self.adopt(route, &key).await.is_some()
    }

    async fn run(&self, route: &Route, digest: &Digest, options: &PatchOptions) -> JobOutcome {
        let key = (route.upstream.name().to_owned(), digest.clone());
        let queued = Instant::now();
        let original_signature = options.original_signature.clone();
        if let Some(verified) = &original_signature {
            self.note(&key, |r| {
                r.original_signature = Some(format!("verified with key {}", verified.key));
            });
        }
        let lease = match self.coordinate(route, &key, &options.plan_key()).await {
            Ok(lease) => lease,
            Err(outcome) => return outcome,
        };
        let Ok(_worker) = self.workers.clone().acquire_owned().await else {
            return JobOutcome::Failed {
                error: "shutting down".to_owned(),
                reason: FallbackReason::PatchFailed,
            };
        };
        self.note(&key, |r| {
            r.stages.queued_seconds = Some(queued.elapsed().as_secs_f64());
        });
        #[cfg(feature = "failpoints")]
        crate::failpoint::hit(crate::failpoint::PATCH_JOB, &digest.to_string());
        let started = Instant::now();
        self.mirror.metrics().fleet.patch_runs.inc();
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
                    reason: fallback_reason(&e),
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
                    reason: FallbackReason::PatchFailed,
                }
            }
        };
        // Everything made here belongs to the original's upstream: readable through it
        // wherever the original is, and through no other upstream.
        let mut made = vec![top_digest.clone()];
        let mut referrers = Vec::new();
        for platform in patched.patched() {
            made.push(platform.layer.digest.clone());
            made.push(platform.image.config_digest.clone());
            made.push(platform.image.manifest_digest.clone());
        }
        let attachments = self.signer.as_ref().map(|signer| {
            crate::pipeline::signing::attachments(
                signer,
                &repository,
                digest,
                original_signature.clone(),
                &patched,
            )
        });
        if let Err(error) = self.records.store_patched(patched).await {
            return JobOutcome::Failed {
                error,
                reason: FallbackReason::PatchFailed,
            };
        }
        if let Some(document) = vex {
            let subject = (&top_digest, media_type.as_str(), top_bytes.len() as u64);
            let artifact = referrer::vex_artifact(document, subject);
            made.push(artifact.digest.clone());
            made.extend(artifact.blobs.iter().map(|(d, _)| d.clone()));
            referrers.push((top_digest.clone(), artifact.digest.clone()));
            if let Err(error) = self.records.store_referrer(&top_digest, artifact).await {
                return JobOutcome::Failed {
                    error,
                    reason: FallbackReason::PatchFailed,
                };
            }
        }
        for (subject, _, artifact) in attachments.into_iter().flatten() {
            made.push(artifact.digest.clone());
            made.extend(artifact.blobs.iter().map(|(d, _)| d.clone()));
            // In the entry, so that a replica that reads it back serves them too.
            referrers.push((subject.clone(), artifact.digest.clone()));
            if let Err(error) = self.records.store_referrer(&subject, artifact).await {
                return JobOutcome::Failed {
                    error: format!("storing the signature: {error}"),
                    reason: FallbackReason::PatchFailed,
                };
            }
        }
        if let Err(error) = self.mirror.record_made(route, digest, &made).await {
            return JobOutcome::Failed {
                error,
                reason: FallbackReason::PatchFailed,
            };
        }
        let outcome = JobOutcome::Patched {
            digest: top_digest.clone(),
            media_type,
            platforms,
        };
        if let Some(lease) = &lease {
            if !lease.still_held().await {
                // Another replica took the job over (this one was slow past its lease); the
                // patch is deterministic, so its entry, when there, is this one's.
                if let Some(theirs) = self.adopt(route, &key).await {
                    return theirs;
                }
            }
        }
        if let Err(error) = self
            .records
            .save(&key, &outcome, &route.repository, &made, referrers)
            .await
        {
            return JobOutcome::Failed {
                error,
                reason: FallbackReason::PatchFailed,
            };
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
        outcome
    }

    /// Takes the job's Redis lease, or waits for the replica that holds it: `Ok` with the
    /// lease (or none, uncoordinated) when this replica is to patch, `Err` with the outcome
    /// another replica put into the shared store. Bounded by the job's timeout.
    async fn coordinate(
        &self,
        route: &Route,
        key: &Key,
        plan: &str,
    ) -> Result<Option<crate::coordination::Lease>, JobOutcome> {
        use crate::coordination::metrics::Coordinated;
        use crate::coordination::Claim;
        let fleet = &self.mirror.metrics().fleet;
        let mut waited = false;
        loop {
            match self.coordinator.claim(&key.0, &key.1, plan).await {
                Claim::Off => return Ok(None),
                Claim::Leased(lease) => {
                    fleet.job(if waited {
                        Coordinated::TakenOver
                    } else {
                        Coordinated::Claimed
                    });
                    // The holder may have finished between our look and our claim.
                    if waited {
                        if let Some(outcome) = self.adopt(route, key).await {
                            return Err(outcome);
                        }
                    }
                    return Ok(Some(lease));
                }
                Claim::Unavailable(error) => {
                    tracing::warn!(%error, upstream = %key.0, digest = %key.1, "Redis does not answer; patching without coordination (another replica may patch the same image)");
                    fleet.job(Coordinated::Uncoordinated);
                    return Ok(None);
                }
                Claim::Held => {
                    waited = true;
                    tokio::time::sleep(self.coordinator.poll_interval).await;
                    if let Some(outcome) = self.adopt(route, key).await {
                        fleet.job(Coordinated::Waited);
                        return Err(outcome);
                    }
                }
            }
        }
    }

    /// The outcome the index holds for `key`, its content made readable here and through
    /// `route` (an entry another replica put is fetched first); `None` when there is none
    /// or its content cannot be had (the pull then goes on as for an unpatched image).
    async fn adopt(&self, route: &Route, key: &Key) -> Option<JobOutcome> {
        let entry = self.records.load(key).await?;
        if !entry.content.is_empty() {
            if let Err(error) = self.records.materialize(key, &entry).await {
                tracing::warn!(%error, upstream = %key.0, digest = %key.1, "the patched image in the backing registry cannot be read; treated as not patched");
                return None;
            }
            let made: Vec<Digest> = entry.content.iter().map(|c| c.digest.clone()).collect();
            if let Err(error) = self.mirror.record_made(route, &key.1, &made).await {
                tracing::warn!(%error, "treated as not patched");
                return None;
            }
        }
        Some(records::outcome_of(&entry))
    }
}

/// The closed class of a patch failure, for `patchpull_tag_pulls_total{reason}`.
fn fallback_reason(error: &crate::patch::PatchError) -> FallbackReason {
    use crate::patch::native::NativeError;
    use crate::patch::PatchError;
    match error {
        PatchError::Native(NativeError::ScriptsCannotRun { .. }) => {
            if crate::patch::sandbox::available().is_err() {
                FallbackReason::SandboxUnavailable
            } else {
                FallbackReason::ScriptsCannotRun
            }
        }
        PatchError::Native(NativeError::Sandbox(e)) => match e {
            crate::patch::sandbox::SandboxError::Unavailable(_) => {
                FallbackReason::SandboxUnavailable
            }
            _ => FallbackReason::ScriptFailed,
        },
        PatchError::Native(NativeError::ScriptFailed { .. }) => FallbackReason::ScriptFailed,
        PatchError::Buildkit(_) => FallbackReason::BuildkitFailed,
        PatchError::Image(_) | PatchError::Package { .. } => FallbackReason::UpstreamFailed,
        _ => FallbackReason::PatchFailed,
    }
}
