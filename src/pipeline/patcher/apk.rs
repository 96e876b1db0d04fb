//! The native engine for apk (Alpine) images: fetch the packages the signed indexes name
//! ([`crate::scan::builtin::apk::packages`]), compute the layer ([`crate::patch::apk`]),
//! refuse when apk would have run scripts (this engine never runs them), write the layer
//! and read the result's database back.

use std::path::Path;

use crate::image::LayerDescriptor;
use crate::mirror::image::PlatformImage;
use crate::patch::apk::{self as engine, ApkNewPackage, ApkOutcome};
use crate::patch::layer::BuiltLayer;
use crate::patch::native::{LayerImage, NativeError};
use crate::patch::verify::Verified;
use crate::patch::PatchError;
use crate::pkgs::apk::package::{ApkLimits, ApkPackage};
use crate::pkgs::Inventory;
use crate::scan::builtin::apk::{FetchedApk, WantedApk};
use crate::scan::plan::{Platform, PlatformPlan};
use crate::upstream::Route;

use super::*;

/// What the native engine did to an apk image.
#[derive(Debug)]
pub struct ApkPatch {
    pub layer: BuiltLayer,
    pub outcomes: Vec<ApkOutcome>,
    /// The packages installed, as fetched and verified.
    pub packages: Vec<FetchedApk>,
}

impl Patcher {
    /// Fetches, builds and verifies one apk platform's layer for `plan`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn build_apk_platform(
        &self,
        route: &Route,
        image: &PlatformImage,
        inventory: &Inventory,
        platform: &Platform,
        plan: &PlatformPlan,
        base_layers: &[LayerDescriptor],
        work: &Path,
    ) -> Result<(ApkPatch, Vec<Verified>), PatchError> {
        let wanted: Vec<WantedApk> = plan
            .updates
            .iter()
            .map(|u| WantedApk {
                name: u.name.clone(),
                version: u.fixed_version.clone(),
            })
            .collect();
        self.tell(&format!(
            "{}: fetching {} verified package(s)",
            image.platform,
            wanted.len()
        ));
        let fetched = self
            .scanner
            .apk()
            .fetch_apks(inventory, platform, &wanted)
            .await?;
        self.tell(&format!("{}: building the patch layer", image.platform));

        let source = self.unpacked_layers(route, work)?;
        let build_source = source.clone();
        let (plan_for_build, fetched_for_build) = (plan.clone(), fetched.clone());
        let (layers, work_dir) = (base_layers.to_vec(), work.to_path_buf());
        let (layer, outcomes) = tokio::task::spawn_blocking(move || {
            build_apk_layer(
                &*build_source,
                &layers,
                &plan_for_build,
                &fetched_for_build,
                &work_dir,
            )
        })
        .await
        .map_err(|e| PatchError::Internal(e.to_string()))??;

        let verified = self
            .verify_layer(image, source, base_layers, &layer.path, plan)
            .await?;
        Ok((
            ApkPatch {
                layer,
                outcomes,
                packages: fetched,
            },
            verified,
        ))
    }
}

/// The blocking half: open the packages (each must still be the identity its index
/// names), compute the changes, refuse scripts, write the layer.
pub(super) fn build_apk_layer(
    source: &dyn crate::image::LayerSource,
    layers: &[LayerDescriptor],
    plan: &PlatformPlan,
    fetched: &[FetchedApk],
    work: &Path,
) -> Result<(BuiltLayer, Vec<ApkOutcome>), PatchError> {
    let limits = ApkLimits::default();
    let mut opened = Vec::with_capacity(fetched.len());
    for apk in fetched {
        let package_error = |reason: String| PatchError::Package {
            package: apk.name.clone(),
            reason,
        };
        let package = ApkPackage::open(&apk.path, work, &limits)
            .map_err(|e| package_error(format!("{}: {e}", apk.path.display())))?;
        if package.identity() != apk.checksum {
            return Err(package_error(format!(
                "{} has identity {}, but the signed index of {} names {}",
                apk.path.display(),
                package.identity(),
                apk.repository,
                apk.checksum
            )));
        }
        opened.push((apk, package));
    }
    let mut packages = Vec::with_capacity(plan.updates.len());
    for update in &plan.updates {
        let Some((_, apk)) = opened
            .iter()
            .find(|(f, _)| f.name == update.name && f.version == update.fixed_version)
        else {
            return Err(PatchError::Package {
                package: update.name.clone(),
                reason: "no package was fetched for it".to_owned(),
            });
        };
        packages.push(ApkNewPackage {
            name: &update.name,
            installed_version: &update.installed_version,
            apk,
        });
    }
    let image = LayerImage::open(source, layers).map_err(NativeError::from)?;
    let changes = engine::build(&image, &packages).map_err(apk_error)?;
    if !changes.scripts_not_run.is_empty() {
        let reasons = changes
            .scripts_not_run
            .iter()
            .map(|script| {
                format!("{script}: the native engine does not run apk scripts, and the layer without it is not what apk would leave")
            })
            .collect();
        return Err(PatchError::Native(NativeError::ScriptsCannotRun {
            reasons,
        }));
    }
    let layer = changes
        .layer
        .write_gzip(work)
        .map_err(|e| PatchError::Native(NativeError::from(e)))?;
    Ok((layer, changes.outcomes))
}

/// A package at fault stays attributed to it (for `ignore_errors`); the rest is the image.
fn apk_error(error: engine::ApkError) -> PatchError {
    match error {
        engine::ApkError::Package { package, reason } => PatchError::Package { package, reason },
        engine::ApkError::Conflict {
            package,
            path,
            reason,
        } => PatchError::Package {
            package,
            reason: format!("{path}: {reason}"),
        },
        engine::ApkError::Database { .. } => PatchError::Image(error.to_string()),
        engine::ApkError::Image(e) => PatchError::Native(NativeError::Image(e)),
    }
}
