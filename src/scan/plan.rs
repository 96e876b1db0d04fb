//! [`Plan`]: the one answer every scan source gives, whether a Trivy report, a copa report,
//! the built-in scanner or a scanner command: per platform, which OS packages to update from
//! which version to which, the vulnerability ids each update fixes, and everything that was
//! read but deliberately not planned, with the reason.
//!
//! A plan is data for the patcher and for people; it is serialized into caches and outputs,
//! so every list in it is sorted and de-duplicated, and the same input always gives the same
//! bytes.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pkgs::{compare_versions, Ecosystem, OsRelease};

/// Vulnerability severity, in Trivy's scale. The derived order is the severity order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Unknown,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Parses `UNKNOWN`, `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`, in any case; `None` otherwise.
    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str().eq_ignore_ascii_case(text))
    }

    /// Trivy's spelling: `UNKNOWN`, `LOW`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a minimum severity does with a finding whose severity no source states
/// (`patch.unknown_severity`): patching it is the safe reading of "no data".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSeverity {
    /// Planned as if it were at the minimum.
    #[default]
    Patch,
    /// Not planned ([`SkipReason::UnknownSeverity`]).
    Skip,
}

impl UnknownSeverity {
    pub fn parse(text: &str) -> Option<UnknownSeverity> {
        match text {
            "patch" => Some(UnknownSeverity::Patch),
            "skip" => Some(UnknownSeverity::Skip),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnknownSeverity::Patch => "patch",
            UnknownSeverity::Skip => "skip",
        }
    }
}

/// Under a minimum severity, what was decided for findings of unknown severity: shown in
/// summaries so that "nothing known" never silently becomes "nothing to do" (or the reverse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownSeverityNote {
    pub minimum: Severity,
    pub choice: UnknownSeverity,
    /// The packages planned (`patch`) or skipped (`skip`) for want of a severity, sorted.
    pub packages: Vec<String>,
}

/// An image platform, as an OCI index names it: `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A `linux` platform without variant.
    pub fn linux(architecture: &str) -> Platform {
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Where a plan came from. Two plans for the same image and platform are interchangeable
/// only when their sources are equal (see [`crate::scan::cache::ScanKey`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlanSource {
    /// A Trivy JSON report (SchemaVersion 2) supplied with the request or the config.
    TrivyReport,
    /// A copa native report; `api_version` is `v1alpha1` or `v1alpha2`.
    CopaReport { api_version: String },
    /// patchpull's own scanner; `index_version` identifies the repository indexes it read
    /// (a plan made from older indexes is stale once they change).
    BuiltinScanner { index_version: String },
    /// A configured scanner command whose Trivy JSON output was read.
    ScannerCommand { command: String },
}

/// The whole plan for one image: one entry per platform, sorted by platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub source: PlanSource,
    pub platforms: Vec<PlatformPlan>,
}

impl Plan {
    /// Builds a plan, sorting the platforms so equal inputs serialize to equal bytes.
    pub fn new(source: PlanSource, mut platforms: Vec<PlatformPlan>) -> Plan {
        platforms.sort_by(|a, b| a.platform.cmp(&b.platform));
        Plan { source, platforms }
    }

    /// True when no platform has anything to update.
    pub fn has_no_updates(&self) -> bool {
        self.platforms.iter().all(|p| p.updates.is_empty())
    }
}

/// What to do for one platform of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformPlan {
    pub platform: Platform,
    /// The image's own `/etc/os-release`, not what a report claims.
    pub os: OsRelease,
    pub ecosystem: Ecosystem,
    /// Sorted by package name, then installed version.
    pub updates: Vec<PackageUpdate>,
    /// One entry per (package, vulnerability) that was read but not planned, sorted.
    pub not_planned: Vec<NotPlanned>,
    /// Set when a minimum severity met findings of unknown severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_severity: Option<UnknownSeverityNote>,
    /// The package repositories the built-in scanner planned from, each with the version
    /// of the signed index it read; empty for plans from reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<RepositoryIndex>,
}

/// One package repository a plan was made from and the signed index it read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RepositoryIndex {
    /// `http://deb.debian.org/debian-security/dists/bookworm-security`, or an Alpine
    /// repository's base URL.
    pub url: String,
    /// `bookworm-security@<Date>#<hash of the Release's file list>`, or
    /// `v3.20/main@<DESCRIPTION>#<hash of the APKINDEX>`.
    pub index: String,
}

/// One package to update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageUpdate {
    pub name: String,
    /// The version the image's package database records.
    pub installed_version: String,
    /// The highest fixed version any of `fixes` needs: installing it fixes all of them.
    pub fixed_version: String,
    /// Sorted by id; empty when the source asked for the update without naming one.
    pub fixes: Vec<FixedVulnerability>,
}

/// A vulnerability an update fixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedVulnerability {
    pub id: String,
    /// `None` when the source does not say (copa reports carry no severity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The first version that fixes this vulnerability; at most the update's `fixed_version`.
    pub fixed_version: String,
}

/// A finding that was read and kept, but not planned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NotPlanned {
    pub name: String,
    pub installed_version: String,
    /// Empty when the source named none.
    pub vulnerability_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The fixed versions the source listed, as listed; empty when it knows no fix.
    pub fixed_versions: Vec<String>,
    pub reason: SkipReason,
}

/// Why a finding was not planned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// A language package (Python, Node, Go, Java...): read and kept, but patchpull only
    /// updates OS packages.
    LanguagePackage {
        /// `python-pkg`, `gobinary`, ... when the source says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        package_type: Option<String>,
        /// Where in the image (a lock file, a binary, a site-packages entry).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
    },
    /// The source knows no fixed version; `status` is its word for why (`will_not_fix`,
    /// `affected`, `fix_deferred`, ...).
    NoFixedVersion {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// No listed fixed version is newer than the installed one: the image already has the
    /// fix, or the source's data is wrong. Nothing to install either way.
    FixNotNewer,
    /// A listed fixed version, or the installed one, is not a valid version for the
    /// ecosystem, so whether it fixes anything cannot be decided. `detail` names it.
    InvalidVersion { detail: String },
    /// Below the configured minimum severity.
    BelowMinimumSeverity { minimum: Severity },
    /// No source states a severity, a minimum is set, and `patch.unknown_severity` is
    /// `skip`.
    UnknownSeverity { minimum: Severity },
    /// The package is in the exclude list.
    Excluded,
    /// An include list is set and does not name the package.
    NotIncluded,
    /// Planned, but fetching or installing the package failed and the policy says to
    /// patch the rest (`ignore_errors`).
    PatchFailed { error: String },
    /// `apt-get upgrade` keeps this upgrade back (it installs no new package and removes
    /// none), so the patch does too; `detail` says what the new version needs.
    HeldBack { detail: String },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::LanguagePackage { package_type, .. } => {
                let kind = package_type.as_deref().unwrap_or("language");
                write!(
                    f,
                    "{kind} package: read and kept, but not planned (only OS packages are patched)"
                )
            }
            SkipReason::NoFixedVersion {
                status: Some(status),
            } => {
                write!(f, "no fixed version (status {status})")
            }
            SkipReason::NoFixedVersion { status: None } => f.write_str("no fixed version"),
            SkipReason::FixNotNewer => {
                f.write_str("no fixed version is newer than the installed one")
            }
            SkipReason::InvalidVersion { detail } => {
                write!(f, "cannot compare versions: {detail}")
            }
            SkipReason::BelowMinimumSeverity { minimum } => {
                write!(f, "severity is below the minimum {minimum}")
            }
            SkipReason::UnknownSeverity { minimum } => write!(
                f,
                "severity unknown under the minimum {minimum} (patch.unknown_severity = \"skip\")"
            ),
            SkipReason::Excluded => f.write_str("package is excluded"),
            SkipReason::NotIncluded => f.write_str("package is not in the include list"),
            SkipReason::PatchFailed { error } => write!(f, "could not be patched: {error}"),
            SkipReason::HeldBack { detail } => {
                write!(f, "kept back, as apt-get upgrade keeps it: {detail}")
            }
        }
    }
}

/// What the operator asked to plan. The default plans every fixable OS package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Findings below this severity are not planned.
    pub min_severity: Option<Severity>,
    /// Under `min_severity`, findings of unknown severity (none stated, or `UNKNOWN`).
    pub unknown_severity: UnknownSeverity,
    /// When not empty, only these package names are planned.
    pub include: BTreeSet<String>,
    /// These package names are never planned; wins over `include`.
    pub exclude: BTreeSet<String>,
}

impl PlanOptions {
    /// Why the name filters reject `name`, if they do.
    pub fn name_filter(&self, name: &str) -> Option<SkipReason> {
        if self.exclude.contains(name) {
            Some(SkipReason::Excluded)
        } else if !self.include.is_empty() && !self.include.contains(name) {
            Some(SkipReason::NotIncluded)
        } else {
            None
        }
    }

    /// Why the severity threshold rejects `severity`, if it does. Sources record the
    /// decision through [`PlatformPlanBuilder::severity_filter`].
    pub fn severity_filter(&self, severity: Option<Severity>) -> Option<SkipReason> {
        let minimum = self.min_severity?;
        match severity.filter(|s| *s != Severity::Unknown) {
            None => match self.unknown_severity {
                UnknownSeverity::Patch => None,
                UnknownSeverity::Skip => Some(SkipReason::UnknownSeverity { minimum }),
            },
            Some(known) => {
                (known < minimum).then_some(SkipReason::BelowMinimumSeverity { minimum })
            }
        }
    }
}

/// A vulnerability as a source reports it, before it is attached to an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VulnerabilityRef {
    pub id: String,
    pub severity: Option<Severity>,
}

/// Collects one platform's fixes and skips in any order and produces the sorted
/// [`PlatformPlan`]. Every source uses it, so they all group and order the same way.
#[derive(Debug)]
pub struct PlatformPlanBuilder {
    platform: Platform,
    os: OsRelease,
    ecosystem: Ecosystem,
    pending: BTreeMap<(String, String), PendingUpdate>,
    not_planned: Vec<NotPlanned>,
    unknown_severity: Option<UnknownSeverityNote>,
}

#[derive(Debug, Default)]
struct PendingUpdate {
    fixed_versions: Vec<String>,
    fixes: BTreeMap<String, FixedVulnerability>,
}

impl PlatformPlanBuilder {
    /// Starts a plan for `platform`; `os` and `ecosystem` are the image's, and `ecosystem`
    /// orders the versions.
    pub fn new(platform: Platform, os: OsRelease, ecosystem: Ecosystem) -> PlatformPlanBuilder {
        PlatformPlanBuilder {
            platform,
            os,
            ecosystem,
            pending: BTreeMap::new(),
            not_planned: Vec::new(),
            unknown_severity: None,
        }
    }

    /// [`PlanOptions::severity_filter`] for package `name`, noting a finding of unknown
    /// severity under a minimum in the plan ([`PlatformPlan::unknown_severity`]).
    pub fn severity_filter(
        &mut self,
        options: &PlanOptions,
        name: &str,
        severity: Option<Severity>,
    ) -> Option<SkipReason> {
        let reason = options.severity_filter(severity);
        if let Some(minimum) = options.min_severity {
            if severity.is_none_or(|s| s == Severity::Unknown) {
                let note = self.unknown_severity.get_or_insert(UnknownSeverityNote {
                    minimum,
                    choice: options.unknown_severity,
                    packages: Vec::new(),
                });
                note.packages.push(name.to_owned());
            }
        }
        reason
    }

    /// Records that updating `name` from `installed_version` to `fixed_version` (which the
    /// caller has checked is newer) fixes `vulnerability`.
    pub fn add_fix(
        &mut self,
        name: &str,
        installed_version: &str,
        fixed_version: &str,
        vulnerability: Option<VulnerabilityRef>,
    ) {
        let pending = self
            .pending
            .entry((name.to_owned(), installed_version.to_owned()))
            .or_default();
        pending.fixed_versions.push(fixed_version.to_owned());
        let Some(vulnerability) = vulnerability.filter(|v| !v.id.is_empty()) else {
            return;
        };
        let ecosystem = self.ecosystem;
        pending
            .fixes
            .entry(vulnerability.id.clone())
            .and_modify(|known| {
                // The same id twice (two results, two advisories): the later fix and the
                // higher severity are the safe readings.
                if highest(ecosystem, &known.fixed_version, fixed_version) != known.fixed_version {
                    known.fixed_version = fixed_version.to_owned();
                }
                known.severity = known.severity.max(vulnerability.severity);
            })
            .or_insert(FixedVulnerability {
                id: vulnerability.id,
                severity: vulnerability.severity,
                fixed_version: fixed_version.to_owned(),
            });
    }

    /// Records a finding that is not planned.
    pub fn skip(&mut self, entry: NotPlanned) {
        self.not_planned.push(entry);
    }

    /// One update per (package, installed version) with the highest fixed version among
    /// its fixes; fixes sorted by id; skips sorted and de-duplicated.
    pub fn finish(self) -> PlatformPlan {
        let ecosystem = self.ecosystem;
        let updates = self
            .pending
            .into_iter()
            .filter_map(|((name, installed_version), pending)| {
                let fixed_version = pending
                    .fixed_versions
                    .iter()
                    .fold(None::<&str>, |best, v| {
                        Some(best.map_or(v.as_str(), |b| highest(ecosystem, b, v)))
                    })?
                    .to_owned();
                Some(PackageUpdate {
                    name,
                    installed_version,
                    fixed_version,
                    fixes: pending.fixes.into_values().collect(),
                })
            })
            .collect();
        let mut not_planned = self.not_planned;
        not_planned.sort();
        not_planned.dedup();
        let unknown_severity = self.unknown_severity.map(|mut note| {
            note.packages.sort();
            note.packages.dedup();
            note
        });
        PlatformPlan {
            platform: self.platform,
            os: self.os,
            ecosystem,
            updates,
            not_planned,
            unknown_severity,
            repositories: Vec::new(),
        }
    }
}

/// The higher of two versions by the ecosystem's order; versions the ecosystem calls equal
/// but that are spelled differently are tie-broken by bytes, so the choice never depends on
/// input order.
fn highest<'v>(ecosystem: Ecosystem, a: &'v str, b: &'v str) -> &'v str {
    match compare_versions(ecosystem, a, b).then_with(|| a.cmp(b)) {
        Ordering::Less => b,
        Ordering::Equal | Ordering::Greater => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_parse_in_any_case_and_order_by_severity() {
        assert_eq!(Severity::parse("critical"), Some(Severity::Critical));
        assert_eq!(Severity::parse("Medium"), Some(Severity::Medium));
        assert_eq!(Severity::parse("SEVERE"), None);
        assert!(Severity::ALL.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(serde_json::to_string(&Severity::High).unwrap(), "\"HIGH\"");
    }

    #[test]
    fn filters_exclude_before_include_and_unknown_severity_is_a_choice() {
        let mut options = PlanOptions {
            min_severity: Some(Severity::Low),
            include: BTreeSet::from(["a".to_owned(), "b".to_owned()]),
            exclude: BTreeSet::from(["b".to_owned()]),
            unknown_severity: UnknownSeverity::Skip,
        };
        assert_eq!(options.name_filter("a"), None);
        assert_eq!(options.name_filter("b"), Some(SkipReason::Excluded));
        assert_eq!(options.name_filter("c"), Some(SkipReason::NotIncluded));
        let unknown = Some(SkipReason::UnknownSeverity {
            minimum: Severity::Low,
        });
        assert_eq!(options.severity_filter(None), unknown);
        assert_eq!(options.severity_filter(Some(Severity::Unknown)), unknown);
        assert_eq!(options.severity_filter(Some(Severity::Low)), None);
        options.min_severity = Some(Severity::High);
        assert_eq!(
            options.severity_filter(Some(Severity::Medium)),
            Some(SkipReason::BelowMinimumSeverity {
                minimum: Severity::High
            })
        );
        // The default: an unknown severity is patched.
        options.unknown_severity = UnknownSeverity::default();
        assert_eq!(options.severity_filter(None), None);
        assert_eq!(PlanOptions::default().severity_filter(None), None);
    }

    #[test]
    fn reasons_and_platforms_read_well() {
        let reason = SkipReason::LanguagePackage {
            package_type: Some("python-pkg".to_owned()),
            location: None,
        };
        assert_eq!(
            reason.to_string(),
            "python-pkg package: read and kept, but not planned (only OS packages are patched)"
        );
        let reason = SkipReason::NoFixedVersion {
            status: Some("will_not_fix".to_owned()),
        };
        assert_eq!(reason.to_string(), "no fixed version (status will_not_fix)");
        let platform = Platform {
            variant: Some("v7".to_owned()),
            ..Platform::linux("arm")
        };
        assert_eq!(platform.to_string(), "linux/arm/v7");
    }

    #[test]
    fn plan_sources_serialize_as_tagged_cache_key_parts() {
        let source = PlanSource::BuiltinScanner {
            index_version: "bookworm-security@2024-08-20T10:00:00Z".to_owned(),
        };
        assert_eq!(
            serde_json::to_string(&source).unwrap(),
            r#"{"kind":"builtin_scanner","index_version":"bookworm-security@2024-08-20T10:00:00Z"}"#
        );
    }

    #[test]
    fn platforms_are_sorted() {
        let platform_plan = |platform: Platform| PlatformPlan {
            platform,
            os: OsRelease::default(),
            ecosystem: Ecosystem::Dpkg,
            updates: Vec::new(),
            not_planned: Vec::new(),
            unknown_severity: None,
            repositories: Vec::new(),
        };
        let plan = Plan::new(
            PlanSource::TrivyReport,
            vec![
                platform_plan(Platform::linux("arm64")),
                platform_plan(Platform::linux("amd64")),
            ],
        );
        let order: Vec<&str> = plan
            .platforms
            .iter()
            .map(|p| p.platform.architecture.as_str())
            .collect();
        assert_eq!(order, ["amd64", "arm64"]);
        assert!(plan.has_no_updates());
    }
}
