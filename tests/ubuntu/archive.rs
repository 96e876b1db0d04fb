//! What the test knows of Ubuntu's archive without patchpull: its keyring, taken from the
//! archive's own `ubuntu-keyring` package and pinned by fingerprint, the Packages indexes of a
//! suite, and the CVE ids a `.deb`'s changelog names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::rootfs::paragraphs;
use crate::run::{dpkg_gt, sh, stdout_of, tool};

pub const ARCHIVE: &str = "http://archive.ubuntu.com/ubuntu";

/// The keys of `ubuntu-archive-keyring.gpg`: the archive signing keys of 2012 and 2018
/// ("Ubuntu Archive Automatic Signing Key (2012)" and "(2018)"; the 2018 one signs jammy's
/// `InRelease` files) and the 2012 CD image key.
pub const PINNED_FINGERPRINTS: [&str; 3] = [
    "790BC7277767219C42C86F933B4FE6ACC0B21F32",
    "843938DF228D22F7B3742BC0D94AA3F0EFE21092",
    "F6ECB3762474EDA9D21B7022871920D1991BC93C",
];

/// `dists/<suite>/<component>/binary-amd64/Packages`, decompressed.
pub fn packages_index(suite: &str, component: &str) -> String {
    let out = sh(
        300,
        &format!(
            "curl -fsS --max-time 240 \
             {ARCHIVE}/dists/{suite}/{component}/binary-amd64/Packages.xz | xz -d"
        ),
    );
    stdout_of(&out, &format!("{suite}/{component} Packages"))
}

/// Ubuntu's archive keyring, as shipped and as re-exported.
pub struct Keyrings {
    /// `usr/share/keyrings/ubuntu-archive-keyring.gpg` of the archive's `ubuntu-keyring`: a
    /// GnuPG 1 keyring file, with a trust packet after every signature.
    pub shipped: PathBuf,
    /// The same keys exported by `gpg --export`: the same packets without the trust packets.
    pub exported: PathBuf,
}

/// The fingerprints of the primary keys in `keyring` (and the listing), by gpg with a
/// private home in `home`.
fn fingerprints(home: &Path, keyring: &Path) -> (BTreeSet<String>, String) {
    let out = sh(
        60,
        &format!(
            "GNUPGHOME={} gpg --batch --with-colons --show-keys {}",
            home.display(),
            keyring.display()
        ),
    );
    let listing = stdout_of(&out, "gpg --show-keys");
    // The `fpr` line right after each `pub` line.
    let mut found = BTreeSet::new();
    let mut after_pub = false;
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields[0] {
            "pub" => after_pub = true,
            "fpr" if after_pub => {
                found.insert(fields[9].to_string());
                after_pub = false;
            }
            _ => after_pub = false,
        }
    }
    (found, listing)
}

/// Packet tags of `keyring` as `gpg --list-packets` names them.
fn packet_kinds(home: &Path, keyring: &Path) -> BTreeMap<String, usize> {
    let out = sh(
        60,
        &format!(
            "GNUPGHOME={} gpg --batch --list-packets {}",
            home.display(),
            keyring.display()
        ),
    );
    let mut kinds = BTreeMap::new();
    for line in stdout_of(&out, "gpg --list-packets").lines() {
        if let Some(kind) = line.strip_prefix(':').and_then(|l| l.split(':').next()) {
            *kinds.entry(kind.to_string()).or_insert(0) += 1;
        }
    }
    kinds
}

/// Downloads `ubuntu-keyring` from jammy's pool (its name and SHA256 from jammy's main
/// index), extracts `ubuntu-archive-keyring.gpg` into `dir`, checks that it holds exactly
/// the pinned keys, and exports them again without trust packets.
pub fn ubuntu_keyring(dir: &Path) -> Keyrings {
    std::fs::create_dir_all(dir).unwrap();
    let index = packages_index("jammy", "main");
    let package = paragraphs(&index)
        .into_iter()
        .find(|p| p["Package"] == "ubuntu-keyring")
        .expect("ubuntu-keyring in jammy's main index");
    let deb = dir.join("ubuntu-keyring.deb");
    let url = format!("{ARCHIVE}/{}", package["Filename"]);
    tool(
        300,
        "curl",
        &[
            "-fsS",
            "--max-time",
            "240",
            "-o",
            deb.to_str().unwrap(),
            &url,
        ],
    );
    let sum = tool(60, "sha256sum", &[deb.to_str().unwrap()]);
    assert_eq!(
        sum.split_whitespace().next(),
        Some(package["SHA256"].as_str()),
        "{url}: SHA256 differs from the index's"
    );
    let shipped = dir.join("ubuntu-archive-keyring.gpg");
    let out = sh(
        60,
        &format!(
            "dpkg-deb --fsys-tarfile {} | tar -xOf - ./usr/share/keyrings/ubuntu-archive-keyring.gpg > {}",
            deb.display(),
            shipped.display()
        ),
    );
    stdout_of(&out, "extracting ubuntu-archive-keyring.gpg");
    // gpg wants a home even to list keys: a private one, not root's.
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    let pinned: BTreeSet<String> = PINNED_FINGERPRINTS.map(str::to_string).into();
    let (found, listing) = fingerprints(&home, &shipped);
    assert_eq!(
        found,
        pinned,
        "the keys of {}:\n{listing}",
        shipped.display()
    );

    let exported = dir.join("ubuntu-archive-keyring-exported.gpg");
    let out = sh(
        60,
        &format!(
            "GNUPGHOME={} gpg --batch --no-default-keyring --keyring {} --export {} > {}",
            home.display(),
            shipped.display(),
            PINNED_FINGERPRINTS.join(" "),
            exported.display()
        ),
    );
    stdout_of(&out, "gpg --export");
    let (found, listing) = fingerprints(&home, &exported);
    assert_eq!(
        found,
        pinned,
        "the keys of {}:\n{listing}",
        exported.display()
    );
    // The export differs from the shipped file by the trust packets only.
    let mut kinds = packet_kinds(&home, &shipped);
    assert!(
        kinds.remove("trust packet").is_some_and(|n| n > 0),
        "{kinds:?}"
    );
    assert_eq!(packet_kinds(&home, &exported), kinds);
    Keyrings { shipped, exported }
}

/// The CVE ids of `text`, upper-case: `CVE-` (any case), a four-digit year, `-`, and four or
/// more digits.
pub fn cve_ids(text: &str) -> BTreeSet<String> {
    let upper = text.to_ascii_uppercase();
    let bytes = upper.as_bytes();
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut ids = BTreeSet::new();
    let mut at = 0;
    while let Some(found) = upper[at..].find("CVE-") {
        let start = at + found;
        let year = start + 4;
        at = year;
        if digits(year) != 4 || bytes.get(year + 4) != Some(&b'-') {
            continue;
        }
        let number = digits(year + 5);
        if number >= 4 {
            ids.insert(upper[start..year + 5 + number].to_string());
        }
    }
    ids
}

/// The CVE ids a `changelog.Debian` names in the entries newer than `installed` and not
/// newer than `fixed`.
pub fn changelog_cves(changelog: &str, installed: &str, fixed: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut counted = false;
    for line in changelog.lines() {
        // An entry starts `package (version) distributions; urgency=...` at column 0.
        let header = line
            .split_once(" (")
            .filter(|(name, _)| !line.starts_with(' ') && !name.is_empty())
            .and_then(|(_, rest)| rest.split_once(')'))
            .filter(|(_, rest)| rest.contains(';'));
        if let Some((version, _)) = header {
            counted = dpkg_gt(version, installed) && !dpkg_gt(version, fixed);
        } else if counted {
            ids.extend(cve_ids(line));
        }
    }
    ids
}

/// A package's changelog as found by following its `usr/share/doc` links through the
/// fetched `.deb`s.
pub struct Changelog {
    /// Decompressed.
    pub text: String,
    /// `changelog.Debian.gz`, or `changelog.gz` for a native package (Debian policy 12.7).
    pub file: &'static str,
    /// Links followed to reach it: 0 when the package's own `.deb` has it.
    pub hops: usize,
}

/// The changelog of `package`: `usr/share/doc/<package>/changelog.Debian.gz` in its `.deb`,
/// else where that file's link or the doc directory's link points (in the `.deb` of the
/// package the target directory is named after), else a native package's `changelog.gz`.
/// `None` when a link leads out of `debs`.
pub fn changelog_of(debs: &BTreeMap<String, PathBuf>, package: &str) -> Option<Changelog> {
    let mut dir = package.to_string();
    for hops in 0..8 {
        let deb = debs.get(&dir)?;
        let listing = tool(60, "dpkg-deb", &["-c", deb.to_str().unwrap()]);
        // `<mode> <owner> <size> <date> <time> <path>[ -> <target>]`
        let mut entries: BTreeMap<String, Option<String>> = BTreeMap::new();
        for line in listing.lines() {
            let rest = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ");
            match rest.split_once(" -> ") {
                Some((path, target)) => entries.insert(path.to_string(), Some(target.to_string())),
                None => entries.insert(rest, None),
            };
        }
        let doc = format!("./usr/share/doc/{dir}");
        let file = |name: &str| entries.get(&format!("{doc}/{name}")).map(Option::as_deref);
        let next = match (
            file("changelog.Debian.gz"),
            entries.get(&doc).map(Option::as_deref),
        ) {
            (Some(None), _) => None,
            (Some(Some(target)), _) => target.rsplit('/').nth(1),
            (None, Some(Some(target))) => target.trim_end_matches('/').rsplit('/').next(),
            (None, _) if file("changelog.gz") == Some(None) => {
                return Some(Changelog {
                    text: extract_gz(deb, &format!("{doc}/changelog.gz"))?,
                    file: "changelog.gz",
                    hops,
                })
            }
            (None, _) => return None,
        };
        match next {
            None => {
                return Some(Changelog {
                    text: extract_gz(deb, &format!("{doc}/changelog.Debian.gz"))?,
                    file: "changelog.Debian.gz",
                    hops,
                })
            }
            Some(target) => dir = target.to_string(),
        }
    }
    None
}

/// The decompressed text of the gzip file `path` (`./usr/...`) in `deb`.
fn extract_gz(deb: &Path, path: &str) -> Option<String> {
    let out = sh(
        120,
        &format!(
            "dpkg-deb --fsys-tarfile {} | tar -xOf - {path} | gzip -d",
            deb.display()
        ),
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
