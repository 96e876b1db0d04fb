//! A distroless-style arm64 image patched on this amd64 host against the real
//! bookworm-security suite. The image is made the way distroless builders make theirs:
//! the point-release .debs of a few libraries unpacked with `dpkg-deb -x` into a root with
//! no shell, each package's control file in `var/lib/dpkg/status.d/<pkg>` and its md5sums
//! beside it, Debian 12's os-release. The patch must put the arm64 files of the security
//! versions in place, rewrite status.d, run no maintainer scripts, and leave nothing to fix.
//! Runs with DEBIAN_ARCHIVE_TESTS=1 (scripts/test.sh sets it).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::images::{self, Blob, Format};
use common::registry::Registry;
use common::require_tools;
use sha2::Digest;

const ARCHIVE: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// Small libraries a distroless image holds, in the order they are tried; the test takes
/// the (at most three) that bookworm-security has newer arm64 builds of than the point
/// release, so it keeps working as point releases absorb security updates.
const CANDIDATES: &[&str] = &[
    "libexpat1",
    "liblzma5",
    "libpcre2-8-0",
    "zlib1g",
    "libzstd1",
    "libbz2-1.0",
    "libsqlite3-0",
    "libxml2",
    "libssl3",
];

/// ELF `e_machine` of AArch64.
const EM_AARCH64: u16 = 183;

const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n\
NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\n\
VERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n\
SUPPORT_URL=\"https://www.debian.org/support\"\nBUG_REPORT_URL=\"https://bugs.debian.org/\"\n";

/// Runs `program args`, asserting success; returns stdout.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dpkg_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .unwrap()
        .success()
}

/// `patchpull --config CONFIG args`, asserting success; returns stdout.
fn patchpull(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "patchpull {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The arm64 paragraphs of `CANDIDATES` in a suite's main Packages index.
fn candidates(base: &str, suite: &str) -> Vec<BTreeMap<String, String>> {
    let url = format!("{base}/dists/{suite}/main/binary-arm64/Packages.xz");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("curl -fsS {url} | xz -d"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{url}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\n\n")
        .filter(|p| {
            let name = p.strip_prefix("Package: ").and_then(|r| r.lines().next());
            name.is_some_and(|n| CANDIDATES.contains(&n))
        })
        .map(|p| {
            p.lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|p| p.get("Architecture").map(String::as_str) == Some("arm64"))
        .collect()
}

/// package -> fixed version, from the rows of a `scan` or `patch` table (the lines whose
/// words start in the header's INSTALLED and FIXED columns).
fn planned_rows(table: &str) -> BTreeMap<String, String> {
    let mut planned = BTreeMap::new();
    let mut columns: Option<(usize, usize)> = None;
    for line in table.lines() {
        if line.trim_start().starts_with("PACKAGE ") {
            columns = line.find(" INSTALLED").zip(line.find(" FIXED"));
            continue;
        }
        let Some((installed, fixed)) = columns else {
            continue;
        };
        let bytes = line.as_bytes();
        let starts_word = |at: usize| {
            bytes.get(at) == Some(&b' ') && bytes.get(at + 1).is_some_and(|b| *b != b' ')
        };
        if line.starts_with("  not planned") || !starts_word(installed) || !starts_word(fixed) {
            continue;
        }
        let version = line[fixed..].split_whitespace().next().unwrap_or_default();
        planned.insert(line[..installed].trim().to_string(), version.to_string());
    }
    planned
}

/// Paths of a .deb's data, as `dpkg-deb -c` lists them, without `./` and trailing `/`.
fn deb_paths(deb: &Path) -> BTreeSet<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile {} | tar -t",
            deb.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect()
}

/// A gzip'd tar of `dir` with fixed owners and times, and its diff_id.
fn layer_of(dir: &Path, scratch: &Path) -> (Blob, String) {
    let tar_path = scratch.join("layer.tar");
    tool(
        "tar",
        &[
            "--sort=name",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "-C",
            dir.to_str().unwrap(),
            "-cf",
            tar_path.to_str().unwrap(),
            ".",
        ],
    );
    let tar_bytes = std::fs::read(&tar_path).unwrap();
    let diff_id = images::sha256_digest(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    let blob = Blob::new(images::OCI_LAYER_GZIP, gz.finish().unwrap());
    (blob, diff_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distroless_arm64_image_is_patched_on_an_amd64_host() {
    if std::env::var("DEBIAN_ARCHIVE_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set DEBIAN_ARCHIVE_TESTS=1 to patch against deb.debian.org");
        return;
    }
    if !require_tools(&[
        common::registry::REGISTRY_BIN,
        "curl",
        "xz",
        "dpkg",
        "dpkg-deb",
        "tar",
        "skopeo",
        "umoci",
    ]) {
        return;
    }
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    // The point-release versions with newer security builds.
    let point = candidates(ARCHIVE, "bookworm");
    let security = candidates(SECURITY, "bookworm-security");
    let mut chosen: Vec<(BTreeMap<String, String>, String)> = Vec::new();
    for name in CANDIDATES {
        let Some(old) = point.iter().find(|p| p["Package"] == *name) else {
            continue;
        };
        let newest = security
            .iter()
            .filter(|p| p["Package"] == *name)
            .map(|p| p["Version"].clone())
            .reduce(|a, b| if dpkg_gt(&b, &a) { b } else { a });
        if let Some(new) = newest.filter(|new| dpkg_gt(new, &old["Version"])) {
            chosen.push((old.clone(), new));
        }
    }
    chosen.truncate(3);
    assert!(
        !chosen.is_empty(),
        "none of {CANDIDATES:?} has a newer arm64 build in bookworm-security: extend the list"
    );
    let expected: BTreeMap<String, String> = chosen
        .iter()
        .map(|(old, new)| (old["Package"].clone(), new.clone()))
        .collect();
    eprintln!("arm64: patching {expected:?}");

    // The distroless root: files, status.d, os-release, no shell.
    let root = dir.join("root");
    let status_d = root.join("var/lib/dpkg/status.d");
    std::fs::create_dir_all(&status_d).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), OS_RELEASE).unwrap();
    let mut old_paths = BTreeSet::new();
    for (old, _) in &chosen {
        let url = format!("{ARCHIVE}/{}", old["Filename"]);
        let bytes = reqwest::get(&url)
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            old["SHA256"],
            "{url}"
        );
        let name = &old["Package"];
        let deb = dir.join(format!("{name}.deb"));
        std::fs::write(&deb, &bytes).unwrap();
        tool(
            "dpkg-deb",
            &["-x", deb.to_str().unwrap(), root.to_str().unwrap()],
        );
        let control = dir.join(format!("control-{name}"));
        tool(
            "dpkg-deb",
            &["-e", deb.to_str().unwrap(), control.to_str().unwrap()],
        );
        std::fs::copy(control.join("control"), status_d.join(name)).unwrap();
        std::fs::copy(
            control.join("md5sums"),
            status_d.join(format!("{name}.md5sums")),
        )
        .unwrap();
        old_paths.extend(deb_paths(&deb));
    }
    assert!(!root.join("bin/sh").exists() && !root.join("usr/bin/sh").exists());
    let layer = layer_of(&root, dir);
    let image = images::assemble(Format::Oci, "arm64", vec![layer], &["/nothing"]);
    let registry = Registry::start().await;
    images::push_image(&registry.url(), "distroless", "bookworm", &image).await;
    let reference = format!("{}/distroless:bookworm", registry.authority());
    eprintln!(
        "arm64: image built and pushed after {:.1?}",
        started.elapsed()
    );

    let config = dir.join("patchpull.toml");
    let cache = dir.join("scan-cache");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n[log]\nlevel = \"warn\"\n[scan]\npoint_releases = false\ncache_dir = {:?}\n",
            dir.join("store").display(),
            cache.display()
        ),
    )
    .unwrap();
    let table = patchpull(&config, &["scan", "--insecure", &reference]);
    assert!(table.contains("linux/arm64"), "{table}");
    assert_eq!(planned_rows(&table), expected, "{table}");
    let phase = Instant::now();
    let summary = patchpull(&config, &["patch", "--insecure", &reference, "--push"]);
    eprintln!("{summary}arm64: patch took {:.1?}", phase.elapsed());
    assert_eq!(planned_rows(&summary), expected, "{summary}");
    assert!(
        summary.contains("scripts: distroless image (status.d)"),
        "{summary}"
    );
    assert!(!summary.contains("maintainer scripts run"), "{summary}");

    let patched_ref = format!("{reference}-patched");
    let layout = dir.join("oci");
    let src = format!("docker://{patched_ref}");
    let dst = format!("oci:{}:patched", layout.display());
    tool(
        "skopeo",
        &["copy", "-q", "--src-tls-verify=false", &src, &dst],
    );
    let bundle = dir.join("bundle");
    let image_arg = format!("{}:patched", layout.display());
    tool(
        "umoci",
        &["unpack", "--image", &image_arg, bundle.to_str().unwrap()],
    );
    let patched = bundle.join("rootfs");
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config_json: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config_json["architecture"], "arm64");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "the original layer, then the patch layer");
    assert_eq!(
        layers[0]["digest"].as_str().unwrap(),
        image.layers[0].digest
    );

    // status.d holds the security versions' control files and md5sums, verbatim.
    let mut new_paths = BTreeSet::new();
    let mut checked_files = 0;
    for entry in std::fs::read_dir(cache.join("debs")).unwrap() {
        let deb = entry.unwrap().path();
        let control = dir.join("new-control");
        let _ = std::fs::remove_dir_all(&control);
        tool(
            "dpkg-deb",
            &["-e", deb.to_str().unwrap(), control.to_str().unwrap()],
        );
        let fields = std::fs::read_to_string(control.join("control")).unwrap();
        let name = fields
            .lines()
            .find_map(|l| l.strip_prefix("Package: "))
            .unwrap()
            .to_string();
        let version = format!("Version: {}\n", expected[&name]);
        let in_image =
            std::fs::read_to_string(patched.join("var/lib/dpkg/status.d").join(&name)).unwrap();
        assert!(in_image.contains(&version), "status.d/{name}:\n{in_image}");
        assert_eq!(in_image, fields, "status.d/{name} is the new control file");
        assert_eq!(
            std::fs::read(patched.join(format!("var/lib/dpkg/status.d/{name}.md5sums"))).unwrap(),
            std::fs::read(control.join("md5sums")).unwrap(),
            "status.d/{name}.md5sums"
        );
        // Every file of the new package is in the patched root, byte for byte.
        let extracted = dir.join(format!("new-{name}"));
        tool(
            "dpkg-deb",
            &["-x", deb.to_str().unwrap(), extracted.to_str().unwrap()],
        );
        for path in deb_paths(&deb) {
            let want = std::fs::symlink_metadata(extracted.join(&path)).unwrap();
            let got = std::fs::symlink_metadata(patched.join(&path))
                .unwrap_or_else(|e| panic!("{path} of {name}: {e}"));
            if want.file_type().is_symlink() {
                assert_eq!(
                    std::fs::read_link(patched.join(&path)).unwrap(),
                    std::fs::read_link(extracted.join(&path)).unwrap(),
                    "{path}"
                );
            } else if want.is_file() {
                assert!(got.is_file(), "{path}");
                assert!(
                    std::fs::read(patched.join(&path)).unwrap()
                        == std::fs::read(extracted.join(&path)).unwrap(),
                    "{path} of {name} differs from the package's"
                );
                checked_files += 1;
            }
            new_paths.insert(path);
        }
    }
    assert!(checked_files > 0);
    // Files only the old versions had are gone.
    for path in old_paths.difference(&new_paths) {
        let dir_of_old = root.join(path).is_dir();
        assert!(
            dir_of_old || !patched.join(path).exists(),
            "{path} of an old version is still there"
        );
    }

    // The patch layer: files of the new packages (arm64 ELF ones), status.d, whiteouts.
    let layer = blob(layers[1]["digest"].as_str().unwrap());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let mut stray = Vec::new();
    let mut elf = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let whited_out = match path.rsplit_once('/') {
            Some((d, n)) => n.strip_prefix(".wh.").map(|n| format!("{d}/{n}")),
            None => path.strip_prefix(".wh.").map(str::to_string),
        };
        let allowed = match &whited_out {
            Some(target) => old_paths.contains(target),
            None => new_paths.contains(&path) || path.starts_with("var/lib/dpkg/status.d/"),
        };
        if !allowed {
            stray.push(path.clone());
        }
        let mut head = [0u8; 20];
        if entry.header().entry_type().is_file()
            && entry.read_exact(&mut head).is_ok()
            && head.starts_with(b"\x7fELF")
        {
            elf.push((path, u16::from_le_bytes([head[18], head[19]])));
        }
    }
    assert!(stray.is_empty(), "not package files: {stray:#?}");
    assert!(!elf.is_empty(), "the new libraries are in the layer");
    assert!(
        elf.iter().all(|(_, machine)| *machine == EM_AARCH64),
        "every ELF file is AArch64: {elf:?}"
    );

    let rescan = patchpull(&config, &["scan", "--insecure", &patched_ref]);
    assert!(planned_rows(&rescan).is_empty(), "{rescan}");
    assert!(rescan.contains("nothing to update"), "{rescan}");
    eprintln!(
        "arm64: {} packages, {} ELF files checked, test took {:.1?}",
        expected.len(),
        elf.len(),
        started.elapsed()
    );
}
