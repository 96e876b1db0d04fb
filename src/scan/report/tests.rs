//! Report fixtures (`src/scan/testdata/`) to exact plans or exact errors.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;
use crate::pkgs::{Ecosystem, InstalledPackage, Inventory, OsRelease};
use crate::scan::plan::{Plan, PlanOptions, Platform, SkipReason, UnknownSeverity};

/// The fixtures are compiled in, so the tests do not depend on where they run from (test
/// binaries built in one checkout are run from another in CI and by other sessions).
fn fixture(path: &str) -> Vec<u8> {
    macro_rules! fixtures {
        ($($name:literal),* $(,)?) => {
            match path {
                $($name => include_bytes!(concat!("../testdata/", $name)).to_vec(),)*
                other => panic!("no fixture {other}; add it to the list in fixture()"),
            }
        };
    }
    fixtures!(
        "reports/copa_v1alpha1_debian.json",
        "reports/copa_v1alpha1_ubuntu.json",
        "reports/copa_v1alpha2_alpine.json",
        "reports/trivy_alpine_3.20.json",
        "reports/trivy_debian_bookworm.json",
        "reports/trivy_debian_bookworm_stale.json",
        "reports/trivy_debian_bullseye.json",
        "expected/copa_v1alpha1_debian.plan.json",
        "expected/copa_v1alpha2_alpine.plan.json",
        "expected/trivy_alpine_3.20.plan.json",
        "expected/trivy_debian_bookworm.plan.json",
        "malformed/copa_missing_os.json",
        "malformed/copa_v1alpha3.json",
        "malformed/trivy_error_output.txt",
        "malformed/trivy_missing_installed_version.json",
        "malformed/trivy_schema_v1.json",
        "malformed/trivy_truncated.json",
        "malformed/trivy_wrong_types.json",
    )
}

fn packages(list: &[(&str, &str)]) -> Vec<InstalledPackage> {
    list.iter()
        .map(|(name, version)| InstalledPackage {
            name: (*name).to_owned(),
            version: (*version).to_owned(),
            architecture: None,
            source_name: None,
            source_version: None,
        })
        .collect()
}

fn os(id: &str, version_id: Option<&str>, codename: Option<&str>, pretty: &str) -> OsRelease {
    OsRelease {
        id: id.to_owned(),
        id_like: Vec::new(),
        version_id: version_id.map(str::to_owned),
        version_codename: codename.map(str::to_owned),
        pretty_name: Some(pretty.to_owned()),
    }
}

/// What the image's `/var/lib/dpkg/status` says for `debian:12.5-slim` in the fixtures.
fn bookworm() -> Inventory {
    Inventory {
        os: os(
            "debian",
            Some("12"),
            Some("bookworm"),
            "Debian GNU/Linux 12 (bookworm)",
        ),
        ecosystem: Ecosystem::Dpkg,
        packages: packages(&[
            ("apt", "2.6.1"),
            ("base-files", "12.4+deb12u5"),
            ("bash", "5.2.15-2+b2"),
            ("coreutils", "9.1-1"),
            ("libc-bin", "2.36-9+deb12u4"),
            ("libc6", "2.36-9+deb12u4"),
            ("libexpat1", "2.5.0-1"),
            ("libgnutls30", "3.7.9-2+deb12u1"),
            ("libssl3", "3.0.11-1~deb12u2"),
            ("login", "1:4.13+dfsg1-1+b1"),
            ("openssl", "3.0.11-1~deb12u2"),
            ("perl-base", "5.36.0-7+deb12u1"),
            ("tar", "1.34+dfsg-1.2+deb12u1"),
            ("zlib1g", "1:1.2.13.dfsg-1"),
        ]),
    }
}

fn alpine() -> Inventory {
    Inventory {
        os: os("alpine", Some("3.20.3"), None, "Alpine Linux v3.20"),
        ecosystem: Ecosystem::Apk,
        packages: packages(&[
            ("alpine-baselayout", "3.6.5-r0"),
            ("busybox", "1.36.1-r29"),
            ("busybox-binsh", "1.36.1-r29"),
            ("libcrypto3", "3.3.2-r0"),
            ("libssl3", "3.3.2-r0"),
            ("musl", "1.2.5-r0"),
            ("ssl_client", "1.36.1-r29"),
            ("zlib", "1.3.1-r1"),
        ]),
    }
}

fn arm64_v8() -> Platform {
    Platform {
        variant: Some("v8".to_owned()),
        ..Platform::linux("arm64")
    }
}

fn plan(report: &str, platform: &Platform, inventory: &Inventory, options: &PlanOptions) -> Plan {
    let report = parse(&fixture(report)).expect("fixture parses");
    plan_from_report(&report, platform, inventory, options).expect("report matches the image")
}

fn mismatch(report: &[u8], platform: &Platform, inventory: &Inventory) -> ReportMismatch {
    let report = parse(report).expect("report parses");
    match plan_from_report(&report, platform, inventory, &PlanOptions::default()) {
        Ok(plan) => panic!("expected a mismatch, got {plan:?}"),
        Err(e) => e,
    }
}

fn assert_plan_eq(plan: &Plan, expected: &str) {
    let actual = serde_json::to_value(plan).expect("plan serializes");
    let expected: Value = serde_json::from_slice(&fixture(expected)).expect("expected is JSON");
    assert!(
        actual == expected,
        "plan differs from the expected one\nactual:\n{}\nexpected:\n{}",
        serde_json::to_string_pretty(&actual).unwrap_or_default(),
        serde_json::to_string_pretty(&expected).unwrap_or_default(),
    );
}

// === plans from fixtures ===

#[test]
fn trivy_bookworm_gives_the_exact_plan() {
    let plan = plan(
        "reports/trivy_debian_bookworm.json",
        &Platform::linux("amd64"),
        &bookworm(),
        &PlanOptions::default(),
    );
    assert_plan_eq(&plan, "expected/trivy_debian_bookworm.plan.json");
    let back: Plan = serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn trivy_alpine_gives_the_exact_plan() {
    let plan = plan(
        "reports/trivy_alpine_3.20.json",
        &arm64_v8(),
        &alpine(),
        &PlanOptions::default(),
    );
    assert_plan_eq(&plan, "expected/trivy_alpine_3.20.plan.json");
}

#[test]
fn copa_v1alpha1_gives_the_exact_plan() {
    let plan = plan(
        "reports/copa_v1alpha1_debian.json",
        &Platform::linux("amd64"),
        &bookworm(),
        &PlanOptions::default(),
    );
    assert_plan_eq(&plan, "expected/copa_v1alpha1_debian.plan.json");
}

#[test]
fn copa_v1alpha2_gives_the_exact_plan() {
    let plan = plan(
        "reports/copa_v1alpha2_alpine.json",
        &arm64_v8(),
        &alpine(),
        &PlanOptions::default(),
    );
    assert_plan_eq(&plan, "expected/copa_v1alpha2_alpine.plan.json");
}

#[test]
fn format_is_detected_from_the_version_field() {
    for (path, format) in [
        ("reports/trivy_debian_bookworm.json", ReportFormat::Trivy),
        (
            "reports/copa_v1alpha1_debian.json",
            ReportFormat::CopaV1alpha1,
        ),
        (
            "reports/copa_v1alpha2_alpine.json",
            ReportFormat::CopaV1alpha2,
        ),
    ] {
        let bytes = fixture(path);
        let report = parse(&bytes).unwrap();
        assert_eq!(report.format, format, "{path}");
        let direct = match format {
            ReportFormat::Trivy => trivy::parse(&bytes),
            _ => copa::parse(&bytes),
        };
        assert_eq!(direct.unwrap(), report, "{path}");
    }
}

#[test]
fn plan_does_not_depend_on_report_order() {
    let mut document: Value =
        serde_json::from_slice(&fixture("reports/trivy_debian_bookworm.json")).unwrap();
    let results = document["Results"].as_array_mut().unwrap();
    results.reverse();
    for result in results {
        if let Some(vulnerabilities) = result["Vulnerabilities"].as_array_mut() {
            vulnerabilities.reverse();
        }
    }
    let report = parse(&serde_json::to_vec(&document).unwrap()).unwrap();
    let plan = plan_from_report(
        &report,
        &Platform::linux("amd64"),
        &bookworm(),
        &PlanOptions::default(),
    )
    .unwrap();
    assert_plan_eq(&plan, "expected/trivy_debian_bookworm.plan.json");
}

#[test]
fn an_unknown_severity_is_skipped_only_when_asked() {
    let options = PlanOptions {
        min_severity: Some(Severity::High),
        unknown_severity: UnknownSeverity::Skip,
        ..PlanOptions::default()
    };
    let plan = plan(
        "reports/trivy_debian_bookworm.json",
        &Platform::linux("amd64"),
        &bookworm(),
        &options,
    );
    let platform = &plan.platforms[0];
    let skipped = platform
        .not_planned
        .iter()
        .find(|n| n.name == "libexpat1" && n.vulnerability_id == "CVE-2024-45491")
        .unwrap();
    assert_eq!(
        skipped.reason,
        SkipReason::UnknownSeverity {
            minimum: Severity::High
        }
    );
    let note = platform.unknown_severity.as_ref().unwrap();
    assert_eq!(note.choice, UnknownSeverity::Skip);
}

#[test]
fn minimum_severity_and_exclude_filter_per_vulnerability() {
    let options = PlanOptions {
        min_severity: Some(Severity::High),
        exclude: BTreeSet::from(["libgnutls30".to_owned()]),
        ..PlanOptions::default()
    };
    let plan = plan(
        "reports/trivy_debian_bookworm.json",
        &Platform::linux("amd64"),
        &bookworm(),
        &options,
    );
    let platform = &plan.platforms[0];
    let updates: Vec<(&str, &str)> = platform
        .updates
        .iter()
        .map(|u| (u.name.as_str(), u.fixed_version.as_str()))
        .collect();
    // libssl3's LOW and MEDIUM fixes no longer count: the HIGH one needs only deb12u1.
    assert_eq!(
        updates,
        [
            ("libc-bin", "2.36-9+deb12u7"),
            ("libc6", "2.36-9+deb12u7"),
            ("libexpat1", "2.5.0-1+deb12u1"),
            ("libssl3", "3.0.14-1~deb12u1"),
            ("openssl", "3.0.14-1~deb12u1"),
        ]
    );
    let libssl3 = &platform.updates[3];
    let ids: Vec<&str> = libssl3.fixes.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["CVE-2024-4741"]);
    let reason = |name: &str, id: &str| {
        platform
            .not_planned
            .iter()
            .find(|n| n.name == name && n.vulnerability_id == id)
            .map(|n| n.reason.clone())
    };
    let below = Some(SkipReason::BelowMinimumSeverity {
        minimum: Severity::High,
    });
    assert_eq!(reason("libssl3", "CVE-2024-0727"), below);
    // An UNKNOWN severity is patched by default (`patch.unknown_severity = "patch"`), and
    // the plan says so.
    assert_eq!(reason("libexpat1", "CVE-2024-45491"), None);
    let libexpat1 = &platform.updates[2];
    assert!(libexpat1.fixes.iter().any(|f| f.id == "CVE-2024-45491"));
    let note = platform.unknown_severity.as_ref().unwrap();
    assert_eq!(note.choice, UnknownSeverity::Patch);
    assert!(note.packages.contains(&"libexpat1".to_owned()), "{note:?}");
    assert_eq!(
        reason("libgnutls30", "CVE-2024-0553"),
        Some(SkipReason::Excluded)
    );
    assert_eq!(
        reason("libgnutls30", "CVE-2024-28834"),
        Some(SkipReason::Excluded)
    );
    // No fix is reported as such even when the severity would also filter it.
    assert_eq!(
        reason("apt", "CVE-2011-3374"),
        Some(SkipReason::NoFixedVersion {
            status: Some("affected".to_owned())
        })
    );
}

#[test]
fn include_list_plans_only_named_packages() {
    let options = PlanOptions {
        include: BTreeSet::from(["libc6".to_owned(), "zlib1g".to_owned()]),
        ..PlanOptions::default()
    };
    let plan = plan(
        "reports/copa_v1alpha1_debian.json",
        &Platform::linux("amd64"),
        &bookworm(),
        &options,
    );
    let platform = &plan.platforms[0];
    let names: Vec<&str> = platform.updates.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["libc6"]);
    let skipped: Vec<(&str, &SkipReason)> = platform
        .not_planned
        .iter()
        .map(|n| (n.name.as_str(), &n.reason))
        .collect();
    assert_eq!(
        skipped,
        [
            ("libssl3", &SkipReason::NotIncluded),
            ("libssl3", &SkipReason::NotIncluded),
            ("zlib1g", &SkipReason::NoFixedVersion { status: None }),
        ]
    );
}

/// Trivy report with one `os-pkgs` result holding `vulnerabilities`.
fn trivy_report(family: &str, name: &str, vulnerabilities: Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "SchemaVersion": 2,
        "Metadata": {"OS": {"Family": family, "Name": name}},
        "Results": [{"Target": "image", "Class": "os-pkgs", "Type": family,
                     "Vulnerabilities": vulnerabilities}],
    }))
    .unwrap()
}

fn one_package(name: &str, version: &str) -> Inventory {
    Inventory {
        packages: packages(&[(name, version)]),
        ..bookworm()
    }
}

#[test]
fn comma_separated_fixed_versions_pick_the_lowest_newer_one() {
    for (installed, expected) in [
        ("1.2.0-1", Some("1.2.3-1")),
        ("1.3.0-1", Some("1.3.1-1")),
        ("1.3.1-1", None),
    ] {
        let report = trivy_report(
            "debian",
            "12.5",
            serde_json::json!([{"VulnerabilityID": "CVE-2024-0001", "PkgName": "libfoo",
                "InstalledVersion": installed, "FixedVersion": "1.3.1-1, 1.2.3-1",
                "Severity": "HIGH"}]),
        );
        let report = parse(&report).unwrap();
        assert_eq!(report.findings[0].fixed_versions, ["1.3.1-1", "1.2.3-1"]);
        let plan = plan_from_report(
            &report,
            &Platform::linux("amd64"),
            &one_package("libfoo", installed),
            &PlanOptions::default(),
        )
        .unwrap();
        let platform = &plan.platforms[0];
        match expected {
            Some(fixed) => assert_eq!(platform.updates[0].fixed_version, fixed, "{installed}"),
            None => {
                assert!(platform.updates.is_empty(), "{installed}");
                assert_eq!(platform.not_planned[0].reason, SkipReason::FixNotNewer);
            }
        }
    }
}

#[test]
fn unparsable_fixed_versions_are_reported_not_dropped() {
    for (fixed, planned) in [("beta 1", None), ("1.0-2, beta 1", Some("1.0-2"))] {
        let report = trivy_report(
            "debian",
            "12.5",
            serde_json::json!([{"VulnerabilityID": "CVE-2024-0001", "PkgName": "libfoo",
                "InstalledVersion": "1.0-1", "FixedVersion": fixed, "Severity": "HIGH"}]),
        );
        let plan = plan_from_report(
            &parse(&report).unwrap(),
            &Platform::linux("amd64"),
            &one_package("libfoo", "1.0-1"),
            &PlanOptions::default(),
        )
        .unwrap();
        let platform = &plan.platforms[0];
        match planned {
            Some(version) => assert_eq!(platform.updates[0].fixed_version, version),
            None => {
                let SkipReason::InvalidVersion { detail } = &platform.not_planned[0].reason else {
                    panic!("{:?}", platform.not_planned);
                };
                assert!(detail.contains("\"beta 1\""), "{detail}");
            }
        }
    }
}

#[test]
fn one_vulnerability_listed_twice_is_one_fix() {
    let report = trivy_report(
        "debian",
        "12.5",
        serde_json::json!([
            {"VulnerabilityID": "CVE-2024-0001", "PkgName": "libfoo",
             "InstalledVersion": "1.0-1", "FixedVersion": "1.0-2", "Severity": "LOW"},
            {"VulnerabilityID": "CVE-2024-0001", "PkgName": "libfoo",
             "InstalledVersion": "1.0-1", "FixedVersion": "1.0-3", "Severity": "HIGH"},
        ]),
    );
    let plan = plan_from_report(
        &parse(&report).unwrap(),
        &Platform::linux("amd64"),
        &one_package("libfoo", "1.0-1"),
        &PlanOptions::default(),
    )
    .unwrap();
    let update = &plan.platforms[0].updates[0];
    assert_eq!(update.fixed_version, "1.0-3");
    assert_eq!(update.fixes.len(), 1);
    assert_eq!(update.fixes[0].severity, Some(Severity::High));
    assert_eq!(update.fixes[0].fixed_version, "1.0-3");
}

#[test]
fn copa_update_without_vulnerability_id_is_still_planned() {
    let report = serde_json::json!({
        "apiVersion": "v1alpha1",
        "metadata": {"os": {"type": "debian", "version": "12"}},
        "updates": [{"name": "libfoo", "installedVersion": "1.0-1", "fixedVersion": "1.0-2"}],
    });
    let plan = plan_from_report(
        &parse(&serde_json::to_vec(&report).unwrap()).unwrap(),
        &Platform::linux("amd64"),
        &one_package("libfoo", "1.0-1"),
        &PlanOptions::default(),
    )
    .unwrap();
    let update = &plan.platforms[0].updates[0];
    assert_eq!(update.fixed_version, "1.0-2");
    assert!(update.fixes.is_empty());
}

#[test]
fn copa_v1alpha1_node_updates_are_kept_as_language_packages() {
    let report = serde_json::json!({
        "apiVersion": "v1alpha1",
        "metadata": {"os": {"type": "debian", "version": "12"}, "config": {"arch": "amd64"}},
        "updates": [],
        "nodeUpdates": [{"name": "semver", "installedVersion": "7.3.7",
                         "fixedVersion": "7.5.2", "vulnerabilityID": "CVE-2022-25883"}],
    });
    let plan = plan_from_report(
        &parse(&serde_json::to_vec(&report).unwrap()).unwrap(),
        &Platform::linux("amd64"),
        &bookworm(),
        &PlanOptions::default(),
    )
    .unwrap();
    let platform = &plan.platforms[0];
    assert!(platform.updates.is_empty());
    assert_eq!(
        platform.not_planned[0].reason,
        SkipReason::LanguagePackage {
            package_type: Some("node-pkg".to_owned()),
            location: None
        }
    );
}

#[test]
fn rpm_versions_with_and_without_zero_epoch_are_the_same_install() {
    let report = trivy_report(
        "azurelinux",
        "3.0.20240727",
        serde_json::json!([{"VulnerabilityID": "CVE-2024-6119", "PkgName": "openssl",
            "InstalledVersion": "0:3.3.0-1.azl3", "FixedVersion": "3.3.0-2.azl3",
            "Severity": "HIGH"}]),
    );
    let inventory = Inventory {
        os: os("azurelinux", Some("3.0"), None, "Microsoft Azure Linux 3.0"),
        ecosystem: Ecosystem::Rpm,
        packages: packages(&[("openssl", "3.3.0-1.azl3")]),
    };
    let plan = plan_from_report(
        &parse(&report).unwrap(),
        &Platform::linux("amd64"),
        &inventory,
        &PlanOptions::default(),
    )
    .unwrap();
    let update = &plan.platforms[0].updates[0];
    assert_eq!(
        update.installed_version, "3.3.0-1.azl3",
        "the image's spelling"
    );
    assert_eq!(update.fixed_version, "3.3.0-2.azl3");
}

mod errors;
