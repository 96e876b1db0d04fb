//! `changelog.Debian.gz` (`deb-changelog(5)`): which CVEs each version says it fixed. A
//! native package (no Debian revision) ships the same format as `changelog.gz`, a name
//! upstream changelogs also use; those are told apart by their first line.
//!
//! An entry starts with `package (version) distributions; urgency=...` at the start of a
//! line and runs to the next such line. CVE ids are found anywhere in the entry's text, in
//! any case, and returned upper-case.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Read;

use crate::pkgs::{try_compare, Ecosystem};

/// One changelog entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: String,
    /// In order of first mention, without duplicates.
    pub cves: Vec<String>,
}

/// Decompresses and parses a changelog; at most `max_unpacked` bytes are read.
///
/// # Errors
/// A reason when the gzip data is corrupt or longer than `max_unpacked`.
pub fn parse_gz(gz: &[u8], max_unpacked: u64) -> Result<Vec<Entry>, String> {
    Ok(parse(&decompress(gz, max_unpacked)?))
}

/// As [`parse_gz`], for a `changelog.gz`: refused unless its first line starts an entry of
/// the source package `source`, so that an upstream changelog yields no CVE ids.
///
/// # Errors
/// As [`parse_gz`], and a reason when the text is not a Debian changelog of `source`.
pub fn parse_native_gz(gz: &[u8], max_unpacked: u64, source: &str) -> Result<Vec<Entry>, String> {
    let text = decompress(gz, max_unpacked)?;
    let first = text.lines().find(|line| !line.trim().is_empty());
    match first.and_then(entry_header) {
        Some((name, _)) if name == source => Ok(parse(&text)),
        _ => Err(format!(
            "it is not a Debian changelog of {source} (its first line is {:?})",
            first
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect::<String>()
        )),
    }
}

fn decompress(gz: &[u8], max_unpacked: u64) -> Result<String, String> {
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .take(max_unpacked + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("decompressing the changelog: {e}"))?;
    if text.len() as u64 > max_unpacked {
        return Err(format!("changelog is larger than {max_unpacked} bytes"));
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Parses changelog text into entries, newest first as written.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.lines() {
        if let Some((_, version)) = entry_header(line) {
            entries.push(Entry {
                version: version.to_owned(),
                cves: Vec::new(),
            });
        } else if let Some(entry) = entries.last_mut() {
            for cve in cve_ids(line) {
                if !entry.cves.contains(&cve) {
                    entry.cves.push(cve);
                }
            }
        }
    }
    entries
}

/// The CVEs fixed by the entries newer than `installed` and not newer than `target`, each
/// with the oldest such entry's version: the first version that fixed it. Entries whose
/// version is not a valid Debian version are ignored. Sorted by CVE id.
pub fn fixed_between(entries: &[Entry], installed: &str, target: &str) -> Vec<(String, String)> {
    let mut first_fix: BTreeMap<&str, &str> = BTreeMap::new();
    for entry in entries {
        let newer =
            try_compare(Ecosystem::Dpkg, &entry.version, installed) == Ok(Ordering::Greater);
        let within = matches!(
            try_compare(Ecosystem::Dpkg, &entry.version, target),
            Ok(Ordering::Less | Ordering::Equal)
        );
        if !(newer && within) {
            continue;
        }
        for cve in &entry.cves {
            first_fix
                .entry(cve)
                .and_modify(|known| {
                    if try_compare(Ecosystem::Dpkg, &entry.version, known) == Ok(Ordering::Less) {
                        *known = &entry.version;
                    }
                })
                .or_insert(&entry.version);
        }
    }
    first_fix
        .into_iter()
        .map(|(cve, version)| (cve.to_owned(), version.to_owned()))
        .collect()
}

/// `name (version) dists; ...` -> `(name, version)`.
fn entry_header(line: &str) -> Option<(&str, &str)> {
    let first = line.chars().next()?;
    if first.is_whitespace() || !first.is_ascii_alphanumeric() {
        return None;
    }
    let (name, rest) = line.split_once(" (")?;
    if name.contains(char::is_whitespace) {
        return None;
    }
    let (version, rest) = rest.split_once(')')?;
    let version = version.trim();
    (!version.is_empty() && rest.contains(';')).then_some((name, version))
}

/// Every `CVE-YYYY-NNNN...` in `text`, upper-cased, in order.
pub fn cve_ids(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let starts = bytes[i..i + 4].eq_ignore_ascii_case(b"CVE-")
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if !starts {
            i += 1;
            continue;
        }
        let year_end = i + 4 + digits(&bytes[i + 4..]);
        let ok_year = year_end == i + 8 && bytes.get(year_end) == Some(&b'-');
        let number = if ok_year {
            digits(&bytes[year_end + 1..])
        } else {
            0
        };
        if number >= 4 {
            let end = year_end + 1 + number;
            found.push(format!("CVE-{}", &text[i + 4..end]));
            i = end;
        } else {
            i += 4;
        }
    }
    found
}

fn digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGELOG: &str = "\
openssl (3.0.15-1~deb12u1) bookworm-security; urgency=medium

  * New upstream version.
    - CVE-2024-5535 (SSL_select_next_proto buffer overread)
    - cve-2024-6119, and again CVE-2024-5535.

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sun, 01 Sep 2024 20:45:10 +0200

openssl (3.0.14-1~deb12u2) bookworm; urgency=medium

  * Fix CVE-2024-4741 (use after free).
  * Not an id: CVE-2024-12, XCVE-2024-9999, CVE-24-12345.

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sun, 07 Jul 2024 10:00:00 +0200

openssl (3.0.14-1~deb12u1) bookworm; urgency=medium

  * CVE-2024-4741 partially, CVE-2024-2511.

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sun, 30 Jun 2024 10:00:00 +0200

openssl (3.0.11-1~deb12u2) bookworm-security; urgency=medium

  * CVE-2023-5678.

 -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sun, 01 Jan 2024 10:00:00 +0200
";

    #[test]
    fn entries_and_their_cves() {
        let entries = parse(CHANGELOG);
        let versions: Vec<&str> = entries.iter().map(|e| e.version.as_str()).collect();
        assert_eq!(
            versions,
            [
                "3.0.15-1~deb12u1",
                "3.0.14-1~deb12u2",
                "3.0.14-1~deb12u1",
                "3.0.11-1~deb12u2"
            ]
        );
        assert_eq!(entries[0].cves, ["CVE-2024-5535", "CVE-2024-6119"]);
        assert_eq!(entries[1].cves, ["CVE-2024-4741"]);
    }

    #[test]
    fn only_entries_after_the_installed_version_count() {
        let entries = parse(CHANGELOG);
        let fixed = fixed_between(&entries, "3.0.11-1~deb12u2", "3.0.15-1~deb12u1");
        let expected = [
            ("CVE-2024-2511", "3.0.14-1~deb12u1"),
            ("CVE-2024-4741", "3.0.14-1~deb12u1"),
            ("CVE-2024-5535", "3.0.15-1~deb12u1"),
            ("CVE-2024-6119", "3.0.15-1~deb12u1"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(fixed, expected);
        let fixed = fixed_between(&entries, "3.0.14-1~deb12u1", "3.0.14-1~deb12u2");
        assert_eq!(
            fixed,
            [("CVE-2024-4741".to_owned(), "3.0.14-1~deb12u2".to_owned())]
        );
        assert!(fixed_between(&entries, "3.0.15-1~deb12u1", "3.0.15-1~deb12u1").is_empty());
    }

    #[test]
    fn gzip_and_limits() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(CHANGELOG.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(parse_gz(&gz, 1 << 20).unwrap(), parse(CHANGELOG));
        assert!(parse_gz(&gz, 100)
            .unwrap_err()
            .contains("larger than 100 bytes"));
        assert!(parse_gz(b"not gzip", 100).is_err());
    }

    #[test]
    fn native_changelogs_must_be_debian_changelogs_of_the_source() {
        use std::io::Write;
        let gz = |text: &str| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes()).unwrap();
            gz.finish().unwrap()
        };
        let native = "\napt (2.4.15ubuntu0.1) jammy-security; urgency=medium\n\n  \
                      * SECURITY UPDATE: CVE-2025-1234\n\n -- A <a@b>  Mon, 01 Jan 2024 \
                      00:00:00 +0000\n\napt (2.4.14) jammy; urgency=medium\n";
        let entries = parse_native_gz(&gz(native), 1 << 20, "apt").unwrap();
        assert_eq!(entries, parse(native));
        assert_eq!(
            fixed_between(&entries, "2.4.14", "2.4.15ubuntu0.1"),
            [("CVE-2025-1234".to_owned(), "2.4.15ubuntu0.1".to_owned())]
        );
        let err = parse_native_gz(&gz(native), 1 << 20, "dpkg").unwrap_err();
        assert!(err.contains("not a Debian changelog of dpkg"), "{err}");
        // An upstream GNU-style ChangeLog, even one that quotes an entry header later.
        let upstream = "2024-01-01  Dev <d@example.invalid>\n\n\t* Fix CVE-2024-0001.\n\
                        apt (9.9) unstable; urgency=low\n";
        let err = parse_native_gz(&gz(upstream), 1 << 20, "apt").unwrap_err();
        assert!(err.contains("2024-01-01  Dev"), "{err}");
        assert!(parse_native_gz(b"not gzip", 100, "apt").is_err());
    }

    #[test]
    fn cve_ids_need_a_four_digit_year_and_number() {
        assert_eq!(cve_ids("(CVE-2021-3999)"), ["CVE-2021-3999"]);
        assert_eq!(
            cve_ids("CVE-2021-1234567,CVE-2022-0001"),
            ["CVE-2021-1234567", "CVE-2022-0001"]
        );
        assert!(cve_ids("CVE-2021-123 CVE-202-1234 ACVE-2021-1234 CVE-").is_empty());
    }
}
