//! Against Debian's real archive, with the real keyring: runs only with
//! `DEBIAN_ARCHIVE_TESTS=1`, since it needs deb.debian.org and
//! `/usr/share/keyrings/debian-archive-keyring.gpg` (package `debian-archive-keyring`).

use std::process::Command;
use std::time::Instant;

use crate::pkgs::{Ecosystem, InstalledPackage, Inventory, OsRelease};
use crate::scan::builtin::{BuiltinConfig, BuiltinScanner, ChangelogStatus};
use crate::scan::plan::{PlanOptions, Platform};

fn enabled() -> bool {
    let on = std::env::var("DEBIAN_ARCHIVE_TESTS").as_deref() == Ok("1");
    if !on {
        eprintln!("SKIP: set DEBIAN_ARCHIVE_TESTS=1 to test against deb.debian.org");
    }
    on
}

fn installed(name: &str, version: &str, source: Option<&str>) -> InstalledPackage {
    InstalledPackage {
        name: name.to_owned(),
        version: version.to_owned(),
        architecture: Some("amd64".to_owned()),
        source_name: source.map(str::to_owned),
        source_version: None,
    }
}

fn bookworm(packages: Vec<InstalledPackage>) -> Inventory {
    Inventory {
        os: OsRelease {
            id: "debian".to_owned(),
            version_id: Some("12".to_owned()),
            // As distroless images have it: no codename.
            version_codename: None,
            ..OsRelease::default()
        },
        ecosystem: Ecosystem::Dpkg,
        packages,
    }
}

/// `Version:` of `package` in a Packages text, found without the scanner's parser.
fn version_in(packages: &str, package: &str) -> Option<String> {
    packages
        .split("\n\n")
        .filter(|p| p.lines().any(|l| l == format!("Package: {package}")))
        .filter(|p| {
            p.lines()
                .any(|l| l == "Architecture: amd64" || l == "Architecture: all")
        })
        .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("Version: ")))
        .map(str::to_owned)
        .max_by(|a, b| crate::pkgs::compare_versions(Ecosystem::Dpkg, a, b))
}

#[tokio::test]
async fn bookworm_security_verifies_and_fixes_libssl3() {
    if !enabled() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let config = BuiltinConfig {
        point_releases: false,
        ..BuiltinConfig::new(cache.path())
    };
    let scanner = BuiltinScanner::new(config).unwrap();
    let inventory = bookworm(vec![
        installed("libssl3", "3.0.9-1", Some("openssl")),
        installed("tzdata", "2023c-5", None),
        installed("coreutils", "9.1-1", None),
    ]);
    let platform = Platform::linux("amd64");

    let started = Instant::now();
    let result = scanner
        .scan(&inventory, &platform, &PlanOptions::default())
        .await
        .unwrap();
    eprintln!("cold scan: {:?}", started.elapsed());
    let started = Instant::now();
    let again = scanner
        .scan(&inventory, &platform, &PlanOptions::default())
        .await
        .unwrap();
    eprintln!("warm scan: {:?}", started.elapsed());
    assert_eq!(again, result);

    // The expected version, computed from the index with curl and xz, not our parser.
    let url = "http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz";
    let script = format!("curl -fsS {url} | xz -dc");
    let packages = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(packages.status.success());
    let packages = String::from_utf8(packages.stdout).unwrap();
    let expected = version_in(&packages, "libssl3").unwrap();

    let libssl3 = result.updates.iter().find(|u| u.name == "libssl3").unwrap();
    assert_eq!(libssl3.fixed_version, expected);
    assert_eq!(libssl3.suite, "bookworm-security");
    assert_eq!(libssl3.source_name, "openssl");
    assert_eq!(libssl3.changelog, ChangelogStatus::Read);
    assert!(libssl3.fixes.len() > 10, "{:?}", libssl3.fixes);
    assert!(libssl3.fixes.iter().any(|f| f.id == "CVE-2023-5678"));
    let tzdata = result.updates.iter().find(|u| u.name == "tzdata");
    assert_eq!(
        tzdata.map(|u| u.fixed_version.clone()),
        version_in(&packages, "tzdata")
    );
    // coreutils has no security update in bookworm.
    assert!(result.updates.iter().all(|u| u.name != "coreutils"));
    for update in &result.updates {
        eprintln!(
            "{} {} -> {}: {} CVEs ({})",
            update.name,
            update.installed_version,
            update.fixed_version,
            update.fixes.len(),
            update.changelog
        );
    }
}

#[tokio::test]
async fn all_three_bookworm_suites_load() {
    if !enabled() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let config = BuiltinConfig {
        changelogs: false,
        ..BuiltinConfig::new(cache.path())
    };
    let scanner = BuiltinScanner::new(config).unwrap();
    let inventory = bookworm(vec![installed("libc6", "2.36-9", Some("glibc"))]);
    let platform = Platform::linux("amd64");
    let suites = scanner.suites(&inventory, &platform).unwrap();
    let started = Instant::now();
    let mut sizes = Vec::new();
    for suite in &suites {
        let loaded = scanner.repositories.load(suite, "amd64").await.unwrap();
        sizes.push((suite.name.clone(), loaded.indexes[0].len()));
    }
    let rss = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = rss
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or_default();
    eprintln!("cold load of {sizes:?}: {:?}, {rss}", started.elapsed());
    // The release suite has tens of thousands of packages; libc6 is in it.
    assert!(sizes[1].1 > 30_000, "{sizes:?}");
    let result = scanner
        .scan(&inventory, &platform, &PlanOptions::default())
        .await
        .unwrap();
    let libc6 = &result.updates[0];
    assert_eq!(libc6.name, "libc6");
    assert_eq!(libc6.changelog, ChangelogStatus::NotRequested);
}
