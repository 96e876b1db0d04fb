//! Fetching, building and verifying one platform's layer.

use std::path::Path;
use std::sync::Arc;

use crate::config::PatchEngine;
use crate::image::UnpackedLayers;
use crate::mirror::image::PlatformImage;
use crate::patch::dpkg::HeldBack;
use crate::patch::native::{self, build_deb_layer, DebLayerInput, NativePatch};
use crate::patch::verify::{self, Verified};
use crate::patch::PatchError;
use crate::pkgs::{Ecosystem, Inventory};
use crate::scan::builtin::packages::{FetchedDeb, WantedPackage};
use crate::scan::plan::{NotPlanned, PlatformPlan, SkipReason};
use crate::upstream::Route;

use super::platform::PlatformJob;
use super::Patcher;

impl Patcher {
    /// Fetches, builds and verifies one platform's layer for `plan`. Upgrades that `apt-get
    /// upgrade` would keep back are moved from `plan` to its `not_planned`; `None` when that
    /// leaves nothing to install.
    pub(super) async fn build_platform(
        &self,
        job: &PlatformJob<'_>,
        plan: &mut PlatformPlan,
    ) -> Result<Option<(NativePatch, Vec<Verified>, Vec<FetchedDeb>)>, PatchError> {
        let inventory = &job.inventory;
        let wanted: Vec<WantedPackage> = plan
            .updates
            .iter()
            .map(|u| WantedPackage {
                name: u.name.clone(),
                version: u.fixed_version.clone(),
                architecture: inventory
                    .packages
                    .iter()
                    .find(|p| p.name == u.name && p.version == u.installed_version)
                    .and_then(|p| p.architecture.clone()),
            })
            .collect();
        self.tell(&format!(
            "{}: fetching {} verified package(s)",
            job.image.platform,
            wanted.len()
        ));
        let debs = self
            .scanner
            .fetch_debs(inventory, &job.platform, &wanted)
            .await?;
        self.tell(&format!("{}: building the patch layer", job.image.platform));

        let source = self.unpacked_layers(job.route, job.work)?;
        let build_source = source.clone();
        let work_dir = job.work.to_path_buf();
        let plan_for_build = plan.clone();
        let inventory_for_build = inventory.clone();
        let debs_for_build = debs.clone();
        let architecture = job.image.platform.architecture.clone();
        let layers = job.base_layers().to_vec();
        let cache = self.unpack_cache.clone();
        let (native, held) = tokio::task::spawn_blocking(move || {
            build_deb_layer(&DebLayerInput {
                source: &*build_source,
                layers: &layers,
                plan: &plan_for_build,
                inventory: &inventory_for_build,
                debs: &debs_for_build,
                architecture: &architecture,
                work: &work_dir,
                cache: cache.as_deref(),
            })
        })
        .await
        .map_err(|e| PatchError::Internal(e.to_string()))??;
        keep_back(plan, held);
        let Some(native) = native else {
            return Ok(None);
        };
        let verified = self
            .verify_layer(job, source, &native.layer.path, plan)
            .await?;
        Ok(Some((native, verified, debs)))
    }

    /// The packages installed in `image`; with an unpack cache, read from (and leaving)
    /// the decompressed layers that building the layer reads next.
    pub(super) async fn inventory(
        &self,
        route: &Route,
        image: &PlatformImage,
        work: &Path,
    ) -> Result<Option<Inventory>, PatchError> {
        if self.unpack_cache.is_none() {
            return self
                .mirror
                .inventory(route, image)
                .await
                .map_err(PatchError::from_api);
        }
        let source = self.unpacked_layers(route, work)?;
        let layers = image.layers.clone();
        tokio::task::spawn_blocking(move || crate::mirror::image::read_inventory(&*source, &layers))
            .await
            .map_err(|e| PatchError::Internal(e.to_string()))?
            .map_err(PatchError::from_api)
    }

    /// Starts unpacking the job's base image into the unpack cache while its plan is made,
    /// when the native engine will most likely run maintainer scripts over it: a dpkg image
    /// with dpkg itself installed (so not distroless), of this host's architecture. The
    /// build's own request for the root then finds it, or waits for this unpack to finish.
    pub(super) fn unpack_ahead(
        &self,
        job: &PlatformJob<'_>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let cache = self.unpack_cache.clone()?;
        let likely = self.engine != PatchEngine::Buildkit
            && job.inventory.ecosystem == Ecosystem::Dpkg
            && job.inventory.packages.iter().any(|p| p.name == "dpkg")
            && job.base.platform.architecture == native::host_architecture();
        if !likely {
            return None;
        }
        let source = self.unpacked_layers(job.route, job.work).ok()?;
        let layers = job.base_layers().to_vec();
        Some(tokio::task::spawn_blocking(move || {
            if crate::patch::sandbox::overlay_available(&cache.roots_dir()).is_err() {
                return;
            }
            if let Err(e) = cache.root(&*source, &layers) {
                tracing::debug!(error = %e, "unpacking ahead failed; the build will say why");
            }
        }))
    }

    /// The image's layers, decompressed once under `work/layers` and read several times
    /// (tree, database, the scripts' root, the check).
    pub(super) fn unpacked_layers(
        &self,
        route: &Route,
        work: &Path,
    ) -> Result<Arc<Unpacked>, PatchError> {
        let dir = work.join("layers");
        std::fs::create_dir_all(&dir).map_err(|e| PatchError::io(&dir, e))?;
        let layers = UnpackedLayers::new(
            self.mirror.layer_source(route),
            dir,
            &crate::image::Limits::default(),
        );
        Ok(Arc::new(match &self.unpack_cache {
            Some(cache) => layers.shared_in(cache.layers_dir()),
            None => layers,
        }))
    }

    /// Reads the patched image's package database back (the base layers plus `layer`) and
    /// checks every planned package is at or above its fixed version.
    pub(super) async fn verify_layer(
        &self,
        job: &PlatformJob<'_>,
        source: Arc<Unpacked>,
        layer: &Path,
        plan: &PlatformPlan,
    ) -> Result<Vec<Verified>, PatchError> {
        self.tell(&format!(
            "{}: verifying the patched package database",
            job.image.platform
        ));
        let (layer, plan, layers) = (
            layer.to_path_buf(),
            plan.clone(),
            job.base_layers().to_vec(),
        );
        tokio::task::spawn_blocking(move || verify::check(&*source, &layers, &layer, &plan))
            .await
            .map_err(|e| PatchError::Internal(e.to_string()))?
    }
}

/// The image's layers as the engines read them.
pub(super) type Unpacked = UnpackedLayers<crate::mirror::image::MirrorLayers>;

/// Moves the upgrades in `held` from `plan.updates` to `plan.not_planned`.
fn keep_back(plan: &mut PlatformPlan, held: Vec<HeldBack>) {
    for kept in held {
        let Some(at) = plan.updates.iter().position(|u| u.name == kept.name) else {
            continue;
        };
        let update = plan.updates.remove(at);
        tracing::info!(package = %update.name, reason = %kept.reason, "kept back, as apt-get upgrade keeps it");
        plan.not_planned.push(NotPlanned {
            name: update.name,
            installed_version: update.installed_version,
            vulnerability_id: String::new(),
            severity: None,
            fixed_versions: vec![update.fixed_version],
            reason: SkipReason::HeldBack {
                detail: kept.reason,
            },
        });
    }
    plan.not_planned.sort();
}

/// The history entry: every update, in plan order.
pub(super) fn history_text(plan: &PlatformPlan) -> String {
    let updates: Vec<String> = plan
        .updates
        .iter()
        .map(|u| format!("{} {} -> {}", u.name, u.installed_version, u.fixed_version))
        .collect();
    format!("patchpull patch: {}", updates.join(", "))
}
