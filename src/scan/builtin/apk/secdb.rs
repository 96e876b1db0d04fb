//! Alpine's secdb (`<url>/<branch>/main.json`, `community.json`): per source package, the
//! version that fixed each set of CVEs, from the APKBUILDs' `secfixes` comments:
//!
//! ```json
//! {"packages":[{"pkg":{"name":"openssl","secfixes":{"3.1.4-r1":["CVE-2023-5678"]}}}]}
//! ```
//!
//! Unsigned, so it only ever names CVEs for an update the signed index already gives; it
//! never chooses a version. `"0"` entries (never affected) are older than every installed
//! version and so never match.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use crate::pkgs::apk::version::compare;

use super::super::CveFix;

/// Fixed versions and their CVE ids, per source package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecDb {
    by_origin: HashMap<String, Vec<(String, Vec<String>)>>,
}

#[derive(serde::Deserialize)]
struct RawDb {
    #[serde(default)]
    packages: Vec<RawPackage>,
}

#[derive(serde::Deserialize)]
struct RawPackage {
    pkg: RawPkg,
}

#[derive(serde::Deserialize)]
struct RawPkg {
    name: String,
    #[serde(default)]
    secfixes: BTreeMap<String, serde_json::Value>,
}

impl SecDb {
    /// Parses one secdb file.
    ///
    /// # Errors
    /// The JSON error when the text is not a secdb document.
    pub fn parse(json: &[u8]) -> Result<SecDb, String> {
        let mut db = SecDb::default();
        db.merge_json(json)?;
        Ok(db)
    }

    /// Adds another file's packages (`community.json` after `main.json`).
    ///
    /// # Errors
    /// As [`SecDb::parse`]; `self` is unchanged on error.
    pub fn merge_json(&mut self, json: &[u8]) -> Result<(), String> {
        let raw: RawDb = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        for package in raw.packages {
            let fixes = self.by_origin.entry(package.pkg.name).or_default();
            for (version, ids) in package.pkg.secfixes {
                let ids = cve_ids(&ids);
                if !ids.is_empty() {
                    fixes.push((version, ids));
                }
            }
        }
        Ok(())
    }

    /// The CVEs fixed after `installed` up to and including `new`, in `origin` (or, when
    /// the secdb has no such source package, `name`), sorted by id, each with the first
    /// such version that lists it. An id listed again at a later version (an incomplete
    /// first fix) counts there when `installed` is past the first. Versions apk cannot
    /// order are skipped.
    pub fn fixes(&self, origin: &str, name: &str, installed: &str, new: &str) -> Vec<CveFix> {
        let Some(entries) = self
            .by_origin
            .get(origin)
            .or_else(|| self.by_origin.get(name))
        else {
            return Vec::new();
        };
        let mut first: BTreeMap<&str, &str> = BTreeMap::new();
        for (version, ids) in entries {
            let after_installed = compare(version, installed) == Ok(Ordering::Greater);
            let up_to_new = matches!(compare(version, new), Ok(Ordering::Less | Ordering::Equal));
            if !(after_installed && up_to_new) {
                continue;
            }
            for id in ids {
                first
                    .entry(id)
                    .and_modify(|known| {
                        if compare(version, known) == Ok(Ordering::Less) {
                            *known = version;
                        }
                    })
                    .or_insert(version);
            }
        }
        first
            .into_iter()
            .map(|(id, version)| CveFix {
                id: id.to_owned(),
                fixed_version: version.to_owned(),
            })
            .collect()
    }

    /// Adds `other`'s entries.
    pub fn extend(&mut self, other: &SecDb) {
        for (origin, fixes) in &other.by_origin {
            self.by_origin
                .entry(origin.clone())
                .or_default()
                .extend(fixes.iter().cloned());
        }
    }

    /// Source packages listed.
    pub fn len(&self) -> usize {
        self.by_origin.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_origin.is_empty()
    }
}

/// The ids in one secfixes value: a list of strings, each usually one id, sometimes
/// several separated by spaces (`"CVE-2019-1 CVE-2019-2"`) or with a note after them.
fn cve_ids(value: &serde_json::Value) -> Vec<String> {
    let Some(items) = value.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(serde_json::Value::as_str)
        .flat_map(str::split_whitespace)
        .filter(|token| looks_like_id(token))
        .map(str::to_owned)
        .collect()
}

/// `CVE-2023-5678`, `GHSA-xxxx-...`, `XSA-123`, ...: letters, a dash, then id characters.
fn looks_like_id(token: &str) -> bool {
    let Some((prefix, rest)) = token.split_once('-') else {
        return false;
    };
    !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_uppercase())
        && !rest.is_empty()
        && token.len() <= 64
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
