//! The release of real-looking databases: agreeing stamps name it, none or disagreeing
//! ones say why not.

use super::{infer, ReleaseUnknown};
use crate::pkgs::dpkg::db::{parse_status, STATUS_PATH};
use crate::pkgs::InstalledPackage;

/// `(package, source, version)`: one stanza of [`status`].
type Stanza<'a> = (&'a str, &'a str, &'a str);

/// A `status` file of `(package, source, version)` stanzas, as dpkg writes them.
fn status(packages: &[Stanza<'_>]) -> Vec<InstalledPackage> {
    let mut text = String::new();
    for (name, source, version) in packages {
        text.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\n\
             Installed-Size: 1234\nMaintainer: Debian Maintainers <pkg@example.org>\n\
             Architecture: amd64\nMulti-Arch: same\n"
        ));
        if !source.is_empty() {
            text.push_str(&format!("Source: {source}\n"));
        }
        text.push_str(&format!(
            "Version: {version}\nDepends: libc6 (>= 2.34)\nDescription: {name}\n the package\n\n"
        ));
    }
    parse_status(STATUS_PATH, text.as_bytes()).unwrap()
}

const BOOKWORM: &[Stanza<'_>] = &[
    ("apt", "", "2.6.1"),
    ("base-files", "", "12.4+deb12u10"),
    ("bash", "", "5.2.15-2+b7"),
    ("libc6", "glibc", "2.36-9+deb12u9"),
    ("libssl3", "openssl", "3.0.15-1~deb12u1"),
    ("tzdata", "", "2025a-0+deb12u1"),
    ("zlib1g", "zlib", "1:1.2.13.dfsg-1"),
];

#[test]
fn an_unambiguous_debian_12_database_is_bookworm() {
    let os = infer(&status(BOOKWORM)).unwrap();
    assert_eq!(os.id, "debian");
    assert_eq!(os.version_id.as_deref(), Some("12"));
    assert_eq!(os.version_codename.as_deref(), Some("bookworm"));
    assert!(
        os.pretty_name.as_deref().unwrap().contains("inferred from"),
        "{os:?}"
    );

    // Distroless keeps no base-files: the stable updates' stamps still say it.
    let without_base_files: Vec<_> = BOOKWORM
        .iter()
        .copied()
        .filter(|(name, ..)| *name != "base-files")
        .collect();
    let os = infer(&status(&without_base_files)).unwrap();
    assert_eq!(os.version_codename.as_deref(), Some("bookworm"));
}

#[test]
fn other_debian_and_ubuntu_releases() {
    let cases: &[(&[Stanza<'_>], &str, &str, &str)] = &[
        (
            &[
                ("base-files", "", "13.8+deb13u1"),
                ("libc6", "glibc", "2.41-12"),
            ],
            "debian",
            "13",
            "trixie",
        ),
        (
            &[
                ("libssl1.1", "openssl", "1.1.1w-0+deb11u2"),
                ("libc6", "glibc", "2.31-13+deb11u11"),
            ],
            "debian",
            "11",
            "bullseye",
        ),
        (
            &[
                ("base-files", "", "12ubuntu4.7"),
                ("libc6", "glibc", "2.35-0ubuntu3.9"),
            ],
            "ubuntu",
            "22.04",
            "jammy",
        ),
        (
            &[
                ("libc6", "glibc", "2.35-0ubuntu3.9"),
                ("libpython3.10-minimal", "python3.10", "3.10.12-1~22.04.9"),
                ("tzdata", "", "2025a-0ubuntu0.22.04"),
            ],
            "ubuntu",
            "22.04",
            "jammy",
        ),
        (
            &[
                ("base-files", "", "13ubuntu10.2"),
                ("ca-certificates", "", "20240203"),
            ],
            "ubuntu",
            "24.04",
            "noble",
        ),
        (
            &[
                ("base-files", "", "11ubuntu5.8"),
                ("binutils", "", "2.34-6ubuntu1.9"),
            ],
            "ubuntu",
            "20.04",
            "focal",
        ),
    ];
    for (packages, id, version_id, codename) in cases {
        let os = infer(&status(packages)).unwrap_or_else(|e| panic!("{packages:?}: {e}"));
        assert_eq!(
            (
                os.id.as_str(),
                os.version_id.as_deref(),
                os.version_codename.as_deref()
            ),
            (*id, Some(*version_id), Some(*codename)),
            "{packages:?}"
        );
    }
}

#[test]
fn mixed_releases_say_which_packages_disagree() {
    let mut packages = BOOKWORM.to_vec();
    packages.push(("libssl1.1", "openssl", "1.1.1w-0+deb11u2"));
    let err = infer(&status(&packages)).unwrap_err();
    assert!(matches!(err, ReleaseUnknown::Mixed { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("libssl1.1 1.1.1w-0+deb11u2 says Debian 11 (bullseye)"),
        "{text}"
    );
    assert!(text.contains("says Debian 12 (bookworm)"), "{text}");

    // A Debian stamp beside Ubuntu's packages.
    let err = infer(&status(&[
        ("libc6", "glibc", "2.36-9+deb12u9"),
        ("libcurl4", "curl", "7.81.0-1ubuntu1.20"),
    ]))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("libcurl4 7.81.0-1ubuntu1.20 is an Ubuntu package"),
        "{err}"
    );
}

#[test]
fn no_stamp_or_an_unknown_release_says_why() {
    let err = infer(&status(&[
        ("libfoo", "", "1.0-1"),
        ("bash", "", "5.2.15-2+b7"),
    ]))
    .unwrap_err();
    assert_eq!(
        err,
        ReleaseUnknown::NoStamp {
            packages: 2,
            ubuntu: false
        }
    );
    assert!(
        err.to_string()
            .contains("none of its 2 package versions names a release"),
        "{err}"
    );

    let err = infer(&status(&[("libc6", "glibc", "2.35-0ubuntu3.9")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("the versions are Ubuntu's, but not which release"),
        "{err}"
    );

    let err = infer(&status(&[("base-files", "", "9.9+deb9u13")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("Debian 9 (base-files 9.9+deb9u13), a release patchpull does not know"),
        "{err}"
    );
    // An Ubuntu base-files of a release not listed names nothing.
    let err = infer(&status(&[("base-files", "", "13ubuntu2")])).unwrap_err();
    assert!(
        matches!(err, ReleaseUnknown::NoStamp { ubuntu: true, .. }),
        "{err}"
    );
}
