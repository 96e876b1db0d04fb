//! Checking a report against the image it claims to describe, then planning from it.
//!
//! A report made for another image (another OS release, an older build of the same tag,
//! another platform) would make us install the wrong packages, or none of the right ones.
//! So before planning, the report's OS must be the image's OS, and every OS package it
//! names must be installed in the image at the version it says. Any difference rejects the
//! whole report, with every difference listed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{Finding, FindingClass, ReportOs, ScanReport};
use crate::pkgs::{
    compare_versions, try_compare, Ecosystem, InstalledPackage, Inventory, OsRelease,
};
use crate::scan::plan::{
    NotPlanned, Plan, PlanOptions, Platform, PlatformPlanBuilder, SkipReason, VulnerabilityRef,
};

/// At most this many packages are named per kind of difference; the rest are counted.
const MAX_LISTED: usize = 10;

/// A report that does not describe the image. The report's fault, not retryable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportMismatch {
    /// Never empty.
    pub differences: Vec<Difference>,
}

/// One way a report differs from the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The report names no OS, but the image has one.
    NoOs { image: String },
    /// Another distribution: `report` and `image` are `family version` descriptions.
    OsFamily { report: String, image: String },
    /// Same distribution, another release.
    OsVersion { report: String, image: String },
    /// The report was made for another platform.
    Platform { report: String, image: String },
    /// Packages installed at other versions than the report says; `total` counts them all,
    /// `listed` names the first [`MAX_LISTED`] by name.
    InstalledVersions {
        listed: Vec<VersionDiffers>,
        total: usize,
    },
    /// Package names that are not valid names in the image's ecosystem (shell
    /// metacharacters, spaces, ...): refused before they reach any command.
    InvalidNames { names: Vec<String> },
    /// Packages the report names that the image does not have.
    NotInstalled {
        listed: Vec<NotInstalled>,
        total: usize,
    },
}

/// A package the image has at another version than the report says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionDiffers {
    pub name: String,
    pub report_version: String,
    /// Several versions are joined with ", " (multi-arch installs of one package).
    pub image_version: String,
}

/// A package the report names that the image's package database does not have.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NotInstalled {
    pub name: String,
    pub report_version: String,
}

impl fmt::Display for ReportMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("scan report does not match the image: ")?;
        for (index, difference) in self.differences.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{difference}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReportMismatch {}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::NoOs { image } => {
                write!(f, "the report names no OS, the image is {image}")
            }
            Difference::OsFamily { report, image } => {
                write!(f, "other OS: report says {report}, image is {image}")
            }
            Difference::OsVersion { report, image } => {
                write!(
                    f,
                    "other OS release: report says {report}, image is {image}"
                )
            }
            Difference::Platform { report, image } => {
                write!(f, "other platform: report says {report}, image is {image}")
            }
            Difference::InstalledVersions { listed, total } => {
                write!(f, "{total} installed version(s) differ: ")?;
                let items = listed.iter().map(|d| {
                    format!(
                        "{} (report says {}, image has {})",
                        d.name, d.report_version, d.image_version
                    )
                });
                write_list(f, items, *total)
            }
            Difference::InvalidNames { names } => {
                write!(
                    f,
                    "{} package name(s) that are not valid names, refused before anything runs: ",
                    names.len()
                )?;
                write_list(f, names.iter().map(|n| format!("{n:?}")), names.len())
            }
            Difference::NotInstalled { listed, total } => {
                write!(
                    f,
                    "{total} reported package(s) not installed in the image: "
                )?;
                let items = listed
                    .iter()
                    .map(|p| format!("{} {}", p.name, p.report_version));
                write_list(f, items, *total)
            }
        }
    }
}

fn write_list(
    f: &mut fmt::Formatter<'_>,
    items: impl Iterator<Item = String>,
    total: usize,
) -> fmt::Result {
    let mut shown = 0;
    for item in items {
        if shown > 0 {
            f.write_str(", ")?;
        }
        f.write_str(&item)?;
        shown += 1;
    }
    if total > shown {
        write!(f, ", and {} more", total - shown)?;
    }
    Ok(())
}

/// Checks `report` against the image's `inventory` and `platform`, then plans an update for
/// every OS package with a fixed version newer than the installed one that passes
/// `options`. Everything else the report lists is kept in `not_planned` with the reason.
///
/// The plan has one [`crate::scan::plan::PlatformPlan`], for `platform`, whose OS is the
/// image's own os-release. Its source is the report's format; a caller that got the report
/// from a scanner command replaces it with [`crate::scan::plan::PlanSource::ScannerCommand`].
///
/// # Errors
/// [`ReportMismatch`], listing every difference, when the report names another OS family
/// or release, another platform, OS packages the image does not have, or installed
/// versions that differ from the image's package database.
pub fn plan_from_report(
    report: &ScanReport,
    platform: &Platform,
    inventory: &Inventory,
    options: &PlanOptions,
) -> Result<Plan, ReportMismatch> {
    let ecosystem = inventory.ecosystem;
    let mut differences = Vec::new();
    if let Some(difference) = os_difference(report.os.as_ref(), &inventory.os) {
        differences.push(difference);
    }
    if let Some(difference) = platform_difference(report, platform) {
        differences.push(difference);
    }

    let mut installed: BTreeMap<&str, Vec<&InstalledPackage>> = BTreeMap::new();
    for package in &inventory.packages {
        installed.entry(&package.name).or_default().push(package);
    }
    let mut resolved = Vec::new();
    let mut versions_differ = BTreeSet::new();
    let mut not_installed = BTreeSet::new();
    let mut invalid_names = BTreeSet::new();
    for finding in &report.findings {
        if finding.class != FindingClass::OsPackage {
            continue;
        }
        if !crate::pkgs::valid_package_name(ecosystem, &finding.name) {
            invalid_names.insert(finding.name.clone());
            continue;
        }
        let Some(candidates) = installed.get(finding.name.as_str()) else {
            not_installed.insert(NotInstalled {
                name: finding.name.clone(),
                report_version: finding.installed_version.clone(),
            });
            continue;
        };
        match candidates
            .iter()
            .find(|p| same_version(ecosystem, &p.version, &finding.installed_version))
        {
            Some(package) => resolved.push((finding, package.version.as_str())),
            None => {
                let image_versions: Vec<&str> =
                    candidates.iter().map(|p| p.version.as_str()).collect();
                versions_differ.insert(VersionDiffers {
                    name: finding.name.clone(),
                    report_version: finding.installed_version.clone(),
                    image_version: image_versions.join(", "),
                });
            }
        }
    }
    if !invalid_names.is_empty() {
        differences.push(Difference::InvalidNames {
            names: invalid_names.into_iter().take(MAX_LISTED).collect(),
        });
    }
    if !versions_differ.is_empty() {
        differences.push(Difference::InstalledVersions {
            total: versions_differ.len(),
            listed: versions_differ.into_iter().take(MAX_LISTED).collect(),
        });
    }
    if !not_installed.is_empty() {
        differences.push(Difference::NotInstalled {
            total: not_installed.len(),
            listed: not_installed.into_iter().take(MAX_LISTED).collect(),
        });
    }
    if !differences.is_empty() {
        return Err(ReportMismatch { differences });
    }

    let mut builder = PlatformPlanBuilder::new(platform.clone(), inventory.os.clone(), ecosystem);
    for (finding, installed_version) in resolved {
        plan_os_finding(&mut builder, options, ecosystem, finding, installed_version);
    }
    for finding in &report.findings {
        if let FindingClass::LanguagePackage {
            package_type,
            location,
        } = &finding.class
        {
            builder.skip(not_planned(
                finding,
                &finding.installed_version,
                SkipReason::LanguagePackage {
                    package_type: package_type.clone(),
                    location: location.clone(),
                },
            ));
        }
    }
    Ok(Plan::new(
        report.format.plan_source(),
        vec![builder.finish()],
    ))
}

fn plan_os_finding(
    builder: &mut PlatformPlanBuilder,
    options: &PlanOptions,
    ecosystem: Ecosystem,
    finding: &Finding,
    installed_version: &str,
) {
    let reason = options.name_filter(&finding.name).or_else(|| {
        if finding.fixed_versions.is_empty() {
            Some(SkipReason::NoFixedVersion {
                status: finding.status.clone(),
            })
        } else {
            builder.severity_filter(options, &finding.name, finding.severity)
        }
    });
    if let Some(reason) = reason {
        builder.skip(not_planned(finding, installed_version, reason));
        return;
    }
    // Several fixed versions mean fixes on several release branches ("1.2.3, 1.3.1": fixed
    // in 1.2.3 on 1.2, in 1.3.1 on 1.3). The lowest one above the installed version is the
    // smallest update that gets past a fix; a higher one would jump branches for nothing.
    // `try_compare`, not `compare_versions`: an unparsable version must not be read as
    // "older", which would silently drop a fix.
    let mut newer: Vec<&str> = Vec::new();
    let mut invalid = None;
    for fixed_version in &finding.fixed_versions {
        match try_compare(ecosystem, fixed_version, installed_version) {
            Ok(Ordering::Greater) => newer.push(fixed_version),
            Ok(_) => {}
            Err(e) => {
                invalid.get_or_insert(e);
            }
        }
    }
    let lowest_newer = newer
        .into_iter()
        .min_by(|a, b| compare_versions(ecosystem, a, b).then_with(|| a.cmp(b)));
    match (lowest_newer, invalid) {
        (Some(fixed_version), _) => builder.add_fix(
            &finding.name,
            installed_version,
            fixed_version,
            Some(VulnerabilityRef {
                id: finding.vulnerability_id.clone(),
                severity: finding.severity,
            }),
        ),
        (None, Some(error)) => builder.skip(not_planned(
            finding,
            installed_version,
            SkipReason::InvalidVersion {
                detail: error.to_string(),
            },
        )),
        (None, None) => builder.skip(not_planned(
            finding,
            installed_version,
            SkipReason::FixNotNewer,
        )),
    }
}

fn not_planned(finding: &Finding, installed_version: &str, reason: SkipReason) -> NotPlanned {
    NotPlanned {
        name: finding.name.clone(),
        installed_version: installed_version.to_owned(),
        vulnerability_id: finding.vulnerability_id.clone(),
        severity: finding.severity,
        fixed_versions: finding.fixed_versions.clone(),
        reason,
    }
}

/// Equal spellings, or versions the ecosystem orders as equal (rpm `0:1.2-3` and `1.2-3`:
/// scanners and package databases disagree on writing a zero epoch).
fn same_version(ecosystem: Ecosystem, image: &str, report: &str) -> bool {
    image == report || compare_versions(ecosystem, image, report) == Ordering::Equal
}

fn os_difference(report: Option<&ReportOs>, image: &OsRelease) -> Option<Difference> {
    let Some(report) = report else {
        return Some(Difference::NoOs {
            image: describe_image_os(image),
        });
    };
    let described = format!("{} {}", report.family, report.version);
    if os_release_id(&report.family) != image.id.to_ascii_lowercase() {
        Some(Difference::OsFamily {
            report: described,
            image: describe_image_os(image),
        })
    } else if !same_release(&report.version, image) {
        Some(Difference::OsVersion {
            report: described,
            image: describe_image_os(image),
        })
    } else {
        None
    }
}

/// The os-release `ID` for a scanner's OS family name. Trivy (and copa, which copies it)
/// name some distributions differently from their os-release.
fn os_release_id(family: &str) -> String {
    let family = family.to_ascii_lowercase();
    let id = match family.as_str() {
        "cbl-mariner" => "mariner",
        "redhat" => "rhel",
        "alma" => "almalinux",
        "amazon" => "amzn",
        "oracle" => "ol",
        "opensuse.leap" => "opensuse-leap",
        "opensuse.tumbleweed" => "opensuse-tumbleweed",
        "slem" => "sle-micro",
        other => other,
    };
    id.to_owned()
}

/// Whether a report's release (`12.5`, `3.20.3`, `2 (Karoo)`, `trixie/sid`) names the
/// image's. Scanners read finer-grained files than os-release (Debian's `/etc/debian_version`
/// says 12.5 where `VERSION_ID` says 12; Mariner's release file adds a build date), so
/// numeric releases match when they agree on every component both sides have.
fn same_release(report: &str, image: &OsRelease) -> bool {
    let report_numbers = release_numbers(report);
    let image_numbers = image
        .version_id
        .as_deref()
        .map(release_numbers)
        .unwrap_or_default();
    if !report_numbers.is_empty() && !image_numbers.is_empty() {
        return report_numbers
            .iter()
            .zip(&image_numbers)
            .all(|(a, b)| a == b);
    }
    // A rolling or testing release ("trixie/sid") is named by codename.
    let names: Vec<&str> = [
        image.version_id.as_deref(),
        image.version_codename.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|n| !n.is_empty())
    .collect();
    if names.is_empty() {
        // The image does not say which release it is; nothing to contradict.
        return true;
    }
    let report_name = report.split('/').next().unwrap_or(report).trim();
    names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(report_name) || n.eq_ignore_ascii_case(report))
}

/// The leading dotted number of a release, components without leading zeros:
/// `"2.0.20240123"` → `["2", "0", "20240123"]`, `"2 (Karoo)"` → `["2"]`, `"trixie"` → `[]`.
fn release_numbers(release: &str) -> Vec<&str> {
    let end = release
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(release.len());
    release[..end]
        .split('.')
        .filter(|part| !part.is_empty())
        .map(|part| match part.trim_start_matches('0') {
            "" => "0",
            trimmed => trimmed,
        })
        .collect()
}

fn describe_image_os(os: &OsRelease) -> String {
    let mut described = if os.id.is_empty() {
        "(no os-release ID)".to_owned()
    } else {
        os.id.clone()
    };
    if let Some(version) = os.version_id.as_deref().filter(|v| !v.is_empty()) {
        described.push(' ');
        described.push_str(version);
    }
    if let Some(codename) = os.version_codename.as_deref().filter(|c| !c.is_empty()) {
        described.push_str(&format!(" ({codename})"));
    }
    described
}

fn platform_difference(report: &ScanReport, image: &Platform) -> Option<Difference> {
    let report_architecture = report.architecture.as_deref()?;
    let variant_differs = match (
        normal_variant(report_architecture, report.variant.as_deref()),
        normal_variant(&image.architecture, image.variant.as_deref()),
    ) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    if report_architecture == image.architecture && !variant_differs {
        return None;
    }
    let mut described = report_architecture.to_owned();
    if let Some(variant) = &report.variant {
        described.push('/');
        described.push_str(variant);
    }
    Some(Difference::Platform {
        report: described,
        image: image.to_string(),
    })
}

/// arm64's only variant is v8, which registries write or leave out at will.
fn normal_variant<'a>(architecture: &str, variant: Option<&'a str>) -> Option<&'a str> {
    match (architecture, variant) {
        ("arm64", Some("v8")) => None,
        (_, variant) => variant.filter(|v| !v.is_empty()),
    }
}
