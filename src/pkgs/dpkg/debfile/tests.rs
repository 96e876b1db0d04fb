//! Real packages from `dpkg-deb --build`, and the shared helpers that build packages by
//! hand (used by the hostile-package tests too).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// Whether `dpkg-deb` can be used; tests that need it skip otherwise, unless
/// `REQUIRE_TEST_TOOLS=1` makes a missing tool a failure.
pub(super) fn have_dpkg_deb() -> bool {
    let ok = Command::new("dpkg-deb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("REQUIRE_TEST_TOOLS").as_deref() != Ok("1"),
            "dpkg-deb is required (REQUIRE_TEST_TOOLS=1)"
        );
        eprintln!("skipping: dpkg-deb not found");
    }
    ok
}

pub(super) const MTIME: u64 = 1_700_000_000;
pub(super) const LONG_DIR: &str =
    "a-directory-name-that-is-long-enough-to-need-more-than-a-ustar-name";
pub(super) const LONG_FILE: &str =
    "and-a-file-name-that-makes-the-whole-path-longer-than-100-bytes.txt";

/// A package tree with every kind of entry dpkg installs, built with `dpkg-deb`.
pub(super) fn build_with_dpkg(dir: &Path, compression: &str, root_owner: bool) -> PathBuf {
    let root = dir.join(format!("root-{compression}-{root_owner}"));
    let write = |rel: &str, body: &[u8], mode: u32| {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "DEBIAN/control",
        b"Package: hello\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: T <t@example.org>\nDescription: test\n",
        0o644,
    );
    write("DEBIAN/conffiles", b"/etc/hello.conf\n", 0o644);
    write(
        "DEBIAN/md5sums",
        b"5d41402abc4b2a76b9719d911017c592  usr/bin/hello\n",
        0o644,
    );
    write("DEBIAN/postinst", b"#!/bin/sh\nexit 0\n", 0o755);
    write("etc/hello.conf", b"greeting=hi\n", 0o644);
    write("usr/bin/hello", b"hello binary", 0o755);
    write("usr/bin/hello-su", b"setuid binary", 0o4755);
    fs::hard_link(root.join("usr/bin/hello"), root.join("usr/bin/hello-hard")).unwrap();
    symlink("hello", root.join("usr/bin/hi")).unwrap();
    fs::create_dir_all(root.join("usr/share/doc/hello")).unwrap();
    symlink("/etc/hello.conf", root.join("usr/share/doc/hello/conf")).unwrap();
    symlink("../../bin/hello", root.join("usr/share/doc/hello/bin")).unwrap();
    write(
        &format!("usr/share/hello/{LONG_DIR}/{LONG_FILE}"),
        b"long",
        0o644,
    );
    fs::create_dir_all(root.join("var/lib/hello")).unwrap();
    fs::set_permissions(
        root.join("var/lib/hello"),
        fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    if !root_owner {
        std::os::unix::fs::chown(root.join("etc/hello.conf"), Some(1234), Some(5678)).unwrap();
    }
    let deb = dir.join(format!("hello-{compression}.deb"));
    let mut cmd = Command::new("dpkg-deb");
    cmd.env("SOURCE_DATE_EPOCH", MTIME.to_string())
        .arg(format!("-Z{compression}"))
        .arg("--build");
    if root_owner {
        cmd.arg("--root-owner-group");
    }
    let out = cmd.arg(&root).arg(&deb).output().unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

/// The names of the files left in `dir`.
pub(super) fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// An `ar` archive of `members`, as dpkg-deb writes it.
pub(super) fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut ar = b"!<arch>\n".to_vec();
    for (name, body) in members {
        let header = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            body.len()
        );
        ar.extend_from_slice(header.as_bytes());
        ar.extend_from_slice(body);
        if body.len() % 2 == 1 {
            ar.push(b'\n');
        }
    }
    ar
}

pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A `control.tar` with `./`, `./control` and any `extra` files.
pub(super) fn control_tar(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = RawTar::default();
    tar.entry(b"./", tar::EntryType::Directory, b"", b"", 0o755);
    tar.entry(
        b"./control",
        tar::EntryType::Regular,
        b"",
        b"Package: x\n",
        0o644,
    );
    for (name, body) in extra {
        tar.entry(name.as_bytes(), tar::EntryType::Regular, b"", body, 0o644);
    }
    tar.finish()
}

/// A deb of a hand-made data tar, gzip-compressed like most hand-made debs.
pub(super) fn deb_of(dir: &Path, data_tar: &[u8]) -> PathBuf {
    let path = dir.join("hand.deb");
    let bytes = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", &gzip(&control_tar(&[]))),
        ("data.tar.gz", &gzip(data_tar)),
    ]);
    fs::write(&path, bytes).unwrap();
    path
}

/// A tar written header by header, so that anything can be in a name.
#[derive(Default)]
pub(super) struct RawTar(pub Vec<u8>);

impl RawTar {
    pub fn entry(
        &mut self,
        path: &[u8],
        kind: tar::EntryType,
        link: &[u8],
        body: &[u8],
        mode: u32,
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path);
        gnu.linkname[..link.len()].copy_from_slice(link);
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(body);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

pub(super) fn open(deb: &Path, scratch: &Path) -> Result<DebPackage, DebError> {
    DebPackage::open(deb, scratch, &DebLimits::default())
}

fn read_all(pkg: &DebPackage, entry: &DataEntry) -> Vec<u8> {
    let mut body = Vec::new();
    pkg.open_file(entry)
        .unwrap()
        .read_to_end(&mut body)
        .unwrap();
    body
}

fn check_dpkg_package(compression: &str, root_owner: bool) {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let deb = build_with_dpkg(dir.path(), compression, root_owner);
    let pkg = open(&deb, scratch.path()).unwrap();
    assert!(
        leftovers(scratch.path()).is_empty(),
        "scratch dir not empty"
    );

    assert!(pkg.control().starts_with(b"Package: hello\n"));
    let names: Vec<&str> = pkg.control_members().keys().map(String::as_str).collect();
    assert_eq!(names, ["conffiles", "md5sums", "postinst"], "{compression}");
    assert_eq!(
        pkg.control_members()["conffiles"].data,
        b"/etc/hello.conf\n"
    );
    assert_eq!(pkg.control_members()["postinst"].mode, 0o755);
    assert_eq!(pkg.control_members()["md5sums"].mode, 0o644);

    let by_path: BTreeMap<&str, &DataEntry> =
        pkg.entries().iter().map(|e| (e.path.as_str(), e)).collect();
    assert_eq!(pkg.entries()[0].path, "", "the root comes first");
    assert_eq!(pkg.entries()[0].kind, DataKind::Dir);
    let long = format!("usr/share/hello/{LONG_DIR}/{LONG_FILE}");
    assert!(long.len() > 100);
    for entry in pkg.entries() {
        assert_eq!(entry.mtime, MTIME, "{}", entry.path);
        if root_owner || entry.path != "etc/hello.conf" {
            assert_eq!((entry.uid, entry.gid), (0, 0), "{}", entry.path);
            assert_eq!((&*entry.uname, &*entry.gname), ("root", "root"));
        }
    }
    let conf = by_path["etc/hello.conf"];
    assert_eq!(
        (conf.kind, conf.mode, conf.size),
        (DataKind::File, 0o644, 12)
    );
    assert_eq!(read_all(&pkg, conf), b"greeting=hi\n");
    if !root_owner {
        assert_eq!((conf.uid, conf.gid), (1234, 5678));
    }
    assert_eq!(by_path["usr/bin/hello-su"].mode, 0o4755);
    assert_eq!(
        read_all(&pkg, by_path["usr/bin/hello-su"]),
        b"setuid binary"
    );
    assert_eq!(by_path["var/lib/hello"].mode, 0o1777);
    assert_eq!(by_path["var/lib/hello"].kind, DataKind::Dir);

    // tar stores the first of the two names as the file, the second as a link to it.
    let (file, link) = if by_path["usr/bin/hello"].kind == DataKind::File {
        ("usr/bin/hello", "usr/bin/hello-hard")
    } else {
        ("usr/bin/hello-hard", "usr/bin/hello")
    };
    assert_eq!(read_all(&pkg, by_path[file]), b"hello binary");
    let hard = by_path[link];
    assert_eq!((hard.kind, hard.size), (DataKind::Hardlink, 0));
    assert_eq!(hard.link_target.as_deref(), Some(file));
    assert!(pkg.file_slice(hard).is_none());

    let hi = by_path["usr/bin/hi"];
    assert_eq!(
        (hi.kind, hi.link_target.as_deref()),
        (DataKind::Symlink, Some("hello"))
    );
    assert_eq!(
        by_path["usr/share/doc/hello/conf"].link_target.as_deref(),
        Some("/etc/hello.conf")
    );
    assert_eq!(
        by_path["usr/share/doc/hello/bin"].link_target.as_deref(),
        Some("../../bin/hello")
    );
    assert_eq!(read_all(&pkg, by_path[long.as_str()]), b"long");

    // Slices point at the bytes; readers work from other threads.
    let (data, offset, len) = pkg.file_slice(conf).unwrap();
    let mut bytes = vec![0u8; len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&*data, &mut bytes, offset).unwrap();
    assert_eq!(bytes, b"greeting=hi\n");
    let reader = pkg.open_file(by_path[file]).unwrap();
    let thread = std::thread::spawn(move || {
        let mut body = String::new();
        { reader }.read_to_string(&mut body).unwrap();
        body
    });
    assert_eq!(read_all(&pkg, conf), b"greeting=hi\n");
    assert_eq!(thread.join().unwrap(), "hello binary");
    assert!(pkg.open_file(by_path["usr/bin"]).is_err());

    drop(pkg);
    assert!(leftovers(scratch.path()).is_empty());
}

#[test]
fn dpkg_built_packages_in_every_compression() {
    if !have_dpkg_deb() {
        return;
    }
    for compression in ["xz", "gzip", "zstd", "none"] {
        check_dpkg_package(compression, true);
    }
    check_dpkg_package("xz", false);
}

/// A deb whose data member is `data` as given (compressed or not), named `data.tar.gz`.
fn deb_with_data_member(path: &Path, data: &[u8]) {
    let bytes = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", &gzip(&control_tar(&[]))),
        ("data.tar.gz", data),
    ]);
    fs::write(path, bytes).unwrap();
}

#[test]
fn kept_data_archive_is_written_once_and_reused() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let keep = cache.path().join("deb-sha256-0123.tar");
    let mut data = RawTar::default();
    data.entry(b"./", tar::EntryType::Directory, b"", b"", 0o755);
    data.entry(b"./usr/", tar::EntryType::Directory, b"", b"", 0o755);
    data.entry(
        b"./usr/bin/hello",
        tar::EntryType::Regular,
        b"",
        b"hello v1\n",
        0o755,
    );
    data.entry(
        b"./usr/bin/hi",
        tar::EntryType::Symlink,
        b"hello",
        b"",
        0o777,
    );
    let data = data.finish();
    let deb = deb_of(dir.path(), &data);
    let limits = DebLimits::default();

    let first = DebPackage::open_keeping_data(&deb, scratch.path(), &limits, Some(&keep)).unwrap();
    assert_eq!(
        fs::read(&keep).unwrap(),
        data,
        "the decompressed data.tar is kept"
    );
    assert_eq!(
        leftovers(cache.path()),
        ["deb-sha256-0123.tar"],
        "no temporary file left"
    );
    assert!(leftovers(scratch.path()).is_empty());
    let by_path = |pkg: &DebPackage, path: &str| {
        pkg.entries()
            .iter()
            .find(|e| e.path == path)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        read_all(&first, &by_path(&first, "usr/bin/hello")),
        b"hello v1\n"
    );
    let inode = fs::metadata(&keep).unwrap().ino();

    // The same package file now has a data member that does not decompress: an open
    // that decompressed it would fail.
    deb_with_data_member(&deb, b"not gzip at all");
    assert!(matches!(
        open(&deb, scratch.path()),
        Err(DebError::Corrupt { .. })
    ));
    let second = DebPackage::open_keeping_data(&deb, scratch.path(), &limits, Some(&keep)).unwrap();
    assert_eq!(second.entries(), first.entries());
    assert_eq!(second.control(), first.control());
    assert_eq!(
        read_all(&second, &by_path(&second, "usr/bin/hello")),
        b"hello v1\n"
    );
    assert_eq!(
        fs::metadata(&keep).unwrap().ino(),
        inode,
        "the kept file reused"
    );
    assert_eq!(leftovers(cache.path()), ["deb-sha256-0123.tar"]);
    assert!(leftovers(scratch.path()).is_empty());

    // Both packages stay readable while the other is used or dropped.
    drop(first);
    assert_eq!(
        read_all(&second, &by_path(&second, "usr/bin/hello")),
        b"hello v1\n"
    );
}

#[test]
fn a_failed_decompression_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let keep = cache.path().join("deb-sha256-4567.tar");
    let mut data = RawTar::default();
    data.entry(b"./", tar::EntryType::Directory, b"", b"", 0o755);
    // Incompressible bytes, so that half the gzip stream is half the file.
    let body: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    data.entry(b"./big", tar::EntryType::Regular, b"", &body, 0o644);
    let mut member = gzip(&data.finish());
    member.truncate(member.len() / 2);
    let deb = dir.path().join("truncated.deb");
    deb_with_data_member(&deb, &member);

    let err =
        DebPackage::open_keeping_data(&deb, scratch.path(), &DebLimits::default(), Some(&keep))
            .unwrap_err();
    assert!(matches!(err, DebError::Corrupt { .. }), "{err}");
    assert!(!keep.exists(), "{err}");
    assert!(
        leftovers(cache.path()).is_empty(),
        "{:?}",
        leftovers(cache.path())
    );
    assert!(leftovers(scratch.path()).is_empty());

    // Over the limit: also nothing kept.
    let limits = DebLimits {
        max_data_bytes: 1024,
        ..DebLimits::default()
    };
    let mut data = RawTar::default();
    data.entry(b"./big", tar::EntryType::Regular, b"", &body, 0o644);
    deb_with_data_member(&deb, &gzip(&data.finish()));
    let err =
        DebPackage::open_keeping_data(&deb, scratch.path(), &limits, Some(&keep)).unwrap_err();
    assert!(matches!(err, DebError::TooLarge { .. }), "{err}");
    assert!(
        leftovers(cache.path()).is_empty(),
        "{:?}",
        leftovers(cache.path())
    );
}
