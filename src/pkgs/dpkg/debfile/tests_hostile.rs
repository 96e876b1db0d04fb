//! Hand-made packages that must be refused, each naming the entry at fault, and broken
//! or oversized packages that must fail cleanly.

use std::fs;
use std::path::Path;

use tar::EntryType::{self, Block, Char, Directory, Fifo, Link, Regular, Symlink};

use super::tests::{
    ar, build_with_dpkg, control_tar, deb_of, gzip, have_dpkg_deb, leftovers, open, RawTar,
};
use super::*;

type Entry<'a> = (&'a [u8], EntryType, &'a [u8]);

fn data_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut tar = RawTar::default();
    for (path, kind, link) in entries {
        let body: &[u8] = if *kind == Regular { b"body" } else { b"" };
        tar.entry(path, *kind, link, body, 0o644);
    }
    tar.finish()
}

fn open_hand_made(entries: &[Entry<'_>]) -> Result<DebPackage, DebError> {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let deb = deb_of(dir.path(), &data_tar(entries));
    let result = open(&deb, scratch.path());
    if result.is_err() {
        assert!(
            leftovers(scratch.path()).is_empty(),
            "scratch dir not empty"
        );
    }
    result
}

#[track_caller]
fn assert_hostile(entries: &[Entry<'_>], bad_path: &str, why: &str) {
    match open_hand_made(entries) {
        Err(DebError::Hostile { path, reason }) => {
            assert_eq!(path, bad_path, "{reason}");
            assert!(reason.contains(why), "{reason:?} does not say {why:?}");
        }
        other => panic!("{bad_path}: expected Hostile, got {other:?}"),
    }
}

const ROOT: Entry<'static> = (b"./", Directory, b"");
const ETC: Entry<'static> = (b"./etc/", Directory, b"");

#[test]
fn escapes_from_the_root_are_refused() {
    assert_hostile(
        &[ROOT, ETC, (b"./etc/../../x", Regular, b"")],
        "./etc/../../x",
        "\"..\"",
    );
    assert_hostile(&[ROOT, (b"./etc/..", Directory, b"")], "./etc/..", "\"..\"");
    assert_hostile(&[ROOT, (b"/etc/x", Regular, b"")], "/etc/x", "absolute");
    assert_hostile(
        &[ROOT, ETC, (b"./etc/up", Symlink, b"../../x")],
        "./etc/up",
        "above the root",
    );
    assert_hostile(
        &[ROOT, (b"./a", Symlink, b"b/../../c")],
        "./a",
        "above the root",
    );
    assert_hostile(&[ROOT, (b"./nl\nx", Regular, b"")], "./nl\nx", "newline");
    // Symlinks that stay inside, absolute ones included, and plain relative names are fine.
    let pkg = open_hand_made(&[
        ROOT,
        ETC,
        (b"./etc/alt", Symlink, b"/etc/alternatives/x"),
        (b"./etc/up", Symlink, b"../usr/../etc/./x"),
        (b"usr/bin/tool", Regular, b""),
    ])
    .unwrap();
    let paths: Vec<&str> = pkg.entries().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["", "etc", "etc/alt", "etc/up", "usr/bin/tool"]);
    assert_eq!(
        pkg.entries()[2].link_target.as_deref(),
        Some("/etc/alternatives/x")
    );
}

#[test]
fn devices_fifos_and_unknown_types_are_refused() {
    assert_hostile(
        &[ROOT, (b"./dev-null", Char, b"")],
        "./dev-null",
        "character device",
    );
    assert_hostile(&[ROOT, (b"./sda", Block, b"")], "./sda", "block device");
    assert_hostile(&[ROOT, (b"./pipe", Fifo, b"")], "./pipe", "FIFO");
    assert_hostile(
        &[ROOT, (b"./odd", EntryType::new(b'V'), b"")],
        "./odd",
        "tar type 'V'",
    );
}

#[test]
fn hard_links_only_to_earlier_regular_files() {
    let file: Entry<'static> = (b"./etc/f", Regular, b"");
    assert_hostile(
        &[ROOT, ETC, (b"./etc/h", Link, b"./etc/f"), file],
        "./etc/h",
        "not an earlier regular file",
    );
    assert_hostile(
        &[ROOT, ETC, (b"./etc/h", Link, b"./etc")],
        "./etc/h",
        "not an earlier regular file",
    );
    assert_hostile(
        &[ROOT, ETC, (b"./etc/h", Link, b"./nowhere")],
        "./etc/h",
        "not an earlier regular file",
    );
    assert_hostile(
        &[ROOT, ETC, file, (b"./etc/h", Link, b"./etc/../etc/f")],
        "./etc/h",
        "\"..\"",
    );
    assert_hostile(
        &[ROOT, ETC, file, (b"./etc/h", Link, b"/etc/f")],
        "./etc/h",
        "absolute",
    );
    assert_hostile(
        &[
            ROOT,
            ETC,
            file,
            (b"./etc/h", Link, b"./etc/f"),
            (b"./etc/h2", Link, b"./etc/h"),
        ],
        "./etc/h2",
        "not an earlier regular file",
    );
    let pkg = open_hand_made(&[ROOT, ETC, file, (b"./etc/h", Link, b"./etc/f")]).unwrap();
    assert_eq!(pkg.entries()[3].link_target.as_deref(), Some("etc/f"));
}

#[test]
fn duplicates_and_writes_through_links_are_refused() {
    let file: Entry<'static> = (b"./etc/x", Regular, b"");
    assert_hostile(&[ROOT, ETC, file, file], "./etc/x", "duplicate");
    assert_hostile(
        &[ROOT, ETC, file, (b"etc//x", Symlink, b"y")],
        "etc//x",
        "duplicate",
    );
    assert_hostile(&[ROOT, (b".", Directory, b"")], ".", "duplicate");
    assert_hostile(
        &[
            ROOT,
            (b"./lib", Symlink, b"usr/lib"),
            (b"./lib/evil.so", Regular, b""),
        ],
        "./lib/evil.so",
        "parent \"lib\" is a symlink",
    );
    assert_hostile(
        &[
            ROOT,
            (b"./lib", Symlink, b"usr/lib"),
            (b"./lib/sub/", Directory, b""),
        ],
        "./lib/sub/",
        "parent \"lib\" is a symlink",
    );
    assert_hostile(
        &[ROOT, ETC, file, (b"./etc/x/y", Regular, b"")],
        "./etc/x/y",
        "parent \"etc/x\" is a regular file",
    );
    assert_hostile(
        &[ROOT, (b"./d/x", Regular, b""), (b"./d", Symlink, b"/tmp")],
        "./d",
        "implied a directory",
    );
    assert_hostile(&[(b"./", Regular, b"")], "./", "ends with");
    assert_hostile(&[(b".", Symlink, b"x")], ".", "root must be a directory");
}

#[test]
fn non_utf8_paths_are_not_supported() {
    match open_hand_made(&[ROOT, (b"./caf\xe9", Regular, b"")]) {
        Err(DebError::NotUtf8 { member, path }) => {
            assert_eq!(member, "data.tar.gz");
            assert_eq!(path, "./caf\\xe9");
        }
        other => panic!("{other:?}"),
    }
    let err = open_hand_made(&[ROOT, (b"./l", Symlink, b"\xff")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("not UTF-8, which is not supported"),
        "{err}"
    );
}

#[test]
fn pax_headers_set_path_link_size_mtime_and_names() {
    let long = format!("./usr/share/{}/file", "p".repeat(150));
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_pax_extensions([
        ("path", long.as_bytes()),
        ("mtime", b"1234567890.25".as_slice()),
        ("uname", b"builder".as_slice()),
        ("gname", b"staff".as_slice()),
        ("uid", b"4000000000".as_slice()),
        ("size", b"5".as_slice()),
    ])
    .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_path("short-name").unwrap();
    header.set_size(0);
    header.set_mode(0o640);
    header.set_uid(1);
    header.set_gid(2);
    header.set_mtime(0);
    header.set_cksum();
    tar.append(&header, &b"12345"[..]).unwrap();
    let target = format!("../{}", "t".repeat(150));
    tar.append_pax_extensions([("linkpath", target.as_bytes())])
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_path("./usr/share/link").unwrap();
    link.set_entry_type(Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(0);
    link.set_cksum();
    tar.append(&link, &[][..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let deb = deb_of(dir.path(), &tar.into_inner().unwrap());
    let pkg = open(&deb, scratch.path()).unwrap();
    let file = &pkg.entries()[0];
    assert_eq!(file.path, long.trim_start_matches("./"));
    assert_eq!(
        (file.size, file.mode, file.mtime, file.uid),
        (5, 0o640, 1_234_567_890, 4_000_000_000)
    );
    assert_eq!((&*file.uname, &*file.gname), ("builder", "staff"));
    let mut body = String::new();
    std::io::Read::read_to_string(&mut pkg.open_file(file).unwrap(), &mut body).unwrap();
    assert_eq!(body, "12345");
    assert_eq!(
        pkg.entries()[1].link_target.as_deref(),
        Some(target.as_str())
    );
}

fn open_bytes(bytes: &[u8], limits: &DebLimits) -> Result<DebPackage, DebError> {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let deb = dir.path().join("x.deb");
    fs::write(&deb, bytes).unwrap();
    let result = DebPackage::open(&deb, scratch.path(), limits);
    assert!(leftovers(scratch.path()).is_empty());
    result
}

fn members(deb: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = fs::read(deb).unwrap();
    let file = fs::File::open(deb).unwrap();
    let mut members = ar::Members::new(&file, bytes.len() as u64, deb).unwrap();
    let mut out = Vec::new();
    while let Some(m) = members.next_member().unwrap() {
        let body = bytes[m.offset as usize..(m.offset + m.size) as usize].to_vec();
        out.push((m.name, body));
    }
    out
}

fn rebuild(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    ar(&refs)
}

#[test]
fn truncated_and_corrupt_packages_fail_without_panicking() {
    if !have_dpkg_deb() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for compression in ["xz", "gzip", "zstd", "none"] {
        let deb = build_with_dpkg(dir.path(), compression, true);
        let bytes = fs::read(&deb).unwrap();
        for cut in (0..bytes.len()).step_by(bytes.len() / 40 + 1).skip(1) {
            assert!(
                open_bytes(&bytes[..cut], &DebLimits::default()).is_err(),
                "{compression} cut at {cut}"
            );
        }
        // Consistent ar headers around a member cut in half, or with a flipped byte.
        let original = members(&deb);
        for damage in ["cut", "flip"] {
            let mut damaged = original.clone();
            let data = &mut damaged[2].1;
            match damage {
                "cut" => data.truncate(data.len() / 2),
                _ => {
                    let middle = data.len() / 2;
                    data[middle] ^= 0x55;
                }
            }
            let result = open_bytes(&rebuild(&damaged), &DebLimits::default());
            if damage == "cut" || compression == "xz" || compression == "gzip" {
                let err = result.unwrap_err();
                assert!(
                    err.to_string().starts_with("data.tar"),
                    "{compression} {damage}: {err}"
                );
            }
        }
    }
}

#[test]
fn a_tar_cut_at_an_entry_boundary_is_truncated() {
    let mut tar = RawTar::default();
    tar.entry(b"./", Directory, b"", b"", 0o755);
    tar.entry(b"./f", Regular, b"", b"body", 0o644);
    let dir = tempfile::tempdir().unwrap();
    let err = open(&deb_of(dir.path(), &tar.0), dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("no end-of-archive marker"),
        "{err}"
    );
}

#[test]
fn limits_formats_and_member_order() {
    let data = gzip(&data_tar(&[
        ROOT,
        ETC,
        (b"./etc/x", Regular, b""),
        (b"./etc/y", Regular, b""),
    ]));
    let control = gzip(&control_tar(&[("postinst", b"#!/bin/sh\n")]));
    let deb = |version: &[u8], control_name: &str, data_name: &str| {
        ar(&[
            ("debian-binary", version),
            (control_name, &control),
            (data_name, &data),
        ])
    };
    let good = deb(b"2.0\n", "control.tar.gz", "data.tar.gz");
    let ok = open_bytes(&good, &DebLimits::default()).unwrap();
    assert_eq!(ok.control(), b"Package: x\n");
    assert_eq!(ok.control_members()["postinst"].data, b"#!/bin/sh\n");

    let small = |limits: DebLimits| open_bytes(&good, &limits).unwrap_err().to_string();
    let limits = DebLimits::default();
    assert_eq!(
        small(DebLimits {
            max_data_bytes: 1000,
            ..limits
        }),
        "data.tar.gz: more than 1000 bytes decompressed"
    );
    assert_eq!(
        small(DebLimits {
            max_control_bytes: 100,
            ..limits
        }),
        "control.tar.gz: more than 100 bytes decompressed"
    );
    assert_eq!(
        small(DebLimits {
            max_entries: 3,
            ..limits
        }),
        "data.tar.gz: more than 3 entries"
    );

    let err = |bytes: &[u8]| open_bytes(bytes, &DebLimits::default()).unwrap_err();
    assert!(
        matches!(err(&deb(b"2.0\n", "control.tar.gz", "data.tar.bz2")), DebError::Unsupported { member, what } if member == "data.tar.bz2" && what == "bzip2 compression")
    );
    assert!(matches!(
        err(&deb(b"3.0\n", "control.tar.gz", "data.tar.gz")),
        DebError::NotDeb { .. }
    ));
    assert!(matches!(
        err(&deb(b"2.0\n", "data.tar.gz", "control.tar.gz")),
        DebError::NotDeb { .. }
    ));
    assert!(matches!(err(b"PK\x03\x04"), DebError::NotDeb { .. }));
    assert!(
        matches!(err(&ar(&[("debian-binary", b"2.0\n"), ("control.tar.gz", &control)])), DebError::NotDeb { reason } if reason == "no data.tar member")
    );
    let no_control = gzip(&RawTar::default().finish());
    assert!(matches!(
        err(&ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &no_control),
            ("data.tar.gz", &data)
        ])),
        DebError::MissingControl { .. }
    ));
    // `_`-prefixed members (signatures) are skipped, as dpkg does; so is a minor version.
    let signed = ar(&[
        ("debian-binary", b"2.1\n"),
        ("_gpgorigin", b"sig"),
        ("control.tar.gz", &control),
        ("data.tar.gz", &data),
    ]);
    assert_eq!(
        open_bytes(&signed, &DebLimits::default())
            .unwrap()
            .entries()
            .len(),
        4
    );
}

#[test]
fn oversized_long_names_are_refused_before_reading_them() {
    let mut tar = RawTar::default();
    tar.entry(b"./", Directory, b"", b"", 0o755);
    let name = vec![b'a'; 2 << 20];
    tar.entry(b"././@LongLink", EntryType::GNULongName, b"", &name, 0o644);
    tar.entry(b"./x", Regular, b"", b"body", 0o644);
    let dir = tempfile::tempdir().unwrap();
    match open(&deb_of(dir.path(), &tar.finish()), dir.path()) {
        Err(DebError::Unsupported { member, what }) => {
            assert_eq!(member, "data.tar.gz");
            assert!(what.contains("metadata header of 2097152 bytes"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}
