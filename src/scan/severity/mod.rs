//! Severities from the distributions' own security data, for the built-in scanner, whose
//! repositories say which CVEs an update fixes but not how bad they are.
//!
//! Two real formats, each as a file or a URL (`scan.severity_sources`), told apart by their
//! content:
//! - the Debian security tracker's JSON export
//!   (<https://security-tracker.debian.org/tracker/data/json>):
//!   `{source package: {CVE: {releases: {codename: {status, urgency, fixed_version}}}}}`;
//!   the urgency of the image's release is the severity ([`debian_urgency`]);
//! - Ubuntu's CVE OVAL (`com.ubuntu.<codename>.cve.oval.xml`): one `<definition>` per CVE
//!   with `<reference source="CVE" ref_id=...>` and `<advisory><severity>`; the codename
//!   comes from the definition id `oval:com.ubuntu.<codename>:def:...`
//!   ([`ubuntu_priority`]).
//!
//! Loaded once per scanner; a source that cannot be read fails the scan (a configured
//! source silently missing would make every severity unknown again).

mod debian;
mod oval;

use std::collections::HashMap;

use crate::scan::plan::Severity;

#[cfg(test)]
mod tests;

/// Why a severity source could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeverityError {
    #[error("severity source {source_name}: {reason}")]
    Unreadable { source_name: String, reason: String },
}

/// Severities by (distribution, codename, source package, CVE).
#[derive(Debug, Default)]
pub struct SeverityIndex {
    /// Debian: source package -> CVE -> codename -> severity (`None`: the tracker's
    /// "not yet assigned" or "end-of-life").
    debian: HashMap<String, HashMap<String, HashMap<String, Option<Severity>>>>,
    /// Ubuntu: codename -> CVE -> severity (`None`: "untriaged").
    ubuntu: HashMap<String, HashMap<String, Option<Severity>>>,
}

impl SeverityIndex {
    /// Reads every source (file contents, already fetched) into one index.
    ///
    /// # Errors
    /// A source that is neither format, or is malformed.
    pub fn from_sources(sources: &[(String, Vec<u8>)]) -> Result<SeverityIndex, SeverityError> {
        let mut index = SeverityIndex::default();
        for (name, bytes) in sources {
            let unreadable = |reason: String| SeverityError::Unreadable {
                source_name: name.clone(),
                reason,
            };
            let start = bytes
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .copied()
                .unwrap_or(b' ');
            match start {
                b'{' => debian::read(bytes, &mut index.debian).map_err(unreadable)?,
                b'<' => oval::read(bytes, &mut index.ubuntu).map_err(unreadable)?,
                _ => {
                    return Err(unreadable(
                        "neither the Debian security tracker's JSON nor Ubuntu's OVAL XML".into(),
                    ))
                }
            }
        }
        Ok(index)
    }

    /// True when no source gave anything.
    pub fn is_empty(&self) -> bool {
        self.debian.is_empty() && self.ubuntu.is_empty()
    }

    /// The severity of `cve` in `source_package` on `distribution` `codename` (`debian`,
    /// `bookworm`; `ubuntu`, `jammy`), when a source states one.
    pub fn lookup(
        &self,
        distribution: &str,
        codename: &str,
        source_package: &str,
        cve: &str,
    ) -> Option<Severity> {
        match distribution {
            "debian" => self
                .debian
                .get(source_package)?
                .get(cve)?
                .get(codename)
                .copied()
                .flatten(),
            "ubuntu" => self.ubuntu.get(codename)?.get(cve).copied().flatten(),
            _ => None,
        }
    }
}

/// The Debian tracker's urgency as a severity (as Trivy reads it): `unimportant` and `low`
/// are LOW, `medium` MEDIUM, `high` HIGH; `not yet assigned`, `end-of-life` and anything
/// else are unknown. A trailing `*` or `**` (urgency not yet confirmed) is ignored.
pub fn debian_urgency(urgency: &str) -> Option<Severity> {
    match urgency.trim().trim_end_matches('*').trim() {
        "unimportant" | "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        _ => None,
    }
}

/// Ubuntu's priority as a severity: `negligible` and `low` are LOW, `medium` MEDIUM,
/// `high` HIGH, `critical` CRITICAL; `untriaged` is unknown. Any case.
pub fn ubuntu_priority(priority: &str) -> Option<Severity> {
    match priority.trim().to_ascii_lowercase().as_str() {
        "negligible" | "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}
