//! The native engine's entry for apk (Alpine) images: a layer source, the plan and the
//! fetched packages in (each still the identity its signed index names); the changes
//! computed ([`crate::patch::apk`]), refused when apk would have run scripts (this engine
//! never runs them), and the layer written.

use std::path::Path;

use crate::image::{LayerDescriptor, LayerSource};
use crate::patch::apk::{self as engine, ApkNewPackage, ApkOutcome};
use crate::patch::layer::BuiltLayer;
use crate::patch::native::{LayerImage, NativeError};
use crate::patch::PatchError;
use crate::pkgs::apk::package::{ApkLimits, ApkPackage};
use crate::scan::builtin::apk::FetchedApk;
use crate::scan::plan::PlatformPlan;

/// What the native engine did to an apk image.
#[derive(Debug)]
pub struct ApkPatch {
    pub layer: BuiltLayer,
    pub outcomes: Vec<ApkOutcome>,
    /// The packages installed, as fetched and verified.
    pub packages: Vec<FetchedApk>,
}

/// Opens the packages (each must still be the identity its index names), computes the
/// changes, refuses scripts, writes the layer under `work`.
///
/// # Errors
/// [`PatchError::Package`] for a package at fault, [`NativeError::ScriptsCannotRun`] when
/// apk would have run a script, and the image's and the layer's errors.
pub fn build_apk_layer(
    source: &dyn LayerSource,
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
