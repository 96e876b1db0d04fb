//! One package's upgrade: its entries into the layer (through directory symlinks, protected
//! paths, ownership rules), its new file list, and whiteouts for what the old version had.

use std::collections::{HashMap, HashSet};

use super::build::{Context, Engine, Installed, Owner};
use super::db::{self, Acl, NewDir, DEFAULT_DIR_ACL};
use super::extras::Protect;
use super::{ApkError, ApkNewPackage, ApkOutcome};
use crate::image::EntryKind as NodeKind;
use crate::patch::layer::{EntryKind, FileData};
use crate::pkgs::apk::package::ApkEntryKind;

const MAX_SYMLINKS: u32 = 40;

impl Engine<'_> {
    pub(super) fn install(
        &mut self,
        cx: &Context<'_>,
        p: &ApkNewPackage<'_>,
        me: usize,
        current: &HashMap<String, Vec<u8>>,
    ) -> Result<Installed, ApkError> {
        let (apk, name) = (p.apk, p.name);
        let stanza = &cx.stanzas[me];
        let old: HashMap<String, &db::DbFile> = stanza.files().collect();
        let conflict = |path: &str, reason: String| ApkError::Conflict {
            package: name.to_owned(),
            path: format!("/{path}"),
            reason,
        };
        let link_targets: HashSet<&str> = apk
            .entries()
            .iter()
            .filter(|e| e.kind == ApkEntryKind::Hardlink)
            .filter_map(|e| e.link_target.as_deref())
            .collect();
        let mut outcome = ApkOutcome {
            name: name.to_owned(),
            old_version: p.installed_version.to_owned(),
            new_version: apk.info().pkgver.clone(),
            files_written: 0,
            files_unchanged: 0,
            files_removed: 0,
            protected_kept: Vec::new(),
        };
        let mut dirs: Vec<NewDir> = Vec::new();
        let mut dir_at: HashMap<String, usize> = HashMap::new();
        let mut sums: HashMap<&str, Option<String>> = HashMap::new();
        let mut written_at: HashMap<&str, String> = HashMap::new();
        let mut new_paths: HashSet<&str> = HashSet::new();
        let mut new_physical: HashSet<String> = HashSet::new();
        let mut takeovers = Vec::new();

        for e in apk.entries() {
            let acl = Acl {
                uid: cx.ids.uid(&e.uname, e.uid),
                gid: cx.ids.gid(&e.gname, e.gid),
                mode: e.mode,
            };
            let physical = self.physical(&e.path, name)?;
            new_physical.insert(physical.clone());
            let node = self.tree.get(&physical).cloned();
            if e.kind == ApkEntryKind::Dir {
                match dir_at.get(&e.path) {
                    Some(&i) => dirs[i].acl = acl,
                    None => {
                        dir_at.insert(e.path.clone(), dirs.len());
                        dirs.push(NewDir {
                            name: e.path.clone(),
                            acl,
                            files: Vec::new(),
                        });
                    }
                }
                match node.map(|n| n.kind) {
                    Some(NodeKind::Dir) => {}
                    Some(NodeKind::Symlink) => match self.tree.resolve(&physical, MAX_SYMLINKS)? {
                        Some((_, n)) if n.is_dir() => {}
                        _ => return Err(conflict(&e.path, "a directory in the package, a symbolic link to a non-directory in the image".to_owned())),
                    },
                    Some(_) => return Err(conflict(&e.path, "a directory in the package, a file in the image".to_owned())),
                    None if self.layer.get(&physical).is_some() => {}
                    None => {
                        let entry = self.entry(cx, physical, e, EntryKind::Dir);
                        self.layer.insert(entry);
                        outcome.files_written += 1;
                    }
                }
                continue;
            }

            let (parent, file_name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
            let di = match dir_at.get(parent) {
                Some(&i) => i,
                None if parent.is_empty() => {
                    dir_at.insert(String::new(), dirs.len());
                    dirs.push(NewDir {
                        name: String::new(),
                        acl: DEFAULT_DIR_ACL,
                        files: Vec::new(),
                    });
                    dirs.len() - 1
                }
                None => {
                    return Err(ApkError::Package {
                        package: name.to_owned(),
                        reason: format!("/{}: no directory entry for /{parent} before it in the package (apk would not install it)", e.path),
                    })
                }
            };
            match self.ownership(cx, p, me, &e.path)? {
                Owner::Skip => continue,
                Owner::Take(span) => takeovers.extend(span),
            }
            let checksum = match e.kind {
                ApkEntryKind::Hardlink => e
                    .link_target
                    .as_deref()
                    .and_then(|t| sums.get(t).cloned())
                    .flatten(),
                _ => e.checksum.as_ref().map(db::z),
            };
            sums.insert(&e.path, checksum.clone());
            new_paths.insert(&e.path);
            dirs[di]
                .files
                .push((file_name.to_owned(), acl, checksum.clone()));
            if node.as_ref().is_some_and(|n| n.is_dir()) {
                return Err(conflict(
                    &e.path,
                    "a file in the package, a directory in the image".to_owned(),
                ));
            }

            let mut target = physical.clone();
            if node.is_some() && cx.protected.of_dir(parent) != Protect::None {
                let now = self.current_sum(&physical, current);
                let recorded = cx
                    .records
                    .get(&e.path)
                    .and_then(|(_, r)| r.checksum.clone());
                let changed = recorded.is_none() || now != recorded;
                if changed {
                    if now.is_some() && now == checksum {
                        outcome.files_unchanged += 1;
                        written_at.insert(&e.path, physical);
                        continue;
                    }
                    target = format!("{physical}.apk-new");
                    outcome.protected_kept.push(format!("/{}", e.path));
                }
            }
            if target == physical
                && e.kind != ApkEntryKind::Hardlink
                && !link_targets.contains(e.path.as_str())
            {
                let same_record = old.get(&e.path).is_some_and(|f| {
                    f.checksum.is_some() && f.checksum == checksum && f.acl == acl
                });
                let same_node = node.as_ref().is_some_and(|n| match e.kind {
                    ApkEntryKind::File => {
                        n.kind == NodeKind::File && n.size == e.size && n.mode & 0o7777 == e.mode
                    }
                    ApkEntryKind::Symlink => {
                        n.kind == NodeKind::Symlink
                            && n.link_target.as_deref()
                                == e.link_target.as_deref().map(str::as_bytes)
                    }
                    _ => false,
                });
                if same_record && same_node {
                    outcome.files_unchanged += 1;
                    written_at.insert(&e.path, physical);
                    continue;
                }
            }
            let kind = match e.kind {
                ApkEntryKind::File => {
                    let (file, offset, len) = apk.file_slice(e).ok_or_else(|| {
                        conflict(&e.path, "no contents in the package".to_owned())
                    })?;
                    EntryKind::File(FileData::Slice { file, offset, len })
                }
                ApkEntryKind::Symlink => {
                    EntryKind::Symlink(e.link_target.clone().unwrap_or_default())
                }
                ApkEntryKind::Hardlink | ApkEntryKind::Dir => {
                    let to = e.link_target.as_deref().unwrap_or_default();
                    let at = match written_at.get(to) {
                        Some(at) => at.clone(),
                        None => self.physical(to, name)?,
                    };
                    EntryKind::Hardlink(at)
                }
            };
            let entry = self.entry(cx, target.clone(), e, kind);
            self.layer.insert(entry);
            written_at.insert(&e.path, target);
            outcome.files_written += 1;
        }

        // What the old version had and the new one does not.
        let mut removed: HashSet<String> = HashSet::new();
        let mut gone: Vec<(&String, &&db::DbFile)> = old
            .iter()
            .filter(|(path, _)| !new_paths.contains(path.as_str()))
            .collect();
        gone.sort_by(|a, b| b.0.cmp(a.0));
        for (path, record) in gone {
            let owned_elsewhere = cx.records.get(path.as_str()).is_some_and(|(o, _)| *o != me)
                || cx
                    .claimed
                    .get(path.as_str())
                    .is_some_and(|c| c.iter().any(|o| *o != me));
            if owned_elsewhere {
                continue;
            }
            let Ok(physical) = self.physical(path, name) else {
                continue;
            };
            if new_physical.contains(&physical) || self.layer.get(&physical).is_some() {
                continue; // the same file under another name (through a symlink)
            }
            match self.tree.get(&physical) {
                None => continue,
                Some(n) if n.is_dir() => continue,
                Some(_) => {}
            }
            let parent = path.rsplit_once('/').map_or("", |(d, _)| d);
            if cx.protected.of_dir(parent) != Protect::None
                && (record.checksum.is_none()
                    || self.current_sum(&physical, current) != record.checksum)
            {
                continue; // changed by the image: apk keeps it
            }
            self.layer.whiteout(&physical);
            removed.insert(physical);
            outcome.files_removed += 1;
        }
        let new_dirs: HashSet<&str> = dirs.iter().map(|d| d.name.as_str()).collect();
        let mut old_dirs: Vec<&str> = stanza
            .dirs
            .iter()
            .map(|d| d.name.as_str())
            .filter(|d| !d.is_empty() && !new_dirs.contains(d))
            .filter(|d| {
                cx.dir_owners
                    .get(d)
                    .is_none_or(|o| o.iter().all(|i| *i == me))
            })
            .collect();
        old_dirs.sort_by(|a, b| b.cmp(a));
        for dir in old_dirs {
            let Ok(physical) = self.physical_dir(dir, name) else {
                continue;
            };
            if new_physical.contains(&physical)
                || !self
                    .tree
                    .get(&physical)
                    .is_some_and(|n| n.kind == NodeKind::Dir)
            {
                continue;
            }
            let prefix = format!("{physical}/");
            let empty = self.tree.list_dir(&physical).iter().all(|(child, _)| {
                removed.contains(&format!("{prefix}{}", String::from_utf8_lossy(child)))
            });
            let refilled = self
                .layer
                .iter()
                .any(|e| e.path.starts_with(&prefix) && !matches!(e.kind, EntryKind::Whiteout));
            if empty && !refilled {
                let below: Vec<String> = self
                    .layer
                    .iter()
                    .filter(|e| e.path.starts_with(&prefix))
                    .map(|e| e.path.clone())
                    .collect();
                for path in below {
                    self.layer.remove(&path);
                }
                self.layer.whiteout(&physical);
                removed.insert(physical);
                outcome.files_removed += 1;
            }
        }
        Ok(Installed {
            outcome,
            dirs,
            takeovers,
        })
    }
}
