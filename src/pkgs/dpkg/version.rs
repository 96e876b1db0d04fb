//! Debian version ordering (`deb-version(7)`), computed by the `debversion` crate after
//! the grammar is checked here, so everything dpkg refuses is an error and nothing can
//! reach the crate's internal `unwrap`s.
//!
//! Grammar: `[epoch:]upstream[-revision]`.
//! - epoch: the decimal digits before the first `:`, at most `i32::MAX` (dpkg's limit).
//!   Absent means 0.
//! - revision: everything after the last `-`; non-empty; `[A-Za-z0-9+.~]`. Absent
//!   compares equal to `0`, so `1.0` == `1.0-0` (as in dpkg).
//! - upstream: what is left; non-empty; starts with a digit; `[A-Za-z0-9.+~:-]`.
//!
//! Order: epochs numerically, then upstream, then revision, each by dpkg's `verrevcmp`:
//! alternate runs of non-digits and digits; non-digit runs compare character by character
//! with `~` before everything (even the end of the string), then the end, then letters
//! (ASCII order), then all other characters; digit runs compare as numbers. So
//! `1.0~rc1 < 1.0 < 1.0-1 < 1.0-1+deb12u1 < 1.0a < 1.0+dfsg < 1.0.1 < 1:0.1`.
//!
//! Stricter than dpkg in two places, both only warnings there: an upstream version that
//! does not start with a digit, and characters outside the sets above (`_`, spaces), are
//! errors. Surrounding whitespace is an error too; dpkg trims it.

use std::cmp::Ordering;
use std::fmt;

use crate::pkgs::{Ecosystem, VersionError};

/// dpkg refuses epochs above `INT_MAX` (`lib/dpkg/parse.c` `parseversion`).
const MAX_EPOCH: u32 = i32::MAX as u32;

/// A Debian version that passed the grammar check; `Ord` is dpkg's order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebVersion(debversion::Version);

impl DebVersion {
    /// Parses `version`, erroring with [`VersionError`] when dpkg's grammar (above)
    /// rejects it.
    pub fn parse(version: &str) -> Result<DebVersion, VersionError> {
        let invalid = |reason: &str| VersionError::new(Ecosystem::Dpkg, version, reason);
        if version.is_empty() {
            return Err(invalid("version is empty"));
        }
        if version.chars().any(char::is_whitespace) {
            return Err(invalid("version contains whitespace"));
        }

        let (epoch, rest) = match version.split_once(':') {
            Some((epoch, rest)) => {
                if epoch.is_empty() {
                    return Err(invalid("epoch is empty"));
                }
                if !epoch.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("epoch is not a number"));
                }
                let epoch = epoch
                    .parse::<u32>()
                    .ok()
                    .filter(|e| *e <= MAX_EPOCH)
                    .ok_or_else(|| invalid("epoch is too big"))?;
                if rest.is_empty() {
                    return Err(invalid("nothing after the epoch's colon"));
                }
                (Some(epoch), rest)
            }
            None => (None, version),
        };

        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((upstream, revision)) => {
                if revision.is_empty() {
                    return Err(invalid("revision is empty"));
                }
                if !revision
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+.~".contains(&b))
                {
                    return Err(invalid("invalid character in revision"));
                }
                (upstream, Some(revision))
            }
            None => (rest, None),
        };
        if upstream.is_empty() {
            return Err(invalid("upstream version is empty"));
        }
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(invalid("upstream version does not start with a digit"));
        }
        if !upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b))
        {
            return Err(invalid("invalid character in upstream version"));
        }

        // Built from the parts rather than through `FromStr`, so the split above is the
        // one that is compared.
        Ok(DebVersion(debversion::Version {
            epoch,
            upstream_version: upstream.to_owned(),
            debian_revision: revision.map(str::to_owned),
        }))
    }

    /// The epoch, 0 when absent.
    pub fn epoch(&self) -> u32 {
        self.0.epoch.unwrap_or(0)
    }

    pub fn upstream(&self) -> &str {
        &self.0.upstream_version
    }

    pub fn revision(&self) -> Option<&str> {
        self.0.debian_revision.as_deref()
    }
}

impl fmt::Display for DebVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for DebVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DebVersion::parse(s)
    }
}

/// Orders two Debian versions; errors on the first one that is not valid.
pub fn compare(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(DebVersion::parse(a)?.cmp(&DebVersion::parse(b)?))
}

/// Checks `version` against the grammar above.
pub fn validate(version: &str) -> Result<(), VersionError> {
    DebVersion::parse(version).map(|_| ())
}

#[cfg(test)]
mod tests;
