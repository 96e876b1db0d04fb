//! The Kubernetes mutating admission webhook: `POST /admission/v1/mutate` takes an
//! `AdmissionReview` (`admission.k8s.io/v1`) for a Pod and answers with a JSON Patch that
//! points the images of its containers, init containers and ephemeral containers at the
//! patched name space, `<admission.registry>/<upstream>/<repository>:<tag>`, where a tag
//! pull gets the patched image.
//!
//! A digest-pinned image cannot be patched by a mirror (its content is fixed); it is
//! rewritten to `...@<patched digest>` only when that patch already exists, and left as it
//! is otherwise: a webhook has seconds, a patch takes minutes, so the webhook never starts
//! or waits for one (with `admission.signed_digests_only`, only when patchpull's signature
//! of the patched digest exists too). Images from registries that no upstream names are
//! left alone.
//!
//! The webhook never fails a Pod for patchpull's own trouble: a review it cannot read, a
//! lookup that takes too long, or a configuration without `admission.registry` all give
//! "allowed, unchanged", with a logged warning (and a warning in the review when it helps
//! whoever created the Pod).

pub mod patch;
pub mod reference;
pub mod review;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{AdmissionConfig, Config, UpstreamConfig};
use crate::distribution::Digest;
use patch::Replace;
use reference::{ImageReference, InvalidImage, DOCKER_HUB};
use review::{AdmissionRequest, AdmissionResponse, AdmissionReview, Pod, ReviewAnswer};

/// Where the API server sends reviews.
pub const PATH: &str = "/admission/v1/mutate";
/// Largest review read; the API server's own request limit is 3 MiB.
pub const MAX_BODY: usize = 3 << 20;
/// All patched-digest lookups of one review together; the API server waits 10 s at most.
const LOOKUP_BUDGET: Duration = Duration::from_secs(2);
/// Warnings beyond this are dropped, long ones cut: kubectl prints each one.
const MAX_WARNINGS: usize = 8;
const MAX_WARNING_LEN: usize = 240;

/// Answers whether a patched image already exists for an original digest, without
/// starting a patch.
pub trait PatchedDigests: Send + Sync {
    fn patched<'a>(
        &'a self,
        upstream: &'a str,
        digest: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = Option<Digest>> + Send + 'a>>;

    /// Whether patchpull's own cosign signature of `patched` exists.
    fn signed<'a>(
        &'a self,
        upstream: &'a str,
        repository: &'a str,
        patched: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

impl PatchedDigests for crate::pipeline::Pipeline {
    fn patched<'a>(
        &'a self,
        upstream: &'a str,
        digest: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = Option<Digest>> + Send + 'a>> {
        Box::pin(self.jobs().patched_for(upstream, digest))
    }

    fn signed<'a>(
        &'a self,
        upstream: &'a str,
        repository: &'a str,
        patched: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(self.patch_is_signed(upstream, repository, patched))
    }
}

/// What the webhook knows of one upstream: the names a Pod's registry may match.
#[derive(Debug, Clone)]
struct Upstream {
    name: String,
    aliases: Vec<String>,
    authority: String,
    library_prefix: bool,
}

/// The webhook: the `[admission]` rules and the configured upstreams.
#[derive(Debug, Clone)]
pub struct Admission {
    config: AdmissionConfig,
    upstreams: Vec<Upstream>,
}

/// What becomes of one image.
#[derive(Debug, Clone)]
enum Decision {
    Rewrite(String),
    Keep,
    Invalid(InvalidImage),
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        Admission::from_parts(config.admission.clone(), &config.upstream)
    }

    pub fn from_parts(config: AdmissionConfig, upstreams: &[UpstreamConfig]) -> Admission {
        Admission {
            config,
            upstreams: upstreams
                .iter()
                .map(|u| Upstream {
                    name: u.name.clone(),
                    aliases: u.aliases.clone(),
                    authority: u.authority().to_ascii_lowercase(),
                    library_prefix: u.library_prefix,
                })
                .collect(),
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Answers one review (the request body) with the response body. Never fails: whatever
    /// goes wrong, the object is allowed unchanged.
    pub async fn review(&self, digests: &dyn PatchedDigests, body: &[u8]) -> Vec<u8> {
        let value: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return malformed(
                    review::API_VERSION_V1,
                    "",
                    &format!("the body is not JSON: {e}"),
                )
            }
        };
        let uid = value
            .pointer("/request/uid")
            .and_then(|u| u.as_str())
            .unwrap_or("");
        let api_version = match value.get("apiVersion").and_then(|v| v.as_str()) {
            Some(review::API_VERSION_V1BETA1) => review::API_VERSION_V1BETA1,
            _ => review::API_VERSION_V1,
        };
        let parsed = match AdmissionReview::deserialize(&value) {
            Ok(r) => r,
            Err(e) => return malformed(api_version, uid, &format!("not an AdmissionReview: {e}")),
        };
        if parsed.kind != review::KIND
            || !matches!(
                parsed.api_version.as_str(),
                review::API_VERSION_V1 | review::API_VERSION_V1BETA1
            )
        {
            return malformed(
                api_version,
                uid,
                &format!(
                    "expected kind {} of {}, found kind {:?} of {:?}",
                    review::KIND,
                    review::API_VERSION_V1,
                    short(&parsed.kind),
                    short(&parsed.api_version)
                ),
            );
        }
        let Some(request) = parsed.request else {
            return malformed(api_version, uid, "the review has no request");
        };
        if request.uid.is_empty() {
            return malformed(api_version, uid, "request.uid is empty");
        }
        let (ops, warnings) = self.mutate(digests, &request).await;
        answer(api_version, &request.uid, &ops, warnings)
    }

    /// The patch for one request and the warnings for its creator.
    async fn mutate(
        &self,
        digests: &dyn PatchedDigests,
        request: &AdmissionRequest,
    ) -> (Vec<Replace>, Vec<String>) {
        let uid = request.uid.as_str();
        if !self.config.enabled {
            return (Vec::new(), Vec::new());
        }
        let kind = &request.kind;
        if !(kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod") {
            let what = if kind.group.is_empty() {
                format!("{} {}", kind.version, kind.kind)
            } else {
                format!("{}/{} {}", kind.group, kind.version, kind.kind)
            };
            tracing::warn!(uid, kind = %what, "admission: the webhook rewrites Pods only; check its rules");
            return (
                Vec::new(),
                vec![warning(&format!(
                    "rewrites Pods only, not {}; allowed unchanged",
                    short(&what)
                ))],
            );
        }
        if !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
            return (Vec::new(), Vec::new());
        }
        if self.config.registry.is_empty() {
            tracing::warn!(
                uid,
                "admission: `admission.registry` is not set; images are not rewritten"
            );
            return (
                Vec::new(),
                vec![warning(
                    "admission.registry is not configured; images left unchanged",
                )],
            );
        }
        let pod = match request.object.as_ref().map(Pod::deserialize) {
            Some(Ok(pod)) => pod,
            Some(Err(e)) => {
                let reason = format!("request.object is not a Pod: {e}");
                tracing::warn!(uid, %reason, "admission: malformed review; allowed unchanged");
                return (Vec::new(), vec![warning(&reason)]);
            }
            None => {
                tracing::warn!(
                    uid,
                    "admission: the review has no request.object; allowed unchanged"
                );
                return (
                    Vec::new(),
                    vec![warning("request.object is missing; allowed unchanged")],
                );
            }
        };
        let namespace = request
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(pod.metadata.namespace.as_deref())
            .unwrap_or("");
        if !self.config.namespace_matches(namespace) {
            tracing::debug!(uid, namespace, "admission: namespace not rewritten");
            return (Vec::new(), Vec::new());
        }

        // An UPDATE gets only the images it sets rewritten: a new image on a running
        // container restarts it, and the ephemeral-containers subresource refuses changes
        // to anything but new ephemeral containers.
        let fields: &[&str] = match request.sub_resource.as_deref().unwrap_or("") {
            "" => &["containers", "initContainers", "ephemeralContainers"],
            "ephemeralcontainers" => &["ephemeralContainers"],
            _ => return (Vec::new(), Vec::new()),
        };
        let old = if request.operation == "UPDATE" {
            match request.old_object.as_ref().map(Pod::deserialize) {
                Some(Ok(old)) => Some(old),
                _ => {
                    let reason = "an UPDATE without a readable request.oldObject";
                    tracing::warn!(
                        uid,
                        reason,
                        "admission: malformed review; allowed unchanged"
                    );
                    return (Vec::new(), vec![warning(reason)]);
                }
            }
        } else {
            None
        };

        let deadline = tokio::time::Instant::now() + LOOKUP_BUDGET;
        let mut decided: HashMap<&str, Decision> = HashMap::new();
        let mut ops = Vec::new();
        let mut warnings = Vec::new();
        for &field in fields {
            for (i, container) in pod.spec.list(field).iter().enumerate() {
                let Some(image) = container.image.as_deref() else {
                    continue;
                };
                let unchanged = old.as_ref().is_some_and(|old| {
                    old.spec
                        .list(field)
                        .iter()
                        .any(|c| c.name == container.name && c.image.as_deref() == Some(image))
                });
                if unchanged {
                    continue;
                }
                let decision = match decided.get(image) {
                    Some(d) => d.clone(),
                    None => {
                        let d = self.decide(digests, image, deadline, uid).await;
                        decided.insert(image, d.clone());
                        d
                    }
                };
                match decision {
                    Decision::Rewrite(to) => {
                        let index = i.to_string();
                        ops.push(Replace::new(&["spec", field, &index, "image"], to));
                    }
                    Decision::Keep => {}
                    Decision::Invalid(e) => {
                        let name = container.name.as_deref().unwrap_or("?");
                        tracing::warn!(uid, container = name, image, error = %e, "admission: image left unchanged");
                        warnings.push(warning(&format!(
                            "image {:?} of container {:?} is not a valid reference ({e}); left unchanged",
                            short(image),
                            short(name)
                        )));
                    }
                }
            }
        }
        if !ops.is_empty() {
            let pod_name = pod
                .metadata
                .name
                .as_deref()
                .or(pod.metadata.generate_name.as_deref())
                .unwrap_or("");
            tracing::info!(
                uid,
                namespace,
                pod = pod_name,
                images = ops.len(),
                "admission: images pointed at the patched name space"
            );
        }
        (ops, warnings)
    }

    /// What becomes of `image`.
    async fn decide(
        &self,
        digests: &dyn PatchedDigests,
        image: &str,
        deadline: tokio::time::Instant,
        uid: &str,
    ) -> Decision {
        let parsed = match ImageReference::parse(image) {
            Ok(r) => r,
            Err(e) => return Decision::Invalid(e),
        };
        // Already in the patched name space (a re-invocation, or written that way).
        if parsed.domain.eq_ignore_ascii_case(&self.config.registry) {
            return Decision::Keep;
        }
        let Some(upstream) = self.upstream_for(&parsed.domain) else {
            return Decision::Keep;
        };
        let repository = if upstream.library_prefix && !parsed.path.contains('/') {
            format!("library/{}", parsed.path)
        } else {
            parsed.path.clone()
        };
        if !self.config.image_matches(&upstream.name, &repository) {
            return Decision::Keep;
        }
        let mut to = format!("{}/{}/{}", self.config.registry, upstream.name, repository);
        if let Some(tag) = &parsed.tag {
            to.push(':');
            to.push_str(tag);
        }
        let Some(original) = &parsed.digest else {
            return Decision::Rewrite(to);
        };
        if !self.config.rewrite_digests {
            return Decision::Keep;
        }
        let lookup = async {
            let patched = digests.patched(&upstream.name, original).await?;
            if self.config.signed_digests_only
                && !digests.signed(&upstream.name, &repository, &patched).await
            {
                tracing::info!(
                    uid,
                    image,
                    %patched,
                    "admission: the patched image has no signature; left unchanged (admission.signed_digests_only)"
                );
                return None;
            }
            Some(patched)
        };
        match tokio::time::timeout_at(deadline, lookup).await {
            Ok(Some(patched)) => {
                to.push('@');
                to.push_str(&patched.to_string());
                Decision::Rewrite(to)
            }
            Ok(None) => Decision::Keep,
            Err(_) => {
                tracing::warn!(
                    uid,
                    image,
                    "admission: looking up the patched digest took too long; left unchanged"
                );
                Decision::Keep
            }
        }
    }

    /// The upstream a registry domain names: by name or alias first, then by the URL's
    /// `host[:port]`; Docker Hub's hosts all name `docker.io`.
    fn upstream_for(&self, domain: &str) -> Option<&Upstream> {
        self.upstreams
            .iter()
            .find(|u| u.name == domain || u.aliases.iter().any(|a| a == domain))
            .or_else(|| self.upstreams.iter().find(|u| u.authority == domain))
            .or_else(|| {
                (domain == DOCKER_HUB).then_some(())?;
                self.upstreams.iter().find(|u| {
                    matches!(
                        u.authority.as_str(),
                        "registry-1.docker.io" | "index.docker.io"
                    )
                })
            })
    }
}

/// The answer to a request whose body could not be read at all (too large, cut off).
pub fn unreadable(reason: &str) -> Vec<u8> {
    malformed(
        review::API_VERSION_V1,
        "",
        &format!("the body could not be read: {reason}"),
    )
}

fn malformed(api_version: &str, uid: &str, reason: &str) -> Vec<u8> {
    tracing::warn!(
        uid,
        reason,
        "admission: malformed review; allowed unchanged"
    );
    answer(
        api_version,
        uid,
        &[],
        vec![warning(&format!(
            "malformed AdmissionReview ({reason}); allowed unchanged"
        ))],
    )
}

fn answer(api_version: &str, uid: &str, ops: &[Replace], mut warnings: Vec<String>) -> Vec<u8> {
    warnings.truncate(MAX_WARNINGS);
    let (patch_type, patch) = if ops.is_empty() {
        (None, None)
    } else {
        (Some("JSONPatch"), Some(patch::encode(ops)))
    };
    let answer = ReviewAnswer {
        api_version: api_version.to_owned(),
        kind: review::KIND,
        response: AdmissionResponse {
            uid: uid.to_owned(),
            allowed: true,
            patch_type,
            patch,
            warnings,
        },
    };
    serde_json::to_vec(&answer).unwrap_or_else(|_| {
        // Unreachable in practice (plain strings); still an answer that lets the Pod in.
        format!(
            r#"{{"apiVersion":"{}","kind":"AdmissionReview","response":{{"uid":"","allowed":true}}}}"#,
            review::API_VERSION_V1
        )
        .into_bytes()
    })
}

fn warning(text: &str) -> String {
    let mut w = format!("patchpull: {text}");
    if w.len() > MAX_WARNING_LEN {
        let mut cut = MAX_WARNING_LEN;
        while !w.is_char_boundary(cut) {
            cut -= 1;
        }
        w.truncate(cut);
        w.push_str("...");
    }
    w
}

fn short(text: &str) -> String {
    text.chars().take(120).collect()
}

#[cfg(test)]
mod tests;
