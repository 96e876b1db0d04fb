//! Mounting an overlay root: what its option string can carry, the work directory each
//! mount needs, and whether this host can mount one at all.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{lchown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::super::{effective_uid, SandboxError, ROOT_ID_BASE};
use super::{is_opaque, is_whiteout, lstat, take_metadata};

/// Refuses paths the overlay mount's option string cannot carry.
pub(crate) fn mount_safe(path: &Path) -> Result<(), SandboxError> {
    let text = path.as_os_str().as_encoded_bytes();
    if text
        .iter()
        .any(|b| matches!(b, b',' | b':' | b'\\' | b'\n'))
    {
        return Err(SandboxError::UnsafeRoot {
            root: path.to_path_buf(),
            reason: "an overlay mount cannot name a path with `,`, `:` or `\\`".to_owned(),
        });
    }
    Ok(())
}

/// The overlay's work directory for one mount: empty, next to the upper directory (the
/// same file system), owned like it. Removed when dropped.
pub(crate) struct OverlayWork(PathBuf);

impl OverlayWork {
    pub(crate) fn make(upper: &Path) -> Result<OverlayWork, SandboxError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            ".{}.work-{}",
            upper
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("upper"),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = upper.with_file_name(name);
        mount_safe(&path)?;
        let _ = remove_work(&path);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| SandboxError::io("mkdir", &path, e))?;
        let top = fs::symlink_metadata(upper).map_err(|e| SandboxError::io("stat", upper, e))?;
        take_metadata(&path, &top)?;
        Ok(OverlayWork(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for OverlayWork {
    fn drop(&mut self) {
        let _ = remove_work(&self.0);
    }
}

/// overlayfs leaves `work/work` with mode 0: open it up before removing.
fn remove_work(path: &Path) -> io::Result<()> {
    let inner = path.join("work");
    if inner.is_dir() || fs::symlink_metadata(&inner).is_ok() {
        let _ = fs::set_permissions(&inner, fs::Permissions::from_mode(0o700));
    }
    fs::remove_dir_all(path)
}

/// Whether overlay roots work with directories in `dir` (a user namespace may mount
/// overlayfs with `userxattr`, whiteouts and opaque directories included). Probed once
/// per directory and process. `Err` says why not.
pub fn overlay_available(dir: &Path) -> Result<(), String> {
    static PROBED: OnceLock<Mutex<BTreeMap<PathBuf, Result<(), String>>>> = OnceLock::new();
    let probed = PROBED.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Some(known) = probed.lock().ok().and_then(|p| p.get(dir).cloned()) {
        return known;
    }
    let result = super::super::available().and_then(|()| probe(dir));
    if let Ok(mut probed) = probed.lock() {
        probed.insert(dir.to_path_buf(), result.clone());
    }
    result
}

fn probe(dir: &Path) -> Result<(), String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The mount runs with `/` as its working directory: a relative path names nothing there.
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = dir.join(format!(
        ".overlay-probe-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    mount_safe(&base).map_err(|e| e.to_string())?;
    let result = probe_in(&base);
    let _ = remove_work(&base.join("w"));
    let _ = fs::remove_dir_all(&base);
    result
}

fn probe_in(base: &Path) -> Result<(), String> {
    let io = |what: &str, e: io::Error| format!("{what} in {}: {e}", base.display());
    for sub in ["", "l", "l/d", "u", "w", "m"] {
        fs::create_dir_all(base.join(sub)).map_err(|e| io("mkdir", e))?;
    }
    File::create(base.join("l/f")).map_err(|e| io("create", e))?;
    File::create(base.join("l/d/g")).map_err(|e| io("create", e))?;
    let root = effective_uid().map_err(|e| e.to_string())? == 0;
    if root {
        for sub in ["", "l", "l/d", "l/f", "l/d/g", "u", "w", "m"] {
            lchown(base.join(sub), Some(ROOT_ID_BASE), Some(ROOT_ID_BASE))
                .map_err(|e| io("chown", e))?;
        }
    }
    let script = r#"b=$1
mount -t overlay overlay -o "userxattr,lowerdir=$b/l,upperdir=$b/u,workdir=$b/w" "$b/m" &&
rm "$b/m/f" && rm -r "$b/m/d" && mkdir "$b/m/d" && : > "$b/m/d/n""#;
    let mut command = if root {
        let mut c = Command::new(super::super::run::find_tool("setpriv")?);
        c.args(super::super::run::drop_to(ROOT_ID_BASE, ROOT_ID_BASE))
            .arg(super::super::run::find_tool("unshare")?);
        c
    } else {
        Command::new(super::super::run::find_tool("unshare")?)
    };
    command
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["--", "sh", "-c", script, "sh"])
        .arg(base);
    let output = super::super::process::supervise(command, None, Duration::from_secs(10), None)
        .map_err(|e| format!("cannot start unshare: {e}"))?;
    if output.status != Some(0) {
        return Err(format!(
            "a user namespace cannot mount overlayfs over {}: {}",
            base.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let whiteout = lstat(&base.join("u/f")).ok().flatten();
    if !whiteout.as_ref().is_some_and(is_whiteout) || !is_opaque(&base.join("u/d")) {
        return Err(
            "overlayfs did not record a whiteout and an opaque directory as expected".to_owned(),
        );
    }
    Ok(())
}
