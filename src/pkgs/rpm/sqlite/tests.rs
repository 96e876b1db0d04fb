//! The sqlite rpmdb: a database rpm 4.18 wrote (committed, see testdata/rpm/sqlite/README.md),
//! the same regenerated with the real tools and checked against `rpm -qa`, and hostile
//! databases and records.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::pkgs::rpm::header::tests::blob;

/// rpm 4.18's sqlite rpmdb of the specs beside it, in WAL mode, 512-byte pages.
const FIXTURE_GZ: &[u8] = include_bytes!("../../testdata/rpm/sqlite/rpmdb.sqlite.gz");
const SPECS: &[(&str, &str)] = &[
    (
        "alpha.spec",
        include_str!("../../testdata/rpm/sqlite/alpha.spec"),
    ),
    (
        "beta.spec",
        include_str!("../../testdata/rpm/sqlite/beta.spec"),
    ),
    (
        "gamma.spec",
        include_str!("../../testdata/rpm/sqlite/gamma.spec"),
    ),
];

fn fixture() -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(FIXTURE_GZ)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `name version arch source_name source_version`, `-` for none.
fn rows(packages: &[InstalledPackage]) -> Vec<String> {
    packages
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {}",
                p.name,
                p.version,
                p.architecture.as_deref().unwrap_or("-"),
                p.source_name.as_deref().unwrap_or("-"),
                p.source_version.as_deref().unwrap_or("-"),
            )
        })
        .collect()
}

#[test]
fn reads_the_rpm_4_18_fixture() {
    let data = fixture();
    // rpm left the database in WAL mode: the reader must cope with that.
    assert_eq!(&data[18..20], &[2, 2]);
    let packages = parse_sqlite_rpmdb(SQLITE_PATH, &data).unwrap();
    assert_eq!(
        rows(&packages),
        [
            "beta 3:2.3.4-5.fc40 x86_64 beta -",
            "alpha 1.0-1 noarch alpha -",
            "gamma-libs 0.9~rc1-2 noarch gamma -",
            "gamma 0.9~rc1-2 noarch gamma -",
        ]
    );
    for p in &packages {
        crate::pkgs::rpm::version::validate(&p.version).unwrap();
    }
}

/// What `rpm -qa` says is in the database at `dbpath`, formatted as `rows` formats the
/// reader's (the epoch dropped when 0, as inventory versions do).
fn rpm_qa(dbpath: &Path) -> Vec<String> {
    let out = Command::new("rpm")
        .arg("--dbpath")
        .arg(dbpath)
        .args([
            "-qa",
            "--qf",
            "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE} %{ARCH} %{SOURCERPM}\\n",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let evr = f[1].strip_prefix("0:").unwrap_or(f[1]);
            let vr = evr.split_once(':').map_or(evr, |(_, vr)| vr);
            let (source, source_vr) = source_rpm(f[3]).unwrap();
            let source_vr = if source_vr == vr { "-" } else { source_vr };
            format!("{} {evr} {} {source} {source_vr}", f[0], f[2])
        })
        .collect()
}

fn have_tools() -> bool {
    let missing: Vec<&str> = ["rpm", "rpmbuild"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("REQUIRE_TEST_TOOLS").as_deref() != Ok("1"),
        "{missing:?} required (REQUIRE_TEST_TOOLS=1)"
    );
    eprintln!("skipped: {missing:?} not installed");
    false
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {out:?}");
}

#[test]
fn matches_rpm_qa_on_a_database_rpm_writes_now() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top");
    let dbpath = dir.path().join("db");
    std::fs::create_dir(&dbpath).unwrap();
    for (name, text) in SPECS {
        let spec = dir.path().join(name);
        std::fs::write(&spec, text).unwrap();
        run(Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg(&spec));
    }
    let mut rpms: Vec<_> = walk(&top.join("RPMS"));
    rpms.sort();
    assert_eq!(rpms.len(), 4, "{rpms:?}");
    let rpm = || {
        let mut c = Command::new("rpm");
        c.arg("--dbpath")
            .arg(&dbpath)
            .args(["--define", "_db_backend sqlite"]);
        c
    };
    run(rpm().arg("--initdb"));
    run(rpm()
        .args(["-i", "--justdb", "--nodeps", "--ignorearch"])
        .args(&rpms));
    let data = std::fs::read(dbpath.join("rpmdb.sqlite")).unwrap();
    let packages = parse_sqlite_rpmdb(SQLITE_PATH, &data).unwrap();
    let expected = rpm_qa(&dbpath);
    assert_eq!(rows(&packages), expected);
    assert_eq!(packages.len(), 4);
    // The committed fixture lists the same packages (in its own install order).
    let mut fixture_rows = rows(&parse_sqlite_rpmdb(SQLITE_PATH, &fixture()).unwrap());
    let mut now = expected;
    fixture_rows.sort();
    now.sort();
    assert_eq!(fixture_rows, now);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A database built here: `Packages` as rpm creates it, with these blobs.
fn database(schema: &str, blobs: &[Vec<u8>]) -> Vec<u8> {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(schema).unwrap();
    for blob in blobs {
        conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [blob])
            .unwrap();
    }
    conn.serialize(MAIN_DB).unwrap().to_vec()
}

const RPM_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS 'Packages' \
    (hnum INTEGER PRIMARY KEY AUTOINCREMENT,blob BLOB NOT NULL);";

const STRING: u32 = 6;
const INT32: u32 = 4;

/// A header with NAME, VERSION, RELEASE and optionally EPOCH; no ARCH or SOURCERPM.
fn header(name: &str, version: &str, release: &str, epoch: Option<u32>) -> Vec<u8> {
    let mut data = Vec::new();
    let mut entries = Vec::new();
    if let Some(epoch) = epoch {
        entries.push((tag::EPOCH, INT32, 0, 1));
        data.extend(epoch.to_be_bytes());
    }
    for (t, value) in [
        (tag::NAME, name),
        (tag::VERSION, version),
        (tag::RELEASE, release),
    ] {
        entries.push((t, STRING, data.len() as i32, 1));
        data.extend(value.as_bytes());
        data.push(0);
    }
    blob(&entries, &data)
}

#[test]
fn gpg_pubkeys_are_left_out_and_missing_fields_are_tolerated() {
    let data = database(
        RPM_SCHEMA,
        &[
            header("gpg-pubkey", "3228467c", "613798eb", None),
            header("tzdata", "2024b", "1", None),
            header("shadow-utils", "4.14.3", "2.azl3", Some(2)),
            header("zero", "1", "1", Some(0)),
        ],
    );
    let packages = parse_sqlite_rpmdb(SYSIMAGE_SQLITE_PATH, &data).unwrap();
    assert_eq!(
        rows(&packages),
        [
            "tzdata 2024b-1 - - -",
            "shadow-utils 2:4.14.3-2.azl3 - - -",
            "zero 1-1 - - -",
        ]
    );
    // An rpmdb with no packages is an empty list, not an error.
    let empty = database(RPM_SCHEMA, &[]);
    assert!(parse_sqlite_rpmdb(SQLITE_PATH, &empty).unwrap().is_empty());
}

/// The error `parse_sqlite_rpmdb` gives for `data`, as a user reads it.
fn error(data: &[u8]) -> String {
    parse_sqlite_rpmdb(SQLITE_PATH, data)
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_records_name_the_record() {
    let good = header("zlib", "1.3.1", "1", None);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            good[..good.len() - 3].to_vec(),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: header blob is 66 bytes but its il/dl say 69",
        ),
        (
            vec![0, 0, 0],
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: header blob is 3 bytes, shorter than its 8-byte il/dl prefix",
        ),
        (
            [&0xffff_ffffu32.to_be_bytes()[..], &[0; 4]].concat(),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: header has 4294967295 index entries, more than rpm allows (65535)",
        ),
        (
            [&[0; 4][..], &0x7fff_ffffu32.to_be_bytes()[..]].concat(),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: header has 2147483647 data bytes, more than rpm allows (268435455)",
        ),
        (
            blob(&[(tag::NAME, STRING, 100, 1)], b"zlib\0"),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: index entry 0 (tag NAME (1000)) points outside the 5 data bytes (offset 100, count 1)",
        ),
        (
            blob(&[(tag::VERSION, STRING, 0, 1)], b"1\0"),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: tag NAME (1000) is missing",
        ),
        (
            blob(&[(tag::NAME, STRING, 0, 1)], b"zlib\0"),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: tag VERSION (1001) is missing",
        ),
        (
            header("", "1", "1", None),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: NAME is empty",
        ),
        (
            header("zlib", "1-2", "1", None),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: VERSION \"1-2\" is empty or contains '-'",
        ),
        (
            header("zlib", "1", "", None),
            "/var/lib/rpm/rpmdb.sqlite:2: package record 2: RELEASE \"\" is empty or contains '-'",
        ),
    ];
    for (bad, message) in cases {
        let data = database(RPM_SCHEMA, &[good.clone(), bad]);
        let err = parse_sqlite_rpmdb(SQLITE_PATH, &data).unwrap_err();
        assert!(matches!(err, InventoryError::Malformed { line: 2, .. }));
        assert_eq!(err.to_string(), message);
    }
    // A blob stored as text.
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(&format!(
        "{RPM_SCHEMA} INSERT INTO Packages (hnum, blob) VALUES (7, 'zlib');"
    ))
    .unwrap();
    let data = conn.serialize(MAIN_DB).unwrap().to_vec();
    assert_eq!(
        error(&data),
        "/var/lib/rpm/rpmdb.sqlite:7: package record 7: the blob column holds text, not a blob"
    );
}

const NOT_SQLITE: &str = "not an SQLite 3 database (no \"SQLite format 3\" file header)";

#[test]
fn files_that_are_not_rpm_sqlite_databases() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), NOT_SQLITE),
        (b"SQLite format 3\0".to_vec(), NOT_SQLITE),
        (vec![0; 4096], NOT_SQLITE),
        (
            // A BerkeleyDB hash file's first page, as `Packages` starts.
            [
                &[0u8; 12][..],
                &0x0006_1561u32.to_le_bytes()[..],
                &[0; 4080],
            ]
            .concat(),
            NOT_SQLITE,
        ),
        (
            database("CREATE TABLE Other (x);", &[]),
            "not an rpm database: it has no Packages table",
        ),
        (
            database(
                "CREATE TABLE t (hnum INTEGER PRIMARY KEY, blob BLOB);
                 CREATE VIEW Packages AS WITH RECURSIVE r(hnum, blob) AS \
                 (SELECT 1, x'' UNION ALL SELECT hnum + 1, blob FROM r) SELECT * FROM r;",
                &[],
            ),
            "not an rpm database: Packages is a view, not a plain table",
        ),
        (
            database(
                "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, \
                 blob BLOB GENERATED ALWAYS AS (zeroblob(1000000000)) VIRTUAL);",
                &[],
            ),
            "not an rpm database: Packages has computed or hidden columns",
        ),
    ];
    for (data, message) in cases {
        let err = parse_sqlite_rpmdb(SQLITE_PATH, &data).unwrap_err();
        assert!(matches!(err, InventoryError::Unsupported { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("{SQLITE_PATH}: {message}"));
    }
}

#[test]
fn a_truncated_database_is_an_error() {
    let data = fixture();
    let err = error(&data[..data.len() / 2]);
    assert!(
        err.starts_with("/var/lib/rpm/rpmdb.sqlite: sqlite cannot read it: "),
        "{err}"
    );
}

#[test]
fn damaged_databases_never_panic() {
    let data = fixture();
    for cut in (0..data.len()).step_by(509) {
        let _ = parse_sqlite_rpmdb(SQLITE_PATH, &data[..cut]);
    }
    for i in (0..data.len()).step_by(97) {
        let mut bad = data.clone();
        bad[i] ^= 0xa5;
        let _ = parse_sqlite_rpmdb(SQLITE_PATH, &bad);
    }
}

/// One tar layer from `(path, symlink target or contents)`.
fn layer(entries: &[(&str, Result<&str, &[u8]>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, what) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).unwrap();
        header.set_mode(0o644);
        header.set_mtime(0);
        let data: &[u8] = match what {
            Ok(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_link_name(target).unwrap();
                b""
            }
            Err(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                data
            }
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append(&header, data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// Read as the mirror and the patch verifier read an image: the advertised paths through
/// the layer reader, then `detect`. Fedora's layout: the database under
/// `/usr/lib/sysimage/rpm`, `/var/lib/rpm` a symlink to it.
#[test]
fn an_image_with_the_sysimage_layout_through_the_layer_reader() {
    use crate::image::{read_files, LayerDescriptor, Limits, MEDIA_TYPE_OCI_LAYER};
    let os_release: &[u8] = include_bytes!("../../testdata/os-release/azurelinux-3.0");
    let db = fixture();
    let layers = vec![
        layer(&[
            ("etc/os-release", Err(os_release)),
            ("usr/lib/sysimage/rpm/rpmdb.sqlite", Err(&db)),
            ("var/lib/rpm", Ok("../../usr/lib/sysimage/rpm")),
        ]),
        layer(&[("app/run", Err(b"#!/bin/sh\n"))]),
    ];
    let descriptors: Vec<LayerDescriptor> = (0..layers.len())
        .map(|i| LayerDescriptor::new(format!("sha256:{i:064x}"), MEDIA_TYPE_OCI_LAYER))
        .collect();
    let mut wanted: Vec<String> = crate::pkgs::PATHS.iter().map(|p| p.to_string()).collect();
    wanted.extend(crate::pkgs::DIRS.iter().map(|d| format!("{d}/")));
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let files = read_files(&layers, &descriptors, &wanted, &Limits::default()).unwrap();
    assert_eq!(files.get(SQLITE_PATH), Some(&db));
    let inventory = crate::pkgs::detect(&crate::pkgs::MemoryFiles::from(files))
        .unwrap()
        .unwrap();
    assert_eq!(inventory.ecosystem, crate::pkgs::Ecosystem::Rpm);
    assert_eq!(inventory.os.id, "azurelinux");
    assert_eq!(
        rows(&inventory.packages),
        [
            "beta 3:2.3.4-5.fc40 x86_64 beta -",
            "alpha 1.0-1 noarch alpha -",
            "gamma-libs 0.9~rc1-2 noarch gamma -",
            "gamma 0.9~rc1-2 noarch gamma -",
        ]
    );
}
