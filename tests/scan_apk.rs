//! `patchpull scan` of an Alpine image in a real registry with the built-in scanner:
//! `APKINDEX.tar.gz` built and signed as `abuild-sign` does (tar, gzip, `openssl dgst
//! -sign`), served with the secdb by `busybox httpd` on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::alpine::{publish_index, KEY_NAME, OS_RELEASE};
use common::apt::HttpServer;
use common::images::{self, Entry, Format};
use common::registry::Registry;
use common::require_tools;

const INSTALLED: &[u8] = b"P:musl\nV:1.2.5-r0\nA:x86_64\no:musl\n\nP:libcrypto3\nV:3.3.1-r0\nA:x86_64\no:openssl\n\nP:zlib\nV:1.3.1-r1\nA:x86_64\no:zlib\n";

const MAIN_INDEX: &str = "C:Q1mUsLDG4uiNbrQzX2iQvl8+s6ezY=\nP:musl\nV:1.2.5-r1\nA:x86_64\nS:411331\no:musl\n\nC:Q1Rp/7Xk+f0m7r6sYl3QGf1jdHz3I=\nP:libcrypto3\nV:3.3.2-r0\nA:x86_64\nS:1790000\no:openssl\n\nC:Q1zzzzzzzzzzzzzzzzzzzzzzzzzzz=\nP:zlib\nV:1.3.1-r1\nA:x86_64\nS:50000\no:zlib\n";

const SECDB_MAIN: &str =
    r#"{"packages":[{"pkg":{"name":"openssl","secfixes":{"3.3.2-r0":["CVE-2024-6119"]}}}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_plans_an_alpine_image_against_signed_indexes() {
    if !require_tools(&[
        common::registry::REGISTRY_BIN,
        "busybox",
        "openssl",
        "tar",
        "gzip",
    ]) {
        return;
    }
    let registry = Registry::start().await;
    let layer = images::layer(
        Format::Oci,
        &[
            Entry::Dir("etc/"),
            Entry::File("etc/os-release", OS_RELEASE, 0o644),
            Entry::Dir("lib/"),
            Entry::Dir("lib/apk/"),
            Entry::Dir("lib/apk/db/"),
            Entry::File("lib/apk/db/installed", INSTALLED, 0o644),
        ],
    );
    let image = images::assemble(Format::Oci, "amd64", vec![layer], &["/bin/sh"]);
    images::push_image(&registry.url(), "test/alpine", "3.20", &image).await;
    let reference = format!("{}/test/alpine:3.20", registry.authority());

    let root = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    publish_index(root.path(), keys.path(), MAIN_INDEX, SECDB_MAIN);
    let server = HttpServer::start(root.path());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scan.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n[log]\nlevel = \"warn\"\n[scan]\nalpine_url = \"{}/alpine\"\n\
             alpine_keys_dir = {:?}\nalpine_secdb_url = \"{}/secdb\"\n",
            dir.path().join("store").display(),
            server.url(),
            keys.path().display(),
            server.url(),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .arg("--config")
        .arg(&config)
        .args(["scan", "--insecure", &reference])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Alpine Linux v3.20, 3 packages, apk"),
        "{stdout}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(
        row("libcrypto3").unwrap_or_else(|| panic!("no libcrypto3 row:\n{stdout}")),
        ["libcrypto3", "3.3.1-r0", "3.3.2-r0", "CVE-2024-6119"],
        "{stdout}"
    );
    assert_eq!(
        row("musl").unwrap_or_else(|| panic!("no musl row:\n{stdout}")),
        ["musl", "1.2.5-r0", "1.2.5-r1"],
        "{stdout}"
    );
    assert!(
        row("zlib").is_none(),
        "current packages are not planned: {stdout}"
    );

    // A key the operator does not trust: the scan fails and says which key.
    std::fs::remove_file(keys.path().join(KEY_NAME)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .arg("--config")
        .arg(&config)
        .args(["scan", "--insecure", &reference])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    // The disk copy is verified again by the new process, and fails the same way.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(KEY_NAME) && stderr.contains("not among the trusted keys"),
        "{stderr}"
    );
}
