//! Package ecosystems (dpkg, apk, rpm): version ordering, package databases read from an
//! image's files, and the OS identity from `/etc/os-release`. Pure functions over bytes;
//! nothing here does I/O or knows about images or registries: the caller hands file
//! contents in through [`FileSource`] and gets an [`Inventory`] back.
//!
//! One folder per ecosystem, each with `version.rs` (the ordering) and `db.rs` (the
//! installed-package database): [`dpkg`], [`apk`], [`rpm`]. [`detect`] picks the database
//! an image has, reading exactly [`PATHS`], the files in [`DIRS`], and whether
//! [`PROBED_PATHS`] exist.

use std::cmp::Ordering;
use std::fmt;

pub mod apk;
pub(crate) mod archive;
mod detect;
pub mod dpkg;
mod error;
pub mod os_release;
pub mod rpm;
pub(crate) mod scratch;

#[cfg(test)]
mod conformance;

pub use detect::{detect, FileSource, MemoryFiles, DIRS, PATHS, PROBED_PATHS};
pub use error::{InventoryError, SourceError, VersionError};

/// The package managers patchpull understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// Debian, Ubuntu, Google distroless: `/var/lib/dpkg`, `deb-version(7)` order.
    Dpkg,
    /// Alpine, Wolfi: `/lib/apk/db/installed`, apk-tools' order.
    Apk,
    /// Azure Linux, CBL-Mariner, RHEL and relatives: EVR order.
    Rpm,
}

/// One installed package as the image's package database records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstalledPackage {
    /// The binary package name (dpkg `Package:`, apk `P:`, rpm `NAME`), without `:arch`.
    pub name: String,
    /// Verbatim from the database, in the ecosystem's syntax; rpm's is `E:V-R` when the
    /// epoch is above 0 and `V-R` otherwise. Not validated: see [`try_compare`].
    pub version: String,
    /// `amd64`, `x86_64`, `all`, ... when the database says.
    pub architecture: Option<String>,
    /// The source package (dpkg `Source:`, apk `o:`, rpm SOURCERPM name) when known.
    pub source_name: Option<String>,
    /// The source version when it differs from `version` (dpkg `Source: name (version)`).
    pub source_version: Option<String>,
}

/// `/etc/os-release` (or `/usr/lib/os-release`), the fields scanning needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OsRelease {
    /// `ID`: debian, ubuntu, alpine, azurelinux, mariner, ...
    pub id: String,
    /// `ID_LIKE`, split on spaces.
    pub id_like: Vec<String>,
    /// `VERSION_ID`: 12, 22.04, 3.20.3, ...
    pub version_id: Option<String>,
    /// `VERSION_CODENAME`: bookworm, jammy, ...
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
}

/// What an image has installed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    pub os: OsRelease,
    pub ecosystem: Ecosystem,
    pub packages: Vec<InstalledPackage>,
}

/// Whether `name` is a valid package name: the check that keeps report text out of
/// commands. Debian policy 5.6.1: lowercase letters, digits, `+`, `-`, `.`, starting alphanumeric,
/// two characters at least. apk and rpm also allow capitals and `_`.
pub fn valid_package_name(ecosystem: Ecosystem, name: &str) -> bool {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    if name.len() > 128 || !first.is_ascii_alphanumeric() {
        return false;
    }
    match ecosystem {
        Ecosystem::Dpkg => {
            bytes.len() >= 2
                && bytes.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
                })
        }
        Ecosystem::Apk | Ecosystem::Rpm => bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_')),
    }
}

/// What to read out of an image to find its packages: [`PATHS`], every file of [`DIRS`]
/// (as `dir/`), and [`PROBED_PATHS`], whose presence alone gives the clear "not supported
/// yet" answer for rpm databases this version cannot read.
pub fn database_paths() -> Vec<String> {
    let mut wanted: Vec<String> = PATHS.iter().map(|p| (*p).to_owned()).collect();
    wanted.extend(DIRS.iter().map(|d| format!("{}/", d.trim_end_matches('/'))));
    wanted.extend(PROBED_PATHS.iter().map(|p| (*p).to_owned()));
    wanted
}

// === impl Ecosystem ===

impl Ecosystem {
    /// The lowercase name used in config, reports and logs: `dpkg`, `apk`, `rpm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Dpkg => "dpkg",
            Ecosystem::Apk => "apk",
            Ecosystem::Rpm => "rpm",
        }
    }

    /// The ecosystem an OS uses, from its os-release `ID`, then `ID_LIKE`; `None` for
    /// distributions patchpull does not know. The table follows copa's
    /// `GetPackageManager` (see `shared/reference/copacetic.md` 2.2) plus Wolfi.
    pub fn for_os(os: &OsRelease) -> Option<Ecosystem> {
        std::iter::once(os.id.as_str())
            .chain(os.id_like.iter().map(String::as_str))
            .find_map(ecosystem_for_id)
    }
}

fn ecosystem_for_id(id: &str) -> Option<Ecosystem> {
    match id {
        "debian" | "ubuntu" => Some(Ecosystem::Dpkg),
        "alpine" | "wolfi" | "chainguard" => Some(Ecosystem::Apk),
        "azurelinux"
        | "mariner"
        | "cbl-mariner"
        | "rhel"
        | "centos"
        | "fedora"
        | "rocky"
        | "almalinux"
        | "ol"
        | "amzn"
        | "sles"
        | "opensuse-leap"
        | "opensuse-tumbleweed"
        | "suse" => Some(Ecosystem::Rpm),
        _ => None,
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === version ordering ===

/// Orders two versions by the ecosystem's own rules, for sorting. Never fails: a version
/// the ecosystem's grammar rejects sorts before every valid one, and two invalid versions
/// compare byte-wise, so the result is still a total order. Deciding whether an installed
/// version is fixed must use [`try_compare`], which reports invalid input instead.
pub fn compare_versions(ecosystem: Ecosystem, a: &str, b: &str) -> Ordering {
    match (
        validate_version(ecosystem, a),
        validate_version(ecosystem, b),
    ) {
        (Ok(()), Ok(())) => try_compare(ecosystem, a, b).unwrap_or_else(|_| a.cmp(b)),
        (Err(_), Ok(())) => Ordering::Less,
        (Ok(()), Err(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.as_bytes().cmp(b.as_bytes()),
    }
}

/// Orders two versions by the ecosystem's own rules.
///
/// Errors with [`VersionError`] naming the first version that the grammar rejects: dpkg
/// per `deb-version(7)`, apk per apk-tools' `version.c`, rpm as `E:V-R` (see each
/// ecosystem's `version` module).
pub fn try_compare(ecosystem: Ecosystem, a: &str, b: &str) -> Result<Ordering, VersionError> {
    match ecosystem {
        Ecosystem::Dpkg => dpkg::version::compare(a, b),
        Ecosystem::Apk => apk::version::compare(a, b),
        Ecosystem::Rpm => rpm::version::compare(a, b),
    }
}

/// Checks a version against the ecosystem's grammar without comparing it to anything.
pub fn validate_version(ecosystem: Ecosystem, version: &str) -> Result<(), VersionError> {
    match ecosystem {
        Ecosystem::Dpkg => dpkg::version::validate(version),
        Ecosystem::Apk => apk::version::validate(version),
        Ecosystem::Rpm => rpm::version::validate(version),
    }
}
