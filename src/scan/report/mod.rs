//! Scan reports made by other tools: Trivy JSON and copa's native format. Each parser turns
//! the bytes into one [`ScanReport`] (findings as the tool states them), and
//! [`plan_from_report`] checks that report against the image's own package database before
//! anything is planned: copa believes its report blindly, we do not.
//!
//! This module reads bytes it is given; it does not run scanners, fetch images or read
//! files.

pub mod copa;
mod json;
mod matching;
pub mod trivy;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use matching::{plan_from_report, Difference, NotInstalled, ReportMismatch, VersionDiffers};

use super::plan::{PlanSource, Severity};

/// Reports larger than this are refused before parsing. Trivy reports of large images with
/// every field run to a few MiB; 64 MiB leaves room and still bounds memory.
pub const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;

/// Which format a report was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportFormat {
    /// Trivy JSON, `SchemaVersion: 2`.
    Trivy,
    /// copa `apiVersion: v1alpha1`.
    CopaV1alpha1,
    /// copa `apiVersion: v1alpha2`.
    CopaV1alpha2,
}

impl ReportFormat {
    /// The [`PlanSource`] of plans made from reports in this format.
    pub fn plan_source(self) -> PlanSource {
        match self {
            ReportFormat::Trivy => PlanSource::TrivyReport,
            ReportFormat::CopaV1alpha1 => PlanSource::CopaReport {
                api_version: copa::V1ALPHA1.to_owned(),
            },
            ReportFormat::CopaV1alpha2 => PlanSource::CopaReport {
                api_version: copa::V1ALPHA2.to_owned(),
            },
        }
    }
}

/// A report as its tool states it, before any check against the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub format: ReportFormat,
    /// `None` when the tool found no OS (Trivy on a scratch image).
    pub os: Option<ReportOs>,
    /// The platform the report says it scanned, when it says.
    pub architecture: Option<String>,
    pub variant: Option<String>,
    /// In report order; one per (package, vulnerability) pair the report lists.
    pub findings: Vec<Finding>,
}

/// The OS a report names: Trivy's `Metadata.OS`, copa's `metadata.os`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOs {
    /// `debian`, `ubuntu`, `alpine`, `cbl-mariner`, `azurelinux`, `redhat`, ...
    pub family: String,
    /// The release: `12.5`, `22.04`, `3.20.3`, `2.0.20240123`, `2 (Karoo)`, ...
    pub version: String,
}

/// One package the report calls vulnerable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub class: FindingClass,
    pub name: String,
    pub installed_version: String,
    /// Every fixed version the report lists, in its order; empty when it knows no fix.
    pub fixed_versions: Vec<String>,
    /// Empty when the report names none (copa plugins may leave it out).
    pub vulnerability_id: String,
    pub severity: Option<Severity>,
    /// Trivy's `Status`: `fixed`, `affected`, `will_not_fix`, ...
    pub status: Option<String>,
}

/// What kind of package a finding is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingClass {
    /// Installed by the OS package manager; these get planned.
    OsPackage,
    /// A language package (Trivy `lang-pkgs`, copa `langupdates`); kept, never planned.
    LanguagePackage {
        package_type: Option<String>,
        location: Option<String>,
    },
}

/// Why a report could not be read. All of these are faults of the report (or of whoever
/// produced it), never transient: retrying the same bytes gives the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("scan report is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("scan report is empty")]
    Empty,
    #[error("scan report is truncated: the JSON ends early at line {line}, column {column}")]
    Truncated { line: usize, column: usize },
    #[error("scan report is not valid JSON: {detail}")]
    NotJson { detail: String },
    #[error(
        "scan report format not recognised: a Trivy report has a top-level SchemaVersion, \
         a copa report a top-level apiVersion, and this has neither"
    )]
    UnknownFormat,
    #[error("Trivy report has SchemaVersion {found}; only SchemaVersion 2 is supported")]
    UnsupportedTrivySchema { found: String },
    #[error("copa report has apiVersion {found:?}; only v1alpha1 and v1alpha2 are supported")]
    UnsupportedCopaApiVersion { found: String },
    #[error("scan report field {path} is missing")]
    MissingField { path: String },
    #[error("scan report field {path} should be {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("scan report field {path} has invalid value {value:?}: {reason}")]
    InvalidValue {
        path: String,
        value: String,
        reason: String,
    },
}

/// Reads a Trivy or copa report, telling them apart by their top-level version field.
///
/// # Errors
/// Everything [`trivy::parse`] and [`copa::parse`] reject, and [`ReportError::UnknownFormat`]
/// when the document has neither `SchemaVersion` nor `apiVersion`.
pub fn parse(bytes: &[u8]) -> Result<ScanReport, ReportError> {
    let document = json::parse_document(bytes)?;
    let root = json::root_object(&document)?;
    if root.has(trivy::VERSION_FIELD) {
        trivy::from_document(&root)
    } else if root.has(copa::VERSION_FIELD) {
        copa::from_document(&root)
    } else {
        Err(ReportError::UnknownFormat)
    }
}

/// Splits a fixed-version field into its versions. Trivy joins several with ", " when an
/// advisory has fixes on more than one release branch (`"1.21.11, 1.22.4"`); no dpkg, apk
/// or rpm version can contain a comma, so splitting is safe for every ecosystem.
fn split_fixed_versions(raw: Option<&str>) -> Vec<String> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn nonempty(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_owned)
}
