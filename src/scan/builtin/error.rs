//! How a built-in scan fails. Every variant names the suite, URL or file at fault, and
//! knows whether it came from the image, the repository or this host, and whether trying
//! again can help.
//!
//! A missing changelog is not an error: the scan still reports the update, without CVE ids,
//! and says why in [`super::ChangelogStatus`].

use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::Origin;

use super::apk::ApkError;
use super::keyring::{KeyringError, SignatureError};

/// A built-in scan that could not produce a plan.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    /// The image is not Debian or Ubuntu.
    #[error("the built-in scanner reads Debian and Ubuntu apt repositories; this image's os-release ID is {id:?}")]
    UnsupportedDistribution { id: String },

    /// os-release names no codename, and its VERSION_ID is not a release this scanner knows.
    #[error(
        "cannot tell which {distribution} release this image is: os-release has no \
         VERSION_CODENAME and VERSION_ID {version_id:?} is not a known release"
    )]
    UnknownRelease {
        distribution: &'static str,
        version_id: Option<String>,
    },

    /// A release without a security suite (Debian unstable).
    #[error("{distribution} {codename} has no security suite to scan against")]
    NoSecuritySuite {
        distribution: &'static str,
        codename: String,
    },

    /// The platform has no Debian architecture name.
    #[error("the built-in scanner has no apt architecture for platform {platform}")]
    UnsupportedArchitecture { platform: String },

    /// The keyring file could not be read or holds no usable key.
    #[error("keyring {}: {source}", path.display())]
    Keyring {
        path: PathBuf,
        #[source]
        source: KeyringError,
    },

    /// An HTTP request failed, was refused, or its body was too large.
    #[error("suite {suite}: fetching {url}: {reason}")]
    Fetch {
        suite: String,
        url: String,
        reason: String,
        retryable: bool,
    },

    /// InRelease is not signed by a key of the keyring, or its signature is bad.
    #[error("suite {suite}: InRelease from {url} failed signature verification: {source}")]
    Signature {
        suite: String,
        url: String,
        #[source]
        source: SignatureError,
    },

    /// The signed Release text is malformed or is not the suite asked for.
    #[error("suite {suite}: Release from {url} is invalid: {reason}")]
    Release {
        suite: String,
        url: String,
        reason: String,
    },

    /// The Release's `Valid-Until` has passed: a stale mirror or a replayed old Release.
    #[error(
        "suite {suite}: Release from {url} expired at {} (Valid-Until); the mirror is stale \
         or serving an old Release", httpdate(*valid_until)
    )]
    Expired {
        suite: String,
        url: String,
        valid_until: SystemTime,
    },

    /// InRelease lists no `Packages` index for a component and architecture.
    #[error(
        "suite {suite}: InRelease lists no Packages index for {component}/binary-{architecture}"
    )]
    NoIndex {
        suite: String,
        component: String,
        architecture: String,
    },

    /// A downloaded (or cached) `Packages` index does not match its size or SHA256 in
    /// InRelease.
    #[error("suite {suite}: {path} does not match InRelease: {reason}")]
    IndexMismatch {
        suite: String,
        path: String,
        reason: String,
    },

    /// A `Packages` index that matches its hash but cannot be read.
    #[error("suite {suite}: {path}: {reason}")]
    MalformedIndex {
        suite: String,
        path: String,
        reason: String,
    },

    /// The on-disk cache could not be written or read.
    #[error("scanner cache {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },

    /// No suite's verified index has the package at the version a plan asks for.
    #[error("{name} {version} ({architecture}) is in none of the verified indexes of {suites}")]
    PackageUnavailable {
        name: String,
        version: String,
        architecture: String,
        suites: String,
    },

    /// A package's `.deb` could not be downloaded or did not match its index.
    #[error("package {name}: {cause}")]
    PackageDownload {
        name: String,
        cause: Box<BuiltinError>,
    },

    /// An Alpine scan failed (its repositories, signatures, or the image's release).
    #[error(transparent)]
    Apk(#[from] ApkError),

    /// The HTTP client could not be built from the configuration.
    #[error("setting up the built-in scanner's HTTP client: {reason}")]
    Client { reason: String },

    /// A configured severity source (`scan.severity_sources`) could not be read.
    #[error(transparent)]
    Severity(#[from] crate::scan::severity::SeverityError),
}

impl BuiltinError {
    /// Who is at fault: the image (what it is), the repository (what it served), or this
    /// host (keyring, cache, bugs).
    pub fn origin(&self) -> Origin {
        match self {
            BuiltinError::UnsupportedDistribution { .. }
            | BuiltinError::UnknownRelease { .. }
            | BuiltinError::NoSecuritySuite { .. }
            | BuiltinError::UnsupportedArchitecture { .. } => Origin::Client,
            BuiltinError::Fetch { .. }
            | BuiltinError::Signature { .. }
            | BuiltinError::Release { .. }
            | BuiltinError::Expired { .. }
            | BuiltinError::NoIndex { .. }
            | BuiltinError::IndexMismatch { .. }
            | BuiltinError::MalformedIndex { .. }
            | BuiltinError::PackageUnavailable { .. } => Origin::Upstream,
            BuiltinError::PackageDownload { cause, .. } => cause.origin(),
            BuiltinError::Apk(e) => e.origin(),
            BuiltinError::Keyring { .. }
            | BuiltinError::Cache { .. }
            | BuiltinError::Client { .. }
            | BuiltinError::Severity(_) => Origin::Internal,
        }
    }

    /// Whether the same scan may succeed later: network failures and server errors, and a
    /// hash mismatch (a mirror caught between two publications serves a new index under an
    /// old InRelease for a moment). A bad signature or an expired Release is not retried:
    /// an attacker or a broken mirror does not fix itself within a scan.
    pub fn is_retryable(&self) -> bool {
        match self {
            BuiltinError::Fetch { retryable, .. } => *retryable,
            BuiltinError::IndexMismatch { .. } => true,
            BuiltinError::PackageDownload { cause, .. } => cause.is_retryable(),
            BuiltinError::Apk(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// `Sun, 06 Nov 1994 08:49:37 UTC`, for messages.
pub(crate) fn httpdate(time: SystemTime) -> String {
    super::release::format_date(time)
}
