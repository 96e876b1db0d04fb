//! Which database wins, what is read, and how failures surface.

use std::cell::RefCell;

use super::{detect, FileSource, MemoryFiles, DIRS, PATHS, PROBED_PATHS};
use crate::pkgs::{apk, dpkg, os_release, rpm, Ecosystem, InventoryError, SourceError};

const DEBIAN: &[u8] = include_bytes!("../testdata/os-release/debian-12");
const DISTROLESS: &[u8] = include_bytes!("../testdata/os-release/distroless-debian-12");
const ALPINE: &[u8] = include_bytes!("../testdata/os-release/alpine-3.20");
const AZURE: &[u8] = include_bytes!("../testdata/os-release/azurelinux-3.0");
const STATUS: &[u8] = include_bytes!("../testdata/dpkg/status");
const INSTALLED: &[u8] = include_bytes!("../testdata/apk/installed");
const MANIFEST: &[u8] = include_bytes!("../testdata/rpm/container-manifest-2");

fn distroless_status_d(files: &mut MemoryFiles) {
    let dir = "/var/lib/dpkg/status.d";
    files
        .insert(
            format!("{dir}/base"),
            include_bytes!("../testdata/dpkg/status.d/base").as_slice(),
        )
        .insert(
            format!("{dir}/libc6"),
            include_bytes!("../testdata/dpkg/status.d/libc6").as_slice(),
        )
        .insert(
            format!("{dir}/libc6.md5sums"),
            include_bytes!("../testdata/dpkg/status.d/libc6.md5sums").as_slice(),
        )
        .insert(
            format!("{dir}/libssl3"),
            include_bytes!("../testdata/dpkg/status.d/libssl3").as_slice(),
        );
}

#[test]
fn debian_image() {
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", DEBIAN)
        .insert(dpkg::db::STATUS_PATH, STATUS);
    let inventory = detect(&files).unwrap().unwrap();
    assert_eq!(inventory.ecosystem, Ecosystem::Dpkg);
    assert_eq!(inventory.os.id, "debian");
    assert_eq!(inventory.os.version_codename.as_deref(), Some("bookworm"));
    assert_eq!(inventory.packages.len(), 10);
}

#[test]
fn distroless_image_reads_status_d_and_usr_lib_os_release() {
    let mut files = MemoryFiles::new();
    files.insert("/usr/lib/os-release", DISTROLESS);
    distroless_status_d(&mut files);
    let inventory = detect(&files).unwrap().unwrap();
    assert_eq!(inventory.ecosystem, Ecosystem::Dpkg);
    assert_eq!(inventory.os.pretty_name.as_deref(), Some("Distroless"));
    assert_eq!(inventory.os.version_codename.as_deref(), Some("bookworm"));
    let names: Vec<&str> = inventory.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["base-files", "libc6", "libssl3"]);
}

#[test]
fn empty_status_file_gives_way_to_status_d() {
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", DISTROLESS)
        .insert(dpkg::db::STATUS_PATH, "");
    distroless_status_d(&mut files);
    let inventory = detect(&files).unwrap().unwrap();
    assert_eq!(inventory.packages.len(), 3);
}

#[test]
fn an_empty_database_still_names_the_ecosystem() {
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", ALPINE)
        .insert(apk::db::INSTALLED_PATH, "");
    let inventory = detect(&files).unwrap().unwrap();
    assert_eq!(inventory.ecosystem, Ecosystem::Apk);
    assert!(inventory.packages.is_empty());
}

#[test]
fn alpine_image() {
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", ALPINE)
        .insert(apk::db::INSTALLED_PATH, INSTALLED);
    let inventory = detect(&files).unwrap().unwrap();
    assert_eq!(inventory.ecosystem, Ecosystem::Apk);
    assert_eq!(inventory.os.version_id.as_deref(), Some("3.20.3"));
    assert_eq!(inventory.packages.len(), 10);
}

#[test]
fn azure_linux_distroless_image() {
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", AZURE)
        .insert(rpm::db::MANIFEST_PATH, MANIFEST);
    let inventory = detect(&files).unwrap().unwrap();
    assert_eq!(inventory.ecosystem, Ecosystem::Rpm);
    assert_eq!(inventory.os.id, "azurelinux");
    assert_eq!(inventory.packages.len(), 9);
}

#[test]
fn dpkg_wins_over_apk() {
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", DEBIAN)
        .insert(dpkg::db::STATUS_PATH, STATUS)
        .insert(apk::db::INSTALLED_PATH, INSTALLED);
    assert_eq!(detect(&files).unwrap().unwrap().ecosystem, Ecosystem::Dpkg);
}

#[test]
fn bdb_and_ndb_rpmdb_images_are_unsupported_for_now() {
    for path in rpm::db::UNSUPPORTED_RPMDB_PATHS {
        let mut files = MemoryFiles::new();
        files.insert("/etc/os-release", AZURE).insert(*path, "");
        match detect(&files).unwrap_err() {
            InventoryError::Unsupported { path: p, reason } => {
                assert_eq!(p, *path);
                assert!(reason.contains("format are not supported yet"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// rpm 4.18's sqlite rpmdb (testdata/rpm/sqlite/README.md), decompressed.
fn rpmdb_sqlite() -> Vec<u8> {
    use std::io::Read;
    let gz: &[u8] = include_bytes!("../testdata/rpm/sqlite/rpmdb.sqlite.gz");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn sqlite_rpmdb_images() {
    for path in rpm::sqlite::SQLITE_PATHS {
        let mut files = MemoryFiles::new();
        files
            .insert("/etc/os-release", AZURE)
            .insert(*path, rpmdb_sqlite());
        let inventory = detect(&files).unwrap().unwrap();
        assert_eq!(inventory.ecosystem, Ecosystem::Rpm);
        assert_eq!(inventory.os.id, "azurelinux");
        let names: Vec<&str> = inventory.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["beta", "alpha", "gamma-libs", "gamma"], "{path}");
    }
    // The database wins over a distroless manifest beside it.
    let mut files = MemoryFiles::new();
    files
        .insert(rpm::sqlite::SQLITE_PATH, rpmdb_sqlite())
        .insert(rpm::db::MANIFEST_PATH, MANIFEST);
    assert_eq!(detect(&files).unwrap().unwrap().packages.len(), 4);
    // A file at that path that is no rpm sqlite database says so.
    let mut files = MemoryFiles::new();
    files.insert(rpm::sqlite::SYSIMAGE_SQLITE_PATH, "SQLite format 3\0");
    assert_eq!(
        detect(&files).unwrap_err().to_string(),
        "/usr/lib/sysimage/rpm/rpmdb.sqlite: not an SQLite 3 database (no \"SQLite format 3\" file header)"
    );
}

#[test]
fn no_database_is_none() {
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", DEBIAN)
        .insert("/app/server", "binary");
    assert_eq!(detect(&files).unwrap(), None);
    assert_eq!(detect(&MemoryFiles::new()).unwrap(), None);
}

#[test]
fn no_os_release_leaves_the_id_empty() {
    let mut files = MemoryFiles::new();
    files.insert(apk::db::INSTALLED_PATH, INSTALLED);
    let inventory = detect(&files).unwrap().unwrap();
    assert_eq!(inventory.os, Default::default());
}

#[test]
fn a_dpkg_database_without_os_release_names_its_release() {
    let mut files = MemoryFiles::new();
    files.insert(dpkg::db::STATUS_PATH, STATUS);
    let inventory = detect(&files).unwrap().unwrap();
    assert_eq!(inventory.os.id, "debian");
    assert_eq!(inventory.os.version_id.as_deref(), Some("12"));
    assert_eq!(inventory.os.version_codename.as_deref(), Some("bookworm"));

    // Nothing in it names a release: refused, saying why.
    let mut files = MemoryFiles::new();
    files.insert(
        dpkg::db::STATUS_PATH,
        "Package: libfoo\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n",
    );
    let err = detect(&files).unwrap_err();
    assert!(matches!(err, InventoryError::NoRelease(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no /etc/os-release or /usr/lib/os-release, and the package database does not say \
         which release this is: none of its 1 package versions names a release (no \
         base-files, no +debNNuM, ~debNNuM or ~bpoNN version, no Ubuntu ~YY.MM version)"
    );
}

#[test]
fn malformed_files_name_themselves() {
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", DEBIAN)
        .insert(dpkg::db::STATUS_PATH, "Package: a\n");
    assert_eq!(
        detect(&files).unwrap_err().to_string(),
        "/var/lib/dpkg/status:1: package a has no Status field"
    );
    let mut files = MemoryFiles::new();
    files
        .insert("/etc/os-release", "ID=\"debian\n")
        .insert(dpkg::db::STATUS_PATH, STATUS);
    let err = detect(&files).unwrap_err();
    assert_eq!(err.path(), "/etc/os-release");
    assert_eq!(
        err.to_string(),
        "/etc/os-release:1: unterminated double quote"
    );
}

/// A source that records what is asked of it (`read`, `list` or `exists`, and the path)
/// and can fail on one path.
#[derive(Default)]
struct Recording {
    files: MemoryFiles,
    asked: RefCell<Vec<(&'static str, String)>>,
    fail_on: Option<&'static str>,
}

impl FileSource for Recording {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
        self.asked.borrow_mut().push(("read", path.to_owned()));
        if self.fail_on == Some(path) {
            return Err("layer 3: unexpected end of gzip stream".into());
        }
        self.files.read(path)
    }

    fn list_dir(&self, path: &str) -> Result<Vec<String>, SourceError> {
        self.asked.borrow_mut().push(("list", path.to_owned()));
        self.files.list_dir(path)
    }

    fn exists(&self, path: &str) -> Result<bool, SourceError> {
        self.asked.borrow_mut().push(("exists", path.to_owned()));
        self.files.exists(path)
    }
}

#[test]
fn reads_only_the_advertised_paths() {
    let empty = Recording::default();
    assert_eq!(detect(&empty).unwrap(), None);
    let mut distroless = Recording::default();
    distroless.files.insert("/usr/lib/os-release", DISTROLESS);
    distroless_status_d(&mut distroless.files);
    detect(&distroless).unwrap().unwrap();
    let asked: Vec<(&str, String)> = empty
        .asked
        .into_inner()
        .into_iter()
        .chain(distroless.asked.into_inner())
        .collect();
    let in_dir = |path: &str| DIRS.iter().any(|d| path.starts_with(&format!("{d}/")));
    for (how, path) in &asked {
        let advertised = match *how {
            "read" => PATHS.contains(&path.as_str()) || in_dir(path),
            "list" => DIRS.contains(&path.as_str()),
            "exists" => PROBED_PATHS.contains(&path.as_str()),
            other => panic!("{other}"),
        };
        assert!(advertised, "{how} {path} is not advertised");
    }
    // Every advertised path is asked for by an image that has none of them.
    for path in PATHS.iter().chain(DIRS).chain(PROBED_PATHS) {
        assert!(
            asked.iter().any(|(_, p)| p == path),
            "{path} is never asked for"
        );
    }
    // md5sums lists are never read.
    assert!(!asked.iter().any(|(_, p)| p.ends_with(".md5sums")));
    for path in os_release::PATHS {
        assert!(PATHS.contains(path), "{path}");
    }
}

#[test]
fn a_read_files_map_converts() {
    let map: std::collections::HashMap<String, Vec<u8>> = [
        ("/etc/os-release".to_owned(), DISTROLESS.to_vec()),
        (
            "/var/lib/dpkg/status.d/libssl3".to_owned(),
            include_bytes!("../testdata/dpkg/status.d/libssl3").to_vec(),
        ),
    ]
    .into_iter()
    .collect();
    let inventory = detect(&MemoryFiles::from(map)).unwrap().unwrap();
    assert_eq!(inventory.packages[0].name, "libssl3");
}

#[test]
fn source_failures_name_the_path() {
    let mut source = Recording {
        fail_on: Some(apk::db::INSTALLED_PATH),
        ..Default::default()
    };
    source.files.insert(apk::db::INSTALLED_PATH, INSTALLED);
    match detect(&source).unwrap_err() {
        err @ InventoryError::Read { .. } => {
            assert_eq!(
                err.to_string(),
                "reading /lib/apk/db/installed from the image: layer 3: unexpected end of gzip stream"
            );
            assert!(std::error::Error::source(&err).is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn memory_files_list_only_direct_children() {
    let mut files = MemoryFiles::new();
    files
        .insert("/d/a", "1")
        .insert("/d/b", "2")
        .insert("/d/sub/c", "3")
        .insert("/dx/e", "4");
    assert_eq!(files.list_dir("/d").unwrap(), ["a", "b"]);
    assert_eq!(files.list_dir("/d/").unwrap(), ["a", "b"]);
    assert!(files.list_dir("/nowhere").unwrap().is_empty());
    assert!(files.exists("/d/a").unwrap());
    assert!(!files.exists("/d").unwrap());
}

#[test]
fn works_through_a_trait_object() {
    let mut files = MemoryFiles::new();
    files.insert(apk::db::INSTALLED_PATH, INSTALLED);
    let source: &dyn FileSource = &files;
    assert_eq!(detect(source).unwrap().unwrap().ecosystem, Ecosystem::Apk);
}
