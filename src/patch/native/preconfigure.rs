//! apt's `DPkg::Pre-Install-Pkgs` hook as debconf configures it (`/etc/apt/apt.conf.d/
//! 70debconf`: `dpkg-preconfigure --apt`), run before anything is unpacked, as `apt-get
//! upgrade` runs it: the new packages' `.deb` paths on its standard input, one a line.
//! With apt-utils installed, debconf extracts every new package's `templates` and
//! `config` (through `var/cache/debconf/tmp.ci`, which it leaves empty), loads the
//! templates in that order and runs the config scripts, so its database ends as apt
//! leaves it.
//!
//! Only debconf's hook is run; another `Pre-Install-Pkgs` hook (apt-listchanges, say)
//! reports on or asks about the upgrade and is left out, and said to be.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use super::scripts::{base_env, exit_status, quote, tail, Target, SCRIPT_TIMEOUT, STAGING};
use super::{io_error, NativeError};

/// A new package's `.deb` on this host, and the name apt gives it in its archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// `libc6_2.36-9+deb12u10_amd64.deb` (an epoch's `:` written `%3a`, as apt does).
    pub file_name: String,
    pub path: PathBuf,
}

impl Archive {
    /// The package's name (what comes before the first `_` of its file name).
    pub fn name(&self) -> &str {
        self.file_name.split('_').next().unwrap_or_default()
    }

    pub fn new(name: &str, version: &str, architecture: &str, path: PathBuf) -> Archive {
        Archive {
            file_name: format!("{name}_{}_{architecture}.deb", version.replace(':', "%3a")),
            path,
        }
    }
}

const APT_CONF: &str = "/etc/apt/apt.conf";
const APT_CONF_DIR: &str = "/etc/apt/apt.conf.d/";

/// The `Pre-Install-Pkgs` commands of the image's apt configuration (`apt.conf.d` in
/// name order, then `apt.conf`), as written: `(debconf's, others)`.
pub(super) fn pre_install_hooks(files: &BTreeMap<String, Vec<u8>>) -> (Vec<String>, Vec<String>) {
    let mut ordered: Vec<(&String, &Vec<u8>)> = files
        .iter()
        .filter(|(path, _)| {
            path.strip_prefix(APT_CONF_DIR)
                .is_some_and(is_apt_conf_fragment)
        })
        .collect();
    ordered.extend(files.iter().filter(|(path, _)| path.as_str() == APT_CONF));
    let mut debconf = Vec::new();
    let mut other = Vec::new();
    for (_, data) in ordered {
        let text = String::from_utf8_lossy(data);
        for statement in text.split("};") {
            let Some((key, value)) = statement.split_once('{') else {
                continue;
            };
            let key = key.lines().last().unwrap_or_default().trim();
            if !key.eq_ignore_ascii_case("DPkg::Pre-Install-Pkgs") {
                continue;
            }
            for command in value.split('"').skip(1).step_by(2) {
                if command.contains("dpkg-preconfigure") {
                    debconf.push(command.to_owned());
                } else {
                    other.push(command.to_owned());
                }
            }
        }
    }
    (debconf, other)
}

/// apt reads fragments whose names are letters, digits, `_`, `-` and `.`, and skips
/// `.disabled`, `.dpkg-*` and `~` leftovers.
fn is_apt_conf_fragment(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.ends_with(".disabled")
        && !name.contains(".dpkg-")
}

/// Paths to read for [`pre_install_hooks`].
pub(super) const APT_CONFIG_PATHS: [&str; 2] = [APT_CONF, APT_CONF_DIR];

/// Runs each of `hooks` in `target` as apt does (`sh -c`, the archives' paths on its
/// standard input), the archives copied into the staging directory for the run.
pub(super) fn run(
    target: &Target<'_>,
    hooks: &[String],
    archives: &[Archive],
) -> Result<(), NativeError> {
    if hooks.is_empty() || archives.is_empty() {
        return Ok(());
    }
    let staging = target.dir(STAGING)?;
    let dir = staging.join("archives");
    fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let mut list = String::new();
    for archive in archives {
        let copy = dir.join(&archive.file_name);
        if fs::hard_link(&archive.path, &copy).is_err() {
            fs::copy(&archive.path, &copy).map_err(|e| io_error(&copy, e))?;
        }
        list.push_str(&format!("/{STAGING}/archives/{}\n", archive.file_name));
    }
    let list_path = staging.join("pre-install-pkgs");
    fs::write(&list_path, list).map_err(|e| io_error(&list_path, e))?;
    let env = base_env();
    for hook in hooks {
        let argv: Vec<String> = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!(
                "umask 022 && cd / && exec /bin/sh -c {} </{STAGING}/pre-install-pkgs",
                quote(hook)
            ),
        ];
        let output = target.session(&argv, &env).run(SCRIPT_TIMEOUT)?;
        if output.timed_out || output.status != Some(0) {
            let _ = fs::remove_dir_all(&staging);
            return Err(NativeError::ScriptFailed {
                script: format!("apt's DPkg::Pre-Install-Pkgs hook {hook:?}"),
                status: if output.timed_out {
                    format!("timed out after {}s", SCRIPT_TIMEOUT.as_secs())
                } else {
                    exit_status(&output)
                },
                stderr: tail(&String::from_utf8_lossy(&output.stderr)),
            });
        }
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debconfs_hook_is_found_and_others_kept_apart() {
        let mut files = BTreeMap::new();
        files.insert(
            "/etc/apt/apt.conf.d/70debconf".to_owned(),
            b"// Pre-configure all packages with debconf before they are installed.\n\
              // If you don't like it, comment it out.\n\
              DPkg::Pre-Install-Pkgs {\"/usr/sbin/dpkg-preconfigure --apt || true\";};\n"
                .to_vec(),
        );
        files.insert(
            "/etc/apt/apt.conf.d/20listchanges".to_owned(),
            b"DPkg::Pre-Install-Pkgs { \"/usr/bin/apt-listchanges --apt || test $? -lt 10\"; };\n"
                .to_vec(),
        );
        files.insert(
            "/etc/apt/apt.conf.d/70debconf.dpkg-old".to_owned(),
            b"DPkg::Pre-Install-Pkgs {\"/usr/sbin/dpkg-preconfigure --old\";};\n".to_vec(),
        );
        let (debconf, other) = pre_install_hooks(&files);
        assert_eq!(debconf, ["/usr/sbin/dpkg-preconfigure --apt || true"]);
        assert_eq!(other, ["/usr/bin/apt-listchanges --apt || test $? -lt 10"]);
        assert_eq!(pre_install_hooks(&BTreeMap::new()), (vec![], vec![]));
        let archive = Archive::new("bsdutils", "1:2.38.1-5+deb12u3", "amd64", PathBuf::new());
        assert_eq!(archive.file_name, "bsdutils_1%3a2.38.1-5+deb12u3_amd64.deb");
    }

    /// apt's protocol: `sh -c` the hook, the archives' paths on its standard input, each
    /// file readable there; nothing of the staging is left.
    #[test]
    fn the_hook_reads_every_archive_from_its_standard_input() {
        let Some(busybox) = crate::patch::sandbox::tests::busybox() else {
            return;
        };
        let (work, _outside) = crate::patch::sandbox::tests::busybox_root(&busybox);
        let root = work.path().join("root");
        let debs = tempfile::tempdir().unwrap();
        let mut archives = Vec::new();
        for (name, version) in [
            ("libc6", "2.36-9+deb12u10"),
            ("bsdutils", "1:2.38.1-5+deb12u3"),
        ] {
            let path = debs.path().join(format!("{name}.deb"));
            fs::write(&path, format!("{name} archive\n")).unwrap();
            archives.push(Archive::new(name, version, "amd64", path));
        }
        let hook =
            "while read f; do cat \"$f\" >> /etc/seen; echo \"$f\" >> /etc/seen; done".to_owned();
        run(&Target::Plain(&root), &[hook], &archives).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("etc/seen")).unwrap(),
            format!(
                "libc6 archive\n/{STAGING}/archives/libc6_2.36-9+deb12u10_amd64.deb\n\
                 bsdutils archive\n/{STAGING}/archives/bsdutils_1%3a2.38.1-5+deb12u3_amd64.deb\n"
            )
        );
        assert!(!root.join(STAGING).exists());
        let failing = run(
            &Target::Plain(&root),
            &["echo nope >&2; exit 3".to_owned()],
            &archives,
        )
        .unwrap_err()
        .to_string();
        assert!(
            failing.contains("exit status 3") && failing.contains("nope"),
            "{failing}"
        );
    }
}
