//! dpkg database fixtures: a bookworm-style status file, a distroless `status.d`, the
//! host's own database against `dpkg-query`, and malformed input.

use std::collections::BTreeSet;
use std::process::Command;

use super::{is_installed, parse_status, parse_status_dir, STATUS_PATH};
use crate::pkgs::{InstalledPackage, InventoryError};

const STATUS: &[u8] = include_bytes!("../../testdata/dpkg/status");

fn pkg(name: &str, version: &str, arch: &str, source: &str) -> InstalledPackage {
    InstalledPackage {
        name: name.into(),
        version: version.into(),
        architecture: Some(arch.into()),
        source_name: Some(source.into()),
        source_version: None,
    }
}

#[test]
fn status_file_keeps_installed_packages() {
    let packages = parse_status(STATUS_PATH, STATUS).unwrap();
    let mut pcre = pkg("libpcre2-8-0", "10.42-1+b1", "amd64", "pcre2");
    pcre.source_version = Some("10.42-1".into());
    let want = vec![
        pkg("adduser", "3.134", "all", "adduser"),
        pkg("apt", "2.6.1", "amd64", "apt"),
        pkg("base-files", "12.4+deb12u5", "amd64", "base-files"),
        pkg("libc6", "2.36-9+deb12u7", "amd64", "glibc"),
        pkg("libc6", "2.36-9+deb12u7", "i386", "glibc"),
        pkg("libgnutls30", "3.7.9-2+deb12u2", "amd64", "gnutls28"),
        pcre,
        pkg("libzstd1", "1.5.4+dfsg2-5", "amd64", "libzstd"),
        // Selected for removal but still installed: its files are on disk.
        pkg("tzdata", "2024a-0+deb12u1", "all", "tzdata"),
        pkg("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib"),
    ];
    assert_eq!(packages, want);
}

#[test]
fn status_d_reads_control_files_and_skips_md5sums() {
    let dir = [
        (
            "libssl3",
            include_bytes!("../../testdata/dpkg/status.d/libssl3").as_slice(),
        ),
        (
            "libc6.md5sums",
            include_bytes!("../../testdata/dpkg/status.d/libc6.md5sums"),
        ),
        (
            "tzdata_8a3b2c1d",
            include_bytes!("../../testdata/dpkg/status.d/tzdata_8a3b2c1d"),
        ),
        ("base", include_bytes!("../../testdata/dpkg/status.d/base")),
        (
            "libc6",
            include_bytes!("../../testdata/dpkg/status.d/libc6"),
        ),
    ];
    let files: Vec<(String, &[u8])> = dir
        .iter()
        .map(|(name, data)| (format!("/var/lib/dpkg/status.d/{name}"), *data))
        .collect();
    let packages =
        parse_status_dir(files.iter().map(|(path, data)| (path.as_str(), *data))).unwrap();
    let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    // Ordered by file name: base, libc6, libssl3, tzdata_8a3b2c1d.
    assert_eq!(names, ["base-files", "libc6", "libssl3", "tzdata"]);
    assert_eq!(
        packages[1],
        pkg("libc6", "2.36-9+deb12u7", "amd64", "glibc")
    );
    assert_eq!(
        packages[2],
        pkg("libssl3", "3.0.14-1~deb12u2", "amd64", "openssl")
    );
    assert_eq!(packages[3].architecture.as_deref(), Some("all"));
}

#[test]
fn status_d_honours_a_status_field_when_present() {
    let data = b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
    let packages = parse_status_dir([("/s/gone", data.as_slice())]).unwrap();
    assert!(packages.is_empty());
}

#[test]
fn empty_databases_have_no_packages() {
    assert!(parse_status(STATUS_PATH, b"").unwrap().is_empty());
    assert!(parse_status_dir(std::iter::empty()).unwrap().is_empty());
}

#[test]
fn status_words() {
    let table = [
        ("install ok installed", Ok(true)),
        ("hold ok installed", Ok(true)),
        ("deinstall ok installed", Ok(true)),
        ("install reinstreq unpacked", Ok(true)),
        ("install ok half-configured", Ok(true)),
        ("install ok triggers-awaited", Ok(true)),
        ("install ok triggers-pending", Ok(true)),
        ("unknown ok not-installed", Ok(false)),
        ("deinstall ok config-files", Ok(false)),
        ("purge ok not-installed", Ok(false)),
        ("install reinstreq half-installed", Ok(false)),
        ("  install   ok   installed  ", Ok(true)),
    ];
    for (status, want) in table {
        assert_eq!(is_installed(status), want, "{status}");
    }
    for bad in [
        "",
        "install ok",
        "install ok installed extra",
        "keep ok installed",
        "install bad installed",
        "install ok gone",
    ] {
        assert!(is_installed(bad).is_err(), "{bad:?}");
    }
}

fn malformed(data: &[u8]) -> (usize, String) {
    match parse_status("/var/lib/dpkg/status", data).unwrap_err() {
        InventoryError::Malformed { path, line, reason } => {
            assert_eq!(path, "/var/lib/dpkg/status");
            (line, reason)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_status_files_name_the_line() {
    let cases: &[(&[u8], usize, &str)] = &[
        (
            b"Version: 1\nStatus: install ok installed\n",
            1,
            "paragraph has no Package field",
        ),
        (
            b"Package: a\nVersion: 1\n",
            1,
            "package a has no Status field",
        ),
        (
            b"Package: a\nStatus: install ok installed\n",
            1,
            "installed package a has no Version field",
        ),
        (
            b"Package: a\nStatus: install ok installed\nVersion:\n",
            3,
            "field Version is empty",
        ),
        (
            b"Package: a\nStatus: install ok\nVersion: 1\n",
            2,
            "Status \"install ok\" is not `want flag state`",
        ),
        (
            b"Package: a\nStatus: install ok installed\nVersion: 1\n 2\n",
            3,
            "field Version spans several lines",
        ),
        (
            b"Package: a\nStatus: install ok installed\nVersion: \xff\n",
            3,
            "field Version is not valid UTF-8",
        ),
        (
            b"\nPackage: a\nStatus: install ok installed\nVersion: 1\nSource: x (1\n",
            5,
            "Source \"x (1\" is not `name` or `name (version)`",
        ),
        (
            b"Package: a\nStatus: install ok installed\nVersion: 1\nSource: x ()\n",
            4,
            "Source \"x ()\" is not `name` or `name (version)`",
        ),
        (
            b"Package: a\nStatus: install ok installed\nVersion: 1\n\nwhat\n",
            5,
            "expected `Field: value`",
        ),
    ];
    for (data, line, reason) in cases {
        assert_eq!(malformed(data), (*line, reason.to_string()), "{data:?}");
    }
    let err = parse_status("/var/lib/dpkg/status", b"Package: a\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/var/lib/dpkg/status:1: package a has no Status field"
    );
}

#[test]
fn malformed_status_d_names_the_file() {
    let files = [
        (
            "/var/lib/dpkg/status.d/ok",
            b"Package: ok\nVersion: 1\n".as_slice(),
        ),
        ("/var/lib/dpkg/status.d/bad", b"Package: bad\n".as_slice()),
    ];
    let err = parse_status_dir(files).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/var/lib/dpkg/status.d/bad:1: installed package bad has no Version field"
    );
}

#[test]
fn source_version_only_when_it_differs() {
    let data = b"Package: a\nStatus: install ok installed\nVersion: 1-1\nSource: src (1-1)\n\n\
Package: b\nStatus: install ok installed\nVersion: 1-1+b2\nSource: src  ( 1-1 )\n";
    let packages = parse_status("s", data).unwrap();
    assert_eq!(packages[0].source_name.as_deref(), Some("src"));
    assert_eq!(packages[0].source_version, None);
    assert_eq!(packages[1].source_version.as_deref(), Some("1-1"));
    assert_eq!(packages[1].architecture, None);
}

#[test]
fn garbage_never_panics() {
    let mut data = STATUS.to_vec();
    for cut in (0..data.len()).step_by(37) {
        let _ = parse_status("s", &data[..cut]);
    }
    for i in (0..data.len()).step_by(53) {
        data[i] ^= 0x5a;
        let _ = parse_status("s", &data);
    }
}

/// The host's own dpkg database against `dpkg-query`; skipped where there is none.
#[test]
fn agrees_with_host_dpkg_query() {
    let Ok(data) = std::fs::read(STATUS_PATH) else {
        eprintln!("no {STATUS_PATH} on this host; skipping");
        return;
    };
    let Ok(out) = Command::new("dpkg-query")
        .args([
            "-W",
            "-f",
            "${Package} ${Architecture} ${Version} ${db:Status-Abbrev}\n",
        ])
        .output()
    else {
        return;
    };
    let want: BTreeSet<(String, String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Second letter of the abbreviation is the state: installed, Unpacked,
            // half-conFigured, triggers-aWaited, triggers-pending.
            let on_disk = f.get(3).is_some_and(|s| "iUFWt".contains(&s[1..2]));
            on_disk.then(|| (f[0].to_owned(), f[1].to_owned(), f[2].to_owned()))
        })
        .collect();
    let got: BTreeSet<(String, String, String)> = parse_status(STATUS_PATH, &data)
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.architecture.unwrap_or_default(), p.version))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}
