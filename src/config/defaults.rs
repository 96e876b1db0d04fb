//! Every built-in default, named. The embedded default configuration is built from these.

use std::time::Duration;

pub const LISTEN: &str = "127.0.0.1:5000";
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
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
/// A blob fill that has not finished in this time is abandoned (its waiters get an error).
pub const BLOB_FILL_TIMEOUT: Duration = Duration::from_secs(3600);
pub const LOG_FORMAT: &str = "text";
pub const LOG_LEVEL: &str = "info";
/// Where `serve` and `config check` look when `--config` is not given.
pub const CONFIG_FILE: &str = "config/patchpull.toml";
