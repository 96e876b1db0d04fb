//! `storage.backend`, `[storage.registry]` and `[coordination]`: patchpull as N stateless
//! replicas over an existing registry (the shared store) and Redis (one patch job at a
//! time across replicas). These keys are a contract other tooling (charts, operators)
//! relies on; their meaning is in `docs/configuration.md`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::{fmt_duration, text_or_number, Problems};
use super::secret::Secret;
use super::upstream::redact_userinfo;
use super::{defaults, UpstreamConfig};

/// `[storage.registry]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackingRegistry {
    /// `https://host[:port]` of the backing registry.
    pub url: String,
    /// Repositories are `<repository_prefix>/<upstream>/<repository>`.
    #[serde(default = "default_prefix")]
    pub repository_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Extra PEM CA certificates trusted for the backing registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Answer blob requests the backing registry holds with a 307 to it (not supported yet:
    /// only `false` is accepted; blobs are streamed through and verified).
    #[serde(default)]
    pub redirect_blobs: bool,
}

fn default_prefix() -> String {
    defaults::BACKING_REPOSITORY_PREFIX.to_owned()
}

/// `[coordination]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCoordination {
    /// `redis://[user:password@]host:port/db`; empty: no coordination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<Secret>,
    /// How long a job's lease lives without renewal (a replica that dies loses it then).
    #[serde(deserialize_with = "text_or_number")]
    pub lease_ttl: String,
    /// How often a replica waiting for another's job looks at the shared store.
    #[serde(deserialize_with = "text_or_number")]
    pub poll_interval: String,
}

impl Default for RawCoordination {
    fn default() -> Self {
        RawCoordination {
            redis_url: None,
            lease_ttl: fmt_duration(defaults::COORDINATION_LEASE_TTL),
            poll_interval: fmt_duration(defaults::COORDINATION_POLL_INTERVAL),
        }
    }
}

/// Where patched images and the original -> patched index live.
#[derive(Debug, Clone)]
pub enum StorageBackend {
    /// Files under `storage.path` (one process).
    Local,
    /// An existing OCI registry that replicas share.
    Registry(Box<BackingRegistry>),
}

/// The checked `[storage.registry]`.
#[derive(Debug, Clone)]
pub struct BackingRegistry {
    /// The registry as a client reaches it: credentials, CA, timeouts and retries as for an
    /// `[[upstream]]` (named `backing-registry` in logs and metrics).
    pub client: UpstreamConfig,
    pub repository_prefix: String,
}

/// The checked `[coordination]`.
#[derive(Debug, Clone)]
pub struct CoordinationConfig {
    /// `None`: replicas do not coordinate (duplicates are harmless, see the docs).
    pub redis_url: Option<Secret>,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
}

/// Name of the backing registry's client in logs and metrics.
pub const BACKING_REGISTRY_NAME: &str = "backing-registry";

pub(super) fn validate_backend(
    backend: &str,
    registry: Option<RawBackingRegistry>,
    p: &mut Problems,
) -> StorageBackend {
    match (backend, registry) {
        ("local", None) => StorageBackend::Local,
        ("local", Some(_)) => {
            p.0.push(
                "`storage.registry`: set, but `storage.backend` is \"local\"; set \
                 `storage.backend = \"registry\"` or remove the section"
                    .into(),
            );
            StorageBackend::Local
        }
        ("registry", None) => {
            p.0.push(
                "`storage.registry`: `storage.backend = \"registry\"` needs a \
                 `[storage.registry]` section with `url`"
                    .into(),
            );
            StorageBackend::Local
        }
        ("registry", Some(r)) => validate_registry(r, p)
            .map(|r| StorageBackend::Registry(Box::new(r)))
            .unwrap_or(StorageBackend::Local),
        (other, _) => {
            p.0.push(format!(
                "`storage.backend`: expected \"local\" or \"registry\", found {other:?}"
            ));
            StorageBackend::Local
        }
    }
}

fn validate_registry(r: RawBackingRegistry, p: &mut Problems) -> Option<BackingRegistry> {
    let shown = redact_userinfo(&r.url);
    let url = match reqwest::Url::parse(&r.url) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            p.0.push(format!(
                "`storage.registry.url`: {shown:?} carries credentials; set `username` and `password` instead"
            ));
            None
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        _ => {
            p.0.push(format!(
                "`storage.registry.url`: expected an http or https URL, found {shown:?}"
            ));
            None
        }
    };
    let prefix_ok = !r.repository_prefix.is_empty()
        && r.repository_prefix
            .split('/')
            .all(crate::distribution::reference::is_valid_path_component);
    if !prefix_ok {
        p.0.push(format!(
            "`storage.registry.repository_prefix`: {:?} is not a repository path \
             (lowercase components separated by '/')",
            r.repository_prefix
        ));
    }
    if r.password.is_some() && r.username.is_none() {
        p.0.push("`storage.registry.password`: a password needs a username".into());
    }
    if let Some(ca) = &r.ca_file {
        if !ca.is_file() {
            p.0.push(format!(
                "`storage.registry.ca_file`: file {} does not exist",
                ca.display()
            ));
        }
    }
    if r.redirect_blobs {
        p.0.push(
            "`storage.registry.redirect_blobs`: redirecting blob requests to the backing \
             registry is not supported yet; remove it (blobs are streamed through, verified)"
                .into(),
        );
    }
    let url = url?;
    Some(BackingRegistry {
        client: UpstreamConfig {
            name: BACKING_REGISTRY_NAME.to_owned(),
            aliases: Vec::new(),
            url,
            default: false,
            username: r.username,
            password: r.password,
            ca_file: r.ca_file,
            insecure_skip_verify: r.insecure_skip_verify,
            library_prefix: false,
            tag_ttl: Duration::ZERO,
            retries: defaults::UPSTREAM_RETRIES,
            connect_timeout: defaults::UPSTREAM_CONNECT_TIMEOUT,
            timeout: defaults::UPSTREAM_TIMEOUT,
            redirect_hosts: Vec::new(),
            auth_hosts: Vec::new(),
            require_signature: None,
        },
        repository_prefix: r.repository_prefix,
    })
}

pub(super) fn validate_coordination(raw: RawCoordination, p: &mut Problems) -> CoordinationConfig {
    let lease_ttl = p.duration("coordination.lease_ttl", &raw.lease_ttl);
    let poll_interval = p.duration("coordination.poll_interval", &raw.poll_interval);
    if lease_ttl < Duration::from_secs(1) {
        p.0.push("`coordination.lease_ttl`: must be at least 1s".into());
    }
    if poll_interval.is_zero() || poll_interval > lease_ttl {
        p.0.push(
            "`coordination.poll_interval`: must be more than 0 and at most `coordination.lease_ttl`"
                .into(),
        );
    }
    let redis_url = raw.redis_url.filter(|u| !u.expose().trim().is_empty());
    if let Some(url) = &redis_url {
        let shown = redact_userinfo(url.expose());
        match reqwest::Url::parse(url.expose()) {
            Ok(u) if u.scheme() == "redis" && u.host().is_some() => {}
            Ok(u) if u.scheme() == "rediss" => p.0.push(format!(
                "`coordination.redis_url`: {shown:?}: TLS to Redis (rediss://) is not supported \
                 by this build; reach Redis over a private network or a TLS sidecar"
            )),
            _ => p.0.push(format!(
                "`coordination.redis_url`: expected redis://host:port/db, found {shown:?}"
            )),
        }
    }
    CoordinationConfig {
        redis_url,
        lease_ttl,
        poll_interval,
    }
}

/// `[storage.registry]` written back (for `config check`).
pub(super) fn raw_registry(backend: &StorageBackend) -> Option<RawBackingRegistry> {
    match backend {
        StorageBackend::Local => None,
        StorageBackend::Registry(r) => Some(RawBackingRegistry {
            url: r.client.url.to_string(),
            repository_prefix: r.repository_prefix.clone(),
            username: r.client.username.clone(),
            password: r.client.password.clone(),
            ca_file: r.client.ca_file.clone(),
            insecure_skip_verify: r.client.insecure_skip_verify,
            redirect_blobs: false,
        }),
    }
}

pub(super) fn raw_coordination(c: &CoordinationConfig) -> RawCoordination {
    RawCoordination {
        redis_url: c.redis_url.clone(),
        lease_ttl: fmt_duration(c.lease_ttl),
        poll_interval: fmt_duration(c.poll_interval),
    }
}

pub(super) fn backend_name(backend: &StorageBackend) -> String {
    match backend {
        StorageBackend::Local => "local".into(),
        StorageBackend::Registry(_) => "registry".into(),
    }
}
