//! The image's dpkg database as the engine needs it: the status file (or distroless
//! `status.d`), each package's `info/` files, diversions, and the new status paragraphs,
//! written in dpkg's own field order so the result is what `dpkg` would have left.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::DpkgError;

pub const STATUS: &str = "var/lib/dpkg/status";
pub const STATUS_DIR: &str = "var/lib/dpkg/status.d";
pub const INFO_DIR: &str = "var/lib/dpkg/info";
pub const DIVERSIONS: &str = "var/lib/dpkg/diversions";
pub const FILE_TRIGGERS: &str = "var/lib/dpkg/triggers/File";

/// The fields dpkg knows, in the order it writes them; other fields follow in the control
/// file's order.
const FIELD_ORDER: &[&str] = &[
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Filename",
    "Size",
    "MD5sum",
    "MSDOS-Filename",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
];

/// The fields dpkg's database adds to a package's control fields; no control file has
/// them, so an upgrade keeps the installed entry's (updating `Conffiles`).
pub const DATABASE_FIELDS: &[&str] = &[
    "Status",
    "Config-Version",
    "Conffiles",
    "Triggers-Pending",
    "Triggers-Awaited",
];

/// One paragraph of a deb822 file, by raw lines, so untouched paragraphs are rewritten
/// byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// (name, value) with the value's continuation lines, without the trailing newline.
    pub fields: Vec<(String, String)>,
}

impl Stanza {
    /// Parses one paragraph of text.
    pub fn parse(text: &str) -> Result<Stanza, String> {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                let Some((_, value)) = fields.last_mut() else {
                    return Err(format!("continuation line before any field: {line:?}"));
                };
                value.push('\n');
                value.push_str(line);
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.to_owned(), value.trim_start().to_owned()));
            } else if !line.trim().is_empty() {
                return Err(format!("not a field: {line:?}"));
            }
        }
        Ok(Stanza { fields })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A single-line field, trimmed.
    pub fn word(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    pub fn set(&mut self, name: &str, value: String) {
        match self
            .fields
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => *v = value,
            None => self.fields.push((name.to_owned(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The paragraph in dpkg's field order, each field on its lines, ending in `\n`.
    pub fn to_dpkg_text(&self) -> String {
        let mut known: Vec<&(String, String)> = Vec::new();
        let mut other: Vec<&(String, String)> = Vec::new();
        for field in &self.fields {
            if FIELD_ORDER.iter().any(|k| k.eq_ignore_ascii_case(&field.0)) {
                known.push(field);
            } else {
                other.push(field);
            }
        }
        known.sort_by_key(|(name, _)| {
            FIELD_ORDER
                .iter()
                .position(|k| k.eq_ignore_ascii_case(name))
                .unwrap_or(usize::MAX)
        });
        let fields = known.into_iter().chain(other).cloned().collect();
        Stanza { fields }.to_text()
    }

    /// The paragraph in its own field order, ending in `\n`.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (name, value) in &self.fields {
            text.push_str(name);
            text.push(':');
            if !value.starts_with('\n') {
                text.push(' ');
            }
            text.push_str(value);
            text.push('\n');
        }
        text
    }
}

/// A deb822 file split into paragraphs, with the separators kept for exact rewriting.
#[derive(Debug, Clone)]
pub struct StatusFile {
    /// (paragraph text without its trailing blank lines, the separator after it).
    pub paragraphs: Vec<(String, String)>,
}

impl StatusFile {
    pub fn parse(text: &str) -> StatusFile {
        let mut paragraphs = Vec::new();
        let mut current = String::new();
        let mut separator = String::new();
        for line in text.split_inclusive('\n') {
            if line.trim().is_empty() {
                separator.push_str(line);
                continue;
            }
            if !separator.is_empty() {
                if !current.is_empty() {
                    paragraphs.push((std::mem::take(&mut current), std::mem::take(&mut separator)));
                } else {
                    separator.clear();
                }
            }
            current.push_str(line);
        }
        if !current.is_empty() {
            paragraphs.push((current, separator));
        }
        StatusFile { paragraphs }
    }

    pub fn to_text(&self) -> String {
        self.paragraphs
            .iter()
            .flat_map(|(p, s)| [p.as_str(), s.as_str()])
            .collect()
    }

    /// The position of the installed paragraph of `name` (and `arch` when the database
    /// has the package for several architectures).
    pub fn find(&self, name: &str, arch: Option<&str>) -> Option<usize> {
        self.paragraphs.iter().position(|(text, _)| {
            let Ok(stanza) = Stanza::parse(text) else {
                return false;
            };
            stanza.word("Package") == Some(name)
                && arch.is_none_or(|a| {
                    stanza
                        .word("Architecture")
                        .is_none_or(|have| have == a || have == "all")
                })
                && stanza
                    .word("Status")
                    .is_none_or(|s| s.ends_with(" installed"))
        })
    }
}

impl StatusFile {
    /// The position of `name`'s paragraph, whatever its state.
    pub fn find_any_state(&self, name: &str) -> Option<usize> {
        self.paragraphs.iter().position(|(text, _)| {
            Stanza::parse(text).is_ok_and(|stanza| stanza.word("Package") == Some(name))
        })
    }
}

/// `Conffiles:` of a status paragraph: path -> (md5, obsolete).
pub fn parse_conffiles(value: Option<&str>) -> BTreeMap<String, (String, bool)> {
    let mut conffiles = BTreeMap::new();
    for line in value.unwrap_or_default().lines() {
        let mut words = line.split_whitespace();
        if let (Some(path), Some(md5)) = (words.next(), words.next()) {
            let obsolete = words.any(|w| w == "obsolete");
            conffiles.insert(path.to_owned(), (md5.to_owned(), obsolete));
        }
    }
    conffiles
}

/// `md5sums` text: path (without leading `/`) -> md5.
pub fn parse_md5sums(text: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| {
            let (md5, path) = line.split_once("  ")?;
            Some((path.trim_start_matches('/').to_owned(), md5.to_owned()))
        })
        .collect()
}

/// dpkg-divert's database: (diverted path, where it goes, the package allowed to write it).
#[derive(Debug, Clone, Default)]
pub struct Diversions {
    by_path: HashMap<String, (String, String)>,
}

impl Diversions {
    pub fn parse(text: &[u8]) -> Result<Diversions, DpkgError> {
        let text = String::from_utf8_lossy(text);
        let lines: Vec<&str> = text.lines().collect();
        if !lines.len().is_multiple_of(3) {
            return Err(DpkgError::Database {
                path: DIVERSIONS.to_owned(),
                reason: "not a whole number of 3-line records".to_owned(),
            });
        }
        let by_path = lines
            .chunks(3)
            .map(|r| {
                (
                    r[0].trim_start_matches('/').to_owned(),
                    (r[1].trim_start_matches('/').to_owned(), r[2].to_owned()),
                )
            })
            .collect();
        Ok(Diversions { by_path })
    }

    /// Where `package`'s file `path` is written: the diversion target unless `package` is
    /// the one that diverted it (`:` means a local diversion, for every package).
    pub fn target<'a>(&'a self, path: &'a str, package: &str) -> &'a str {
        match self.by_path.get(path) {
            Some((to, owner)) if owner != package => to,
            _ => path,
        }
    }
}

/// Which packages list a path in their `info/*.list`; the shared-file rule needs it.
#[derive(Debug, Default)]
pub struct Owners {
    owners: HashMap<String, BTreeSet<String>>,
}

impl Owners {
    /// `lists`: info base name (`libc6:amd64`) -> the `.list` contents.
    pub fn from_lists<'a>(lists: impl Iterator<Item = (&'a str, &'a [u8])>) -> Owners {
        let mut owners: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (package, list) in lists {
            for line in String::from_utf8_lossy(list).lines() {
                let path = line.trim_start_matches('/');
                if !path.is_empty() && path != "." {
                    owners
                        .entry(path.to_owned())
                        .or_default()
                        .insert(package.to_owned());
                }
            }
        }
        Owners { owners }
    }

    /// Distroless: `status.d/<name>.md5sums` by name, the only file lists there are.
    pub fn from_md5sums<'a>(sums: impl Iterator<Item = (&'a str, &'a [u8])>) -> Owners {
        let mut owners: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (package, data) in sums {
            for path in parse_md5sums(data).into_keys() {
                owners.entry(path).or_default().insert(package.to_owned());
            }
        }
        Owners { owners }
    }

    /// True when a package other than `package` lists `path`.
    pub fn owned_by_other(&self, path: &str, package: &str) -> bool {
        self.owners
            .get(path)
            .is_some_and(|o| o.iter().any(|p| p != package))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_round_trips_and_replaces_one_paragraph() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\nDescription: x\n more\n\n";
        let mut file = StatusFile::parse(text);
        assert_eq!(file.to_text(), text);
        let at = file.find("b", Some("amd64")).unwrap();
        assert_eq!(at, 1);
        let mut stanza = Stanza::parse(&file.paragraphs[at].0).unwrap();
        assert_eq!(stanza.get("Description"), Some("x\n more"));
        stanza.set("Version", "3".into());
        file.paragraphs[at].0 = stanza.to_dpkg_text();
        assert!(file
            .to_text()
            .ends_with("Version: 3\nDescription: x\n more\n\n"));
    }

    #[test]
    fn fields_come_out_in_dpkg_order() {
        let control = "Package: perl-base\nVersion: 2\nArchitecture: amd64\nHomepage: h\nDescription: d\nMaintainer: m\nEssential: yes\n";
        let mut stanza = Stanza::parse(control).unwrap();
        stanza.set("Status", "install ok installed".into());
        stanza.set("Conffiles", "\n /etc/x 0123".into());
        assert_eq!(
            stanza.to_dpkg_text(),
            "Package: perl-base\nEssential: yes\nStatus: install ok installed\nMaintainer: m\nArchitecture: amd64\nVersion: 2\nConffiles:\n /etc/x 0123\nDescription: d\nHomepage: h\n"
        );
    }

    #[test]
    fn conffiles_md5sums_and_diversions_parse() {
        let c = parse_conffiles(Some("\n /etc/a 111\n /etc/b 222 obsolete"));
        assert_eq!(c["/etc/a"], ("111".into(), false));
        assert_eq!(c["/etc/b"], ("222".into(), true));
        let m = parse_md5sums(b"abc  usr/bin/x\ndef  /usr/bin/y\n");
        assert_eq!(m["usr/bin/x"], "abc");
        assert_eq!(m["usr/bin/y"], "def");
        let d = Diversions::parse(b"/bin/sh\n/bin/sh.distrib\ndash\n").unwrap();
        assert_eq!(d.target("bin/sh", "bash"), "bin/sh.distrib");
        assert_eq!(d.target("bin/sh", "dash"), "bin/sh");
        assert!(Diversions::parse(b"/x\n/y\n").is_err());
    }
}
