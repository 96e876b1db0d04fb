//! The two ways this module fails: a version string outside its ecosystem's grammar, and a
//! file from an image that cannot be read as the format its path promises. Both are
//! deterministic (the same bytes always fail the same way), so neither is ever retryable.

use super::Ecosystem;

/// A version string that an ecosystem's grammar rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {ecosystem} version {version:?}: {reason}")]
pub struct VersionError {
    pub ecosystem: Ecosystem,
    /// The rejected version, verbatim.
    pub version: String,
    /// What is wrong with it, e.g. "revision is empty".
    pub reason: String,
}

impl VersionError {
    pub(crate) fn new(ecosystem: Ecosystem, version: &str, reason: impl Into<String>) -> Self {
        VersionError {
            ecosystem,
            version: version.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Boxed error from a [`FileSource`](super::FileSource): whatever reading the image failed
/// with (a corrupt layer, a size limit).
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Reading an image's package inventory failed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file does not follow its format. `line` is 1-based.
    #[error("{path}:{line}: {reason}")]
    Malformed {
        path: String,
        line: usize,
        reason: String,
    },
    /// The file is a package database in a format patchpull cannot read yet.
    #[error("{path}: {reason}")]
    Unsupported { path: String, reason: String },
    /// A dpkg image without os-release whose package database does not say which
    /// Debian or Ubuntu release it is.
    #[error(
        "no /etc/os-release or /usr/lib/os-release, and the package database does not say \
         which release this is: {0}"
    )]
    NoRelease(#[source] super::dpkg::release::ReleaseUnknown),
    /// The image could not be read at this path.
    #[error("reading {path} from the image: {source}")]
    Read {
        path: String,
        #[source]
        source: SourceError,
    },
}

impl InventoryError {
    /// The path of the file at fault (the missing os-release for [`InventoryError::NoRelease`]).
    pub fn path(&self) -> &str {
        match self {
            InventoryError::NoRelease(_) => super::os_release::PATHS[0],
            InventoryError::Malformed { path, .. }
            | InventoryError::Unsupported { path, .. }
            | InventoryError::Read { path, .. } => path,
        }
    }
}

/// A syntax error at a line, before the parser's caller adds the file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    pub line: usize,
    pub reason: String,
}

impl LineError {
    pub fn new(line: usize, reason: impl Into<String>) -> Self {
        LineError {
            line,
            reason: reason.into(),
        }
    }

    pub fn in_file(self, path: &str) -> InventoryError {
        InventoryError::Malformed {
            path: path.to_owned(),
            line: self.line,
            reason: self.reason,
        }
    }
}
