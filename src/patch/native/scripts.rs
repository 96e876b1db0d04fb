//! Running an upgrade's maintainer scripts the way dpkg does, in the sandbox over the image
//! root, and taking what they changed into the layer.
//!
//! The order is dpkg's: the old `prerm upgrade` and the new `preinst upgrade` (from
//! `tmp.ci`, beside the new control members), the package files, the old `postrm
//! upgrade` (from the old `info/` files), the new `info/` files, then the configure
//! phase. When the image has dpkg, the configure phase is the image's own `dpkg
//! --configure --pending` over the database as `dpkg --unpack` leaves it: it runs every
//! `postinst` from `info/` with dpkg's environment and processes every trigger (those the
//! upgrade activated and those the scripts raise with `dpkg-trigger`) in dpkg's order.
//! An image with a shell and no dpkg gets the planned `postinst` and trigger runs instead.
//!
//! The tree is compared with its state before: every change that the layer does not
//! already hold exactly is added to it (contents and mode from disk, the layer's epoch as
//! mtime, so two runs give one digest). Package files carry their package's mtime while
//! the scripts run, as after `dpkg --unpack`, so what scripts derive from them (Python's
//! byte-compiled files record their source's mtime) is the same on every run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::image::{LayerDescriptor, LayerSource, Limits};
use crate::patch::dpkg::scripts::{ScriptPlan, ScriptRun, NEW_CONTROL_PATH};
use crate::patch::dpkg::Configure;
use crate::patch::layer::{EntryKind, FileData, LayerBuilder, LayerEntry};
use crate::patch::sandbox::{self, OverlayRoot, SandboxCommand, SandboxOutput};

use super::apply::{apply, fresh_dir, Selection};
use super::changes::fold_changes;
use super::{io_error, NativeError};

/// Paths whose changes never go into a layer.
const EXCLUDED: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "tmp",
    "run",
    "var/lib/dpkg/tmp.ci",
    STAGING,
    // dpkg's backup of the status file before its last write: it names the state in
    // between, and the layer holds the state after.
    "var/lib/dpkg/status-old",
    // ldconfig's cache of inode numbers and times: different on every run, and only an
    // accelerator (ldconfig checks every entry against the file before trusting it).
    "var/cache/ldconfig/aux-cache",
    // Logs of this run (update-alternatives stamps every line with the clock): what
    // happened is in the layer itself, and the clock must not change its digest.
    "var/log/alternatives.log",
    "var/log/dpkg.log",
];
/// Where the new versions' control members wait for their preinst (each is moved to
/// `tmp.ci` just before it runs, as dpkg extracts one package's at a time).
pub(super) const STAGING: &str = "var/lib/dpkg/tmp.patchpull";
/// One script's time budget.
pub(super) const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// What the tests may add to the scripts' environment (to fake their clock with
/// libfaketime, say): `NAME=value` words, read by debug builds only.
pub const EXTRA_ENV: &str = "PATCHPULL_SCRIPTS_EXTRA_ENV";
/// The configure phase, when the image's dpkg runs it.
const DPKG_CONFIGURE: &str = "dpkg --configure --pending";

/// What running the scripts did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptsReport {
    /// `package script args`, in the order run; for dpkg's configure phase, what dpkg
    /// said it did (`dpkg: Setting up tzdata (2026f-0+deb12u1) ...`).
    pub ran: Vec<String>,
    /// Paths the scripts changed beyond the packages' own files.
    pub changed: Vec<String>,
}

/// Where the scripts run.
pub enum ScriptRoot<'a> {
    /// The image is written out under the scratch directory first.
    Scratch,
    /// An unpacked tree of the image that stays untouched: the scripts see it through an
    /// overlay whose upper directory (under the scratch directory) takes every change.
    Overlay(&'a Path),
}

/// One upgrade's scripts and what they run over.
pub struct ScriptsJob<'a> {
    pub plan: &'a ScriptPlan,
    /// Given when the image has dpkg: the database it configures from.
    pub configure: Option<&'a Configure>,
    /// Path prefixes of the upgraded packages' new `info/` members, written after the old
    /// postrm ran ([`Configure::new_info`]).
    pub new_info: &'a [String],
    pub source: &'a dyn LayerSource,
    pub layers: &'a [LayerDescriptor],
    /// The mtime of entries the scripts made.
    pub epoch: u64,
    pub scratch: &'a Path,
    /// The image's dpkg version, for `DPKG_RUNNING_VERSION` of the scripts run here.
    pub dpkg_version: &'a str,
    /// apt's `Pre-Install-Pkgs` hooks to run first (debconf's preconfiguration), and the
    /// new packages' archives they are given, in install order.
    pub pre_install: &'a [String],
    pub archives: &'a [super::preconfigure::Archive],
    /// When the image's apt is asked for its configure order ([`super::apt_order`]): each
    /// planned package's planned dependencies, configured before it.
    pub apt_order: Option<&'a std::collections::BTreeMap<String, Vec<String>>>,
}

/// Runs the job's scripts over the image and folds their changes into `layer`. Both roots
/// give the same changes, so the same layer.
pub fn run(
    job: &ScriptsJob<'_>,
    layer: &mut LayerBuilder,
    root: ScriptRoot<'_>,
) -> Result<ScriptsReport, NativeError> {
    let mut report = ScriptsReport {
        ran: Vec::new(),
        changed: Vec::new(),
    };
    let (target, changes) = match root {
        ScriptRoot::Overlay(lower) => {
            let overlay = OverlayRoot::create(lower, &job.scratch.join(UPPER))?;
            let target = Target::Overlay(&overlay);
            run_phases(job, &target, layer, &mut report)?;
            let started = std::time::Instant::now();
            let changes = overlay.changes(EXCLUDED)?;
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "upper directory read"
            );
            tracing::info!(changed = changes.len(), "scripts ran over the cached root");
            (overlay.upper().to_path_buf(), changes)
        }
        ScriptRoot::Scratch => {
            let root = job.scratch.join("root");
            fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
            sandbox::materialize(job.source, job.layers, &root, &Limits::default())?;
            sandbox::separate_hard_links(&root)?;
            tracing::info!("image written to the scratch root");
            let before = sandbox::snapshot(&root, EXCLUDED)?;
            run_phases(job, &Target::Plain(&root), layer, &mut report)?;
            let after = sandbox::snapshot(&root, EXCLUDED)?;
            (root, sandbox::diff(&before, &after))
        }
    };
    let started = std::time::Instant::now();
    fold_changes(layer, &target, changes, job.epoch, &mut report)?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "scripts' changes folded into the layer"
    );
    // Keep the tree: file entries taken from disk point into it until the layer is written.
    Ok(report)
}

/// dpkg's phases, each in one sandbox session (setting one up costs more than most
/// scripts), with the layer's entries written in between.
fn run_phases(
    job: &ScriptsJob<'_>,
    target: &Target<'_>,
    layer: &LayerBuilder,
    report: &mut ScriptsReport,
) -> Result<(), NativeError> {
    let immediate = match job.apt_order {
        Some(dependencies) => super::apt_order::immediate_configuration(target, job.archives)?
            .map(|order| super::apt_order::with_dependencies_first(&order, dependencies)),
        None => None,
    };
    super::preconfigure::run(target, job.pre_install, job.archives)?;
    let pre: Vec<&ScriptRun> = job.plan.pre.iter().collect();
    run_steps(target, &pre, job.dpkg_version, report)?;

    // The packages' files and the database as the unpack leaves it; the new `info/`
    // members wait for the old postrm.
    let new_info = |e: &LayerEntry| job.new_info.iter().any(|p| e.path.starts_with(p.as_str()));
    let status = |e: &LayerEntry| job.configure.is_some_and(|c| e.path == c.status_path);
    let started = std::time::Instant::now();
    apply(
        layer,
        target,
        Selection::new(&|e| !new_info(e) && !status(e)),
    )?;
    if let Some(configure) = job.configure {
        // Only with dpkg: without it the scripts see the final database.
        let unpacked = status_entry(layer, configure)?;
        let mut only = LayerBuilder::default();
        only.insert(unpacked);
        apply(&only, target, Selection::all())?;
    } else {
        apply(layer, target, Selection::new(&status))?;
    }
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "packages' entries written to the scripts' root"
    );

    let postrm: Vec<&ScriptRun> = job
        .plan
        .post
        .iter()
        .filter(|s| s.script == "postrm")
        .collect();
    run_steps(target, &postrm, job.dpkg_version, report)?;
    apply(layer, target, Selection::new(&new_info))?;

    match job.configure {
        Some(_) => run_dpkg_configure(target, immediate.as_deref().unwrap_or_default(), report),
        None => {
            let configure: Vec<&ScriptRun> = job
                .plan
                .post
                .iter()
                .filter(|s| s.script != "postrm")
                .chain(&job.plan.triggers)
                .collect();
            run_steps(target, &configure, job.dpkg_version, report)
        }
    }
}

/// The status file as the unpack leaves it, as an entry like the layer's final one.
fn status_entry(layer: &LayerBuilder, configure: &Configure) -> Result<LayerEntry, NativeError> {
    let Some(last) = layer.get(&configure.status_path) else {
        return Err(NativeError::Io {
            path: PathBuf::from(&configure.status_path),
            reason: "the layer has no status file".to_owned(),
        });
    };
    let mut entry = last.clone();
    entry.kind = EntryKind::File(FileData::Bytes(configure.unpacked_status.clone()));
    Ok(entry)
}

/// Removes what an overlay run left in `scratch` (its upper directory), before the same
/// scripts run over a plain tree instead.
pub fn discard_overlay(scratch: &Path) {
    let _ = crate::patch::unpack_cache::remove_tree(&scratch.join(UPPER));
}

/// The overlay's upper directory in the scratch directory.
const UPPER: &str = "upper";

/// The tree a phase runs in.
pub(super) enum Target<'a> {
    Plain(&'a Path),
    Overlay(&'a OverlayRoot),
}

impl Target<'_> {
    /// The host directory standing for the tree's `rel` (made if needed), to write into.
    pub(super) fn dir(&self, rel: &str) -> Result<PathBuf, NativeError> {
        match self {
            Target::Plain(root) => fresh_dir(root, rel),
            Target::Overlay(overlay) => Ok(overlay.ensure_dir(rel)?),
        }
    }

    pub(super) fn session<'t>(
        &'t self,
        argv: &'t [String],
        env: &'t [(String, String)],
    ) -> Session<'t> {
        let (root, lower) = match self {
            Target::Plain(root) => (*root, None),
            Target::Overlay(overlay) => (overlay.upper(), Some(overlay.lower())),
        };
        Session {
            root,
            lower,
            argv,
            env,
        }
    }
}

pub(super) struct Session<'a> {
    root: &'a Path,
    lower: Option<&'a Path>,
    argv: &'a [String],
    env: &'a [(String, String)],
}

impl Session<'_> {
    pub(super) fn run(&self, timeout: Duration) -> Result<SandboxOutput, NativeError> {
        Ok(sandbox::run(&SandboxCommand {
            lower: self.lower,
            root: self.root,
            argv: self.argv,
            env: self.env,
            stdin: None,
            timeout,
        })?)
    }
}

/// Quotes `text` for a POSIX shell.
pub(super) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Marks the driver writes to stderr: a step starting, and a step failing with its status.
const STEP_MARK: &str = "patchpull-step ";
const FAILED_MARK: &str = "patchpull-step-failed ";

/// The environment every session starts from: what `apt-get` run as root in a container
/// build passes on to dpkg, with debconf told not to ask (`DEBIAN_FRONTEND`), plus what
/// the tests add ([`EXTRA_ENV`]).
pub(super) fn base_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("DEBIAN_FRONTEND", "noninteractive"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.extend(extra_env());
    env
}

/// [`EXTRA_ENV`]'s words as (name, value).
/// Only debug builds (the tests' binaries) read it: a release binary never lets its
/// environment reach the scripts, and a debug one warns once that it does.
fn extra_env() -> Vec<(String, String)> {
    if !cfg!(debug_assertions) {
        return Vec::new();
    }
    let words: Vec<(String, String)> = std::env::var(EXTRA_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    static WARNED: std::sync::Once = std::sync::Once::new();
    if !words.is_empty() {
        WARNED.call_once(|| {
            tracing::warn!(
                variable = EXTRA_ENV,
                "a test-only variable adds to the maintainer scripts' environment"
            );
        });
    }
    words
}

/// The environment dpkg gives a maintainer script (`maintscript_exec`, and what dpkg sets
/// for its children at start).
fn script_env(step: &ScriptRun, dpkg_version: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DPKG_MAINTSCRIPT_PACKAGE", step.package.clone()),
        ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1".to_owned()),
        ("DPKG_MAINTSCRIPT_ARCH", step.architecture.clone()),
        ("DPKG_MAINTSCRIPT_NAME", step.script.to_owned()),
        ("DPKG_MAINTSCRIPT_DEBUG", "0".to_owned()),
        ("DPKG_RUNNING_VERSION", dpkg_version.to_owned()),
        ("DPKG_ADMINDIR", "/var/lib/dpkg".to_owned()),
        ("DPKG_ROOT", String::new()),
    ]
}

/// Runs `steps` in one sandbox session, in order, stopping at the first failure, as dpkg
/// would: each from its own path, in `/`, with umask 022.
fn run_steps(
    target: &Target<'_>,
    steps: &[&ScriptRun],
    dpkg_version: &str,
    report: &mut ScriptsReport,
) -> Result<(), NativeError> {
    if steps.is_empty() {
        return Ok(());
    }
    let staging = target.dir(STAGING)?;
    let mut driver = String::from("#!/bin/sh\numask 022\ncd /\n");
    for (n, step) in steps.iter().enumerate() {
        if !step.staged.is_empty() {
            let dir = staging.join(n.to_string());
            fs::create_dir(&dir).map_err(|e| io_error(&dir, e))?;
            for member in &step.staged {
                let path = dir.join(&member.name);
                fs::write(&path, &member.data).map_err(|e| io_error(&path, e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(member.mode))
                    .map_err(|e| io_error(&path, e))?;
            }
            // One package's control members in tmp.ci at a time, as dpkg extracts them.
            driver.push_str(&format!(
                "rm -rf {NEW_CONTROL_PATH} && mv /{STAGING}/{n} {NEW_CONTROL_PATH} || {{ echo \"{FAILED_MARK}{n} staging\" >&2; exit 100; }}\n"
            ));
        }
        // As dpkg's `setexecute`: a script without r-x for everyone is made 0755 first.
        let path = quote(&step.path);
        driver.push_str(&format!(
            "if command -v find >/dev/null; then [ -n \"$(find {path} -prune -perm -0555)\" ] || chmod 0755 {path}; fi\n"
        ));
        let mut command = String::from("env");
        for (name, value) in script_env(step, dpkg_version) {
            command.push_str(&format!(" {name}={}", quote(&value)));
        }
        command.push(' ');
        command.push_str(&quote(&step.path));
        for arg in &step.args {
            command.push(' ');
            command.push_str(&quote(arg));
        }
        driver.push_str(&format!(
            "echo '{STEP_MARK}{n}' >&2\n{command} </dev/null || {{ s=$?; echo \"{FAILED_MARK}{n} $s\" >&2; exit 100; }}\n"
        ));
        if !step.staged.is_empty() {
            driver.push_str(&format!("rm -rf {NEW_CONTROL_PATH}\n"));
        }
    }
    let driver_path = staging.join("driver");
    fs::write(&driver_path, driver).map_err(|e| io_error(&driver_path, e))?;
    let argv = vec!["/bin/sh".to_owned(), format!("/{STAGING}/driver")];
    let env = base_env();
    let timeout = SCRIPT_TIMEOUT * u32::try_from(steps.len()).unwrap_or(u32::MAX);
    let started = std::time::Instant::now();
    let output = target.session(&argv, &env).run(timeout)?;
    tracing::debug!(
        steps = steps.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "maintainer scripts ran"
    );
    let _ = fs::remove_dir_all(&staging);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let describe =
        |step: &ScriptRun| format!("{} {} {}", step.package, step.script, step.args.join(" "));
    let failed = stderr.lines().rev().find_map(|line| {
        let rest = line.strip_prefix(FAILED_MARK)?;
        let (n, status) = rest.split_once(' ')?;
        Some((n.parse::<usize>().ok()?, status.to_owned()))
    });
    let started = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(STEP_MARK)?.parse::<usize>().ok())
        .max();
    if output.timed_out || output.status != Some(0) {
        let (index, status) = match failed {
            Some((n, status)) => (n, format!("exit status {status}")),
            None if output.timed_out => (
                started.unwrap_or(0),
                format!("timed out after {}s", timeout.as_secs()),
            ),
            None => (started.unwrap_or(0), exit_status(&output)),
        };
        // The failing step's own output: what follows its start mark.
        let mark = format!("{STEP_MARK}{index}");
        let own = stderr
            .rsplit_once(mark.as_str())
            .map_or(stderr.as_ref(), |(_, o)| o);
        let step = steps.get(index).unwrap_or(&steps[0]);
        return Err(NativeError::ScriptFailed {
            script: describe(step),
            status,
            stderr: tail(own),
        });
    }
    report.ran.extend(steps.iter().map(|s| describe(s)));
    Ok(())
}

/// The image's own dpkg configures the unpacked packages and processes every pending
/// trigger, as `apt-get` does: first those apt configures at once (`immediate`, in its
/// order, with `--no-triggers`), then the rest and the triggers with `--pending`.
fn run_dpkg_configure(
    target: &Target<'_>,
    immediate: &[String],
    report: &mut ScriptsReport,
) -> Result<(), NativeError> {
    let mut command = String::from("umask 022 && cd / && ");
    if !immediate.is_empty() {
        command.push_str("dpkg --configure --no-triggers");
        for package in immediate {
            command.push(' ');
            command.push_str(&quote(package));
        }
        command.push_str(" </dev/null && ");
    }
    command.push_str("exec dpkg --configure --pending </dev/null");
    let argv: Vec<String> = vec!["/bin/sh".to_owned(), "-c".to_owned(), command];
    let env = base_env();
    let started = std::time::Instant::now();
    let output = target.session(&argv, &env).run(SCRIPT_TIMEOUT * 4)?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dpkg configured the packages"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.timed_out || output.status != Some(0) {
        let status = if output.timed_out {
            format!("timed out after {}s", (SCRIPT_TIMEOUT * 4).as_secs())
        } else {
            exit_status(&output)
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(NativeError::ScriptFailed {
            script: DPKG_CONFIGURE.to_owned(),
            status,
            stderr: tail(&format!("{stdout}\n{stderr}")),
        });
    }
    report.ran.extend(
        stdout
            .lines()
            .filter(|l| l.starts_with("Setting up ") || l.starts_with("Processing triggers for "))
            .map(|l| format!("dpkg: {l}")),
    );
    Ok(())
}

pub(super) fn exit_status(output: &SandboxOutput) -> String {
    output.status.map_or("killed by a signal".to_owned(), |s| {
        format!("exit status {s}")
    })
}

/// A failing run's output, cut to what names the failure.
pub(super) fn tail(output: &str) -> String {
    super::failure::summary(output, FAILED_MARK)
}
