//! The apk half of the native engine (Alpine, and anything else with apk-tools v2
//! databases): what upgrading installed packages to new `.apk` files does to an image, as
//! layer entries, computed without running anything.
//!
//! [`build`] takes the image ([`ImageFiles`], shared with the dpkg engine) and one
//! [`ApkNewPackage`] per upgrade (an opened, verified
//! [`crate::pkgs::apk::package::ApkPackage`] and the installed version it replaces) and
//! returns [`ApkChanges`]: a [`LayerBuilder`] to write, what happened per package, and the
//! scripts apk would have run, which this engine never runs. A caller that cannot run them
//! (in a sandbox) must refuse the patch when [`ApkChanges::scripts_not_run`] is not empty,
//! exactly as the native dpkg path refuses unrunnable maintainer scripts.
//!
//! What is written, following apk-tools 2.14 (`apk_db_install_pkg`):
//! - The package's entries at their physical paths: directories of the path are resolved
//!   through the image's own directory symlinks (apk writes through them; a package's
//!   `lib/x` lands in `usr/lib/x` on a merged-`/usr` image). Owners come from the image's
//!   `/etc/passwd` and `/etc/group` by name, else the archive's ids. A file the old version
//!   had with the same checksum, owner and mode, that the image still has with the same size
//!   and mode, is left in the lower layer (only its mtime would differ).
//! - Protected paths (`/etc`, plus `etc/apk/protected_paths.d/*.list`): a file the image
//!   changed since the old version installed it is kept, and the package's version written
//!   beside it as `<path>.apk-new` (unless identical); on removal a changed file is kept.
//! - Whiteouts for files the old version's `R:` lines list and the new one lacks, unless
//!   another package owns them; then for its `F:` directories no other package lists, if
//!   nothing is left in them.
//! - Files another package owns: taken over when both share an origin or the new package
//!   `replaces` it (that package's `R:` record is dropped from its stanza), skipped when the
//!   other package replaces this one with a higher `replaces_priority`, refused otherwise.
//! - `/lib/apk/db/installed` rewritten: the upgraded stanza is rebuilt as apk writes it (see
//!   `db::render`: `C:` is the package identity, `Q1` + base64 of the SHA-1 of the control
//!   gzip member; `S:` the `.apk` size; `I:` `.PKGINFO` `size`), every other stanza kept
//!   byte for byte. Order: apk-tools 2 appends an upgraded package at the end (its list of
//!   installed packages gets the new package at the tail); apk-tools 3 (detected from the
//!   image's `apk-tools` package) writes all packages sorted by name.
//! - `/lib/apk/db/scripts.tar`: the old version's entries dropped, the new version's
//!   scripts added as `<name>-<version>.<identity>.<script>`, other entries byte for byte.
//!   `/lib/apk/db/triggers`: the package's line replaced by the new identity and `triggers`.
//!   Both in the same package order as `installed`; written only when they change.
//!
//! Scripts planned (never run here): `.pre-upgrade` and `.post-upgrade` of each new
//! version (arguments: new version, old version), then the `.trigger` script of every
//! package whose trigger globs match a directory the upgrades changed (arguments: the
//! matched directories), the upgraded packages' own triggers against every known directory.
//! All database and layer output is deterministic: entries' metadata comes from the
//! packages, database files are root-owned with the newest entry mtime of the packages.

mod build;
mod db;
mod extras;
mod install;

#[cfg(test)]
mod tests;

use crate::image::ImageError;
use crate::patch::layer::LayerBuilder;
use crate::pkgs::apk::package::ApkPackage;

pub use crate::patch::dpkg::ImageFiles;
pub use build::build;

/// The installed-package database.
pub const INSTALLED: &str = "lib/apk/db/installed";
/// Scripts of installed packages, as a tar.
pub const SCRIPTS: &str = "lib/apk/db/scripts.tar";
/// Trigger globs of installed packages.
pub const TRIGGERS: &str = "lib/apk/db/triggers";

/// Why the apk engine cannot patch an image.
#[derive(Debug, thiserror::Error)]
pub enum ApkError {
    #[error("the image's apk database {path}: {reason}")]
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
impl From<ImageError> for ApkError {
    fn from(error: ImageError) -> ApkError {
        ApkError::Image(error)
    }
}

/// One package to upgrade: its name, the version the image has, and the new `.apk`.
#[derive(Debug, Clone, Copy)]
pub struct ApkNewPackage<'a> {
    pub name: &'a str,
    /// Must equal the `V:` of the image's database, or [`build`] refuses.
    pub installed_version: &'a str,
    pub apk: &'a ApkPackage,
}

/// What happened to one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkOutcome {
    pub name: String,
    pub old_version: String,
    pub new_version: String,
    /// Layer entries written for the package's files and directories.
    pub files_written: usize,
    /// Files of the old version left in the lower layer (same contents and metadata).
    pub files_unchanged: usize,
    /// Whiteouts for files and directories the new version no longer has.
    pub files_removed: usize,
    /// Protected files the image had changed: kept, the package's version written beside
    /// them as `<path>.apk-new` (paths as the package names them, with a leading `/`).
    pub protected_kept: Vec<String>,
}

/// A script apk would run for this upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkScriptRun {
    pub package: String,
    /// The version whose script it is.
    pub version: String,
    /// `pre-upgrade`, `post-upgrade` or `trigger`.
    pub script: String,
    pub args: Vec<String>,
    pub contents: Vec<u8>,
}

impl ApkScriptRun {
    /// `busybox-1.36.1-r30.post-upgrade 1.36.1-r30 1.36.1-r29`, as apk names it.
    pub fn describe(&self) -> String {
        let mut text = format!("{}-{}.{}", self.package, self.version, self.script);
        for arg in &self.args {
            text.push(' ');
            text.push_str(arg);
        }
        text
    }
}

/// The result of [`build`].
#[derive(Debug)]
pub struct ApkChanges {
    pub layer: LayerBuilder,
    pub outcomes: Vec<ApkOutcome>,
    /// Scripts apk would run, in its order: per package `pre-upgrade` then
    /// `post-upgrade`, then triggers.
    pub scripts: Vec<ApkScriptRun>,
    /// One line per entry of `scripts` ([`ApkScriptRun::describe`]): none of them ran.
    /// Not empty means the layer alone is not what apk would leave.
    pub scripts_not_run: Vec<String>,
    /// The mtime of every database entry: the newest mtime in the packages.
    pub epoch: u64,
}
