//! os-release fixtures from the images patchpull meets, and the shell quoting rules.

use super::{parse, parse_fields};
use crate::pkgs::{Ecosystem, InventoryError, OsRelease};

fn os(
    id: &str,
    like: &[&str],
    version: Option<&str>,
    codename: Option<&str>,
    pretty: &str,
) -> OsRelease {
    OsRelease {
        id: id.into(),
        id_like: like.iter().map(|s| s.to_string()).collect(),
        version_id: version.map(Into::into),
        version_codename: codename.map(Into::into),
        pretty_name: Some(pretty.into()),
    }
}

#[test]
fn real_images() {
    let cases: &[(&[u8], OsRelease, Option<Ecosystem>)] = &[
        (
            include_bytes!("../testdata/os-release/debian-12"),
            os(
                "debian",
                &[],
                Some("12"),
                Some("bookworm"),
                "Debian GNU/Linux 12 (bookworm)",
            ),
            Some(Ecosystem::Dpkg),
        ),
        (
            include_bytes!("../testdata/os-release/debian-trixie"),
            os(
                "debian",
                &[],
                None,
                Some("trixie"),
                "Debian GNU/Linux trixie/sid",
            ),
            Some(Ecosystem::Dpkg),
        ),
        (
            include_bytes!("../testdata/os-release/distroless-debian-12"),
            os("debian", &[], Some("12"), Some("bookworm"), "Distroless"),
            Some(Ecosystem::Dpkg),
        ),
        (
            include_bytes!("../testdata/os-release/ubuntu-22.04"),
            os(
                "ubuntu",
                &["debian"],
                Some("22.04"),
                Some("jammy"),
                "Ubuntu 22.04.4 LTS",
            ),
            Some(Ecosystem::Dpkg),
        ),
        (
            include_bytes!("../testdata/os-release/alpine-3.20"),
            os("alpine", &[], Some("3.20.3"), None, "Alpine Linux v3.20"),
            Some(Ecosystem::Apk),
        ),
        (
            include_bytes!("../testdata/os-release/azurelinux-3.0"),
            os(
                "azurelinux",
                &[],
                Some("3.0"),
                None,
                "Microsoft Azure Linux 3.0",
            ),
            Some(Ecosystem::Rpm),
        ),
        (
            include_bytes!("../testdata/os-release/mariner-2.0"),
            os("mariner", &[], Some("2.0"), None, "CBL-Mariner/Linux"),
            Some(Ecosystem::Rpm),
        ),
    ];
    for (data, want, ecosystem) in cases {
        let got = parse("/etc/os-release", data).unwrap();
        assert_eq!(&got, want);
        assert_eq!(Ecosystem::for_os(&got), *ecosystem, "{}", got.id);
    }
}

#[test]
fn ecosystem_falls_back_to_id_like() {
    let os = parse("o", b"ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n").unwrap();
    assert_eq!(os.id_like, ["ubuntu", "debian"]);
    assert_eq!(Ecosystem::for_os(&os), Some(Ecosystem::Dpkg));
    let os = parse("o", b"ID=rocky\nID_LIKE=\"rhel centos fedora\"\n").unwrap();
    assert_eq!(Ecosystem::for_os(&os), Some(Ecosystem::Rpm));
    let os = parse("o", b"ID=arch\n").unwrap();
    assert_eq!(Ecosystem::for_os(&os), None);
    assert_eq!(Ecosystem::for_os(&OsRelease::default()), None);
}

#[test]
fn quoting_and_escapes() {
    let data = br#"
# a comment
  INDENTED=yes
DOUBLE="a \"quoted\" \\ \$HOME \`x\` \n"
SINGLE='it''s \n "raw"'
BARE=plain\ text\"
MIXED="x"'y'z
EMPTY=
EMPTY_QUOTED=""
SPACES=a b c   
TWICE=1
TWICE=2
CRLF="dos"
"#;
    let fields = parse_fields("o", data).unwrap();
    let get = |k: &str| fields.get(k).map(String::as_str);
    assert_eq!(get("INDENTED"), Some("yes"));
    assert_eq!(get("DOUBLE"), Some(r#"a "quoted" \ $HOME `x` \n"#));
    assert_eq!(get("SINGLE"), Some(r#"its \n "raw""#));
    assert_eq!(get("BARE"), Some(r#"plain text""#));
    assert_eq!(get("MIXED"), Some("xyz"));
    assert_eq!(get("EMPTY"), Some(""));
    assert_eq!(get("EMPTY_QUOTED"), Some(""));
    assert_eq!(get("SPACES"), Some("a b c"));
    assert_eq!(get("TWICE"), Some("2"));
    assert_eq!(fields.len(), 10);
    let crlf = parse_fields("o", b"ID=alpine\r\nVERSION_ID=\"3.20\"\r\n").unwrap();
    assert_eq!(crlf.get("VERSION_ID").map(String::as_str), Some("3.20"));
}

#[test]
fn empty_values_are_none() {
    let os = parse("o", b"ID=\"\"\nVERSION_ID=\nPRETTY_NAME=''\n").unwrap();
    assert_eq!(os, OsRelease::default());
    assert_eq!(parse("o", b"").unwrap(), OsRelease::default());
}

#[test]
fn codename_from_version() {
    let cases = [
        ("VERSION=\"12 (bookworm)\"", Some("bookworm")),
        (
            "VERSION=\"Debian GNU/Linux 11 (bullseye)\"",
            Some("bullseye"),
        ),
        ("VERSION=\"22.04.4 LTS (Jammy Jellyfish)\"", None),
        ("VERSION=\"3.0.20240727\"", None),
        ("VERSION=\"1 ()\"", None),
        ("VERSION=\"1 (Bookworm)\"", None),
        (
            "VERSION=\"12 (bookworm)\"\nVERSION_CODENAME=trixie",
            Some("trixie"),
        ),
        ("UBUNTU_CODENAME=noble", Some("noble")),
    ];
    for (data, want) in cases {
        let os = parse("o", data.as_bytes()).unwrap();
        assert_eq!(os.version_codename.as_deref(), want, "{data}");
    }
}

#[test]
fn malformed_files_name_the_line() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"ID=debian\nnot a field\n", 2, "expected `KEY=value`"),
        (b"ID=debian\n=x\n", 2, "invalid key \"\""),
        (b"1D=x\n", 1, "invalid key \"1D\""),
        (b"MY-KEY=x\n", 1, "invalid key \"MY-KEY\""),
        (
            b"ID=debian\nNAME=\"Debian\n",
            2,
            "unterminated double quote",
        ),
        (b"NAME='Debian\n", 1, "unterminated single quote"),
        (b"NAME=\"a\\\n", 1, "unterminated double quote"),
        (b"ID=debian\n\nNAME=\xff\n", 3, "not valid UTF-8"),
    ];
    for (data, line, reason) in cases {
        match parse("/usr/lib/os-release", data).unwrap_err() {
            InventoryError::Malformed {
                path,
                line: l,
                reason: r,
            } => {
                assert_eq!(path, "/usr/lib/os-release");
                assert_eq!((l, r.as_str()), (*line, *reason), "{data:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The host's own os-release parses (it is real-world input); skipped where absent.
#[test]
fn host_os_release_parses() {
    for path in super::PATHS {
        if let Ok(data) = std::fs::read(path) {
            let os = parse(path, &data).unwrap();
            assert!(!os.id.is_empty(), "{path}");
        }
    }
}
