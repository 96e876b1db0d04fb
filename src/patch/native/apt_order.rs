//! The order in which `apt-get upgrade` configures packages, asked of the image's own apt.
//!
//! apt does not leave configuration to one `dpkg --configure --pending`: it flags
//! Essential packages and everything they (pre-)depend on for immediate configuration
//! (`pkgPackageManager::CreateOrderList`, `ImmediateAdd`), and configures each of those
//! with `dpkg --configure --no-triggers` as soon as it is unpacked, in its own unpack
//! order (`pkgOrderList::OrderUnpack`, `SmartUnPack`, `SmartConfigure`); the rest and the
//! triggers are left to the final `dpkg --configure --pending`. The order shows in what
//! scripts leave behind: a debconf template that several packages ship
//! (`libraries/restart-without-asking`: libc6, libpam0g, libssl3) keeps the text of the
//! last one configured, so `var/cache/debconf/templates.dat` depends on it.
//!
//! apt's ordering is its own large algorithm; rather than copy it, the image's apt runs
//! it: `apt-get -s upgrade` over the new archives (apt takes `.deb` paths as packages)
//! prints `Inst` and `Conf` in the order it would run dpkg. The `Conf` lines before the
//! last `Inst` are the immediate configurations; the later ones are what `--pending` does.

use std::fs;

use super::preconfigure::Archive;
use super::scripts::{base_env, Target, SCRIPT_TIMEOUT, STAGING};
use super::{io_error, NativeError};

/// Where apt's caches and lists go while it simulates: inside the staging directory,
/// which never reaches the layer.
const APT_DIRS: &[(&str, &str)] = &[
    ("Dir::Cache", "apt-cache"),
    ("Dir::State::Lists", "apt-lists"),
    ("Dir::Log", "apt-log"),
];

/// The packages apt configures at once, in its order, when the image's apt can say
/// (`None` when it has no apt, or apt's plan is not exactly this upgrade: then dpkg's
/// `--configure --pending` order is all there is to go by).
pub(super) fn immediate_configuration(
    target: &Target<'_>,
    archives: &[Archive],
) -> Result<Option<Vec<String>>, NativeError> {
    if archives.is_empty() {
        return Ok(None);
    }
    let staging = target.dir(STAGING)?;
    let dir = staging.join("archives");
    fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let mut argv: Vec<String> = vec![
        "/usr/bin/apt-get".to_owned(),
        "--simulate".to_owned(),
        "-o".to_owned(),
        "Dir::Etc::SourceList=/dev/null".to_owned(),
        "-o".to_owned(),
        format!("Dir::Etc::SourceParts=/{STAGING}/no-parts"),
        "-o".to_owned(),
        "Debug::NoLocking=true".to_owned(),
    ];
    for (key, sub) in APT_DIRS {
        let made = staging.join(sub);
        fs::create_dir_all(made.join("partial")).map_err(|e| io_error(&made, e))?;
        argv.extend(["-o".to_owned(), format!("{key}=/{STAGING}/{sub}/")]);
    }
    argv.push("upgrade".to_owned());
    for archive in archives {
        let copy = dir.join(&archive.file_name);
        if fs::hard_link(&archive.path, &copy).is_err() {
            fs::copy(&archive.path, &copy).map_err(|e| io_error(&copy, e))?;
        }
        argv.push(format!("/{STAGING}/archives/{}", archive.file_name));
    }
    let env = base_env();
    let output = target.session(&argv, &env).run(SCRIPT_TIMEOUT);
    let _ = fs::remove_dir_all(&staging);
    let output = output?;
    if output.timed_out || output.status != Some(0) {
        tracing::warn!(
            stderr = %String::from_utf8_lossy(&output.stderr).trim(),
            "the image's apt could not plan the upgrade; packages are configured in dpkg's order"
        );
        return Ok(None);
    }
    let planned: Vec<&str> = archives.iter().map(|a| a.name()).collect();
    let order = immediate_from_simulation(&String::from_utf8_lossy(&output.stdout), &planned);
    if order.is_none() {
        tracing::warn!(
            "the image's apt plans another upgrade than this one; packages are configured in dpkg's order"
        );
    }
    Ok(order)
}

/// The immediate configurations of `apt-get -s` output: the `Conf` lines before the last
/// `Inst`, when apt installs exactly the `planned` packages (no removal, nothing else).
fn immediate_from_simulation(stdout: &str, planned: &[&str]) -> Option<Vec<String>> {
    let mut installed = Vec::new();
    let mut steps: Vec<(bool, String)> = Vec::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let (op, name) = (words.next(), words.next());
        let Some(name) = name else { continue };
        match op {
            Some("Inst") => {
                installed.push(base_name(name));
                steps.push((true, name.to_owned()));
            }
            Some("Conf") => steps.push((false, name.to_owned())),
            Some("Remv" | "Purg") => return None,
            _ => {}
        }
    }
    let mut want: Vec<&str> = planned.to_vec();
    want.sort_unstable();
    installed.sort_unstable();
    if installed != want {
        return None;
    }
    let last_inst = steps.iter().rposition(|(inst, _)| *inst)?;
    Some(
        steps[..last_inst]
            .iter()
            .filter(|(inst, _)| !inst)
            .map(|(_, name)| name.clone())
            .collect(),
    )
}

/// apt's immediate configurations in its order, each preceded by the planned packages it
/// depends on that are not configured yet. apt configures a package right after unpacking
/// it, while its dependencies may still be the old, configured versions (noble's
/// util-linux and libuuid1); here every planned package is unpacked before the first
/// configuration, so dpkg would refuse it until those are configured too.
pub(super) fn with_dependencies_first(
    immediate: &[String],
    dependencies: &std::collections::BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    fn visit(
        name: &str,
        shown_as: &str,
        dependencies: &std::collections::BTreeMap<String, Vec<String>>,
        done: &mut std::collections::BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        // Marked before its dependencies are visited: a dependency cycle ends here, and
        // dpkg configures a cycle itself.
        if !done.insert(name.to_owned()) {
            return;
        }
        for needed in dependencies.get(name).into_iter().flatten() {
            visit(needed, needed, dependencies, done, order);
        }
        order.push(shown_as.to_owned());
    }
    let mut done = std::collections::BTreeSet::new();
    let mut order = Vec::new();
    for package in immediate {
        visit(
            base_name(package),
            package,
            dependencies,
            &mut done,
            &mut order,
        );
    }
    order
}

/// `libc6` of apt's `libc6:i386`.
fn base_name(name: &str) -> &str {
    name.split_once(':').map_or(name, |(base, _)| base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULATION: &str = "Reading package lists...\n\
        61 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n\
        Inst libgcc-s1 [12-20220319-1ubuntu1] (12.3.0-1ubuntu1~22.04.3 local-deb [amd64])\n\
        Conf libgcc-s1 (12.3.0-1ubuntu1~22.04.3 local-deb [amd64])\n\
        Inst libc6 [2.35-0ubuntu3] (2.35-0ubuntu3.18 local-deb [amd64])\n\
        Conf libc6 (2.35-0ubuntu3.18 local-deb [amd64])\n\
        Inst logsave [1.46.5-2ubuntu1] (1.46.5-2ubuntu1.1 local-deb [amd64])\n\
        Inst libpam0g [1.4.0-11ubuntu2] (1.4.0-11ubuntu2.8 local-deb [amd64])\n\
        Conf libpam0g (1.4.0-11ubuntu2.8 local-deb [amd64])\n\
        Inst libssl3:amd64 [3.0.2-0ubuntu1] (3.0.2-0ubuntu1.31 local-deb [amd64])\n\
        Conf libssl3:amd64 (3.0.2-0ubuntu1.31 local-deb [amd64])\n\
        Inst libss2 [1.46.5-2ubuntu1] (1.46.5-2ubuntu1.1 local-deb [amd64])\n\
        Conf logsave (1.46.5-2ubuntu1.1 local-deb [amd64])\n\
        Conf libss2 (1.46.5-2ubuntu1.1 local-deb [amd64])\n";

    const PLANNED: &[&str] = &[
        "libc6",
        "libgcc-s1",
        "libpam0g",
        "libss2",
        "libssl3",
        "logsave",
    ];

    /// jammy-minbase as apt plans it: libssl3 is configured after libpam0g (so its text
    /// of the shared debconf template is the one kept), logsave and libss2 are left to
    /// `--pending`.
    #[test]
    fn immediate_configurations_are_the_conf_lines_before_the_last_inst() {
        assert_eq!(
            immediate_from_simulation(SIMULATION, PLANNED).unwrap(),
            ["libgcc-s1", "libc6", "libpam0g", "libssl3:amd64"]
        );
    }

    /// noble: apt configures util-linux at once, while libuuid1 (which it depends on) is
    /// still the old, configured version; with everything unpacked first, libuuid1 must be
    /// configured before it, and so must what libuuid1 needs in turn.
    #[test]
    fn planned_dependencies_are_configured_before_an_immediate_configuration() {
        let dependencies: std::collections::BTreeMap<String, Vec<String>> = [
            ("util-linux", vec!["libuuid1", "libc6"]),
            ("libuuid1", vec!["libc6"]),
            ("libc6", vec!["libgcc-s1"]),
            ("libgcc-s1", vec!["libc6"]),
            ("libssl3t64", vec!["libc6"]),
        ]
        .into_iter()
        .map(|(name, needs)| {
            (
                name.to_owned(),
                needs.into_iter().map(str::to_owned).collect(),
            )
        })
        .collect();
        let immediate = ["libc6", "util-linux", "libssl3t64:amd64"].map(str::to_owned);
        assert_eq!(
            with_dependencies_first(&immediate, &dependencies),
            [
                "libgcc-s1",
                "libc6",
                "libuuid1",
                "util-linux",
                "libssl3t64:amd64"
            ]
        );
        // Nothing to add: apt's order stays as it is.
        let alone = ["libpam0g", "libssl3:amd64"].map(str::to_owned);
        assert_eq!(with_dependencies_first(&alone, &dependencies), alone);
    }

    #[test]
    fn another_plan_than_the_upgrade_is_not_used() {
        // A package apt would not upgrade, one it would add, one it would remove.
        assert!(immediate_from_simulation(SIMULATION, &PLANNED[1..]).is_none());
        let mut more = PLANNED.to_vec();
        more.push("libudev1");
        assert!(immediate_from_simulation(SIMULATION, &more).is_none());
        let removing = format!("Remv libfoo [1]\n{SIMULATION}");
        assert!(immediate_from_simulation(&removing, PLANNED).is_none());
        assert!(immediate_from_simulation("", &[]).is_none());
    }
}
