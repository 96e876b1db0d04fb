//! Patching: turning a scan plan into one new layer on top of an image's untouched layers.
//!
//! - [`native`]: the in-process engine; [`dpkg`] computes what installing packages does.
//! - [`layer`]: the deterministic layer writer (sorted tar, fixed gzip settings).
//! - [`assemble`]: the patched image's config, manifest and index, exact bytes.
//! - [`verify`]: the patched image's package database read back and checked.
//! - [`vex`]: the OpenVEX document that says what the patch fixed.
//! - [`sandbox`]: an image root on disk and commands run inside it, unprivileged, for
//!   maintainer scripts.

pub mod apk;
pub mod assemble;
pub mod buildkit;
pub mod dpkg;
pub mod layer;
pub mod native;
pub mod physical;
pub mod referrer;
pub mod sandbox;
pub mod unpack_cache;
pub mod verify;
pub mod vex;

use std::path::Path;

use crate::error::ApiError;

/// Why an image could not be patched.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// Reading the image through the mirror failed.
    #[error("reading the image: {0}")]
    Image(String),
    #[error("built-in scanner: {0}")]
    Scan(crate::scan::builtin::BuiltinError),
    #[error("the report does not match the image:\n{0}")]
    Report(String),
    #[error("package {package}: {reason}")]
    Package { package: String, reason: String },
    #[error(transparent)]
    Native(#[from] native::NativeError),
    #[error("assembling the patched image: {0}")]
    Assemble(assemble::AssembleError),
    #[error("the patched image does not have the planned versions: {}", failures.join("; "))]
    Verification { failures: Vec<String> },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    /// The BuildKit engine: connecting, an unsafe plan, the solve, or its result.
    #[error("BuildKit: {0}")]
    Buildkit(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl PatchError {
    /// What went wrong in words that hold no host path, no script output and nothing
    /// else that differs from run to run: the served index says this of a platform kept
    /// unpatched, so the same failure gives the same index digest. The whole error goes
    /// to the log and the admin API.
    pub fn cause(&self) -> String {
        match self {
            // What the image, the report or the plan say: the same on every run, and
            // already in words a client may read.
            PatchError::Image(_) | PatchError::Report(_) | PatchError::Verification { .. } => {
                self.to_string()
            }
            PatchError::Scan(e) if e.origin() == crate::error::Origin::Client => self.to_string(),
            PatchError::Scan(_) => "the built-in scanner failed".to_owned(),
            PatchError::Package { package, .. } => {
                format!("package {package} could not be fetched or installed")
            }
            PatchError::Native(native::NativeError::ScriptFailed { script, .. }) => {
                format!("maintainer script {script} failed")
            }
            PatchError::Native(native::NativeError::ScriptsCannotRun { .. }) => {
                "the maintainer scripts cannot run here".to_owned()
            }
            PatchError::Native(_) => "the native engine failed".to_owned(),
            PatchError::Assemble(_) => "assembling the patched image failed".to_owned(),
            PatchError::Io { .. } => "an I/O error".to_owned(),
            PatchError::Buildkit(_) => "the BuildKit engine failed".to_owned(),
            PatchError::Internal(_) => "an internal error".to_owned(),
        }
    }
}

// By hand rather than `#[from]`: the message already carries the cause, and a `source`
// would print it twice in an error chain.
impl From<crate::scan::builtin::BuiltinError> for PatchError {
    fn from(error: crate::scan::builtin::BuiltinError) -> PatchError {
        PatchError::Scan(error)
    }
}

impl From<assemble::AssembleError> for PatchError {
    fn from(error: assemble::AssembleError) -> PatchError {
        PatchError::Assemble(error)
    }
}

impl PatchError {
    /// The package an error is about, when it is about one.
    pub fn package(&self) -> Option<&str> {
        use crate::patch::dpkg::DpkgError;
        match self {
            PatchError::Package { package, .. } => Some(package),
            PatchError::Scan(
                crate::scan::builtin::BuiltinError::PackageUnavailable { name, .. }
                | crate::scan::builtin::BuiltinError::PackageDownload { name, .. },
            ) => Some(name),
            PatchError::Native(native::NativeError::Dpkg(
                DpkgError::Package { package, .. } | DpkgError::Conflict { package, .. },
            )) => Some(package),
            PatchError::Native(native::NativeError::ScriptFailed { script, .. }) => {
                script.split_whitespace().next()
            }
            _ => None,
        }
    }

    pub(crate) fn from_api(error: ApiError) -> PatchError {
        PatchError::Image(error.message)
    }

    pub(crate) fn io(path: &Path, error: std::io::Error) -> PatchError {
        PatchError::Io {
            path: path.display().to_string(),
            reason: error.to_string(),
        }
    }
}
