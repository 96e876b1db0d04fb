//! What the real-distribution tests (tests/ubuntu) check of a patched root file system
//! against a copy of the original where real `dpkg -i` installed the same `.deb`s, and the
//! set-up they share: the opt-in, the tools, a work directory, commands run in a root, a
//! root made one image layer. tests/debootstrap.rs and tests/corpus.rs use them too.
//!
//! Not a module of `common`: a test binary includes it with `#[path = "common/rootfs.rs"]`
//! beside `common` and `tree` (`tests/debootstrap/tree.rs`), which it uses; a `tree` of its
//! own would load that file twice in binaries that have one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::images::{self, Blob};
use crate::common::registry::REGISTRY_BIN;
use crate::common::require_tools;
use crate::tree::{diff_paths, info_files, listed_paths, tree_metadata};

/// Every paragraph with a `Package` field, continuation lines left out.
pub fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
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

/// What dpkg and its helpers keep about their own runs, not part of any package's result:
/// the previous status, the logs (with the time of the run), debconf's backups of its
/// databases and ldconfig's auxiliary cache.
pub fn dpkg_bookkeeping(path: &str) -> bool {
    matches!(
        path,
        "var/lib/dpkg/status-old"
            | "var/log/dpkg.log"
            | "var/log/alternatives.log"
            | "var/cache/ldconfig/aux-cache"
    ) || (path.starts_with("var/cache/debconf/") && path.ends_with("-old"))
}

/// Asserts that `patched` is what `dpkg -i` left in `dpkg`: the status file, the info files
/// of `packages`, then every path's contents and kind (`diff` is the caller's run of
/// `diff -r -q --no-dereference <dpkg> <patched>`), mode and owner, dpkg's bookkeeping aside.
pub fn assert_same_root<'a>(
    dpkg: &Path,
    patched: &Path,
    packages: impl IntoIterator<Item = &'a String>,
    diff: &Output,
) {
    let read = |root: &Path, path: &str| std::fs::read(root.join(path)).unwrap();
    assert!(
        read(dpkg, "var/lib/dpkg/status") == read(patched, "var/lib/dpkg/status"),
        "var/lib/dpkg/status differs from dpkg's"
    );
    for name in packages {
        let files = info_files(dpkg, name);
        assert_eq!(files, info_files(patched, name), "info files of {name}");
        for file in files {
            let path = format!("var/lib/dpkg/info/{file}");
            assert!(
                read(dpkg, &path) == read(patched, &path),
                "{path} differs from dpkg's"
            );
        }
    }
    let output = String::from_utf8_lossy(&diff.stdout);
    let (bookkeeping, differences): (Vec<String>, Vec<String>) = diff_paths(dpkg, patched, &output)
        .into_iter()
        .partition(|path| dpkg_bookkeeping(path));
    eprintln!("differences left aside as dpkg's bookkeeping: {bookkeeping:?}");
    assert!(
        differences.is_empty() && diff.stderr.is_empty(),
        "the patched root differs from what dpkg -i leaves:\n{}\n{}",
        differences.join("\n"),
        String::from_utf8_lossy(&diff.stderr)
    );
    let (want, got) = (tree_metadata(dpkg), tree_metadata(patched));
    let mismatches: Vec<String> = want
        .keys()
        .chain(got.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|path| !dpkg_bookkeeping(path) && want.get(*path) != got.get(*path))
        .map(|path| {
            format!(
                "{path}: dpkg {:?}, patched {:?}",
                want.get(path),
                got.get(path)
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "kinds, modes or owners differ from dpkg's:\n{}",
        mismatches.join("\n")
    );
}

/// The paths of a patch layer (`layer`) that are none of: a file of `packages` in the
/// `patched` root, a whiteout of one of their files in the `original` root, the dpkg
/// database, or below one of `script_outputs` (what maintainer scripts write).
pub fn stray_layer_paths<'a>(
    layer: &[String],
    original: &Path,
    patched: &Path,
    packages: impl IntoIterator<Item = &'a String>,
    script_outputs: &[&str],
) -> Vec<String> {
    let mut new_files = BTreeSet::new();
    let mut old_files = BTreeSet::new();
    for name in packages {
        new_files.extend(listed_paths(patched, name));
        old_files.extend(listed_paths(original, name));
    }
    layer
        .iter()
        .filter(|path| {
            let whited_out = match path.rsplit_once('/') {
                Some((dir, name)) => name.strip_prefix(".wh.").map(|n| format!("{dir}/{n}")),
                None => path.strip_prefix(".wh.").map(str::to_string),
            };
            let allowed = match whited_out {
                Some(target) => old_files.contains(&target),
                None => {
                    new_files.contains(path.as_str())
                        || path.as_str() == "var/lib/dpkg"
                        || path.starts_with("var/lib/dpkg/")
                        || script_outputs.iter().any(|p| path.starts_with(p))
                }
            };
            !allowed
        })
        .cloned()
        .collect()
}

/// What a real-root fixture runs: the registry, debootstrap, dpkg and tar for the roots,
/// skopeo and umoci to pull and unpack images, unshare and chroot for commands in a root,
/// and diff to compare roots.
const ROOT_TOOLS: [&str; 9] = [
    REGISTRY_BIN,
    "debootstrap",
    "dpkg",
    "tar",
    "skopeo",
    "umoci",
    "unshare",
    "chroot",
    "diff",
];

/// Whether the tests that reach a real archive run: `DEBIAN_ARCHIVE_TESTS=1`, and
/// [`ROOT_TOOLS`] and `more_tools` on PATH (see [`require_tools`]); says why not
/// otherwise. `what` ends the skip line: `debootstrap and patch against <what>`.
pub fn archive_tests_enabled(what: &str, more_tools: &[&str]) -> bool {
    if std::env::var("DEBIAN_ARCHIVE_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set DEBIAN_ARCHIVE_TESTS=1 to debootstrap and patch against {what}");
        return false;
    }
    require_tools(&[&ROOT_TOOLS[..], more_tools].concat())
}

/// `<CARGO_TARGET_TMPDIR>/<name>`, emptied. Under cargo's own temp dir and wiped here: the
/// tests of a binary share one fixture, so no test can own its removal; at most one is
/// left behind.
pub fn fresh_work_dir(name: &str) -> PathBuf {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if work.exists() {
        std::fs::remove_dir_all(&work).unwrap();
    }
    std::fs::create_dir_all(&work).unwrap();
    work
}

/// Runs `command` chrooted into `root` with /dev and /proc mounted in a private mount
/// namespace, within `seconds` (coreutils' `timeout`: TERM, then KILL ten seconds later),
/// with `DEBIAN_FRONTEND=noninteractive` and a root's PATH. The mounts die with the
/// namespace whatever happens to the test, so removing the root never reaches the host's
/// /dev.
pub fn in_root_within(seconds: u32, root: &Path, command: &[&str]) -> Output {
    const SCRIPT: &str = "set -e; r=$1; shift; mount --rbind /dev \"$r/dev\"; \
                          mount -t proc proc \"$r/proc\"; exec chroot \"$r\" \"$@\"";
    Command::new("timeout")
        .args(["-k", "10", &seconds.to_string()])
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "sh",
            "-c",
        ])
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

/// `root` as one gzip'd image layer, with its diff id: everything but the contents of
/// /dev, /proc and /sys, numeric owners. apt's downloaded packages and lists are removed
/// from `root` first, as image builds do (the directories stay: trixie's apt package owns
/// `var/lib/apt/lists/partial`); `work` holds the tar file for a moment.
pub fn root_layer(root: &Path, work: &Path) -> (Blob, String) {
    let layer_path = work.join("layer.tar.gz");
    let script = format!(
        "rm -rf {r}/var/cache/apt/archives/*.deb && \
         {{ [ ! -d {r}/var/lib/apt/lists ] || find {r}/var/lib/apt/lists -type f -delete; }} && \
         tar -C {r} --numeric-owner --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -czf {l} .",
        r = root.display(),
        l = layer_path.display()
    );
    let out = Command::new("timeout")
        .args(["-k", "10", "900", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar of {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let gz = std::fs::read(&layer_path).unwrap();
    std::fs::remove_file(&layer_path).unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let diff_id = images::sha256_digest(&tar_bytes);
    (
        Blob::new("application/vnd.oci.image.layer.v1.tar+gzip", gz),
        diff_id,
    )
}
