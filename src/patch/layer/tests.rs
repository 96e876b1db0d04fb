use std::io::{Read, Write};
use std::process::Command;

use super::*;
use crate::distribution::reference::Digest;

fn entry(path: &str, kind: EntryKind) -> LayerEntry {
    let mode = match kind {
        EntryKind::Dir | EntryKind::OpaqueDir => 0o755,
        EntryKind::Symlink(_) => 0o777,
        _ => 0o644,
    };
    LayerEntry::for_test(path, mode, kind)
}

fn file(path: &str, data: &[u8]) -> LayerEntry {
    entry(path, EntryKind::File(FileData::Bytes(data.to_vec())))
}

/// `tar -tv` lines, with UTC full times and the given owner style.
fn gnu_list(layer: &Path, numeric: bool) -> Vec<String> {
    let mut cmd = Command::new("tar");
    cmd.env("TZ", "UTC")
        .arg("--full-time")
        .arg("-tvzf")
        .arg(layer);
    if numeric {
        cmd.arg("--numeric-owner");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

struct Read1 {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    uname: String,
    gname: String,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// Every record as the tar crate reads it (long names resolved).
fn crate_list(layer: &Path) -> Vec<Read1> {
    let gz = flate2::read::GzDecoder::new(File::open(layer).unwrap());
    let mut archive = tar::Archive::new(gz);
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Read1 {
            name: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            uname: h.username().unwrap().unwrap_or("").to_owned(),
            gname: h.groupname().unwrap().unwrap_or("").to_owned(),
            mtime: h.mtime().unwrap(),
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap()),
            data,
        });
    }
    out
}

fn sample() -> LayerBuilder {
    let mut b = LayerBuilder::default();
    b.insert(entry("usr", EntryKind::Dir));
    b.insert(entry("usr/bin", EntryKind::Dir));
    let mut perl = file("usr/bin/perl", b"#!perl\n");
    perl.mode = 0o4755;
    perl.uid = 1000;
    perl.gid = 50;
    perl.uname = "builder".to_owned();
    perl.gname = "staff".to_owned();
    perl.mtime = 1_234_567_890;
    b.insert(perl);
    b.insert(entry(
        "usr/bin/perl5",
        EntryKind::Symlink("perl".to_owned()),
    ));
    // Sorts before its target: must be moved behind it.
    b.insert(entry(
        "usr/bin/aperl",
        EntryKind::Hardlink("usr/bin/perl".to_owned()),
    ));
    b.whiteout("usr/bin/old-tool");
    b.insert(entry("etc", EntryKind::Dir));
    b.insert(entry("etc/perl", EntryKind::OpaqueDir));
    b
}

#[test]
fn gnu_tar_lists_names_modes_owners_times_links_and_whiteouts_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let built = sample().write_gzip(dir.path()).unwrap();
    assert_eq!(
        gnu_list(&built.path, false),
        [
            "drwxr-xr-x root/root 0 2023-11-14 22:13:20 etc/",
            "drwxr-xr-x root/root 0 2023-11-14 22:13:20 etc/perl/",
            // The marker takes the directory's owner and permission bits, as Docker writes it.
            "-rwxr-xr-x root/root 0 2023-11-14 22:13:20 etc/perl/.wh..wh..opq",
            "drwxr-xr-x root/root 0 2023-11-14 22:13:20 usr/",
            "drwxr-xr-x root/root 0 2023-11-14 22:13:20 usr/bin/",
            "---------- 0/0 0 1970-01-01 00:00:00 usr/bin/.wh.old-tool",
            "-rwsr-xr-x builder/staff 7 2009-02-13 23:31:30 usr/bin/perl",
            "hrw-r--r-- root/root 0 2023-11-14 22:13:20 usr/bin/aperl link to usr/bin/perl",
            "lrwxrwxrwx root/root 0 2023-11-14 22:13:20 usr/bin/perl5 -> perl",
        ]
    );
    let numeric = gnu_list(&built.path, true);
    assert!(
        numeric[6].starts_with("-rwsr-xr-x 1000/50 7 "),
        "{numeric:?}"
    );

    let read = crate_list(&built.path);
    let perl = &read[6];
    assert_eq!(perl.name, "usr/bin/perl");
    assert_eq!(perl.kind, tar::EntryType::Regular);
    assert_eq!(
        (perl.mode, perl.uid, perl.gid, perl.mtime),
        (0o4755, 1000, 50, 1_234_567_890)
    );
    assert_eq!(
        (perl.uname.as_str(), perl.gname.as_str()),
        ("builder", "staff")
    );
    assert_eq!(perl.data, b"#!perl\n");
    assert_eq!(read[7].kind, tar::EntryType::Link);
    assert_eq!(read[7].link.as_deref(), Some("usr/bin/perl"));
    assert_eq!(read[8].kind, tar::EntryType::Symlink);
    assert_eq!(read[8].link.as_deref(), Some("perl"));
    assert_eq!(read[5].name, "usr/bin/.wh.old-tool");
    assert_eq!((read[5].kind, read[5].mode), (tar::EntryType::Regular, 0));
}

#[test]
fn gnu_tar_extracts_the_layer_with_hard_links_after_their_targets() {
    let dir = tempfile::tempdir().unwrap();
    let built = sample().write_gzip(dir.path()).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&built.path)
        .arg("-C")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(root.join("usr/bin/aperl")).unwrap();
    let b = std::fs::metadata(root.join("usr/bin/perl")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(
        std::fs::read(root.join("usr/bin/aperl")).unwrap(),
        b"#!perl\n"
    );
}

#[test]
fn digests_match_the_bytes_gzip_and_sha256_see() {
    let dir = tempfile::tempdir().unwrap();
    let built = sample().write_gzip(dir.path()).unwrap();
    let gz = std::fs::read(&built.path).unwrap();
    assert_eq!(built.size, gz.len() as u64);
    assert_eq!(built.digest, Digest::sha256_of(&gz));
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&built.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(built.diff_id, Digest::sha256_of(&out.stdout));
    assert_eq!(built.uncompressed_size, out.stdout.len() as u64);
    assert!(built.path.to_string_lossy().ends_with(".tar.gz"));
    // Fixed gzip header: no name, mtime 0, unknown OS.
    assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
}

#[test]
fn same_entries_in_any_order_and_from_any_source_give_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let mut forward = sample();
    forward.insert(file("usr/share/big", &big));
    forward.insert(entry("usr/share", EntryKind::Dir));

    // The same content from a file on disk and from a slice of a bigger file.
    let on_disk = dir.path().join("big");
    std::fs::write(&on_disk, &big).unwrap();
    let container = dir.path().join("container");
    let mut c = File::create(&container).unwrap();
    c.write_all(b"0123456789").unwrap();
    c.write_all(&big).unwrap();
    c.write_all(b"trailer").unwrap();
    drop(c);
    let container = Arc::new(File::open(&container).unwrap());

    let mut entries: Vec<LayerEntry> = forward.iter().cloned().collect();
    entries.reverse();
    let mut from_path = LayerBuilder::default();
    let mut from_slice = LayerBuilder::default();
    for e in entries {
        let (mut p, mut s) = (e.clone(), e);
        if p.path == "usr/share/big" {
            p.kind = EntryKind::File(FileData::Path(on_disk.clone()));
            s.kind = EntryKind::File(FileData::Slice {
                file: container.clone(),
                offset: 10,
                len: big.len() as u64,
            });
        }
        from_path.insert(p);
        from_slice.insert(s);
    }
    let a = forward.write_gzip(dir.path()).unwrap();
    let b = from_path.write_gzip(dir.path()).unwrap();
    let c = from_slice.write_gzip(dir.path()).unwrap();
    assert_ne!(a.path, b.path);
    assert_eq!(
        (&a.digest, &a.diff_id, a.size),
        (&b.digest, &b.diff_id, b.size)
    );
    assert_eq!(
        (&a.digest, &a.diff_id, a.size),
        (&c.digest, &c.diff_id, c.size)
    );
    let read = crate_list(&c.path);
    let big_read = read.iter().find(|r| r.name == "usr/share/big").unwrap();
    assert_eq!(big_read.data, big);
}

#[test]
fn long_names_and_link_targets_survive() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("opt/{}", "d".repeat(120));
    let long_file = format!("{deep}/{}.so.1", "f".repeat(150));
    let long_target = format!("../../{}", "t/".repeat(80));
    let mut b = LayerBuilder::default();
    b.insert(entry("opt", EntryKind::Dir));
    b.insert(entry(&deep, EntryKind::Dir));
    b.insert(file(&long_file, b"elf"));
    b.insert(entry(
        &format!("{deep}/a-link"),
        EntryKind::Hardlink(long_file.clone()),
    ));
    b.insert(entry(
        &format!("{deep}/s"),
        EntryKind::Symlink(long_target.clone()),
    ));
    b.whiteout(&format!("{deep}/{}", "w".repeat(110)));
    let built = b.write_gzip(dir.path()).unwrap();
    let listed = gnu_list(&built.path, true);
    let names: Vec<&str> = listed
        .iter()
        .map(|l| l.splitn(6, ' ').nth(5).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "opt/".to_owned(),
            format!("{deep}/"),
            format!("{deep}/.wh.{}", "w".repeat(110)),
            long_file.clone(),
            format!("{deep}/a-link link to {long_file}"),
            format!("{deep}/s -> {long_target}"),
        ]
    );
    let read = crate_list(&built.path);
    assert_eq!(read[3].name, long_file);
    assert_eq!(read[4].link.as_deref(), Some(long_file.as_str()));
    assert_eq!(read[5].link.as_deref(), Some(long_target.as_str()));
}

#[test]
fn symlink_targets_are_written_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = LayerBuilder::default();
    b.insert(entry("a", EntryKind::Symlink("./x//y/../z/".to_owned())));
    b.insert(entry("b", EntryKind::Symlink("/usr/lib/x".to_owned())));
    let built = b.write_gzip(dir.path()).unwrap();
    let read = crate_list(&built.path);
    assert_eq!(read[0].link.as_deref(), Some("./x//y/../z/"));
    assert_eq!(read[1].link.as_deref(), Some("/usr/lib/x"));
}

#[test]
fn an_empty_layer_is_two_zero_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let built = LayerBuilder::default().write_gzip(dir.path()).unwrap();
    assert_eq!(built.uncompressed_size, 1024);
    assert_eq!(built.diff_id, Digest::sha256_of(&[0u8; 1024]));
}

#[test]
fn builder_replaces_removes_and_iterates_sorted() {
    let mut b = LayerBuilder::default();
    assert!(b.is_empty());
    b.insert(file("b", b"1"));
    b.insert(file("a", b"2"));
    b.insert(entry("b", EntryKind::Dir));
    assert_eq!(b.len(), 2);
    assert!(matches!(b.get("b").unwrap().kind, EntryKind::Dir));
    let order: Vec<&str> = b.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(order, ["a", "b"]);
    assert!(b.remove("a").is_some());
    assert!(b.get("a").is_none());
}

fn write_err(b: &LayerBuilder) -> (LayerError, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let err = b.write_gzip(dir.path()).unwrap_err();
    (err, dir)
}

fn assert_no_files_left(dir: &tempfile::TempDir) {
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_paths_and_links_are_refused() {
    for bad in [
        "",
        "/etc/x",
        "./etc",
        "etc/",
        "a//b",
        "a/../b",
        "..",
        "a/.wh.b",
        ".wh..wh..opq",
    ] {
        let mut b = LayerBuilder::default();
        b.insert(file(bad, b""));
        assert!(
            matches!(write_err(&b).0, LayerError::InvalidPath { .. }),
            "{bad:?}"
        );
    }
    let mut b = LayerBuilder::default();
    b.insert(file("etc", b"not a dir"));
    b.insert(file("etc/passwd", b""));
    let err = write_err(&b).0;
    assert!(matches!(err, LayerError::ParentNotDirectory { ref parent, .. } if parent == "etc"));

    let cases = [
        EntryKind::Hardlink("../x".to_owned()),
        EntryKind::Hardlink("l".to_owned()),
        EntryKind::Hardlink("d".to_owned()),
        EntryKind::Symlink(String::new()),
    ];
    for kind in cases {
        let mut b = LayerBuilder::default();
        b.insert(entry("d", EntryKind::Dir));
        b.insert(entry("l", kind.clone()));
        let err = write_err(&b).0;
        assert!(
            matches!(err, LayerError::InvalidLink { .. }),
            "{kind:?}: {err}"
        );
    }
    let mut b = LayerBuilder::default();
    b.insert(entry("d", EntryKind::Dir));
    b.insert(entry(
        "l",
        EntryKind::Hardlink("lower/layer/file".to_owned()),
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(
        b.write_gzip(dir.path()).is_ok(),
        "links into lower layers are fine"
    );
}

#[test]
fn data_of_the_wrong_length_is_an_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, b"12345").unwrap();
    let mut b = LayerBuilder::default();
    b.insert(file("a", b"first"));
    b.insert(entry(
        "b",
        EntryKind::File(FileData::Slice {
            file: Arc::new(File::open(&short).unwrap()),
            offset: 2,
            len: 10,
        }),
    ));
    let (err, out) = write_err(&b);
    assert!(
        matches!(
            err,
            LayerError::LengthMismatch {
                expected: 10,
                actual: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_no_files_left(&out);

    let mut b = LayerBuilder::default();
    b.insert(entry(
        "missing",
        EntryKind::File(FileData::Path(dir.path().join("nope"))),
    ));
    let (err, out) = write_err(&b);
    assert!(matches!(err, LayerError::Read { .. }), "{err}");
    assert!(err.to_string().contains("\"missing\""), "{err}");
    assert_no_files_left(&out);

    let mut b = LayerBuilder::default();
    let mut e = file("x", b"");
    e.uname = "u".repeat(40);
    b.insert(e);
    assert!(matches!(write_err(&b).0, LayerError::Header { .. }));
}

#[test]
fn a_source_that_shrinks_while_streaming_is_caught() {
    let mut reader = write::tests_support::exact(&b"abc"[..], 5, false);
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).unwrap_err();
    assert!(err.to_string().contains("3 bytes instead of 5"), "{err}");
    let mut reader = write::tests_support::exact(&b"abcdef"[..], 5, true);
    let err = reader.read_to_end(&mut out).unwrap_err();
    assert!(err.to_string().contains("6 bytes instead of 5"), "{err}");
}
