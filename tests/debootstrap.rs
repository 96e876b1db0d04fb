//! The end-to-end proof on a real Debian: a bookworm root made by debootstrap (minbase plus
//! xz-utils, so that `xz --version` can show which liblzma runs), pushed to a loopback
//! registry as one layer, then:
//! 1. scanned by `patchpull scan` against the real bookworm-security suite: the packages and
//!    versions it plans equal an independent computation from that suite's Packages index;
//! 2. patched by `patchpull patch --push`, pulled back with skopeo and unpacked with umoci:
//!    nothing is left to fix, dpkg sees every planned package at its new version and a
//!    consistent database, the patched programs run, the new layer holds package files and
//!    dpkg's database only, and the root equals what real `dpkg -i` of the same .debs leaves.
//!
//! Debootstrap takes most of a minute, so every check shares one root in one test.
//! Runs with DEBIAN_ARCHIVE_TESTS=1 (scripts/test.sh sets it) and as root.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::images::{self, Blob, Format};
use common::registry::Registry;
use common::require_tools;

fn sh(script: &str) -> Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

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

/// Every paragraph with a `Package` field, continuation lines left out.
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

/// package -> fixed version, from the rows of a `scan` or `patch` table: the lines with
/// words starting in the header's INSTALLED and FIXED columns (notes under the table, such
/// as "maintainer scripts run: N", do not line up with them).
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
        if !line.starts_with("  ")
            || line.starts_with("  not planned")
            || !starts_word(installed)
            || !starts_word(fixed)
        {
            continue;
        }
        let name = line[..installed].trim();
        let version = line[fixed..].split_whitespace().next().unwrap_or_default();
        planned.insert(name.to_string(), version.to_string());
    }
    planned
}

/// Runs `command` chrooted into `root` with /dev and /proc mounted in a private mount
/// namespace: the mounts die with the namespace, whatever happens to the test.
fn in_root(root: &Path, command: &[&str]) -> Output {
    const SCRIPT: &str = "set -e; r=$1; shift; mount --rbind /dev \"$r/dev\"; \
                          mount -t proc proc \"$r/proc\"; exec chroot \"$r\" \"$@\"";
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--fork", "sh", "-c"])
        .arg(SCRIPT)
        .arg("sh")
        .arg(root)
        .args(command)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap()
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The manifest an OCI layout's index names with `tag`.
fn layout_manifest(layout: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_slice(&layout_blob(layout, &digest)).unwrap()
}

fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// Paths of a gzip'd layer tar, without `./` and trailing `/`.
fn layer_paths(gz: &[u8]) -> Vec<String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    tar.entries()
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path().unwrap().to_string_lossy().into_owned();
            let path = path.strip_prefix("./").unwrap_or(&path);
            path.trim_end_matches('/').to_string()
        })
        .collect()
}

/// The `info/` file names that belong to `package` (`pkg.*` or `pkg:arch.*`).
fn info_files(root: &Path, package: &str) -> BTreeSet<String> {
    std::fs::read_dir(root.join("var/lib/dpkg/info"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_prefix(package)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with(':'))
        })
        .collect()
}

/// The paths `package`'s `.list` names, as they lie in the tree: on merged /usr a listed
/// `/lib/x` is `usr/lib/x`, because `lib` is a symlink to `usr/lib`.
fn listed_paths(root: &Path, package: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for name in info_files(root, package) {
        if !name.ends_with(".list") {
            continue;
        }
        let text = std::fs::read_to_string(root.join("var/lib/dpkg/info").join(&name)).unwrap();
        for line in text.lines() {
            let path = line.trim_start_matches('/');
            if path.is_empty() || path == "." {
                continue;
            }
            let (first, rest) = path.split_once('/').unwrap_or((path, ""));
            let link = std::fs::read_link(root.join(first)).ok();
            let path = match link {
                Some(target) if target == Path::new("usr").join(first) && !rest.is_empty() => {
                    format!("usr/{first}/{rest}")
                }
                Some(target) if target == Path::new("usr").join(first) => format!("usr/{first}"),
                _ => path.to_string(),
            };
            paths.insert(path);
        }
    }
    paths
}

/// (kind, mode, uid, gid, link target) of every path under `root`.
fn tree_metadata(root: &Path) -> BTreeMap<String, (char, u32, u32, u32, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let (kind, target) = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ('l', target.to_string_lossy().into_owned())
            } else if meta.is_dir() {
                stack.push(path.clone());
                ('d', String::new())
            } else if meta.is_file() {
                ('f', String::new())
            } else {
                ('o', String::new())
            };
            let mode = meta.permissions().mode() & 0o7777;
            out.insert(rel, (kind, mode, meta.uid(), meta.gid(), target));
        }
    }
    out
}

/// What dpkg keeps about its own runs and is not part of a package's result: the previous
/// status, its log, debconf's backups of its databases and ldconfig's auxiliary cache.
fn dpkg_bookkeeping(path: &str) -> bool {
    matches!(
        path,
        "var/lib/dpkg/status-old" | "var/log/dpkg.log" | "var/cache/ldconfig/aux-cache"
    ) || (path.starts_with("var/cache/debconf/") && path.ends_with("-old"))
}

/// Paths the patch layer may hold beyond package files and the dpkg database: what the
/// upgraded packages' maintainer scripts and triggers write, which `dpkg -i` writes too
/// (the comparison with real dpkg checks their contents): debconf's database (tzdata's
/// config and postinst), the dynamic linker's cache (libc-bin's ldconfig trigger), the
/// time zone (tzdata's postinst) and the alternatives' links (xz-utils' postinst).
const SCRIPT_OUTPUTS: &[&str] = &[
    "var/cache/debconf/",
    "etc/ld.so.cache",
    "var/cache/ldconfig/",
    "etc/localtime",
    "etc/timezone",
    "etc/alternatives/",
];

struct Timings(Vec<(&'static str, Duration)>, Instant);

impl Timings {
    fn lap(&mut self, phase: &'static str) {
        let elapsed = self.1.elapsed();
        eprintln!("debootstrap test: {phase} took {elapsed:.1?}");
        self.0.push((phase, elapsed));
        self.1 = Instant::now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debootstrapped_bookworm_scanned_and_patched_against_the_real_security_suite() {
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
        "skopeo",
        "umoci",
        "unshare",
        "chroot",
        "diff",
    ]) {
        return;
    }
    let started = Instant::now();
    let mut timings = Timings(Vec::new(), Instant::now());
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let out = sh(&format!(
        "timeout 600 debootstrap --variant=minbase --include=xz-utils bookworm {} http://deb.debian.org/debian",
        root.display()
    ));
    assert!(
        out.status.success(),
        "debootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    timings.lap("debootstrap");
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
    timings.lap("image pushed");

    // patchpull, reading only the security suite so the comparison is exact.
    let config = work.path().join("patchpull.toml");
    let cache = work.path().join("scan-cache");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n[log]\nlevel = \"warn\"\n[scan]\npoint_releases = false\ncache_dir = {:?}\n",
            work.path().join("store").display(),
            cache.display()
        ),
    )
    .unwrap();
    let reference = format!("{}/debian:bookworm-minbase", registry.authority());
    let planned = scan_matches_the_security_index(&config, &reference, &root);
    timings.lap("scan");

    let summary = patchpull(&config, &["patch", "--insecure", &reference, "--push"]);
    timings.lap("patch");
    eprintln!("{summary}");
    // Every planned package is at its fixed version now (the NOW column).
    for (name, version) in &planned {
        assert!(
            summary.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.len() >= 5 && cells[0] == name && cells[2] == version && cells[4] == version
            }),
            "{name} is not at {version} after the patch:\n{summary}"
        );
    }
    assert_eq!(planned_rows(&summary), planned, "{summary}");
    let patched_ref = format!("{reference}-patched");

    let layout = work.path().join("oci");
    for (source, tag) in [(&reference, "original"), (&patched_ref, "patched")] {
        let dst = format!("oci:{}:{tag}", layout.display());
        tool(
            "skopeo",
            &[
                "copy",
                "-q",
                "--src-tls-verify=false",
                &format!("docker://{source}"),
                &dst,
            ],
        );
    }
    let bundle = |tag: &str| -> PathBuf {
        let dir = work.path().join(format!("bundle-{tag}"));
        let image = format!("{}:{tag}", layout.display());
        tool(
            "umoci",
            &["unpack", "--image", &image, dir.to_str().unwrap()],
        );
        dir.join("rootfs")
    };
    let patched = bundle("patched");
    let reference_root = bundle("original");
    timings.lap("pull and unpack");

    // Nothing is left to fix.
    let rescan = patchpull(&config, &["scan", "--insecure", &patched_ref]);
    assert!(planned_rows(&rescan).is_empty(), "{rescan}");
    assert!(rescan.contains("nothing to update"), "{rescan}");
    timings.lap("scan of the patched image");

    dpkg_sees_the_new_versions(&patched, &planned);
    patched_programs_run(&patched, &planned);
    let original = layout_manifest(&layout, "original");
    let manifest = layout_manifest(&layout, "patched");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        &layers[..layers.len() - 1],
        original["layers"].as_array().unwrap().as_slice(),
        "the original layers, untouched, then one patch layer"
    );
    let patch_layer = layout_blob(&layout, layers.last().unwrap()["digest"].as_str().unwrap());
    layer_holds_package_files_only(&patch_layer, &reference_root, &patched, &planned);
    timings.lap("checks of the patched root");

    equals_real_dpkg(&cache, &reference_root, &patched, &planned);
    timings.lap("real dpkg -i and comparison");
    eprintln!(
        "debootstrap test: {} packages patched in {:.1?} overall: {:?}",
        planned.len(),
        started.elapsed(),
        timings.0
    );
}

/// Scans the image and compares the plan with the newest version of each installed package
/// in bookworm-security's own Packages index. Returns package -> planned version.
fn scan_matches_the_security_index(
    config: &Path,
    reference: &str,
    root: &Path,
) -> BTreeMap<String, String> {
    // The table lists every planned update, with or without CVE ids.
    let table = patchpull(config, &["scan", "--insecure", reference]);
    let planned = planned_rows(&table);
    let trivy = patchpull(
        config,
        &["scan", "--insecure", reference, "--format", "trivy"],
    );
    let json: serde_json::Value = serde_json::from_str(&trivy).unwrap();
    let result = &json["Results"][0];
    let inventory = result["Packages"].as_array().unwrap().len();
    let cves = result["Vulnerabilities"].as_array().unwrap().len();

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
    planned
}

/// dpkg-query reads every planned package at its new version, and `dpkg --audit` finds
/// nothing half-installed, unconfigured or with missing files.
fn dpkg_sees_the_new_versions(root: &Path, planned: &BTreeMap<String, String>) {
    let admindir = format!("--admindir={}", root.join("var/lib/dpkg").display());
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
    for (name, version) in planned {
        assert_eq!(
            seen.get(name.as_str()),
            Some(&(version.as_str(), "ii")),
            "dpkg-query of {name}:\n{query}"
        );
    }
    let root_arg = format!("--root={}", root.display());
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
    let audit = in_root(root, &["dpkg", "--audit"]);
    assert_eq!(stdout_of(&audit, "chroot dpkg --audit"), "");
}

/// perl-base's perl, xz with the patched liblzma, apt with the patched libapt-pkg.
fn patched_programs_run(root: &Path, planned: &BTreeMap<String, String>) {
    let perl = in_root(root, &["perl", "-e", "print 1"]);
    assert_eq!(stdout_of(&perl, "perl in the patched root"), "1");
    let xz = stdout_of(&in_root(root, &["xz", "--version"]), "xz --version");
    // The upstream part of the version: no epoch, no Debian revision.
    let upstream = |v: &str| {
        let v = v.split_once(':').map_or(v, |(_, rest)| rest);
        v.rsplit_once('-').map_or(v, |(up, _)| up).to_string()
    };
    if let Some(version) = planned.get("liblzma5") {
        let want = format!("liblzma {}", upstream(version));
        assert!(xz.contains(&want), "xz --version shows {xz:?}, not {want}");
    }
    let apt = stdout_of(&in_root(root, &["apt-get", "--version"]), "apt-get");
    if let Some(version) = planned.get("apt") {
        assert!(apt.starts_with(&format!("apt {version} ")), "{apt}");
    }
}

/// Every path of the patch layer is a file of an upgraded package (as its new `.list`
/// names it), part of dpkg's database, the whiteout of a file the old version listed, or a
/// known output of the packages' scripts.
fn layer_holds_package_files_only(
    layer: &[u8],
    original: &Path,
    patched: &Path,
    planned: &BTreeMap<String, String>,
) {
    let mut new_files = BTreeSet::new();
    let mut old_files = BTreeSet::new();
    for name in planned.keys() {
        new_files.extend(listed_paths(patched, name));
        old_files.extend(listed_paths(original, name));
    }
    let paths = layer_paths(layer);
    assert!(!paths.is_empty());
    let stray: Vec<&String> = paths
        .iter()
        .filter(|path| {
            let whited_out = path.rsplit_once('/').map_or_else(
                || path.strip_prefix(".wh.").map(str::to_string),
                |(dir, name)| name.strip_prefix(".wh.").map(|n| format!("{dir}/{n}")),
            );
            let allowed = match whited_out {
                Some(target) => old_files.contains(&target),
                None => {
                    new_files.contains(path.as_str())
                        || path.as_str() == "var/lib/dpkg"
                        || path.starts_with("var/lib/dpkg/")
                        || SCRIPT_OUTPUTS.iter().any(|p| path.starts_with(p))
                }
            };
            !allowed
        })
        .collect();
    assert!(
        stray.is_empty(),
        "the patch layer holds paths that are not the upgraded packages' files: {stray:#?}"
    );
    eprintln!("patch layer: {} entries", paths.len());
}

/// The same .debs installed by real dpkg in a copy of the original root leave the same
/// root as the patch: status and the packages' info files byte for byte, every other file
/// by content, kind, mode and owner, dpkg's own bookkeeping aside.
fn equals_real_dpkg(
    cache: &Path,
    reference: &Path,
    patched: &Path,
    planned: &BTreeMap<String, String>,
) {
    let debs = reference.join("tmp/debs");
    std::fs::create_dir_all(&debs).unwrap();
    let mut fetched = BTreeMap::new();
    for entry in std::fs::read_dir(cache.join("debs")).unwrap() {
        let path = entry.unwrap().path();
        let field = |f: &str| tool("dpkg-deb", &["-f", path.to_str().unwrap(), f]);
        let (name, version) = (field("Package"), field("Version"));
        let (name, version) = (name.trim().to_string(), version.trim().to_string());
        std::fs::copy(&path, debs.join(format!("{name}.deb"))).unwrap();
        fetched.insert(name, version);
    }
    assert_eq!(&fetched, planned, "the .debs patchpull fetched");
    let mut command = vec!["dpkg".to_string(), "-i".to_string()];
    command.extend(fetched.keys().map(|name| format!("/tmp/debs/{name}.deb")));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let install = in_root(reference, &command);
    stdout_of(&install, "dpkg -i in the reference root");
    std::fs::remove_dir_all(&debs).unwrap();

    let read = |root: &Path, path: &str| std::fs::read(root.join(path)).unwrap();
    assert!(
        read(reference, "var/lib/dpkg/status") == read(patched, "var/lib/dpkg/status"),
        "var/lib/dpkg/status differs from dpkg's"
    );
    for name in planned.keys() {
        let files = info_files(reference, name);
        assert_eq!(files, info_files(patched, name), "info files of {name}");
        for file in files {
            let path = format!("var/lib/dpkg/info/{file}");
            assert!(
                read(reference, &path) == read(patched, &path),
                "{path} differs from dpkg's"
            );
        }
    }

    // Contents (and kinds) with diff, then what diff does not compare: modes and owners.
    let diff = Command::new("diff")
        .args(["-r", "-q", "--no-dereference"])
        .arg(reference)
        .arg(patched)
        .output()
        .unwrap();
    let prefixes = [
        format!("{}/", reference.display()),
        format!("{}/", patched.display()),
    ];
    let differences: Vec<&str> = std::str::from_utf8(&diff.stdout)
        .unwrap()
        .lines()
        .filter(|line| {
            // "Files A and B differ", "Only in DIR: NAME", "File A is a ... while file B ...".
            let path = line
                .split_whitespace()
                .find_map(|word| prefixes.iter().find_map(|p| word.strip_prefix(p.as_str())))
                .map(|p| p.trim_end_matches(':').to_string());
            let path = match (path, line.strip_prefix("Only in ")) {
                (Some(dir), Some(rest)) => {
                    format!("{dir}/{}", rest.split_once(": ").map_or("", |(_, n)| n))
                }
                (Some(path), None) => path,
                (None, _) => return true,
            };
            !dpkg_bookkeeping(&path)
        })
        .collect();
    assert!(
        differences.is_empty() && diff.stderr.is_empty(),
        "the patched root differs from what dpkg -i leaves:\n{}{}",
        differences.join("\n"),
        String::from_utf8_lossy(&diff.stderr)
    );
    let (want, got) = (tree_metadata(reference), tree_metadata(patched));
    let mut mismatches = Vec::new();
    for path in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
        if dpkg_bookkeeping(path) || want.get(path) == got.get(path) {
            continue;
        }
        mismatches.push(format!(
            "{path}: dpkg {:?}, patched {:?}",
            want.get(path),
            got.get(path)
        ));
    }
    assert!(
        mismatches.is_empty(),
        "kinds, modes or owners differ from dpkg's:\n{}",
        mismatches.join("\n")
    );
}
