//! copa's native report format (`copa patch --scanner native`, and what `copa-<scanner>`
//! plugins print), as defined in copa's `pkg/types/v1alpha1` and `pkg/types/v1alpha2`:
//!
//! ```json
//! {"apiVersion": "v1alpha1",
//!  "metadata": {"os": {"type": "debian", "version": "12.5"}, "config": {"arch": "amd64"}},
//!  "updates": [{"name": "libssl3", "installedVersion": "3.0.11-1~deb12u2",
//!               "fixedVersion": "3.0.13-1~deb12u1", "vulnerabilityID": "CVE-2024-0727"}]}
//! ```
//!
//! v1alpha2 replaces `updates` with `osupdates` and `langupdates`, adds `type` and `class`
//! to each update and `variant` to `metadata.config`. Some v1alpha1 producers also wrote
//! `nodeUpdates`; those are read as language packages. The format has no severities.

use super::json::{self, Object};
use super::{
    nonempty, split_fixed_versions, Finding, FindingClass, ReportError, ReportFormat, ReportOs,
    ScanReport,
};

/// The top-level field that identifies a copa report.
pub(super) const VERSION_FIELD: &str = "apiVersion";
/// The `apiVersion` values this module reads.
pub const V1ALPHA1: &str = "v1alpha1";
pub const V1ALPHA2: &str = "v1alpha2";

/// Reads a copa v1alpha1 or v1alpha2 report.
///
/// # Errors
/// [`ReportError`] when the bytes are over [`super::MAX_REPORT_BYTES`], empty, truncated or
/// not JSON; when `apiVersion` is another version; when `metadata.os`, an update's `name`
/// or `installedVersion` is missing, or any field has the wrong type (the error names its
/// JSON path).
pub fn parse(bytes: &[u8]) -> Result<ScanReport, ReportError> {
    let document = json::parse_document(bytes)?;
    from_document(&json::root_object(&document)?)
}

pub(super) fn from_document(root: &Object<'_>) -> Result<ScanReport, ReportError> {
    let api_version = root.req_str(VERSION_FIELD)?;
    let format = match api_version {
        V1ALPHA1 => ReportFormat::CopaV1alpha1,
        V1ALPHA2 => ReportFormat::CopaV1alpha2,
        other => {
            return Err(ReportError::UnsupportedCopaApiVersion {
                found: other.to_owned(),
            })
        }
    };
    let metadata = root.req_object("metadata")?;
    let os = metadata.req_object("os")?;
    let os = ReportOs {
        family: os.req_nonempty_str("type")?.to_owned(),
        version: os.req_nonempty_str("version")?.to_owned(),
    };
    let (architecture, variant) = match metadata.opt_object("config")? {
        None => (None, None),
        Some(config) => (
            nonempty(config.opt_str("arch")?),
            nonempty(config.opt_str("variant")?),
        ),
    };

    let (os_key, language_keys): (&str, &[&str]) = match format {
        ReportFormat::CopaV1alpha1 => ("updates", &["nodeUpdates"]),
        _ => ("osupdates", &["langupdates"]),
    };
    let mut findings = Vec::new();
    for update in root.opt_object_array(os_key)? {
        findings.push(read_update(&update, UpdateList::Os)?);
    }
    for key in language_keys {
        // nodeUpdates predates the `type` field; its packages are all npm packages.
        let default_type = (*key == "nodeUpdates").then_some("node-pkg");
        for update in root.opt_object_array(key)? {
            findings.push(read_update(&update, UpdateList::Language { default_type })?);
        }
    }

    Ok(ScanReport {
        format,
        os: Some(os),
        architecture,
        variant,
        findings,
    })
}

/// Which list of a copa report an update is in.
enum UpdateList {
    Os,
    /// `default_type` applies when the update has no `type`.
    Language {
        default_type: Option<&'static str>,
    },
}

fn read_update(update: &Object<'_>, list: UpdateList) -> Result<Finding, ReportError> {
    let class = match list {
        UpdateList::Os => FindingClass::OsPackage,
        UpdateList::Language { default_type } => FindingClass::LanguagePackage {
            package_type: nonempty(update.opt_str("type")?)
                .or_else(|| default_type.map(str::to_owned)),
            location: None,
        },
    };
    Ok(Finding {
        class,
        name: update.req_nonempty_str("name")?.to_owned(),
        installed_version: update.req_nonempty_str("installedVersion")?.to_owned(),
        fixed_versions: split_fixed_versions(update.opt_str("fixedVersion")?),
        vulnerability_id: update
            .opt_str("vulnerabilityID")?
            .unwrap_or_default()
            .to_owned(),
        severity: None,
        status: None,
    })
}
