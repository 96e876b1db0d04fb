//! Trivy JSON reports, `SchemaVersion: 2` (`trivy image --format json`).
//!
//! Read: `Metadata.OS.{Family,Name}`, `Metadata.ImageConfig.{architecture,variant}`, and
//! per result `Class`, `Type`, `Target` and `Vulnerabilities[]` (`VulnerabilityID`,
//! `PkgName`, `PkgPath`, `InstalledVersion`, `FixedVersion`, `Severity`, `Status`).
//! `os-pkgs` results become OS findings, `lang-pkgs` results language findings; other
//! classes (`config`, `secret`, `license`...) carry no package vulnerabilities and are
//! skipped. Unknown fields are ignored, since Trivy adds fields in minor releases.

use super::json::{self, Object};
use super::{
    nonempty, split_fixed_versions, Finding, FindingClass, ReportError, ReportFormat, ReportOs,
    ScanReport,
};
use crate::scan::plan::Severity;

/// The top-level field that identifies a Trivy report.
pub(super) const VERSION_FIELD: &str = "SchemaVersion";

const SUPPORTED_SCHEMA_VERSION: u64 = 2;
const CLASS_OS_PACKAGES: &str = "os-pkgs";
const CLASS_LANGUAGE_PACKAGES: &str = "lang-pkgs";

/// Reads a Trivy JSON report.
///
/// # Errors
/// [`ReportError`] when the bytes are over [`super::MAX_REPORT_BYTES`], empty, truncated or
/// not JSON; when `SchemaVersion` is not 2; when a field the plan needs is missing or has
/// the wrong type (the error names its JSON path); when a severity is not one of Trivy's.
pub fn parse(bytes: &[u8]) -> Result<ScanReport, ReportError> {
    let document = json::parse_document(bytes)?;
    from_document(&json::root_object(&document)?)
}

pub(super) fn from_document(root: &Object<'_>) -> Result<ScanReport, ReportError> {
    check_schema_version(root)?;
    let metadata = root.opt_object("Metadata")?;
    let (os, architecture, variant) = match &metadata {
        None => (None, None, None),
        Some(metadata) => {
            let os = metadata
                .opt_object("OS")?
                .map(|os| -> Result<ReportOs, ReportError> {
                    Ok(ReportOs {
                        family: os.req_nonempty_str("Family")?.to_owned(),
                        version: os.req_nonempty_str("Name")?.to_owned(),
                    })
                })
                .transpose()?;
            // ImageConfig is the image's config blob as Trivy found it, so its keys are
            // the OCI spelling (lower case), unlike the rest of the report.
            let (architecture, variant) = match metadata.opt_object("ImageConfig")? {
                None => (None, None),
                Some(config) => (
                    nonempty(config.opt_str("architecture")?),
                    nonempty(config.opt_str("variant")?),
                ),
            };
            (os, architecture, variant)
        }
    };

    let mut findings = Vec::new();
    for result in root.opt_object_array("Results")? {
        let class = result.req_str("Class")?;
        let finding_class = match class {
            CLASS_OS_PACKAGES => FindingClass::OsPackage,
            CLASS_LANGUAGE_PACKAGES => FindingClass::LanguagePackage {
                package_type: nonempty(result.opt_str("Type")?),
                location: None,
            },
            _ => continue,
        };
        let target = nonempty(result.opt_str("Target")?);
        for vulnerability in result.opt_object_array("Vulnerabilities")? {
            findings.push(read_vulnerability(
                &vulnerability,
                &finding_class,
                target.as_deref(),
            )?);
        }
    }
    if os.is_none() && findings.iter().any(|f| f.class == FindingClass::OsPackage) {
        return Err(ReportError::MissingField {
            path: "Metadata.OS".to_owned(),
        });
    }

    Ok(ScanReport {
        format: ReportFormat::Trivy,
        os,
        architecture,
        variant,
        findings,
    })
}

fn check_schema_version(root: &Object<'_>) -> Result<(), ReportError> {
    let (value, path) = root.req_value(VERSION_FIELD)?;
    let serde_json::Value::Number(number) = value else {
        return Err(json::wrong_type(&path, "a number", value));
    };
    if number.as_u64() == Some(SUPPORTED_SCHEMA_VERSION) {
        Ok(())
    } else {
        Err(ReportError::UnsupportedTrivySchema {
            found: number.to_string(),
        })
    }
}

fn read_vulnerability(
    vulnerability: &Object<'_>,
    class: &FindingClass,
    target: Option<&str>,
) -> Result<Finding, ReportError> {
    let class = match class {
        FindingClass::OsPackage => FindingClass::OsPackage,
        FindingClass::LanguagePackage { package_type, .. } => FindingClass::LanguagePackage {
            package_type: package_type.clone(),
            // PkgPath names the file for packages inside images (jars, binaries, wheels);
            // for lock files Trivy leaves it out and the result's Target names the file.
            location: nonempty(vulnerability.opt_str("PkgPath")?)
                .or_else(|| target.map(str::to_owned)),
        },
    };
    let severity = match vulnerability.opt_str("Severity")? {
        None | Some("") => None,
        Some(text) => Some(
            Severity::parse(text).ok_or_else(|| ReportError::InvalidValue {
                path: format!("{}.Severity", vulnerability.path()),
                value: text.to_owned(),
                reason: "expected UNKNOWN, LOW, MEDIUM, HIGH or CRITICAL".to_owned(),
            })?,
        ),
    };
    Ok(Finding {
        class,
        name: vulnerability.req_nonempty_str("PkgName")?.to_owned(),
        installed_version: vulnerability
            .req_nonempty_str("InstalledVersion")?
            .to_owned(),
        fixed_versions: split_fixed_versions(vulnerability.opt_str("FixedVersion")?),
        vulnerability_id: vulnerability
            .req_nonempty_str("VulnerabilityID")?
            .to_owned(),
        severity,
        status: nonempty(vulnerability.opt_str("Status")?),
    })
}
