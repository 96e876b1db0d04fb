//! [`build`]: the layer entries and database changes for a set of package upgrades. The
//! image's database is read in [`image_db`], package paths are placed in [`paths`], and
//! the database and scripts half is in [`record`].

mod image_db;
mod paths;
mod record;
mod statoverride;

use image_db::Database;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;

use md5::{Digest as _, Md5};

use super::database::{
    parse_conffiles, parse_md5sums, Diversions, Owners, Stanza, StatusFile, DIVERSIONS, INFO_DIR,
    STATUS, STATUS_DIR,
};
use super::filters::PathFilters;
use super::scripts::{ScriptPlan, TriggerInterests};
use super::{Configure, DpkgChanges, DpkgError, ImageFiles, InfoFiles, NewPackage, PackageOutcome};
use crate::image::{EntryKind as NodeKind, Filesystem};
use crate::patch::layer::{EntryKind, FileData, LayerBuilder, LayerEntry};
use crate::pkgs::dpkg::debfile::{DataEntry, DataKind, DebPackage};

/// Symbolic links followed while resolving one directory of a package path.
const MAX_SYMLINKS: u32 = 40;
const TRIGGERS_DIR: &str = "var/lib/dpkg/triggers";
const DPKG_CFG: &str = "etc/dpkg/dpkg.cfg";
const DPKG_CFG_DIR: &str = "etc/dpkg/dpkg.cfg.d";
const STATOVERRIDE: &str = "var/lib/dpkg/statoverride";

/// Computes what installing `packages` over the image does.
///
/// # Errors
/// [`DpkgError`] when the database is missing or malformed, a package is not installed,
/// or a package's files conflict with the image (a directory where it has a file).
pub fn build(
    image: &dyn ImageFiles,
    packages: &[NewPackage<'_>],
) -> Result<DpkgChanges, DpkgError> {
    let db = Database::read(image)?;
    let epoch = packages
        .iter()
        .flat_map(|p| p.deb.entries().iter().map(|e| e.mtime))
        .max()
        .unwrap_or(0);
    let mut state = Builder {
        tree: image.tree(),
        db: &db,
        layer: LayerBuilder::default(),
        physical: crate::patch::physical::PhysicalPaths::default(),
        epoch,
        status: db.status.clone(),
        unpacked: db.status.clone(),
        scripts: ScriptPlan::default(),
        touched: BTreeSet::new(),
        activated: BTreeSet::new(),
    };

    let contexts = packages
        .iter()
        .map(|p| state.context(p))
        .collect::<Result<Vec<_>, _>>()?;
    // The current contents of every conffile, read in one pass over the image.
    let mut conffile_paths = Vec::new();
    for context in &contexts {
        for path in &context.new_conffiles {
            let target = db.diversions.target(path, context.package.name).to_owned();
            conffile_paths.push(format!(
                "/{}",
                state.physical(&target, context.package.name)?
            ));
        }
    }
    let wanted: Vec<&str> = conffile_paths.iter().map(String::as_str).collect();
    let current = image.read(&wanted)?;

    let mut outcomes = Vec::new();
    for context in &contexts {
        outcomes.push(state.install(context, &current)?);
    }
    state.plan_triggers(&contexts);
    let info = match db.status {
        Some(_) => state.physical_dir(INFO_DIR, "dpkg")?,
        None => String::new(),
    };
    let configure = state
        .write_status()?
        .map(|(status_path, unpacked_status)| Configure {
            status_path,
            unpacked_status,
            new_info: contexts
                .iter()
                .map(|c| format!("{info}/{}.", c.base))
                .collect(),
        });
    Ok(DpkgChanges {
        layer: state.layer,
        outcomes,
        scripts: state.scripts,
        epoch,
        distroless: db.status.is_none(),
        configure,
    })
}

/// One package's old state and new contents.
struct Context<'p, 'd> {
    package: &'p NewPackage<'d>,
    /// `info/` base name: `libc6:amd64` for Multi-Arch: same, else the package name.
    base: String,
    new_version: String,
    old_conffiles: BTreeMap<String, (String, bool)>,
    /// `Priority` and `Section` of the installed entry: dpkg keeps them when the new
    /// control file does not set them.
    old_classification: Vec<(String, String)>,
    /// Paths (no leading `/`) the new version's `conffiles` lists.
    new_conffiles: Vec<String>,
    /// The distroless `status.d` file that holds the package.
    status_d_file: Option<String>,
    /// The installed entry: the status paragraph or the `status.d` stanza.
    old_stanza: Stanza,
    old_md5sums: HashMap<String, String>,
    old_paths: Vec<String>,
}

struct Builder<'a> {
    tree: &'a Filesystem,
    db: &'a Database,
    layer: LayerBuilder,
    /// Package directories and where they are in the image.
    physical: crate::patch::physical::PhysicalPaths,
    epoch: u64,
    status: Option<StatusFile>,
    /// The status as `dpkg --unpack` of the same packages leaves it.
    unpacked: Option<StatusFile>,
    scripts: ScriptPlan,
    /// Package paths the upgrades wrote or removed, for file triggers.
    touched: BTreeSet<String>,
    activated: BTreeSet<String>,
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn read_member(deb: &DebPackage, entry: &DataEntry, package: &str) -> Result<Vec<u8>, DpkgError> {
    let mut data = Vec::new();
    deb.open_file(entry)
        .and_then(|mut r| r.read_to_end(&mut data))
        .map_err(|e| DpkgError::Package {
            package: package.to_owned(),
            reason: format!("reading {}: {e}", entry.path),
        })?;
    Ok(data)
}

impl<'a> Builder<'a> {
    fn context<'p, 'd>(&self, package: &'p NewPackage<'d>) -> Result<Context<'p, 'd>, DpkgError> {
        let name = package.name;
        let package_error = |reason: String| DpkgError::Package {
            package: name.to_owned(),
            reason,
        };
        let control = std::str::from_utf8(package.deb.control())
            .map_err(|_| package_error("the control file is not UTF-8".to_owned()))?;
        let control = Stanza::parse(control).map_err(package_error)?;
        if control.word("Package") != Some(name) {
            return Err(package_error(format!(
                "the .deb is package {:?}",
                control.word("Package").unwrap_or_default()
            )));
        }
        let new_version = control
            .word("Version")
            .ok_or_else(|| package_error("the control file has no Version".to_owned()))?
            .to_owned();
        let arch = control.word("Architecture").unwrap_or_default();
        if arch != package.architecture && arch != "all" && package.architecture != "all" {
            return Err(package_error(format!(
                "the .deb is for {arch}, the installed package for {}",
                package.architecture
            )));
        }
        let qualified = format!("{name}:{}", package.architecture);
        let base = if self.db.info.contains_key(&qualified)
            || control.word("Multi-Arch") == Some("same")
        {
            qualified
        } else {
            name.to_owned()
        };
        let (old_stanza, status_d_file) = match &self.db.status {
            Some(status) => {
                let at = status
                    .find(name, Some(package.architecture))
                    .ok_or_else(|| DpkgError::Database {
                        path: STATUS.to_owned(),
                        reason: format!("{name} is not installed"),
                    })?;
                let text = &status.paragraphs[at].0;
                (Stanza::parse(text).map_err(package_error)?, None)
            }
            None => {
                let found = self.db.status_d.iter().find_map(|(file, data)| {
                    if file.ends_with(".md5sums") {
                        return None;
                    }
                    let stanza = Stanza::parse(&String::from_utf8_lossy(data)).ok()?;
                    (stanza.word("Package") == Some(name)).then(|| (stanza, file.clone()))
                });
                let (stanza, file) = found.ok_or_else(|| DpkgError::Database {
                    path: STATUS_DIR.to_owned(),
                    reason: format!("no file describes {name}"),
                })?;
                (stanza, Some(file))
            }
        };
        if old_stanza.word("Version") != Some(package.installed_version) {
            return Err(package_error(format!(
                "the image has version {}, the plan says {}",
                old_stanza.word("Version").unwrap_or_default(),
                package.installed_version
            )));
        }
        let (old_md5sums, old_paths) = match &status_d_file {
            Some(file) => {
                let sums = self
                    .db
                    .status_d
                    .get(&format!("{file}.md5sums"))
                    .map(|d| parse_md5sums(d))
                    .unwrap_or_default();
                let paths = sums.keys().cloned().collect();
                (sums, paths)
            }
            None => {
                let members = self.db.info.get(&base);
                let sums = members
                    .and_then(|m| m.get("md5sums"))
                    .map(|d| parse_md5sums(d))
                    .unwrap_or_default();
                let paths = members
                    .and_then(|m| m.get("list"))
                    .map(|l| {
                        String::from_utf8_lossy(l)
                            .lines()
                            .map(|p| p.trim_start_matches('/').to_owned())
                            .filter(|p| !p.is_empty() && p != ".")
                            .collect()
                    })
                    .unwrap_or_default();
                (sums, paths)
            }
        };
        let new_conffiles = package
            .deb
            .control_members()
            .get("conffiles")
            .map(|m| {
                String::from_utf8_lossy(&m.data)
                    .lines()
                    .filter_map(|line| {
                        let line = line.trim();
                        // Flagged lines (`remove-on-upgrade /etc/x`) are not installed.
                        line.starts_with('/')
                            .then(|| line.trim_start_matches('/').to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Context {
            package,
            base,
            new_version,
            old_conffiles: parse_conffiles(old_stanza.get("Conffiles")),
            old_classification: ["Priority", "Section"]
                .iter()
                .filter_map(|f| old_stanza.get(f).map(|v| ((*f).to_owned(), v.to_owned())))
                .collect(),
            new_conffiles,
            status_d_file,
            old_stanza,
            old_md5sums,
            old_paths,
        })
    }

    /// The entry dpkg extracts for the archive's `source` at `path`: the archive's owner
    /// and mode, or a statoverride's (files and directories both, symbolic links the
    /// owner only, hard links nothing: they share their target's inode).
    fn entry(&self, path: String, source: &DataEntry, kind: EntryKind) -> LayerEntry {
        let mut entry = LayerEntry {
            path,
            mode: source.mode,
            uid: source.uid,
            gid: source.gid,
            uname: source.uname.clone(),
            gname: source.gname.clone(),
            mtime: source.mtime,
            kind,
        };
        if matches!(entry.kind, EntryKind::Hardlink(_)) {
            return entry;
        }
        // dpkg takes the archive's owner names as the image knows them, the numbers only
        // for a name the image lacks.
        if let Some(uid) = self.db.statoverrides.user(&entry.uname) {
            entry.uid = uid;
        }
        if let Some(gid) = self.db.statoverrides.group(&entry.gname) {
            entry.gid = gid;
        }
        if let Some(over) = self.db.statoverrides.get(&source.path) {
            if let Some((uid, name)) = over.uid {
                (entry.uid, entry.uname) = (uid, name);
            }
            if let Some((gid, name)) = over.gid {
                (entry.gid, entry.gname) = (gid, name);
            }
            if !matches!(entry.kind, EntryKind::Symlink(_)) {
                entry.mode = over.mode;
            }
        }
        entry
    }

    /// The mode dpkg gives the archive's `source` once extracted.
    fn extracted_mode(&self, source: &DataEntry) -> u32 {
        self.db
            .statoverrides
            .get(&source.path)
            .map_or(source.mode, |over| over.mode)
    }

    /// A database file written by the engine: root-owned, at the epoch.
    fn db_entry(&self, path: String, mode: u32, data: Vec<u8>) -> LayerEntry {
        LayerEntry {
            path,
            mode,
            uid: 0,
            gid: 0,
            uname: "root".to_owned(),
            gname: "root".to_owned(),
            mtime: self.epoch,
            kind: EntryKind::File(FileData::Bytes(data)),
        }
    }

    fn install(
        &mut self,
        context: &Context<'_, '_>,
        current: &HashMap<String, Vec<u8>>,
    ) -> Result<PackageOutcome, DpkgError> {
        let package = context.package;
        let name = package.name;
        let deb = package.deb;
        let new_md5sums = deb
            .control_members()
            .get("md5sums")
            .map(|m| parse_md5sums(&m.data))
            .unwrap_or_default();
        let link_targets: HashSet<&str> = deb
            .entries()
            .iter()
            .filter(|e| e.kind == DataKind::Hardlink)
            .filter_map(|e| e.link_target.as_deref())
            .collect();
        let conffiles: HashSet<&str> = context.new_conffiles.iter().map(String::as_str).collect();
        let mut outcome = PackageOutcome {
            name: name.to_owned(),
            old_version: package.installed_version.to_owned(),
            new_version: context.new_version.clone(),
            files_written: 0,
            files_unchanged: 0,
            files_removed: 0,
            conffiles_kept: Vec::new(),
            conffiles_left_deleted: Vec::new(),
        };
        let mut new_paths: HashSet<&str> = HashSet::new();
        // Physical paths removed, filtered copies included: a directory left empty goes.
        let mut removed: HashSet<String> = HashSet::new();
        let mut conffile_md5: BTreeMap<String, String> = BTreeMap::new();
        let conflict = |path: &str, reason: &str| DpkgError::Conflict {
            package: name.to_owned(),
            path: format!("/{path}"),
            reason: reason.to_owned(),
        };

        for entry in deb.entries() {
            if entry.path.is_empty() {
                continue;
            }
            let skipped = self.db.filters.skips(
                &entry.path,
                matches!(entry.kind, DataKind::Dir | DataKind::Symlink),
            );
            // dpkg counts a filtered directory as not in the new version: the old one goes
            // when empty, as below.
            if !(skipped && entry.kind == DataKind::Dir) {
                new_paths.insert(&entry.path);
            }
            let target = self.db.diversions.target(&entry.path, name).to_owned();
            let physical = self.physical(&target, name)?;
            let node = self.tree.get(&physical).cloned();
            if skipped {
                // Listed, not written; an older copy goes, as dpkg removes it.
                if entry.kind != DataKind::Dir && node.as_ref().is_some_and(|n| !n.is_dir()) {
                    self.layer.whiteout(&physical);
                    removed.insert(physical.clone());
                    self.touched.insert(entry.path.clone());
                    outcome.files_removed += 1;
                }
                continue;
            }
            let written = match entry.kind {
                DataKind::Dir => {
                    match node.as_ref().map(|n| n.kind) {
                        Some(NodeKind::Dir) => false,
                        Some(NodeKind::Symlink) => {
                            match self.tree.resolve(&physical, MAX_SYMLINKS)? {
                            Some((_, n)) if n.is_dir() => false,
                            _ => return Err(conflict(&entry.path, "a directory in the package, a symbolic link to a non-directory in the image")),
                        }
                        }
                        Some(_) => {
                            return Err(conflict(
                                &entry.path,
                                "a directory in the package, a file in the image",
                            ))
                        }
                        None if self.layer.get(&physical).is_some() => false,
                        None => {
                            self.layer
                                .insert(self.entry(physical, entry, EntryKind::Dir));
                            true
                        }
                    }
                }
                DataKind::File => {
                    if node.as_ref().is_some_and(|n| n.is_dir()) {
                        return Err(conflict(
                            &entry.path,
                            "a file in the package, a directory in the image",
                        ));
                    }
                    if conffiles.contains(entry.path.as_str()) {
                        let data = read_member(deb, entry, name)?;
                        let new_md5 = md5_hex(&data);
                        conffile_md5.insert(entry.path.clone(), new_md5.clone());
                        let recorded = context
                            .old_conffiles
                            .get(&format!("/{}", entry.path))
                            .map(|(md5, _)| md5.as_str())
                            .filter(|md5| *md5 != "newconffile");
                        match current.get(&format!("/{physical}")).map(|c| md5_hex(c)) {
                            None if recorded.is_some() && node.is_none() => {
                                outcome
                                    .conffiles_left_deleted
                                    .push(format!("/{}", entry.path));
                                false
                            }
                            Some(md5) if md5 == new_md5 => {
                                outcome.files_unchanged += 1;
                                false
                            }
                            Some(md5) if Some(md5.as_str()) != recorded => {
                                let dist = format!("{physical}.dpkg-dist");
                                let file = EntryKind::File(FileData::Bytes(data));
                                self.layer.insert(self.entry(dist, entry, file));
                                outcome.conffiles_kept.push(format!("/{}", entry.path));
                                true
                            }
                            _ => {
                                let file = EntryKind::File(FileData::Bytes(data));
                                self.layer.insert(self.entry(physical, entry, file));
                                true
                            }
                        }
                    } else {
                        // Python records a source's mtime in its byte-compiled file, and
                        // dpkg rewrites every file: a source left with its old mtime would
                        // give py3compile's output another header than after dpkg.
                        let mtime_is_data = self.db.status.is_some() && entry.path.ends_with(".py");
                        let unchanged = !link_targets.contains(entry.path.as_str())
                            && !mtime_is_data
                            && node.as_ref().is_some_and(|n| {
                                n.kind == NodeKind::File
                                    && n.size == entry.size
                                    && n.mode & 0o7777 == self.extracted_mode(entry) & 0o7777
                            })
                            && context
                                .old_md5sums
                                .get(&entry.path)
                                .is_some_and(|old| new_md5sums.get(&entry.path) == Some(old));
                        if unchanged {
                            outcome.files_unchanged += 1;
                            false
                        } else {
                            let (file, offset, len) = deb.file_slice(entry).ok_or_else(|| {
                                conflict(&entry.path, "no contents in the package")
                            })?;
                            let data = FileData::Slice { file, offset, len };
                            self.layer
                                .insert(self.entry(physical, entry, EntryKind::File(data)));
                            true
                        }
                    }
                }
                DataKind::Symlink => {
                    let link = entry.link_target.clone().unwrap_or_default();
                    let same = node.as_ref().is_some_and(|n| {
                        n.kind == NodeKind::Symlink
                            && n.link_target.as_deref() == Some(link.as_bytes())
                    });
                    if same {
                        outcome.files_unchanged += 1;
                        false
                    } else if node.as_ref().is_some_and(|n| n.is_dir()) {
                        return Err(conflict(
                            &entry.path,
                            "a symbolic link in the package, a directory in the image",
                        ));
                    } else {
                        self.layer
                            .insert(self.entry(physical, entry, EntryKind::Symlink(link)));
                        true
                    }
                }
                DataKind::Hardlink => {
                    let link = entry.link_target.clone().unwrap_or_default();
                    let link = self.db.diversions.target(&link, name).to_owned();
                    let link = self.physical(&link, name)?;
                    self.layer
                        .insert(self.entry(physical, entry, EntryKind::Hardlink(link)));
                    true
                }
            };
            if written {
                outcome.files_written += 1;
                self.touched.insert(entry.path.clone());
            }
        }

        // Files the old version had and the new one does not, unless another package owns
        // them or they are conffiles (dpkg keeps obsolete conffiles).
        let mut dirs: Vec<String> = Vec::new();
        let mut gone: Vec<&String> = context
            .old_paths
            .iter()
            .filter(|p| !new_paths.contains(p.as_str()))
            .collect();
        gone.sort_by(|a, b| b.cmp(a));
        let owner = context.status_d_file.as_deref().unwrap_or(&context.base);
        for path in gone {
            if self.db.owners.owned_by_other(path, owner)
                || context.old_conffiles.contains_key(&format!("/{path}"))
            {
                continue;
            }
            let target = self.db.diversions.target(path, name).to_owned();
            let Ok(physical) = self.physical(&target, name) else {
                continue;
            };
            match self.tree.get(&physical) {
                None => {}
                Some(node) if node.is_dir() => dirs.push(physical),
                Some(_) => {
                    self.layer.whiteout(&physical);
                    self.touched.insert(path.clone());
                    removed.insert(physical);
                    outcome.files_removed += 1;
                }
            }
        }
        for dir in dirs {
            let empty = self.tree.list_dir(&dir).iter().all(|(child, _)| {
                let child = String::from_utf8_lossy(child);
                removed.contains(&format!("{dir}/{child}"))
            });
            let prefix = format!("{dir}/");
            let refilled = self
                .layer
                .iter()
                .any(|e| e.path.starts_with(&prefix) && !matches!(e.kind, EntryKind::Whiteout));
            if empty && !refilled {
                // One whiteout for the directory replaces those of its files.
                let below: Vec<String> = self
                    .layer
                    .iter()
                    .filter(|e| e.path.starts_with(&prefix))
                    .map(|e| e.path.clone())
                    .collect();
                for path in below {
                    self.layer.remove(&path);
                }
                self.layer.whiteout(&dir);
                removed.insert(dir);
                outcome.files_removed += 1;
            }
        }

        self.write_database(context, &conffile_md5)?;
        self.plan_scripts(context);
        Ok(outcome)
    }
}
