//! The reader over synthetic packages laid out as abuild writes them.

use std::path::{Path, PathBuf};

use super::fixture::{self, dir, file, symlink, Kind, Package};
use super::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open(package: &Package) -> Result<ApkPackage, ApkFileError> {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = package.build();
    let path = write(dir.path(), "p.apk", &bytes);
    ApkPackage::open(&path, dir.path(), &ApkLimits::default())
}

fn hello() -> Package {
    let mut p = Package::new(
        "hello",
        "1.0-r1",
        vec![
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/hello", "#!/bin/sh\necho hi\n", 0o755),
            symlink("usr/bin/hi", "hello"),
            fixture::entry(
                "usr/bin/hello2",
                Kind::Hardlink("usr/bin/hello".into()),
                0o755,
            ),
            dir("etc"),
            file("etc/hello.conf", "x=1\n", 0o644),
            file("etc/.keep_hello", "", 0o644),
        ],
    );
    p.scripts = vec![("post-upgrade".into(), "#!/bin/sh\nexit 0\n".into())];
    p.extra = "depend = so:libc.musl-x86_64.so.1\ntriggers = /usr/share/hello/*\n".into();
    p
}

#[test]
fn reads_an_abuild_style_package() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, identity) = hello().build();
    let path = write(dir.path(), "hello-1.0-r1.apk", &bytes);
    let apk = ApkPackage::open(&path, dir.path(), &ApkLimits::default()).unwrap();
    assert_eq!(apk.info().pkgname, "hello");
    assert_eq!(apk.info().pkgver, "1.0-r1");
    assert_eq!(apk.info().depends, ["so:libc.musl-x86_64.so.1"]);
    assert_eq!(apk.info().triggers, ["/usr/share/hello/*"]);
    assert_eq!(apk.identity(), q1(&identity));
    assert!(apk.identity().starts_with("Q1") && apk.identity().len() == 30);
    assert_eq!(apk.file_size(), bytes.len() as u64);
    assert_eq!(apk.signatures().len(), 1);
    assert_eq!(apk.scripts().keys().collect::<Vec<_>>(), ["post-upgrade"]);
    let paths: Vec<(&str, ApkEntryKind)> = apk
        .entries()
        .iter()
        .map(|e| (e.path.as_str(), e.kind))
        .collect();
    assert_eq!(
        paths,
        [
            ("usr", ApkEntryKind::Dir),
            ("usr/bin", ApkEntryKind::Dir),
            ("usr/bin/hello", ApkEntryKind::File),
            ("usr/bin/hi", ApkEntryKind::Symlink),
            ("usr/bin/hello2", ApkEntryKind::Hardlink),
            ("etc", ApkEntryKind::Dir),
            ("etc/hello.conf", ApkEntryKind::File),
        ],
        ".keep_ files are not installed"
    );
    let hello = &apk.entries()[2];
    assert_eq!(hello.mode, 0o755);
    assert_eq!(
        hello.checksum,
        Some(sha1::Sha1::digest(b"#!/bin/sh\necho hi\n"))
    );
    let (file, offset, len) = apk.file_slice(hello).unwrap();
    let mut buf = vec![0; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, offset).unwrap();
    assert_eq!(buf, b"#!/bin/sh\necho hi\n");
    assert!(apk.file_slice(&apk.entries()[3]).is_none());
    assert_eq!(
        apk.entries()[4].link_target.as_deref(),
        Some("usr/bin/hello")
    );
    // Nothing is left in the scratch directory.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn unsigned_packages_have_the_control_member_first() {
    let mut p = hello();
    p.signed = false;
    let (bytes, identity) = p.build();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "p.apk", &bytes);
    let apk = ApkPackage::open(&path, dir.path(), &ApkLimits::default()).unwrap();
    assert_eq!(apk.identity(), q1(&identity));
    assert!(apk.signatures().is_empty());
}

#[test]
fn the_system_tar_reads_the_fixture_as_one_stream() {
    // apk reads the members as one tar; GNU tar with gzip's multi-member support must too.
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = hello().build();
    let path = write(dir.path(), "p.apk", &bytes);
    let Ok(out) = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&path)
        .output()
    else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(".PKGINFO") && listing.contains("usr/bin/hello"),
        "{listing}"
    );
}

fn expect_err(p: &Package, needle: &str) {
    let err = open(p).unwrap_err().to_string();
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

#[test]
fn hostile_entries_are_rejected_naming_the_path() {
    let base = |entries| Package::new("evil", "1-r0", entries);
    expect_err(
        &base(vec![dir("etc"), file("etc/../../x", "x", 0o644)]),
        "hostile package entry \"etc/../../x\": \"..\" in the path",
    );
    expect_err(
        &base(vec![file("/etc/passwd", "x", 0o644)]),
        "\"/etc/passwd\": absolute path",
    );
    expect_err(
        &base(vec![dir("a"), symlink("a/l", "../../etc")]),
        "\"a/l\": symlink target \"../../etc\" points above the root",
    );
    expect_err(
        &base(vec![
            dir("a"),
            symlink("a/l", "/etc"),
            file("a/l/passwd", "x", 0o644),
        ]),
        "its parent \"a/l\" is a symlink",
    );
    expect_err(
        &base(vec![fixture::entry("dev", Kind::Fifo, 0o644)]),
        "\"dev\": FIFO entries are not allowed",
    );
    expect_err(
        &base(vec![
            dir("a"),
            file("a/x", "1", 0o644),
            file("a/x", "2", 0o644),
        ]),
        "\"a/x\": duplicate path",
    );
    expect_err(
        &base(vec![
            dir("a"),
            fixture::entry("a/h", Kind::Hardlink("a/nothing".into()), 0o644),
        ]),
        "hard link to \"a/nothing\"",
    );
    expect_err(
        &base(vec![dir("a"), file("a/x\ny", "1", 0o644)]),
        "control character",
    );
}

#[test]
fn corrupt_packages_are_rejected() {
    let mut p = hello();
    p.datahash = Some("00".repeat(32));
    expect_err(&p, "does not match datahash");

    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = hello().build();
    for cut in [10, bytes.len() / 2, bytes.len() - 3] {
        let path = write(dir.path(), "cut.apk", &bytes[..cut]);
        assert!(
            ApkPackage::open(&path, dir.path(), &ApkLimits::default()).is_err(),
            "cut at {cut}"
        );
    }
    let path = write(dir.path(), "garbage.apk", b"not a package at all");
    let err = ApkPackage::open(&path, dir.path(), &ApkLimits::default()).unwrap_err();
    assert!(err.to_string().contains("decompressing"), "{err}");
}

#[test]
fn limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = hello().build();
    let path = write(dir.path(), "p.apk", &bytes);
    let small = |f: fn(&mut ApkLimits)| {
        let mut l = ApkLimits::default();
        f(&mut l);
        ApkPackage::open(&path, dir.path(), &l)
            .unwrap_err()
            .to_string()
    };
    assert!(small(|l| l.max_data_bytes = 1024).contains("data segment: more than 1024 bytes"));
    assert!(small(|l| l.max_control_bytes = 100).contains("more than 100 bytes"));
    assert!(small(|l| l.max_entries = 2).contains("more than 2 entries"));
    assert!(small(|l| l.max_package_bytes = 10).contains("whole package"));
}

#[test]
fn garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, _) = hello().build();
    for i in (0..bytes.len()).step_by(97) {
        bytes[i] ^= 0x55;
        let path = write(dir.path(), "g.apk", &bytes);
        let _ = ApkPackage::open(&path, dir.path(), &ApkLimits::default());
    }
}
