//! Where a package path is in the image: through its directory symlinks (merged /usr)
//! and, for the caller, its diversions.

use super::*;

impl Builder<'_> {
    /// Where `path` (a package path, no leading `/`) is in the image: its directories
    /// resolved through the image's symbolic links, its last component not.
    pub(super) fn physical(&mut self, path: &str, package: &str) -> Result<String, DpkgError> {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let dir = self.physical_dir(parent, package)?;
        Ok(if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        })
    }

    pub(super) fn physical_dir(&mut self, dir: &str, package: &str) -> Result<String, DpkgError> {
        if dir.is_empty() {
            return Ok(String::new());
        }
        if let Some(done) = self.resolved.get(dir) {
            return Ok(done.clone());
        }
        let here = self.physical(dir, package)?;
        let conflict = |reason: &str| DpkgError::Conflict {
            package: package.to_owned(),
            path: format!("/{dir}"),
            reason: reason.to_owned(),
        };
        let real = match self.tree.get(&here).map(|n| n.kind) {
            None | Some(NodeKind::Dir) => here,
            Some(NodeKind::Symlink) => match self.tree.resolve(&here, MAX_SYMLINKS)? {
                Some((real, node)) if node.is_dir() => String::from_utf8(real)
                    .map_err(|_| conflict("resolves to a path that is not UTF-8"))?,
                _ => {
                    return Err(conflict(
                        "is a symbolic link to something that is not a directory",
                    ))
                }
            },
            Some(_) => {
                return Err(conflict(
                    "is a file in the image, a directory in the package",
                ))
            }
        };
        self.resolved.insert(dir.to_owned(), real.clone());
        Ok(real)
    }
}
