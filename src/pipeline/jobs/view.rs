//! The admin API's view of the jobs.

use super::flight::{Entry, Key};
use super::JobOutcome;
use crate::clock::Clock;
use crate::pipeline::platforms::PlatformView;
use crate::pipeline::record::JobRecord;

/// One job as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobView {
    pub upstream: String,
    pub original: String,
    /// `running`, `patched`, `unchanged`, `failed`, or `unverified`: refused by
    /// `require_signature` before any job (`detail` says why, `image` names the
    /// repository).
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

impl JobView {
    pub(super) fn of(
        (upstream, original): &Key,
        entry: &Entry,
        clock: &Clock,
        record: JobRecord,
    ) -> JobView {
        let mut view = JobView {
            upstream: upstream.clone(),
            original: original.to_string(),
            status: "running",
            patched: None,
            detail: None,
            partial: None,
            platforms: Vec::new(),
            seconds_ago: None,
            record,
        };
        match entry {
            Entry::Running(_, step) => {
                view.detail = Some(step.lock().unwrap_or_else(|p| p.into_inner()).clone());
            }
            Entry::Done(outcome, at) => {
                view.seconds_ago = Some(clock.since(*at).as_secs());
                match outcome.as_ref() {
                    JobOutcome::Patched {
                        digest, platforms, ..
                    } => {
                        view.status = "patched";
                        view.patched = Some(digest.to_string());
                        view.detail = platforms
                            .failures()
                            .map(|failures| format!("the originals are kept for {failures}"));
                        view.partial = Some(platforms.partial);
                        view.platforms = platforms.platforms.clone();
                    }
                    JobOutcome::Unchanged { reason } => {
                        view.status = "unchanged";
                        view.detail = Some(reason.clone());
                    }
                    JobOutcome::Failed { error, .. } => {
                        view.status = "failed";
                        view.detail = Some(error.clone());
                    }
                }
            }
        }
        view
    }
}
