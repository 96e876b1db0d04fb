//! The dpkg half of the native engine: what installing new versions of some packages does
//! to an image, as layer entries. Files come from each package's `data.tar` (files the old
//! version owned and the new one does not become whiteouts; conffiles follow dpkg's rule);
//! the database (`status` or distroless `status.d`, `info/<pkg>.*`) is rewritten as dpkg
//! would leave it. Maintainer scripts are planned here and run by [`scripts`].
//!
//! Paths are written where dpkg would write them: through the image's own directory
//! symlinks (merged-`/usr`: a package's `/lib/x` lands in `usr/lib/x`) and diversions.

pub(crate) mod database;
mod files;
mod filters;
mod holdback;
pub mod scripts;

use std::collections::{BTreeMap, HashMap};

use crate::image::{Filesystem, ImageError};
use crate::patch::layer::LayerBuilder;
use crate::pkgs::dpkg::debfile::DebPackage;

pub use database::{DIVERSIONS, FILE_TRIGGERS, INFO_DIR, STATUS, STATUS_DIR};
pub use files::build;
pub use holdback::{held_back_in, planned_dependencies, HeldBack};

/// Why the dpkg engine cannot patch an image.
#[derive(Debug, thiserror::Error)]
pub enum DpkgError {
    #[error("the image's dpkg database {path}: {reason}")]
    Database { path: String, reason: String },
    #[error("package {package}: {reason}")]
    Package { package: String, reason: String },
    #[error("package {package}: {path}: {reason}")]
    Conflict {
        package: String,
        path: String,
        reason: String,
    },
    #[error("reading the image: {0}")]
    Image(ImageError),
}

// By hand rather than `#[from]`, so an error chain does not print the cause twice.
impl From<ImageError> for DpkgError {
    fn from(error: ImageError) -> DpkgError {
        DpkgError::Image(error)
    }
}

/// Reads files out of the image being patched.
pub trait ImageFiles {
    /// The merged file tree (metadata only).
    fn tree(&self) -> &Filesystem;
    /// The contents of `paths` (absolute; a path ending in `/` asks for every file in that
    /// directory, keyed by the directory and the file's name). Absent paths are left out.
    fn read(&self, paths: &[&str]) -> Result<HashMap<String, Vec<u8>>, ImageError>;
}

/// One package to install: the installed version it replaces and the verified `.deb`.
pub struct NewPackage<'a> {
    pub name: &'a str,
    pub installed_version: &'a str,
    /// The installed package's architecture (`amd64`, `all`).
    pub architecture: &'a str,
    pub deb: &'a DebPackage,
}

/// What happened to one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageOutcome {
    pub name: String,
    pub old_version: String,
    pub new_version: String,
    /// Entries written into the layer for this package's files.
    pub files_written: usize,
    /// Files of the old version with identical contents, left in the lower layer.
    pub files_unchanged: usize,
    /// Whiteouts for files the new version no longer has.
    pub files_removed: usize,
    /// Conffiles the image had changed: kept, the package's version written beside them as
    /// `<path>.dpkg-dist`, as `dpkg --force-confold` does.
    pub conffiles_kept: Vec<String>,
    /// Conffiles the image had deleted: left deleted, as dpkg does.
    pub conffiles_left_deleted: Vec<String>,
}

/// The result: the layer so far, what each package did, and the scripts dpkg would run.
pub struct DpkgChanges {
    pub layer: LayerBuilder,
    pub outcomes: Vec<PackageOutcome>,
    pub scripts: scripts::ScriptPlan,
    /// The mtime of every entry not taken from a package: the newest mtime in the packages,
    /// so the same packages give the same layer.
    pub epoch: u64,
    /// `status.d` (distroless): no dpkg, no scripts; only files and database.
    pub distroless: bool,
    /// What the image's own `dpkg --configure` needs to finish the upgrade after the
    /// unpack-phase scripts; `None` on distroless images.
    pub configure: Option<Configure>,
}

/// The database as `dpkg --unpack` leaves it, so that the image's own dpkg can configure
/// the packages: it runs every `postinst` from its installed path with dpkg's environment,
/// and processes the triggers the upgrade and the scripts activate (`Unincorp`, interest
/// files, pending and awaited fields) in dpkg's own order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configure {
    /// The status file's path in the layer.
    pub status_path: String,
    /// Its contents after the unpack: upgraded packages `unpacked` with their
    /// `Config-Version`, installed packages interested in activated triggers
    /// `triggers-pending`.
    pub unpacked_status: Vec<u8>,
    /// Path prefixes (`var/lib/dpkg/info/<pkg>.`) of the upgraded packages' new control
    /// members: dpkg installs them after the old `postrm upgrade` has run.
    pub new_info: Vec<String>,
}

/// Installed `info/` files by package base name (`libc6:amd64` or `perl-base`): member
/// name -> contents.
pub(crate) type InfoFiles = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_filters;
