//! The backing registry of `storage.backend = "registry"` as a client: built from its
//! `[storage.registry]` section like an `[[upstream]]` (credentials, CA, retries, token
//! auth), but not in the [`super::Allowlist`]: no client request can be routed to it.

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};

use super::push::Access;
use super::{Upstream, UpstreamError};
use crate::config::UpstreamConfig;
use crate::distribution::reference::Digest;
use crate::metrics::Metrics;

/// The client of the backing registry.
///
/// # Errors
/// Its CA file cannot be read or the HTTP client cannot be built.
pub fn backing_registry(
    config: &UpstreamConfig,
    metrics: Arc<Metrics>,
    clock: crate::clock::Clock,
) -> Result<Arc<Upstream>, UpstreamError> {
    Upstream::with_clock(config.clone(), metrics, clock).map(Arc::new)
}

impl Upstream {
    /// `DELETE /v2/<repo>/manifests/<digest>`; true when it was deleted, false when the
    /// registry has no such manifest.
    ///
    /// # Errors
    /// The registry refuses (distribution answers 405 unless `storage.delete.enabled`).
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, UpstreamError> {
        let url = format!("{}/v2/{repository}/manifests/{digest}", self.base);
        let response = self
            .send_with(
                None,
                Method::DELETE,
                &url,
                Access::Push(repository),
                HeaderMap::new(),
                None,
                Some(self.config().timeout),
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.protocol(format!(
                "DELETE manifest {digest} in {repository} answered HTTP {s}"
            ))),
        }
    }
}
