//! Which Alpine repositories an image is scanned against, from its `/etc/os-release` and
//! platform: `<alpine_url>/<branch>/<repository>/<arch>/APKINDEX.tar.gz` for each of the
//! configured repositories (`main`, `community`), branch `v3.20` for `VERSION_ID=3.20.3`.

use crate::pkgs::OsRelease;
use crate::scan::plan::Platform;

use super::{AlpineConfig, ApkError};

/// One repository of one branch for one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkRepository {
    /// `v3.20` or `edge`.
    pub branch: String,
    /// `main`, `community`.
    pub name: String,
    /// Alpine's name: `x86_64`, `aarch64`, ...
    pub architecture: String,
    /// `<alpine_url>/<branch>/<name>/<architecture>`, no trailing slash: where the index
    /// and the packages are.
    pub base_url: String,
}

impl ApkRepository {
    /// `v3.20/main`, for messages and plans.
    pub fn label(&self) -> String {
        format!("{}/{}", self.branch, self.name)
    }

    pub fn index_url(&self) -> String {
        format!("{}/APKINDEX.tar.gz", self.base_url)
    }

    /// Where apk fetches a package of this repository: `<base>/<name>-<version>.apk`.
    pub fn package_url(&self, name: &str, version: &str) -> String {
        format!("{}/{name}-{version}.apk", self.base_url)
    }
}

/// The repositories for an Alpine image on `platform`, in the configured order (an update
/// found in two is credited to the first).
///
/// # Errors
/// As [`branch`] and [`alpine_architecture`].
pub fn select(
    os: &OsRelease,
    platform: &Platform,
    config: &AlpineConfig,
) -> Result<Vec<ApkRepository>, ApkError> {
    let branch = branch(os)?;
    let architecture = alpine_architecture(platform)?;
    let url = config.url.trim_end_matches('/');
    Ok(config
        .repositories
        .iter()
        .map(|name| ApkRepository {
            branch: branch.clone(),
            name: name.clone(),
            architecture: architecture.to_owned(),
            base_url: format!("{url}/{branch}/{name}/{architecture}"),
        })
        .collect())
}

/// The branch of an Alpine os-release: `v<major>.<minor>` of `VERSION_ID`, or `edge`
/// (edge's VERSION_ID is a pre-release such as `3.21_alpha20240807`, its PRETTY_NAME
/// ends in `edge`).
///
/// # Errors
/// [`ApkError::UnsupportedDistribution`] when `ID` is not `alpine`;
/// [`ApkError::UnknownRelease`] when `VERSION_ID` is missing or not a version.
pub fn branch(os: &OsRelease) -> Result<String, ApkError> {
    if os.id != "alpine" {
        return Err(ApkError::UnsupportedDistribution { id: os.id.clone() });
    }
    let version_id = os.version_id.as_deref().unwrap_or_default();
    let pretty_edge = os
        .pretty_name
        .as_deref()
        .is_some_and(|p| p.trim().ends_with(" edge"));
    if version_id == "edge" || version_id.contains('_') || pretty_edge {
        return Ok("edge".to_owned());
    }
    let mut parts = version_id.split('.');
    let numeric = |p: Option<&str>| {
        p.filter(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    };
    match (numeric(parts.next()), numeric(parts.next())) {
        (Some(major), Some(minor)) => Ok(format!("v{major}.{minor}")),
        _ => Err(ApkError::UnknownRelease {
            version_id: os.version_id.clone(),
        }),
    }
}

/// Alpine's name for an OCI platform's architecture: `linux/amd64` is `x86_64`,
/// `linux/arm64` is `aarch64`, `linux/arm/v7` is `armv7`, `linux/arm/v6` is `armhf`.
///
/// # Errors
/// [`ApkError::UnsupportedArchitecture`] for a platform Alpine has no port for.
pub fn alpine_architecture(platform: &Platform) -> Result<&'static str, ApkError> {
    let arch = match (platform.architecture.as_str(), platform.variant.as_deref()) {
        ("amd64", _) => "x86_64",
        ("arm64", _) => "aarch64",
        ("arm", None | Some("v7") | Some("v8")) => "armv7",
        ("arm", Some("v6") | Some("v5")) => "armhf",
        ("386", _) => "x86",
        ("ppc64le", _) => "ppc64le",
        ("s390x", _) => "s390x",
        ("riscv64", _) => "riscv64",
        ("loong64", _) => "loongarch64",
        _ => {
            return Err(ApkError::UnsupportedArchitecture {
                platform: platform.to_string(),
            })
        }
    };
    Ok(arch)
}
