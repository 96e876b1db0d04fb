//! Severities for the built-in scanner's findings from the Debian security tracker's JSON
//! (a hand-cut excerpt in the real format), and `min_severity` with `unknown_severity`
//! deciding what has none: the scanner alone knows no severity, so before severity
//! sources every finding was UNKNOWN and a minimum planned nothing.

use super::fixture::inventory;
use super::repo::{build_deb, publish, tools_available, DebSpec, Signer};
use super::server::MirrorServer;
use crate::pkgs::dpkg::db::parse_status;
use crate::pkgs::Inventory;
use crate::scan::builtin::{BuiltinConfig, BuiltinScanner};
use crate::scan::plan::{PlanOptions, Platform, Severity, SkipReason, UnknownSeverity};

const POOL: &str = "pool/updates";

fn changelog(source: &str, version: &str, cve: &str) -> String {
    format!(
        "{source} ({version}) bookworm-security; urgency=medium\n\n  * SECURITY UPDATE: {cve}.\n\n -- Test <t@example.invalid>  Mon, 01 Apr 2024 00:00:00 +0000\n"
    )
}

#[tokio::test]
async fn tracker_urgencies_decide_a_minimum_severity_and_unknown_is_a_choice() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new("severity test archive <t@example.invalid>", &[], "never");
    let archive = dir.path().join("www/debian-security");
    // libexpat1 fixes CVE-2024-45491 (HIGH in the tracker), libssl3 CVE-2024-5535 (LOW),
    // zlib1g a CVE the tracker does not list (unknown).
    let specs = [
        ("libexpat1", "expat", "2.5.0-1+deb12u1", "CVE-2024-45491"),
        ("libssl3", "openssl", "3.0.14-1~deb12u1", "CVE-2024-5535"),
        ("zlib1g", "zlib", "1:1.2.13.dfsg-1+deb12u1", "CVE-2099-0001"),
    ];
    let changelogs: Vec<String> = specs
        .iter()
        .map(|(_, source, version, cve)| changelog(source, version, cve))
        .collect();
    for ((name, source, version, _), text) in specs.iter().zip(&changelogs) {
        build_deb(
            &archive,
            POOL,
            &DebSpec {
                name,
                version,
                architecture: "amd64",
                source: Some(source),
                changelog: Some(text),
                doc_link: None,
                compression: "xz",
            },
        );
    }
    publish(&archive, "bookworm-security", POOL, &signer, "");
    signer.export(&dir.path().join("keyring.gpg"), false);
    let server = MirrorServer::start(&dir.path().join("www")).await;

    let status = "Package: libexpat1\nStatus: install ok installed\nArchitecture: amd64\nSource: expat\nVersion: 2.5.0-1\n\n\
        Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.11-1~deb12u2\n\n\
        Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nSource: zlib\nVersion: 1:1.2.13.dfsg-1\n";
    let inventory = Inventory {
        packages: parse_status("/var/lib/dpkg/status", status.as_bytes()).unwrap(),
        ..inventory()
    };
    let tracker = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/scan/testdata/severity/debian-tracker.json"
    );
    let scan = |sources: Vec<String>, options: PlanOptions| {
        let cache = tempfile::tempdir().unwrap();
        let mut config = BuiltinConfig::new(cache.path());
        config.debian.security_url = server.url("debian-security");
        config.debian.keyring = dir.path().join("keyring.gpg");
        config.point_releases = false;
        config.retries = 0;
        config.severity_sources = sources;
        let inventory = inventory.clone();
        async move {
            let scanner = BuiltinScanner::new(config).unwrap();
            let result = scanner
                .scan(&inventory, &Platform::linux("amd64"), &options)
                .await;
            drop(cache);
            result.unwrap().plan.platforms.remove(0)
        }
    };
    let high = |unknown_severity| PlanOptions {
        min_severity: Some(Severity::High),
        unknown_severity,
        ..PlanOptions::default()
    };
    let names = |plan: &crate::scan::plan::PlatformPlan| -> Vec<String> {
        plan.updates.iter().map(|u| u.name.clone()).collect()
    };

    // With the tracker: HIGH is planned (its severity recorded), LOW is below the minimum,
    // the unknown one is patched by default and named in the plan's note.
    let plan = scan(vec![tracker.to_owned()], high(UnknownSeverity::Patch)).await;
    assert_eq!(names(&plan), ["libexpat1", "zlib1g"], "{plan:#?}");
    assert_eq!(plan.updates[0].fixes[0].severity, Some(Severity::High));
    let libssl3 = plan
        .not_planned
        .iter()
        .find(|n| n.name == "libssl3")
        .unwrap();
    assert_eq!(libssl3.severity, Some(Severity::Low));
    assert_eq!(
        libssl3.reason,
        SkipReason::BelowMinimumSeverity {
            minimum: Severity::High
        }
    );
    let note = plan.unknown_severity.clone().unwrap();
    assert_eq!(
        (note.choice, note.packages),
        (UnknownSeverity::Patch, vec!["zlib1g".to_owned()])
    );

    // `skip`: the unknown one is left out, with that reason.
    let plan = scan(vec![tracker.to_owned()], high(UnknownSeverity::Skip)).await;
    assert_eq!(names(&plan), ["libexpat1"]);
    assert!(plan.not_planned.iter().any(|n| n.name == "zlib1g"
        && n.reason
            == SkipReason::UnknownSeverity {
                minimum: Severity::High
            }));

    // Without a source every severity is unknown: `skip` plans nothing, and says why.
    let plan = scan(Vec::new(), high(UnknownSeverity::Skip)).await;
    assert!(plan.updates.is_empty());
    assert_eq!(plan.unknown_severity.unwrap().packages.len(), 3);

    // A configured source that cannot be read fails the scan, naming it.
    let cache = tempfile::tempdir().unwrap();
    let mut config = BuiltinConfig::new(cache.path());
    config.debian.security_url = server.url("debian-security");
    config.debian.keyring = dir.path().join("keyring.gpg");
    config.point_releases = false;
    config.severity_sources = vec![dir.path().join("missing.json").display().to_string()];
    let scanner = BuiltinScanner::new(config).unwrap();
    let e = scanner
        .scan(
            &inventory,
            &Platform::linux("amd64"),
            &high(UnknownSeverity::Patch),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing.json"), "{e}");
}
