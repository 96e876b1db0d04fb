//! Talking to upstream registries. The [`Allowlist`] is built from config and is the only
//! way to reach an upstream: a request's `ns=` or path prefix selects one of the configured
//! upstreams or is refused, so a client can never make the proxy connect anywhere else.

pub mod auth;
mod backing;
mod client;
mod error;
mod hosts;
mod listing;
pub mod push;
pub(crate) mod response;
pub mod retry;

use std::sync::Arc;

pub use backing::backing_registry;
pub use client::{FetchedManifest, ManifestHead, Referrers, Upstream};
pub use error::UpstreamError;
pub use push::BlobSource;
pub(crate) use response::describe_reqwest;

use crate::config::UpstreamConfig;
use crate::distribution::reference::is_valid_name;
use crate::distribution::ErrorCode;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The configured upstreams; nothing else creates an [`Upstream`].
pub struct Allowlist {
    upstreams: Vec<Arc<Upstream>>,
    default: Option<usize>,
}

/// Which upstream a request goes to and the repository name to ask it for.
#[derive(Clone)]
pub struct Route {
    pub upstream: Arc<Upstream>,
    pub repository: String,
}

impl Allowlist {
    pub fn new(
        configs: &[UpstreamConfig],
        metrics: Arc<Metrics>,
    ) -> Result<Allowlist, UpstreamError> {
        Self::with_clock(configs, metrics, crate::clock::Clock::new())
    }

    /// [`Allowlist::new`] with the clock the token caches go by.
    pub fn with_clock(
        configs: &[UpstreamConfig],
        metrics: Arc<Metrics>,
        clock: crate::clock::Clock,
    ) -> Result<Allowlist, UpstreamError> {
        let mut upstreams = Vec::new();
        let mut default = None;
        for (i, cfg) in configs.iter().enumerate() {
            if cfg.default {
                default = Some(i);
            }
            upstreams.push(Arc::new(Upstream::with_clock(
                cfg.clone(),
                metrics.clone(),
                clock.clone(),
            )?));
        }
        Ok(Allowlist { upstreams, default })
    }

    fn by_name(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams
            .iter()
            .find(|u| u.config().name == name || u.config().aliases.iter().any(|a| a == name))
    }

    /// Picks the upstream for a request: `ns=` first (matching a name, an alias or the
    /// upstream URL's `host[:port]`), then a path prefix naming an upstream, then the
    /// default. `library/` is added to one-component names for Docker Hub-like upstreams.
    ///
    /// # Errors
    /// `400 NAME_INVALID` for a name outside the distribution grammar (whoever built it:
    /// the admin API and admission pass names through here too, and a `..` would reach
    /// another path upstream); `404 NAME_UNKNOWN` for an `ns=` naming no upstream, and for a
    /// first component that names a registry host (`evil.example/x`, `host:5000/x`,
    /// `localhost/x`) no upstream is configured for: such a name is never sent to the
    /// default upstream.
    pub fn route(&self, name: &str, ns: Option<&str>) -> Result<Route, ApiError> {
        if !is_valid_name(name) {
            return Err(ApiError::new(
                ErrorCode::NameInvalid,
                format!("invalid repository name {:?}", truncate(name)),
            ));
        }
        let (upstream, repo) = if let Some(ns) = ns {
            let upstream = self
                .by_name(ns)
                .or_else(|| self.upstreams.iter().find(|u| u.config().authority() == ns))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::NameUnknown,
                        format!(
                            "no upstream named {:?} is configured (ns parameter)",
                            truncate(ns)
                        ),
                    )
                })?;
            (upstream, name)
        } else if let Some((upstream, rest)) = name
            .split_once('/')
            .and_then(|(first, rest)| self.by_name(first).map(|u| (u, rest)))
        {
            (upstream, rest)
        } else if let Some(host) = name
            .split_once('/')
            .map(|(first, _)| first)
            .filter(|first| looks_like_registry_host(first))
        {
            return Err(ApiError::new(
                ErrorCode::NameUnknown,
                format!(
                    "no upstream named {:?} is configured (path prefix)",
                    truncate(host)
                ),
            ));
        } else {
            let upstream = self
                .default
                .and_then(|i| self.upstreams.get(i))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::NameUnknown,
                        format!(
                        "repository {name:?} names no configured upstream (use ns= or a path \
                         prefix such as /v2/<upstream>/<repository>) and no default upstream is set"
                    ),
                    )
                })?;
            (upstream, name)
        };
        let repository = if upstream.config().library_prefix && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        Ok(Route {
            upstream: upstream.clone(),
            repository,
        })
    }
}

/// Docker's rule for the first component of a reference: a registry host when it has a
/// `.` or a `:` or is `localhost`.
fn looks_like_registry_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

impl UpstreamError {
    /// The client-facing error; `not_found` is the code for a 404 (manifest or blob).
    pub fn into_api(self, not_found: ErrorCode) -> ApiError {
        use http::StatusCode;
        let message = self.to_string();
        match self {
            // Not our fault nor upstream's: the client asked for something that does not exist.
            UpstreamError::NotFound { .. } => ApiError {
                origin: crate::error::Origin::Client,
                ..ApiError::upstream(not_found, StatusCode::NOT_FOUND, message)
            },
            UpstreamError::Unauthorized { .. } | UpstreamError::Denied { .. } => {
                // 403, not 401: a 401 would tell the client to authenticate with the proxy,
                // which cannot help; the proxy's own upstream credentials are at fault.
                ApiError::upstream(ErrorCode::Denied, StatusCode::FORBIDDEN, message)
            }
            UpstreamError::RateLimited { retry_after, .. } => ApiError {
                retry_after,
                ..ApiError::upstream(
                    ErrorCode::TooManyRequests,
                    StatusCode::TOO_MANY_REQUESTS,
                    message,
                )
            },
            UpstreamError::Unavailable { .. } => {
                ApiError::upstream(ErrorCode::Unknown, StatusCode::BAD_GATEWAY, message)
            }
            UpstreamError::Protocol { .. } => {
                ApiError::upstream(ErrorCode::Unknown, StatusCode::BAD_GATEWAY, message)
            }
            UpstreamError::Setup { .. } => ApiError::internal(message),
        }
    }
}
