//! The native engine's entry for dpkg images: a layer source, the plan and the fetched,
//! verified `.deb`s in; the layer out, with the upgrades `apt-get upgrade` would keep back.

use std::collections::BTreeMap;
use std::path::Path;

use crate::image::{LayerDescriptor, LayerSource};
use crate::patch::dpkg::{self, HeldBack, NewPackage};
use crate::patch::native::{self, LayerImage, NativeError, NativePatch, Runnable};
use crate::patch::unpack_cache::UnpackCache;
use crate::patch::PatchError;
use crate::pkgs::dpkg::debfile::{DebLimits, DebPackage};
use crate::pkgs::Inventory;
use crate::scan::builtin::packages::FetchedDeb;
use crate::scan::plan::PlatformPlan;

/// What the native engine needs to build a dpkg image's layer.
pub struct DebLayerInput<'a> {
    /// The image's layers, read through the caller's source.
    pub source: &'a dyn LayerSource,
    /// The base layers the patch goes on (without an earlier patch layer).
    pub layers: &'a [LayerDescriptor],
    pub plan: &'a PlatformPlan,
    pub inventory: &'a Inventory,
    /// The packages of `plan`, fetched and verified.
    pub debs: &'a [FetchedDeb],
    /// The image's architecture, for packages the inventory names none for.
    pub architecture: &'a str,
    /// Scratch space for the packages' contents and the layer.
    pub work: &'a Path,
    pub cache: Option<&'a UnpackCache>,
}

/// Opens the packages, keeps back what `apt-get upgrade` would, and builds the layer from
/// the rest (`None` when nothing is left).
///
/// # Errors
/// [`PatchError::Package`] for a package that cannot be opened or was not fetched, and
/// the native engine's errors.
pub fn build_deb_layer(
    input: &DebLayerInput<'_>,
) -> Result<(Option<NativePatch>, Vec<HeldBack>), PatchError> {
    let DebLayerInput {
        source,
        layers,
        plan,
        inventory,
        debs,
        architecture,
        work,
        cache,
    } = *input;
    let opened = open_packages(debs, work, cache)?;
    let image = LayerImage::open(source, layers).map_err(NativeError::from)?;
    let controls: BTreeMap<String, Vec<u8>> = plan
        .updates
        .iter()
        .filter_map(|u| {
            let (_, deb) = opened.iter().find(|(d, _)| d.name == u.name)?;
            Some((u.name.clone(), deb.control().to_vec()))
        })
        .collect();
    let held = dpkg::held_back_in(&image, &controls).map_err(NativeError::from)?;
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
        packages.push(NewPackage {
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
