//! The end-to-end proof on a real Ubuntu: a jammy minbase root made by debootstrap (with
//! Ubuntu's archive keyring taken from the archive's own `ubuntu-keyring` package and pinned
//! by fingerprint), pushed to a loopback registry as one layer, scanned and patched by
//! patchpull against the real jammy-security suite of archive.ubuntu.com, pulled back with
//! skopeo and unpacked with umoci. The plan equals an independent computation from the
//! suite's Packages indexes, its CVE ids are those the new changelogs name, after the patch
//! nothing is left to fix, dpkg sees the new versions and a sound database, and the root
//! equals what real `dpkg -i` of the same .debs leaves.
//!
//! patchpull is given the archive keys re-exported by `gpg --export`, and a second scan the
//! keyring file as Ubuntu ships it, with its trust packets: both must plan the same. The CVE
//! ids are checked for changelogs in the package's own `.deb`, several doc links away, and
//! for native packages' `changelog.gz`.
//!
//! The tests share one fixture (`ubuntu/fixture.rs`), built by whichever test comes first.
//! Runs with DEBIAN_ARCHIVE_TESTS=1 (scripts/test.sh sets it) and as root.

#![allow(clippy::unwrap_used)]

#[path = "ubuntu/archive.rs"]
mod archive;
mod common;
#[path = "debootstrap/fixture.rs"]
#[allow(dead_code)]
mod debian;
#[path = "ubuntu/fixture.rs"]
mod fixture;
#[path = "common/rootfs.rs"]
mod rootfs;
#[path = "ubuntu/run.rs"]
mod run;
#[path = "debootstrap/tree.rs"]
mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Instant;

use archive::{changelog_cves, changelog_of, packages_index, Changelog};
use debian::{in_root, layout_blob, layout_manifest, planned_rows};
use fixture::{fixture, CODENAME};
use rootfs::{assert_same_root, paragraphs, stray_layer_paths};
use run::{dpkg_gt, stdout_of, tool};
use tree::layer_paths;

/// The components patchpull reads of an Ubuntu suite.
const COMPONENTS: [&str; 4] = ["main", "restricted", "universe", "multiverse"];

/// Paths the patch layer may hold beyond package files and the dpkg database: what the
/// upgraded packages' maintainer scripts and triggers write, as `dpkg -i` does (the
/// comparison with real dpkg checks their contents): debconf's database and the dynamic
/// linker's cache (libc-bin's ldconfig trigger).
const SCRIPT_OUTPUTS: &[&str] = &[
    "var/cache/debconf/",
    "etc/ld.so.cache",
    "var/cache/ldconfig/",
];

fn timed(name: &str, started: Instant) {
    eprintln!("ubuntu test {name}: {:.1?}", started.elapsed());
}

/// The version in a `Source: name (version)` field, else the paragraph's own `Version`.
fn source_version(paragraph: &BTreeMap<String, String>) -> String {
    paragraph
        .get("Source")
        .and_then(|s| s.split_once(" ("))
        .map(|(_, v)| v.trim_end_matches(')').to_string())
        .unwrap_or_else(|| paragraph["Version"].clone())
}

/// The installed packages of the original root, by name.
fn installed() -> BTreeMap<String, BTreeMap<String, String>> {
    let f = fixture().unwrap();
    let status = std::fs::read_to_string(f.root.join("var/lib/dpkg/status")).unwrap();
    paragraphs(&status)
        .into_iter()
        .filter(|p| p.get("Status").is_some_and(|s| s.ends_with(" installed")))
        .map(|p| (p["Package"].clone(), p))
        .collect()
}

/// package -> CVE ids, from the rows of a `scan` table.
fn table_cves(table: &str) -> BTreeMap<String, BTreeSet<String>> {
    let planned = planned_rows(table);
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let name = cells.first()?;
            (cells.len() >= 3 && planned.get(*name).map(String::as_str) == Some(cells[2])).then(
                || {
                    let ids = cells[3..]
                        .iter()
                        .map(|id| id.trim_end_matches(',').to_string())
                        .collect();
                    (name.to_string(), ids)
                },
            )
        })
        .collect()
}

#[test]
fn scan_plans_what_the_security_index_says() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    let planned = planned_rows(&f.scan_table);
    let json: serde_json::Value = serde_json::from_str(&f.scan_trivy).unwrap();
    let inventory = json["Results"][0]["Packages"].as_array().unwrap().len();
    let installed = installed();
    assert_eq!(inventory, installed.len(), "inventory size");

    // Independently: the newest version of each installed package in jammy-security's
    // Packages indexes, for its architecture.
    let suite = format!("{CODENAME}-security");
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for component in COMPONENTS {
        for p in paragraphs(&packages_index(&suite, component)) {
            let Some(mine) = installed.get(&p["Package"]) else {
                continue;
            };
            if p.get("Architecture") != mine.get("Architecture") {
                continue;
            }
            let version = p["Version"].clone();
            let slot = newest
                .entry(p["Package"].clone())
                .or_insert(version.clone());
            if dpkg_gt(&version, slot) {
                *slot = version;
            }
        }
    }
    let expected: BTreeMap<String, String> = newest
        .into_iter()
        .filter(|(name, candidate)| dpkg_gt(candidate, &installed[name]["Version"]))
        .collect();
    assert!(
        !expected.is_empty(),
        "{suite} should have updates for a minbase root"
    );
    assert_eq!(
        planned, expected,
        "planned updates vs {suite}'s indexes\n{}",
        f.scan_table
    );
    assert!(
        !f.scan_log.contains("WARN"),
        "the scan warned:\n{}",
        f.scan_log
    );
    eprintln!(
        "minbase: {} installed, {} security updates planned: {planned:?}",
        installed.len(),
        planned.len()
    );
    timed("scan_plans_what_the_security_index_says", started);
}

/// One planned update's CVE ids: as the scan table lists them, and as its changelog names
/// them in the entries after the installed version.
struct CveCheck {
    name: String,
    listed: BTreeSet<String>,
    /// `None` when the changelog lies in a package that was not fetched.
    changelog: Option<(Changelog, BTreeSet<String>)>,
}

/// The checks of every planned update, computed once.
fn cve_checks() -> &'static [CveCheck] {
    static CHECKS: OnceLock<Vec<CveCheck>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let f = fixture().unwrap();
        let planned = planned_rows(&f.scan_table);
        let listed = table_cves(&f.scan_table);
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            planned.keys().collect::<Vec<_>>()
        );
        let installed = installed();
        // The fixed versions' source versions, which the changelog numbers entries by.
        let mut fixed_source: BTreeMap<String, String> = BTreeMap::new();
        for component in COMPONENTS {
            for p in paragraphs(&packages_index(&format!("{CODENAME}-security"), component)) {
                if planned.get(&p["Package"]) == Some(&p["Version"]) {
                    fixed_source.insert(p["Package"].clone(), source_version(&p));
                }
            }
        }
        listed
            .into_iter()
            .map(|(name, listed)| {
                let changelog = changelog_of(&f.deb_files, &name).map(|changelog| {
                    let want = changelog_cves(
                        &changelog.text,
                        &source_version(&installed[&name]),
                        &fixed_source[&name],
                    );
                    (changelog, want)
                });
                CveCheck {
                    name,
                    listed,
                    changelog,
                }
            })
            .collect()
    })
}

/// Asserts that the table lists what the changelog names for the checks `select` picks;
/// returns how many were compared and their CVE ids.
fn compare_cves(select: impl Fn(&Changelog) -> bool) -> (usize, usize) {
    let f = fixture().unwrap();
    let mut compared = (0, 0);
    let mut wrong = Vec::new();
    for check in cve_checks() {
        let Some((changelog, want)) = &check.changelog else {
            continue;
        };
        if !select(changelog) {
            continue;
        }
        if &check.listed != want {
            wrong.push(format!(
                "{}: listed {:?}, its {} ({} link(s) away) names {want:?}",
                check.name, check.listed, changelog.file, changelog.hops
            ));
        }
        compared = (compared.0 + 1, compared.1 + want.len());
    }
    assert!(
        wrong.is_empty(),
        "CVE ids vs the changelogs:\n{}\n{}",
        wrong.join("\n"),
        f.scan_table
    );
    compared
}

#[test]
fn scan_names_the_cves_the_new_changelogs_name() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    // A changelog.Debian.gz in the package's own .deb or one link away (libc-bin's is a
    // link to libc6's, as the scanner follows).
    let (checked, total) = compare_cves(|c| c.file == "changelog.Debian.gz" && c.hops <= 1);
    let unchecked: Vec<&str> = cve_checks()
        .iter()
        .filter(|c| c.changelog.is_none())
        .map(|c| c.name.as_str())
        .collect();
    eprintln!(
        "changelogs checked for {checked} of {} updates ({total} CVE ids); not found among \
         the fetched .debs: {unchecked:?}",
        cve_checks().len()
    );
    assert!(checked > 0 && total > 0, "{}", f.scan_table);
    let json: serde_json::Value = serde_json::from_str(&f.scan_trivy).unwrap();
    let vulnerabilities = json["Results"][0]["Vulnerabilities"].as_array().unwrap();
    let pairs: BTreeSet<(String, String)> = vulnerabilities
        .iter()
        .map(|v| {
            (
                v["PkgName"].as_str().unwrap().to_string(),
                v["VulnerabilityID"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let from_table: BTreeSet<(String, String)> = cve_checks()
        .iter()
        .flat_map(|c| c.listed.iter().map(|id| (c.name.clone(), id.clone())))
        .collect();
    assert_eq!(pairs, from_table, "trivy output vs table");
    timed("scan_names_the_cves_the_new_changelogs_name", started);
}

/// Ubuntu chains them: mount's changelog.Debian.gz links to libmount1's, which links to
/// libblkid1's; libgssapi-krb5-2's and libkrb5-3's to libk5crypto3's, which links to
/// libkrb5support0's.
#[test]
fn scan_follows_changelog_links_through_several_packages() {
    let Some(_) = fixture() else { return };
    let (checked, _) = compare_cves(|c| c.file == "changelog.Debian.gz" && c.hops >= 2);
    assert!(checked > 0, "no changelog two links away among the updates");
}

/// Native packages (no Debian revision, such as apt 2.4.15ubuntu0.1) have
/// `usr/share/doc/<package>/changelog.gz` and no `changelog.Debian.gz` (Debian policy 12.7).
#[test]
fn scan_reads_the_changelogs_of_native_packages() {
    let Some(_) = fixture() else { return };
    let (checked, _) = compare_cves(|c| c.file == "changelog.gz");
    assert!(checked > 0, "no native package among the updates");
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
        planned_rows(&f.rescan_table).is_empty() && f.rescan_table.contains("nothing to update"),
        "{}",
        f.rescan_table
    );

    let admindir = format!("--admindir={}", f.patched.join("var/lib/dpkg").display());
    let query = tool(
        60,
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
    // Nothing half-installed, unconfigured, awaiting triggers or with missing files, as the
    // host's dpkg and the root's own (jammy's) dpkg see it.
    let root_arg = format!("--root={}", f.patched.display());
    let audit = run::bounded(60, "dpkg", &[root_arg.as_str(), "--audit"]);
    assert!(
        audit.status.success() && audit.stdout.is_empty() && audit.stderr.is_empty(),
        "dpkg --audit: {}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    let audit = in_root(&f.patched, &["dpkg", "--audit"]);
    assert_eq!(stdout_of(&audit, "chroot dpkg --audit"), "");
    // The patched programs run: apt (libapt-pkg, libstdc++, ...) and a shell.
    let apt = in_root(&f.patched, &["apt-get", "--version"]);
    let apt = stdout_of(&apt, "apt-get --version in the patched root");
    // apt names its upstream version: `apt 2.4.15 (amd64)` for 2.4.15ubuntu0.1.
    if let Some(version) = planned.get("apt") {
        let shown = apt.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            !shown.is_empty()
                && version.starts_with(shown)
                && dpkg_gt(shown, &installed()["apt"]["Version"]),
            "{apt}"
        );
    }
    timed(
        "patched_image_has_every_planned_package_at_its_fixed_version",
        started,
    );
}

#[test]
fn patched_root_equals_what_real_dpkg_leaves() {
    let Some(f) = fixture() else { return };
    let started = Instant::now();
    let planned = planned_rows(&f.scan_table);
    assert_eq!(f.debs, planned, "the .debs patchpull fetched");
    for run in &f.dpkg_installs {
        stdout_of(run, "dpkg -i in the reference root");
    }
    let (dpkg, patched) = (&f.dpkg_root, &f.patched);
    // Contents and kinds with diff (bounded here), then modes and owners.
    let diff = run::bounded(
        300,
        "diff",
        &[
            "-r",
            "-q",
            "--no-dereference",
            // A debconf template several packages own (libraries/restart-without-asking)
            // keeps the text of whichever loaded it last: dpkg -i in batches configures in
            // another order than apt-get upgrade, whose order patchpull follows (the corpus
            // compares templates.dat with apt's).
            "--exclude=templates.dat",
            dpkg.to_str().unwrap(),
            patched.to_str().unwrap(),
        ],
    );
    assert_same_root(dpkg, patched, planned.keys(), &diff);
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

#[test]
fn changelog_cves_count_only_the_new_entries() {
    let changelog = "hello (2.10-3ubuntu0.2) jammy-security; urgency=medium\n\n  \
                     * SECURITY UPDATE: CVE-2024-1234 and cve-2024-56789.\n\n \
                     -- A <a@b>  Mon, 01 Jan 2024 00:00:00 +0000\n\n\
                     hello (2.10-3ubuntu0.1) jammy-security; urgency=medium\n\n  \
                     * CVE-2023-0001, not CVE-23-1 nor CVE-2023-12\n\n\
                     hello (2.10-3) unstable; urgency=low\n\n  * CVE-2020-0001\n";
    let ids = |installed: &str, fixed: &str| -> Vec<String> {
        changelog_cves(changelog, installed, fixed)
            .into_iter()
            .collect()
    };
    assert_eq!(
        ids("2.10-3", "2.10-3ubuntu0.2"),
        ["CVE-2023-0001", "CVE-2024-1234", "CVE-2024-56789"]
    );
    assert_eq!(ids("2.10-3ubuntu0.1", "2.10-3ubuntu0.2").len(), 2);
    assert_eq!(ids("2.10-3", "2.10-3ubuntu0.1"), ["CVE-2023-0001"]);
}

/// A user on Ubuntu points `scan.ubuntu_keyring` at the file the `ubuntu-keyring` package
/// installs (the default path): a GnuPG 1 keyring with a trust packet after every signature.
#[test]
fn scan_accepts_the_keyring_as_ubuntu_ships_it() {
    let Some(f) = fixture() else { return };
    let scan = stdout_of(&f.shipped_keyring_scan, "scan with the shipped keyring");
    assert_eq!(scan, f.scan_table);
}
