//! Patch on pull: a manifest request for a tag gets the patched image.
//!
//! The tag resolves upstream (through the mirror's tag cache) to the original digest; the
//! patched image for it is served when one exists. Otherwise one patch job per original
//! digest is started (concurrent pulls join it), on a bounded pool with a bounded queue,
//! and the pull waits, gets the original, or gets `503`, as `[patch] mode` says. Patched
//! blobs and manifests live in the store, content addressed, so every blob and manifest of
//! a patched image is served by digest like any other.
//!
//! Name space: `<tag>` and `<tag>-patched` give the patched image; `<tag>-original` and
//! digest references give upstream's bytes.

mod jobs;
pub mod patcher;
mod platforms;
mod record;
pub mod signing;
mod trust;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, PatchMode, UnverifiedAnswer};
use crate::distribution::media_type::Accept;
use crate::distribution::{ErrorCode, Reference};
use crate::error::ApiError;
use crate::metrics::{FallbackReason, TagServed};
use crate::mirror::{Mirror, ServedManifest};
use crate::pipeline::patcher::PatchOptions;
use crate::scan::plan::PlanOptions;
use crate::upstream::Route;

pub use jobs::{JobOutcome, JobStatus, JobView};
pub use platforms::{PlatformStatus, PlatformView, PlatformsView};
pub use record::{JobRecord, PlannedPackage, StageTimings};

/// The suffix that asks for the untouched image.
pub const ORIGINAL_SUFFIX: &str = "-original";
/// copa's convention for the patched image; the bare tag serves it too.
pub const PATCHED_SUFFIX: &str = "-patched";

/// What a manifest request by tag gets.
#[derive(Debug)]
pub enum TagAnswer {
    /// The patched manifest (or the one platform manifest of it the client accepts).
    Patched(ServedManifest),
    /// The mirror serves this reference as it is upstream.
    Original(Reference),
}

/// The pipeline: the mirror, the patch jobs and the policy.
pub struct Pipeline {
    mirror: Arc<Mirror>,
    config: crate::config::PatchConfig,
    mode: PatchMode,
    wait_timeout: Duration,
    jobs: Arc<jobs::Jobs>,
    /// `require_signature`: checked before a job is joined or started.
    trust: Arc<trust::Trust>,
}

impl Pipeline {
    /// # Errors
    /// The built-in scanner or the state directory cannot be set up.
    pub fn new(config: &Config, mirror: Arc<Mirror>) -> Result<Pipeline, String> {
        let trust = Arc::new(trust::Trust::new(config)?);
        let jobs = jobs::Jobs::new(config, mirror.clone(), trust.clone())?;
        Ok(Pipeline {
            trust,
            mirror,
            config: config.patch.clone(),
            mode: config.patch.mode,
            wait_timeout: config.patch.wait_timeout,
            jobs: Arc::new(jobs),
        })
    }

    /// Whether patchpull's own cosign signature of `patched` (made for `repository` of
    /// `upstream`) exists here or, adopted first, in the shared backing registry.
    pub async fn patch_is_signed(
        &self,
        upstream: &str,
        repository: &str,
        patched: &crate::distribution::Digest,
    ) -> bool {
        let Ok(route) = self.mirror.route(repository, Some(upstream)) else {
            return false;
        };
        self.jobs
            .attachment(&route, patched, crate::sign::Attachment::Signature)
            .await
            .is_some()
    }

    /// Jobs and their outcomes, for the admin API and tests.
    pub fn jobs(&self) -> &Arc<jobs::Jobs> {
        &self.jobs
    }

    /// Starts (or joins) the patch of the image `tag` names, without waiting: the admin
    /// API's pre-warm. Returns the original digest.
    ///
    /// # Errors
    /// The tag cannot be resolved upstream.
    pub async fn prewarm(
        &self,
        route: &Route,
        tag: &str,
    ) -> Result<crate::distribution::Digest, ApiError> {
        // `background` semantics: start the job, never wait.
        let any = Accept::parse([]);
        let top = self
            .mirror
            .manifest(route, &Reference::Tag(tag.to_owned()), &any)
            .await?;
        // An original `require_signature` refuses is not patched, pre-warmed or not.
        let Ok(original_signature) = self.trust.verify(&self.mirror, route, &top.digest).await
        else {
            return Ok(top.digest.clone());
        };
        let _ = self
            .jobs
            .status_or_start(route, &top.digest, || PatchOptions {
                original_signature,
                ..self.options_for(route, tag)
            })
            .await;
        Ok(top.digest.clone())
    }

    fn options_for(&self, route: &Route, tag: &str) -> PatchOptions {
        let base_name = format!("{}/{}:{tag}", route.upstream.name(), route.repository);
        let policy = self.config.policy(route.upstream.name(), &route.repository);
        PatchOptions {
            base_name,
            plan: PlanOptions {
                min_severity: policy.and_then(|p| p.min_severity),
                unknown_severity: self.config.unknown_severity,
                include: policy
                    .map(|p| p.include.iter().cloned().collect())
                    .unwrap_or_default(),
                exclude: policy
                    .map(|p| p.exclude.iter().cloned().collect())
                    .unwrap_or_default(),
            },
            ignore_errors: policy.is_some_and(|p| p.ignore_errors),
            partial_index: self.config.partial_index,
            ..PatchOptions::default()
        }
    }

    /// A referrers index of upstream's (`index`) with patchpull's own referrers of
    /// `subject` added (the VEX document of a patched image), `artifact_type` applied. Own
    /// referrers are listed only where `route` may read the subject, so a patched image of
    /// one upstream is not even named through another.
    ///
    /// # Errors
    /// `index` is not JSON.
    pub async fn merge_referrers(
        &self,
        route: &Route,
        subject: &crate::distribution::Digest,
        index: bytes::Bytes,
        artifact_type: Option<&str>,
    ) -> Result<bytes::Bytes, ApiError> {
        let mut own = self.jobs.referrers(route, subject).await;
        own.retain(|d| artifact_type.is_none_or(|t| d["artifactType"] == t));
        if own.is_empty() || self.mirror.ensure_readable(route, subject).await.is_err() {
            return Ok(index);
        }
        let mut doc: serde_json::Value = serde_json::from_slice(&index)
            .map_err(|e| ApiError::internal(format!("upstream's referrers index: {e}")))?;
        match doc.get_mut("manifests").and_then(|m| m.as_array_mut()) {
            Some(manifests) => manifests.extend(own),
            None => doc["manifests"] = serde_json::Value::Array(own),
        }
        serde_json::to_vec(&doc)
            .map(bytes::Bytes::from)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Adopts the patched image another replica made that `digest` (a manifest or blob)
    /// belongs to, so that this replica can serve it; true when there was one.
    pub async fn adopt_made(&self, route: &Route, digest: &crate::distribution::Digest) -> bool {
        self.jobs.adopt_made(route, digest).await
    }

    /// Decides what a manifest request for `tag` gets.
    ///
    /// # Errors
    /// Upstream errors resolving the tag; `503` when the policy is fail-closed and no
    /// patched image exists yet.
    pub async fn resolve_tag(
        &self,
        route: &Route,
        tag: &str,
        accept: &Accept,
    ) -> Result<TagAnswer, ApiError> {
        let (answer, served) = self.decide(route, tag, accept).await?;
        // A fallback was counted with its reason where it was decided.
        if served != TagServed::Fallback {
            self.mirror.metrics().tag_pull(served);
        }
        Ok(answer)
    }

    async fn decide(
        &self,
        route: &Route,
        tag: &str,
        accept: &Accept,
    ) -> Result<(TagAnswer, TagServed), ApiError> {
        // cosign's `sha256-<hex>.sig`/`.att`: patchpull's own for a patched image, else
        // upstream's as they are (an original's signature is never patched).
        if let Some((subject, kind)) = crate::sign::cosign::parse_attachment_tag(tag) {
            if let Some(own) = self.jobs.attachment(route, &subject, kind).await {
                if self.mirror.ensure_readable(route, &subject).await.is_ok() {
                    return Ok((TagAnswer::Patched(own), TagServed::Patched));
                }
            }
            return Ok((
                TagAnswer::Original(Reference::Tag(tag.to_owned())),
                TagServed::Original,
            ));
        }
        if let Some(base) = tag.strip_suffix(ORIGINAL_SUFFIX).filter(|b| !b.is_empty()) {
            return Ok((
                TagAnswer::Original(Reference::Tag(base.to_owned())),
                TagServed::Original,
            ));
        }
        let tag = tag
            .strip_suffix(PATCHED_SUFFIX)
            .filter(|b| !b.is_empty())
            .unwrap_or(tag);
        let original = Reference::Tag(tag.to_owned());
        let policy = self.config.policy(route.upstream.name(), &route.repository);
        let mode = policy.and_then(|p| p.mode).unwrap_or(self.mode);
        if mode == PatchMode::Off {
            return Ok((TagAnswer::Original(original), TagServed::Original));
        }
        let any = Accept::parse([]);
        let top = self.mirror.manifest(route, &original, &any).await?;
        // `require_signature`: checked for this repository before any job is joined or
        // started (a patched image of the same digest made for another repository is not
        // served here unless this one's signature verifies too); cached, so a warm pull
        // pays a map lookup.
        let original_signature = match self.trust.verify(&self.mirror, route, &top.digest).await {
            Ok(verified) => verified,
            Err(refusal) if refusal.reason.is_unverified() => {
                return self.refused(route, original, &refusal.detail, refusal.reason)
            }
            Err(refusal) => {
                tracing::warn!(upstream = %route.upstream.name(), repository = %route.repository, original = %top.digest, error = %refusal.detail, "require_signature: the signature cannot be read; not patched for now");
                return self.fallback(mode, original, &refusal.detail, refusal.reason);
            }
        };
        // Options are built only when a job starts, not on every tag request.
        let status = self
            .jobs
            .status_or_start(route, &top.digest, || PatchOptions {
                original_signature,
                ..self.options_for(route, tag)
            })
            .await;
        let status = match status {
            JobStatus::Running(mut waiter) => match mode {
                PatchMode::Wait | PatchMode::FailClosed => {
                    match tokio::time::timeout(self.wait_timeout, waiter.finished()).await {
                        Ok(outcome) => JobStatus::Done(outcome),
                        Err(_) => JobStatus::Running(waiter),
                    }
                }
                _ => JobStatus::Running(waiter),
            },
            other => other,
        };
        match status {
            JobStatus::Done(outcome) => match outcome.as_ref() {
                JobOutcome::Patched { digest, .. } => {
                    let Some(patched) = self.mirror.store().manifest(digest).await? else {
                        // Evicted: patch again; meanwhile the policy's fallback.
                        self.jobs.forget(route, &top.digest);
                        return self.fallback(
                            mode,
                            original,
                            "the patched image was evicted",
                            FallbackReason::Evicted,
                        );
                    };
                    if accept.allows(&patched.media_type) {
                        return Ok((TagAnswer::Patched(patched), TagServed::Patched));
                    }
                    let platform = self.mirror.negotiate(&patched, accept)?;
                    match self.mirror.store().manifest(&platform).await? {
                        Some(m) => Ok((TagAnswer::Patched(m), TagServed::Patched)),
                        None => self.fallback(
                            mode,
                            original,
                            "the patched image was evicted",
                            FallbackReason::Evicted,
                        ),
                    }
                }
                JobOutcome::Unchanged { .. } => {
                    Ok((TagAnswer::Original(original), TagServed::Unchanged))
                }
                JobOutcome::Failed { error, reason } => {
                    self.fallback(mode, original, error, *reason)
                }
            },
            JobStatus::Running(_) => self.fallback(
                mode,
                original,
                "the patch is still running",
                FallbackReason::PatchRunning,
            ),
            JobStatus::Rejected(why) => {
                self.fallback(mode, original, &why, FallbackReason::QueueFull)
            }
        }
    }

    /// What `require_signature`'s `unverified` says for an original that was not patched
    /// because its signature did not verify: the original, `403` or `503`.
    fn refused(
        &self,
        route: &Route,
        original: Reference,
        why: &str,
        reason: FallbackReason,
    ) -> Result<(TagAnswer, TagServed), ApiError> {
        self.mirror.metrics().fallback_pull(reason);
        match self.trust.answer(route) {
            UnverifiedAnswer::Original => Ok((TagAnswer::Original(original), TagServed::Fallback)),
            UnverifiedAnswer::Deny => Err(ApiError::new(
                ErrorCode::Denied,
                format!("not patched and not served: {why} (require_signature)"),
            )
            .with_status(http::StatusCode::FORBIDDEN)),
            UnverifiedAnswer::FailClosed => {
                let mut error = fail_closed_error(why, reason);
                error.retry_after = Some(Duration::from_secs(10));
                Err(error)
            }
        }
    }

    /// The original, unless the policy is fail-closed.
    fn fallback(
        &self,
        mode: PatchMode,
        original: Reference,
        why: &str,
        reason: FallbackReason,
    ) -> Result<(TagAnswer, TagServed), ApiError> {
        if mode == PatchMode::FailClosed {
            let mut error = fail_closed_error(why, reason);
            error.retry_after = Some(Duration::from_secs(10));
            self.mirror.metrics().fallback_pull(reason);
            return Err(error);
        }
        self.mirror.metrics().fallback_pull(reason);
        Ok((TagAnswer::Original(original), TagServed::Fallback))
    }
}

/// The `503` of a fail-closed pull. A job that failed is told as its closed reason and an
/// id, never its error: that names store paths, scratch directories and script output.
/// The log line with the id has the whole error.
fn fail_closed_error(why: &str, reason: FallbackReason) -> ApiError {
    let why = match reason {
        // Our own words, the same for every image.
        FallbackReason::PatchRunning
        | FallbackReason::QueueFull
        | FallbackReason::Evicted
        | FallbackReason::SignatureMissing
        | FallbackReason::SignatureInvalid => why.to_owned(),
        FallbackReason::SandboxUnavailable
        | FallbackReason::ScriptsCannotRun
        | FallbackReason::ScriptFailed
        | FallbackReason::BuildkitFailed
        | FallbackReason::UpstreamFailed
        | FallbackReason::PatchFailed => {
            let id = crate::error::new_error_id();
            tracing::warn!(error_id = %id, error = %why, ?reason, "fail_closed: the patch failed");
            format!("the patch failed ({reason:?}); the server's log has the details under {id}")
        }
    };
    let mut error = ApiError::new(
        ErrorCode::Unknown,
        format!("no patched image yet ({why}); the policy is fail_closed"),
    );
    error.status = http::StatusCode::SERVICE_UNAVAILABLE;
    error.origin = crate::error::Origin::Upstream;
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fail_closed_answer_names_no_store_path_of_a_failed_job() {
        let failed = crate::store::StoreError::io(
            "renaming",
            std::path::Path::new("/var/lib/patchpull/store/manifests/sha256/ab"),
            std::io::Error::other("No space left on device"),
        );
        let error = fail_closed_error(&failed.to_string(), FallbackReason::PatchFailed);
        assert_eq!(error.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.message.contains("/var/lib"), "{}", error.message);
        assert!(error.message.contains("fail_closed"), "{}", error.message);
        let running = fail_closed_error("the patch is still running", FallbackReason::PatchRunning);
        assert!(
            running.message.contains("still running"),
            "{}",
            running.message
        );
    }
}
