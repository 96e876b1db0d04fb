//! Alpine version ordering tables: a sorted list checked pair by pair, edge cases (many
//! from real Alpine packages), and invalid versions. Every row was checked against
//! apk-tools' own `apk_version_compare` / `apk_version_validate` (`src/version.c`, built
//! outside this repository) when the tables were written.

use std::cmp::Ordering;

use super::{compare, ApkVersion};
use crate::pkgs::conformance::{assert_invalid, assert_pairs, assert_sorted, SortedGroups};
use crate::pkgs::Ecosystem;

/// Ascending; versions on one row are equal.
const SORTED: SortedGroups = &[
    &["0"],
    &["0.0"],
    &["0.00"],
    &["0.001"],
    &["0.01"],
    &["0.09"],
    &["0.1_alpha_alpha"],
    &["0.1_alpha_pre2"],
    &["0.1_alpha"],
    &["0.1_alpha1"],
    &["0.1_alpha2"],
    &["0.1_alpha10"],
    &["0.1_alpha_p1"],
    &["0.1_beta"],
    &["0.1_beta1-r1"],
    &["0.1_beta2"],
    &["0.1_pre"],
    &["0.1_pre20230101"],
    &["0.1_rc"],
    &["0.1_rc1"],
    &["0.1_rc1-r5"],
    &["0.1_rc2"],
    &["0.1_rc10"],
    &["0.1", "00.1"],
    &["0.1-r0"],
    &["0.1-r1", "0.1-r01", "00.1-r001"],
    &["0.1-r2"],
    &["0.1-r10"],
    &["0.1~0"],
    &["0.1~0-r1"],
    &["0.1~0abc"],
    &["0.1~1"],
    &["0.1~abc"],
    &["0.1~abc-r0"],
    &["0.1~abd"],
    &["0.1_cvs"],
    &["0.1_cvs-r1"],
    &["0.1_svn"],
    &["0.1_git"],
    &["0.1_git20230101"],
    &["0.1_git20230102-r0"],
    &["0.1_hg"],
    &["0.1_p_alpha"],
    &["0.1_p"],
    &["0.1_p1", "0.1_p01", "0.1_p001"],
    &["0.1_p1_p1"],
    &["0.1_p2"],
    &["0.1_p10"],
    &["0.1a_alpha"],
    &["0.1a"],
    &["0.1a-r1"],
    &["0.1a_p1"],
    &["0.1b"],
    &["0.1z"],
    &["0.1.0_alpha"],
    &["0.1.0"],
    &["0.1.0-r1"],
    &["0.1.0a"],
    &["0.1.0.0"],
    &["0.1.00"],
    &["0.1.01"],
    &["0.1.1"],
    &["0.1.2"],
    &["0.1.10"],
    &["0.2"],
    &["0.9"],
    &["0.10"],
    &["0.99"],
    &["1_rc1"],
    &["1"],
    &["1-r1"],
    &["1.0_alpha"],
    &["1.0_beta"],
    &["1.0_pre"],
    &["1.0_rc"],
    &["1.0", "01.0", "001.0"],
    &["1.0_p1"],
    &["1.0a"],
    &["1.0b"],
    &["1.0.1"],
    &["1.01"],
    &["1.1"],
    &["1.2.3"],
    &["1.2.3-r0"],
    &["1.2.3-r1"],
    &["1.2.3_git20230101-r0"],
    &["1.2.3_p1-r0"],
    &["1.2.3.4"],
    &["1.2.10"],
    &["1.10"],
    &["2"],
    &["2.0"],
    &["10"],
    &["20230101"],
];

const PAIRS: &[(&str, &str, &str)] = &[
    ("1.0_alpha", "<", "1.0_beta"),
    ("1.0_beta", "<", "1.0_pre"),
    ("1.0_pre", "<", "1.0_rc"),
    ("1.0_rc", "<", "1.0"),
    ("1.0", "<", "1.0_p1"),
    ("1.0_alpha", "<", "1.0_p1"),
    ("1.0_rc1", "<", "1.0_cvs"),
    ("1.0_cvs", "<", "1.0_svn"),
    ("1.0_svn", "<", "1.0_git"),
    ("1.0_git", "<", "1.0_hg"),
    ("1.0_hg", "<", "1.0_p"),
    ("1.0a", "<", "1.0b"),
    ("1.0", "<", "1.0a"),
    ("1.0", "<", "1.0.1"),
    ("1.0a", "<", "1.0.1"),
    ("1.0-r1", "<", "1.0-r2"),
    ("1.0-r9", "<", "1.0-r10"),
    ("1.0", "<", "1.0-r0"),
    ("1.2.3_git20230101-r0", ">", "1.2.3"),
    ("1.2.3_git20230101-r0", ">", "1.2.3-r5"),
    ("1.2.3_git20230101-r0", "<", "1.2.3_git20230102-r0"),
    ("1.2.3_git20230101-r1", ">", "1.2.3_git20230101-r0"),
    ("1.2.3_git20230101-r0", "<", "1.2.4"),
    ("1.01", "<", "1.1"),
    ("1.01", "<", "1.10"),
    ("1.001", "<", "1.01"),
    ("1.0", "<", "1.00"),
    ("1.1", ">", "1.09"),
    ("1.2", ">", "1.02"),
    ("1.10", ">", "1.9"),
    ("8.2.0", "<", "8.2.001"),
    ("8.2.0015", "<", "8.2.002"),
    ("1.0_alpha_pre2", "<", "1.0_alpha"),
    ("1.0_alpha_p1", ">", "1.0_alpha"),
    ("1.0_alpha2", ">", "1.0_alpha"),
    ("1.0_rc1", ">", "1.0_rc"),
    ("1.0_rc10", ">", "1.0_rc9"),
    ("1.0_p10", ">", "1.0_p9"),
    ("1.0_p01", "=", "1.0_p1"),
    ("1.3_pre1-r1", "<", "1.3.2"),
    ("2.9.11_pre20051101-r2", "<", "2.9.11_pre20051101-r3"),
    (
        "1.0.0_pre20191002222144-r0",
        "<",
        "1.0.0_pre20210530193627-r0",
    ),
    ("6.0_pre1", "<", "6.0"),
    ("6.0_p1", ">", "6.0"),
    ("1.0~1234", "<", "1.0~2345"),
    ("1.0~1234-r1", "<", "1.0~2345-r0"),
    ("1.0~1234-r1", ">", "1.0~1234-r0"),
    ("1.0~abc", ">", "1.0-r100"),
    ("1.0~abc", "<", "1.0_cvs"),
    ("1.0~abc", "<", "1.0~abc0"),
    ("2.3.0b-r1", "<", "2.3.0b-r2"),
    ("2.5.1-r8", "<", "2.5.1a-r1"),
    ("1.7", "<", "1.7b"),
    ("0.9.8c-r1", "<", "0.9.8d"),
    ("20050718-r1", "<", "20050718-r2"),
    ("3.0.20060720", "<", "20060720"),
    ("021109-r3", "<", "20060512"),
    ("006", ">", "1.0.0"),
    ("2.12r-r4", "<", "2.12r-r5"),
    ("0.59s-r11", "<", "0.65"),
    ("7.0.17", "<", "7.0.174"),
    ("1.2.12.04", "<", "1.2.12.05"),
    ("1.2.07.8", "<", "1.2.12.04"),
    ("22.7-r1", "<", "22.7.3-r1"),
    ("0.20070118", "<", "0.20070207_rc1"),
    ("1.23", "<", "1.23-r1"),
    ("3.3.2-r1", ">", "3.3.1-r3"),
    ("1.36.1-r29", "<", "1.36.1-r30"),
    ("2.40.0-r0", ">", "2.39.4-r0"),
    ("3.0.14-r0", "<", "3.0.15-r0"),
    ("8.9.1-r1", "<", "8.9.1-r2"),
    ("1.2.3", "=", "1.2.3"),
    ("1.2.3-r1", "=", "1.2.3-r01"),
    ("00.1", "=", "0.1"),
    ("9999999999999999999", "<", "10000000000000000000"),
];

const INVALID: &[&str] = &[
    "",
    " 1.0",
    "1.0 ",
    "1. 0",
    "1.0\n",
    "1.0é",
    "a",
    "v1.0",
    ".1",
    "_pre1",
    "-r1",
    "~abc",
    "1.",
    "1..0",
    "1.0.",
    "1.0bc",
    "1a1",
    "1a.1",
    "1A",
    "1.0A",
    "1_foo",
    "1_foo1",
    "1_",
    "1__alpha",
    "1_1_alpha",
    "1_ALPHA",
    "1_alphabet",
    "1-r",
    "1-r1_pre1",
    "1-r1_p3_pre1",
    "1-r1-r2",
    "1-r1.1",
    "1-pre1",
    "1-1",
    "1~",
    "1~xyz",
    "1~ABC",
    "1~abc_pre1",
    "1-r1~abc",
    "1~abc~def",
    "1,0",
    "1.0+1",
    "1.0a_p1a",
];

#[test]
fn sorted_table_holds_for_every_pair() {
    let checked = assert_sorted(Ecosystem::Apk, SORTED);
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn edge_cases() {
    assert_pairs(Ecosystem::Apk, PAIRS);
}

#[test]
fn invalid_versions_are_errors_not_panics() {
    assert_invalid(Ecosystem::Apk, INVALID, "1.0-r0");
}

#[test]
fn errors_say_where() {
    let reason = |v: &str| ApkVersion::parse(v).unwrap_err().reason;
    assert_eq!(reason(""), "version is empty");
    assert_eq!(reason("v1"), "version does not start with a digit");
    assert_eq!(reason("1.0bc"), r#"unexpected "c" at byte 4"#);
    assert_eq!(reason("1_foo"), r#"unexpected "_foo" at byte 1"#);
    assert_eq!(reason("1.0-r1-r2"), r#"unexpected "-r2" at byte 6"#);
    let err = compare("1.0", "1.0-pre1").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid apk version "1.0-pre1": unexpected "-pre1" at byte 3"#
    );
}

/// apk-tools keeps numbers in a `uint64_t` and wraps past 20 digits; here they compare by
/// value (see the module doc).
#[test]
fn numbers_of_any_length_compare_exactly() {
    let cmp = |a: &str, b: &str| compare(a, b).unwrap();
    assert_eq!(
        cmp("18446744073709551616", "18446744073709551615"),
        Ordering::Greater
    );
    assert_eq!(
        cmp("1.0_p18446744073709551616", "1.0_p1"),
        Ordering::Greater
    );
    assert_eq!(
        cmp("1.0-r00000000000000000000000001", "1.0-r1"),
        Ordering::Equal
    );
}

/// apk's comparison is defined for any bytes; the internal walk must never panic, not
/// even on input the grammar rejects, and must agree with itself both ways round.
#[test]
fn comparison_is_total_on_garbage() {
    let samples = [
        "",
        "1",
        "1.",
        "1.0",
        "1.0a",
        "1.0ab",
        "1_",
        "1_p",
        "1_p1",
        "1~",
        "1~a",
        "1-",
        "1-r",
        "1-r1",
        "é",
        "1.é",
        "_",
        "~",
        "-",
        ".",
        "1.0_alpha_",
        "1__",
        "0.",
        "00",
        "1a1",
    ];
    for a in samples {
        for b in samples {
            let ab = super::compare_tokens(a, b);
            assert_eq!(ab, super::compare_tokens(b, a).reverse(), "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn parsed_versions_sort() {
    let mut versions: Vec<ApkVersion> = ["1.0-r1", "1.0_rc1", "1.0", "0.9_p2", "1.0_p1"]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    versions.sort();
    let sorted: Vec<&str> = versions.iter().map(ApkVersion::as_str).collect();
    assert_eq!(sorted, ["0.9_p2", "1.0_rc1", "1.0", "1.0-r1", "1.0_p1"]);
    assert_eq!(
        ApkVersion::parse("1.0-r01").unwrap(),
        ApkVersion::parse("1.0-r1").unwrap()
    );
}
