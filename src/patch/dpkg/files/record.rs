//! The database half of an upgrade: the new status paragraph (or distroless `status.d`
//! file), `info/<pkg>.*`, and the maintainer scripts and triggers dpkg would run.

use std::collections::{BTreeMap, BTreeSet};

use super::super::database::{Stanza, DATABASE_FIELDS, INFO_DIR, STATUS_DIR};
use super::super::scripts::{activations, ControlMember, ScriptRun, INFO_PATH, NEW_CONTROL_PATH};
use super::super::DpkgError;
use super::{Builder, Context};

impl Builder<'_> {
    pub(super) fn write_database(
        &mut self,
        context: &Context<'_, '_>,
        conffile_md5: &BTreeMap<String, String>,
    ) -> Result<(), DpkgError> {
        let package = context.package;
        let deb = package.deb;
        let conffiles = self.conffiles_field(context, conffile_md5);
        if let Some(file) = &context.status_d_file {
            // Distroless: the stanza the image had, brought to the new version, and
            // md5sums beside it when it had one.
            let dir = self.physical_dir(STATUS_DIR, package.name)?;
            let text = status_d_stanza(context, deb.control(), conffiles)?;
            self.layer
                .insert(self.db_entry(format!("{dir}/{file}"), 0o644, text));
            let sums = format!("{file}.md5sums");
            if self.db.status_d.contains_key(&sums) {
                match deb.control_members().get("md5sums") {
                    Some(m) => {
                        let data = m.data.clone();
                        self.layer
                            .insert(self.db_entry(format!("{dir}/{sums}"), 0o644, data));
                    }
                    None => self.layer.whiteout(&format!("{dir}/{sums}")),
                }
            }
            return Ok(());
        }

        let control = String::from_utf8_lossy(deb.control()).into_owned();
        let mut stanza = Stanza::parse(&control).map_err(|reason| DpkgError::Package {
            package: package.name.to_owned(),
            reason,
        })?;
        stanza.set("Status", "install ok installed".to_owned());
        for (field, value) in &context.old_classification {
            if stanza.get(field).is_none() {
                stanza.set(field, value.clone());
            }
        }
        match conffiles {
            Some(value) => stanza.set("Conffiles", value),
            None => stanza.remove("Conffiles"),
        }
        if let Some(status) = &mut self.status {
            if let Some(at) = status.find(package.name, Some(package.architecture)) {
                status.paragraphs[at].0 = stanza.to_dpkg_text();
            }
        }
        // As `dpkg --unpack` leaves it, for `dpkg --configure` to finish: unpacked, with
        // the version being configured from.
        if let Some(unpacked) = &mut self.unpacked {
            if let Some(at) = unpacked.find(package.name, Some(package.architecture)) {
                stanza.set("Status", "install ok unpacked".to_owned());
                stanza.set("Config-Version", package.installed_version.to_owned());
                unpacked.paragraphs[at].0 = stanza.to_dpkg_text();
            }
        }

        // info/<base>.*: the new control members and the file list; old members the new
        // version lacks are removed.
        let info = self.physical_dir(INFO_DIR, package.name)?;
        let mut list = String::from("/.\n");
        for entry in deb.entries().iter().filter(|e| !e.path.is_empty()) {
            list.push('/');
            list.push_str(&entry.path);
            list.push('\n');
        }
        let base = &context.base;
        self.layer
            .insert(self.db_entry(format!("{info}/{base}.list"), 0o644, list.into_bytes()));
        let mut members: BTreeSet<&str> = BTreeSet::from(["list"]);
        for (member, data) in deb.control_members() {
            members.insert(member);
            let entry = self.db_entry(
                format!("{info}/{base}.{member}"),
                data.mode & 0o7777,
                data.data.clone(),
            );
            self.layer.insert(entry);
        }
        if let Some(old) = self.db.info.get(base) {
            for member in old.keys().filter(|m| !members.contains(m.as_str())) {
                self.layer.whiteout(&format!("{info}/{base}.{member}"));
            }
        }
        Ok(())
    }

    /// `Conffiles:` as dpkg records it after the upgrade: each new conffile with the md5 of
    /// the package's version of it, then the old ones the new version dropped that are
    /// still on disk, marked `obsolete`. `None` when there are none.
    fn conffiles_field(
        &self,
        context: &Context<'_, '_>,
        conffile_md5: &BTreeMap<String, String>,
    ) -> Option<String> {
        let mut conffiles = String::new();
        for path in &context.new_conffiles {
            if let Some(md5) = conffile_md5.get(path) {
                conffiles.push_str(&format!("\n /{path} {md5}"));
            }
        }
        for (path, (md5, _)) in &context.old_conffiles {
            let still = context
                .new_conffiles
                .iter()
                .any(|p| *path == format!("/{p}"));
            if !still && self.tree.get(path).is_some() {
                conffiles.push_str(&format!("\n {path} {md5} obsolete"));
            }
        }
        (!conffiles.is_empty()).then_some(conffiles)
    }

    pub(super) fn plan_scripts(&mut self, context: &Context<'_, '_>) {
        if self.db.status.is_none() {
            return; // distroless images never run scripts
        }
        let package = context.package;
        let base = &context.base;
        let run = |script: &'static str, args: Vec<String>, path: String| ScriptRun {
            package: package.name.to_owned(),
            architecture: package.architecture.to_owned(),
            script,
            args,
            path,
            staged: Vec::new(),
        };
        let installed = |script: &str| format!("{INFO_PATH}/{base}.{script}");
        let old = self.db.info.get(base);
        let new = package.deb.control_members();
        let (old_version, new_version) = (
            package.installed_version.to_owned(),
            context.new_version.clone(),
        );
        if old.is_some_and(|o| o.contains_key("prerm")) {
            self.scripts.pre.push(run(
                "prerm",
                vec!["upgrade".into(), new_version.clone()],
                installed("prerm"),
            ));
        }
        if new.contains_key("preinst") {
            let mut preinst = run(
                "preinst",
                vec!["upgrade".into(), old_version.clone()],
                format!("{NEW_CONTROL_PATH}/preinst"),
            );
            preinst.staged = std::iter::once(ControlMember {
                name: "control".to_owned(),
                data: package.deb.control().to_vec(),
                mode: 0o644,
            })
            .chain(new.iter().map(|(name, member)| ControlMember {
                name: name.to_string(),
                data: member.data.clone(),
                mode: member.mode & 0o7777,
            }))
            .collect();
            self.scripts.pre.push(preinst);
        }
        if old.is_some_and(|o| o.contains_key("postrm")) {
            self.scripts.post.push(run(
                "postrm",
                vec!["upgrade".into(), new_version],
                installed("postrm"),
            ));
        }
        if new.contains_key("postinst") {
            self.scripts.post.push(run(
                "postinst",
                vec!["configure".into(), old_version],
                installed("postinst"),
            ));
        }
        if let Some(triggers) = new.get("triggers") {
            self.activated.extend(activations(&triggers.data));
        }
    }

    pub(super) fn plan_triggers(&mut self, contexts: &[Context<'_, '_>]) {
        if self.db.status.is_none() {
            return;
        }
        let runs = self.db.triggers.activated(
            self.activated.iter().map(String::as_str),
            self.touched.iter().map(String::as_str),
        );
        for (interested, names) in runs {
            let names: Vec<String> = names.into_iter().collect();
            // An interested package being upgraded too is unpacked when the trigger is
            // activated: dpkg ignores activations for packages below triggers-awaited
            // (`trig_record_activation`) and leaves the work to its `postinst configure`.
            if contexts.iter().any(|c| c.package.name == interested) {
                continue;
            }
            self.mark_triggers_pending(&interested, &names);
            let installed = self
                .db
                .info
                .iter()
                .find(|(base, _)| base.split(':').next() == Some(interested.as_str()))
                .filter(|(_, members)| members.contains_key("postinst"))
                .map(|(base, _)| {
                    let arch = base.split_once(':').map_or_else(
                        || self.installed_architecture(&interested),
                        |(_, a)| a.to_owned(),
                    );
                    (base.clone(), arch)
                });
            let Some((base, architecture)) = installed else {
                continue;
            };
            self.scripts.triggers.push(ScriptRun {
                package: interested,
                architecture,
                script: "postinst",
                args: vec!["triggered".into(), names.join(" ")],
                path: format!("{INFO_PATH}/{base}.postinst"),
                staged: Vec::new(),
            });
        }
    }

    /// The `Architecture` of an installed package, from the status file.
    fn installed_architecture(&self, package: &str) -> String {
        self.status
            .as_ref()
            .and_then(|status| {
                let at = status.find(package, None)?;
                let stanza = Stanza::parse(&status.paragraphs[at].0).ok()?;
                stanza.word("Architecture").map(str::to_owned)
            })
            .unwrap_or_default()
    }

    /// In the status as `dpkg --unpack` leaves it: an installed package interested in
    /// `names` has them pending (`Status: install ok triggers-pending`, `Triggers-Pending`).
    fn mark_triggers_pending(&mut self, package: &str, names: &[String]) {
        let Some(unpacked) = &mut self.unpacked else {
            return;
        };
        let Some(at) = unpacked.find_any_state(package) else {
            return;
        };
        let Ok(mut stanza) = Stanza::parse(&unpacked.paragraphs[at].0) else {
            return;
        };
        let state = stanza.word("Status").unwrap_or_default();
        if !(state.ends_with(" installed")
            || state.ends_with(" triggers-awaited")
            || state.ends_with(" triggers-pending"))
        {
            return;
        }
        let mut pending: Vec<String> = stanza
            .get("Triggers-Pending")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        for name in names {
            if !pending.contains(name) {
                pending.push(name.clone());
            }
        }
        let want = state.rsplit_once(' ').map_or(state, |(w, _)| w);
        stanza.set("Status", format!("{want} triggers-pending"));
        stanza.set("Triggers-Pending", pending.join(" "));
        unpacked.paragraphs[at].0 = stanza.to_dpkg_text();
    }

    /// Writes the final status into the layer; returns where it is, with the status as
    /// `dpkg --unpack` would leave it.
    pub(super) fn write_status(&mut self) -> Result<Option<(String, Vec<u8>)>, DpkgError> {
        let Some(status) = &self.status else {
            return Ok(None);
        };
        let text = status.to_text().into_bytes();
        let dir = self.physical_dir("var/lib/dpkg", "dpkg")?;
        let path = format!("{dir}/status");
        self.layer.insert(self.db_entry(path.clone(), 0o644, text));
        let unpacked = self
            .unpacked
            .as_ref()
            .map(|u| u.to_text().into_bytes())
            .unwrap_or_default();
        Ok(Some((path, unpacked)))
    }
}

/// The distroless `status.d` file of an upgraded package: the new control file's fields,
/// plus the fields of the image's stanza that no control file has (`Status:`,
/// `Conffiles:` with the new md5s, ...; see [`DATABASE_FIELDS`]) and the `Priority:` and
/// `Section:` dpkg keeps when the new control lacks them. Fields the old stanza had from
/// the old control file and the new one no longer has are dropped.
///
/// The order is the image's, not dpkg's [`Stanza::to_dpkg_text`]: distroless builders
/// write the control file as it is (rules_docker's `add_pkg_metadata`, `dpkg-deb
/// --field`, rules_distroless' `status.d/<pkg>/control`), some appending `Status:` after
/// it, so the control's fields stay in the new control's order and each kept field goes
/// after the field it followed in the image; an image whose stanzas are in dpkg's order (a
/// status file split into files) gets dpkg's order. A stanza with nothing to keep is the new
/// control file byte for byte, as before the upgrade it was the old one.
fn status_d_stanza(
    context: &Context<'_, '_>,
    control: &[u8],
    conffiles: Option<String>,
) -> Result<Vec<u8>, DpkgError> {
    let package = context.package;
    let error = |reason: String| DpkgError::Package {
        package: package.name.to_owned(),
        reason,
    };
    let new = Stanza::parse(&String::from_utf8_lossy(control)).map_err(error)?;
    let old = &context.old_stanza;
    let is = |name: &str, set: &[&str]| set.iter().any(|f| f.eq_ignore_ascii_case(name));
    // A database-style stanza (one with `Status:`) records conffiles even when the old
    // version had none.
    let database = old.get("Status").is_some() || old.get("Conffiles").is_some();
    let mut old_fields = old.fields.clone();
    if database && old.get("Conffiles").is_none() && conffiles.is_some() {
        let at = old_fields
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case("Description"))
            .unwrap_or(old_fields.len());
        old_fields.insert(at, ("Conffiles".to_owned(), String::new()));
    }
    let mut fields = new.fields.clone();
    let mut kept = false;
    for (i, (name, value)) in old_fields.iter().enumerate() {
        let value = if name.eq_ignore_ascii_case("Conffiles") {
            match &conffiles {
                Some(c) => c.clone(),
                None => continue,
            }
        } else if is(name, DATABASE_FIELDS) || is(name, &["Priority", "Section"]) {
            value.clone()
        } else {
            continue;
        };
        if new.get(name).is_some() {
            continue;
        }
        let at = old_fields[..i]
            .iter()
            .rev()
            .find_map(|(before, _)| {
                fields
                    .iter()
                    .position(|(n, _)| n.eq_ignore_ascii_case(before))
            })
            .map_or(0, |p| p + 1);
        fields.insert(at, (name.clone(), value));
        kept = true;
    }
    if !kept {
        return Ok(control.to_vec());
    }
    let stanza = Stanza { fields };
    // An image whose stanzas are in dpkg's own order (a status file split into status.d)
    // keeps that order.
    if old.to_text() == old.to_dpkg_text() {
        return Ok(stanza.to_dpkg_text().into_bytes());
    }
    Ok(stanza.to_text().into_bytes())
}
