//! The database half of an upgrade: the new status paragraph (or distroless `status.d`
//! file), `info/<pkg>.*`, and the maintainer scripts and triggers dpkg would run.

use std::collections::{BTreeMap, BTreeSet};

use super::super::database::{Stanza, INFO_DIR, STATUS_DIR};
use super::super::scripts::{activations, ScriptRun};
use super::super::{DpkgError, NewPackage};
use super::{Builder, Context};

impl Builder<'_> {
    pub(super) fn write_database(
        &mut self,
        context: &Context<'_, '_>,
        conffile_md5: &BTreeMap<String, String>,
    ) -> Result<(), DpkgError> {
        let package = context.package;
        let deb = package.deb;
        if let Some(file) = &context.status_d_file {
            // Distroless: the control file verbatim, and md5sums beside it when it had one.
            let dir = self.physical_dir(STATUS_DIR, package.name)?;
            let control = deb.control().to_vec();
            self.layer
                .insert(self.db_entry(format!("{dir}/{file}"), 0o644, control));
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
        if conffiles.is_empty() {
            stanza.remove("Conffiles");
        } else {
            stanza.set("Conffiles", conffiles);
        }
        if let Some(status) = &mut self.status {
            if let Some(at) = status.find(package.name, Some(package.architecture)) {
                status.paragraphs[at].0 = stanza.to_dpkg_text();
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

    pub(super) fn plan_scripts(&mut self, context: &Context<'_, '_>) {
        if self.db.status.is_none() {
            return; // distroless images never run scripts
        }
        let package = context.package;
        let run = |script: &'static str, args: Vec<String>, contents: &[u8]| ScriptRun {
            package: package.name.to_owned(),
            architecture: package.architecture.to_owned(),
            script,
            args,
            contents: contents.to_vec(),
        };
        let old = self.db.info.get(&context.base);
        let new = package.deb.control_members();
        let (old_version, new_version) = (
            package.installed_version.to_owned(),
            context.new_version.clone(),
        );
        if let Some(prerm) = old.and_then(|o| o.get("prerm")) {
            self.scripts.pre.push(run(
                "prerm",
                vec!["upgrade".into(), new_version.clone()],
                prerm,
            ));
        }
        if let Some(preinst) = new.get("preinst") {
            self.scripts.pre.push(run(
                "preinst",
                vec!["upgrade".into(), old_version.clone()],
                &preinst.data,
            ));
        }
        if let Some(postrm) = old.and_then(|o| o.get("postrm")) {
            self.scripts
                .post
                .push(run("postrm", vec!["upgrade".into(), new_version], postrm));
        }
        if let Some(postinst) = new.get("postinst") {
            self.scripts.post.push(run(
                "postinst",
                vec!["configure".into(), old_version],
                &postinst.data,
            ));
        }
        if let Some(triggers) = new.get("triggers") {
            self.activated.extend(activations(&triggers.data));
        }
    }

    pub(super) fn plan_triggers(
        &mut self,
        packages: &[NewPackage<'_>],
        contexts: &[Context<'_, '_>],
    ) {
        if self.db.status.is_none() {
            return;
        }
        let runs = self.db.triggers.activated(
            self.activated.iter().map(String::as_str),
            self.touched.iter().map(String::as_str),
        );
        for (interested, names) in runs {
            // The postinst that handles the trigger: the upgraded one when the interested
            // package is being upgraded too.
            let upgraded = contexts.iter().find(|c| c.package.name == interested);
            let postinst = match upgraded {
                Some(c) => c
                    .package
                    .deb
                    .control_members()
                    .get("postinst")
                    .map(|m| m.data.clone()),
                None => self
                    .db
                    .info
                    .iter()
                    .find(|(base, _)| base.split(':').next() == Some(interested.as_str()))
                    .and_then(|(_, m)| m.get("postinst").cloned()),
            };
            let Some(contents) = postinst else { continue };
            let architecture = upgraded
                .map(|c| c.package.architecture.to_owned())
                .or_else(|| packages.first().map(|p| p.architecture.to_owned()))
                .unwrap_or_default();
            let names: Vec<String> = names.into_iter().collect();
            self.scripts.triggers.push(ScriptRun {
                package: interested,
                architecture,
                script: "postinst",
                args: vec!["triggered".into(), names.join(" ")],
                contents,
            });
        }
    }

    pub(super) fn write_status(&mut self) -> Result<(), DpkgError> {
        if let Some(status) = &self.status {
            let text = status.to_text().into_bytes();
            let dir = self.physical_dir("var/lib/dpkg", "dpkg")?;
            self.layer
                .insert(self.db_entry(format!("{dir}/status"), 0o644, text));
        }
        Ok(())
    }
}
