//! `[patch]`: patching on pull. What a tag pull gets while its image is not patched yet,
//! and how much patching may run at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults;

/// What a pull of a tag gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMode {
    /// Wait up to `wait_timeout` for the patch, then serve the original and finish in the
    /// background (fail-open).
    Wait,
    /// Serve the original now; later pulls get the patched image.
    Background,
    /// Answer 503 until a patched image exists (fail-closed).
    FailClosed,
    /// A plain mirror: never patch.
    Off,
}

impl PatchMode {
    pub fn parse(text: &str) -> Option<PatchMode> {
        match text {
            "wait" => Some(PatchMode::Wait),
            "background" => Some(PatchMode::Background),
            "fail_closed" => Some(PatchMode::FailClosed),
            "off" => Some(PatchMode::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatchMode::Wait => "wait",
            PatchMode::Background => "background",
            PatchMode::FailClosed => "fail_closed",
            PatchMode::Off => "off",
        }
    }
}

/// What a multi-platform index is served as when some of its platforms cannot be patched
/// (the others were). Platforms with nothing to fix never make an index partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartialIndex {
    /// The patched platforms patched, the others' original manifests (their exact
    /// descriptors), each descriptor annotated with what became of it.
    #[default]
    PatchedWherePossible,
    /// The original index, untouched, as when the patch fails.
    Original,
}

impl PartialIndex {
    pub fn parse(text: &str) -> Option<PartialIndex> {
        match text {
            "patched_where_possible" => Some(PartialIndex::PatchedWherePossible),
            "original" => Some(PartialIndex::Original),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PartialIndex::PatchedWherePossible => "patched_where_possible",
            PartialIndex::Original => "original",
        }
    }
}

/// Settings for the repositories a policy matches; unset fields take `[patch]`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPolicy {
    /// Glob over the upstream's name; `*` for any.
    pub upstream: String,
    /// Glob over the repository (`library/nginx`, `team/*`).
    pub repository: String,
    pub mode: Option<PatchMode>,
    /// Findings below this severity are not patched (reports that carry severities).
    pub min_severity: Option<crate::scan::plan::Severity>,
    /// When not empty, only these packages are patched.
    pub include: Vec<String>,
    /// These packages are never patched.
    pub exclude: Vec<String>,
    /// Patch what can be patched: a package that cannot be fetched or installed is left
    /// out (and reported) instead of failing the whole patch.
    pub ignore_errors: bool,
    /// Patch an original only when its cosign signature verifies; wins over the
    /// upstream's.
    pub require_signature: Option<super::RequireSignature>,
}

impl PatchPolicy {
    pub fn matches(&self, upstream: &str, repository: &str) -> bool {
        crate::glob::glob(self.upstream.as_bytes(), upstream.as_bytes())
            && crate::glob::glob(self.repository.as_bytes(), repository.as_bytes())
    }
}

#[derive(Debug, Clone)]
pub struct PatchConfig {
    pub mode: PatchMode,
    pub wait_timeout: Duration,
    /// Patch jobs running at once.
    pub workers: usize,
    /// Jobs waiting for a worker; past it, pulls get the original (or 503 when
    /// fail-closed) and no job is queued.
    pub queue: usize,
    /// A failed patch, or an index some of whose platforms failed, is tried again on a
    /// pull after this long.
    pub retry_failed_after: Duration,
    /// The longest one patch job may take, waiting for a worker included; past it the
    /// job fails (and the pulls fail open).
    pub job_timeout: Duration,
    /// What an index some of whose platforms failed is served as.
    pub partial_index: PartialIndex,
    /// The first policy that matches a repository applies.
    pub policies: Vec<PatchPolicy>,
    /// Bearer token of the admin API (`/patchpull/v1/`); `None` switches it off.
    pub admin_token: Option<super::Secret>,
    /// Who holds `admin_token`, as admin actions are logged.
    pub admin_token_name: String,
    pub engine: super::PatchEngine,
    pub buildkit: super::BuildkitConfig,
    /// Bytes of decompressed layers and unpacked roots kept between patches under
    /// `<storage.path>/unpacked`; 0 keeps nothing.
    pub unpack_cache_size: u64,
    /// Under a policy's `min_severity`, what a finding of unknown severity gets.
    pub unknown_severity: crate::scan::plan::UnknownSeverity,
}

impl PatchConfig {
    /// The policy for a repository, if one matches.
    pub fn policy(&self, upstream: &str, repository: &str) -> Option<&PatchPolicy> {
        self.policies
            .iter()
            .find(|p| p.matches(upstream, repository))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub upstream: String,
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    pub ignore_errors: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_signature: Option<super::signing::RawRequireSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPatch {
    pub mode: String,
    #[serde(deserialize_with = "super::raw::text_or_number")]
    pub wait_timeout: String,
    pub workers: usize,
    pub queue: usize,
    #[serde(deserialize_with = "super::raw::text_or_number")]
    pub retry_failed_after: String,
    #[serde(deserialize_with = "super::raw::text_or_number")]
    pub job_timeout: String,
    pub partial_index: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<RawPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<super::Secret>,
    pub admin_token_name: String,
    pub engine: String,
    pub buildkit: super::buildkit::RawBuildkit,
    #[serde(deserialize_with = "super::raw::text_or_number")]
    pub unpack_cache_size: String,
    /// `patch` or `skip`.
    pub unknown_severity: String,
}

impl Default for RawPatch {
    fn default() -> Self {
        RawPatch {
            mode: defaults::PATCH_MODE.as_str().into(),
            wait_timeout: super::raw::fmt_duration(defaults::PATCH_WAIT_TIMEOUT),
            workers: defaults::PATCH_WORKERS,
            queue: defaults::PATCH_QUEUE,
            retry_failed_after: super::raw::fmt_duration(defaults::PATCH_RETRY_FAILED_AFTER),
            job_timeout: super::raw::fmt_duration(defaults::PATCH_JOB_TIMEOUT),
            partial_index: defaults::PATCH_PARTIAL_INDEX.as_str().into(),
            policy: Vec::new(),
            admin_token: None,
            admin_token_name: defaults::PATCH_ADMIN_TOKEN_NAME.into(),
            engine: defaults::PATCH_ENGINE.as_str().into(),
            buildkit: super::buildkit::RawBuildkit::defaults(),
            unpack_cache_size: super::raw::fmt_size(defaults::PATCH_UNPACK_CACHE_SIZE),
            unknown_severity: defaults::PATCH_UNKNOWN_SEVERITY.as_str().into(),
        }
    }
}

impl RawPatch {
    /// Checks the section; problems are appended to `problems`, each naming its key.
    pub(super) fn validate(
        &self,
        problems: &mut Vec<String>,
        duration: &mut dyn FnMut(&str, &str) -> Duration,
    ) -> PatchConfig {
        let mode = PatchMode::parse(&self.mode).unwrap_or_else(|| {
            problems.push(format!(
                "`patch.mode`: expected \"wait\", \"background\", \"fail_closed\" or \"off\", found {:?}",
                self.mode
            ));
            defaults::PATCH_MODE
        });
        let partial_index = PartialIndex::parse(&self.partial_index).unwrap_or_else(|| {
            problems.push(format!(
                "`patch.partial_index`: expected \"patched_where_possible\" or \"original\", found {:?}",
                self.partial_index
            ));
            defaults::PATCH_PARTIAL_INDEX
        });
        let job_timeout = duration("patch.job_timeout", &self.job_timeout);
        if job_timeout.is_zero() {
            problems.push("`patch.job_timeout`: longer than 0s".into());
        }
        if self.workers == 0 {
            problems.push("`patch.workers`: at least 1".into());
        }
        let mut policies = Vec::new();
        for (i, raw) in self.policy.iter().enumerate() {
            let key = |field: &str| format!("patch.policy[{i}].{field}");
            if raw.repository.is_empty() {
                problems.push(format!(
                    "`{}`: a glob such as \"library/*\"",
                    key("repository")
                ));
            }
            let mode = raw.mode.as_deref().and_then(|m| {
                let parsed = PatchMode::parse(m);
                if parsed.is_none() {
                    problems.push(format!(
                        "`{}`: expected \"wait\", \"background\", \"fail_closed\" or \"off\", found {m:?}",
                        key("mode")
                    ));
                }
                parsed
            });
            let min_severity = raw.min_severity.as_deref().and_then(|s| {
                let parsed = crate::scan::plan::Severity::parse(s);
                if parsed.is_none() {
                    problems.push(format!(
                        "`{}`: expected LOW, MEDIUM, HIGH or CRITICAL, found {s:?}",
                        key("min_severity")
                    ));
                }
                parsed
            });
            let require_signature = raw
                .require_signature
                .as_ref()
                .map(|r| r.validate(&key("require_signature"), problems));
            policies.push(PatchPolicy {
                require_signature,
                upstream: if raw.upstream.is_empty() {
                    "*".to_owned()
                } else {
                    raw.upstream.clone()
                },
                repository: raw.repository.clone(),
                mode,
                min_severity,
                include: raw.include.clone(),
                exclude: raw.exclude.clone(),
                ignore_errors: raw.ignore_errors,
            });
        }
        let engine = super::PatchEngine::parse(&self.engine).unwrap_or_else(|| {
            problems.push(format!(
                "`patch.engine`: expected \"native\", \"buildkit\" or \"auto\", found {:?}",
                self.engine
            ));
            defaults::PATCH_ENGINE
        });
        let buildkit = self.buildkit.validate(problems, duration);
        if engine == super::PatchEngine::Buildkit && buildkit.address.is_none() {
            problems
                .push("`patch.engine = \"buildkit\"` needs `patch.buildkit.address`".to_owned());
        }
        if self.admin_token_name.is_empty()
            || !self
                .admin_token_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            problems.push(format!(
                "`patch.admin_token_name`: letters, digits and `-_.@` only, found {:?}",
                self.admin_token_name
            ));
        }
        let unpack_cache_size = match self.unpack_cache_size.trim().parse::<bytesize::ByteSize>() {
            Ok(size) => size.as_u64(),
            Err(e) => {
                problems.push(format!(
                    "`patch.unpack_cache_size`: expected a size such as \"4GiB\" (or 0 to keep nothing), found {:?} ({e})",
                    self.unpack_cache_size
                ));
                0
            }
        };
        let unknown_severity = crate::scan::plan::UnknownSeverity::parse(&self.unknown_severity)
            .unwrap_or_else(|| {
                problems.push(format!(
                    "`patch.unknown_severity`: expected \"patch\" or \"skip\", found {:?}",
                    self.unknown_severity
                ));
                defaults::PATCH_UNKNOWN_SEVERITY
            });
        PatchConfig {
            unknown_severity,
            engine,
            buildkit,
            unpack_cache_size,
            mode,
            wait_timeout: duration("patch.wait_timeout", &self.wait_timeout),
            workers: self.workers.max(1),
            queue: self.queue,
            retry_failed_after: duration("patch.retry_failed_after", &self.retry_failed_after),
            job_timeout,
            partial_index,
            policies,
            admin_token: self.admin_token.clone().filter(|t| !t.expose().is_empty()),
            admin_token_name: self.admin_token_name.clone(),
        }
    }

    pub(super) fn from_checked(c: &PatchConfig) -> RawPatch {
        RawPatch {
            mode: c.mode.as_str().into(),
            wait_timeout: super::raw::fmt_duration(c.wait_timeout),
            workers: c.workers,
            queue: c.queue,
            retry_failed_after: super::raw::fmt_duration(c.retry_failed_after),
            job_timeout: super::raw::fmt_duration(c.job_timeout),
            partial_index: c.partial_index.as_str().into(),
            policy: c
                .policies
                .iter()
                .map(|p| RawPolicy {
                    upstream: p.upstream.clone(),
                    repository: p.repository.clone(),
                    mode: p.mode.map(|m| m.as_str().to_owned()),
                    min_severity: p.min_severity.map(|s| s.as_str().to_owned()),
                    include: p.include.clone(),
                    exclude: p.exclude.clone(),
                    ignore_errors: p.ignore_errors,
                    require_signature: p
                        .require_signature
                        .as_ref()
                        .map(super::signing::RawRequireSignature::from_checked),
                })
                .collect(),
            admin_token: c.admin_token.clone(),
            admin_token_name: c.admin_token_name.clone(),
            engine: c.engine.as_str().into(),
            buildkit: super::buildkit::RawBuildkit::from_checked(&c.buildkit),
            unpack_cache_size: super::raw::fmt_size(c.unpack_cache_size),
            unknown_severity: c.unknown_severity.as_str().into(),
        }
    }
}
