//! Configuration: figment layers (built-in defaults < TOML file < `PATCHPULL_*` environment)
//! merged into [`RawConfig`], then checked by [`RawConfig::validate`] into [`Config`], whose
//! fields are never optional-and-unwrapped later. Every problem is collected and reported
//! with the key (and the file or variable) it came from.

mod admission;
mod buildkit;
mod check;
pub mod defaults;
mod patch;
mod raw;
mod scaleout;
mod secret;
mod signing;
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use admission::AdmissionConfig;
pub use buildkit::{BuildkitConfig, PatchEngine};
pub use patch::{PartialIndex, PatchConfig, PatchMode, PatchPolicy};
pub use raw::{RawConfig, RawUpstream};
pub use scaleout::{BackingRegistry, CoordinationConfig, StorageBackend, BACKING_REGISTRY_NAME};
pub use secret::Secret;
pub use signing::{RequireSignature, SigningConfig, UnverifiedAnswer};

/// The checked configuration the rest of the program runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
    pub scan: ScanConfig,
    pub patch: PatchConfig,
    pub admission: AdmissionConfig,
    /// `[signing]`: the key patched images are signed with.
    pub signing: SigningConfig,
    pub coordination: CoordinationConfig,
    pub upstream: Vec<UpstreamConfig>,
    /// What the TTL caches go by: the monotonic clock, which only tests move. Not read
    /// from the config file.
    pub clock: crate::clock::Clock,
}

/// The built-in scanner's repositories and behaviour.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub cache_dir: PathBuf,
    pub debian_archive_url: String,
    pub debian_security_url: String,
    pub debian_keyring: PathBuf,
    pub ubuntu_archive_url: String,
    pub ubuntu_security_url: String,
    pub ubuntu_ports_url: String,
    pub ubuntu_keyring: PathBuf,
    pub alpine_url: String,
    /// PEM public keys, each named as the `.SIGN.RSA*.<name>` entries of `APKINDEX.tar.gz`.
    pub alpine_keys_dir: PathBuf,
    /// Alpine's secdb (CVE ids per fixed version); empty: not read.
    pub alpine_secdb_url: String,
    pub point_releases: bool,
    pub changelogs: bool,
    pub refresh_interval: Duration,
    pub command: Vec<String>,
    pub command_timeout: Duration,
    pub result_ttl: Duration,
    /// Files or http(s) URLs of severity data for the built-in scanner: the Debian
    /// security tracker's JSON export, Ubuntu's CVE OVAL XML.
    pub severity_sources: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub shutdown_grace: Duration,
    /// A client that has not sent a request's headers in this time is disconnected.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once (lowered at start to fit the open-file limit).
    pub max_connections: usize,
    /// Connections the kernel queues for accept (capped by `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Bytes shared by all responses for blob chunks read ahead of the socket.
    pub buffer_memory: u64,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub max_size: u64,
    pub memory_cache: u64,
    pub max_manifest_size: u64,
    pub blob_fill_timeout: Duration,
    pub backend: StorageBackend,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub tag_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub aliases: Vec<String>,
    pub url: reqwest::Url,
    pub default: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub library_prefix: bool,
    pub tag_ttl: Duration,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// `host[:port]` globs a redirect may lead to besides the upstream's own origin.
    pub redirect_hosts: Vec<String>,
    /// `host[:port]` globs of token realms that get the credentials besides its own.
    pub auth_hosts: Vec<String>,
    /// Originals from this upstream are patched only when their signature verifies (a
    /// matching `[[patch.policy]]`'s wins).
    pub require_signature: Option<RequireSignature>,
}

impl UpstreamConfig {
    /// `host[:port]` of the upstream URL, which containerd sends as `ns=` for a reference
    /// that names the registry itself.
    pub fn authority(&self) -> String {
        match (self.url.host_str(), self.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        }
    }
}

/// Why a configuration could not be loaded; each line names the place (`FILE:LINE` or
/// the environment variable) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("config file {path} cannot be read: {error}")]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads defaults < `file` < environment. With `explicit == false` a missing file is
    /// fine (the embedded defaults run); an explicitly named file must exist. Every problem
    /// is reported at once ([`check`]).
    pub fn load(file: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = if file.exists() {
            std::fs::read_to_string(file).map_err(|error| ConfigError::Unreadable {
                path: file.to_path_buf(),
                error,
            })?
        } else if explicit {
            return Err(ConfigError::MissingFile(file.to_path_buf()));
        } else {
            String::new()
        };
        check::load(&check::Source {
            label: file.display().to_string(),
            text: &text,
            environment: true,
        })
        .map_err(ConfigError::Invalid)
    }

    /// Defaults < the given TOML text, without the environment: what tests build on.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        check::load(&check::Source {
            label: "config".into(),
            text: toml,
            environment: false,
        })
        .map_err(ConfigError::Invalid)
    }

    /// The effective configuration as TOML, secrets masked: what `config check` prints.
    pub fn to_display_toml(&self) -> String {
        let view = raw::RawConfig::from_checked(self);
        toml::to_string_pretty(&view).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
