//! The apk engine over a synthetic Alpine image and synthetic `.apk` files: the exact layer,
//! the rewritten databases, protected paths, ownership, ordering, determinism and refusals.

use std::io::Write;

use super::*;
use crate::image::{LayerDescriptor, MEDIA_TYPE_OCI_LAYER_GZIP};
use crate::patch::layer::{EntryKind, FileData};
use crate::patch::native::LayerImage;
use crate::pkgs::apk::package::fixture::{dir, file, symlink, Package};
use crate::pkgs::apk::package::sha1::Sha1;
use crate::pkgs::apk::package::{q1, ApkLimits, ApkPackage};

fn z(text: &str) -> String {
    q1(&Sha1::digest(text.as_bytes()))
}

/// An image layer: `(path, mode, contents)`; contents `None` is a directory, `"->x"` a
/// symlink to `x`.
fn layer(entries: &[(&str, u32, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, contents) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        h.set_mode(*mode);
        match contents {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
                    .unwrap();
            }
            Some(t) if t.starts_with("->") => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, &t[2..]).unwrap();
            }
            Some(t) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(t.len() as u64);
                b.append_data(&mut h, path, t.as_bytes()).unwrap();
            }
        }
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

const BUSYBOX: &str = "C:Q1DBPG58EPxiaCthR0ZHD/hszOuSg=\nP:busybox\nV:1.36.1-r29\nA:x86_64\nS:515447\nI:984064\nT:Size optimized toolbox\nU:https://busybox.net/\nL:GPL-2.0-only\no:busybox\nm:Someone <s@example.invalid>\nt:1716563346\nc:b3b4e1bb6c8bf11bb5f04be8c0a78bc49ef0f74b\nD:so:libc.musl-x86_64.so.1\nF:bin\nR:busybox\na:0:0:755\nZ:Q1WUwBY0eOGgzgVxTZxJBZPyQUicI=\nF:usr\nF:usr/share\nF:usr/share/shared\nR:shared.txt\nZ:Q1sharedsharedsharedsharedshar=\n";
const BUSYBOX_TRIGGER: &str = "Q1DBPG58EPxiaCthR0ZHD/hszOuSg= /bin /usr/bin /sbin /usr/sbin\n";
const OLD_HELLO_ID: &str = "Q1oldoldoldoldoldoldoldoldoldo=";

fn old_hello() -> String {
    format!(
        "C:{OLD_HELLO_ID}\nP:hello\nV:1.0-r0\nA:x86_64\nS:1000\nI:4096\nT:test package hello\nU:https://example.invalid/hello\nL:MIT\no:hello\nm:Test <t@example.invalid>\nt:1600000000\nc:aaaa\ns:edge\nF:etc\nR:hello.conf\nZ:{}\nR:hello-user.conf\nZ:{}\nF:lib\nR:libhello.so.1\na:0:0:755\nZ:{}\nF:usr\nF:usr/bin\nR:hello\na:0:0:755\nZ:{}\nF:usr/share\nF:usr/share/hello\nR:old.txt\nZ:{}\nR:same.txt\nZ:{}\nF:usr/share/hello/gone\nR:gone.txt\nZ:{}\n",
        z("x=1\n"), z("default\n"), z("lib v1\n"), z("v1\n"), z("old\n"), z("same\n"), z("gone\n")
    )
}

fn scripts_tar() -> Vec<u8> {
    let mut tar = extras::script_entry(
        &format!("hello-1.0-r0.{OLD_HELLO_ID}.post-install"),
        b"#!/bin/sh\necho old\n",
        1,
    )
    .unwrap();
    tar.extend(
        extras::script_entry(
            "busybox-1.36.1-r29.Q1DBPG58EPxiaCthR0ZHD/hszOuSg=.trigger",
            b"#!/bin/sh\nbusybox --install -s\n",
            1,
        )
        .unwrap(),
    );
    tar.extend([0u8; 1024]);
    tar
}

fn image(installed: &str) -> Vec<Vec<u8>> {
    let scripts = scripts_tar();
    let scripts = String::from_utf8(scripts).unwrap(); // plain ASCII
    vec![layer(&[
        ("bin", 0o755, None),
        ("bin/busybox", 0o755, Some("busybox binary")),
        ("etc", 0o755, None),
        (
            "etc/os-release",
            0o644,
            Some("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\n"),
        ),
        (
            "etc/passwd",
            0o644,
            Some("root:x:0:0:root:/root:/bin/sh\nhello:x:101:102::/:/sbin/nologin\n"),
        ),
        ("etc/group", 0o644, Some("root:x:0:root\nhello:x:102:\n")),
        ("etc/hello.conf", 0o644, Some("x=1\n")),
        ("etc/hello-user.conf", 0o644, Some("edited by the image\n")),
        ("lib", 0o777, Some("->usr/lib")),
        ("usr", 0o755, None),
        ("usr/bin", 0o755, None),
        ("usr/bin/hello", 0o755, Some("v1\n")),
        ("usr/lib", 0o755, None),
        ("usr/lib/libhello.so.1", 0o755, Some("lib v1\n")),
        ("usr/lib/apk", 0o755, None),
        ("usr/lib/apk/db", 0o755, None),
        ("usr/lib/apk/db/installed", 0o644, Some(installed)),
        ("usr/lib/apk/db/triggers", 0o644, Some(BUSYBOX_TRIGGER)),
        ("usr/lib/apk/db/scripts.tar", 0o644, Some(&scripts)),
        ("usr/share", 0o755, None),
        ("usr/share/shared", 0o755, None),
        ("usr/share/shared/shared.txt", 0o644, Some("shared\n")),
        ("usr/share/hello", 0o755, None),
        ("usr/share/hello/old.txt", 0o644, Some("old\n")),
        ("usr/share/hello/same.txt", 0o644, Some("same\n")),
        ("usr/share/hello/gone", 0o755, None),
        ("usr/share/hello/gone/gone.txt", 0o644, Some("gone\n")),
    ])]
}

fn descriptors(count: usize) -> Vec<LayerDescriptor> {
    (0..count)
        .map(|i| LayerDescriptor::new(format!("sha256:{i:064x}"), MEDIA_TYPE_OCI_LAYER_GZIP))
        .collect()
}

fn new_hello() -> Package {
    let mut owned = file("usr/share/hello/owned.txt", "mine\n", 0o640);
    owned.uname = "hello".into();
    owned.gname = "hello".into();
    owned.uid = 9;
    owned.gid = 9;
    let mut p = Package::new(
        "hello",
        "1.0-r1",
        vec![
            dir("etc"),
            file("etc/hello.conf", "x=2\n", 0o644),
            file("etc/hello-user.conf", "default2\n", 0o644),
            dir("lib"),
            file("lib/libhello.so.1", "lib v2\n", 0o755),
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/hello", "v2\n", 0o755),
            symlink("usr/bin/hi", "hello"),
            dir("usr/share"),
            dir("usr/share/hello"),
            file("usr/share/hello/same.txt", "same\n", 0o644),
            file("usr/share/hello/new.txt", "new\n", 0o644),
            owned,
        ],
    );
    p.scripts = vec![
        ("post-upgrade".into(), "#!/bin/sh\necho upgraded\n".into()),
        ("pre-install".into(), "#!/bin/sh\nexit 0\n".into()),
    ];
    p.extra = "depend = so:libc.musl-x86_64.so.1 busybox\nprovides = cmd:hello=1.0-r1\n".into();
    p
}

struct Opened {
    _dir: tempfile::TempDir,
    apk: ApkPackage,
}

fn open(p: &Package) -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = p.build();
    let path = dir.path().join("p.apk");
    std::fs::write(&path, bytes).unwrap();
    let apk = ApkPackage::open(&path, dir.path(), &ApkLimits::default()).unwrap();
    Opened { _dir: dir, apk }
}

fn contents(changes: &ApkChanges, path: &str) -> String {
    match &changes
        .layer
        .get(path)
        .unwrap_or_else(|| panic!("{path} not in the layer"))
        .kind
    {
        EntryKind::File(FileData::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        EntryKind::File(FileData::Slice { file, offset, len }) => {
            let mut buf = vec![0; *len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&**file, &mut buf, *offset).unwrap();
            String::from_utf8_lossy(&buf).into_owned()
        }
        other => format!("{other:?}"),
    }
}

fn run(installed: &str, packages: &[ApkNewPackage<'_>]) -> Result<ApkChanges, ApkError> {
    let blobs = image(installed);
    let layers = descriptors(blobs.len());
    let image = LayerImage::open(&blobs, &layers).unwrap();
    build(&image, packages)
}

fn hello_pkg(apk: &ApkPackage) -> ApkNewPackage<'_> {
    ApkNewPackage {
        name: "hello",
        installed_version: "1.0-r0",
        apk,
    }
}

#[test]
fn an_upgrade_writes_what_apk_would() {
    let new = open(&new_hello());
    let installed = format!("{BUSYBOX}\n{}\n", old_hello());
    let changes = run(&installed, &[hello_pkg(&new.apk)]).unwrap();
    let kinds: Vec<(String, &str)> = changes
        .layer
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EntryKind::Whiteout => "whiteout",
                EntryKind::Dir => "dir",
                EntryKind::File(_) => "file",
                EntryKind::Symlink(_) => "symlink",
                _ => "other",
            };
            (e.path.clone(), kind)
        })
        .collect();
    let expected: Vec<(String, &str)> = [
        // The image edited it since hello 1.0-r0 installed it: kept, as apk does.
        ("etc/hello-user.conf.apk-new", "file"),
        ("etc/hello.conf", "file"),
        ("usr/bin/hello", "file"),
        ("usr/bin/hi", "symlink"),
        // The database lives under /lib, a symlink to usr/lib in this image.
        ("usr/lib/apk/db/installed", "file"),
        ("usr/lib/apk/db/scripts.tar", "file"),
        // Through the image's lib -> usr/lib symlink.
        ("usr/lib/libhello.so.1", "file"),
        ("usr/share/hello/gone", "whiteout"),
        ("usr/share/hello/new.txt", "file"),
        ("usr/share/hello/old.txt", "whiteout"),
        ("usr/share/hello/owned.txt", "file"),
    ]
    .iter()
    .map(|(p, k)| (p.to_string(), *k))
    .collect();
    assert_eq!(kinds, expected);
    assert_eq!(contents(&changes, "etc/hello.conf"), "x=2\n");
    assert_eq!(
        contents(&changes, "etc/hello-user.conf.apk-new"),
        "default2\n"
    );
    assert_eq!(contents(&changes, "usr/lib/libhello.so.1"), "lib v2\n");
    let hello = changes.layer.get("usr/bin/hello").unwrap();
    assert_eq!((hello.mode, hello.mtime), (0o755, 1_700_000_000));
    let owned = changes.layer.get("usr/share/hello/owned.txt").unwrap();
    assert_eq!(
        (owned.uid, owned.gid, owned.mode),
        (101, 102, 0o640),
        "ids from the image's passwd"
    );

    let db = contents(&changes, "usr/lib/apk/db/installed");
    let apk = &new.apk;
    let stanza = format!(
        "C:{}\nP:hello\nV:1.0-r1\nA:x86_64\nS:{}\nI:37\nT:test package hello\nU:https://example.invalid/hello\nL:MIT\no:hello\nm:Test <t@example.invalid>\nt:1700000100\nc:0123456789abcdef0123456789abcdef01234567\nD:so:libc.musl-x86_64.so.1 busybox\np:cmd:hello=1.0-r1\ns:edge\nF:etc\nR:hello.conf\nZ:{}\nR:hello-user.conf\nZ:{}\nF:lib\nR:libhello.so.1\na:0:0:755\nZ:{}\nF:usr\nF:usr/bin\nR:hello\na:0:0:755\nZ:{}\nR:hi\na:0:0:777\nZ:{}\nF:usr/share\nF:usr/share/hello\nR:same.txt\nZ:{}\nR:new.txt\nZ:{}\nR:owned.txt\na:101:102:640\nZ:{}\n",
        apk.identity(),
        apk.file_size(),
        z("x=2\n"),
        z("default2\n"),
        z("lib v2\n"),
        z("v2\n"),
        z("hello"),
        z("same\n"),
        z("new\n"),
        z("mine\n"),
    );
    // apk-tools 2 appends the upgraded package; busybox is kept byte for byte.
    assert_eq!(db, format!("{BUSYBOX}\n{stanza}\n"));
    let read_back =
        crate::pkgs::apk::db::parse_installed("/lib/apk/db/installed", db.as_bytes()).unwrap();
    let versions: Vec<(&str, &str)> = read_back
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(versions, [("busybox", "1.36.1-r29"), ("hello", "1.0-r1")]);

    let outcome = &changes.outcomes[0];
    assert_eq!(
        (outcome.old_version.as_str(), outcome.new_version.as_str()),
        ("1.0-r0", "1.0-r1")
    );
    assert_eq!(outcome.protected_kept, ["/etc/hello-user.conf"]);
    assert_eq!(
        outcome.files_unchanged, 1,
        "same.txt stays in the lower layer"
    );
    assert_eq!(
        outcome.files_removed, 3,
        "old.txt, gone.txt and then its directory"
    );
    assert_eq!(
        changes.scripts_not_run,
        [
            "hello-1.0-r1.post-upgrade 1.0-r1 1.0-r0".to_owned(),
            "busybox-1.36.1-r29.trigger /usr/bin".to_owned(),
        ]
    );
    assert_eq!(
        changes.scripts[1].contents,
        b"#!/bin/sh\nbusybox --install -s\n"
    );
    assert_eq!(changes.epoch, 1_700_000_100);
}

#[test]
fn scripts_tar_is_rewritten_not_corrupted() {
    let new = open(&new_hello());
    let installed = format!("{BUSYBOX}\n{}\n", old_hello());
    let changes = run(&installed, &[hello_pkg(&new.apk)]).unwrap();
    let EntryKind::File(FileData::Bytes(tar)) = &changes
        .layer
        .get("usr/lib/apk/db/scripts.tar")
        .unwrap()
        .kind
    else {
        panic!("scripts.tar is not bytes");
    };
    let entries = extras::parse_scripts_tar(tar).unwrap();
    let names: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e.identity.clone(), e.script.clone()))
        .collect();
    let id = new.apk.identity();
    assert_eq!(
        names,
        [
            (
                "Q1DBPG58EPxiaCthR0ZHD/hszOuSg=".to_owned(),
                "trigger".to_owned()
            ),
            (id.clone(), "pre-install".to_owned()),
            (id.clone(), "post-upgrade".to_owned()),
        ],
        "the old version's post-install is gone, busybox's entry kept"
    );
    assert_eq!(
        entries[0].raw,
        extras::parse_scripts_tar(&scripts_tar()).unwrap()[1].raw
    );
    assert!(tar.ends_with(&[0u8; 1024]));
    // The system tar agrees.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scripts.tar");
    std::fs::write(&path, tar).unwrap();
    if let Ok(out) = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&path)
        .output()
    {
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains(&format!("hello-1.0-r1.{id}.post-upgrade")),
            "{listing}"
        );
        assert!(out.status.success());
    }
}

#[test]
fn the_same_inputs_give_the_same_layer() {
    let digests: Vec<_> = (0..2)
        .map(|_| {
            let new = open(&new_hello());
            let installed = format!("{BUSYBOX}\n{}\n", old_hello());
            let changes = run(&installed, &[hello_pkg(&new.apk)]).unwrap();
            let out = tempfile::tempdir().unwrap();
            let built = changes.layer.write_gzip(out.path()).unwrap();
            let listing = std::process::Command::new("tar")
                .arg("-tzvf")
                .arg(&built.path)
                .output();
            if let Ok(listing) = listing {
                let text = String::from_utf8_lossy(&listing.stdout);
                assert!(text.contains("usr/share/hello/.wh.old.txt"), "{text}");
                assert!(text.contains("usr/share/hello/.wh.gone"), "{text}");
            }
            built.digest
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn refusals_name_the_problem() {
    let new = open(&new_hello());
    let installed = format!("{BUSYBOX}\n{}\n", old_hello());
    let err = |p: ApkNewPackage<'_>| run(&installed, &[p]).unwrap_err().to_string();
    let wrong_version = ApkNewPackage {
        installed_version: "0.9-r0",
        ..hello_pkg(&new.apk)
    };
    assert_eq!(
        err(wrong_version),
        "package hello: the image has version 1.0-r0, the plan says 0.9-r0"
    );
    let not_installed = ApkNewPackage {
        name: "nothere",
        ..hello_pkg(&new.apk)
    };
    assert!(err(not_installed).contains("nothere is not installed"));
    let other_name = ApkNewPackage {
        name: "busybox",
        installed_version: "1.36.1-r29",
        apk: &new.apk,
    };
    assert_eq!(
        err(other_name),
        "package busybox: the .apk is package \"hello\""
    );
    let twice = run(&installed, &[hello_pkg(&new.apk), hello_pkg(&new.apk)]).unwrap_err();
    assert!(twice.to_string().contains("given twice"));
    let none = run("", &[hello_pkg(&new.apk)]).unwrap_err().to_string();
    assert!(none.contains("hello is not installed"), "{none}");

    // A directory where the image has a file.
    let mut clash = new_hello();
    for e in &mut clash.entries {
        if e.path == "usr/share/hello/same.txt" {
            *e = dir("usr/share/hello/same.txt");
        }
    }
    let clash = open(&clash);
    assert_eq!(
        err(hello_pkg(&clash.apk)),
        "package hello: /usr/share/hello/same.txt: a directory in the package, a file in the image"
    );

    // A file busybox owns, without `replaces`.
    let mut grab = new_hello();
    grab.entries.push(dir("usr/share/shared"));
    grab.entries
        .push(file("usr/share/shared/shared.txt", "mine\n", 0o644));
    let grab_apk = open(&grab);
    assert_eq!(
        err(hello_pkg(&grab_apk.apk)),
        "package hello: /usr/share/shared/shared.txt: owned by busybox-1.36.1-r29, which this package does not replace (apk refuses to overwrite it)"
    );
    // With `replaces = busybox` the file changes hands; busybox's stanza loses the record.
    grab.extra.push_str("replaces = busybox\n");
    let grab_apk = open(&grab);
    let changes = run(&installed, &[hello_pkg(&grab_apk.apk)]).unwrap();
    let db = contents(&changes, "usr/lib/apk/db/installed");
    let busybox = BUSYBOX.replace("R:shared.txt\nZ:Q1sharedsharedsharedsharedshar=\n", "");
    assert!(db.starts_with(&format!("{busybox}\n")), "{db}");
    assert!(db.contains("r:busybox\n"));
    assert_eq!(contents(&changes, "usr/share/shared/shared.txt"), "mine\n");
}

#[test]
fn hostile_packages_never_reach_the_engine() {
    let mut evil = new_hello();
    evil.entries.push(file("usr/../../etc/shadow", "x", 0o644));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.apk");
    std::fs::write(&path, evil.build().0).unwrap();
    let err = ApkPackage::open(&path, dir.path(), &ApkLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hostile package entry \"usr/../../etc/shadow\": \"..\" in the path"
    );
}

#[test]
fn apk_tools_3_sorts_packages_and_triggers_follow() {
    let mut new = new_hello();
    new.extra.push_str("triggers = /usr/share/hello\n");
    new.scripts
        .push(("trigger".into(), "#!/bin/sh\necho trig \"$@\"\n".into()));
    let new = open(&new);
    let apk_tools = "C:Q1apkapkapkapkapkapkapkapkapkapk=\nP:apk-tools\nV:3.0.0-r0\nA:x86_64\nF:sbin\nR:apk\nZ:Q1apkapkapkapkapkapkapkapkapkapk=\n";
    let installed = format!("{BUSYBOX}\n{}\n{apk_tools}\n", old_hello());
    let changes = run(&installed, &[hello_pkg(&new.apk)]).unwrap();
    let db = contents(&changes, "usr/lib/apk/db/installed");
    let names: Vec<&str> = db.lines().filter_map(|l| l.strip_prefix("P:")).collect();
    assert_eq!(names, ["apk-tools", "busybox", "hello"]);
    assert!(db.starts_with(&format!("{apk_tools}\n{BUSYBOX}\n")));
    assert_eq!(
        contents(&changes, "usr/lib/apk/db/triggers"),
        format!("{BUSYBOX_TRIGGER}{} /usr/share/hello\n", new.apk.identity())
    );
    assert!(changes
        .scripts_not_run
        .contains(&"hello-1.0-r1.trigger /usr/share/hello".to_owned()));
}

#[test]
fn dropping_all_scripts_still_rewrites_scripts_tar() {
    let mut quiet = new_hello();
    quiet.scripts.clear();
    let quiet = open(&quiet);
    // The old version had a post-install entry: it goes, so scripts.tar changes.
    let installed = format!("{BUSYBOX}\n{}\n", old_hello());
    let changes = run(&installed, &[hello_pkg(&quiet.apk)]).unwrap();
    assert!(changes.layer.get("usr/lib/apk/db/scripts.tar").is_some());
    // Only the trigger busybox has on /usr/bin is left to run.
    assert_eq!(
        changes.scripts_not_run,
        ["busybox-1.36.1-r29.trigger /usr/bin"]
    );
}
