//! RPM version ordering: `[epoch:]version[-release]`, compared as rpm compares two
//! packages' EVRs, by the `rpm-version` crate after the grammar is checked here.
//!
//! Grammar:
//! - epoch: the decimal digits before a `:`, at most `u32::MAX`. Absent means 0.
//! - release: everything after the `-` (rpm forbids `-` inside version and release, so
//!   there is at most one); non-empty when the `-` is there. Absent sorts before every
//!   release, as `rpm.ver("1.0") < rpm.ver("1.0-1")` does in rpm 4.18.
//! - version: non-empty. Version and release use `[A-Za-z0-9._+~^]`.
//!
//! Order: epochs as numbers, then versions, then releases, each by `rpmvercmp`: the
//! string is cut into runs of ASCII digits and runs of ASCII letters, anything else only
//! separating them (so `2.0 == 2_0` and `1.0-1 == 1+0-1`); runs compare pairwise, digits
//! as numbers (`10.0001 == 10.1`), letters in ASCII order, and a digit run beats a letter
//! run (`1.0a < 1.0.1`); `~` sorts before everything, even the end (`1.0~rc1 < 1.0`); `^`
//! sorts after the end but before any further run (`1.0 < 1.0^git1 < 1.0.1`); when one
//! side runs out first, the longer one is newer.

use std::cmp::Ordering;
use std::fmt;

use rpm_version::Evr;

use crate::pkgs::{Ecosystem, VersionError};

/// An EVR that passed the grammar check; `Ord` is rpm's order.
#[derive(Debug, Clone)]
pub struct RpmVersion {
    epoch: Option<u32>,
    version: String,
    release: Option<String>,
}

impl RpmVersion {
    /// Parses `evr`, erroring with [`VersionError`] when the grammar above rejects it.
    pub fn parse(evr: &str) -> Result<RpmVersion, VersionError> {
        let invalid = |reason: &str| VersionError::new(Ecosystem::Rpm, evr, reason);
        if evr.is_empty() {
            return Err(invalid("version is empty"));
        }
        let (epoch, rest) = match evr.split_once(':') {
            Some((epoch, rest)) => {
                if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("epoch is not a number"));
                }
                let epoch = epoch
                    .parse::<u32>()
                    .map_err(|_| invalid("epoch is too big"))?;
                (Some(epoch), rest)
            }
            None => (None, evr),
        };
        let (version, release) = match rest.split_once('-') {
            Some((version, release)) => {
                if release.is_empty() {
                    return Err(invalid("release is empty"));
                }
                if release.contains('-') {
                    return Err(invalid("more than one '-'"));
                }
                (version, Some(release))
            }
            None => (rest, None),
        };
        if version.is_empty() {
            return Err(invalid("version part is empty"));
        }
        let allowed = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+~^".contains(&b))
        };
        if !allowed(version) {
            return Err(invalid("invalid character in version"));
        }
        if !release.is_none_or(allowed) {
            return Err(invalid("invalid character in release"));
        }
        Ok(RpmVersion {
            epoch,
            version: version.to_owned(),
            release: release.map(str::to_owned),
        })
    }

    /// The epoch, 0 when absent.
    pub fn epoch(&self) -> u32 {
        self.epoch.unwrap_or(0)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn release(&self) -> Option<&str> {
        self.release.as_deref()
    }

    fn evr(&self) -> Evr<'_> {
        Evr::new(
            std::borrow::Cow::Owned(self.epoch().to_string()),
            std::borrow::Cow::Borrowed(self.version.as_str()),
            std::borrow::Cow::Borrowed(self.release.as_deref().unwrap_or("")),
        )
    }
}

impl PartialEq for RpmVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for RpmVersion {}

impl PartialOrd for RpmVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RpmVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.evr().cmp(&other.evr())
    }
}

impl fmt::Display for RpmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(epoch) = self.epoch {
            write!(f, "{epoch}:")?;
        }
        f.write_str(&self.version)?;
        if let Some(release) = &self.release {
            write!(f, "-{release}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for RpmVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RpmVersion::parse(s)
    }
}

/// Orders two RPM EVRs; errors on the first one that is not valid.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(RpmVersion::parse(a)?.cmp(&RpmVersion::parse(b)?))
}

/// Checks `evr` against the grammar above.
pub fn validate(evr: &str) -> Result<(), VersionError> {
    RpmVersion::parse(evr).map(|_| ())
}

#[cfg(test)]
mod tests;
