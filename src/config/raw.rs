//! The configuration as written: what figment merges and serde checks for unknown keys.
//! Durations ("30s") and sizes ("4MiB") stay text here and are parsed in `validate`, so an
//! error names the key that holds the bad value.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::{defaults, secret::Secret, PatchMode};
use super::{
    CacheConfig, Config, LogConfig, LogFormat, ScanConfig, ServerConfig, StorageConfig, TlsFiles,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub storage: RawStorage,
    pub cache: RawCache,
    pub log: RawLog,
    pub scan: RawScan,
    pub patch: super::patch::RawPatch,
    pub admission: super::admission::RawAdmission,
    pub signing: super::signing::RawSigning,
    pub coordination: super::scaleout::RawCoordination,
    pub upstream: Vec<RawUpstream>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScan {
    /// Where repository indexes and changelog results are cached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    pub debian_archive_url: String,
    pub debian_security_url: String,
    pub debian_keyring: PathBuf,
    pub ubuntu_archive_url: String,
    pub ubuntu_security_url: String,
    pub ubuntu_ports_url: String,
    pub ubuntu_keyring: PathBuf,
    pub alpine_url: String,
    pub alpine_keys_dir: PathBuf,
    /// Empty: no secdb, Alpine updates are listed without CVE ids.
    pub alpine_secdb_url: String,
    /// Also read the release itself and `-updates`, not only `-security`.
    pub point_releases: bool,
    /// Read CVE ids from each update's changelog.
    pub changelogs: bool,
    #[serde(deserialize_with = "text_or_number")]
    pub refresh_interval: String,
    /// A scanner to run when no report exists, as argv with `{image}`, `{oci_dir}` and
    /// `{platform}` placeholders; empty: none.
    pub command: Vec<String>,
    #[serde(deserialize_with = "text_or_number")]
    pub command_timeout: String,
    /// How long a scanner command's plan for an image is reused.
    #[serde(deserialize_with = "text_or_number")]
    pub result_ttl: String,
    /// Severity data for the built-in scanner (files or URLs); empty: none.
    pub severity_sources: Vec<String>,
}

impl Default for RawScan {
    fn default() -> Self {
        RawScan {
            cache_dir: None,
            debian_archive_url: defaults::SCAN_DEBIAN_ARCHIVE_URL.into(),
            debian_security_url: defaults::SCAN_DEBIAN_SECURITY_URL.into(),
            debian_keyring: defaults::SCAN_DEBIAN_KEYRING.into(),
            ubuntu_archive_url: defaults::SCAN_UBUNTU_ARCHIVE_URL.into(),
            ubuntu_security_url: defaults::SCAN_UBUNTU_ARCHIVE_URL.into(),
            ubuntu_ports_url: defaults::SCAN_UBUNTU_PORTS_URL.into(),
            ubuntu_keyring: defaults::SCAN_UBUNTU_KEYRING.into(),
            alpine_url: defaults::SCAN_ALPINE_URL.into(),
            alpine_keys_dir: defaults::SCAN_ALPINE_KEYS_DIR.into(),
            alpine_secdb_url: String::new(),
            point_releases: true,
            changelogs: true,
            refresh_interval: fmt_duration(defaults::SCAN_REFRESH_INTERVAL),
            command: Vec::new(),
            command_timeout: fmt_duration(defaults::SCAN_COMMAND_TIMEOUT),
            result_ttl: fmt_duration(defaults::SCAN_RESULT_TTL),
            severity_sources: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address and port to listen on.
    pub listen: String,
    /// PEM certificate chain; with `tls_key` switches on TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    #[serde(deserialize_with = "text_or_number")]
    pub shutdown_grace: String,
    /// A client that has not sent a request's headers in this time is disconnected.
    #[serde(deserialize_with = "text_or_number")]
    pub header_read_timeout: String,
    /// A connection on which no byte moved in this time is closed.
    #[serde(deserialize_with = "text_or_number")]
    pub idle_timeout: String,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections the kernel queues for accept (capped by `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Memory shared by all responses for blob chunks read ahead of the socket.
    #[serde(deserialize_with = "text_or_number")]
    pub buffer_memory: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    /// Directory of the content-addressed store.
    pub path: PathBuf,
    /// Upper bound of the store; least recently used content is evicted above it.
    #[serde(deserialize_with = "text_or_number")]
    pub max_size: String,
    /// Memory for manifests kept in RAM.
    #[serde(deserialize_with = "text_or_number")]
    pub memory_cache: String,
    /// Largest manifest accepted from upstream.
    #[serde(deserialize_with = "text_or_number")]
    pub max_manifest_size: String,
    /// Longest time one upstream blob download may take.
    #[serde(deserialize_with = "text_or_number")]
    pub blob_fill_timeout: String,
    /// Where patched images and the index live: "local" or "registry".
    pub backend: String,
    /// The backing registry of `backend = "registry"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<super::scaleout::RawBackingRegistry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    /// How long a resolved tag is served without asking upstream again.
    #[serde(deserialize_with = "text_or_number")]
    pub tag_ttl: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: String,
    /// tracing filter directive, e.g. `info` or `patchpull=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// What `ns=` and the path prefix say.
    pub name: String,
    /// Base URL of the registry, `https://host[:port]`.
    pub url: String,
    /// Used when a request names no upstream.
    #[serde(default)]
    pub default: bool,
    /// More names accepted in `ns=` and as a path prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Extra PEM CA certificates trusted for this upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Prepend `library/` to one-component names (Docker Hub); default: name is docker.io.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_prefix: Option<bool>,
    #[serde(
        default,
        deserialize_with = "opt_text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub tag_ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(
        default,
        deserialize_with = "opt_text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_text_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<String>,
    /// Hosts (`host[:port]` globs) a redirect from this upstream may lead to, besides its
    /// own origin; default: the CDNs of well-known registries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_hosts: Option<Vec<String>>,
    /// Hosts (`host[:port]` globs) whose token realm gets this upstream's credentials,
    /// besides its own `host[:port]`; default: Docker Hub's token service for Docker Hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_hosts: Option<Vec<String>>,
    /// Patch an original only when its cosign signature verifies with this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_signature: Option<super::signing::RawRequireSignature>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            server: RawServer::default(),
            storage: RawStorage::default(),
            cache: RawCache::default(),
            log: RawLog::default(),
            scan: RawScan::default(),
            patch: super::patch::RawPatch::default(),
            admission: super::admission::RawAdmission::default(),
            signing: super::signing::RawSigning::default(),
            coordination: super::scaleout::RawCoordination::default(),
            upstream: vec![RawUpstream {
                name: defaults::UPSTREAM_NAME.into(),
                url: defaults::UPSTREAM_URL.into(),
                default: true,
                aliases: Vec::new(),
                username: None,
                password: None,
                ca_file: None,
                insecure_skip_verify: false,
                library_prefix: None,
                tag_ttl: None,
                retries: None,
                connect_timeout: None,
                timeout: None,
                redirect_hosts: None,
                auth_hosts: None,
                require_signature: None,
            }],
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: defaults::LISTEN.into(),
            tls_cert: None,
            tls_key: None,
            shutdown_grace: fmt_duration(defaults::SHUTDOWN_GRACE),
            header_read_timeout: fmt_duration(defaults::HEADER_READ_TIMEOUT),
            idle_timeout: fmt_duration(defaults::IDLE_TIMEOUT),
            max_connections: defaults::MAX_CONNECTIONS,
            listen_backlog: defaults::LISTEN_BACKLOG,
            http2_max_concurrent_streams: defaults::HTTP2_MAX_CONCURRENT_STREAMS,
            buffer_memory: fmt_size(defaults::BUFFER_MEMORY),
        }
    }
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            path: defaults::STORAGE_PATH.into(),
            max_size: fmt_size(defaults::STORAGE_MAX_SIZE),
            memory_cache: fmt_size(defaults::MEMORY_CACHE),
            max_manifest_size: fmt_size(defaults::MAX_MANIFEST_SIZE),
            blob_fill_timeout: fmt_duration(defaults::BLOB_FILL_TIMEOUT),
            backend: defaults::STORAGE_BACKEND.into(),
            registry: None,
        }
    }
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            tag_ttl: fmt_duration(defaults::TAG_TTL),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: defaults::LOG_FORMAT.into(),
            level: defaults::LOG_LEVEL.into(),
        }
    }
}

pub(super) fn fmt_duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub(super) fn fmt_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, factor) in UNITS {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// Accepts `"30s"` as well as a bare number, which the environment provider produces.
pub(super) fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct TextOrNumber;
    impl serde::de::Visitor<'_> for TextOrNumber {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("text such as \"30s\" or \"4MiB\", or a whole number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            u64::try_from(v)
                .map(|n| n.to_string())
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
    }
    d.deserialize_any(TextOrNumber)
}

fn opt_text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    text_or_number(d).map(Some)
}

/// Collects every problem instead of stopping at the first.
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn duration(&mut self, key: &str, text: &str) -> std::time::Duration {
        let parsed = if text.trim() == "0" {
            Ok(std::time::Duration::ZERO)
        } else {
            humantime::parse_duration(text.trim())
        };
        parsed.unwrap_or_else(|e| {
            self.0.push(format!(
                "`{key}`: expected a duration such as \"30s\" or \"5m\", found {text:?} ({e})"
            ));
            std::time::Duration::ZERO
        })
    }

    pub(super) fn size(&mut self, key: &str, text: &str) -> u64 {
        match text.trim().parse::<bytesize::ByteSize>() {
            Ok(size) => size.as_u64(),
            Err(e) => {
                self.0.push(format!(
                    "`{key}`: expected a size such as \"4MiB\" or \"20GiB\", found {text:?} ({e})"
                ));
                0
            }
        }
    }
}

impl RawConfig {
    /// Checks every field and builds the [`Config`], or lists every problem found.
    pub fn validate(self) -> Result<Config, Vec<String>> {
        let mut p = Problems(Vec::new());

        let listen = self
            .server
            .listen
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| {
                p.0.push(format!(
                "`server.listen`: expected host:port such as \"127.0.0.1:5000\", found {:?} ({e})",
                self.server.listen
            ));
                SocketAddr::from(([127, 0, 0, 1], 0))
            });
        let tls = match (self.server.tls_cert, self.server.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                for (k, path) in [("server.tls_cert", &cert), ("server.tls_key", &key)] {
                    if !path.is_file() {
                        p.0.push(format!("`{k}`: file {} does not exist", path.display()));
                    }
                }
                Some(TlsFiles { cert, key })
            }
            _ => {
                p.0.push("`server.tls_cert` and `server.tls_key` must be set together".into());
                None
            }
        };
        let shutdown_grace = p.duration("server.shutdown_grace", &self.server.shutdown_grace);
        let header_read_timeout = p.duration(
            "server.header_read_timeout",
            &self.server.header_read_timeout,
        );
        let idle_timeout = p.duration("server.idle_timeout", &self.server.idle_timeout);
        for (key, d) in [
            ("server.header_read_timeout", header_read_timeout),
            ("server.idle_timeout", idle_timeout),
        ] {
            if d.is_zero() {
                p.0.push(format!("`{key}`: must be more than 0"));
            }
        }
        if self.server.max_connections == 0 {
            p.0.push("`server.max_connections`: must be at least 1".into());
        }
        if self.server.listen_backlog == 0 {
            p.0.push("`server.listen_backlog`: must be at least 1".into());
        }
        if self.server.http2_max_concurrent_streams == 0 {
            p.0.push("`server.http2_max_concurrent_streams`: must be at least 1".into());
        }
        let buffer_memory = p.size("server.buffer_memory", &self.server.buffer_memory);
        if buffer_memory < defaults::BUFFER_MEMORY_MIN {
            p.0.push(format!(
                "`server.buffer_memory`: must be at least {}",
                fmt_size(defaults::BUFFER_MEMORY_MIN)
            ));
        }

        // Absolute from here on: the sandbox and its mounts run with `/` as their working
        // directory, and a relative path there names another directory (or none).
        let path = match std::path::absolute(&self.storage.path) {
            Ok(path) => path,
            Err(e) => {
                p.0.push(format!(
                    "`storage.path`: {} cannot be made absolute: {e}",
                    self.storage.path.display()
                ));
                self.storage.path.clone()
            }
        };
        let storage = StorageConfig {
            path,
            max_size: p.size("storage.max_size", &self.storage.max_size),
            memory_cache: p.size("storage.memory_cache", &self.storage.memory_cache),
            max_manifest_size: p.size("storage.max_manifest_size", &self.storage.max_manifest_size),
            blob_fill_timeout: p
                .duration("storage.blob_fill_timeout", &self.storage.blob_fill_timeout),
            backend: super::scaleout::validate_backend(
                &self.storage.backend,
                self.storage.registry.clone(),
                &mut p,
            ),
        };
        let coordination = super::scaleout::validate_coordination(self.coordination, &mut p);
        let tag_ttl = p.duration("cache.tag_ttl", &self.cache.tag_ttl);

        let format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                p.0.push(format!(
                    "`log.format`: expected \"text\" or \"json\", found {other:?}"
                ));
                LogFormat::Text
            }
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            p.0.push(format!(
                "`log.level`: {:?} is not a valid filter ({e})",
                self.log.level
            ));
        }

        let upstreams = super::upstream::validate(self.upstream, tag_ttl, &mut p);

        let refresh_interval = p.duration("scan.refresh_interval", &self.scan.refresh_interval);
        let command_timeout = p.duration("scan.command_timeout", &self.scan.command_timeout);
        let result_ttl = p.duration("scan.result_ttl", &self.scan.result_ttl);
        if self
            .scan
            .command
            .first()
            .is_some_and(|c| c.trim().is_empty())
        {
            p.0.push("`scan.command`: the first element must name a program".into());
        }
        for (key, url) in [
            ("scan.debian_archive_url", &self.scan.debian_archive_url),
            ("scan.debian_security_url", &self.scan.debian_security_url),
            ("scan.ubuntu_archive_url", &self.scan.ubuntu_archive_url),
            ("scan.ubuntu_security_url", &self.scan.ubuntu_security_url),
            ("scan.ubuntu_ports_url", &self.scan.ubuntu_ports_url),
            ("scan.alpine_url", &self.scan.alpine_url),
        ]
        .into_iter()
        .chain(
            Some(("scan.alpine_secdb_url", &self.scan.alpine_secdb_url))
                .filter(|(_, url)| !url.is_empty()),
        ) {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => p.0.push(format!(
                    "`{key}`: expected an http or https URL, found {:?}",
                    super::upstream::redact_userinfo(url)
                )),
            }
        }
        for (i, source) in self.scan.severity_sources.iter().enumerate() {
            let is_url = source.starts_with("http://") || source.starts_with("https://");
            if source.trim().is_empty() || (!is_url && source.contains("://")) {
                p.0.push(format!(
                    "`scan.severity_sources[{i}]`: expected a file path or an http(s) URL, found {:?}",
                    super::upstream::redact_userinfo(source)
                ));
            } else if !is_url && !std::path::Path::new(source).is_file() {
                p.0.push(format!(
                    "`scan.severity_sources[{i}]`: file {source} does not exist"
                ));
            }
        }
        let scan = ScanConfig {
            cache_dir: self
                .scan
                .cache_dir
                .clone()
                .unwrap_or_else(|| storage.path.join(defaults::SCAN_CACHE_SUBDIR)),
            debian_archive_url: self.scan.debian_archive_url,
            debian_security_url: self.scan.debian_security_url,
            debian_keyring: self.scan.debian_keyring,
            ubuntu_archive_url: self.scan.ubuntu_archive_url,
            ubuntu_security_url: self.scan.ubuntu_security_url,
            ubuntu_ports_url: self.scan.ubuntu_ports_url,
            ubuntu_keyring: self.scan.ubuntu_keyring,
            alpine_url: self.scan.alpine_url,
            alpine_keys_dir: self.scan.alpine_keys_dir,
            alpine_secdb_url: self.scan.alpine_secdb_url,
            point_releases: self.scan.point_releases,
            changelogs: self.scan.changelogs,
            refresh_interval,
            command: self.scan.command,
            command_timeout,
            result_ttl,
            severity_sources: self.scan.severity_sources,
        };

        let patch = {
            let mut problems = Vec::new();
            let mut durations = Problems(Vec::new());
            let patch = self.patch.validate(&mut problems, &mut |key, text| {
                durations.duration(key, text)
            });
            p.0.extend(problems);
            p.0.extend(durations.0);
            patch
        };
        // The idle timeout also runs while a request waits for its patch: a wait as long as
        // it would cut the client off before the original is served. Only modes that wait
        // (the default's or a policy's) are concerned.
        let waits = |m: PatchMode| matches!(m, PatchMode::Wait | PatchMode::FailClosed);
        let some_pull_waits =
            waits(patch.mode) || patch.policies.iter().filter_map(|p| p.mode).any(waits);
        if some_pull_waits && !idle_timeout.is_zero() && patch.wait_timeout >= idle_timeout {
            p.0.push(format!(
                "`patch.wait_timeout` ({}) must be below `server.idle_timeout` ({}): a pull \
                 waiting for its patch would be disconnected before it is answered",
                fmt_duration(patch.wait_timeout),
                fmt_duration(idle_timeout)
            ));
        }
        let admission = self.admission.validate(&mut p.0);
        let signing = self.signing.validate(&mut p.0);

        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(Config {
            server: ServerConfig {
                listen,
                tls,
                shutdown_grace,
                header_read_timeout,
                idle_timeout,
                max_connections: self.server.max_connections,
                listen_backlog: self.server.listen_backlog,
                http2_max_concurrent_streams: self.server.http2_max_concurrent_streams,
                buffer_memory,
            },
            storage,
            cache: CacheConfig { tag_ttl },
            log: LogConfig {
                format,
                level: self.log.level,
            },
            scan,
            patch,
            admission,
            signing,
            coordination,
            upstream: upstreams,
            clock: crate::clock::Clock::new(),
        })
    }

    /// The checked config written back in the file's own shape (for `config check`).
    pub(super) fn from_checked(c: &Config) -> RawConfig {
        RawConfig {
            server: RawServer {
                listen: c.server.listen.to_string(),
                tls_cert: c.server.tls.as_ref().map(|t| t.cert.clone()),
                tls_key: c.server.tls.as_ref().map(|t| t.key.clone()),
                shutdown_grace: fmt_duration(c.server.shutdown_grace),
                header_read_timeout: fmt_duration(c.server.header_read_timeout),
                idle_timeout: fmt_duration(c.server.idle_timeout),
                max_connections: c.server.max_connections,
                listen_backlog: c.server.listen_backlog,
                http2_max_concurrent_streams: c.server.http2_max_concurrent_streams,
                buffer_memory: fmt_size(c.server.buffer_memory),
            },
            storage: RawStorage {
                path: c.storage.path.clone(),
                max_size: fmt_size(c.storage.max_size),
                memory_cache: fmt_size(c.storage.memory_cache),
                max_manifest_size: fmt_size(c.storage.max_manifest_size),
                blob_fill_timeout: fmt_duration(c.storage.blob_fill_timeout),
                backend: super::scaleout::backend_name(&c.storage.backend),
                registry: super::scaleout::raw_registry(&c.storage.backend),
            },
            cache: RawCache {
                tag_ttl: fmt_duration(c.cache.tag_ttl),
            },
            log: RawLog {
                format: match c.log.format {
                    LogFormat::Text => "text".into(),
                    LogFormat::Json => "json".into(),
                },
                level: c.log.level.clone(),
            },
            scan: RawScan {
                cache_dir: Some(c.scan.cache_dir.clone()),
                debian_archive_url: c.scan.debian_archive_url.clone(),
                debian_security_url: c.scan.debian_security_url.clone(),
                debian_keyring: c.scan.debian_keyring.clone(),
                ubuntu_archive_url: c.scan.ubuntu_archive_url.clone(),
                ubuntu_security_url: c.scan.ubuntu_security_url.clone(),
                ubuntu_ports_url: c.scan.ubuntu_ports_url.clone(),
                ubuntu_keyring: c.scan.ubuntu_keyring.clone(),
                alpine_url: c.scan.alpine_url.clone(),
                alpine_keys_dir: c.scan.alpine_keys_dir.clone(),
                alpine_secdb_url: c.scan.alpine_secdb_url.clone(),
                point_releases: c.scan.point_releases,
                changelogs: c.scan.changelogs,
                refresh_interval: fmt_duration(c.scan.refresh_interval),
                command: c.scan.command.clone(),
                command_timeout: fmt_duration(c.scan.command_timeout),
                result_ttl: fmt_duration(c.scan.result_ttl),
                severity_sources: c.scan.severity_sources.clone(),
            },
            patch: super::patch::RawPatch::from_checked(&c.patch),
            admission: super::admission::RawAdmission::from_checked(&c.admission),
            signing: super::signing::RawSigning::from_checked(&c.signing),
            coordination: super::scaleout::raw_coordination(&c.coordination),
            upstream: c
                .upstream
                .iter()
                .map(|u| RawUpstream {
                    name: u.name.clone(),
                    url: u.url.to_string(),
                    default: u.default,
                    aliases: u.aliases.clone(),
                    username: u.username.clone(),
                    password: u.password.clone(),
                    ca_file: u.ca_file.clone(),
                    insecure_skip_verify: u.insecure_skip_verify,
                    library_prefix: Some(u.library_prefix),
                    tag_ttl: Some(fmt_duration(u.tag_ttl)),
                    retries: Some(u.retries),
                    connect_timeout: Some(fmt_duration(u.connect_timeout)),
                    timeout: Some(fmt_duration(u.timeout)),
                    redirect_hosts: Some(u.redirect_hosts.clone()),
                    auth_hosts: Some(u.auth_hosts.clone()),
                    require_signature: u
                        .require_signature
                        .as_ref()
                        .map(super::signing::RawRequireSignature::from_checked),
                })
                .collect(),
        }
    }
}
