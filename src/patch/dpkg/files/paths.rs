//! Where a package path is in the image: through its directory symlinks (merged /usr)
//! and, for the caller, its diversions.

use super::*;
use crate::patch::physical::Conflict;

impl Builder<'_> {
    /// Where `path` (a package path, no leading `/`) is in the image
    /// ([`crate::patch::physical`]).
    pub(super) fn physical(&mut self, path: &str, package: &str) -> Result<String, DpkgError> {
        self.physical
            .path(self.tree, path)
            .map_err(|c| dpkg_conflict(c, package))
    }

    pub(super) fn physical_dir(&mut self, dir: &str, package: &str) -> Result<String, DpkgError> {
        self.physical
            .dir(self.tree, dir)
            .map_err(|c| dpkg_conflict(c, package))
    }
}

fn dpkg_conflict(conflict: Conflict, package: &str) -> DpkgError {
    match conflict {
        Conflict::Image(error) => DpkgError::from(error),
        Conflict::Path { dir, reason } => DpkgError::Conflict {
            package: package.to_owned(),
            path: dir,
            reason: reason.to_owned(),
        },
    }
}
