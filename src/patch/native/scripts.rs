//! Running an upgrade's maintainer scripts the way dpkg does, in the sandbox over the image
//! root, and taking what they changed into the layer.
//!
//! The image is written out to a scratch directory, the `pre` scripts run, the layer's
//! entries are applied, the `post` scripts and triggers run, and the tree is compared
//! with its state before: every change that the layer does not already hold exactly is
//! added to it (contents and mode from disk, the layer's epoch as mtime, so two runs give
//! one digest).

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::image::{LayerDescriptor, LayerSource, Limits};
use crate::patch::dpkg::scripts::{ScriptPlan, ScriptRun};
use crate::patch::layer::{EntryKind, FileData, LayerBuilder, LayerEntry};
use crate::patch::sandbox::{self, Change, SandboxCommand};

use super::NativeError;

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

/// Runs `plan` over the image and folds the scripts' changes into `layer`.
pub fn run(
    plan: &ScriptPlan,
    source: &dyn LayerSource,
    layers: &[LayerDescriptor],
    layer: &mut LayerBuilder,
    epoch: u64,
    scratch: &Path,
    dpkg_version: &str,
) -> Result<ScriptsReport, NativeError> {
    let root = scratch.join("root");
    fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
    sandbox::materialize(source, layers, &root, &Limits::default())?;
    let before = sandbox::snapshot(&root, EXCLUDED)?;
    let mut report = ScriptsReport {
        ran: Vec::new(),
        changed: Vec::new(),
    };
    for step in &plan.pre {
        run_one(&root, step, dpkg_version, &mut report)?;
    }
    apply(layer, &root)?;
    for step in plan.post.iter().chain(&plan.triggers) {
        run_one(&root, step, dpkg_version, &mut report)?;
    }
    let after = sandbox::snapshot(&root, EXCLUDED)?;
    for change in sandbox::diff(&before, &after) {
        match change {
            Change::Added(path) | Change::Modified(path) => {
                if holds_exactly(layer, &root, &path)? {
                    continue;
                }
                let entry = entry_from_disk(&root, &path, epoch, after.get(&path))?;
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
    // Keep the root: file entries taken from disk point into it until the layer is written.
    Ok(report)
}

fn io_error(path: &Path, error: io::Error) -> NativeError {
    NativeError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

fn run_one(
    root: &Path,
    step: &ScriptRun,
    dpkg_version: &str,
    report: &mut ScriptsReport,
) -> Result<(), NativeError> {
    let staging = root.join(STAGING);
    fs::create_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
    let script = staging.join(step.script);
    fs::write(&script, &step.contents).map_err(|e| io_error(&script, e))?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
        .map_err(|e| io_error(&script, e))?;
    let mut argv = vec![format!("/{STAGING}/{}", step.script)];
    argv.extend(step.args.iter().cloned());
    let env: Vec<(String, String)> = [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
        ("DPKG_MAINTSCRIPT_PACKAGE", &step.package),
        ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
        ("DPKG_MAINTSCRIPT_ARCH", &step.architecture),
        ("DPKG_MAINTSCRIPT_NAME", step.script),
        ("DPKG_RUNNING_VERSION", dpkg_version),
        ("DPKG_ADMINDIR", "/var/lib/dpkg"),
        ("DPKG_ROOT", ""),
        ("DPKG_FORCE", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let output = sandbox::run(&SandboxCommand {
        root,
        argv: &argv,
        env: &env,
        stdin: None,
        timeout: SCRIPT_TIMEOUT,
    })?;
    let _ = fs::remove_dir_all(&staging);
    let described = format!("{} {} {}", step.package, step.script, step.args.join(" "));
    if output.timed_out || output.status != Some(0) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(NativeError::ScriptFailed {
            script: described,
            status: if output.timed_out {
                format!("timed out after {}s", SCRIPT_TIMEOUT.as_secs())
            } else {
                output.status.map_or("killed by a signal".to_owned(), |s| {
                    format!("exit status {s}")
                })
            },
            stderr: tail,
        });
    }
    report.ran.push(described);
    Ok(())
}

/// Checks that no directory above `path` inside `root` is a symbolic link, so writing
/// there stays inside the root.
fn safe_target(root: &Path, path: &str) -> Result<PathBuf, NativeError> {
    let mut at = root.to_path_buf();
    let components: Vec<&str> = path.split('/').collect();
    for (i, part) in components.iter().enumerate() {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(NativeError::Io {
                path: root.join(path),
                reason: "not a normal path inside the root".to_owned(),
            });
        }
        at.push(part);
        if i + 1 < components.len() {
            if let Ok(meta) = fs::symlink_metadata(&at) {
                if meta.file_type().is_symlink() {
                    return Err(NativeError::Io {
                        path: at,
                        reason: "a directory on the way is a symbolic link".to_owned(),
                    });
                }
            }
        }
    }
    Ok(at)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the layer's entries into the root, as an extractor would.
fn apply(layer: &LayerBuilder, root: &Path) -> Result<(), NativeError> {
    for entry in layer.iter() {
        let target = safe_target(root, &entry.path)?;
        let io = |e: io::Error| io_error(&target, e);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        match &entry.kind {
            EntryKind::Dir => {
                if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    remove_any(&target).map_err(io)?;
                    fs::create_dir(&target).map_err(io)?;
                }
                fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode & 0o7777))
                    .map_err(io)?;
            }
            EntryKind::File(data) => {
                remove_any(&target).map_err(io)?;
                let mut out = fs::File::create(&target).map_err(io)?;
                match data {
                    FileData::Bytes(bytes) => io::Write::write_all(&mut out, bytes).map_err(io)?,
                    FileData::Slice { file, offset, len } => {
                        let mut reader = SliceReader {
                            file: file.clone(),
                            offset: *offset,
                            left: *len,
                        };
                        io::copy(&mut reader, &mut out).map_err(io)?;
                    }
                    FileData::Path(path) => {
                        let mut input = fs::File::open(path).map_err(io)?;
                        io::copy(&mut input, &mut out).map_err(io)?;
                    }
                }
                fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode & 0o7777))
                    .map_err(io)?;
            }
            EntryKind::Symlink(link) => {
                remove_any(&target).map_err(io)?;
                symlink(link, &target).map_err(io)?;
            }
            EntryKind::Hardlink(link) => {
                remove_any(&target).map_err(io)?;
                let source = safe_target(root, link)?;
                fs::hard_link(&source, &target).map_err(io)?;
            }
            EntryKind::Whiteout => remove_any(&target).map_err(io)?,
            EntryKind::OpaqueDir => {
                if let Ok(children) = fs::read_dir(&target) {
                    for child in children.flatten() {
                        remove_any(&child.path()).map_err(io)?;
                    }
                }
            }
        }
    }
    Ok(())
}

struct SliceReader {
    file: std::sync::Arc<fs::File>,
    offset: u64,
    left: u64,
}

impl io::Read for SliceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
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
    record: Option<&sandbox::FileRecord>,
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
    let (uid, gid) = record.map_or((0, 0), |r| (u64::from(r.uid), u64::from(r.gid)));
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
