//! The corpus (issue 14): images that real teams run, built by debootstrap from the real
//! archives (Debian bookworm and trixie, Ubuntu jammy and noble; minbase and common stacks,
//! three distroless layouts), each patched on pull through a running `patchpull serve` and
//! compared with what real `apt-get upgrade -y` from the security suite leaves in a copy of
//! the same root: the whole trees (every path, kind, mode, owner, size, contents and link
//! target, `.pyc` files included, a short documented list left out), `dpkg --audit` and
//! `dpkg --verify` of the patched root (for distroless, the stanzas' Status and md5sums), the
//! CA bundle, the image's main programs, and one digest when a second patchpull (another
//! store, another clock) patches it again. Every difference is reported at once, in the
//! test's failure and in `target/tmp/corpus-results/<image>.txt`, with a row of the matrix
//! in `<image>.json` (`scripts/corpus.sh` prints the table of docs/patching.md from them).
//!
//! `cargo test` runs the fast images (two); `CORPUS=full` runs all of them, `CORPUS=rest`
//! those `cargo test` did not (scripts/corpus.sh). Needs root and DEBIAN_ARCHIVE_TESTS=1.
//! Each suite is debootstrapped once per run and each variant built once (`corpus/build.rs`),
//! whichever test needs it first.

#![allow(clippy::unwrap_used)]

#[path = "ubuntu/archive.rs"]
#[allow(dead_code)]
mod archive;
#[path = "corpus/build.rs"]
mod build;
#[path = "corpus/check.rs"]
mod check;
mod common;
#[path = "corpus/compare.rs"]
mod compare;
#[path = "debootstrap/fixture.rs"]
#[allow(dead_code)]
mod debian;
#[path = "corpus/matrix.rs"]
mod matrix;
#[path = "corpus/pull.rs"]
mod pull;
#[path = "common/rootfs.rs"]
#[allow(dead_code)]
mod rootfs;
#[path = "ubuntu/run.rs"]
#[allow(dead_code)]
mod run;
#[path = "debootstrap/tree.rs"]
#[allow(dead_code)]
mod tree;

use check::check_image;
use matrix::*;

#[test]
fn bookworm_minbase() {
    check_image(&BOOKWORM_MINBASE_IMAGE);
}

#[test]
fn bookworm_curl() {
    check_image(&BOOKWORM_CURL_IMAGE);
}

#[test]
fn bookworm_python() {
    check_image(&BOOKWORM_PYTHON_IMAGE);
}

#[test]
fn bookworm_perl() {
    check_image(&BOOKWORM_PERL_IMAGE);
}

#[test]
fn bookworm_nginx() {
    check_image(&BOOKWORM_NGINX_IMAGE);
}

#[test]
fn bookworm_postgresql_client() {
    check_image(&BOOKWORM_PSQL_IMAGE);
}

#[test]
fn bookworm_openjdk_17() {
    check_image(&BOOKWORM_JAVA_IMAGE);
}

#[test]
fn bookworm_libs() {
    check_image(&BOOKWORM_LIBS_IMAGE);
}

#[test]
fn bookworm_tzdata() {
    check_image(&BOOKWORM_TZDATA_IMAGE);
}

#[test]
fn bookworm_slim_curl() {
    check_image(&BOOKWORM_SLIM_IMAGE);
}

#[test]
fn trixie_minbase() {
    check_image(&TRIXIE_MINBASE_IMAGE);
}

#[test]
fn jammy_minbase() {
    check_image(&JAMMY_MINBASE_IMAGE);
}

#[test]
fn noble_minbase() {
    check_image(&NOBLE_MINBASE_IMAGE);
}

#[test]
fn bookworm_curl_distroless() {
    check_image(&BOOKWORM_CURL_DISTROLESS);
}

#[test]
fn bookworm_libs_distroless() {
    check_image(&BOOKWORM_LIBS_DISTROLESS);
}

#[test]
fn trixie_minbase_distroless() {
    check_image(&TRIXIE_MINBASE_DISTROLESS);
}

/// Every image of the table has its test above, and at most two are fast.
#[test]
fn every_image_has_a_test_and_two_are_fast() {
    let source = include_str!("corpus.rs");
    for spec in ALL {
        let test = format!("fn {}()", spec.name.replace('-', "_"));
        assert!(source.contains(&test), "no test `{test}` for {}", spec.name);
    }
    let fast: Vec<&str> = ALL.iter().filter(|s| s.fast).map(|s| s.name).collect();
    assert!(fast.len() <= 2, "{fast:?}");
    let distroless = ALL.iter().filter(|s| s.distroless).count();
    assert!(distroless >= 3);
}

/// The comparison names every attribute that differs, collapses a directory present on one
/// side only, and leaves out what [`compare::EXCLUDED`] lists.
#[test]
fn tree_differences_name_what_differs() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let (apt, patched) = (dir.path().join("apt"), dir.path().join("patched"));
    for root in [&apt, &patched] {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("var/log/apt")).unwrap();
        std::fs::write(root.join("etc/same"), "same\n").unwrap();
    }
    std::fs::write(apt.join("etc/text"), "a\nb\n").unwrap();
    std::fs::write(patched.join("etc/text"), "a\nc\n").unwrap();
    std::fs::write(apt.join("etc/mode"), "x").unwrap();
    std::fs::write(patched.join("etc/mode"), "x").unwrap();
    std::fs::set_permissions(patched.join("etc/mode"), PermissionsExt::from_mode(0o755)).unwrap();
    symlink("one", apt.join("etc/link")).unwrap();
    symlink("two", patched.join("etc/link")).unwrap();
    std::fs::create_dir_all(apt.join("usr/lone/deeper")).unwrap();
    std::fs::write(apt.join("usr/lone/deeper/file"), "x").unwrap();
    std::fs::write(apt.join("var/log/apt/history.log"), "apt ran").unwrap();
    for tree in [&apt, &patched] {
        std::fs::create_dir_all(tree.join("var/lib/dpkg")).unwrap();
    }
    std::fs::write(apt.join("var/lib/dpkg/status-old"), "backup").unwrap();
    let mut pyc = vec![0x6f, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0];
    pyc.extend(1000u32.to_le_bytes());
    pyc.extend(10u32.to_le_bytes());
    std::fs::write(apt.join("etc/x.pyc"), &pyc).unwrap();
    pyc[8..12].copy_from_slice(&2000u32.to_le_bytes());
    std::fs::write(patched.join("etc/x.pyc"), &pyc).unwrap();

    let diffs = compare::differences(&apt, &patched);
    let first_lines: Vec<&str> = diffs.iter().map(|d| d.lines().next().unwrap()).collect();
    assert_eq!(
        first_lines,
        [
            "etc/link: link target \"one\" vs \"two\"",
            "etc/mode: mode 0644 vs 0755",
            "etc/text: contents differ",
            "etc/x.pyc: contents differ, pyc header source mtime 1000 size 10 vs source mtime 2000 size 10",
            "usr: only in apt's tree (directory, 3 entries below)",
        ],
        "{diffs:#?}"
    );
    assert!(
        diffs[2].contains("-b") && diffs[2].contains("+c"),
        "{}",
        diffs[2]
    );
}

/// A status file splits into its stanzas as written, continuation lines and all.
#[test]
fn status_splits_into_stanzas_as_written() {
    let status = "Package: a\nStatus: install ok installed\nDescription: x\n long\n\n\
                  Package: b\nStatus: install ok installed\n\n";
    let stanzas = build::stanzas(status);
    assert_eq!(
        stanzas["a"],
        "Package: a\nStatus: install ok installed\nDescription: x\n long\n"
    );
    assert_eq!(stanzas["b"], "Package: b\nStatus: install ok installed\n");
}
