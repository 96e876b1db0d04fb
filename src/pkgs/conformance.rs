//! The shared suite every ecosystem's version ordering runs (style rule 18): the same
//! checks over each ecosystem's own tables, so a property proven for one is proven for all.

use std::cmp::Ordering;

use super::{compare_versions, try_compare, validate_version, Ecosystem};

/// Versions in ascending order, in groups of versions that compare equal.
pub type SortedGroups = &'static [&'static [&'static str]];

/// Checks every ordered pair of `groups`: equal inside a group, `Less` from an earlier
/// group to a later one, and the reverse the other way; through both [`try_compare`] and
/// [`compare_versions`]. Returns the number of ordered pairs checked.
pub fn assert_sorted(ecosystem: Ecosystem, groups: SortedGroups) -> usize {
    let flat: Vec<(usize, &str)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, versions)| versions.iter().map(move |v| (g, *v)))
        .collect();
    let mut checked = 0;
    for &(ga, a) in &flat {
        for &(gb, b) in &flat {
            let want = ga.cmp(&gb);
            let got = try_compare(ecosystem, a, b)
                .unwrap_or_else(|e| panic!("{ecosystem}: {a:?} vs {b:?}: {e}"));
            assert_eq!(got, want, "{ecosystem}: {a:?} vs {b:?}");
            assert_eq!(compare_versions(ecosystem, a, b), want, "{a:?} vs {b:?}");
            checked += 1;
        }
    }
    checked
}

/// Checks hand-written cases `(a, op, b)` with `op` one of `<`, `=`, `>`, both ways round.
pub fn assert_pairs(ecosystem: Ecosystem, pairs: &[(&str, &str, &str)]) -> usize {
    for &(a, op, b) in pairs {
        let want = match op {
            "<" => Ordering::Less,
            "=" => Ordering::Equal,
            ">" => Ordering::Greater,
            other => panic!("bad operator {other:?} in table"),
        };
        let got = try_compare(ecosystem, a, b)
            .unwrap_or_else(|e| panic!("{ecosystem}: {a:?} {op} {b:?}: {e}"));
        assert_eq!(got, want, "{ecosystem}: expected {a:?} {op} {b:?}");
        let back = try_compare(ecosystem, b, a)
            .unwrap_or_else(|e| panic!("{ecosystem}: {b:?} vs {a:?}: {e}"));
        assert_eq!(back, want.reverse(), "{ecosystem}: {b:?} vs {a:?}");
    }
    pairs.len() * 2
}

/// Checks that every version in `invalid` is rejected, by [`validate_version`] and by
/// [`try_compare`] on either side, with an error naming it, that nothing panics, and that
/// [`compare_versions`] sorts it before `valid`.
pub fn assert_invalid(ecosystem: Ecosystem, invalid: &[&str], valid: &str) -> usize {
    for &v in invalid {
        let err = validate_version(ecosystem, v)
            .expect_err(&format!("{ecosystem}: {v:?} should be invalid"));
        assert_eq!(err.ecosystem, ecosystem);
        assert_eq!(err.version, v);
        assert!(!err.reason.is_empty());
        assert!(try_compare(ecosystem, v, valid).is_err(), "{v:?}");
        assert!(try_compare(ecosystem, valid, v).is_err(), "{v:?}");
        assert_eq!(compare_versions(ecosystem, v, valid), Ordering::Less);
        assert_eq!(compare_versions(ecosystem, valid, v), Ordering::Greater);
        assert_eq!(compare_versions(ecosystem, v, v), Ordering::Equal);
    }
    invalid.len()
}
