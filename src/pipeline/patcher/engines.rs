//! Which engine builds a platform's layer: the native engine (dpkg or apk; retrying without
//! a failing package under `ignore_errors`), or BuildKit.

use crate::patch::buildkit::BuildkitRequest;
use crate::patch::layer::BuiltLayer;
use crate::patch::verify::Verified;
use crate::patch::PatchError;
use crate::pkgs::Ecosystem;
use crate::scan::plan::{NotPlanned, PlatformPlan, SkipReason};

use super::platform::PlatformJob;
use super::{EngineReport, Patcher};

impl Patcher {
    /// The native engine. Upgrades `apt-get upgrade` would keep back are moved to `plan`'s
    /// not planned; with `ignore_errors`, so is a package at fault, and the rest tried
    /// again; `None` when none is left.
    pub(super) async fn build_native(
        &self,
        job: &PlatformJob<'_>,
        plan: &mut PlatformPlan,
    ) -> Result<Option<(BuiltLayer, EngineReport, Vec<Verified>)>, PatchError> {
        loop {
            let built = if job.inventory.ecosystem == Ecosystem::Apk {
                self.build_apk_platform(job, plan)
                    .await
                    .map(|(apk, verified)| (apk.layer.clone(), EngineReport::Apk(apk), verified))
            } else {
                match self.build_platform(job, plan).await {
                    Ok(Some((native, verified, _debs))) => {
                        Ok((native.layer.clone(), EngineReport::Native(native), verified))
                    }
                    // Every upgrade kept back, as apt-get upgrade would.
                    Ok(None) => return Ok(None),
                    Err(error) => Err(error),
                }
            };
            match built {
                Ok(built) => return Ok(Some(built)),
                Err(error) if job.options.ignore_errors => {
                    let Some(package) = error.package().map(str::to_owned) else {
                        return Err(error);
                    };
                    let Some(at) = plan.updates.iter().position(|u| u.name == package) else {
                        return Err(error);
                    };
                    let update = plan.updates.remove(at);
                    tracing::warn!(%package, %error, "ignore_errors: patching without this package");
                    plan.not_planned.push(NotPlanned {
                        name: update.name,
                        installed_version: update.installed_version,
                        vulnerability_id: String::new(),
                        severity: None,
                        fixed_versions: vec![update.fixed_version],
                        reason: SkipReason::PatchFailed {
                            error: error.to_string(),
                        },
                    });
                    if plan.updates.is_empty() {
                        return Ok(None);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// BuildKit: the layer from the image's own package manager, then the same read-back
    /// check as the native engine's.
    pub(super) async fn build_with_buildkit(
        &self,
        job: &PlatformJob<'_>,
        plan: &PlatformPlan,
    ) -> Result<(BuiltLayer, EngineReport, Vec<Verified>), PatchError> {
        let Some(setup) = &self.buildkit else {
            return Err(PatchError::Internal("no BuildKit is configured".to_owned()));
        };
        let (route, image) = (job.route, job.image);
        let base_diff_ids = base_diff_ids(job.config, job.base_layers().len())?;
        let source = self.unpacked_layers(route, job.work)?;
        let tree_source = source.clone();
        let layers = job.base_layers().to_vec();
        let tree = tokio::task::spawn_blocking(move || {
            crate::image::Filesystem::from_layers(
                &*tree_source,
                &layers,
                &crate::image::Limits::default(),
            )
        })
        .await
        .map_err(|e| PatchError::Internal(e.to_string()))?
        .map_err(|e| PatchError::Image(e.to_string()))?;
        let request = BuildkitRequest {
            source: setup.source.reference(
                route.upstream.name(),
                &route.repository,
                &image.manifest.digest,
            ),
            tooling: setup.source.tooling(&setup.engine.config().tooling_image),
            os: &image.platform.os,
            architecture: &image.platform.architecture,
            variant: image.platform.variant.as_deref(),
            plan,
            tree: &tree,
            base_diff_ids: &base_diff_ids,
            debian_archive_url: &setup.debian_archive_url,
            debian_security_url: &setup.debian_security_url,
            work: job.work,
            no_cache: job.options.no_cache,
        };
        let tell = |message: &str| self.tell(message);
        let patch = setup.engine.patch(&request, &tell).await?;
        let verified = self
            .verify_layer(job, source, &patch.layer.path, plan)
            .await?;
        Ok((patch.layer.clone(), EngineReport::Buildkit(patch), verified))
    }
}

/// The first `count` entries of the config's `rootfs.diff_ids`.
fn base_diff_ids(
    config: &[u8],
    count: usize,
) -> Result<Vec<crate::distribution::Digest>, PatchError> {
    #[derive(serde::Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let config: Config = serde_json::from_slice(config)
        .map_err(|e| PatchError::Image(format!("the image config: {e}")))?;
    if config.rootfs.diff_ids.len() < count {
        return Err(PatchError::Image(format!(
            "the image config names {} diff_ids for {count} layers",
            config.rootfs.diff_ids.len()
        )));
    }
    config.rootfs.diff_ids[..count]
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|e| PatchError::Image(format!("the image config: diff_id {d:?}: {e}")))
        })
        .collect()
}
