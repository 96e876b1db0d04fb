//! `patchpull scan` against images in a real registry: the inventory is read from the image
//! (dpkg status and os-release in different layers, distroless status.d), a Trivy report is
//! checked against it and planned, and a report for another image is refused with the
//! difference named.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::images::{self, Entry, Format};
use common::registry::Registry;
use common::require_tools;

const OS_RELEASE: &[u8] = b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";

const STATUS: &[u8] = b"Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.15-1~deb12u1\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\n\nPackage: removed-thing\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n";

fn trivy_report(openssl_installed: &str) -> String {
    serde_json::json!({
        "SchemaVersion": 2,
        "ArtifactName": "test/deb:1",
        "ArtifactType": "container_image",
        "Metadata": {"OS": {"Family": "debian", "Name": "12.8"}},
        "Results": [{
            "Target": "test/deb:1 (debian 12.8)",
            "Class": "os-pkgs",
            "Type": "debian",
            "Vulnerabilities": [
                {"VulnerabilityID": "CVE-2024-9143", "PkgName": "libssl3", "InstalledVersion": openssl_installed,
                 "FixedVersion": "3.0.15-1~deb12u2", "Severity": "HIGH"},
                {"VulnerabilityID": "CVE-2025-0001", "PkgName": "libssl3", "InstalledVersion": openssl_installed,
                 "FixedVersion": "3.0.16-1~deb12u1", "Severity": "MEDIUM"},
                {"VulnerabilityID": "CVE-2024-0002", "PkgName": "tzdata", "InstalledVersion": "2024a-0+deb12u1",
                 "FixedVersion": "", "Severity": "LOW"}
            ]
        }]
    })
    .to_string()
}

fn scan(dir: &Path, args: &[&str]) -> (bool, String, String) {
    scan_with(dir, "", args)
}

fn scan_with(dir: &Path, extra_toml: &str, args: &[&str]) -> (bool, String, String) {
    let config = dir.join("scan.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n[log]\nlevel = \"warn\"\n{extra_toml}",
            dir.join("store").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .arg("--config")
        .arg(&config)
        .arg("scan")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_reads_the_inventory_and_plans_from_a_trivy_report() {
    if !require_tools(&[common::registry::REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let lower = images::layer(
        Format::Oci,
        &[
            Entry::Dir("etc/"),
            Entry::File("usr/lib/os-release", OS_RELEASE, 0o644),
            Entry::Symlink("etc/os-release", "../usr/lib/os-release"),
        ],
    );
    let upper = images::layer(
        Format::Oci,
        &[
            Entry::Dir("var/lib/dpkg/"),
            Entry::File("var/lib/dpkg/status", STATUS, 0o644),
        ],
    );
    let image = images::assemble(Format::Oci, "amd64", vec![lower, upper], &["/bin/sh"]);
    images::push_image(&registry.url(), "test/deb", "1", &image).await;
    let reference = format!("{}/test/deb:1", registry.authority());

    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = scan(dir.path(), &["--insecure", "--inventory-only", &reference]);
    assert!(ok, "{err}");
    assert!(out.contains("linux/amd64"), "{out}");
    assert!(
        out.contains("Debian GNU/Linux 12 (bookworm), 2 packages, dpkg"),
        "{out}"
    );

    let report = dir.path().join("report.json");
    std::fs::write(&report, trivy_report("3.0.15-1~deb12u1")).unwrap();
    let (ok, out, err) = scan(
        dir.path(),
        &[
            "--insecure",
            &reference,
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("libssl3"))
        .unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells[..3],
        ["libssl3", "3.0.15-1~deb12u1", "3.0.16-1~deb12u1"],
        "{out}"
    );
    assert!(
        line.contains("CVE-2024-9143") && line.contains("CVE-2025-0001"),
        "{line}"
    );
    assert!(
        out.contains("tzdata 2024a-0+deb12u1 CVE-2024-0002"),
        "{out}"
    );

    let (ok, out, err) = scan(
        dir.path(),
        &[
            "--insecure",
            &reference,
            "--report",
            report.to_str().unwrap(),
            "--format",
            "trivy",
        ],
    );
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["SchemaVersion"], 2);
    assert_eq!(json["Metadata"]["OS"]["Family"], "debian");
    let vulns = json["Results"][0]["Vulnerabilities"].as_array().unwrap();
    let ids: Vec<&str> = vulns
        .iter()
        .map(|v| v["VulnerabilityID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["CVE-2024-9143", "CVE-2025-0001"]);
    assert_eq!(vulns[0]["PkgName"], "libssl3");
    assert_eq!(vulns[0]["Severity"], "HIGH");

    // A report made for another build of the image is refused, saying what differs.
    std::fs::write(&report, trivy_report("3.0.11-1~deb12u2")).unwrap();
    let (ok, _, err) = scan(
        dir.path(),
        &[
            "--insecure",
            &reference,
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(err.contains("does not match"), "{err}");
    assert!(
        err.contains("3.0.11-1~deb12u2") && err.contains("3.0.15-1~deb12u1"),
        "{err}"
    );

    // Bad input: a malformed report and a name that is not one.
    std::fs::write(&report, b"{\"SchemaVersion\": 2, \"Results\": [").unwrap();
    let (ok, _, err) = scan(
        dir.path(),
        &[
            "--insecure",
            &reference,
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(err.contains("report"), "{err}");
    let (ok, _, err) = scan(dir.path(), &["--insecure", "127.0.0.1:1/UPPER/case"]);
    assert!(!ok);
    assert!(err.contains("not a valid repository name"), "{err}");

    // A configured scanner command runs when no report is given: it gets the image as an
    // OCI layout (manifest, config and both layers) and its output is planned like a report.
    std::fs::write(&report, trivy_report("3.0.15-1~deb12u1")).unwrap();
    let runs = dir.path().join("scanner-runs");
    let script = format!(
        "echo run >> {} && test -f {{oci_dir}}/oci-layout && test -f {{oci_dir}}/index.json \
         && test $(ls {{oci_dir}}/blobs/sha256 | wc -l) -eq 4 \
         && test '{{image}} {{platform}}' = '{reference} linux/amd64' && cat {}",
        runs.display(),
        report.display()
    );
    let extra = format!("[scan]\ncommand = [\"sh\", \"-c\", {script:?}]\n");
    let (ok, out, err) = scan_with(dir.path(), &extra, &["--insecure", &reference]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("libssl3"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("3.0.16-1~deb12u1"), "{line}");
    // The same image and command again: the cached plan, without running the scanner.
    let (ok, again, err) = scan_with(dir.path(), &extra, &["--insecure", &reference]);
    assert!(ok, "{err}");
    assert_eq!(again, out);
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
    // Other plan options are another plan: the MEDIUM fix is left out.
    let (ok, high, err) = scan_with(
        dir.path(),
        &extra,
        &["--insecure", "--min-severity", "HIGH", &reference],
    );
    assert!(ok, "{err}");
    let line = high
        .lines()
        .find(|l| l.trim_start().starts_with("libssl3"))
        .unwrap_or_else(|| panic!("{high}"));
    assert!(
        line.contains("3.0.15-1~deb12u2") && !line.contains("CVE-2025-0001"),
        "{line}"
    );
    let extra = "[scan]\ncommand = [\"sh\", \"-c\", \"echo scanner exploded >&2; exit 7\"]\n";
    let (ok, _, err) = scan_with(dir.path(), extra, &["--insecure", &reference]);
    assert!(!ok);
    assert!(err.contains("scanner exploded"), "{err}");

    // Without a report the built-in scanner asks the configured repositories, and only them.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/debian-security", dead.local_addr().unwrap());
    drop(dead);
    let extra =
        format!("[scan]\ndebian_security_url = {dead_url:?}\ndebian_archive_url = {dead_url:?}\n");
    let (ok, _, err) = scan_with(dir.path(), &extra, &["--insecure", &reference]);
    assert!(!ok);
    assert!(
        err.contains("built-in scan") && err.contains("bookworm"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_reads_distroless_status_d() {
    if !require_tools(&[common::registry::REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let os_release = b"PRETTY_NAME=\"Distroless\"\nNAME=\"Debian GNU/Linux\"\nID=\"debian\"\nVERSION_ID=\"12\"\nVERSION=\"Debian GNU/Linux 12 (bookworm)\"\nHOME_URL=\"https://github.com/GoogleContainerTools/distroless\"\n";
    let base = images::layer(
        Format::Docker,
        &[
            Entry::File("etc/os-release", os_release, 0o644),
            Entry::File(
                "var/lib/dpkg/status.d/libc6",
                b"Package: libc6\nVersion: 2.36-9+deb12u7\nArchitecture: amd64\nSource: glibc\n",
                0o644,
            ),
            Entry::File(
                "var/lib/dpkg/status.d/tzdata",
                b"Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n",
                0o644,
            ),
        ],
    );
    let upper = images::layer(
        Format::Docker,
        &[Entry::File("var/lib/dpkg/status.d/.wh.tzdata", b"", 0o644)],
    );
    let image = images::assemble(Format::Docker, "arm64", vec![base, upper], &["/app"]);
    images::push_image(&registry.url(), "distroless/base", "12", &image).await;

    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/distroless/base:12", registry.authority());
    let (ok, out, err) = scan(
        dir.path(),
        &[
            "--insecure",
            "--inventory-only",
            &reference,
            "--format",
            "trivy",
        ],
    );
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let packages = json["Results"][0]["Packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["libc6"], "the whited-out tzdata must not be listed");
    assert!(json["Results"][0]["Target"]
        .as_str()
        .unwrap()
        .contains("linux/arm64"));
}

/// An rpm database this version cannot read (BerkeleyDB, as on RHEL 8) is named, not
/// mistaken for an image without packages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_names_an_rpm_database_it_cannot_read() {
    if !require_tools(&[common::registry::REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let layer = images::layer(
        Format::Oci,
        &[
            Entry::File(
                "etc/os-release",
                b"NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nVERSION_ID=\"8.9\"\n",
                0o644,
            ),
            // BerkeleyDB's hash-database magic at offset 12; the contents are not read.
            Entry::File(
                "var/lib/rpm/Packages",
                b"\0\0\0\0\0\0\0\0\0\0\0\0\x61\x15\x06\0",
                0o644,
            ),
        ],
    );
    let image = images::assemble(Format::Oci, "amd64", vec![layer], &[]);
    images::push_image(&registry.url(), "ubi/ubi8", "8.9", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/ubi/ubi8:8.9", registry.authority());
    let (ok, _, err) = scan(dir.path(), &["--insecure", "--inventory-only", &reference]);
    assert!(!ok);
    assert!(
        err.contains("/var/lib/rpm/Packages")
            && err.contains("BerkeleyDB format are not supported yet"),
        "{err}"
    );
}

/// The newest `Version:` of `package` in a Packages index, computed here without patchpull
/// (the same paragraph walk anyone would write), for comparing against the scanner.
fn newest_in_index(index: &str, package: &str) -> Option<String> {
    let mut newest: Option<String> = None;
    for paragraph in index.split("\n\n") {
        let field = |name: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        };
        if field("Package").as_deref() == Some(package) {
            let v = field("Version")?;
            let newer = match &newest {
                None => true,
                Some(n) => Command::new("dpkg")
                    .args(["--compare-versions", &v, "gt", n])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false),
            };
            if newer {
                newest = Some(v);
            }
        }
    }
    newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_scan_against_the_real_debian_security_archive() {
    if std::env::var("DEBIAN_ARCHIVE_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set DEBIAN_ARCHIVE_TESTS=1 to scan against deb.debian.org");
        return;
    }
    if !require_tools(&[common::registry::REGISTRY_BIN, "curl", "xz", "dpkg"]) {
        return;
    }
    let registry = Registry::start().await;
    // An old bookworm point-release libssl3: bookworm-security has fixes for it.
    let status = b"Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.9-1\n";
    let layer = images::layer(
        Format::Oci,
        &[
            Entry::File("etc/os-release", OS_RELEASE, 0o644),
            Entry::File("var/lib/dpkg/status", status, 0o644),
        ],
    );
    let image = images::assemble(Format::Oci, "amd64", vec![layer], &["/bin/sh"]);
    images::push_image(&registry.url(), "real/deb", "1", &image).await;

    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/real/deb:1", registry.authority());
    let (ok, out, err) = scan(dir.path(), &["--insecure", &reference, "--format", "trivy"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vulns = json["Results"][0]["Vulnerabilities"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!vulns.is_empty(), "{out}");
    assert!(vulns.iter().all(|v| v["PkgName"] == "libssl3"));
    assert!(vulns
        .iter()
        .all(|v| v["VulnerabilityID"].as_str().unwrap().starts_with("CVE-")));

    // Independently: the newest libssl3 in bookworm-security's own index.
    let xz = Command::new("sh")
        .arg("-c")
        .arg("curl -fsS http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz | xz -d")
        .output()
        .unwrap();
    assert!(xz.status.success());
    let index = String::from_utf8_lossy(&xz.stdout);
    let expected = newest_in_index(&index, "libssl3").expect("libssl3 in bookworm-security");
    let fixed: Vec<&str> = vulns
        .iter()
        .map(|v| v["FixedVersion"].as_str().unwrap())
        .collect();
    assert!(
        fixed.iter().all(|f| *f == expected
            || Command::new("dpkg")
                .args(["--compare-versions", f, "le", &expected])
                .status()
                .unwrap()
                .success()),
        "fixed versions {fixed:?} vs bookworm-security's {expected}"
    );
    let (ok, table, err) = scan(dir.path(), &["--insecure", &reference]);
    assert!(ok, "{err}");
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("libssl3"))
        .unwrap();
    let planned = line.split_whitespace().nth(2).unwrap();
    // The plan takes the newest across the security, point-release and updates suites,
    // so it is at least what the security suite has.
    assert!(
        Command::new("dpkg")
            .args(["--compare-versions", planned, "ge", &expected])
            .status()
            .unwrap()
            .success(),
        "plan updates libssl3 to {planned}, bookworm-security has {expected}: {line}"
    );
}
