//! Which Debian or Ubuntu release a dpkg database belongs to, for an image that has no
//! os-release (deleted to slim the image, or a root built by hand). Scanners fall back on
//! what the distribution stamps on its packages when os-release is missing; so does this,
//! but only when the stamps agree, since planning against the wrong release's security
//! suite would install another release's packages.
//!
//! The stamps read, from each package's version (and source version):
//! - `base-files`, which ships os-release: Debian's is `<release>.<n>[+deb<release>u<m>]`
//!   (`12.4+deb12u10` is bookworm, `13.8+deb13u1` trixie); Ubuntu's is
//!   `<n>ubuntu<m>[.<k>]`, one pair per release (`12ubuntu4.7` is jammy, `13ubuntu10`
//!   noble; see [`UBUNTU_BASE_FILES`]).
//! - Debian stable updates and backports: `+deb12u1`, `~deb12u1`, `~bpo12+1`.
//! - Ubuntu updates built for one release: `~22.04.1`, `ubuntu0.22.04.1`, `+ubuntu22.04`.
//!
//! Versions that contain `ubuntu` without a release (`1.2-3ubuntu1`) only say that the
//! package is Ubuntu's, which contradicts a Debian release.

use std::collections::BTreeMap;
use std::fmt;

use crate::pkgs::{InstalledPackage, OsRelease};

/// Debian releases by major number.
const DEBIAN: &[(u32, &str)] = &[
    (10, "buster"),
    (11, "bullseye"),
    (12, "bookworm"),
    (13, "trixie"),
    (14, "forky"),
];

/// Ubuntu releases by `YY.MM`: the long-term ones, which are what images run.
const UBUNTU: &[(&str, &str)] = &[
    ("16.04", "xenial"),
    ("18.04", "bionic"),
    ("20.04", "focal"),
    ("22.04", "jammy"),
    ("24.04", "noble"),
];

/// Ubuntu's `base-files` version before its `.<k>` updates, per release.
pub const UBUNTU_BASE_FILES: &[(&str, &str)] = &[
    ("10.1ubuntu2", "18.04"),
    ("11ubuntu5", "20.04"),
    ("12ubuntu4", "22.04"),
    ("13ubuntu10", "24.04"),
];

/// A release a version names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Release {
    Debian(u32),
    /// `YY.MM` as (YY, MM).
    Ubuntu(u32, u32),
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Release::Debian(major) => match debian_codename(major) {
                Some(codename) => write!(f, "Debian {major} ({codename})"),
                None => write!(f, "Debian {major}"),
            },
            Release::Ubuntu(year, month) => {
                let version = format!("{year:02}.{month:02}");
                match ubuntu_codename(&version) {
                    Some(codename) => write!(f, "Ubuntu {version} ({codename})"),
                    None => write!(f, "Ubuntu {version}"),
                }
            }
        }
    }
}

/// Why the release could not be told from the package database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseUnknown {
    /// No version carries a release stamp.
    #[error(
        "none of its {packages} package versions names a release (no base-files, no \
         +debNNuM, ~debNNuM or ~bpoNN version, no Ubuntu ~YY.MM version){}",
        if *ubuntu { "; the versions are Ubuntu's, but not which release" } else { "" }
    )]
    NoStamp { packages: usize, ubuntu: bool },
    /// Versions name different releases, or a Debian release beside Ubuntu packages.
    #[error("its package versions disagree: {}", evidence.join(", "))]
    Mixed { evidence: Vec<String> },
    /// The versions agree on a release this version of patchpull has no name for.
    #[error("its package versions name {release} ({evidence}), a release patchpull does not know")]
    Unknown { release: String, evidence: String },
}

/// The release of the dpkg database `packages`, as an os-release would have said it
/// (`ID`, `VERSION_ID`, `VERSION_CODENAME`; `PRETTY_NAME` says it was inferred).
///
/// # Errors
/// [`ReleaseUnknown`] when no version names a release, when versions name different
/// ones, or when the one they name is not a release this module knows.
pub fn infer(packages: &[InstalledPackage]) -> Result<OsRelease, ReleaseUnknown> {
    // One example per release, for the error: the first package (by name) naming it.
    let mut named: BTreeMap<Release, String> = BTreeMap::new();
    let mut ubuntu_package: Option<String> = None;
    let mut sorted: Vec<&InstalledPackage> = packages.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    for package in sorted {
        let versions = std::iter::once(package.version.as_str())
            .chain(package.source_version.as_deref())
            .collect::<Vec<_>>();
        let described = format!("{} {}", package.name, package.version);
        let mut found = Vec::new();
        if package.name == "base-files" {
            found.extend(base_files_release(&package.version));
        }
        for version in &versions {
            found.extend(debian_stamps(version));
            found.extend(ubuntu_stamps(version));
        }
        for release in found {
            named.entry(release).or_insert_with(|| described.clone());
        }
        if ubuntu_package.is_none() && versions.iter().any(|v| v.contains("ubuntu")) {
            ubuntu_package = Some(described);
        }
    }
    let evidence = |release: &Release, package: &String| format!("{package} says {release}");
    let mut releases = named.iter();
    let (release, package) = match (releases.next(), releases.next()) {
        (None, _) => {
            return Err(ReleaseUnknown::NoStamp {
                packages: packages.len(),
                ubuntu: ubuntu_package.is_some(),
            })
        }
        (Some(one), None) => one,
        (Some(_), Some(_)) => {
            return Err(ReleaseUnknown::Mixed {
                evidence: named.iter().map(|(r, p)| evidence(r, p)).collect(),
            })
        }
    };
    match *release {
        Release::Debian(major) => {
            if let Some(ubuntu) = ubuntu_package {
                return Err(ReleaseUnknown::Mixed {
                    evidence: vec![
                        evidence(release, package),
                        format!("{ubuntu} is an Ubuntu package"),
                    ],
                });
            }
            let codename = debian_codename(major).ok_or_else(|| ReleaseUnknown::Unknown {
                release: release.to_string(),
                evidence: package.clone(),
            })?;
            Ok(OsRelease {
                id: "debian".to_owned(),
                id_like: Vec::new(),
                version_id: Some(major.to_string()),
                version_codename: Some(codename.to_owned()),
                pretty_name: Some(format!(
                    "Debian GNU/Linux {major} ({codename}), inferred from {package}"
                )),
            })
        }
        Release::Ubuntu(year, month) => {
            let version = format!("{year:02}.{month:02}");
            let codename = ubuntu_codename(&version).ok_or_else(|| ReleaseUnknown::Unknown {
                release: release.to_string(),
                evidence: package.clone(),
            })?;
            Ok(OsRelease {
                id: "ubuntu".to_owned(),
                id_like: vec!["debian".to_owned()],
                version_id: Some(version.clone()),
                version_codename: Some(codename.to_owned()),
                pretty_name: Some(format!("Ubuntu {version}, inferred from {package}")),
            })
        }
    }
}

fn debian_codename(major: u32) -> Option<&'static str> {
    DEBIAN.iter().find(|(m, _)| *m == major).map(|(_, c)| *c)
}

fn ubuntu_codename(version: &str) -> Option<&'static str> {
    UBUNTU.iter().find(|(v, _)| *v == version).map(|(_, c)| *c)
}

/// The release a `base-files` version is from: Ubuntu's by [`UBUNTU_BASE_FILES`] (an
/// Ubuntu one not listed names none), Debian's by its leading number.
fn base_files_release(version: &str) -> Option<Release> {
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    if version.contains("ubuntu") {
        return UBUNTU_BASE_FILES.iter().find_map(|(base, release)| {
            let rest = version.strip_prefix(base)?;
            if !(rest.is_empty() || rest.starts_with('.')) {
                return None;
            }
            ubuntu_release(release)
        });
    }
    let digits = leading_number(version)?;
    let rest = &version[digits.len()..];
    (rest.is_empty() || rest.starts_with('.') || rest.starts_with('+'))
        .then(|| digits.parse().ok().map(Release::Debian))
        .flatten()
}

/// `+debNNuM`, `~debNNuM` and `~bpoNN` stamps in a version.
fn debian_stamps(version: &str) -> Vec<Release> {
    let mut found = Vec::new();
    for (marker, suffix_wanted) in [("+deb", true), ("~deb", true), ("~bpo", false)] {
        for (at, _) in version.match_indices(marker) {
            let rest = &version[at + marker.len()..];
            let Some(digits) = leading_number(rest) else {
                continue;
            };
            let after = &rest[digits.len()..];
            // `+deb12u1`: `u` and the update number; `~bpo12+1`: anything.
            let stamped = !suffix_wanted
                || after
                    .strip_prefix('u')
                    .is_some_and(|u| u.starts_with(|c: char| c.is_ascii_digit()));
            if let (true, Ok(major)) = (stamped, digits.parse()) {
                found.push(Release::Debian(major));
            }
        }
    }
    found
}

/// `~YY.MM`, `ubuntu0.YY.MM` and `+ubuntuYY.MM` stamps in a version.
fn ubuntu_stamps(version: &str) -> Vec<Release> {
    let mut found = Vec::new();
    for marker in ["~", "ubuntu0.", "+ubuntu"] {
        for (at, _) in version.match_indices(marker) {
            let rest = &version[at + marker.len()..];
            let bytes = rest.as_bytes();
            let two_digits = |i: usize| {
                bytes
                    .get(i..i + 2)
                    .filter(|d| d.iter().all(u8::is_ascii_digit))
            };
            let (Some(year), Some(b'.'), Some(month)) =
                (two_digits(0), bytes.get(2), two_digits(3))
            else {
                continue;
            };
            // `~22.04` but not `~22.045` nor `~22.04x`: a release, then the end or a separator.
            if bytes.get(5).is_some_and(|b| b.is_ascii_alphanumeric()) {
                continue;
            }
            let number = |d: &[u8]| u32::from(d[0] - b'0') * 10 + u32::from(d[1] - b'0');
            let (year, month) = (number(year), number(month));
            if (14..=40).contains(&year) && (month == 4 || month == 10) {
                found.push(Release::Ubuntu(year, month));
            }
        }
    }
    found
}

fn ubuntu_release(text: &str) -> Option<Release> {
    let (year, month) = text.split_once('.')?;
    Some(Release::Ubuntu(year.parse().ok()?, month.parse().ok()?))
}

/// The leading ASCII digits of `text`, if any (at most 3: release numbers are short).
fn leading_number(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (1..=3).contains(&end).then(|| &text[..end])
}

#[cfg(test)]
mod tests;
