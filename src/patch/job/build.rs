//! Fetching, building and verifying one platform's layer.

use std::path::Path;
use std::sync::Arc;

use crate::image::{LayerDescriptor, UnpackedLayers};
use crate::mirror::image::PlatformImage;
use crate::patch::native::{self, LayerImage, NativePatch, Runnable};
use crate::patch::verify::{self, Verified};
use crate::patch::PatchError;
use crate::pkgs::dpkg::debfile::{DebLimits, DebPackage};
use crate::pkgs::Inventory;
use crate::scan::builtin::packages::{FetchedDeb, WantedPackage};
use crate::scan::plan::{Platform, PlatformPlan};
use crate::upstream::Route;

use super::*;

impl Patcher {
    /// Fetches, builds and verifies one platform's layer for `plan`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn build_platform(
        &self,
        route: &Route,
        image: &PlatformImage,
        inventory: &Inventory,
        platform: &Platform,
        plan: &PlatformPlan,
        base_layers: &[LayerDescriptor],
        work: &Path,
    ) -> Result<(NativePatch, Vec<Verified>, Vec<FetchedDeb>), PatchError> {
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
        let native = tokio::task::spawn_blocking(move || {
            build_layer(
                &*build_source,
                &layers,
                &plan_for_build,
                &inventory_for_build,
                &debs_for_build,
                &architecture,
                &work_dir,
            )
        })
        .await
        .map_err(|e| PatchError::Internal(e.to_string()))??;

        let verified = self
            .verify_layer(image, source, base_layers, &native.layer.path, plan)
            .await?;
        Ok((native, verified, debs))
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
        Ok(Arc::new(UnpackedLayers::new(
            self.mirror.layer_source(route),
            dir,
            &crate::image::Limits::default(),
        )))
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

/// The blocking half: open the packages, build the layer.
pub(super) fn build_layer(
    source: &dyn crate::image::LayerSource,
    layers: &[LayerDescriptor],
    plan: &PlatformPlan,
    inventory: &Inventory,
    debs: &[FetchedDeb],
    architecture: &str,
    work: &Path,
) -> Result<NativePatch, PatchError> {
    let limits = DebLimits::default();
    let mut opened = Vec::new();
    for deb in debs {
        let package =
            DebPackage::open(&deb.path, work, &limits).map_err(|e| PatchError::Package {
                package: deb.name.clone(),
                reason: e.to_string(),
            })?;
        opened.push((deb, package));
    }
    let mut packages = Vec::new();
    for update in &plan.updates {
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
    let image = LayerImage::open(source, layers).map_err(native::NativeError::from)?;
    let runnable = Runnable {
        architecture: architecture.to_owned(),
    };
    Ok(native::patch(&image, &packages, &runnable, work)?)
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
