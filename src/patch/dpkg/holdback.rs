//! Which planned upgrades `apt-get upgrade` would keep back. `upgrade` installs no new
//! package and removes none, so an upgrade is kept back when its new version needs what
//! the image does not have, and the rest is upgraded without it:
//!
//! - a `Depends` or `Pre-Depends` group of the new version that no package satisfies,
//!   counting installed packages at the version they will have (the other planned
//!   upgrades at their new version, everything else as installed);
//! - a `Breaks` or `Conflicts` of the new version that names a package (by its real name)
//!   at the version it will have;
//! - an installed package that stays at its version and whose `Depends` or `Pre-Depends`
//!   the upgrade would break (it held before, and fails with the new version).
//!
//! Kept-back upgrades change the others' world, so the rules run until nothing changes.
//! A group the installed version already left unsatisfied (a distroless image without
//! `dpkg`, say) is not the upgrade's doing and keeps nothing back.

use std::collections::{BTreeMap, BTreeSet};

use crate::pkgs::dpkg::relation::{self, Alternatives, Relation};

use super::database::{Stanza, StatusFile, STATUS, STATUS_DIR};
use super::{DpkgError, ImageFiles};

/// An upgrade kept back, and why, in a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    pub name: String,
    pub version: String,
    pub reason: String,
}

/// One package version, as far as relations go.
#[derive(Debug, Clone)]
struct Version {
    name: String,
    version: String,
    provides: Vec<Relation>,
    depends: Vec<Alternatives>,
    conflicts: Vec<Relation>,
}

impl Version {
    fn read(stanza: &Stanza) -> Result<Version, String> {
        let field = |name: &str| -> Result<Vec<Alternatives>, String> {
            relation::parse(stanza.get(name).unwrap_or_default())
                .map_err(|e| format!("{name}: {e}"))
        };
        let name = stanza.word("Package").ok_or("no Package field")?;
        let version = stanza.word("Version").ok_or("no Version field")?;
        let mut depends = field("Pre-Depends")?;
        depends.extend(field("Depends")?);
        let mut conflicts: Vec<Relation> = field("Breaks")?.into_iter().flatten().collect();
        conflicts.extend(field("Conflicts")?.into_iter().flatten());
        Ok(Version {
            name: name.to_owned(),
            version: version.to_owned(),
            provides: field("Provides")?.into_iter().flatten().collect(),
            depends,
            conflicts,
        })
    }

    /// Whether this version is or provides what `wanted` asks for (an unversioned
    /// `Provides` satisfies only unversioned relations, as in dpkg).
    fn satisfies(&self, wanted: &Relation) -> bool {
        if self.name == wanted.name && wanted.accepts_version(&self.version) {
            return true;
        }
        self.provides
            .iter()
            .filter(|provided| provided.name == wanted.name)
            .any(
                |provided| match (&wanted.constraint, &provided.constraint) {
                    (None, _) => true,
                    (Some(_), Some((_, version))) => wanted.accepts_version(version),
                    (Some(_), None) => false,
                },
            )
    }
}

/// [`held_back`] over the image's own database (`status`, or distroless `status.d`).
///
/// # Errors
/// [`DpkgError::Database`] when the database cannot be read, [`DpkgError::Package`] when
/// a new control file cannot.
pub fn held_back_in(
    image: &dyn ImageFiles,
    upgrades: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<HeldBack>, DpkgError> {
    let status_key = format!("/{STATUS}");
    let dir_key = format!("/{STATUS_DIR}/");
    let files = image.read(&[&status_key, &dir_key])?;
    let mut texts: Vec<String> = Vec::new();
    for (path, bytes) in &files {
        let is_stanza = path == &status_key
            || path
                .strip_prefix(&dir_key)
                .is_some_and(|file| !file.ends_with(".md5sums") && !file.contains('/'));
        if !is_stanza {
            continue;
        }
        let text = String::from_utf8(bytes.clone()).map_err(|_| DpkgError::Database {
            path: path.trim_start_matches('/').to_owned(),
            reason: "not UTF-8".to_owned(),
        })?;
        texts.extend(
            StatusFile::parse(&text)
                .paragraphs
                .into_iter()
                .map(|(p, _)| p),
        );
    }
    // Sorted, so the reasons do not depend on the order files were read in.
    texts.sort();
    let installed: Vec<Stanza> = texts.iter().filter_map(|t| Stanza::parse(t).ok()).collect();
    held_back(&installed, upgrades)
        .map_err(|(package, reason)| DpkgError::Package { package, reason })
}

/// For each package of `upgrades` (name -> the new version's `control`), the other
/// packages of `upgrades` its new version Depends or Pre-Depends on (by name or through
/// `Provides`, any alternative): what must be configured before it. A control that cannot
/// be read has none (dpkg itself then says what is wrong).
pub fn planned_dependencies(upgrades: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<String>> {
    let versions: Vec<Version> = upgrades
        .values()
        .filter_map(|control| std::str::from_utf8(control).ok())
        .filter_map(|text| Stanza::parse(text).ok())
        .filter_map(|stanza| Version::read(&stanza).ok())
        .collect();
    let provider = |wanted: &Relation| -> Option<&str> {
        versions
            .iter()
            .find(|v| v.name == wanted.name || v.provides.iter().any(|p| p.name == wanted.name))
            .map(|v| v.name.as_str())
    };
    versions
        .iter()
        .map(|version| {
            let mut needs: Vec<String> = version
                .depends
                .iter()
                .flatten()
                .filter_map(provider)
                .filter(|name| *name != version.name)
                .map(str::to_owned)
                .collect();
            needs.sort_unstable();
            needs.dedup();
            (version.name.clone(), needs)
        })
        .collect()
}

/// Whether `status` (a dpkg `Status:` value; absent in some distroless stanzas) says the
/// package's files are on disk.
fn is_present(status: Option<&str>) -> bool {
    status
        .and_then(|s| s.split_whitespace().nth(2))
        .is_none_or(|state| !matches!(state, "not-installed" | "config-files"))
}

/// The upgrades of `upgrades` (name -> the new version's `control`) that `apt-get upgrade`
/// would keep back, over `installed` (the image's status stanzas), sorted by name.
///
/// # Errors
/// The name of a package whose control file cannot be read, with the reason.
pub fn held_back(
    installed: &[Stanza],
    upgrades: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<HeldBack>, (String, String)> {
    let old: Vec<Version> = installed
        .iter()
        .filter(|s| is_present(s.get("Status")))
        .filter_map(|s| Version::read(s).ok())
        .collect();
    let mut new: BTreeMap<&str, Version> = BTreeMap::new();
    for (name, control) in upgrades {
        let version = String::from_utf8(control.clone())
            .map_err(|_| "the control file is not UTF-8".to_owned())
            .and_then(|text| Stanza::parse(&text))
            .and_then(|stanza| Version::read(&stanza))
            .map_err(|reason| (name.clone(), reason))?;
        new.insert(name.as_str(), version);
    }
    let mut held: BTreeMap<String, HeldBack> = BTreeMap::new();
    loop {
        let upgraded = |name: &str| new.contains_key(name) && !held.contains_key(name);
        let world: Vec<&Version> = old
            .iter()
            .map(|v| match new.get(v.name.as_str()) {
                Some(new_version) if upgraded(&v.name) => new_version,
                _ => v,
            })
            .collect();
        let holds = |group: &Alternatives, packages: &[&Version]| {
            group
                .iter()
                .any(|wanted| packages.iter().any(|p| p.satisfies(wanted)))
        };
        let original: Vec<&Version> = old.iter().collect();
        let mut found: Vec<HeldBack> = Vec::new();
        for (name, version) in new.iter().filter(|(name, _)| upgraded(name)) {
            let before = old.iter().find(|v| v.name == *name);
            for group in &version.depends {
                if holds(group, &world) || already_broken(group, before, &original) {
                    continue;
                }
                let missing = describe_missing(group, &world, &held);
                found.push(HeldBack {
                    name: (*name).to_owned(),
                    version: version.version.clone(),
                    reason: format!(
                        "{name} {} needs {}, {missing}",
                        version.version,
                        show(group)
                    ),
                });
            }
            for conflict in &version.conflicts {
                if let Some(other) = world
                    .iter()
                    .find(|p| p.name == conflict.name && p.name != *name)
                    .filter(|p| conflict.accepts_version(&p.version))
                {
                    found.push(HeldBack {
                        name: (*name).to_owned(),
                        version: version.version.clone(),
                        reason: format!(
                            "{name} {} breaks {} {}, which stays installed",
                            version.version, other.name, other.version
                        ),
                    });
                }
            }
        }
        for stays in old.iter().filter(|v| !upgraded(&v.name)) {
            for group in &stays.depends {
                if !holds(group, &original) || holds(group, &world) {
                    continue;
                }
                for culprit in new.values().filter(|n| upgraded(&n.name)) {
                    let named = group.iter().any(|r| {
                        r.name == culprit.name || culprit.provides.iter().any(|p| p.name == r.name)
                    });
                    if named {
                        found.push(HeldBack {
                            name: culprit.name.clone(),
                            version: culprit.version.clone(),
                            reason: format!(
                                "{} {} stays installed and needs {}, which {} {} does not satisfy",
                                stays.name,
                                stays.version,
                                show(group),
                                culprit.name,
                                culprit.version
                            ),
                        });
                    }
                }
            }
        }
        if found.is_empty() {
            return Ok(held.into_values().collect());
        }
        for entry in found {
            held.entry(entry.name.clone()).or_insert(entry);
        }
    }
}

/// Whether the installed version had the same group (by names) and the image left it
/// unsatisfied already.
fn already_broken(group: &Alternatives, before: Option<&Version>, original: &[&Version]) -> bool {
    let names = |g: &Alternatives| g.iter().map(|r| r.name.clone()).collect::<BTreeSet<_>>();
    before.is_some_and(|before| {
        before.depends.iter().any(|old_group| {
            names(old_group) == names(group)
                && !old_group
                    .iter()
                    .any(|wanted| original.iter().any(|p| p.satisfies(wanted)))
        })
    })
}

/// Why nothing satisfies `group`, for the reason's sentence.
fn describe_missing(
    group: &Alternatives,
    world: &[&Version],
    held: &BTreeMap<String, HeldBack>,
) -> String {
    let known = |r: &Relation| {
        world
            .iter()
            .any(|p| p.name == r.name || p.provides.iter().any(|v| v.name == r.name))
    };
    if let Some(kept) = group.iter().find(|r| held.contains_key(&r.name)) {
        format!("and {} is kept back", kept.name)
    } else if group.iter().any(known) {
        "which no installed or planned version satisfies".to_owned()
    } else {
        "which is not installed (apt-get upgrade installs no new package)".to_owned()
    }
}

fn show(group: &Alternatives) -> String {
    group
        .iter()
        .map(Relation::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_dependencies_name_only_planned_packages_by_name_or_provides() {
        let planned = upgrades(&[
            "Package: util-linux\nVersion: 2.39.3-9ubuntu6.2\n\
             Pre-Depends: libblkid1 (>= 2.37.2), libc6 (>= 2.38)\n\
             Depends: libuuid1 | uuid-runtime, util-linux-extra\n",
            "Package: libuuid1\nVersion: 2.39.3-9ubuntu6.2\nDepends: libc6 (>= 2.25)\n",
            "Package: libc6\nVersion: 2.39-0ubuntu8.4\nProvides: libc6-x32-compat\n\
             Depends: libgcc-s1\n",
            "Package: libgcc-s1\nVersion: 14.2.0-4ubuntu2~24.04\nDepends: libc6-x32-compat\n",
        ]);
        let needs = planned_dependencies(&planned);
        // libblkid1 and util-linux-extra are not planned: the installed ones stay.
        assert_eq!(needs["util-linux"], ["libc6", "libuuid1"]);
        assert_eq!(needs["libuuid1"], ["libc6"]);
        assert_eq!(needs["libc6"], ["libgcc-s1"]);
        assert_eq!(needs["libgcc-s1"], ["libc6"], "through libc6's Provides");
    }

    fn stanzas(text: &str) -> Vec<Stanza> {
        StatusFile::parse(text)
            .paragraphs
            .iter()
            .map(|(p, _)| Stanza::parse(p).unwrap())
            .collect()
    }

    fn upgrades(controls: &[&str]) -> BTreeMap<String, Vec<u8>> {
        controls
            .iter()
            .map(|c| {
                let name = Stanza::parse(c)
                    .unwrap()
                    .word("Package")
                    .unwrap()
                    .to_owned();
                (name, c.as_bytes().to_vec())
            })
            .collect()
    }

    fn names(held: &[HeldBack]) -> Vec<&str> {
        held.iter().map(|h| h.name.as_str()).collect()
    }

    /// Noble's libpam 1.5.3-5ubuntu5.7, trimmed: the new libpam-modules(-bin) Pre-Depend on
    /// libdb5.3t64, which a minbase image does not have.
    const NOBLE: &str = "\
Package: libpam-modules-bin
Status: install ok installed
Version: 1.5.3-5ubuntu5.1
Depends: libpam0g (>= 1.5.3), libc6 (>= 2.34)

Package: libpam-modules
Status: install ok installed
Version: 1.5.3-5ubuntu5.1
Pre-Depends: libpam-modules-bin (= 1.5.3-5ubuntu5.1), libc6 (>= 2.34)

Package: libpam0g
Status: install ok installed
Version: 1.5.3-5ubuntu5.1
Depends: libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0

Package: libpam-runtime
Status: install ok installed
Version: 1.5.3-5ubuntu5.1
Depends: debconf (>= 0.5) | debconf-2.0, libpam-modules (>= 1.0.1-6)

Package: debconf
Status: install ok installed
Version: 1.5.86ubuntu1
Provides: debconf-2.0

Package: libc6
Status: install ok installed
Version: 2.39-0ubuntu8.4

Package: libdb5.3t64
Status: deinstall ok config-files
Version: 5.3.28+dfsg2-7
";

    const MODULES_BIN_NEW: &str = "Package: libpam-modules-bin\nVersion: 1.5.3-5ubuntu5.7\n\
        Depends: libaudit1 (>= 1:2.2.1), libdb5.3t64, libpam0g (>= 1.5.3-5ubuntu5.7)\n";
    const MODULES_NEW: &str = "Package: libpam-modules\nVersion: 1.5.3-5ubuntu5.7\n\
        Pre-Depends: libpam-modules-bin (= 1.5.3-5ubuntu5.7), libdb5.3t64, libc6 (>= 2.34)\n";
    const PAM0G_NEW: &str = "Package: libpam0g\nVersion: 1.5.3-5ubuntu5.7\n\
        Depends: libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0\n";
    const RUNTIME_NEW: &str = "Package: libpam-runtime\nVersion: 1.5.3-5ubuntu5.7\n\
        Depends: debconf (>= 0.5) | debconf-2.0, libpam-modules (>= 1.5.3-5ubuntu5.7)\n";

    #[test]
    fn upgrades_needing_a_package_the_image_lacks_are_kept_back_and_the_rest_go_ahead() {
        let held = held_back(
            &stanzas(NOBLE),
            &upgrades(&[MODULES_BIN_NEW, MODULES_NEW, PAM0G_NEW]),
        )
        .unwrap();
        assert_eq!(names(&held), ["libpam-modules", "libpam-modules-bin"]);
        assert_eq!(
            held[1].reason,
            "libpam-modules-bin 1.5.3-5ubuntu5.7 needs libaudit1 (>= 1:2.2.1), which is not \
             installed (apt-get upgrade installs no new package)"
        );
        assert_eq!(held[0].version, "1.5.3-5ubuntu5.7");
    }

    #[test]
    fn an_upgrade_needing_a_kept_back_one_at_its_new_version_is_kept_back_too() {
        let held = held_back(
            &stanzas(NOBLE),
            &upgrades(&[MODULES_BIN_NEW, MODULES_NEW, PAM0G_NEW, RUNTIME_NEW]),
        )
        .unwrap();
        assert_eq!(
            names(&held),
            ["libpam-modules", "libpam-modules-bin", "libpam-runtime"]
        );
        assert_eq!(
            held[2].reason,
            "libpam-runtime 1.5.3-5ubuntu5.7 needs libpam-modules (>= 1.5.3-5ubuntu5.7), and \
             libpam-modules is kept back"
        );
    }

    #[test]
    fn an_upgrade_that_breaks_an_installed_package_staying_behind_is_kept_back() {
        // Only -bin planned: the installed libpam-modules wants it at exactly its version.
        let bin = "Package: libpam-modules-bin\nVersion: 1.5.3-5ubuntu5.7\nDepends: libc6\n";
        let held = held_back(&stanzas(NOBLE), &upgrades(&[bin, PAM0G_NEW])).unwrap();
        assert_eq!(names(&held), ["libpam-modules-bin"]);
        assert!(held[0]
            .reason
            .starts_with("libpam-modules 1.5.3-5ubuntu5.1 stays installed and needs"));
        // Both planned together and satisfiable: nothing is kept back.
        let modules = "Package: libpam-modules\nVersion: 1.5.3-5ubuntu5.7\n\
            Pre-Depends: libpam-modules-bin (= 1.5.3-5ubuntu5.7)\n";
        let held = held_back(&stanzas(NOBLE), &upgrades(&[bin, modules, RUNTIME_NEW])).unwrap();
        assert_eq!(held, []);
    }

    #[test]
    fn provides_breaks_and_already_broken_groups_follow_dpkg() {
        // An unversioned Provides satisfies only unversioned relations.
        let wants_versioned = "Package: libpam0g\nVersion: 1.5.3-5ubuntu5.7\n\
            Depends: debconf-2.0 (>= 2)\n";
        let held = held_back(&stanzas(NOBLE), &upgrades(&[wants_versioned])).unwrap();
        assert_eq!(names(&held), ["libpam0g"]);
        assert!(held[0]
            .reason
            .ends_with("which no installed or planned version satisfies"));
        let breaks = "Package: libpam0g\nVersion: 1.5.3-5ubuntu5.7\n\
            Breaks: libpam-runtime (<< 1.5.3-5ubuntu5.7)\n";
        let held = held_back(&stanzas(NOBLE), &upgrades(&[breaks])).unwrap();
        assert_eq!(
            held[0].reason,
            "libpam0g 1.5.3-5ubuntu5.7 breaks libpam-runtime 1.5.3-5ubuntu5.1, which stays installed"
        );
        // With libpam-runtime upgraded too, nothing is broken; with that upgrade kept back
        // (it needs the new libpam-modules), libpam0g is kept back with it.
        let runtime = "Package: libpam-runtime\nVersion: 1.5.3-5ubuntu5.7\nDepends: debconf\n";
        assert_eq!(
            held_back(&stanzas(NOBLE), &upgrades(&[breaks, runtime])).unwrap(),
            []
        );
        let held = held_back(&stanzas(NOBLE), &upgrades(&[breaks, RUNTIME_NEW])).unwrap();
        assert_eq!(names(&held), ["libpam-runtime", "libpam0g"], "{held:?}");
        // A distroless image without dpkg: the old version wanted it too.
        let image = "Package: base-files\nVersion: 12.4+deb12u9\nPre-Depends: dpkg (>= 1.17)\n";
        let new = "Package: base-files\nVersion: 12.4+deb12u10\nPre-Depends: dpkg (>= 1.19)\n";
        assert_eq!(held_back(&stanzas(image), &upgrades(&[new])).unwrap(), []);
    }
}
