//! The end-to-end proof on a real Debian: a bookworm root made by debootstrap (minbase plus
//! xz-utils), pushed to a loopback registry as one layer, scanned and patched by patchpull
//! against the real bookworm-security suite, pulled back with skopeo and unpacked with umoci.
//! The plan equals an independent computation from the suite's Packages index; after the
//! patch nothing is left to fix, dpkg sees the new versions and a sound database, the
//! patched programs run, and the root equals what real `dpkg -i` of the same .debs leaves.
//!
//! Debootstrap and a debug-build patch take minutes, so the tests share one fixture
//! (`debootstrap/fixture.rs`), built by whichever test comes first.
//! Runs with DEBIAN_ARCHIVE_TESTS=1 (scripts/test.sh sets it) and as root.

#![allow(clippy::unwrap_used)]

#[path = "debootstrap/buildkit.rs"]
mod buildkit;
mod common;
#[path = "debootstrap/fixture.rs"]
mod fixture;
#[path = "common/rootfs.rs"]
mod rootfs;
#[path = "debootstrap/tree.rs"]
mod tree;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use fixture::{fixture, in_root, layout_blob, layout_manifest, planned_rows, sh, stdout_of, tool};
use rootfs::{assert_same_root, paragraphs, stray_layer_paths};
use tree::{diff_paths, layer_paths};

fn dpkg_gt(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .unwrap()
        .success()
}

/// Paths the patch layer may hold beyond package files and the dpkg database: what the
/// upgraded packages' maintainer scripts and triggers write, as `dpkg -i` does (the
/// comparison with real dpkg checks their contents): debconf's database (tzdata's config
/// and postinst), the dynamic linker's cache (libc-bin's ldconfig trigger), the time zone
/// (tzdata's postinst) and the alternatives' links (xz-utils' postinst).
const SCRIPT_OUTPUTS: &[&str] = &[
    "var/cache/debconf/",
    "etc/ld.so.cache",
    "var/cache/ldconfig/",
    "etc/localtime",
    "etc/timezone",
    "etc/alternatives/",
];

fn timed(name: &str, started: Instant) {
    eprintln!("debootstrap test {name}: {:.1?}", started.elapsed());
}

#[test]
fn scan_plans_what_the_security_index_says() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    // The table lists every planned update, with or without CVE ids.
    let planned = planned_rows(&f.scan_table);
    let json: serde_json::Value = serde_json::from_str(&f.scan_trivy).unwrap();
    let result = &json["Results"][0];
    let inventory = result["Packages"].as_array().unwrap().len();
    let cves = result["Vulnerabilities"].as_array().unwrap().len();

    // Independently: installed packages from the root's own status file, and the newest
    // version of each in bookworm-security's Packages index.
    let status = std::fs::read_to_string(f.root.join("var/lib/dpkg/status")).unwrap();
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
        "planned updates vs bookworm-security's index\n{}",
        f.scan_table
    );
    assert!(cves > 0, "the changelogs of these updates name CVEs");
    eprintln!(
        "minbase: {} installed, {} security updates planned ({cves} CVE fixes): {planned:?}",
        installed.len(),
        planned.len()
    );
    timed("scan_plans_what_the_security_index_says", started);
}

#[test]
fn patched_image_has_every_planned_package_at_its_fixed_version() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    let planned = planned_rows(&f.scan_table);
    assert!(!planned.is_empty(), "{}", f.scan_table);
    let summary = &f.patch_summary;
    assert_eq!(planned_rows(summary), planned, "{summary}");
    // The NOW column: what the patched database says.
    for (name, version) in &planned {
        assert!(
            summary.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.len() >= 5 && cells[0] == name && cells[2] == version && cells[4] == version
            }),
            "{name} is not at {version} after the patch:\n{summary}"
        );
    }
    assert!(
        summary.contains("maintainer scripts run: "),
        "the image has a shell: scripts run in the sandbox\n{summary}"
    );
    // The original layers untouched, then one patch layer.
    let original = layout_manifest(&f.layout, "original");
    let manifest = layout_manifest(&f.layout, "patched");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        &layers[..layers.len() - 1],
        original["layers"].as_array().unwrap().as_slice()
    );
    // The built-in scanner finds nothing left to fix.
    assert!(
        planned_rows(&f.rescan_table).is_empty(),
        "{}",
        f.rescan_table
    );
    assert!(
        f.rescan_table.contains("nothing to update"),
        "{}",
        f.rescan_table
    );

    let admindir = format!("--admindir={}", f.patched.join("var/lib/dpkg").display());
    let query = tool(
        "dpkg-query",
        &[
            &admindir,
            "-W",
            "-f",
            "${Package} ${Version} ${db:Status-Abbrev}\n",
        ],
    );
    let seen: BTreeMap<&str, (&str, &str)> = query
        .lines()
        .filter_map(|l| {
            let mut cells = l.splitn(3, ' ');
            Some((cells.next()?, (cells.next()?, cells.next()?.trim())))
        })
        .collect();
    for (name, version) in &planned {
        assert_eq!(
            seen.get(name.as_str()),
            Some(&(version.as_str(), "ii")),
            "dpkg-query of {name}:\n{query}"
        );
    }
    // Nothing half-installed, unconfigured, awaiting triggers or with missing files.
    let root_arg = format!("--root={}", f.patched.display());
    let audit = Command::new("dpkg")
        .args([root_arg.as_str(), "--audit"])
        .output()
        .unwrap();
    assert!(
        audit.status.success() && audit.stdout.is_empty() && audit.stderr.is_empty(),
        "dpkg --audit: {}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    let audit = in_root(&f.patched, &["dpkg", "--audit"]);
    assert_eq!(stdout_of(&audit, "chroot dpkg --audit"), "");
    timed(
        "patched_image_has_every_planned_package_at_its_fixed_version",
        started,
    );
}

#[test]
fn patched_programs_run_in_the_patched_root() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    let planned = planned_rows(&f.scan_table);
    let perl = in_root(&f.patched, &["perl", "-e", "print 1"]);
    assert_eq!(stdout_of(&perl, "perl in the patched root"), "1");
    // The upstream part of a version: no epoch, no Debian revision.
    let upstream = |v: &str| {
        let v = v.split_once(':').map_or(v, |(_, rest)| rest);
        v.rsplit_once('-').map_or(v, |(up, _)| up).to_string()
    };
    let xz = stdout_of(&in_root(&f.patched, &["xz", "--version"]), "xz --version");
    let lzma = planned
        .get("liblzma5")
        .map_or("5.4.1".to_string(), |v| upstream(v));
    assert!(
        xz.contains(&format!("liblzma {lzma}")),
        "xz --version: {xz}"
    );
    let apt = stdout_of(&in_root(&f.patched, &["apt-get", "--version"]), "apt-get");
    if let Some(version) = planned.get("apt") {
        assert!(apt.starts_with(&format!("apt {version} ")), "{apt}");
    }
    timed("patched_programs_run_in_the_patched_root", started);
}

#[test]
fn patched_root_equals_what_real_dpkg_leaves() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    let planned = planned_rows(&f.scan_table);
    assert_eq!(f.debs, planned, "the .debs patchpull fetched");
    stdout_of(&f.dpkg_install, "dpkg -i in the reference root");
    // Contents and kinds with diff, then what diff does not compare: modes and owners.
    let diff = Command::new("diff")
        .args(["-r", "-q", "--no-dereference"])
        .arg(&f.dpkg_root)
        .arg(&f.patched)
        .output()
        .unwrap();
    assert_same_root(&f.dpkg_root, &f.patched, planned.keys(), &diff);
    timed("patched_root_equals_what_real_dpkg_leaves", started);
}

#[test]
fn patch_layer_holds_package_files_only() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    let planned = planned_rows(&f.scan_table);
    let manifest = layout_manifest(&f.layout, "patched");
    let top = manifest["layers"].as_array().unwrap().last().unwrap();
    let paths = layer_paths(&layout_blob(&f.layout, top["digest"].as_str().unwrap()));
    let stray = stray_layer_paths(&paths, &f.root, &f.patched, planned.keys(), SCRIPT_OUTPUTS);
    assert!(
        stray.is_empty(),
        "the patch layer holds paths that are not the upgraded packages' files: {stray:#?}"
    );
    timed("patch_layer_holds_package_files_only", started);
}

/// Costs a second debug-build patch (about two minutes). The fixture's patch ran the
/// scripts over the unpack cache's tree through an overlay; this one has no unpack cache,
/// so they run over a tree of their own: both must give the same layer.
#[test]
fn patching_the_same_image_again_gives_the_same_layer() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    let manifest = layout_manifest(&f.layout, "patched");
    let top = manifest["layers"].as_array().unwrap().last().unwrap();
    let digest = top["digest"].as_str().unwrap();
    // The same original in another registry, patched with a fresh store.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = runtime.block_on(common::registry::Registry::start());
    let again = format!("{}/debian:again", registry.authority());
    fixture::push(&f.layout, "original", &again);
    let config = f.work.join("again.toml");
    let toml = std::fs::read_to_string(&f.config)
        .unwrap()
        .replace("/store\"", "/store-again\"");
    std::fs::write(&config, format!("{toml}\n[patch]\nunpack_cache_size = 0\n")).unwrap();
    // The fixture's patch unpacked the image into its cache (only done to run scripts
    // over it through an overlay).
    let roots = f.work.join("store/unpacked/roots");
    let cached: Vec<_> = std::fs::read_dir(&roots)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("ready").exists())
        .collect();
    assert_eq!(cached.len(), 1, "one unpacked root in {}", roots.display());
    let summary = fixture::patchpull(&config, &["patch", "--insecure", &again]);
    assert!(!f.work.join("store-again/unpacked").exists());
    assert!(
        summary.contains(&format!("patch layer {digest} ")),
        "a second patch of the same image made another layer than {digest}:\n{summary}"
    );
    timed(
        "patching_the_same_image_again_gives_the_same_layer",
        started,
    );
}

#[test]
fn diff_paths_are_relative_to_either_root() {
    let (a, b) = (
        std::path::Path::new("/x/dpkg"),
        std::path::Path::new("/x/patched"),
    );
    let output = "Files /x/dpkg/var/log/dpkg.log and /x/patched/var/log/dpkg.log differ\n\
                  Only in /x/patched/etc: extra\n\
                  Only in /x/dpkg: top\n\
                  File /x/dpkg/usr/bin/a is a regular file while file /x/patched/usr/bin/a is a symbolic link\n\
                  diff: something else\n";
    assert_eq!(
        diff_paths(a, b, output),
        vec![
            "var/log/dpkg.log",
            "etc/extra",
            "top",
            "usr/bin/a",
            "diff: something else"
        ]
    );
}

/// The BuildKit engine (a real dockerd's built-in BuildKit) patches the same root to the
/// same versions as the native engine. Costs a dockerd, an image pull and an apt upgrade.
#[test]
fn buildkit_engine_installs_what_the_native_engine_installs() {
    let started = Instant::now();
    let Some(run) = buildkit::run() else { return };
    let Some(f) = fixture() else { return };
    buildkit::check(f, &run);
    timed(
        "buildkit_engine_installs_what_the_native_engine_installs",
        started,
    );
}
