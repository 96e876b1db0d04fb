//! The end-to-end proof for the built-in scanner: a real Debian bookworm root made by
//! debootstrap (the point-release packages), pushed to a loopback registry as one layer,
//! scanned by `patchpull scan` against the real bookworm-security suite; the packages and
//! versions it plans equal an independent computation from that suite's Packages index.
//! Runs with DEBIAN_ARCHIVE_TESTS=1 (scripts/test.sh sets it) and as root.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;

use common::images::{self, Blob, Format};
use common::registry::Registry;
use common::require_tools;

fn sh(script: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

fn dpkg_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .unwrap()
        .success()
}

/// `Package` -> (`Version`, `Architecture`) for every paragraph (installed ones only when
/// the paragraph has a Status field).
fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    text.split("\n\n")
        .map(|p| {
            p.lines()
                .filter(|l| !l.starts_with(' '))
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .filter(|m: &BTreeMap<String, String>| m.contains_key("Package"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debootstrapped_bookworm_scanned_against_the_real_security_suite() {
    if std::env::var("DEBIAN_ARCHIVE_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set DEBIAN_ARCHIVE_TESTS=1 to debootstrap and scan against deb.debian.org"
        );
        return;
    }
    if !require_tools(&[
        common::registry::REGISTRY_BIN,
        "debootstrap",
        "curl",
        "xz",
        "dpkg",
        "tar",
    ]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let out = sh(&format!(
        "timeout 600 debootstrap --variant=minbase bookworm {} http://deb.debian.org/debian",
        root.display()
    ));
    assert!(
        out.status.success(),
        "debootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layer_path = work.path().join("layer.tar.gz");
    let out = sh(&format!(
        "rm -rf {r}/var/cache/apt/archives/*.deb {r}/var/lib/apt/lists/* && \
         tar -C {r} --numeric-owner --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -czf {l} .",
        r = root.display(),
        l = layer_path.display()
    ));
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gz = std::fs::read(&layer_path).unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let diff_id = images::sha256_digest(&tar_bytes);
    drop(tar_bytes);
    let layer = Blob::new("application/vnd.oci.image.layer.v1.tar+gzip", gz);
    let image = images::assemble(Format::Oci, "amd64", vec![(layer, diff_id)], &["/bin/bash"]);
    let registry = Registry::start().await;
    images::push_image(&registry.url(), "debian", "bookworm-minbase", &image).await;

    // patchpull, reading only the security suite so the comparison is exact.
    let config = work.path().join("scan.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n[log]\nlevel = \"warn\"\n[scan]\npoint_releases = false\n",
            work.path().join("store").display()
        ),
    )
    .unwrap();
    let reference = format!("{}/debian:bookworm-minbase", registry.authority());
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_patchpull"))
            .arg("--config")
            .arg(&config)
            .args(["scan", "--insecure", &reference, "--format", format])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The table lists every planned update, with or without CVE ids.
    let table = run("table");
    let mut planned: BTreeMap<String, String> = BTreeMap::new();
    let mut in_rows = false;
    for line in table.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.first() == Some(&"PACKAGE") {
            in_rows = true;
            continue;
        }
        if !in_rows
            || !line.starts_with("  ")
            || line.starts_with("  not planned")
            || cells.len() < 3
        {
            in_rows = in_rows && line.starts_with("  ") && !line.starts_with("  not planned");
            continue;
        }
        planned.insert(cells[0].to_string(), cells[2].to_string());
    }
    let json: serde_json::Value = serde_json::from_str(&run("trivy")).unwrap();
    let result = &json["Results"][0];
    let inventory = result["Packages"].as_array().unwrap().len();
    let cves = result["Vulnerabilities"].as_array().unwrap().len();

    // Independently: installed packages from the root's own status file, and the newest
    // version of each in bookworm-security's Packages index.
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    let installed: Vec<BTreeMap<String, String>> = paragraphs(&status)
        .into_iter()
        .filter(|p| p.get("Status").is_some_and(|s| s.ends_with(" installed")))
        .collect();
    assert_eq!(inventory, installed.len(), "inventory size");
    let index = sh("curl -fsS http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz | xz -d");
    assert!(index.status.success());
    let index = String::from_utf8_lossy(&index.stdout).into_owned();
    let mut newest: BTreeMap<(String, String), String> = BTreeMap::new();
    for p in paragraphs(&index) {
        let key = (
            p["Package"].clone(),
            p.get("Architecture").cloned().unwrap_or_default(),
        );
        let version = p.get("Version").cloned().unwrap_or_default();
        let slot = newest.entry(key).or_insert_with(|| version.clone());
        if dpkg_gt(&version, slot) {
            *slot = version;
        }
    }
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for p in &installed {
        let key = (p["Package"].clone(), p["Architecture"].clone());
        if let Some(candidate) = newest.get(&key) {
            if dpkg_gt(candidate, &p["Version"]) {
                expected.insert(p["Package"].clone(), candidate.clone());
            }
        }
    }
    assert!(
        !expected.is_empty(),
        "bookworm-security should have updates for a minbase root"
    );
    assert_eq!(
        planned, expected,
        "planned updates vs bookworm-security's index\n{table}"
    );
    assert!(cves > 0, "the changelogs of these updates name CVEs");
    eprintln!(
        "minbase: {} installed, {} security updates planned ({cves} CVE fixes): {planned:?}",
        installed.len(),
        planned.len()
    );
}
