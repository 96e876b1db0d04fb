//! RPM version ordering tables: a sorted list checked pair by pair, rpm's own
//! `rpmvercmp` test cases, EVR edge cases, invalid versions, and a cross-check against the
//! host's rpm where it is installed.

use std::cmp::Ordering;
use std::process::Command;

use super::{compare, RpmVersion};
use crate::pkgs::conformance::{assert_invalid, assert_pairs, assert_sorted, SortedGroups};
use crate::pkgs::Ecosystem;

/// Ascending; versions on one row are equal. Checked against rpm 4.18's `rpm.ver`
/// comparison when written.
const SORTED: SortedGroups = &[
    &["xyz-1"],
    &["xyz.4-1"],
    &["0.1-1"],
    &["0.9-1"],
    &["1.0~rc1-1"],
    &["1.0~rc1^git1-1"],
    &["1.0~rc2-1"],
    &["1.0", "0:1.0", "1.00", "01.0"],
    &["1.0-0.1.rc3"],
    &["1.0-1", "0:1.0-1", "1.0-01", "1_0-1", "1+0-1"],
    &["1.0-1a"],
    &["1.0-1.el8"],
    &["1.0-1.el8_5"],
    &["1.0-1.el8_10"],
    &["1.0-1.1"],
    &["1.0-2.cm2"],
    &["1.0-10.azl3"],
    &["1.0^-1"],
    &["1.0^git1-1"],
    &["1.0^git1^1-1"],
    &["1.0^git2-1"],
    &["1.0^20160101-1"],
    &["1.0a-1"],
    &["1.0aa-1"],
    &["1.0b-1"],
    &["1.0.1~rc1-1"],
    &["1.0.1-1"],
    &["1.1-1"],
    &["1.01.1-1"],
    &["1.9-1"],
    &["1.10-1"],
    &["1.99999999999999999999-1"],
    &["2-1"],
    &["2.0-1"],
    &["10-1"],
    &["1:0.1-1", "01:0.1-1"],
    &["1:1.0-1"],
    &["2:0-1"],
    &["10:0-1"],
];

/// rpm's `tests/rpmvercmp.at` cases (`RPMVERCMP(a, b, result)`), compared as versions
/// without epoch or release; the commented-out "oddities" there are left out.
const RPMVERCMP: &[(&str, &str, &str)] = &[
    ("1.0", "=", "1.0"),
    ("1.0", "<", "2.0"),
    ("2.0", ">", "1.0"),
    ("2.0.1", "=", "2.0.1"),
    ("2.0", "<", "2.0.1"),
    ("2.0.1", ">", "2.0"),
    ("2.0.1a", "=", "2.0.1a"),
    ("2.0.1a", ">", "2.0.1"),
    ("2.0.1", "<", "2.0.1a"),
    ("5.5p1", "=", "5.5p1"),
    ("5.5p1", "<", "5.5p2"),
    ("5.5p2", ">", "5.5p1"),
    ("5.5p10", "=", "5.5p10"),
    ("5.5p1", "<", "5.5p10"),
    ("5.5p10", ">", "5.5p1"),
    ("10xyz", "<", "10.1xyz"),
    ("10.1xyz", ">", "10xyz"),
    ("xyz10", "=", "xyz10"),
    ("xyz10", "<", "xyz10.1"),
    ("xyz10.1", ">", "xyz10"),
    ("xyz.4", "=", "xyz.4"),
    ("xyz.4", "<", "8"),
    ("8", ">", "xyz.4"),
    ("xyz.4", "<", "2"),
    ("2", ">", "xyz.4"),
    ("5.5p2", "<", "5.6p1"),
    ("5.6p1", ">", "5.5p2"),
    ("5.6p1", "<", "6.5p1"),
    ("6.5p1", ">", "5.6p1"),
    ("6.0.rc1", ">", "6.0"),
    ("6.0", "<", "6.0.rc1"),
    ("10b2", ">", "10a1"),
    ("10a2", "<", "10b2"),
    ("1.0aa", "=", "1.0aa"),
    ("1.0a", "<", "1.0aa"),
    ("1.0aa", ">", "1.0a"),
    ("10.0001", "=", "10.0001"),
    ("10.0001", "=", "10.1"),
    ("10.1", "=", "10.0001"),
    ("10.0001", "<", "10.0039"),
    ("10.0039", ">", "10.0001"),
    ("4.999.9", "<", "5.0"),
    ("5.0", ">", "4.999.9"),
    ("20101121", "=", "20101121"),
    ("20101121", "<", "20101122"),
    ("20101122", ">", "20101121"),
    ("2_0", "=", "2_0"),
    ("2.0", "=", "2_0"),
    ("2_0", "=", "2.0"),
    ("a", "=", "a"),
    ("a+", "=", "a+"),
    ("a+", "=", "a_"),
    ("a_", "=", "a+"),
    ("+a", "=", "+a"),
    ("+a", "=", "_a"),
    ("_a", "=", "+a"),
    ("+_", "=", "+_"),
    ("_+", "=", "+_"),
    ("_+", "=", "_+"),
    ("+", "=", "_"),
    ("_", "=", "+"),
    ("1.0~rc1", "=", "1.0~rc1"),
    ("1.0~rc1", "<", "1.0"),
    ("1.0", ">", "1.0~rc1"),
    ("1.0~rc1", "<", "1.0~rc2"),
    ("1.0~rc2", ">", "1.0~rc1"),
    ("1.0~rc1~git123", "=", "1.0~rc1~git123"),
    ("1.0~rc1~git123", "<", "1.0~rc1"),
    ("1.0~rc1", ">", "1.0~rc1~git123"),
    ("1.0^", "=", "1.0^"),
    ("1.0^", ">", "1.0"),
    ("1.0", "<", "1.0^"),
    ("1.0^git1", "=", "1.0^git1"),
    ("1.0^git1", ">", "1.0"),
    ("1.0", "<", "1.0^git1"),
    ("1.0^git1", "<", "1.0^git2"),
    ("1.0^git2", ">", "1.0^git1"),
    ("1.0^git1", "<", "1.01"),
    ("1.01", ">", "1.0^git1"),
    ("1.0^20160101", "=", "1.0^20160101"),
    ("1.0^20160101", "<", "1.0.1"),
    ("1.0.1", ">", "1.0^20160101"),
    ("1.0^20160101^git1", "=", "1.0^20160101^git1"),
    ("1.0^20160102", ">", "1.0^20160101^git1"),
    ("1.0^20160101^git1", "<", "1.0^20160102"),
    ("1.0~rc1^git1", "=", "1.0~rc1^git1"),
    ("1.0~rc1^git1", ">", "1.0~rc1"),
    ("1.0~rc1", "<", "1.0~rc1^git1"),
    ("1.0^git1~pre", "=", "1.0^git1~pre"),
    ("1.0^git1", ">", "1.0^git1~pre"),
    ("1.0^git1~pre", "<", "1.0^git1"),
];

/// Whole EVRs as images and advisories write them.
const EVR_PAIRS: &[(&str, &str, &str)] = &[
    ("1:1.0-1", ">", "2.0-1"),
    ("0:1.0-1", "=", "1.0-1"),
    ("1.0-1", "<", "1:0.1-1"),
    ("2:0-1", ">", "1:999-999"),
    ("1.0", "<", "1.0-1"),
    ("1.0", ">", "0.9-9"),
    ("1.0-1", "<", "1.0-2"),
    ("1.0-2", "<", "1.0-10"),
    ("1.0-9", "<", "1.0-10"),
    ("1.1.1k-7.el8_6", "<", "1.1.1k-12.el8_9"),
    ("3.0.7-25.el9_3", "<", "3.0.7-27.el9"),
    ("2.28-225.el9", "<", "2.28-225.el9_3.1"),
    ("2.28-225.el9_3", "<", "2.28-225.el9_3.1"),
    ("1.2.11-40.el9", ">", "1.2.11-39.el9"),
    ("2.35-2.cm2", "<", "2.35-4.cm2"),
    ("3.0.13-2.azl3", "<", "3.0.13-3.azl3"),
    ("1.3.1-1.azl3", ">", "1.3.0-5.azl3"),
    ("7.76.1-26.el9_3.2", "<", "7.76.1-26.el9_3.3"),
    ("7.76.1-26.el9_3.3", "<", "7.76.1-29.el9_4"),
    ("2.9.10-2.cm2", "<", "2.9.14-1.cm2"),
    ("5.1.0-1.fc38", "<", "5.1.0-1.fc39"),
    ("1.0~rc1-1", "<", "1.0-0"),
    ("1.0-1~bootstrap", "<", "1.0-1"),
    ("1.0-1^20230101", ">", "1.0-1"),
    ("4294967295:1", ">", "4294967294:9"),
    ("00001:1.0-1", "=", "1:1.0-1"),
];

const INVALID: &[&str] = &[
    "",
    " ",
    " 1.0-1",
    "1.0-1 ",
    "1.0 -1",
    "1.0-1\n",
    "1.0-é",
    ":1.0-1",
    "x:1.0-1",
    "1.0:1-1",
    "-1:1.0-1",
    "4294967296:1.0-1",
    "1:",
    "1:-1",
    "-1",
    "1.0-",
    "1.0-1-1",
    "1.0--1",
    "1.0-1:2",
    "1.0/2-1",
    "1.0-1,2",
    "1.0%{dist}-1",
];

#[test]
fn sorted_table_holds_for_every_pair() {
    let checked = assert_sorted(Ecosystem::Rpm, SORTED);
    assert!(checked > 2000, "{checked}");
}

#[test]
fn rpmvercmp_cases() {
    assert_pairs(Ecosystem::Rpm, RPMVERCMP);
}

#[test]
fn evr_edge_cases() {
    assert_pairs(Ecosystem::Rpm, EVR_PAIRS);
}

#[test]
fn invalid_versions_are_errors_not_panics() {
    assert_invalid(Ecosystem::Rpm, INVALID, "1.0-1");
}

#[test]
fn parts_and_errors() {
    let v = RpmVersion::parse("2:1.2.3-4.el9_3").unwrap();
    assert_eq!(
        (v.epoch(), v.version(), v.release()),
        (2, "1.2.3", Some("4.el9_3"))
    );
    assert_eq!(v.to_string(), "2:1.2.3-4.el9_3");
    let v: RpmVersion = "1.0".parse().unwrap();
    assert_eq!((v.epoch(), v.release()), (0, None));
    assert_eq!(v.to_string(), "1.0");
    let reason = |v: &str| RpmVersion::parse(v).unwrap_err().reason;
    assert_eq!(reason("1.0-1-1"), "more than one '-'");
    assert_eq!(reason("1.0-"), "release is empty");
    assert_eq!(reason("x:1"), "epoch is not a number");
    let err = compare("1.0-1", "1.0 -1").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid rpm version "1.0 -1": invalid character in version"#
    );
}

/// The sorted table, rpm's own cases and the EVR cases, asked of the host's rpm (4.16+
/// has `rpm.ver`) in one `rpm --eval`. Skipped (with a note) where rpm is not installed.
#[test]
fn agrees_with_host_rpm() {
    if Command::new("rpm").arg("--version").output().is_err() {
        eprintln!("rpm not installed; skipping the cross-check");
        return;
    }
    let flat: Vec<&str> = SORTED.iter().flat_map(|g| g.iter().copied()).collect();
    let mut pairs: Vec<(&str, &str)> = RPMVERCMP
        .iter()
        .chain(EVR_PAIRS)
        .map(|&(a, _, b)| (a, b))
        .collect();
    for a in &flat {
        for b in &flat {
            pairs.push((a, b));
        }
    }
    let list: Vec<String> = pairs
        .iter()
        .map(|(a, b)| format!("{{'{a}','{b}'}}"))
        .collect();
    let script = format!(
        "%{{lua: for _, p in ipairs({{{}}}) do \
         local a, b = rpm.ver(p[1]), rpm.ver(p[2]); \
         print((a < b and '<' or (a == b and '=' or '>')) .. ' ') end}}",
        list.join(",")
    );
    let out = Command::new("rpm")
        .args(["--eval", &script])
        .output()
        .unwrap();
    let answers: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        answers.len(),
        pairs.len(),
        "rpm said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ((a, b), answer) in pairs.iter().zip(&answers) {
        let ours = match compare(a, b).unwrap() {
            Ordering::Less => "<",
            Ordering::Equal => "=",
            Ordering::Greater => ">",
        };
        assert_eq!(ours, answer, "{a} vs {b}");
    }
}
