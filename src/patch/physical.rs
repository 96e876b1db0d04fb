//! Where a package path is in an image: its directories resolved through the image's own
//! directory symlinks (a package's `lib/x` lands in `usr/lib/x` on a merged-`/usr` image),
//! its last component not. dpkg and apk both write through such links; both engines ask
//! here and turn a [`Conflict`] into their own error.

use std::collections::HashMap;

use crate::image::{EntryKind as NodeKind, Filesystem, ImageError};

/// Symlinks followed at most while resolving one directory, as the kernel's limit.
const MAX_SYMLINKS: u32 = 40;

/// Why a package directory has no place in the image.
#[derive(Debug)]
pub enum Conflict {
    Image(ImageError),
    /// `/dir` cannot hold the package's entries, for `reason`.
    Path {
        dir: String,
        reason: &'static str,
    },
}

/// Package directories resolved so far, remembered per patch.
#[derive(Debug, Default)]
pub struct PhysicalPaths {
    resolved: HashMap<String, String>,
}

impl PhysicalPaths {
    /// Where `path` (a package path, no leading `/`) is in `tree`.
    ///
    /// # Errors
    /// [`Conflict`] when one of its directories is a file in the image or a link to one.
    pub fn path(&mut self, tree: &Filesystem, path: &str) -> Result<String, Conflict> {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let dir = self.dir(tree, parent)?;
        Ok(if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        })
    }

    /// Where the directory `dir` is in `tree`.
    ///
    /// # Errors
    /// As [`PhysicalPaths::path`].
    pub fn dir(&mut self, tree: &Filesystem, dir: &str) -> Result<String, Conflict> {
        if dir.is_empty() {
            return Ok(String::new());
        }
        if let Some(done) = self.resolved.get(dir) {
            return Ok(done.clone());
        }
        let here = self.path(tree, dir)?;
        let conflict = |reason| Conflict::Path {
            dir: format!("/{dir}"),
            reason,
        };
        let real = match tree.get(&here).map(|n| n.kind) {
            None | Some(NodeKind::Dir) => here,
            Some(NodeKind::Symlink) => {
                match tree.resolve(&here, MAX_SYMLINKS).map_err(Conflict::Image)? {
                    Some((real, node)) if node.is_dir() => String::from_utf8(real)
                        .map_err(|_| conflict("resolves to a path that is not UTF-8"))?,
                    _ => {
                        return Err(conflict(
                            "is a symbolic link to something that is not a directory",
                        ))
                    }
                }
            }
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
