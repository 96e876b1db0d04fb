//! How an Alpine scan fails. Each variant names the repository (`v3.20/main`) and URL at
//! fault, or the image property that cannot be scanned.

use std::path::PathBuf;

use crate::error::Origin;

/// An Alpine scan that could not produce a plan.
#[derive(Debug, thiserror::Error)]
pub enum ApkError {
    /// An apk image that is not Alpine (Wolfi, Chainguard: other repositories, other keys).
    #[error(
        "the built-in scanner reads Alpine's apk repositories; this apk image's os-release ID \
         is {id:?}"
    )]
    UnsupportedDistribution { id: String },

    /// os-release names no Alpine branch.
    #[error(
        "cannot tell which Alpine branch this image is: os-release VERSION_ID {version_id:?} \
         is neither `<major>.<minor>[.<patch>]` nor edge"
    )]
    UnknownRelease { version_id: Option<String> },

    /// The platform has no Alpine architecture name.
    #[error("the built-in scanner has no Alpine architecture for platform {platform}")]
    UnsupportedArchitecture { platform: String },

    /// An HTTP request failed or was refused; a 404 usually means a branch or architecture
    /// the mirror does not carry.
    #[error("Alpine {repository}: fetching {url}: {reason}")]
    Fetch {
        repository: String,
        url: String,
        reason: String,
        retryable: bool,
    },

    /// `APKINDEX.tar.gz` failed verification or cannot be read; nothing of it was used.
    #[error("Alpine {repository}: {url}: {source}")]
    Index {
        repository: String,
        url: String,
        #[source]
        source: IndexError,
    },

    /// A downloaded `.apk` that is not what the signed index names (size or `C:` identity),
    /// or that cannot be read as a package; nothing of it was kept.
    #[error("Alpine {repository}: {url}: {reason}")]
    Package {
        repository: String,
        url: String,
        reason: String,
    },
}

/// Why an `APKINDEX.tar.gz` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// No `.SIGN.RSA*` entry in a first gzip member followed by the index.
    #[error("the index is not signed: {reason}")]
    NotSigned { reason: String },

    /// Signed, but by no key in the keys directory.
    #[error(
        "signed by {}, which is not among the trusted keys in {} (scan.alpine_keys_dir; \
         Alpine's keys come with its alpine-keys package)",
        keys.join(", "), keys_dir.display()
    )]
    UnknownKey {
        keys: Vec<String>,
        keys_dir: PathBuf,
    },

    /// The signature does not match the index: tampered with, truncated or mis-signed.
    #[error("signature by {key} does not verify: the index was altered or is corrupt")]
    BadSignature { key: String },

    /// A trusted key's file cannot be read or is not an RSA public key.
    #[error("public key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },

    /// Not gzip, not tar, larger than the limits, or a malformed `APKINDEX`.
    #[error("{reason}")]
    Malformed { reason: String },
}

impl ApkError {
    /// Who is at fault: the image, the mirror, or this host's keys.
    pub fn origin(&self) -> Origin {
        match self {
            ApkError::UnsupportedDistribution { .. }
            | ApkError::UnknownRelease { .. }
            | ApkError::UnsupportedArchitecture { .. } => Origin::Client,
            ApkError::Fetch { .. } | ApkError::Package { .. } => Origin::Upstream,
            ApkError::Index {
                source: IndexError::Key { .. },
                ..
            } => Origin::Internal,
            ApkError::Index { .. } => Origin::Upstream,
        }
    }

    /// Network failures and server errors may pass; a bad signature does not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApkError::Fetch {
                retryable: true,
                ..
            }
        )
    }
}
