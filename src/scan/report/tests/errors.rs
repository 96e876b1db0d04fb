//! Mismatching and malformed reports: the error says exactly what is wrong.

use super::*;

// === reports that do not match the image ===

#[test]
fn other_os_release_is_rejected() {
    let error = mismatch(
        &fixture("reports/trivy_debian_bullseye.json"),
        &Platform::linux("amd64"),
        &bookworm(),
    );
    assert_eq!(
        error.to_string(),
        "scan report does not match the image: other OS release: report says debian 11.9, \
         image is debian 12 (bookworm); 1 reported package(s) not installed in the image: \
         libssl1.1 1.1.1w-0+deb11u1"
    );
}

#[test]
fn other_os_family_is_rejected() {
    let error = mismatch(
        &fixture("reports/copa_v1alpha1_ubuntu.json"),
        &Platform::linux("amd64"),
        &bookworm(),
    );
    assert_eq!(
        error.differences[0],
        Difference::OsFamily {
            report: "ubuntu 22.04".to_owned(),
            image: "debian 12 (bookworm)".to_owned(),
        }
    );
    assert!(error
        .to_string()
        .starts_with("scan report does not match the image: other OS: report says ubuntu 22.04"));
}

#[test]
fn stale_report_lists_every_difference() {
    let error = mismatch(
        &fixture("reports/trivy_debian_bookworm_stale.json"),
        &Platform::linux("amd64"),
        &bookworm(),
    );
    assert_eq!(
        error.to_string(),
        "scan report does not match the image: \
         other platform: report says arm64/v8, image is linux/amd64; \
         2 installed version(s) differ: \
         libc6 (report says 2.36-9+deb12u3, image has 2.36-9+deb12u4), \
         libssl3 (report says 3.0.11-1~deb12u1, image has 3.0.11-1~deb12u2); \
         1 reported package(s) not installed in the image: libcurl4 7.88.1-10+deb12u5"
    );
}

#[test]
fn long_difference_lists_are_cut_and_counted() {
    let vulnerabilities: Vec<Value> = (0..15)
        .map(|i| {
            serde_json::json!({"VulnerabilityID": format!("CVE-2024-{i:04}"),
                "PkgName": format!("lib{i:02}"), "InstalledVersion": "1.0-1",
                "FixedVersion": "1.0-2", "Severity": "LOW"})
        })
        .collect();
    let report = trivy_report("debian", "12.5", Value::Array(vulnerabilities));
    let inventory = Inventory {
        packages: (0..15)
            .flat_map(|i| packages(&[(&format!("lib{i:02}"), "1.0-0")]))
            .collect(),
        ..bookworm()
    };
    let error = mismatch(&report, &Platform::linux("amd64"), &inventory);
    let Difference::InstalledVersions { listed, total } = &error.differences[0] else {
        panic!("{error:?}");
    };
    assert_eq!((listed.len(), *total), (10, 15));
    assert!(
        error
            .to_string()
            .ends_with("lib09 (report says 1.0-1, image has 1.0-0), and 5 more"),
        "{error}"
    );
}

#[test]
fn report_without_os_does_not_match_an_image_with_one() {
    let report = serde_json::json!({"SchemaVersion": 2, "Results": [
        {"Target": "app/package-lock.json", "Class": "lang-pkgs", "Type": "npm",
         "Vulnerabilities": [{"VulnerabilityID": "CVE-2022-25883", "PkgName": "semver",
            "InstalledVersion": "7.3.7", "FixedVersion": "7.5.2, 6.3.1, 5.7.2"}]}]});
    let error = mismatch(
        &serde_json::to_vec(&report).unwrap(),
        &Platform::linux("amd64"),
        &bookworm(),
    );
    assert_eq!(
        error.to_string(),
        "scan report does not match the image: the report names no OS, the image is \
         debian 12 (bookworm)"
    );
}

/// The report's OS against the image's os-release: `(family, report release, image ID,
/// VERSION_ID, VERSION_CODENAME, matches)`.
#[test]
fn os_releases_match_on_the_components_both_sides_have() {
    let cases = [
        (
            "debian",
            "12.5",
            "debian",
            Some("12"),
            Some("bookworm"),
            true,
        ),
        (
            "debian",
            "11.9",
            "debian",
            Some("12"),
            Some("bookworm"),
            false,
        ),
        ("debian", "trixie/sid", "debian", None, Some("trixie"), true),
        (
            "debian",
            "trixie/sid",
            "debian",
            Some("12"),
            Some("bookworm"),
            false,
        ),
        ("debian", "12.5", "debian", None, Some("trixie"), false),
        (
            "ubuntu",
            "22.04",
            "ubuntu",
            Some("22.04"),
            Some("jammy"),
            true,
        ),
        (
            "ubuntu",
            "22.04",
            "ubuntu",
            Some("24.04"),
            Some("noble"),
            false,
        ),
        (
            "ubuntu",
            "22.04",
            "debian",
            Some("12"),
            Some("bookworm"),
            false,
        ),
        ("alpine", "3.20.3", "alpine", Some("3.20.3"), None, true),
        ("alpine", "3.20.3", "alpine", Some("3.20"), None, true),
        ("alpine", "3.19.4", "alpine", Some("3.20.3"), None, false),
        (
            "cbl-mariner",
            "2.0.20240123",
            "mariner",
            Some("2.0"),
            None,
            true,
        ),
        (
            "azurelinux",
            "3.0.20240727",
            "azurelinux",
            Some("3.0"),
            None,
            true,
        ),
        (
            "azurelinux",
            "3.0.20240727",
            "mariner",
            Some("2.0"),
            None,
            false,
        ),
        ("amazon", "2 (Karoo)", "amzn", Some("2"), None, true),
        (
            "amazon",
            "2023.4.20240528",
            "amzn",
            Some("2023"),
            None,
            true,
        ),
        ("redhat", "9.4", "rhel", Some("9.4"), None, true),
        ("redhat", "8.10", "rhel", Some("9.4"), None, false),
        ("alma", "9.4", "almalinux", Some("9.4"), None, true),
    ];
    for (family, release, id, version_id, codename, matches) in cases {
        let report = ScanReport {
            format: ReportFormat::Trivy,
            os: Some(ReportOs {
                family: family.to_owned(),
                version: release.to_owned(),
            }),
            architecture: None,
            variant: None,
            findings: Vec::new(),
        };
        let inventory = Inventory {
            os: os(id, version_id, codename, id),
            ecosystem: Ecosystem::Dpkg,
            packages: Vec::new(),
        };
        let result = plan_from_report(
            &report,
            &Platform::linux("amd64"),
            &inventory,
            &PlanOptions::default(),
        );
        assert_eq!(
            result.is_ok(),
            matches,
            "{family} {release} vs {id} {version_id:?} {codename:?}: {result:?}"
        );
    }
}

#[test]
fn platforms_match_with_arm64_v8_as_plain_arm64() {
    let cases = [
        ("arm64", Some("v8"), Platform::linux("arm64"), true),
        ("arm64", None, arm64_v8(), true),
        ("amd64", None, arm64_v8(), false),
        (
            "arm",
            Some("v6"),
            Platform {
                variant: Some("v7".to_owned()),
                ..Platform::linux("arm")
            },
            false,
        ),
    ];
    for (architecture, variant, platform, matches) in cases {
        let report = ScanReport {
            format: ReportFormat::CopaV1alpha2,
            os: Some(ReportOs {
                family: "debian".to_owned(),
                version: "12".to_owned(),
            }),
            architecture: Some(architecture.to_owned()),
            variant: variant.map(str::to_owned),
            findings: Vec::new(),
        };
        let inventory = Inventory {
            packages: Vec::new(),
            ..bookworm()
        };
        let result = plan_from_report(&report, &platform, &inventory, &PlanOptions::default());
        assert_eq!(
            result.is_ok(),
            matches,
            "{architecture} {variant:?} vs {platform}"
        );
    }
}

// === reports that cannot be read ===

fn parse_error(bytes: &[u8]) -> String {
    match parse(bytes) {
        Ok(report) => panic!("expected an error, parsed {report:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_fixtures_give_clear_errors() {
    let cases = [
        (
            "malformed/trivy_schema_v1.json",
            "Trivy report has SchemaVersion 1; only SchemaVersion 2 is supported",
        ),
        (
            "malformed/trivy_wrong_types.json",
            "scan report field Results[0].Vulnerabilities[1].PkgName should be a string, \
             found a number",
        ),
        (
            "malformed/trivy_missing_installed_version.json",
            "scan report field Results[0].Vulnerabilities[0].InstalledVersion is missing",
        ),
        (
            "malformed/copa_v1alpha3.json",
            "copa report has apiVersion \"v1alpha3\"; only v1alpha1 and v1alpha2 are supported",
        ),
        (
            "malformed/copa_missing_os.json",
            "scan report field metadata.os is missing",
        ),
    ];
    for (path, message) in cases {
        assert_eq!(parse_error(&fixture(path)), message, "{path}");
    }
}

#[test]
fn truncated_report_says_truncated() {
    let bytes = fixture("malformed/trivy_truncated.json");
    assert!(matches!(
        trivy::parse(&bytes),
        Err(ReportError::Truncated { .. })
    ));
    assert!(
        parse_error(&bytes).starts_with("scan report is truncated: the JSON ends early at line ")
    );
}

#[test]
fn scanner_error_output_is_not_json() {
    let message = parse_error(&fixture("malformed/trivy_error_output.txt"));
    assert!(
        message.starts_with("scan report is not valid JSON: ") && message.contains("line 1"),
        "{message}"
    );
}

#[test]
fn wrong_shapes_name_the_field() {
    let cases: [(&[u8], &str); 10] = [
        (b"", "scan report is empty"),
        (b" \n\t", "scan report is empty"),
        (
            b"[]",
            "scan report field (top level) should be an object, found an array",
        ),
        (
            br#"{"ArtifactName": "x"}"#,
            "scan report format not recognised: a Trivy report has a top-level SchemaVersion, \
             a copa report a top-level apiVersion, and this has neither",
        ),
        (
            br#"{"SchemaVersion": "2"}"#,
            "scan report field SchemaVersion should be a number, found a string",
        ),
        (
            br#"{"SchemaVersion": 2, "Results": {"Class": "os-pkgs"}}"#,
            "scan report field Results should be an array, found an object",
        ),
        (
            br#"{"SchemaVersion": 2, "Results": [{"Target": "x"}]}"#,
            "scan report field Results[0].Class is missing",
        ),
        (
            br#"{"SchemaVersion": 2, "Results": [{"Class": "os-pkgs", "Vulnerabilities":
                [{"VulnerabilityID": "CVE-1", "PkgName": "a", "InstalledVersion": "1"}]}]}"#,
            "scan report field Metadata.OS is missing",
        ),
        (
            br#"{"SchemaVersion": 2, "Metadata": {"OS": {"Family": "debian", "Name": "12"}},
                "Results": [{"Class": "os-pkgs", "Vulnerabilities": [{"VulnerabilityID":
                "CVE-1", "PkgName": "a", "InstalledVersion": "1", "Severity": "SEVERE"}]}]}"#,
            "scan report field Results[0].Vulnerabilities[0].Severity has invalid value \
             \"SEVERE\": expected UNKNOWN, LOW, MEDIUM, HIGH or CRITICAL",
        ),
        (
            br#"{"apiVersion": "v1alpha2", "metadata": {"os": {"type": "alpine",
                "version": "3.20"}}, "osupdates": [{"name": "", "installedVersion": "1"}]}"#,
            "scan report field osupdates[0].name has invalid value \"\": must not be empty",
        ),
    ];
    for (bytes, message) in cases {
        assert_eq!(
            parse_error(bytes),
            message,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn a_copa_report_is_not_a_trivy_report() {
    let error = trivy::parse(&fixture("reports/copa_v1alpha1_debian.json")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "scan report field SchemaVersion is missing"
    );
}

#[test]
fn hostile_inputs_are_bounded() {
    let deep = "[".repeat(100_000);
    assert!(parse_error(deep.as_bytes()).contains("recursion limit exceeded"));
    let huge = vec![b' '; MAX_REPORT_BYTES + 1];
    assert_eq!(
        parse(&huge).unwrap_err(),
        ReportError::TooLarge {
            size: MAX_REPORT_BYTES + 1,
            limit: MAX_REPORT_BYTES
        }
    );
}

#[test]
fn package_names_with_shell_metacharacters_are_refused() {
    let report = br#"{"SchemaVersion":2,"ArtifactName":"x","ArtifactType":"container_image",
        "Metadata":{"OS":{"Family":"debian","Name":"12.5"}},
        "Results":[{"Target":"x (debian 12.5)","Class":"os-pkgs","Type":"debian","Vulnerabilities":[
        {"VulnerabilityID":"CVE-2099-0001","PkgName":"libssl3; touch /pwned","InstalledVersion":"3.0.11-1~deb12u2",
         "FixedVersion":"3.0.13-1~deb12u1","Severity":"HIGH"},
        {"VulnerabilityID":"CVE-2099-0002","PkgName":"$(reboot)","InstalledVersion":"1",
         "FixedVersion":"2","Severity":"HIGH"}]}]}"#;
    let error = mismatch(report, &Platform::linux("amd64"), &bookworm());
    assert_eq!(
        error.to_string(),
        "scan report does not match the image: 2 package name(s) that are not valid names, \
         refused before anything runs: \"$(reboot)\", \"libssl3; touch /pwned\""
    );
}
