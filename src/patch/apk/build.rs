//! [`build`]: the layer entries and database changes for a set of apk package upgrades.

use std::collections::{BTreeSet, HashMap};

use super::db::{self, DbFile, NewDir, Stanza};
use super::extras::{self, Ids, Protect, ProtectedPaths, ScriptEntry, TriggerLine};
use super::{
    ApkChanges, ApkError, ApkNewPackage, ApkOutcome, ApkScriptRun, ImageFiles, INSTALLED, SCRIPTS,
    TRIGGERS,
};
use crate::image::{EntryKind as NodeKind, Filesystem};
use crate::patch::layer::{EntryKind, FileData, LayerBuilder, LayerEntry};
use crate::patch::physical::{Conflict, PhysicalPaths};
use crate::pkgs::apk::package::sha1::Sha1;
use crate::pkgs::apk::package::{ApkEntry, ApkEntryKind, SCRIPT_NAMES};

/// Symbolic links followed while resolving one directory of a package path.
const MAX_SYMLINKS: u32 = 40;
const PROTECTED_DIR: &str = "etc/apk/protected_paths.d";
const DB_DIR: &str = "lib/apk/db";

/// Computes what upgrading `packages` in the image does. See the module documentation.
///
/// # Errors
/// [`ApkError`] when the database is missing or malformed, a package is not installed at
/// the version given, the `.apk` is another package or architecture, a file belongs to
/// another package that does not give it up, or the package's paths conflict with the image.
pub fn build(
    image: &dyn ImageFiles,
    packages: &[ApkNewPackage<'_>],
) -> Result<ApkChanges, ApkError> {
    let keys = [INSTALLED, TRIGGERS, SCRIPTS].map(|p| format!("/{p}"));
    let lists_key = format!("/{PROTECTED_DIR}/");
    let mut wanted: Vec<&str> = keys.iter().map(String::as_str).collect();
    wanted.extend([lists_key.as_str(), "/etc/passwd", "/etc/group"]);
    let files = image.read(&wanted)?;
    let database = |path: &str, reason: String| ApkError::Database {
        path: format!("/{path}"),
        reason,
    };
    let installed = files.get(&keys[0]).ok_or_else(|| {
        database(
            INSTALLED,
            "missing: the image has no apk database".to_owned(),
        )
    })?;
    let stanzas = db::parse(installed).map_err(|r| database(INSTALLED, r))?;
    let scripts_tar = match files.get(&keys[2]) {
        Some(data) => Some(extras::parse_scripts_tar(data).map_err(|r| database(SCRIPTS, r))?),
        None => None,
    };
    let protected = ProtectedPaths::new(
        files
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&lists_key).map(|name| (name, v.as_slice()))),
    );
    let ids = Ids::new(
        files.get("/etc/passwd").map(Vec::as_slice),
        files.get("/etc/group").map(Vec::as_slice),
    );

    let mut targets = Vec::new();
    for p in packages {
        let error = |reason: String| ApkError::Package {
            package: p.name.to_owned(),
            reason,
        };
        let at = stanzas
            .iter()
            .position(|s| s.name == p.name)
            .ok_or_else(|| database(INSTALLED, format!("{} is not installed", p.name)))?;
        if targets.contains(&at) {
            return Err(error("given twice".to_owned()));
        }
        let (stanza, info) = (&stanzas[at], p.apk.info());
        if stanza.version != p.installed_version {
            return Err(error(format!(
                "the image has version {}, the plan says {}",
                stanza.version, p.installed_version
            )));
        }
        if info.pkgname != p.name {
            return Err(error(format!("the .apk is package {:?}", info.pkgname)));
        }
        if let (Some(new), Some(old)) = (&info.arch, &stanza.arch) {
            if new != old && new != "noarch" && old != "noarch" {
                return Err(error(format!(
                    "the .apk is for {new}, the installed package for {old}"
                )));
            }
        }
        targets.push(at);
    }
    let epoch = packages
        .iter()
        .flat_map(|p| p.apk.entries().iter().map(|e| e.mtime))
        .chain(packages.iter().map(|p| p.apk.info().builddate))
        .max()
        .unwrap_or(0);

    let mut records: HashMap<String, (usize, DbFile)> = HashMap::new();
    let mut dir_owners: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in stanzas.iter().enumerate() {
        for (path, file) in s.files() {
            records.entry(path).or_insert_with(|| (i, file.clone()));
        }
        for d in &s.dirs {
            dir_owners.entry(d.name.as_str()).or_default().push(i);
        }
    }
    let mut claimed: HashMap<&str, Vec<usize>> = HashMap::new();
    for (p, at) in packages.iter().zip(&targets) {
        for e in p
            .apk
            .entries()
            .iter()
            .filter(|e| e.kind != ApkEntryKind::Dir)
        {
            claimed.entry(e.path.as_str()).or_default().push(*at);
        }
    }
    let cx = Context {
        stanzas: &stanzas,
        records: &records,
        dir_owners: &dir_owners,
        claimed: &claimed,
        targets: &targets,
        protected: &protected,
        ids: &ids,
    };
    let mut engine = Engine {
        tree: image.tree(),
        layer: LayerBuilder::default(),
        physical: PhysicalPaths::default(),
    };

    let wanted = engine.protected_reads(&cx, packages)?;
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let current = image.read(&wanted)?;

    let mut outcomes = Vec::new();
    let mut rendered = Vec::new();
    let mut takeovers: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    let mut modified: BTreeSet<String> = BTreeSet::new();
    for (p, &at) in packages.iter().zip(&targets) {
        let done = engine.install(&cx, p, at, &current)?;
        for (owner, span) in done.takeovers {
            takeovers.entry(owner).or_default().push(span);
        }
        modified.extend(stanzas[at].dirs.iter().map(|d| rooted(&d.name)));
        modified.extend(done.dirs.iter().map(|d| rooted(&d.name)));
        let tag = stanzas[at].repository_tag.as_deref();
        rendered.push((db::render(p.apk, tag, &done.dirs), done.dirs));
        outcomes.push(done.outcome);
    }

    // The final package order: apk-tools 3 sorts by name, 2 appends upgrades at the end.
    let version3 = stanzas.iter().any(|s| {
        s.name == "apk-tools"
            && s.version
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                >= Some(3)
    });
    let mut order: Vec<Slot> = (0..stanzas.len())
        .filter(|i| !targets.contains(i))
        .map(Slot::Kept)
        .chain((0..packages.len()).map(Slot::Upgraded))
        .collect();
    let name_of = |slot: &Slot| match *slot {
        Slot::Kept(i) => stanzas[i].name.as_str(),
        Slot::Upgraded(k) => packages[k].name,
    };
    if version3 {
        order.sort_by(|a, b| {
            let (a, b) = (name_of(a), name_of(b));
            a.to_lowercase().cmp(&b.to_lowercase()).then(a.cmp(b))
        });
    }
    let texts: Vec<Vec<u8>> = order
        .iter()
        .map(|slot| match *slot {
            Slot::Kept(i) => match takeovers.get(&i) {
                Some(spans) => db::without_files(&stanzas[i], spans),
                None => stanzas[i].raw.clone(),
            },
            Slot::Upgraded(k) => rendered[k].0.clone(),
        })
        .collect();
    let db_dir = engine.physical_dir(DB_DIR, "apk-tools")?;
    let db_entry = |name: &str, data: Vec<u8>| LayerEntry {
        path: format!("{db_dir}/{name}"),
        mode: 0o644,
        uid: 0,
        gid: 0,
        uname: "root".to_owned(),
        gname: "root".to_owned(),
        mtime: epoch,
        kind: EntryKind::File(FileData::Bytes(data)),
    };
    engine.layer.insert(db_entry("installed", db::join(&texts)));

    // scripts.tar, in the same order.
    let old_scripts = scripts_tar.unwrap_or_default();
    let identity_of = |i: usize| stanzas[i].identity.as_deref().unwrap_or_default();
    let touched = targets
        .iter()
        .any(|&i| old_scripts.iter().any(|e| e.identity == identity_of(i)))
        || packages.iter().any(|p| !p.apk.scripts().is_empty());
    if touched {
        let gz = format!("{SCRIPTS}.gz");
        if !files.contains_key(&keys[2]) && engine.tree.resolve(&gz, MAX_SYMLINKS)?.is_some() {
            return Err(database(
                &gz,
                "a compressed scripts database is not supported".to_owned(),
            ));
        }
        let mut tar = Vec::new();
        for slot in &order {
            match *slot {
                Slot::Kept(i) => old_scripts
                    .iter()
                    .filter(|e| e.identity == identity_of(i))
                    .for_each(|e| tar.extend_from_slice(&e.raw)),
                Slot::Upgraded(k) => {
                    let (apk, info) = (packages[k].apk, packages[k].apk.info());
                    for name in SCRIPT_NAMES {
                        if let Some(body) = apk.scripts().get(name) {
                            let file = format!(
                                "{}-{}.{}.{name}",
                                info.pkgname,
                                info.pkgver,
                                apk.identity()
                            );
                            let entry = extras::script_entry(&file, body, epoch)
                                .map_err(|r| database(SCRIPTS, r))?;
                            tar.extend(entry);
                        }
                    }
                }
            }
        }
        tar.extend([0u8; 1024]);
        if files.get(&keys[2]) != Some(&tar) {
            engine.layer.insert(db_entry("scripts.tar", tar));
        }
    }

    // triggers: apk-tools 2 keeps its own order (registration), 3 the package order.
    let old_triggers = files
        .get(&keys[1])
        .map(|d| extras::parse_triggers(d))
        .unwrap_or_default();
    let kept_line = |i: usize| {
        old_triggers
            .iter()
            .find(|l| Some(&l.identity) == stanzas[i].identity.as_ref())
    };
    let new_line = |k: usize| {
        let (apk, info) = (packages[k].apk, packages[k].apk.info());
        (!info.triggers.is_empty()).then(|| TriggerLine {
            raw: format!("{} {}\n", apk.identity(), info.triggers.join(" ")),
            identity: apk.identity(),
            globs: info.triggers.clone(),
        })
    };
    let mut lines: Vec<(Slot, TriggerLine)> = Vec::new();
    if version3 {
        for slot in &order {
            let line = match *slot {
                Slot::Kept(i) => kept_line(i).cloned(),
                Slot::Upgraded(k) => new_line(k),
            };
            lines.extend(line.map(|l| (*slot, l)));
        }
    } else {
        for line in &old_triggers {
            let owner =
                (0..stanzas.len()).find(|&i| stanzas[i].identity.as_ref() == Some(&line.identity));
            if let Some(i) = owner.filter(|i| !targets.contains(i)) {
                lines.push((Slot::Kept(i), line.clone()));
            }
        }
        lines.extend(
            (0..packages.len()).filter_map(|k| new_line(k).map(|l| (Slot::Upgraded(k), l))),
        );
    }
    let text: Vec<u8> = lines.iter().flat_map(|(_, l)| l.raw.bytes()).collect();
    let had = files.get(&keys[1]);
    if had.map_or(!text.is_empty(), |old| *old != text) {
        engine.layer.insert(db_entry("triggers", text));
    }

    // Scripts apk would run: per package pre-upgrade, post-upgrade; then triggers.
    let mut scripts = Vec::new();
    for p in packages {
        let info = p.apk.info();
        for name in ["pre-upgrade", "post-upgrade"] {
            if let Some(body) = p.apk.scripts().get(name) {
                scripts.push(ApkScriptRun {
                    package: p.name.to_owned(),
                    version: info.pkgver.clone(),
                    script: name.to_owned(),
                    args: vec![info.pkgver.clone(), p.installed_version.to_owned()],
                    contents: body.clone(),
                });
            }
        }
    }
    let mut known: BTreeSet<String> = modified.clone();
    for (_, s) in stanzas
        .iter()
        .enumerate()
        .filter(|(i, _)| !targets.contains(i))
    {
        known.extend(s.dirs.iter().map(|d| rooted(&d.name)));
    }
    for (_, dirs) in &rendered {
        known.extend(dirs.iter().map(|d| rooted(&d.name)));
    }
    for (slot, line) in &lines {
        let (package, version, script, all) = match *slot {
            Slot::Kept(i) => (
                stanzas[i].name.clone(),
                stanzas[i].version.clone(),
                old_scripts
                    .iter()
                    .find(|e| e.identity == line.identity && e.script == "trigger")
                    .map(|e: &ScriptEntry| e.contents.clone()),
                false,
            ),
            Slot::Upgraded(k) => (
                packages[k].name.to_owned(),
                packages[k].apk.info().pkgver.clone(),
                packages[k].apk.scripts().get("trigger").cloned(),
                true,
            ),
        };
        let candidates = if all { &known } else { &modified };
        let args: Vec<String> = candidates
            .iter()
            .filter(|dir| {
                line.globs.iter().any(|g| {
                    let g = g.strip_prefix('+').unwrap_or(g);
                    g.starts_with('/') && crate::glob::glob_pathname(g.as_bytes(), dir.as_bytes())
                })
            })
            .cloned()
            .collect();
        if let (Some(contents), false) = (script, args.is_empty()) {
            scripts.push(ApkScriptRun {
                package,
                version,
                script: "trigger".to_owned(),
                args,
                contents,
            });
        }
    }
    let scripts_not_run = scripts.iter().map(ApkScriptRun::describe).collect();
    Ok(ApkChanges {
        layer: engine.layer,
        outcomes,
        scripts,
        scripts_not_run,
        epoch,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A stanza of the image's database, index into it.
    Kept(usize),
    /// An upgraded package, index into `packages`.
    Upgraded(usize),
}

fn rooted(dir: &str) -> String {
    format!("/{dir}")
}

fn sum_of(data: &[u8]) -> String {
    db::z(&Sha1::digest(data))
}

/// The name a dependency (`!name@tag>=1.0`) is about.
fn dep_name(dep: &str) -> &str {
    let dep = dep.strip_prefix('!').unwrap_or(dep);
    let end = dep.find(['<', '>', '=', '~', '@']).unwrap_or(dep.len());
    &dep[..end]
}

pub(super) struct Context<'a> {
    pub(super) stanzas: &'a [Stanza],
    /// Path -> (owning stanza, its record), from the image's database.
    pub(super) records: &'a HashMap<String, (usize, DbFile)>,
    pub(super) dir_owners: &'a HashMap<&'a str, Vec<usize>>,
    /// Paths the new versions install -> the stanzas of the packages installing them.
    pub(super) claimed: &'a HashMap<&'a str, Vec<usize>>,
    pub(super) targets: &'a [usize],
    pub(super) protected: &'a ProtectedPaths,
    pub(super) ids: &'a Ids,
}

pub(super) struct Installed {
    pub(super) outcome: ApkOutcome,
    pub(super) dirs: Vec<NewDir>,
    /// (stanza, byte span of an `R:` record) another package gives up.
    pub(super) takeovers: Vec<(usize, (usize, usize))>,
}

pub(super) enum Owner {
    Take(Option<(usize, (usize, usize))>),
    Skip,
}

pub(super) struct Engine<'a> {
    pub(super) tree: &'a Filesystem,
    pub(super) layer: LayerBuilder,
    /// Package directories and where they are in the image.
    pub(super) physical: PhysicalPaths,
}

impl Engine<'_> {
    /// Where `path` (a package path) is in the image ([`crate::patch::physical`]).
    pub(super) fn physical(&mut self, path: &str, package: &str) -> Result<String, ApkError> {
        self.physical
            .path(self.tree, path)
            .map_err(|c| apk_conflict(c, package))
    }

    pub(super) fn physical_dir(&mut self, dir: &str, package: &str) -> Result<String, ApkError> {
        self.physical
            .dir(self.tree, dir)
            .map_err(|c| apk_conflict(c, package))
    }

    /// The image files whose contents decide protected-path handling: regular files where
    /// a protected path of a package (new or old) lies.
    fn protected_reads(
        &mut self,
        cx: &Context<'_>,
        packages: &[ApkNewPackage<'_>],
    ) -> Result<BTreeSet<String>, ApkError> {
        let mut wanted = BTreeSet::new();
        for (p, &at) in packages.iter().zip(cx.targets) {
            let new = p
                .apk
                .entries()
                .iter()
                .filter(|e| e.kind != ApkEntryKind::Dir)
                .map(|e| e.path.clone());
            let old = cx.stanzas[at].files().map(|(path, _)| path);
            for path in new.chain(old) {
                let parent = path.rsplit_once('/').map_or("", |(d, _)| d);
                if cx.protected.of_dir(parent) == Protect::None {
                    continue;
                }
                let Ok(physical) = self.physical(&path, p.name) else {
                    continue;
                };
                if self
                    .tree
                    .get(&physical)
                    .is_some_and(|n| matches!(n.kind, NodeKind::File | NodeKind::Hardlink))
                {
                    wanted.insert(format!("/{physical}"));
                }
            }
        }
        Ok(wanted)
    }

    /// The checksum of what the image has at `physical` (a symlink's is its target's).
    pub(super) fn current_sum(
        &self,
        physical: &str,
        current: &HashMap<String, Vec<u8>>,
    ) -> Option<String> {
        let node = self.tree.get(physical)?;
        match node.kind {
            NodeKind::Symlink => node.link_target.as_deref().map(sum_of),
            NodeKind::File | NodeKind::Hardlink => {
                current.get(&format!("/{physical}")).map(|d| sum_of(d))
            }
            _ => None,
        }
    }

    /// Whether package `p` (stanza `me`) may install `path`, by apk's rules.
    pub(super) fn ownership(
        &self,
        cx: &Context<'_>,
        p: &ApkNewPackage<'_>,
        me: usize,
        path: &str,
    ) -> Result<Owner, ApkError> {
        let Some((other, record)) = cx.records.get(path) else {
            return Ok(Owner::Take(None));
        };
        let other = *other;
        if other == me {
            return Ok(Owner::Take(None));
        }
        // Another upgraded package whose new version drops the file gives it up anyway.
        if cx.targets.contains(&other) && !cx.claimed.get(path).is_some_and(|c| c.contains(&other))
        {
            return Ok(Owner::Take(None));
        }
        let (o, info) = (&cx.stanzas[other], p.apk.info());
        let take = Owner::Take(Some((other, record.span)));
        if o.origin.is_some() && o.origin == info.origin {
            return Ok(take);
        }
        let their = o
            .replaces
            .iter()
            .any(|d| dep_name(d) == info.pkgname)
            .then(|| o.replaces_priority.unwrap_or(0));
        let ours = info
            .replaces
            .iter()
            .any(|d| dep_name(d) == o.name)
            .then_some(info.replaces_priority);
        if their > ours {
            return Ok(Owner::Skip);
        }
        if ours.is_some() {
            return Ok(take);
        }
        Err(ApkError::Conflict {
            package: p.name.to_owned(),
            path: format!("/{path}"),
            reason: format!(
                "owned by {}-{}, which this package does not replace (apk refuses to overwrite it)",
                o.name, o.version
            ),
        })
    }

    pub(super) fn entry(
        &self,
        cx: &Context<'_>,
        path: String,
        e: &ApkEntry,
        kind: EntryKind,
    ) -> LayerEntry {
        LayerEntry {
            path,
            mode: e.mode,
            uid: cx.ids.uid(&e.uname, e.uid),
            gid: cx.ids.gid(&e.gname, e.gid),
            uname: e.uname.clone(),
            gname: e.gname.clone(),
            mtime: e.mtime,
            kind,
        }
    }
}

fn apk_conflict(conflict: Conflict, package: &str) -> ApkError {
    match conflict {
        Conflict::Image(error) => ApkError::from(error),
        Conflict::Path { dir, reason } => ApkError::Conflict {
            package: package.to_owned(),
            path: dir,
            reason: reason.to_owned(),
        },
    }
}
