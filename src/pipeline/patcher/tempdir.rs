//! A scratch directory removed on drop.
use std::path::{Path, PathBuf};

use crate::patch::PatchError;

#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new_in(parent: &Path) -> Result<ScratchDir, PatchError> {
        std::fs::create_dir_all(parent).map_err(|e| PatchError::io(parent, e))?;
        for _ in 0..16 {
            let path = parent.join(format!(
                "patch-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(PatchError::io(&path, e)),
            }
        }
        Err(PatchError::Internal(format!(
            "cannot create a scratch directory in {}",
            parent.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Removes the scratch directories in `parent` whose process is gone: a job killed
/// mid-way (SIGKILL, OOM, power loss) never ran its drop. A `patchpull patch` sharing the
/// store may be running, so a live process's directories stay.
pub fn remove_abandoned(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("patch-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        let alive = |pid: u32| {
            pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
        };
        if pid.is_some_and(|pid| !alive(pid)) {
            let path = entry.path();
            if let Err(e) = crate::patch::unpack_cache::remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an abandoned scratch directory");
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Scripts may leave directories the caller cannot list (mode 0500, ...).
        let _ = crate::patch::unpack_cache::remove_tree(&self.0);
    }
}
