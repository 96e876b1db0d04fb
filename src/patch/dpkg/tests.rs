//! The dpkg engine over synthetic images and real `.deb`s made by `dpkg-deb`: the exact
//! layer (files, whiteouts, database), conffiles, merged-/usr paths, shared files,
//! distroless databases, conflicts and determinism.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest as _, Md5};

use super::{build, NewPackage};
use crate::image::{LayerDescriptor, MEDIA_TYPE_OCI_LAYER_GZIP};
use crate::patch::layer::{EntryKind, FileData, LayerBuilder};
use crate::patch::native::LayerImage;
use crate::pkgs::dpkg::debfile::{DebLimits, DebPackage};

fn md5(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

pub(crate) fn dpkg_deb_available() -> bool {
    let ok = Command::new("dpkg-deb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("REQUIRE_TEST_TOOLS").as_deref() == Ok("1") {
        panic!("dpkg-deb is required (REQUIRE_TEST_TOOLS=1)");
    }
    ok
}

/// A package tree for `dpkg-deb --build`.
pub(crate) struct DebTree {
    pub files: Vec<(&'static str, String)>,
    pub dirs: Vec<&'static str>,
    pub symlinks: Vec<(&'static str, &'static str)>,
    pub conffiles: Vec<&'static str>,
    pub scripts: Vec<(&'static str, &'static str)>,
    pub extra_control: &'static str,
}

pub(crate) fn make_deb(dir: &Path, name: &str, version: &str, tree: &DebTree) -> PathBuf {
    let root = dir.join(format!("{name}-{version}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    for d in &tree.dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut sums = String::new();
    for (path, contents) in &tree.files {
        let target = root.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, contents).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        if !tree.conffiles.contains(&format!("/{path}").as_str()) {
            sums.push_str(&format!("{}  {path}\n", md5(contents)));
        }
    }
    for (path, target) in &tree.symlinks {
        let at = root.join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, at).unwrap();
    }
    std::fs::write(root.join("DEBIAN/md5sums"), sums).unwrap();
    if !tree.conffiles.is_empty() {
        let list: String = tree.conffiles.iter().map(|c| format!("{c}\n")).collect();
        std::fs::write(root.join("DEBIAN/conffiles"), list).unwrap();
    }
    for (script, body) in &tree.scripts {
        let path = root.join("DEBIAN").join(script);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: Test <t@example.invalid>\n{}Description: test package\n more text\n",
            tree.extra_control
        ),
    )
    .unwrap();
    let deb = dir.join(format!("{name}_{version}_amd64.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

/// One image layer from (path, entry) pairs: `Some(contents)` a file, `None` a directory,
/// `"->target"` contents make a symlink.
pub(crate) fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        match contents {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .unwrap();
            }
            Some(text) if text.starts_with("->") => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, &text[2..]).unwrap();
            }
            Some(text) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(text.len() as u64);
                builder
                    .append_data(&mut header, path, text.as_bytes())
                    .unwrap();
            }
        }
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

fn descriptors(count: usize) -> Vec<LayerDescriptor> {
    (0..count)
        .map(|i| LayerDescriptor::new(format!("sha256:{i:064x}"), MEDIA_TYPE_OCI_LAYER_GZIP))
        .collect()
}

const OTHER_STANZA: &str = "Package: other\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: 1\nDescription: another\n";

fn hello_status(conffile_md5: &str, user_md5: &str) -> String {
    format!(
        "Package: hello\nStatus: install ok installed\nPriority: optional\nMaintainer: Test <t@example.invalid>\nArchitecture: amd64\nVersion: 1.0-1\nConffiles:\n /etc/hello.conf {conffile_md5}\n /etc/hello-user.conf {user_md5}\nDescription: test package\n more text\n\n{OTHER_STANZA}\n"
    )
}

const OLD_LIST: &str = "/.\n/etc\n/etc/hello.conf\n/etc/hello-user.conf\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libhello.so.1\n/usr\n/usr/bin\n/usr/bin/hello\n/usr/share\n/usr/share/hello\n/usr/share/hello/old.txt\n/usr/share/hello/olddir\n/usr/share/hello/olddir/x.txt\n/usr/share/hello/same.txt\n/usr/share/hello/shared.txt\n";

fn base_image(status: &str) -> Vec<u8> {
    let old_sums = format!(
        "{}  usr/bin/hello\n{}  usr/share/hello/old.txt\n{}  usr/share/hello/same.txt\n{}  usr/share/hello/shared.txt\n{}  lib/x86_64-linux-gnu/libhello.so.1\n",
        md5("v1\n"), md5("old\n"), md5("same\n"), md5("shared\n"), md5("lib v1\n")
    );
    layer(&[
        ("etc", None),
        ("etc/hello.conf", Some("greeting=hi\n")),
        ("etc/hello-user.conf", Some("edited by the image\n")),
        ("usr", None),
        ("usr/bin", None),
        ("usr/bin/hello", Some("v1\n")),
        ("usr/lib", None),
        ("usr/lib/x86_64-linux-gnu", None),
        ("usr/lib/x86_64-linux-gnu/libhello.so.1", Some("lib v1\n")),
        ("lib", Some("->usr/lib")),
        ("usr/share", None),
        ("usr/share/hello", None),
        ("usr/share/hello/old.txt", Some("old\n")),
        ("usr/share/hello/olddir", None),
        ("usr/share/hello/olddir/x.txt", Some("x\n")),
        ("usr/share/hello/same.txt", Some("same\n")),
        ("usr/share/hello/shared.txt", Some("shared\n")),
        ("var", None),
        ("var/lib", None),
        ("var/lib/dpkg", None),
        ("var/lib/dpkg/status", Some(status)),
        ("var/lib/dpkg/info", None),
        ("var/lib/dpkg/info/hello.list", Some(OLD_LIST)),
        ("var/lib/dpkg/info/hello.md5sums", Some(&old_sums)),
        (
            "var/lib/dpkg/info/hello.conffiles",
            Some("/etc/hello.conf\n/etc/hello-user.conf\n"),
        ),
        (
            "var/lib/dpkg/info/hello.postrm",
            Some("#!/bin/sh\nexit 0\n"),
        ),
        (
            "var/lib/dpkg/info/other.list",
            Some("/.\n/usr\n/usr/share\n/usr/share/hello\n/usr/share/hello/shared.txt\n"),
        ),
    ])
}

fn new_hello(dir: &Path) -> PathBuf {
    make_deb(
        dir,
        "hello",
        "1.0-2",
        &DebTree {
            files: vec![
                ("etc/hello.conf", "greeting=hello\n".into()),
                ("etc/hello-user.conf", "default2\n".into()),
                ("usr/bin/hello", "v2\n".into()),
                ("usr/share/hello/same.txt", "same\n".into()),
                ("usr/share/hello/new.txt", "new\n".into()),
                ("lib/x86_64-linux-gnu/libhello.so.1", "lib v2\n".into()),
            ],
            dirs: vec![],
            symlinks: vec![],
            conffiles: vec!["/etc/hello.conf", "/etc/hello-user.conf"],
            scripts: vec![(
                "postinst",
                "#!/bin/sh\necho configured > /etc/hello.state\n",
            )],
            extra_control: "Priority: optional\nHomepage: https://example.invalid/\n",
        },
    )
}

fn contents(builder: &LayerBuilder, path: &str) -> Option<String> {
    match &builder.get(path)?.kind {
        EntryKind::File(FileData::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        EntryKind::File(FileData::Slice { file, offset, len }) => {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; *len as usize];
            file.read_exact_at(&mut buf, *offset).unwrap();
            Some(String::from_utf8_lossy(&buf).into_owned())
        }
        other => Some(format!("{other:?}")),
    }
}

#[test]
fn an_upgrade_writes_what_dpkg_would() {
    if !dpkg_deb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = hello_status(&md5("greeting=hi\n"), &md5("default\n"));
    let blobs = vec![base_image(&status)];
    let layers = descriptors(1);
    let image = LayerImage::open(&blobs, &layers).unwrap();
    let deb = DebPackage::open(&new_hello(dir.path()), dir.path(), &DebLimits::default()).unwrap();
    let packages = [NewPackage {
        name: "hello",
        installed_version: "1.0-1",
        architecture: "amd64",
        deb: &deb,
    }];
    let changes = build(&image, &packages).unwrap();
    let paths: Vec<(String, String)> = changes
        .layer
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EntryKind::Whiteout => "whiteout",
                EntryKind::Dir => "dir",
                EntryKind::File(_) => "file",
                _ => "other",
            };
            (e.path.clone(), kind.to_owned())
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("etc/hello-user.conf.dpkg-dist", "file"),
        ("etc/hello.conf", "file"),
        ("usr/bin/hello", "file"),
        // Through the image's lib -> usr/lib symlink, as dpkg writes it.
        ("usr/lib/x86_64-linux-gnu/libhello.so.1", "file"),
        ("usr/share/hello/new.txt", "file"),
        ("usr/share/hello/old.txt", "whiteout"),
        // Emptied: one whiteout for the directory, none for its file.
        ("usr/share/hello/olddir", "whiteout"),
        ("var/lib/dpkg/info/hello.conffiles", "file"),
        ("var/lib/dpkg/info/hello.list", "file"),
        ("var/lib/dpkg/info/hello.md5sums", "file"),
        ("var/lib/dpkg/info/hello.postinst", "file"),
        ("var/lib/dpkg/info/hello.postrm", "whiteout"),
        ("var/lib/dpkg/status", "file"),
    ]
    .iter()
    .map(|(p, k)| (p.to_string(), k.to_string()))
    .collect();
    assert_eq!(paths, expected);
    assert_eq!(
        contents(&changes.layer, "etc/hello.conf").unwrap(),
        "greeting=hello\n"
    );
    assert_eq!(
        contents(&changes.layer, "etc/hello-user.conf.dpkg-dist").unwrap(),
        "default2\n"
    );
    assert_eq!(
        contents(&changes.layer, "usr/lib/x86_64-linux-gnu/libhello.so.1").unwrap(),
        "lib v2\n"
    );
    let new_status = contents(&changes.layer, "var/lib/dpkg/status").unwrap();
    assert_eq!(
        new_status,
        format!(
            "Package: hello\nStatus: install ok installed\nPriority: optional\nMaintainer: Test <t@example.invalid>\nArchitecture: amd64\nVersion: 1.0-2\nConffiles:\n /etc/hello.conf {}\n /etc/hello-user.conf {}\nDescription: test package\n more text\nHomepage: https://example.invalid/\n\n{OTHER_STANZA}\n",
            md5("greeting=hello\n"),
            md5("default2\n")
        )
    );
    let list = contents(&changes.layer, "var/lib/dpkg/info/hello.list").unwrap();
    assert!(list.starts_with("/.\n"), "{list}");
    assert!(
        list.contains("/lib/x86_64-linux-gnu/libhello.so.1\n"),
        "{list}"
    );
    assert!(list.contains("/usr/share/hello/new.txt\n"));
    assert!(!list.contains("old.txt"));
    let outcome = &changes.outcomes[0];
    assert_eq!(outcome.conffiles_kept, vec!["/etc/hello-user.conf"]);
    assert_eq!(outcome.files_removed, 3, "old.txt, olddir/x.txt and olddir");
    assert!(
        outcome.files_unchanged >= 1,
        "same.txt is left in the lower layer"
    );
    assert!(!changes.distroless);
    let scripts: Vec<String> = changes
        .scripts
        .all()
        .map(|s| format!("{} {}", s.script, s.args.join(" ")))
        .collect();
    assert_eq!(
        scripts,
        vec!["postrm upgrade 1.0-2", "postinst configure 1.0-1"]
    );

    // The same inputs give the same layer, byte for byte.
    let first = changes.layer.write_gzip(dir.path()).unwrap();
    let again = build(&image, &packages).unwrap();
    let second = again.layer.write_gzip(dir.path()).unwrap();
    assert_eq!(first.digest, second.digest);
}

#[test]
fn distroless_images_get_status_d_and_no_scripts() {
    if !dpkg_deb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let control = "Package: hello\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: Test <t@example.invalid>\nDescription: test package\n";
    let sums = format!(
        "{}  usr/bin/hello\n{}  usr/share/hello/old.txt\n",
        md5("v1\n"),
        md5("old\n")
    );
    let blobs = vec![layer(&[
        ("usr", None),
        ("usr/bin", None),
        ("usr/bin/hello", Some("v1\n")),
        ("usr/share", None),
        ("usr/share/hello", None),
        ("usr/share/hello/old.txt", Some("old\n")),
        ("var", None),
        ("var/lib", None),
        ("var/lib/dpkg", None),
        ("var/lib/dpkg/status.d", None),
        ("var/lib/dpkg/status.d/hello", Some(control)),
        ("var/lib/dpkg/status.d/hello.md5sums", Some(&sums)),
    ])];
    let layers = descriptors(1);
    let image = LayerImage::open(&blobs, &layers).unwrap();
    let deb_path = make_deb(
        dir.path(),
        "hello",
        "1.0-2",
        &DebTree {
            files: vec![("usr/bin/hello", "v2\n".into())],
            dirs: vec![],
            symlinks: vec![],
            conffiles: vec![],
            scripts: vec![("postinst", "#!/bin/sh\nexit 1\n")],
            extra_control: "",
        },
    );
    let deb = DebPackage::open(&deb_path, dir.path(), &DebLimits::default()).unwrap();
    let changes = build(
        &image,
        &[NewPackage {
            name: "hello",
            installed_version: "1.0-1",
            architecture: "amd64",
            deb: &deb,
        }],
    )
    .unwrap();
    assert!(changes.distroless);
    assert!(changes.scripts.is_empty());
    let paths: BTreeMap<String, bool> = changes
        .layer
        .iter()
        .map(|e| (e.path.clone(), matches!(e.kind, EntryKind::Whiteout)))
        .collect();
    assert_eq!(
        paths.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![
            "usr/bin/hello",
            "usr/share/hello/old.txt",
            "var/lib/dpkg/status.d/hello",
            "var/lib/dpkg/status.d/hello.md5sums"
        ]
    );
    assert!(paths["usr/share/hello/old.txt"], "old.txt is whited out");
    // md5sums list files only: directories are never removed on distroless images.
    assert_eq!(
        contents(&changes.layer, "var/lib/dpkg/status.d/hello").unwrap(),
        String::from_utf8_lossy(deb.control())
    );
    assert_eq!(
        contents(&changes.layer, "var/lib/dpkg/status.d/hello.md5sums").unwrap(),
        format!("{}  usr/bin/hello\n", md5("v2\n"))
    );
}

/// A `status.d` stanza written as a database (a builder that adds `Status:` and
/// `Conffiles:` to the control file) keeps those fields through an upgrade, with the new
/// version's values, and the project's own `status.d` reader sees the new version.
/// The status.d stanza of `hello` after upgrading it from 1.0-1 (image stanza `stanza`,
/// a conffile changed and one gone) to 1.0-2.
fn patched_status_d(stanza: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let sums = format!("{}  usr/bin/hello\n", md5("v1\n"));
    let blobs = vec![layer(&[
        ("etc", None),
        ("etc/hello.conf", Some("greeting=hi\n")),
        ("etc/hello-gone.conf", Some("gone\n")),
        ("usr", None),
        ("usr/bin", None),
        ("usr/bin/hello", Some("v1\n")),
        ("var", None),
        ("var/lib", None),
        ("var/lib/dpkg", None),
        ("var/lib/dpkg/status.d", None),
        ("var/lib/dpkg/status.d/hello", Some(stanza)),
        ("var/lib/dpkg/status.d/hello.md5sums", Some(&sums)),
    ])];
    let layers = descriptors(1);
    let image = LayerImage::open(&blobs, &layers).unwrap();
    let deb_path = make_deb(
        dir.path(),
        "hello",
        "1.0-2",
        &DebTree {
            files: vec![
                ("usr/bin/hello", "v2\n".into()),
                ("etc/hello.conf", "greeting=hello\n".into()),
            ],
            dirs: vec![],
            symlinks: vec![],
            conffiles: vec!["/etc/hello.conf"],
            scripts: vec![],
            extra_control: "Depends: libc6\n",
        },
    );
    let deb = DebPackage::open(&deb_path, dir.path(), &DebLimits::default()).unwrap();
    let changes = build(
        &image,
        &[NewPackage {
            name: "hello",
            installed_version: "1.0-1",
            architecture: "amd64",
            deb: &deb,
        }],
    )
    .unwrap();
    contents(&changes.layer, "var/lib/dpkg/status.d/hello").unwrap()
}

#[test]
fn distroless_status_d_keeps_status_and_conffiles() {
    if !dpkg_deb_available() {
        return;
    }
    let stanza = format!(
        "Package: hello\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: Test <t@example.invalid>\nHomepage: https://old.example.invalid\nPriority: optional\nDescription: test package\nStatus: install ok installed\nConffiles:\n /etc/hello.conf {}\n /etc/hello-gone.conf {}\n",
        md5("greeting=hi\n"),
        md5("gone\n")
    );
    let patched = patched_status_d(&stanza);
    // The new control's fields in its order, the image's own fields where the image had
    // them; Homepage was the old control's and the new one has none.
    assert_eq!(
        patched,
        format!(
            "Package: hello\nVersion: 1.0-2\nArchitecture: amd64\nMaintainer: Test <t@example.invalid>\nPriority: optional\nDepends: libc6\nDescription: test package\n more text\nStatus: install ok installed\nConffiles:\n /etc/hello.conf {}\n /etc/hello-gone.conf {} obsolete\n",
            md5("greeting=hello\n"),
            md5("gone\n")
        )
    );
    let packages = crate::pkgs::dpkg::db::parse_status_dir([(
        "/var/lib/dpkg/status.d/hello",
        patched.as_bytes(),
    )])
    .unwrap();
    assert_eq!(packages.len(), 1);
    assert_eq!(packages[0].name, "hello");
    assert_eq!(packages[0].version, "1.0-2");
}

#[test]
fn conflicts_and_wrong_versions_are_refused() {
    if !dpkg_deb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = hello_status(&md5("greeting=hi\n"), &md5("default\n"));
    let blobs = vec![base_image(&status)];
    let layers = descriptors(1);
    let image = LayerImage::open(&blobs, &layers).unwrap();
    // The package has a directory where the image has the file /usr/bin/hello.
    let deb_path = make_deb(
        dir.path(),
        "hello",
        "1.0-3",
        &DebTree {
            files: vec![("usr/bin/hello/inside", "x\n".into())],
            dirs: vec![],
            symlinks: vec![],
            conffiles: vec![],
            scripts: vec![],
            extra_control: "",
        },
    );
    let deb = DebPackage::open(&deb_path, dir.path(), &DebLimits::default()).unwrap();
    let package = |version| NewPackage {
        name: "hello",
        installed_version: version,
        architecture: "amd64",
        deb: &deb,
    };
    let error = build(&image, &[package("1.0-1")])
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("/usr/bin/hello"), "{error}");
    let error = build(&image, &[package("0.9")]).err().unwrap().to_string();
    assert!(error.contains("the image has version 1.0-1"), "{error}");
}

#[test]
fn path_excludes_are_listed_but_not_written() {
    if !dpkg_deb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = "Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\nDescription: d\n";
    let blobs = vec![layer(&[
        ("etc", None),
        ("etc/dpkg", None),
        ("etc/dpkg/dpkg.cfg.d", None),
        ("etc/dpkg/dpkg.cfg.d/docker", Some("path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n")),
        ("usr", None),
        ("usr/share", None),
        ("usr/share/doc", None),
        ("usr/share/doc/hello", None),
        ("usr/share/doc/hello/NEWS", Some("old news\n")),
        ("usr/share/doc/hello/copyright", Some("c\n")),
        ("var", None),
        ("var/lib", None),
        ("var/lib/dpkg", None),
        ("var/lib/dpkg/status", Some(status)),
        ("var/lib/dpkg/info", None),
        ("var/lib/dpkg/info/hello.list", Some("/.\n/usr\n/usr/share\n/usr/share/doc\n/usr/share/doc/hello\n/usr/share/doc/hello/NEWS\n/usr/share/doc/hello/copyright\n")),
    ])];
    let layers = descriptors(1);
    let image = LayerImage::open(&blobs, &layers).unwrap();
    let deb_path = make_deb(
        dir.path(),
        "hello",
        "1.0-2",
        &DebTree {
            files: vec![
                ("usr/share/doc/hello/NEWS", "new news\n".into()),
                ("usr/share/doc/hello/copyright", "c2\n".into()),
                ("usr/share/doc/hello/README", "readme\n".into()),
            ],
            dirs: vec![],
            symlinks: vec![],
            conffiles: vec![],
            scripts: vec![],
            extra_control: "",
        },
    );
    let deb = DebPackage::open(&deb_path, dir.path(), &DebLimits::default()).unwrap();
    let changes = build(
        &image,
        &[NewPackage {
            name: "hello",
            installed_version: "1.0-1",
            architecture: "amd64",
            deb: &deb,
        }],
    )
    .unwrap();
    let doc: Vec<(String, bool)> = changes
        .layer
        .iter()
        .filter(|e| e.path.starts_with("usr/share/doc"))
        .map(|e| (e.path.clone(), matches!(e.kind, EntryKind::Whiteout)))
        .collect();
    assert_eq!(
        doc,
        vec![
            ("usr/share/doc/hello/NEWS".to_owned(), true),
            ("usr/share/doc/hello/copyright".to_owned(), false),
        ]
    );
    let list = contents(&changes.layer, "var/lib/dpkg/info/hello.list").unwrap();
    assert!(
        list.contains("/usr/share/doc/hello/NEWS\n")
            && list.contains("/usr/share/doc/hello/README\n"),
        "{list}"
    );
}

#[test]
fn distroless_status_d_in_dpkgs_order_stays_in_dpkgs_order() {
    if !dpkg_deb_available() {
        return;
    }
    // A status file split into status.d: every stanza as dpkg writes status.
    let stanza = format!(
        "Package: hello\nStatus: install ok installed\nPriority: optional\nMaintainer: Test <t@example.invalid>\nArchitecture: amd64\nVersion: 1.0-1\nConffiles:\n /etc/hello.conf {}\n /etc/hello-gone.conf {}\nDescription: test package\n",
        md5("greeting=hi\n"),
        md5("gone\n")
    );
    assert_eq!(
        patched_status_d(&stanza),
        format!(
            "Package: hello\nStatus: install ok installed\nPriority: optional\nMaintainer: Test <t@example.invalid>\nArchitecture: amd64\nVersion: 1.0-2\nDepends: libc6\nConffiles:\n /etc/hello.conf {}\n /etc/hello-gone.conf {} obsolete\nDescription: test package\n more text\n",
            md5("greeting=hello\n"),
            md5("gone\n")
        )
    );
}
