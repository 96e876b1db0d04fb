//! Maintainer scripts and triggers: which ones dpkg would run for an upgrade, in which
//! order and with which arguments (`deb-postinst(5)` and friends), and running them in the
//! sandbox over the patched root.
//!
//! dpkg's order for upgrading `p` from `old` to `new`: old `prerm upgrade new`, new
//! `preinst upgrade old`, unpack, old `postrm upgrade new`, then at configure time new
//! `postinst configure old`, and at the end the postinst of every package interested in
//! a trigger the upgrades activated, as `postinst triggered "<names>"`.

use std::collections::{BTreeMap, BTreeSet};

/// One script invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRun {
    pub package: String,
    pub architecture: String,
    /// `preinst`, `postinst`, `prerm` or `postrm`.
    pub script: &'static str,
    pub args: Vec<String>,
    /// Where dpkg runs it from, which is what the script sees as `$0` (debconf's
    /// frontend derives the package, its `templates` and `config` from it): the installed
    /// `/var/lib/dpkg/info/<pkg>.<script>`, or `/var/lib/dpkg/tmp.ci/preinst` for a new
    /// version's preinst.
    pub path: String,
    /// For a new version's preinst: every control member of the new version (name,
    /// contents, mode), which dpkg has extracted into `tmp.ci` when it runs it.
    pub staged: Vec<ControlMember>,
}

/// One member of a package's control archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMember {
    pub name: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Where dpkg keeps the installed control members of packages, as scripts see it.
pub const INFO_PATH: &str = "/var/lib/dpkg/info";
/// Where dpkg extracts a new version's control members while it unpacks it.
pub const NEW_CONTROL_PATH: &str = "/var/lib/dpkg/tmp.ci";

/// Every script an upgrade runs, in dpkg's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptPlan {
    /// Before the files are unpacked.
    pub pre: Vec<ScriptRun>,
    /// After unpacking: old postrm, then new postinst.
    pub post: Vec<ScriptRun>,
    /// Trigger processing, last.
    pub triggers: Vec<ScriptRun>,
}

impl ScriptPlan {
    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty() && self.triggers.is_empty()
    }

    /// Every run, in order.
    pub fn all(&self) -> impl Iterator<Item = &ScriptRun> {
        self.pre.iter().chain(&self.post).chain(&self.triggers)
    }
}

/// Trigger interests recorded in the image (`/var/lib/dpkg/triggers/`).
#[derive(Debug, Default)]
pub struct TriggerInterests {
    /// Explicit trigger name -> interested packages.
    explicit: BTreeMap<String, BTreeSet<String>>,
    /// File trigger path (no leading `/`) -> interested packages.
    files: BTreeMap<String, BTreeSet<String>>,
}

fn interested_package(word: &str) -> String {
    word.split('/').next().unwrap_or(word).to_owned()
}

impl TriggerInterests {
    /// From the contents of `/var/lib/dpkg/triggers/<name>` files, by file name (`File` is
    /// the file-trigger table; `Unincorp` and `Lock` are dpkg's own state).
    pub fn parse(files: &BTreeMap<String, Vec<u8>>) -> TriggerInterests {
        let mut interests = TriggerInterests::default();
        for (name, data) in files {
            let text = String::from_utf8_lossy(data);
            match name.as_str() {
                "Unincorp" | "Lock" => {}
                "File" => {
                    for line in text.lines() {
                        let mut words = line.split_whitespace();
                        if let (Some(path), Some(package)) = (words.next(), words.next()) {
                            interests
                                .files
                                .entry(path.trim_start_matches('/').to_owned())
                                .or_default()
                                .insert(interested_package(package));
                        }
                    }
                }
                trigger => {
                    for package in text.split_whitespace() {
                        interests
                            .explicit
                            .entry(trigger.to_owned())
                            .or_default()
                            .insert(interested_package(package));
                    }
                }
            }
        }
        interests
    }

    /// Interested package -> trigger names, for the explicit triggers `activated` and the
    /// file triggers whose path is `touched` or a directory above it.
    pub fn activated<'a>(
        &self,
        activated: impl Iterator<Item = &'a str>,
        touched: impl Iterator<Item = &'a str>,
    ) -> BTreeMap<String, BTreeSet<String>> {
        let mut runs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for name in activated {
            for package in self.explicit.get(name).into_iter().flatten() {
                runs.entry(package.clone())
                    .or_default()
                    .insert(name.to_owned());
            }
        }
        for path in touched {
            for (trigger, packages) in &self.files {
                let below = path == trigger
                    || (path.starts_with(trigger.as_str())
                        && path.as_bytes().get(trigger.len()) == Some(&b'/'));
                if below {
                    for package in packages {
                        runs.entry(package.clone())
                            .or_default()
                            .insert(format!("/{trigger}"));
                    }
                }
            }
        }
        runs
    }
}

/// The trigger names a package's `triggers` control file activates.
pub fn activations(triggers: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(triggers)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("activate" | "activate-await" | "activate-noawait"), Some(name)) => {
                    Some(name.to_owned())
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_activate_interested_packages() {
        let mut files = BTreeMap::new();
        files.insert("ldconfig".to_owned(), b"libc-bin/noawait\n".to_vec());
        files.insert(
            "File".to_owned(),
            b"/usr/share/man man-db/noawait\n/usr/lib/mime/packages mime-support\n".to_vec(),
        );
        files.insert("Unincorp".to_owned(), b"ldconfig libfoo\n".to_vec());
        let interests = TriggerInterests::parse(&files);
        let names = activations(b"# comment\nactivate-noawait ldconfig\ninterest foo\n");
        assert_eq!(names, vec!["ldconfig"]);
        let runs = interests.activated(
            names.iter().map(String::as_str),
            ["usr/share/man/man1/x.1.gz", "usr/share/manx"].into_iter(),
        );
        assert_eq!(runs.len(), 2);
        assert!(runs["libc-bin"].contains("ldconfig"));
        assert!(runs["man-db"].contains("/usr/share/man"));
    }
}
