//! Every built-in default, named. The embedded default configuration is built from these.

use std::time::Duration;

pub const LISTEN: &str = "127.0.0.1:5000";
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Slow-loris clients are dropped after this; real clients send headers in milliseconds.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Above `patch.wait_timeout` and any upstream wait a request may sit through silently.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections served at once; kept below the open-file limit at start.
pub const MAX_CONNECTIONS: usize = 4096;
/// File descriptors kept free of connections (store files, upstream sockets, logs).
pub const RESERVED_FILES: u64 = 256;
/// Connections the kernel holds for accept. Linux caps it at `net.core.somaxconn` (4096
/// by default since 5.4). The 128 that std and tokio ask for overflows when a thousand
/// clients connect at once: the kernel answers with SYN cookies, and an HTTP/2 client's
/// second segment then fails the cookie check and gets a reset (benches/limits.sh).
pub const LISTEN_BACKLOG: u32 = 4096;
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Blob chunks in flight to clients, shared by every response: 1,000 concurrent pulls stay
/// far below the shipped Deployment's 1 GiB memory limit.
pub const BUFFER_MEMORY: u64 = 64 * 1024 * 1024;
/// Enough for a few full-size chunks.
pub const BUFFER_MEMORY_MIN: u64 = 4 * 1024 * 1024;
pub const STORAGE_PATH: &str = "./data";
/// Cached content above this is evicted, least recently used first.
pub const STORAGE_MAX_SIZE: u64 = 20 * 1024 * 1024 * 1024;
/// Manifests kept in memory; small, since the RSS target for the whole process is 64 MiB.
pub const MEMORY_CACHE: u64 = 32 * 1024 * 1024;
/// Design decision 6: a manifest larger than this is refused.
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
pub const TAG_TTL: Duration = Duration::from_secs(60);
pub const UPSTREAM_NAME: &str = "docker.io";
pub const UPSTREAM_URL: &str = "https://registry-1.docker.io";
pub const UPSTREAM_RETRIES: u32 = 3;
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Where well-known registries redirect blob downloads (their CDNs), by the upstream URL's
/// host: the default of `upstream.redirect_hosts`. Any other upstream follows redirects to
/// its own origin only until configured.
pub const UPSTREAM_REDIRECT_HOSTS: &[(&str, &[&str])] = &[
    (
        "registry-1.docker.io",
        &[
            "production.cloudflare.docker.com",
            "*.r2.cloudflarestorage.com",
        ],
    ),
    ("ghcr.io", &["pkg-containers.githubusercontent.com"]),
    ("quay.io", &["cdn*.quay.io"]),
];
/// Token services of well-known registries on another host than the registry: the
/// default of `upstream.auth_hosts`.
pub const UPSTREAM_AUTH_HOSTS: &[(&str, &[&str])] =
    &[("registry-1.docker.io", &["auth.docker.io"])];
/// A blob fill that has not finished in this time is abandoned (its waiters get an error).
pub const BLOB_FILL_TIMEOUT: Duration = Duration::from_secs(3600);
pub const LOG_FORMAT: &str = "text";
pub const LOG_LEVEL: &str = "info";
/// Where `serve` and `config check` look when `--config` is not given.
pub const CONFIG_FILE: &str = "config/patchpull.toml";
/// The built-in scanner's repositories (mirrors and air-gapped copies replace them).
pub const SCAN_DEBIAN_ARCHIVE_URL: &str = "http://deb.debian.org/debian";
pub const SCAN_DEBIAN_SECURITY_URL: &str = "http://deb.debian.org/debian-security";
pub const SCAN_DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
pub const SCAN_UBUNTU_ARCHIVE_URL: &str = "http://archive.ubuntu.com/ubuntu";
pub const SCAN_UBUNTU_PORTS_URL: &str = "http://ports.ubuntu.com/ubuntu-ports";
pub const SCAN_UBUNTU_KEYRING: &str = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";
/// Alpine's CDN: `<url>/<branch>/{main,community}/<arch>/APKINDEX.tar.gz`.
pub const SCAN_ALPINE_URL: &str = "https://dl-cdn.alpinelinux.org/alpine";
/// Where Alpine keeps its public keys (package `alpine-keys`); the operator supplies them.
pub const SCAN_ALPINE_KEYS_DIR: &str = "/etc/apk/keys";
/// A repository's InRelease checked less than this long ago is not asked for again.
pub const SCAN_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Under `storage.path` unless `scan.cache_dir` says otherwise.
pub const SCAN_CACHE_SUBDIR: &str = "scan-cache";
/// A scanner command that has not finished in this time is killed.
pub const SCAN_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// A scanner command's plan for an image is reused this long (its database moves on).
pub const SCAN_RESULT_TTL: Duration = Duration::from_secs(3600);

/// Patching on pull: wait briefly, then serve the original (fail-open).
pub const PATCH_MODE: super::PatchMode = super::PatchMode::Wait;
/// Below containerd's and admission webhooks' patience (webhooks time out at 10 s).
pub const PATCH_WAIT_TIMEOUT: Duration = Duration::from_secs(8);
pub const PATCH_WORKERS: usize = 2;
/// Who the admin token's holder is in the log when nobody named it.
pub const PATCH_ADMIN_TOKEN_NAME: &str = "admin";
/// Decompressed layers and unpacked roots kept for the next patch of the same layers.
pub const PATCH_UNPACK_CACHE_SIZE: u64 = 4 * 1024 * 1024 * 1024;
pub const PATCH_QUEUE: usize = 32;
pub const PATCH_ENGINE: super::PatchEngine = super::PatchEngine::Auto;
/// Debian's own slim image: the apt and dpkg that patch distroless dpkg images.
pub const BUILDKIT_TOOLING_IMAGE: &str = "docker.io/library/debian:bookworm-slim";
pub const BUILDKIT_SOLVE_TIMEOUT: Duration = Duration::from_secs(900);
pub const PATCH_RETRY_FAILED_AFTER: Duration = Duration::from_secs(300);
/// Twice a BuildKit solve's budget: room for the scan and the fetches around one solve,
/// yet a stuck job still gives its worker back within the hour.
pub const PATCH_JOB_TIMEOUT: Duration = Duration::from_secs(1800);
/// A platform that cannot be patched does not cost the others their fixes.
pub const PATCH_PARTIAL_INDEX: super::PartialIndex = super::PartialIndex::PatchedWherePossible;
/// An unknown severity under a `min_severity` policy is patched: no data is no reason to
/// leave a fix out.
pub const PATCH_UNKNOWN_SEVERITY: crate::scan::plan::UnknownSeverity =
    crate::scan::plan::UnknownSeverity::Patch;
/// Where an encrypted signing key's password is read from; `config check` leaves this
/// variable alone although it starts with `PATCHPULL_`.
pub const SIGNING_PASSWORD_ENV: &str = "PATCHPULL_SIGNING_PASSWORD";

/// `storage.backend`: files under `storage.path`, one process.
pub const STORAGE_BACKEND: &str = "local";
/// `storage.registry.repository_prefix`.
pub const BACKING_REPOSITORY_PREFIX: &str = "patchpull";
/// `coordination.lease_ttl`: a dead replica's job is taken over after this; renewed every
/// third of it.
pub const COORDINATION_LEASE_TTL: Duration = Duration::from_secs(30);
/// `coordination.poll_interval`: how often a replica waiting for another's job looks at the
/// shared store.
pub const COORDINATION_POLL_INTERVAL: Duration = Duration::from_millis(500);
