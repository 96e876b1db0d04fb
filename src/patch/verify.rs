//! After patching: the patched image's package database, read back from its layers like
//! any image's, must have every planned package at or above its fixed version.

use std::cmp::Ordering;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::image::{LayerDescriptor, LayerSource, Limits};
use crate::patch::PatchError;
use crate::pkgs::{self, compare_versions, MemoryFiles};
use crate::scan::plan::PlatformPlan;

/// One planned package, as the patched image has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub name: String,
    pub fixed_version: String,
    /// The version the patched database records; `None` when it lost the package.
    pub installed: Option<String>,
}

impl Verified {
    pub fn ok(&self, ecosystem: pkgs::Ecosystem) -> bool {
        self.installed
            .as_deref()
            .is_some_and(|v| compare_versions(ecosystem, v, &self.fixed_version) != Ordering::Less)
    }
}

/// The original layers and the new one on top.
struct Patched<'a> {
    base: &'a dyn LayerSource,
    base_layers: usize,
    layer: PathBuf,
}

impl LayerSource for Patched<'_> {
    fn open_layer(&self, index: usize, layer: &LayerDescriptor) -> io::Result<Box<dyn Read + '_>> {
        if index < self.base_layers {
            self.base.open_layer(index, layer)
        } else {
            Ok(Box::new(io::BufReader::new(std::fs::File::open(
                &self.layer,
            )?)))
        }
    }
}

/// Reads the database of `base_layers` plus the layer at `layer` and checks `plan`.
///
/// # Errors
/// [`PatchError::Verification`] naming every package below its fixed version; a read
/// error of the image.
pub fn check(
    base: &dyn LayerSource,
    base_layers: &[LayerDescriptor],
    layer: &Path,
    plan: &PlatformPlan,
) -> Result<Vec<Verified>, PatchError> {
    let mut layers = base_layers.to_vec();
    layers.push(LayerDescriptor::new(
        "sha256:patch",
        crate::image::MEDIA_TYPE_OCI_LAYER_GZIP,
    ));
    let source = Patched {
        base,
        base_layers: base_layers.len(),
        layer: layer.to_path_buf(),
    };
    let wanted = pkgs::database_paths();
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let files = crate::image::read_files(&source, &layers, &wanted, &Limits::default())
        .map_err(|e| PatchError::Internal(format!("reading the patched image back: {e}")))?;
    let inventory = pkgs::detect(&MemoryFiles::from(files))
        .map_err(|e| PatchError::Internal(format!("the patched image's package database: {e}")))?
        .ok_or_else(|| {
            PatchError::Internal("the patched image has no package database".to_owned())
        })?;
    let verified: Vec<Verified> = plan
        .updates
        .iter()
        .map(|update| Verified {
            name: update.name.clone(),
            fixed_version: update.fixed_version.clone(),
            installed: inventory
                .packages
                .iter()
                .filter(|p| p.name == update.name)
                .map(|p| p.version.clone())
                .max_by(|a, b| compare_versions(inventory.ecosystem, a, b)),
        })
        .collect();
    let failures: Vec<String> = verified
        .iter()
        .filter(|v| !v.ok(inventory.ecosystem))
        .map(|v| {
            format!(
                "{} is {} (needs {})",
                v.name,
                v.installed.as_deref().unwrap_or("missing"),
                v.fixed_version
            )
        })
        .collect();
    if failures.is_empty() {
        Ok(verified)
    } else {
        Err(PatchError::Verification { failures })
    }
}
