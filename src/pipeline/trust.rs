//! `require_signature`: an original is patched (and so signed with the operator's key)
//! only when its publisher's cosign signature verifies. The signature is the
//! `sha256-<hex>.sig` tag of the original's top digest in its upstream repository, read
//! through the mirror like any other manifest and blob (digests checked); one of its
//! simple-signing layers must verify with the configured public key and name the original's
//! digest and repository ([`crate::sign::verify`]). Keys are loaded once, at start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::Clock;

use crate::config::{Config, PatchPolicy, RequireSignature, UnverifiedAnswer};
use crate::distribution::media_type::Accept;
use crate::distribution::{Digest, Reference};
use crate::metrics::FallbackReason;
use crate::mirror::Mirror;
use crate::sign::attest::VerifiedSignature;
use crate::sign::cosign::{attachment_tag, Attachment};
use crate::sign::verify::{self, Identity, VerifyError};
use crate::sign::VerifyingKey;
use crate::upstream::Route;

/// Why an original is not patched: the closed reason (for metrics and the answer) and the
/// words for the admin API and the client (digests and key fingerprints only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: FallbackReason,
    pub detail: String,
}

/// What was decided about one original in one repository.
type Verdict = Result<Option<VerifiedSignature>, Refusal>;
type Verdicts = HashMap<(String, String, Digest), (Instant, Verdict)>;

/// At most this many verdicts are kept; past it the oldest half is dropped.
const MAX_VERDICTS: usize = 4096;

/// The public keys originals must be signed with, per upstream and per policy, and what
/// their checks decided.
pub(super) struct Trust {
    keys: HashMap<PathBuf, VerifyingKey>,
    policies: Vec<PatchPolicy>,
    /// By (upstream, repository, original digest): a job verifies for the repository that
    /// started it, but its patched image is served to every repository holding the same
    /// digest, so each repository's pulls are checked (from here, once fresh).
    verdicts: Mutex<Verdicts>,
    /// How long a verdict is reused (`patch.retry_failed_after`): a publisher may sign
    /// later, or withdraw a signature.
    verdict_ttl: Duration,
    clock: Clock,
}

impl Trust {
    /// Loads every `require_signature.key` the config names.
    ///
    /// # Errors
    /// A key cannot be read (config validation said so first).
    pub(super) fn new(config: &Config) -> Result<Trust, String> {
        let mut keys = HashMap::new();
        let paths = config
            .upstream
            .iter()
            .filter_map(|u| u.require_signature.as_ref())
            .chain(
                config
                    .patch
                    .policies
                    .iter()
                    .filter_map(|p| p.require_signature.as_ref()),
            )
            .map(|r| r.key.clone());
        for path in paths {
            if keys.contains_key(&path) {
                continue;
            }
            let key = VerifyingKey::load(&path).map_err(|e| format!("require_signature: {e}"))?;
            keys.insert(path, key);
        }
        Ok(Trust {
            keys,
            policies: config.patch.policies.clone(),
            verdicts: Mutex::default(),
            verdict_ttl: config.patch.retry_failed_after,
            clock: config.clock.clone(),
        })
    }

    /// The requirement for `route`: the first matching policy's, else its upstream's.
    pub(super) fn requirement<'a>(&'a self, route: &'a Route) -> Option<&'a RequireSignature> {
        let policy = self
            .policies
            .iter()
            .find(|p| p.matches(route.upstream.name(), &route.repository))
            .and_then(|p| p.require_signature.as_ref());
        policy.or(route.upstream.config().require_signature.as_ref())
    }

    /// What a pull of an image refused under `route` gets.
    pub(super) fn answer(&self, route: &Route) -> UnverifiedAnswer {
        self.requirement(route)
            .map(|r| r.unverified)
            .unwrap_or_default()
    }

    /// Checks the signature of `original` (the top digest) when `route` requires one:
    /// `Ok(None)` when it does not, `Ok(Some)` with what verified it.
    ///
    /// # Errors
    /// A [`Refusal`]: no signature upstream, or none that verifies; or the signature
    /// could not be read (`UpstreamFailed`, a patch failure like any other).
    pub(super) async fn verify(
        &self,
        mirror: &Mirror,
        route: &Route,
        original: &Digest,
    ) -> Verdict {
        let Some(requirement) = self.requirement(route) else {
            return Ok(None);
        };
        let key = (
            route.upstream.name().to_owned(),
            route.repository.clone(),
            original.clone(),
        );
        if let Some((at, verdict)) = self.lock().get(&key) {
            if self.clock.since(*at) < self.verdict_ttl {
                return verdict.clone();
            }
        }
        let verdict = self.check(mirror, route, requirement, original).await;
        // A signature that could not be read is asked for again on the next pull.
        if !matches!(&verdict, Err(r) if r.reason == FallbackReason::UpstreamFailed) {
            let mut verdicts = self.lock();
            if verdicts.len() >= MAX_VERDICTS {
                let mut ages: Vec<Instant> = verdicts.values().map(|(at, _)| *at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                verdicts.retain(|_, (at, _)| *at > cut);
            }
            verdicts.insert(key, (self.clock.now(), verdict.clone()));
        }
        verdict
    }

    /// The originals refused (fresh verdicts only), as the admin API lists jobs: status
    /// `unverified`, the reason in `detail`, the repository in `image`.
    pub(super) fn refusals(&self) -> Vec<super::JobView> {
        self.lock()
            .iter()
            .filter(|(_, (at, _))| self.clock.since(*at) < self.verdict_ttl)
            .filter_map(|((upstream, repository, digest), (at, verdict))| {
                let refusal = verdict.as_ref().err()?;
                Some(super::JobView {
                    upstream: upstream.clone(),
                    original: digest.to_string(),
                    status: "unverified",
                    patched: None,
                    detail: Some(refusal.detail.clone()),
                    partial: None,
                    platforms: Vec::new(),
                    seconds_ago: Some(self.clock.since(*at).as_secs()),
                    record: super::JobRecord {
                        image: Some(format!("{upstream}/{repository}")),
                        ..super::JobRecord::default()
                    },
                })
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Verdicts> {
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn check(
        &self,
        mirror: &Mirror,
        route: &Route,
        requirement: &RequireSignature,
        original: &Digest,
    ) -> Verdict {
        let Some(key) = self.keys.get(&requirement.key) else {
            return Err(Refusal {
                reason: FallbackReason::SignatureInvalid,
                detail: "the require_signature key is not loaded".to_owned(),
            });
        };
        let tag = attachment_tag(original, Attachment::Signature);
        let any = Accept::parse([]);
        let artifact = match mirror
            .manifest(route, &Reference::Tag(tag.clone()), &any)
            .await
        {
            Ok(artifact) => artifact,
            Err(e) if e.status == http::StatusCode::NOT_FOUND => {
                return Err(Refusal {
                    reason: FallbackReason::SignatureMissing,
                    detail: format!("the original {original} has no cosign signature ({tag})"),
                })
            }
            Err(e) => {
                return Err(Refusal {
                    reason: FallbackReason::UpstreamFailed,
                    detail: format!("reading the original's signature {tag}: {}", e.message),
                })
            }
        };
        let invalid = |e: VerifyError| Refusal {
            reason: FallbackReason::SignatureInvalid,
            detail: format!("the original {original}'s signature is refused: {e}"),
        };
        let identity = identity(route);
        let mut first_error = None;
        for layer in verify::signature_layers(&artifact.bytes).map_err(invalid)? {
            let payload = match mirror.read_small_blob(route, &layer.payload).await {
                Ok(payload) if payload.len() as u64 == layer.size => payload,
                Ok(_) | Err(_) => continue,
            };
            match verify::check(&layer, &payload, key, original, &identity) {
                Ok(()) => {
                    return Ok(Some(VerifiedSignature {
                        verified: true,
                        key: key.fingerprint(),
                    }))
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(invalid(
            first_error.unwrap_or(VerifyError::NoSignatureLayer),
        ))
    }
}

/// The repository a signature of an image under `route` must name: the upstream by its
/// name, aliases or `host[:port]`.
fn identity(route: &Route) -> Identity {
    let config = route.upstream.config();
    let mut hosts = vec![config.name.clone()];
    hosts.extend(config.aliases.iter().cloned());
    hosts.push(config.authority());
    Identity {
        hosts,
        repository: route.repository.clone(),
    }
}
