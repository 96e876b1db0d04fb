//! The start-up probe of what this host allows patching (the sandbox for maintainer
//! scripts, the overlay over cached roots), said once in the log and kept for the gauges,
//! `/readyz?verbose` and the admin API.

use crate::config::{Config, PatchEngine};
use crate::metrics::Metrics;
use crate::patch::sandbox::host::{self, HostReport};

use super::ServerError;

/// Probes the host for `config`'s store, sets the gauges and logs one line.
///
/// # Errors
/// [`ServerError::Sandbox`] when the store is where the sandbox can never reach (see
/// [`host::probe`]): refused at start, with the fix, rather than failing every patch.
pub async fn probe(config: &Config, metrics: &Metrics) -> Result<HostReport, ServerError> {
    let scratch = config.storage.path.join("patch-tmp");
    let roots = (config.patch.unpack_cache_size > 0)
        .then(|| config.storage.path.join("unpacked").join("roots"));
    let report = tokio::task::spawn_blocking(move || host::probe(&scratch, roots.as_deref()))
        .await
        .map_err(|e| ServerError::Sandbox(format!("the probe did not finish: {e}")))?
        .map_err(ServerError::Sandbox)?;
    // The reasons reach `/readyz?verbose`, which anyone may read: no host paths in them.
    let store = config.storage.path.display().to_string();
    let report = report.redacted(&store, "<storage.path>");
    metrics
        .sandbox_available
        .set(i64::from(report.sandbox.available));
    metrics
        .overlay_available
        .set(i64::from(report.overlay.available));
    let summary = report.summary();
    if report.sandbox.available {
        tracing::info!("{summary}: maintainer scripts run natively");
    } else {
        let then = if config.patch.buildkit.address.is_some()
            && config.patch.engine != PatchEngine::Native
        {
            "images whose upgrade runs maintainer scripts go to BuildKit (patch.buildkit.address)"
        } else {
            "images whose upgrade runs maintainer scripts are served unpatched \
             (patchpull_tag_pulls_total{served=\"Fallback\",reason=\"SandboxUnavailable\"}) \
             until patch.buildkit.address names a BuildKit"
        };
        tracing::warn!("{summary}: {then}; docs/deployment.md, \"Security context\", says what the sandbox needs");
    }
    Ok(report)
}
