//! An image root on disk, and commands run inside it without privileges: what the native
//! engine needs to run Debian maintainer scripts as dpkg would and to see what they changed.
//!
//! - [`materialize`] writes an image's merged file system into an empty directory.
//! - [`run`] runs a command chrooted there, in new user, mount, pid, network, IPC and UTS
//!   namespaces, through the host's `unshare` (util-linux). The image root becomes the
//!   whole file system of the sandbox: the host's root is unmounted, not only hidden by a
//!   chroot, so a hostile binary in the image reaches nothing of the host's.
//! - [`snapshot`] and [`diff`] record a tree and say exactly what changed in it.
//!
//! Ownership. The sandbox's root user is the owner of the root directory: the caller when
//! it is not root (only uid 0 exists inside then). A root caller never runs the sandbox as
//! host uid 0 (that uid can write kernel settings even from a user namespace): the tree is
//! owned by [`ROOT_ID_BASE`] + image id, and the sandbox maps its ids 0..[`ID_RANGE`] onto
//! those. [`Snapshot`] reports ids as the sandbox (and the image) sees them.

pub mod host;
mod materialize;
mod overlay;
#[cfg(test)]
mod overlay_tests;
mod process;
mod run;
mod snapshot;
#[cfg(test)]
pub(crate) mod tests;

use std::io;
use std::path::PathBuf;

use crate::image::ImageError;

pub use materialize::{materialize, separate_hard_links, Materialized};
pub use overlay::{overlay_available, OverlayRoot};
pub use run::{available, run, SandboxCommand, SandboxOutput, OUTPUT_LIMIT};
pub use snapshot::{diff, record_at, snapshot, Change, FileKind, FileRecord, Snapshot};

/// Host id that image id 0 becomes when a root caller materializes a tree.
pub const ROOT_ID_BASE: u32 = 0x7000_0000;
/// How many ids (from 0) a root caller's sandbox maps; image ids above are stored as
/// [`OVERFLOW_ID`].
pub const ID_RANGE: u32 = 65_536;
/// The id the kernel shows for an id a user namespace does not map (`nobody`).
pub const OVERFLOW_ID: u32 = 65_534;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Reading a layer failed (corrupt, limits, `..` names).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A layer entry would write outside the root or through a link it made itself.
    #[error("layer {layer}: entry /{path} refused: {reason}")]
    UnsafeEntry {
        layer: usize,
        path: String,
        reason: &'static str,
    },
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The target of [`materialize`] is not an empty directory.
    #[error("{}: not an empty directory", .0.display())]
    NotEmpty(PathBuf),
    /// [`snapshot`] met a name that is not UTF-8.
    #[error("{}: file name is not UTF-8", .0.display())]
    NonUtf8Path(PathBuf),
    /// This host cannot run the sandbox; see [`available`].
    #[error("sandbox unavailable: {0}")]
    Unavailable(String),
    /// The command cannot be passed on as given (empty argv, NUL bytes, bad env names).
    #[error("invalid sandbox command: {0}")]
    InvalidCommand(String),
    /// The root cannot host the sandbox (a mount point is a symbolic link, an ancestor is
    /// not searchable by the sandbox's user, ...).
    #[error("sandbox root {}: {reason}", .root.display())]
    UnsafeRoot { root: PathBuf, reason: String },
    /// The namespaces or mounts could not be set up; `stderr` is the setup's own message.
    #[error("sandbox setup failed: {stderr}")]
    Setup { stderr: String },
}

impl SandboxError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SandboxError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Whether trees this process materializes carry the image's owners (shifted by
/// [`ROOT_ID_BASE`]): only a root caller can write them.
pub fn owners_kept() -> Result<bool, SandboxError> {
    Ok(effective_uid()? == 0)
}

/// The process's effective uid, without libc: `/proc/self` belongs to it.
pub(crate) fn effective_uid() -> Result<u32, SandboxError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| SandboxError::io("stat", "/proc/self", e))
}
