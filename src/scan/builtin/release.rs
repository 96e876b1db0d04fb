//! The signed text of an `InRelease`: which suite it is, when it was published, until when
//! it may be used, and the size and SHA256 of every index file it covers
//! (<https://wiki.debian.org/DebianRepository/Format#A.22Release.22_files>).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::pkgs::dpkg::deb822;

/// A `Date` this far in the future is refused, as apt does ("not valid yet"); clocks drift.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// A Release, parsed from text whose signature already passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub date: SystemTime,
    pub valid_until: Option<SystemTime>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    /// `Acquire-By-Hash: yes`: index files can also be fetched by their hash, which cannot
    /// race with a new publication.
    pub acquire_by_hash: bool,
    /// Path relative to `dists/<suite>/` -> size and SHA256.
    pub files: BTreeMap<String, FileHash>,
}

/// Size and SHA256 of one file, as a Release lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// Index file names from most to least compressed; the first the Release lists and the
/// server has is used (Debian lists plain `Packages` but its mirrors do not serve it).
const INDEX_NAMES: [&str; 3] = ["Packages.xz", "Packages.gz", "Packages"];

impl Release {
    /// Parses a Release paragraph.
    ///
    /// # Errors
    /// A reason naming the field, for deb822 syntax errors, a missing or unparsable `Date`,
    /// a bad `Valid-Until`, or a malformed `SHA256` line.
    pub fn parse(text: &str) -> Result<Release, String> {
        let paragraphs =
            deb822::parse(text.as_bytes()).map_err(|e| format!("line {}: {}", e.line, e.reason))?;
        let paragraph = match paragraphs.as_slice() {
            [one] => one,
            [] => return Err("empty".to_owned()),
            _ => return Err("more than one paragraph".to_owned()),
        };
        let line = |name: &str| -> Result<Option<String>, String> {
            paragraph
                .get(name)
                .map(|f| {
                    f.single_line()
                        .map(str::to_owned)
                        .map_err(|e| format!("line {}: {}", e.line, e.reason))
                })
                .transpose()
        };
        let words = |name: &str| -> Result<Vec<String>, String> {
            Ok(line(name)?
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default())
        };
        let date_field = |name: &str| -> Result<Option<SystemTime>, String> {
            line(name)?
                .map(|v| parse_date(&v).ok_or_else(|| format!("{name} {v:?} is not a date")))
                .transpose()
        };

        let date = date_field("Date")?.ok_or("no Date field")?;
        let mut files = BTreeMap::new();
        if let Some(field) = paragraph.get("SHA256") {
            let body = std::str::from_utf8(field.raw).map_err(|_| "SHA256 is not UTF-8")?;
            for entry in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let bad = || format!("SHA256 line {entry:?} is not `<hash> <size> <path>`");
                let mut parts = entry.split_whitespace();
                let (Some(hash), Some(size), Some(path), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                let size = size.parse().map_err(|_| bad())?;
                let sha256 = hash.to_ascii_lowercase();
                files.insert(path.to_owned(), FileHash { size, sha256 });
            }
        }
        Ok(Release {
            suite: line("Suite")?,
            codename: line("Codename")?,
            date,
            valid_until: date_field("Valid-Until")?,
            architectures: words("Architectures")?,
            components: words("Components")?,
            acquire_by_hash: line("Acquire-By-Hash")?.is_some_and(|v| v == "yes"),
            files,
        })
    }

    /// Checks that this Release is `suite`'s: its `Suite` or `Codename` must say so, or a
    /// validly signed Release of another suite could be replayed in its place.
    ///
    /// # Errors
    /// The reason, naming both suites.
    pub fn check_suite(&self, suite: &str) -> Result<(), String> {
        if self.suite.as_deref() == Some(suite) || self.codename.as_deref() == Some(suite) {
            return Ok(());
        }
        Err(format!(
            "it is for suite {:?} (codename {:?}), not {suite}",
            self.suite.as_deref().unwrap_or_default(),
            self.codename.as_deref().unwrap_or_default()
        ))
    }

    /// Checks that this Release may be used at `now`.
    ///
    /// # Errors
    /// [`Freshness::Expired`] past `Valid-Until`; [`Freshness::Invalid`] when `Date` is in
    /// the future.
    pub fn check_time(&self, now: SystemTime) -> Result<(), Freshness> {
        if self.date > now + MAX_CLOCK_SKEW {
            return Err(Freshness::Invalid(format!(
                "its Date {} is in the future",
                format_date(self.date)
            )));
        }
        match self.valid_until {
            Some(until) if until <= now => Err(Freshness::Expired(until)),
            _ => Ok(()),
        }
    }

    /// The `Packages` indexes of `component` for `architecture` the Release lists, as
    /// (path, hash), most compressed first.
    pub fn packages_indexes(&self, component: &str, architecture: &str) -> Vec<(&str, &FileHash)> {
        INDEX_NAMES
            .iter()
            .filter_map(|name| {
                let path = format!("{component}/binary-{architecture}/{name}");
                self.files
                    .get_key_value(&path)
                    .map(|(path, hash)| (path.as_str(), hash))
            })
            .collect()
    }

    /// Whether the Release says arch-`all` packages are in their own `binary-all` index
    /// only. Debian's archives list `all` in `Architectures` only when that is so.
    pub fn has_separate_all(&self) -> bool {
        self.architectures.iter().any(|a| a == "all")
    }
}

/// Why a Release may not be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    Expired(SystemTime),
    Invalid(String),
}

/// Parses an RFC 2822 date as Release files write it: `Sat, 10 Aug 2024 09:18:42 UTC`,
/// also with `GMT`, `Z` or a numeric zone `+0000`. The weekday is optional and not checked.
pub fn parse_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let text = text.split_once(", ").map_or(text, |(_, rest)| rest);
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i64 + 1;
    // Four-digit years only: the arithmetic below cannot overflow, and no archive dates
    // its Release beyond 9999.
    let year: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day)
        || !(0..24).contains(h)
        || !(0..60).contains(m)
        || !(0..61).contains(s)
    {
        return None;
    }
    let offset = match *zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            // `get`: the zone is untrusted text, not necessarily ASCII.
            let hours: i64 = z.get(1..3)?.parse().ok()?;
            let minutes: i64 = z.get(3..5)?.parse().ok()?;
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s - offset;
    u64::try_from(secs)
        .ok()
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

/// `2024-08-10T09:18:42Z`.
pub fn format_rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `Sat, 10 Aug 2024 09:18:42 UTC`.
pub fn format_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} UTC",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Debian\nLabel: Debian-Security\nSuite: oldstable-security\n\
Version: 12\nCodename: bookworm-security\nDate: Wed, 25 Nov 2026 02:22:30 UTC\n\
Valid-Until: Wed, 02 Dec 2026 02:22:30 UTC\nAcquire-By-Hash: yes\n\
Architectures: amd64 arm64\nComponents: updates/main updates/contrib\n\
Description: Debian 12 - Security Updates\nSHA256:\n\
\x20b4fe689a622b073715a61684e91d51d1b5ed1a936656d10eb2e2ec6aa94e9b3b   856054 main/binary-amd64/Packages\n\
\x201124819AE0C5778DD330CF57DC8E43EF35705AD029E2F1087041F3B05C09C234   136948 main/binary-amd64/Packages.xz\n";

    #[test]
    fn dates_with_huge_years_or_non_ascii_zones_are_refused_not_a_panic() {
        // Found by the deb822 fuzz target: the year overflowed the seconds arithmetic.
        assert_eq!(parse_date("Sat, 20 Feb 3333333333330 09:57:45 UTC"), None);
        assert_eq!(parse_date("Sat, 20 Feb 10000 09:57:45 UTC"), None);
        // A zone of five bytes whose third is inside a two-byte character.
        assert_eq!(parse_date("Sat, 10 Feb 2024 09:57:45 +1\u{e9}2"), None);
        assert!(parse_date("Sat, 10 Feb 9999 09:57:45 +0100").is_some());
    }

    #[test]
    fn release_fields_and_hashes() {
        let release = Release::parse(RELEASE).unwrap();
        assert_eq!(release.suite.as_deref(), Some("oldstable-security"));
        assert_eq!(release.codename.as_deref(), Some("bookworm-security"));
        assert_eq!(format_date(release.date), "Wed, 25 Nov 2026 02:22:30 UTC");
        assert!(release.acquire_by_hash);
        assert_eq!(release.architectures, ["amd64", "arm64"]);
        let indexes = release.packages_indexes("main", "amd64");
        let paths: Vec<&str> = indexes.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            paths,
            [
                "main/binary-amd64/Packages.xz",
                "main/binary-amd64/Packages"
            ]
        );
        assert_eq!(indexes[0].1.size, 136_948);
        assert!(indexes[0].1.sha256.starts_with("1124819ae0c5"));
        assert!(release.packages_indexes("main", "s390x").is_empty());
        assert!(!release.has_separate_all());
    }

    #[test]
    fn release_checks_suite_date_and_validity() {
        let release = Release::parse(RELEASE).unwrap();
        let now = parse_date("Fri, 27 Nov 2026 08:00:00 UTC").unwrap();
        assert_eq!(release.check_time(now), Ok(()));
        assert_eq!(release.check_suite("bookworm-security"), Ok(()));
        assert_eq!(release.check_suite("oldstable-security"), Ok(()));
        assert!(release
            .check_suite("bookworm")
            .unwrap_err()
            .contains("not bookworm"));
        let later = parse_date("Thu, 03 Dec 2026 00:00:00 UTC").unwrap();
        assert_eq!(
            release.check_time(later),
            Err(Freshness::Expired(release.valid_until.unwrap()))
        );
        let before = parse_date("Tue, 24 Nov 2026 00:00:00 UTC").unwrap();
        assert!(
            matches!(release.check_time(before), Err(Freshness::Invalid(m)) if m.contains("future"))
        );
    }

    #[test]
    fn malformed_releases_say_what_is_wrong() {
        let cases = [
            ("Suite: x\n", "no Date field"),
            ("Date: yesterday\n", "Date \"yesterday\" is not a date"),
            (
                "Date: Sat, 10 Aug 2024 09:18:42 UTC\nSHA256:\n abc 1 main/x\n",
                "is not `<hash> <size> <path>`",
            ),
            (
                "Date: Sat, 10 Aug 2024 09:18:42 UTC\n\nSuite: b\n",
                "more than one paragraph",
            ),
        ];
        for (text, expected) in cases {
            let err = Release::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn dates_in_release_spellings() {
        let utc = parse_date("Sat, 10 Aug 2024 09:18:42 UTC").unwrap();
        assert_eq!(
            utc.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_723_281_522
        );
        assert_eq!(parse_date("10 Aug 2024 09:18:42 +0000"), Some(utc));
        assert_eq!(parse_date("Sat, 10 Aug 2024 11:18:42 +0200"), Some(utc));
        assert_eq!(parse_date("Sat, 10 Aug 2024 09:18:42 GMT"), Some(utc));
        assert_eq!(format_date(utc), "Sat, 10 Aug 2024 09:18:42 UTC");
        assert_eq!(format_rfc3339(utc), "2024-08-10T09:18:42Z");
        assert_eq!(
            format_date(parse_date("Thu, 29 Feb 2024 23:59:59 Z").unwrap()),
            "Thu, 29 Feb 2024 23:59:59 UTC"
        );
        for bad in [
            "",
            "Sat, 10 Aug 2024",
            "Sat, 32 Aug 2024 09:18:42 UTC",
            "Sat, 10 Foo 2024 09:18:42 UTC",
            "Sat, 10 Aug 2024 09:18:42 CEST",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
