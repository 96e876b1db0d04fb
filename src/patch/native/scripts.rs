//! Running an upgrade's maintainer scripts the way dpkg does, in the sandbox over the image
//! root, and taking what they changed into the layer.
//!
//! The image is written out to a scratch directory, the `pre` scripts run, the layer's
//! entries are applied, the `post` scripts and triggers run, and the tree is compared
//! with its state before: every change that the layer does not already hold exactly is
//! added to it (contents and mode from disk, the layer's epoch as mtime, so two runs give
//! one digest).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::image::{LayerDescriptor, LayerSource, Limits};
use crate::patch::dpkg::scripts::{ScriptPlan, ScriptRun};
use crate::patch::layer::{EntryKind, FileData, LayerBuilder, LayerEntry};
use crate::patch::sandbox::{self, Change, OverlayRoot, SandboxCommand};

use super::apply::{apply, apply_overlay};
use super::{io_error, NativeError};

/// Top-level directories whose changes never go into a layer.
const EXCLUDED: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "tmp",
    "run",
    "var/lib/dpkg/tmp.ci",
    // ldconfig's cache of inode numbers and times: different on every run, and only an
    // accelerator (ldconfig checks every entry against the file before trusting it).
    "var/cache/ldconfig/aux-cache",
    // Logs of this run (update-alternatives stamps every line with the clock): what
    // happened is in the layer itself, and the clock must not change its digest.
    "var/log/alternatives.log",
    "var/log/dpkg.log",
];
/// Where scripts are staged while they run, as dpkg stages control files.
const STAGING: &str = "var/lib/dpkg/tmp.ci";
/// One script's time budget.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// What running the scripts did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptsReport {
    /// `package script args`, in the order run.
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

/// Runs `plan` over the image and folds the scripts' changes into `layer`. Both roots give
/// the same changes, so the same layer.
#[allow(clippy::too_many_arguments)]
pub fn run(
    plan: &ScriptPlan,
    source: &dyn LayerSource,
    layers: &[LayerDescriptor],
    layer: &mut LayerBuilder,
    epoch: u64,
    scratch: &Path,
    dpkg_version: &str,
    root: ScriptRoot<'_>,
) -> Result<ScriptsReport, NativeError> {
    let mut report = ScriptsReport {
        ran: Vec::new(),
        changed: Vec::new(),
    };
    let pre: Vec<&ScriptRun> = plan.pre.iter().collect();
    let post: Vec<&ScriptRun> = plan.post.iter().chain(&plan.triggers).collect();
    let (target, changes) = match root {
        ScriptRoot::Overlay(lower) => {
            let overlay = OverlayRoot::create(lower, &scratch.join(UPPER))?;
            let target = Target::Overlay(&overlay);
            run_phase(&target, &pre, dpkg_version, &mut report)?;
            let started = std::time::Instant::now();
            apply_overlay(layer, &overlay)?;
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "packages' entries written to the upper directory"
            );
            run_phase(&target, &post, dpkg_version, &mut report)?;
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
            let root = scratch.join("root");
            fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
            sandbox::materialize(source, layers, &root, &Limits::default())?;
            sandbox::separate_hard_links(&root)?;
            tracing::info!("image written to the scratch root");
            let before = sandbox::snapshot(&root, EXCLUDED)?;
            let target = Target::Plain(&root);
            run_phase(&target, &pre, dpkg_version, &mut report)?;
            apply(layer, &root)?;
            run_phase(&target, &post, dpkg_version, &mut report)?;
            let after = sandbox::snapshot(&root, EXCLUDED)?;
            (root, sandbox::diff(&before, &after))
        }
    };
    let started = std::time::Instant::now();
    for change in changes {
        match change {
            Change::Added(path) | Change::Modified(path) => {
                if holds_exactly(layer, &target, &path)? {
                    continue;
                }
                let record = sandbox::record_at(&target, &path)?;
                let entry = entry_from_disk(&target, &path, epoch, &record)?;
                layer.insert(entry);
                report.changed.push(path);
            }
            Change::Removed(path) => {
                if layer
                    .get(&path)
                    .is_some_and(|e| matches!(e.kind, EntryKind::Whiteout))
                {
                    continue;
                }
                layer.remove(&path);
                layer.whiteout(&path);
                report.changed.push(path);
            }
        }
    }
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "scripts' changes folded into the layer"
    );
    // Keep the tree: file entries taken from disk point into it until the layer is written.
    Ok(report)
}

/// Removes what an overlay run left in `scratch` (its upper directory), before the same
/// scripts run over a plain tree instead.
pub fn discard_overlay(scratch: &Path) {
    let _ = crate::patch::unpack_cache::remove_tree(&scratch.join(UPPER));
}

/// The overlay's upper directory in the scratch directory.
const UPPER: &str = "upper";

/// The tree a phase runs in.
enum Target<'a> {
    Plain(&'a Path),
    Overlay(&'a OverlayRoot),
}

/// Quotes `text` for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Marks the driver writes to stderr: a step starting, and a step failing with its status.
const STEP_MARK: &str = "patchpull-step ";
const FAILED_MARK: &str = "patchpull-step-failed ";

/// Runs `steps` in one sandbox session, in order, stopping at the first failure, as dpkg
/// would. One session per phase: setting a sandbox up costs more than most scripts.
fn run_phase(
    target: &Target<'_>,
    steps: &[&ScriptRun],
    dpkg_version: &str,
    report: &mut ScriptsReport,
) -> Result<(), NativeError> {
    if steps.is_empty() {
        return Ok(());
    }
    let (root, lower, staging) = match target {
        Target::Plain(root) => {
            let staging = root.join(STAGING);
            fs::create_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
            (*root, None, staging)
        }
        Target::Overlay(overlay) => (
            overlay.upper(),
            Some(overlay.lower()),
            overlay.ensure_dir(STAGING)?,
        ),
    };
    let mut driver = String::from("#!/bin/sh\n");
    for (n, step) in steps.iter().enumerate() {
        let script = staging.join(format!("{n}.{}", step.script));
        fs::write(&script, &step.contents).map_err(|e| io_error(&script, e))?;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error(&script, e))?;
        let vars = [
            ("DPKG_MAINTSCRIPT_PACKAGE", step.package.as_str()),
            ("DPKG_MAINTSCRIPT_ARCH", step.architecture.as_str()),
            ("DPKG_MAINTSCRIPT_NAME", step.script),
        ];
        let mut command = String::from("env");
        for (name, value) in vars {
            command.push_str(&format!(" {name}={}", quote(value)));
        }
        command.push_str(&format!(" /{STAGING}/{n}.{}", step.script));
        for arg in &step.args {
            command.push(' ');
            command.push_str(&quote(arg));
        }
        driver.push_str(&format!(
            "echo '{STEP_MARK}{n}' >&2\n{command} </dev/null || {{ s=$?; echo \"{FAILED_MARK}{n} $s\" >&2; exit 100; }}\n"
        ));
    }
    let driver_path = staging.join("driver");
    fs::write(&driver_path, driver).map_err(|e| io_error(&driver_path, e))?;
    let argv = vec!["/bin/sh".to_owned(), format!("/{STAGING}/driver")];
    let env: Vec<(String, String)> = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
        ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
        ("DPKG_RUNNING_VERSION", dpkg_version),
        ("DPKG_ADMINDIR", "/var/lib/dpkg"),
        ("DPKG_ROOT", ""),
        ("DPKG_FORCE", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let timeout = SCRIPT_TIMEOUT * u32::try_from(steps.len()).unwrap_or(u32::MAX);
    let started = std::time::Instant::now();
    let output = sandbox::run(&SandboxCommand {
        lower,
        root,
        argv: &argv,
        env: &env,
        stdin: None,
        timeout,
    })?;
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
            None => (
                started.unwrap_or(0),
                output.status.map_or("killed by a signal".to_owned(), |s| {
                    format!("exit status {s}")
                }),
            ),
        };
        // The failing step's own output: what follows its start mark.
        let mark = format!("{STEP_MARK}{index}");
        let own = stderr
            .rsplit_once(mark.as_str())
            .map_or(stderr.as_ref(), |(_, o)| o);
        let tail: Vec<&str> = own
            .lines()
            .filter(|l| !l.starts_with(FAILED_MARK) && !l.trim().is_empty())
            .collect();
        let tail = tail[tail.len().saturating_sub(10)..].join("\n");
        let step = steps.get(index).unwrap_or(&steps[0]);
        return Err(NativeError::ScriptFailed {
            script: describe(step),
            status,
            stderr: tail,
        });
    }
    report.ran.extend(steps.iter().map(|s| describe(s)));
    Ok(())
}

/// True when the layer's entry at `path` is what is on disk now (a script did not touch
/// it after it was applied).
fn holds_exactly(layer: &LayerBuilder, root: &Path, path: &str) -> Result<bool, NativeError> {
    let Some(entry) = layer.get(path) else {
        return Ok(false);
    };
    let on_disk = root.join(path);
    let meta = match fs::symlink_metadata(&on_disk) {
        Ok(meta) => meta,
        Err(_) => return Ok(false),
    };
    Ok(match &entry.kind {
        EntryKind::Dir => {
            meta.is_dir() && meta.permissions().mode() & 0o7777 == entry.mode & 0o7777
        }
        EntryKind::Symlink(link) => {
            meta.file_type().is_symlink()
                && fs::read_link(&on_disk)
                    .is_ok_and(|l| l.as_os_str().as_encoded_bytes() == link.as_bytes())
        }
        EntryKind::File(FileData::Bytes(bytes)) => {
            meta.is_file()
                && meta.permissions().mode() & 0o7777 == entry.mode & 0o7777
                && fs::read(&on_disk).is_ok_and(|data| data == *bytes)
        }
        // Package files applied from the .deb: a script rewriting one would be rare; the
        // mode and size must still match.
        EntryKind::File(FileData::Slice { len, .. }) => {
            meta.is_file()
                && meta.len() == *len
                && meta.permissions().mode() & 0o7777 == entry.mode & 0o7777
        }
        EntryKind::File(FileData::Path(_)) | EntryKind::Hardlink(_) => meta.is_file(),
        EntryKind::Whiteout | EntryKind::OpaqueDir => false,
    })
}

/// A path the scripts changed, as a layer entry: contents and mode from disk, owners as
/// the image sees them, the layer's epoch as mtime.
fn entry_from_disk(
    root: &Path,
    path: &str,
    epoch: u64,
    record: &sandbox::FileRecord,
) -> Result<LayerEntry, NativeError> {
    use std::os::unix::fs::MetadataExt;
    let on_disk = root.join(path);
    let meta = fs::symlink_metadata(&on_disk).map_err(|e| io_error(&on_disk, e))?;
    let kind = if meta.file_type().is_symlink() {
        let link = fs::read_link(&on_disk).map_err(|e| io_error(&on_disk, e))?;
        EntryKind::Symlink(link.to_string_lossy().into_owned())
    } else if meta.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File(FileData::Path(on_disk.clone()))
    };
    let (uid, gid) = (u64::from(record.uid), u64::from(record.gid));
    Ok(LayerEntry {
        path: path.to_owned(),
        mode: meta.mode() & 0o7777,
        uid,
        gid,
        uname: if uid == 0 {
            "root".to_owned()
        } else {
            String::new()
        },
        gname: if gid == 0 {
            "root".to_owned()
        } else {
            String::new()
        },
        mtime: epoch,
        kind,
    })
}
