//! What the operator's view keeps of a patch job besides its outcome: the image by name,
//! the plan (packages, versions, vulnerability ids), the engine, the time each stage took.
//! Finished jobs are written under `<storage.path>/jobs/<upstream>/<hex>.json` through the
//! store's atomic-write helper, so the job list survives a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::distribution::Digest;
use crate::pipeline::patcher::{EngineReport, PatchedImage, PlatformOutcome};
use crate::store::Store;

/// The store directory of job records.
const DIR: &str = "jobs";

/// One package a job changed (or planned to).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedPackage {
    /// `linux/amd64`.
    pub platform: String,
    pub name: String,
    /// The version in the original image.
    pub from: String,
    /// The version the plan upgrades it to.
    pub to: String,
    /// The vulnerability ids the upgrade fixes.
    pub fixes: Vec<String>,
}

/// Seconds each stage of a job took; a stage not reached is absent.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageTimings {
    /// Waiting for a worker (`patch.workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_seconds: Option<f64>,
    /// Reading the package database, planning, fetching, building and verifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_seconds: Option<f64>,
    /// Writing the patched image and its VEX document into the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_seconds: Option<f64>,
}

/// What the admin API and the status page show of a job besides its outcome.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    /// `upstream/repository:tag` of the pull (or pre-warm) that started the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `native`, `apk` or `buildkit`, for the platforms patched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedPackage>,
    #[serde(default)]
    pub stages: StageTimings,
    /// RFC 3339, wall clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// `require_signature`: how the original's signature was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_signature: Option<String>,
}

/// A finished job as written to the store: its key, outcome in the admin API's words and
/// record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedJob {
    pub upstream: String,
    pub original: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patched: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(flatten)]
    pub record: JobRecord,
}

/// Now, as RFC 3339 seconds.
pub(super) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl JobRecord {
    /// Takes the plan and engine from what the patcher made.
    pub(super) fn note_patched(&mut self, patched: &PatchedImage) {
        let mut engines: Vec<&str> = Vec::new();
        self.plan.clear();
        for platform in &patched.platforms {
            if let PlatformOutcome::Patched(p) = &platform.outcome {
                let engine = match p.engine {
                    EngineReport::Native(_) => "native",
                    EngineReport::Apk(_) => "apk",
                    EngineReport::Buildkit(_) => "buildkit",
                };
                if !engines.contains(&engine) {
                    engines.push(engine);
                }
            }
            let Some(plan) = &platform.plan else {
                continue;
            };
            for update in &plan.updates {
                let mut fixes: Vec<String> = update.fixes.iter().map(|f| f.id.clone()).collect();
                fixes.sort();
                fixes.dedup();
                self.plan.push(PlannedPackage {
                    platform: platform.original.platform.to_string(),
                    name: update.name.clone(),
                    from: update.installed_version.clone(),
                    to: update.fixed_version.clone(),
                    fixes,
                });
            }
        }
        self.engine = (!engines.is_empty()).then(|| engines.join(", "));
    }

    /// The distinct vulnerability ids the plan fixes, sorted.
    pub fn fixed(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.plan.iter().flat_map(|p| p.fixes.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

fn relative(upstream: &str, original: &Digest) -> PathBuf {
    Path::new(DIR)
        .join(upstream)
        .join(format!("{}.json", original.hex()))
}

/// Writes `job` atomically; a failure is logged, not fatal (the job list is for display).
pub(super) async fn save(store: &std::sync::Arc<Store>, original: &Digest, job: SavedJob) {
    let path = relative(&job.upstream, original);
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || {
        let bytes = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
        store.write_record(&path, &bytes).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    if let Err(error) = result {
        tracing::warn!(%error, "cannot record the job; it is missing from the job list after a restart");
    }
}

/// Removes the record of `original` under every upstream.
pub(super) fn remove(store: &Store, original: &Digest) {
    let Ok(upstreams) = std::fs::read_dir(store.record_path(Path::new(DIR))) else {
        return;
    };
    for upstream in upstreams.flatten() {
        let _ = std::fs::remove_file(upstream.path().join(format!("{}.json", original.hex())));
    }
}

/// Every job recorded by earlier runs, by (upstream, original digest). Unreadable records
/// are skipped: they are for display only.
pub(super) fn load_all(store: &Store) -> HashMap<(String, Digest), SavedJob> {
    let mut found = HashMap::new();
    let Ok(upstreams) = std::fs::read_dir(store.record_path(Path::new(DIR))) else {
        return found;
    };
    for upstream in upstreams.flatten() {
        let Ok(files) = std::fs::read_dir(upstream.path()) else {
            continue;
        };
        for file in files.flatten() {
            let Ok(bytes) = std::fs::read(file.path()) else {
                continue;
            };
            let Ok(job) = serde_json::from_slice::<SavedJob>(&bytes) else {
                continue;
            };
            if let Ok(digest) = job.original.parse::<Digest>() {
                found.insert((job.upstream.clone(), digest), job);
            }
        }
    }
    found
}
