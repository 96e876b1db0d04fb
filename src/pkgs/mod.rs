//! Package ecosystems (dpkg, apk, rpm): version ordering, package databases read from an
//! image's files, and the OS identity from `/etc/os-release`. Pure functions over bytes;
//! nothing here does I/O or knows about images or registries.

use std::cmp::Ordering;

/// The package managers patchpull understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Dpkg,
    Apk,
    Rpm,
}

/// One installed package as the image's package database records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstalledPackage {
    pub name: String,
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

/// Orders two versions by the ecosystem's own rules.
pub fn compare_versions(ecosystem: Ecosystem, a: &str, b: &str) -> Ordering {
    let _ = (ecosystem, a, b);
    todo!("pkgs helper fills this in")
}
