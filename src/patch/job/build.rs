//! Fetching, building and verifying one platform's layer.

use std::path::Path;
use std::sync::Arc;

use crate::image::{LayerDescriptor, UnpackedLayers};
use crate::mirror::image::PlatformImage;
use crate::patch::dpkg::HeldBack;
use crate::patch::native::{self, LayerImage, NativePatch, Runnable};
use crate::patch::unpack_cache::UnpackCache;
use crate::patch::verify::{self, Verified};
use crate::patch::PatchError;
use crate::pkgs::dpkg::debfile::{DebLimits, DebPackage};
use crate::pkgs::Inventory;
use crate::scan::builtin::packages::{FetchedDeb, WantedPackage};
use crate::scan::plan::{NotPlanned, Platform, PlatformPlan, SkipReason};
use crate::upstream::Route;

use super::*;

impl Patcher {
    /// Fetches, builds and verifies one platform's layer for `plan`. Upgrades that `apt-get
    /// upgrade` would keep back are moved from `plan` to its `not_planned`; `None` when that
    /// leaves nothing to install.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn build_platform(
        &self,
        route: &Route,
        image: &PlatformImage,
        inventory: &Inventory,
        platform: &Platform,
        plan: &mut PlatformPlan,
        base_layers: &[LayerDescriptor],
        work: &Path,
    ) -> Result<Option<(NativePatch, Vec<Verified>, Vec<FetchedDeb>)>, PatchError> {
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
            image.platform,
            wanted.len()
        ));
        let debs = self
            .scanner
            .fetch_debs(inventory, platform, &wanted)
            .await?;
        self.tell(&format!("{}: building the patch layer", image.platform));

        let source = self.unpacked_layers(route, work)?;
        let build_source = source.clone();
        let work_dir = work.to_path_buf();
        let plan_for_build = plan.clone();
        let inventory_for_build = inventory.clone();
        let debs_for_build = debs.clone();
        let architecture = image.platform.architecture.clone();
        let layers = base_layers.to_vec();
        let cache = self.unpack_cache.clone();
        let (native, held) = tokio::task::spawn_blocking(move || {
            build_layer(
                &*build_source,
                &layers,
                &plan_for_build,
                &inventory_for_build,
                &debs_for_build,
                &architecture,
                &work_dir,
                cache.as_deref(),
            )
        })
        .await
        .map_err(|e| PatchError::Internal(e.to_string()))??;
        keep_back(plan, held);
        let Some(native) = native else {
            return Ok(None);
        };
        let verified = self
            .verify_layer(image, source, base_layers, &native.layer.path, plan)
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

    /// Starts unpacking `image` into the unpack cache while its plan is made, when the
    /// native engine will most likely run maintainer scripts over it: a dpkg image with
    /// dpkg itself installed (so not distroless), of this host's architecture. The build's
    /// own request for the root then finds it, or waits for this unpack to finish.
    pub(super) fn unpack_ahead(
        &self,
        route: &Route,
        image: &PlatformImage,
        inventory: &Inventory,
        work: &Path,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let cache = self.unpack_cache.clone()?;
        let likely = self.engine != PatchEngine::Buildkit
            && inventory.ecosystem == Ecosystem::Dpkg
            && inventory.packages.iter().any(|p| p.name == "dpkg")
            && image.platform.architecture == native::host_architecture();
        if !likely {
            return None;
        }
        let source = self.unpacked_layers(route, work).ok()?;
        let layers = image.layers.clone();
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
        image: &PlatformImage,
        source: Arc<Unpacked>,
        base_layers: &[LayerDescriptor],
        layer: &Path,
        plan: &PlatformPlan,
    ) -> Result<Vec<Verified>, PatchError> {
        self.tell(&format!(
            "{}: verifying the patched package database",
            image.platform
        ));
        let (layer, plan, layers) = (layer.to_path_buf(), plan.clone(), base_layers.to_vec());
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

/// The blocking half: open the packages, keep back what `apt-get upgrade` would, build the
/// layer from the rest (`None` when nothing is left).
#[allow(clippy::too_many_arguments)]
pub(super) fn build_layer(
    source: &dyn crate::image::LayerSource,
    layers: &[LayerDescriptor],
    plan: &PlatformPlan,
    inventory: &Inventory,
    debs: &[FetchedDeb],
    architecture: &str,
    work: &Path,
    cache: Option<&UnpackCache>,
) -> Result<(Option<NativePatch>, Vec<HeldBack>), PatchError> {
    let opened = open_packages(debs, work, cache)?;
    let image = LayerImage::open(source, layers).map_err(native::NativeError::from)?;
    let controls: std::collections::BTreeMap<String, Vec<u8>> = plan
        .updates
        .iter()
        .filter_map(|u| {
            let (_, deb) = opened.iter().find(|(d, _)| d.name == u.name)?;
            Some((u.name.clone(), deb.control().to_vec()))
        })
        .collect();
    let held =
        crate::patch::dpkg::held_back_in(&image, &controls).map_err(native::NativeError::from)?;
    let mut packages = Vec::new();
    for update in &plan.updates {
        if held.iter().any(|h| h.name == update.name) {
            continue;
        }
        let Some((_, deb)) = opened.iter().find(|(d, _)| d.name == update.name) else {
            return Err(PatchError::Package {
                package: update.name.clone(),
                reason: "no package was fetched for it".to_owned(),
            });
        };
        let installed_arch = inventory
            .packages
            .iter()
            .find(|p| p.name == update.name && p.version == update.installed_version)
            .and_then(|p| p.architecture.as_deref())
            .unwrap_or(architecture);
        packages.push(crate::patch::dpkg::NewPackage {
            name: &update.name,
            installed_version: &update.installed_version,
            architecture: installed_arch,
            deb,
        });
    }
    if packages.is_empty() {
        return Ok((None, held));
    }
    let archives = packages
        .iter()
        .filter_map(|p| opened.iter().find(|(d, _)| d.name == p.name))
        .map(|(d, _)| native::Archive::new(&d.name, &d.version, &d.architecture, d.path.clone()))
        .collect();
    let runnable = Runnable {
        architecture: architecture.to_owned(),
        archives,
    };
    let native = native::patch(&image, &packages, &runnable, work, cache)?;
    Ok((Some(native), held))
}

/// Opens (and so decompresses) the packages on a few threads; with an unpack cache, each
/// data archive is kept there by the package's verified hash for the next patch.
fn open_packages<'a>(
    debs: &'a [FetchedDeb],
    work: &Path,
    cache: Option<&UnpackCache>,
) -> Result<Vec<(&'a FetchedDeb, DebPackage)>, PatchError> {
    let limits = DebLimits::default();
    let open = |deb: &FetchedDeb| {
        let keep = cache.and_then(|c| c.package_data_path(&deb.sha256));
        DebPackage::open_keeping_data(&deb.path, work, &limits, keep.as_deref()).map_err(|e| {
            PatchError::Package {
                package: deb.name.clone(),
                reason: e.to_string(),
            }
        })
    };
    let mut opened = Vec::with_capacity(debs.len());
    for (deb, result) in debs.iter().zip(crate::parallel::map(debs, 4, open)) {
        opened.push((deb, result?));
    }
    Ok(opened)
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
