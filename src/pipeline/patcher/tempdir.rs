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

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Scripts may leave directories the caller cannot list (mode 0500, ...).
        let _ = crate::patch::unpack_cache::remove_tree(&self.0);
    }
}
