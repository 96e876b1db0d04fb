//! Which apt suites an image is scanned against, from its `/etc/os-release` and platform.
//!
//! Debian `bookworm`: `bookworm-security` from the security archive, then (policy
//! [`BuiltinConfig::point_releases`], on by default) `bookworm` and `bookworm-updates` from
//! the main archive. Ubuntu `jammy`: `jammy-security`, `jammy`, `jammy-updates`, all from one
//! archive, which for architectures other than amd64 and i386 is Ubuntu's ports archive.
//! The security suite comes first: when two suites carry the same version, the update is
//! credited to the security suite.

use std::path::PathBuf;

use crate::pkgs::OsRelease;
use crate::scan::plan::Platform;

use super::{BuiltinConfig, BuiltinError};

/// A distribution the built-in scanner knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Debian,
    Ubuntu,
}

impl Distribution {
    /// The os-release `ID`.
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::Debian => "debian",
            Distribution::Ubuntu => "ubuntu",
        }
    }
}

/// Why a suite is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteKind {
    /// `<codename>-security`: always read.
    Security,
    /// `<codename>`: point-release updates.
    Release,
    /// `<codename>-updates`.
    Updates,
}

/// One suite to read: `<base_url>/dists/<suite>/InRelease` and its `Packages` indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    pub distribution: Distribution,
    pub kind: SuiteKind,
    /// `bookworm-security`.
    pub name: String,
    /// Without a trailing slash: `http://deb.debian.org/debian-security`.
    pub base_url: String,
    pub components: Vec<String>,
    pub keyring: PathBuf,
}

impl Suite {
    /// `<base>/dists/<suite>/InRelease`.
    pub fn inrelease_url(&self) -> String {
        format!("{}/dists/{}/InRelease", self.base_url, self.name)
    }

    /// A file the suite's Release lists, by its path relative to `dists/<suite>/`.
    pub fn dists_url(&self, path: &str) -> String {
        format!("{}/dists/{}/{}", self.base_url, self.name, path)
    }

    /// A pool file, by an index's `Filename:`.
    pub fn pool_url(&self, filename: &str) -> String {
        format!("{}/{}", self.base_url, filename.trim_start_matches('/'))
    }
}

/// The suites for `os` on `architecture` (an apt architecture, see [`apt_architecture`]),
/// security first.
///
/// # Errors
/// [`BuiltinError::UnsupportedDistribution`] for anything but Debian and Ubuntu (derivatives
/// have their own archives); [`BuiltinError::UnknownRelease`] when neither
/// `VERSION_CODENAME` nor a known `VERSION_ID` names the release;
/// [`BuiltinError::NoSecuritySuite`] for Debian unstable.
pub fn select(
    os: &OsRelease,
    architecture: &str,
    config: &BuiltinConfig,
) -> Result<Vec<Suite>, BuiltinError> {
    let (distribution, archive) = match os.id.as_str() {
        "debian" => (Distribution::Debian, &config.debian),
        "ubuntu" => (Distribution::Ubuntu, &config.ubuntu),
        other => {
            return Err(BuiltinError::UnsupportedDistribution {
                id: other.to_owned(),
            })
        }
    };
    let codename = codename(distribution, os)?;
    if codename == "sid" {
        return Err(BuiltinError::NoSecuritySuite {
            distribution: distribution.as_str(),
            codename,
        });
    }
    let ports = archive
        .ports_url
        .as_deref()
        .filter(|_| !matches!(architecture, "amd64" | "i386"));
    let security_url = ports.unwrap_or(&archive.security_url);
    let archive_url = ports.unwrap_or(&archive.archive_url);

    let suite = |kind: SuiteKind, name: String, base_url: &str| Suite {
        distribution,
        kind,
        name,
        base_url: base_url.trim_end_matches('/').to_owned(),
        components: archive.components.clone(),
        keyring: archive.keyring.clone(),
    };
    let mut suites = vec![suite(
        SuiteKind::Security,
        format!("{codename}-security"),
        security_url,
    )];
    if config.point_releases {
        suites.push(suite(SuiteKind::Release, codename.clone(), archive_url));
        suites.push(suite(
            SuiteKind::Updates,
            format!("{codename}-updates"),
            archive_url,
        ));
    }
    Ok(suites)
}

/// `VERSION_CODENAME`, or the codename of `VERSION_ID`'s release: Google's distroless
/// images ship an os-release with `VERSION_ID="12"` and no codename.
fn codename(distribution: Distribution, os: &OsRelease) -> Result<String, BuiltinError> {
    if let Some(codename) = os.version_codename.as_deref().filter(|c| !c.is_empty()) {
        return Ok(codename.to_owned());
    }
    let version_id = os.version_id.as_deref().unwrap_or_default();
    let known = match distribution {
        Distribution::Debian => match version_id.split('.').next().unwrap_or_default() {
            "11" => Some("bullseye"),
            "12" => Some("bookworm"),
            "13" => Some("trixie"),
            "14" => Some("forky"),
            _ => None,
        },
        Distribution::Ubuntu => match version_id {
            "20.04" => Some("focal"),
            "22.04" => Some("jammy"),
            "24.04" => Some("noble"),
            _ => None,
        },
    };
    known
        .map(str::to_owned)
        .ok_or_else(|| BuiltinError::UnknownRelease {
            distribution: distribution.as_str(),
            version_id: os.version_id.clone(),
        })
}

/// Debian's name for an OCI platform's architecture: `linux/amd64` is `amd64`,
/// `linux/arm/v7` is `armhf`, `linux/ppc64le` is `ppc64el`, ...
///
/// # Errors
/// [`BuiltinError::UnsupportedArchitecture`] for a platform Debian has no port for.
pub fn apt_architecture(platform: &Platform) -> Result<&'static str, BuiltinError> {
    let arch = match (platform.architecture.as_str(), platform.variant.as_deref()) {
        ("amd64", _) => "amd64",
        ("arm64", _) => "arm64",
        ("arm", None | Some("v7") | Some("v8")) => "armhf",
        ("arm", Some("v5") | Some("v6")) => "armel",
        ("386", _) => "i386",
        ("ppc64le", _) => "ppc64el",
        ("s390x", _) => "s390x",
        ("riscv64", _) => "riscv64",
        ("mips64le", _) => "mips64el",
        ("loong64", _) => "loong64",
        _ => {
            return Err(BuiltinError::UnsupportedArchitecture {
                platform: platform.to_string(),
            })
        }
    };
    Ok(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(id: &str, version_id: Option<&str>, codename: Option<&str>) -> OsRelease {
        OsRelease {
            id: id.to_owned(),
            version_id: version_id.map(str::to_owned),
            version_codename: codename.map(str::to_owned),
            ..OsRelease::default()
        }
    }

    fn names(suites: &[Suite]) -> Vec<(String, String)> {
        suites
            .iter()
            .map(|s| (s.name.clone(), s.base_url.clone()))
            .collect()
    }

    #[test]
    fn debian_reads_security_from_the_security_archive_then_point_releases() {
        let config = BuiltinConfig::new("/tmp/unused");
        let suites = select(
            &os("debian", Some("12"), Some("bookworm")),
            "amd64",
            &config,
        )
        .unwrap();
        let expected = [
            ("bookworm-security", "http://deb.debian.org/debian-security"),
            ("bookworm", "http://deb.debian.org/debian"),
            ("bookworm-updates", "http://deb.debian.org/debian"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(names(&suites), expected);
        assert_eq!(suites[0].kind, SuiteKind::Security);
        assert_eq!(suites[0].components, ["main"]);
        assert_eq!(
            suites[0].inrelease_url(),
            "http://deb.debian.org/debian-security/dists/bookworm-security/InRelease"
        );

        let config = BuiltinConfig {
            point_releases: false,
            ..BuiltinConfig::new("/tmp/unused")
        };
        let suites = select(
            &os("debian", Some("12"), Some("bookworm")),
            "amd64",
            &config,
        )
        .unwrap();
        assert_eq!(suites.len(), 1);
    }

    #[test]
    fn distroless_debian_has_only_a_version_id() {
        let config = BuiltinConfig::new("/tmp/unused");
        for (version_id, codename) in [("11", "bullseye"), ("12", "bookworm"), ("13", "trixie")] {
            let suites = select(&os("debian", Some(version_id), None), "arm64", &config).unwrap();
            assert_eq!(suites[0].name, format!("{codename}-security"));
        }
        let err = select(&os("debian", Some("9"), None), "amd64", &config).unwrap_err();
        assert!(err.to_string().contains("VERSION_ID Some(\"9\")"), "{err}");
        let err = select(&os("debian", None, Some("sid")), "amd64", &config).unwrap_err();
        assert!(matches!(err, BuiltinError::NoSecuritySuite { .. }), "{err}");
    }

    #[test]
    fn ubuntu_uses_ports_for_other_architectures() {
        let config = BuiltinConfig::new("/tmp/unused");
        let jammy = os("ubuntu", Some("22.04"), Some("jammy"));
        let suites = select(&jammy, "amd64", &config).unwrap();
        assert_eq!(suites[0].name, "jammy-security");
        assert_eq!(suites[0].base_url, "http://archive.ubuntu.com/ubuntu");
        assert_eq!(suites[2].name, "jammy-updates");
        let suites = select(&jammy, "arm64", &config).unwrap();
        assert!(suites
            .iter()
            .all(|s| s.base_url == "http://ports.ubuntu.com/ubuntu-ports"));
        let suites = select(&os("ubuntu", Some("24.04"), None), "amd64", &config).unwrap();
        assert_eq!(suites[0].name, "noble-security");
    }

    #[test]
    fn other_distributions_are_refused() {
        let config = BuiltinConfig::new("/tmp/unused");
        let err = select(&os("alpine", Some("3.20.3"), None), "amd64", &config).unwrap_err();
        assert_eq!(err.origin(), crate::error::Origin::Client);
        assert!(err.to_string().contains("\"alpine\""), "{err}");
    }

    #[test]
    fn platforms_map_to_debian_architectures() {
        let cases = [
            (Platform::linux("amd64"), Some("amd64")),
            (Platform::linux("arm64"), Some("arm64")),
            (Platform::linux("arm"), Some("armhf")),
            (
                Platform {
                    variant: Some("v6".to_owned()),
                    ..Platform::linux("arm")
                },
                Some("armel"),
            ),
            (Platform::linux("386"), Some("i386")),
            (Platform::linux("ppc64le"), Some("ppc64el")),
            (Platform::linux("wasm"), None),
        ];
        for (platform, expected) in cases {
            assert_eq!(apt_architecture(&platform).ok(), expected, "{platform}");
        }
    }
}
