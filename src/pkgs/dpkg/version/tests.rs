//! Debian version ordering tables: a sorted list checked pair by pair, hand-picked edge
//! cases, invalid versions, and a cross-check against the host's `dpkg --compare-versions`.

use std::cmp::Ordering;
use std::process::Command;

use super::{compare, DebVersion};
use crate::pkgs::conformance::{assert_invalid, assert_pairs, assert_sorted, SortedGroups};
use crate::pkgs::Ecosystem;

/// Ascending; versions on one row are equal. Checked against dpkg 1.21 when written.
const SORTED: SortedGroups = &[
    &["0"],
    &["0.1"],
    &["0.9~rc1"],
    &["0.9", "0.9-0", "0:0.9"],
    &["0.9-1"],
    &["0.9-1+b1"],
    &["0.9-2"],
    &["0.10"],
    &["1~~"],
    &["1~~a"],
    &["1~"],
    &["1", "1-0", "0:1", "0:1-0", "00:1"],
    &["1-0.1"],
    &["1-1~bpo1"],
    &["1-1"],
    &["1-1a"],
    &["1-1+b1"],
    &["1-1.1"],
    &["1-2"],
    &["1-10"],
    &["1.0~alpha"],
    &["1.0~alpha1"],
    &["1.0~beta"],
    &["1.0~rc1"],
    &["1.0~rc1+dfsg"],
    &["1.0~rc2"],
    &["1.0", "1.0-0", "0:1.0", "1.00"],
    &["1.0-1~deb12u1"],
    &["1.0-1"],
    &["1.0-1+b1"],
    &["1.0-1+deb12u1"],
    &["1.0-1+deb12u2"],
    &["1.0-1+deb12u10"],
    &["1.0-1.1"],
    &["1.0-2~bpo12+1"],
    &["1.0-2"],
    &["1.0-10"],
    &["1.0A"],
    &["1.0a"],
    &["1.0b"],
    &["1.0z"],
    &["1.0+dfsg"],
    &["1.0+dfsg-1"],
    &["1.0+dfsg1-1"],
    &["1.0+really0.9-1"],
    &["1.0.0"],
    &["1.0.1~rc1"],
    &["1.0.1"],
    &["1.0.1-1"],
    &["1.0.1.1"],
    &["1.0.2"],
    &["1.1~rc1"],
    &["1.1"],
    &["1.2"],
    &["1.2.3-4ubuntu0.1"],
    &["1.2.3-4ubuntu1"],
    &["1.9"],
    &["1.10"],
    &["1.10.1"],
    &["1.100"],
    &["1.99999999999999999999999"],
    &["2"],
    &["2.0"],
    &["10"],
    &["100"],
    &["20231231"],
    &["1:0", "1:0-0", "01:0"],
    &["1:0.1"],
    &["1:1.0-1"],
    &["2:0~rc1"],
    &["2:0"],
    &["10:1"],
];

/// Edge cases from real archives and from `deb-version(7)`.
const PAIRS: &[(&str, &str, &str)] = &[
    // Tilde sorts before everything, even the end.
    ("1.0~rc1", "<", "1.0"),
    ("1.0~~", "<", "1.0~"),
    ("1.0~~a", "<", "1.0~"),
    ("1.0~", "<", "1.0"),
    ("1.0~rc1-1", "<", "1.0-1"),
    ("1.0-1~bpo1", "<", "1.0-1"),
    // Security updates and stable point releases.
    ("2.36-9+deb12u4", "<", "2.36-9+deb12u7"),
    ("2.36-9+deb12u9", "<", "2.36-9+deb12u10"),
    ("3.0.11-1~deb12u2", "<", "3.0.13-1~deb12u1"),
    ("3.0.13-1~deb12u1", "<", "3.0.15-1~deb12u1"),
    ("7.88.1-10+deb12u5", "<", "7.88.1-10+deb12u8"),
    ("1.2.13.dfsg-1", "<", "1:1.2.13.dfsg-1"),
    ("252.22-1~deb12u1", "<", "252.30-1~deb12u2"),
    ("2.35-0ubuntu3.6", "<", "2.35-0ubuntu3.8"),
    ("3.0.2-0ubuntu1.15", "<", "3.0.2-0ubuntu1.18"),
    ("1.21.1ubuntu2", "<", "1.21.1ubuntu2.3"),
    ("9.0.0-1ubuntu1", ">", "9.0.0-1"),
    // Binary NMUs and backports.
    ("1.0-1", "<", "1.0-1+b1"),
    ("1.0-1+b1", "<", "1.0-1+b2"),
    ("1.0-1+b9", "<", "1.0-1+b10"),
    ("1.0-1+b1", "<", "1.0-1.1"),
    ("1.0-1~bpo12+1", "<", "1.0-1"),
    // Epochs dominate.
    ("1:0.1", ">", "9.9.9"),
    ("1:1.0", "<", "2:0.1"),
    ("0:1.0", "=", "1.0"),
    ("1:1.0", "=", "001:1.0"),
    ("2147483647:1", ">", "2147483646:9"),
    // Revisions: absent equals "0".
    ("1.0", "=", "1.0-0"),
    ("1.0", "<", "1.0-0.1"),
    ("1.0", "<", "1.0-1"),
    ("1.0-0", "<", "1.0-00.1"),
    ("1.0-a", ">", "1.0"),
    ("1.0-a", ">", "1.0-1"),
    // Letters sort before non-letters, and after the end.
    ("1.0", "<", "1.0a"),
    ("1.0a", "<", "1.0b"),
    ("1.0A", "<", "1.0a"),
    ("1.0Z", "<", "1.0a"),
    ("1.0a", "<", "1.0+"),
    ("1.0a", "<", "1.0."),
    ("1.0+", "<", "1.0."),
    ("1.0+", "<", "1.0-1-1"),
    ("1.0z", "<", "1.0.0"),
    ("1.0-1a", "<", "1.0-1+"),
    // Digits compare as numbers; leading zeros do not count.
    ("1.2", "<", "1.10"),
    ("1.02", "=", "1.2"),
    ("1.002", "=", "1.2"),
    ("1.0010", "=", "1.10"),
    ("1.9", "<", "1.10"),
    ("10", ">", "9"),
    (
        "1.99999999999999999999998",
        "<",
        "1.99999999999999999999999",
    ),
    ("1.18446744073709551616", ">", "1.18446744073709551615"),
    // Digit runs against non-digit runs.
    ("1.0", "<", "1.0.0"),
    ("1.0.0", "<", "1.0.0.0"),
    ("1a", "<", "1.0"),
    ("1-1", "<", "1.0"),
    // Colons and hyphens inside the upstream version.
    ("1:1.0:1", ">", "1:1.0"),
    ("1.0-1-1", ">", "1.0-1"),
    ("1.0-1-1", "<", "1.0-2-1"),
    ("2.0-rc1-1", ">", "2.0-1"),
    // Same string.
    ("1.2.3-4+deb12u5", "=", "1.2.3-4+deb12u5"),
    ("1:2.3~rc4-5+b6", "=", "1:2.3~rc4-5+b6"),
];

const INVALID: &[&str] = &[
    "",
    " ",
    " 1.0",
    "1.0 ",
    "1. 0",
    "1.0\t",
    "a1.0",
    "~1.0",
    ".1",
    "1.0_1",
    "1.0/1",
    "1.0@1",
    "1.0é",
    ":1.0",
    "1:",
    "a:1.0",
    "1.0:1",
    "-1:1.0",
    "1:-1",
    "2147483648:1.0",
    "99999999999999999999:1.0",
    "1.0-",
    "-1",
    "1:1.0-",
    "1.0-1_2",
    "1.0-1:2",
    "1.0-a:b",
    "2-1:1",
];

#[test]
fn sorted_table_holds_for_every_pair() {
    let checked = assert_sorted(Ecosystem::Dpkg, SORTED);
    assert!(checked > 5000, "{checked}");
}

#[test]
fn edge_cases() {
    assert_pairs(Ecosystem::Dpkg, PAIRS);
}

#[test]
fn invalid_versions_are_errors_not_panics() {
    assert_invalid(Ecosystem::Dpkg, INVALID, "1.0-1");
}

#[test]
fn errors_say_what_is_wrong() {
    let reason = |v: &str| DebVersion::parse(v).unwrap_err().reason;
    assert_eq!(reason("1.0-"), "revision is empty");
    assert_eq!(reason("1:"), "nothing after the epoch's colon");
    assert_eq!(reason("x:1"), "epoch is not a number");
    assert_eq!(reason("a1"), "upstream version does not start with a digit");
    assert_eq!(reason("1.0_1"), "invalid character in upstream version");
    let err = compare("1.0", "1.0-").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid dpkg version "1.0-": revision is empty"#
    );
}

#[test]
fn parts_are_split_like_dpkg() {
    let v = DebVersion::parse("1:2.0-rc1-3+b1").unwrap();
    assert_eq!(v.epoch(), 1);
    assert_eq!(v.upstream(), "2.0-rc1");
    assert_eq!(v.revision(), Some("3+b1"));
    assert_eq!(v.to_string(), "1:2.0-rc1-3+b1");
    let v: DebVersion = "1.0".parse().unwrap();
    assert_eq!((v.epoch(), v.revision()), (0, None));
}

/// Every version in [`SORTED`] against a spread of others, asked of the real dpkg. Skipped
/// (with a note) where dpkg is not installed.
#[test]
fn agrees_with_host_dpkg() {
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("dpkg not installed; skipping the cross-check");
        return;
    }
    let flat: Vec<&str> = SORTED.iter().flat_map(|g| g.iter().copied()).collect();
    let mut pairs: Vec<(&str, &str)> = PAIRS.iter().map(|&(a, _, b)| (a, b)).collect();
    for (i, a) in flat.iter().enumerate() {
        for b in flat.iter().skip(i).step_by(7) {
            pairs.push((a, b));
        }
    }
    for (a, b) in &pairs {
        let op = match compare(a, b).unwrap() {
            Ordering::Less => "lt",
            Ordering::Equal => "eq",
            Ordering::Greater => "gt",
        };
        let out = Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .output()
            .unwrap();
        assert!(out.status.success(), "dpkg disagrees: {a} {op} {b}");
        assert!(out.stderr.is_empty(), "dpkg warned on {a} / {b}");
    }
    assert!(pairs.len() > 300, "{}", pairs.len());
}

/// dpkg itself refuses (error, not a warning) the structurally broken ones.
#[test]
fn host_dpkg_also_refuses_broken_versions() {
    if Command::new("dpkg").arg("--version").output().is_err() {
        return;
    }
    for v in [
        "1:",
        "a:1.0",
        "1.0:1",
        "1.0-",
        "-1",
        "2147483648:1.0",
        "1:1.0-",
    ] {
        let out = Command::new("dpkg")
            .args(["--compare-versions", v, "eq", v])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "dpkg accepted {v:?}");
    }
}
