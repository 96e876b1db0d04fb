//! The built-in scanner for dpkg images: which installed packages have newer versions in
//! the distribution's own signed repositories, and which CVEs those versions say they fix.
//! No scanner and no vulnerability database; a pure-Rust apt client.
//!
//! For an image's `/etc/os-release` and platform ([`suites`]): fetch each suite's
//! `InRelease` and check its OpenPGP signature against the distribution's keyring
//! ([`keyring`]); read the signed Release ([`release`]), refusing it past `Valid-Until`;
//! fetch the `Packages` index it lists and check its size and SHA256 before parsing it
//! ([`index`]). Every installed package with a higher version in any suite is an update
//! ([`matching`]). When changelogs are on, the new version's `.deb` is fetched (size and
//! SHA256 checked against the index) and its `changelog.Debian.gz` read ([`deb`],
//! [`changelog`]): the CVE ids of the entries newer than the installed version are the
//! update's fixes.
//!
//! Caching ([`cache`]): indexes on disk by SHA256 and parsed once per process; InRelease
//! refreshed with conditional requests (`If-None-Match`, `If-Modified-Since`) at most once
//! per [`BuiltinConfig::refresh_interval`]; changelogs by the `.deb`'s SHA256. A scan with
//! warm caches downloads at most the InRelease files.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::pkgs::{Ecosystem, Inventory};
use crate::scan::plan::{Plan, PlanOptions, Platform};
use crate::scan::severity::{SeverityError, SeverityIndex};

pub mod apk;
pub mod cache;
pub mod changelog;
mod cves;
pub mod deb;
mod error;
mod fetch;
pub mod index;
pub mod keyring;
pub mod matching;
pub mod packages;
pub mod release;
pub mod repo;
pub mod suites;

#[cfg(test)]
mod tests;

pub use error::BuiltinError;
pub use keyring::{Keyring, KeyringError, SignatureError};
pub use suites::{Distribution, Suite, SuiteKind};

// The defaults live in `config::defaults`; these names keep the scanner's API self-contained.
pub const DEFAULT_DEBIAN_ARCHIVE_URL: &str = crate::config::defaults::SCAN_DEBIAN_ARCHIVE_URL;
pub const DEFAULT_DEBIAN_SECURITY_URL: &str = crate::config::defaults::SCAN_DEBIAN_SECURITY_URL;
pub const DEFAULT_DEBIAN_KEYRING: &str = crate::config::defaults::SCAN_DEBIAN_KEYRING;
pub const DEFAULT_UBUNTU_ARCHIVE_URL: &str = crate::config::defaults::SCAN_UBUNTU_ARCHIVE_URL;
pub const DEFAULT_UBUNTU_PORTS_URL: &str = crate::config::defaults::SCAN_UBUNTU_PORTS_URL;
/// From Debian's `ubuntu-keyring` package (Ubuntu's `ubuntu-keyring` has the same path).
pub const DEFAULT_UBUNTU_KEYRING: &str = crate::config::defaults::SCAN_UBUNTU_KEYRING;
pub const DEFAULT_REFRESH_INTERVAL: Duration = crate::config::defaults::SCAN_REFRESH_INTERVAL;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRIES: u32 = 3;

/// One distribution's repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// Base URL of the release suite and `-updates`.
    pub archive_url: String,
    /// Base URL of `-security`.
    pub security_url: String,
    /// Base URL of every suite for architectures other than amd64 and i386 (Ubuntu's
    /// ports archive); `None` when the archives above carry every architecture.
    pub ports_url: Option<String>,
    /// OpenPGP keyring (binary or armored) that must have signed each InRelease.
    pub keyring: PathBuf,
    /// Components read in every suite.
    pub components: Vec<String>,
}

/// Size limits; each protects memory or disk from a hostile or broken mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// An InRelease (Debian's largest are ~200 KiB).
    pub max_release_bytes: u64,
    /// A Packages file as downloaded (Debian main's `.xz` is ~9 MiB; Ubuntu universe's
    /// `.gz` more).
    pub max_index_bytes: u64,
    /// A Packages file's text once decompressed (streamed, not held in memory).
    pub max_index_unpacked_bytes: u64,
    /// A `.deb` downloaded for its changelog; larger packages get no CVE ids.
    pub max_deb_bytes: u64,
    /// Tar bytes read from one `.deb`'s `data.tar`.
    pub max_deb_unpacked_bytes: u64,
    /// One `changelog.Debian.gz`, compressed and decompressed.
    pub max_changelog_bytes: u64,
    /// `.deb` downloads per scan; updates past it get no CVE ids.
    pub max_changelog_downloads: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        const MIB: u64 = 1024 * 1024;
        Limits {
            max_release_bytes: 16 * MIB,
            max_index_bytes: 256 * MIB,
            max_index_unpacked_bytes: 1024 * MIB,
            max_deb_bytes: 256 * MIB,
            max_deb_unpacked_bytes: 2048 * MIB,
            max_changelog_bytes: 32 * MIB,
            max_changelog_downloads: 500,
        }
    }
}

/// Settings of the built-in scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinConfig {
    pub debian: ArchiveConfig,
    pub ubuntu: ArchiveConfig,
    /// Alpine's repositories, keys and secdb, for apk images ([`apk`]).
    pub alpine: apk::AlpineConfig,
    /// Also read `<codename>` (point-release updates) and `<codename>-updates`; the
    /// security suite is always read.
    pub point_releases: bool,
    /// Fetch each update's `.deb` to read CVE ids from its changelog.
    pub changelogs: bool,
    /// The disk cache's directory (layout in [`cache`]).
    pub cache_dir: PathBuf,
    /// An InRelease checked less than this long ago is not asked for again; zero asks on
    /// every scan (conditionally).
    pub refresh_interval: Duration,
    pub connect_timeout: Duration,
    /// Idle time allowed between bytes of a response.
    pub timeout: Duration,
    /// Attempts after the first for connection failures, 5xx and 429.
    pub retries: u32,
    pub limits: Limits,
    /// Files or http(s) URLs of severity data ([`crate::scan::severity`]); empty: every
    /// finding's severity is unknown.
    pub severity_sources: Vec<String>,
}

impl BuiltinConfig {
    /// The settings of the `[scan]` section.
    pub fn from_scan(scan: &crate::config::ScanConfig) -> BuiltinConfig {
        let mut c = BuiltinConfig::new(&scan.cache_dir);
        c.debian.archive_url = scan.debian_archive_url.clone();
        c.debian.security_url = scan.debian_security_url.clone();
        c.debian.keyring = scan.debian_keyring.clone();
        c.ubuntu.archive_url = scan.ubuntu_archive_url.clone();
        c.ubuntu.security_url = scan.ubuntu_security_url.clone();
        c.ubuntu.ports_url = Some(scan.ubuntu_ports_url.clone());
        c.ubuntu.keyring = scan.ubuntu_keyring.clone();
        c.alpine.url = scan.alpine_url.clone();
        c.alpine.keys_dir = scan.alpine_keys_dir.clone();
        c.alpine.secdb_url = Some(scan.alpine_secdb_url.clone()).filter(|u| !u.is_empty());
        c.point_releases = scan.point_releases;
        c.changelogs = scan.changelogs;
        c.refresh_interval = scan.refresh_interval;
        c.severity_sources = scan.severity_sources.clone();
        c
    }

    /// The defaults: Debian's and Ubuntu's official archives and keyrings, point releases
    /// and changelogs on, caching in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> BuiltinConfig {
        BuiltinConfig {
            debian: ArchiveConfig {
                archive_url: DEFAULT_DEBIAN_ARCHIVE_URL.to_owned(),
                security_url: DEFAULT_DEBIAN_SECURITY_URL.to_owned(),
                ports_url: None,
                keyring: PathBuf::from(DEFAULT_DEBIAN_KEYRING),
                components: vec!["main".to_owned()],
            },
            ubuntu: ArchiveConfig {
                archive_url: DEFAULT_UBUNTU_ARCHIVE_URL.to_owned(),
                security_url: DEFAULT_UBUNTU_ARCHIVE_URL.to_owned(),
                ports_url: Some(DEFAULT_UBUNTU_PORTS_URL.to_owned()),
                keyring: PathBuf::from(DEFAULT_UBUNTU_KEYRING),
                components: ["main", "restricted", "universe", "multiverse"]
                    .map(str::to_owned)
                    .to_vec(),
            },
            alpine: apk::AlpineConfig::default(),
            point_releases: true,
            changelogs: true,
            cache_dir: cache_dir.into(),
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            limits: Limits::default(),
            severity_sources: Vec::new(),
        }
    }
}

/// One package to update, as the built-in scanner found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub name: String,
    pub architecture: String,
    pub installed_version: String,
    /// The highest version in the suites read.
    pub fixed_version: String,
    /// The suite that has `fixed_version` (the security suite when several do).
    pub suite: String,
    pub source_name: String,
    /// The source version of `fixed_version`, which the changelog numbers entries by.
    pub source_version: String,
    /// CVE ids from the changelog entries newer than the installed version, sorted.
    pub fixes: Vec<CveFix>,
    pub changelog: ChangelogStatus,
}

/// A CVE an update fixes, with the first (source) version that fixed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CveFix {
    pub id: String,
    pub fixed_version: String,
}

/// Whether an update's CVE ids come from its changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangelogStatus {
    /// The changelog was read; `fixes` is what it names (possibly nothing).
    Read,
    /// Changelogs are off ([`BuiltinConfig::changelogs`]).
    NotRequested,
    /// The update stands, without CVE ids, for this reason.
    Unavailable { reason: String },
}

impl fmt::Display for ChangelogStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangelogStatus::Read => f.write_str("changelog read"),
            ChangelogStatus::NotRequested => f.write_str("changelogs not requested"),
            ChangelogStatus::Unavailable { reason } => write!(f, "no CVE ids: {reason}"),
        }
    }
}

/// The result of one scan of one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinScan {
    /// One platform; its source's `index_version` lists every suite's publication date.
    pub plan: Plan,
    /// The same updates with what the plan type has no room for: suite, source and
    /// changelog status, sorted by name.
    pub updates: Vec<Update>,
}

/// The built-in scanner. Holds the HTTP client and the in-memory caches; share one per
/// process.
#[derive(Debug)]
pub struct BuiltinScanner {
    config: Arc<BuiltinConfig>,
    repositories: repo::Repositories,
    fetcher: fetch::Fetcher,
    cache: cache::DiskCache,
    apk: apk::ApkScanner,
    severities: tokio::sync::OnceCell<Arc<SeverityIndex>>,
}

impl BuiltinScanner {
    /// # Errors
    /// [`BuiltinError::Cache`] when the cache directory cannot be created;
    /// [`BuiltinError::Client`] when the HTTP client cannot be built.
    pub fn new(config: BuiltinConfig) -> Result<BuiltinScanner, BuiltinError> {
        let config = Arc::new(config);
        let cache = cache::DiskCache::open(&config.cache_dir)?;
        let fetcher = fetch::Fetcher::new(&config)?;
        Ok(BuiltinScanner {
            repositories: repo::Repositories::new(config.clone(), fetcher.clone(), cache.clone()),
            apk: apk::ApkScanner::new(config.clone(), fetcher.clone(), cache.clone())?,
            config,
            fetcher,
            cache,
            severities: tokio::sync::OnceCell::new(),
        })
    }

    /// The severity index of `severity_sources`, read on first use.
    ///
    /// # Errors
    /// [`BuiltinError::Severity`] when a source cannot be read or is in no known format.
    pub async fn severities(&self) -> Result<Arc<SeverityIndex>, BuiltinError> {
        let index = self
            .severities
            .get_or_try_init(|| async {
                let mut sources = Vec::new();
                for source in &self.config.severity_sources {
                    let bytes = self.read_severity_source(source).await?;
                    sources.push((source.clone(), bytes));
                }
                SeverityIndex::from_sources(&sources).map(Arc::new)
            })
            .await?;
        Ok(index.clone())
    }

    async fn read_severity_source(&self, source: &str) -> Result<Vec<u8>, SeverityError> {
        let unreadable = |reason: String| SeverityError::Unreadable {
            source_name: source.to_owned(),
            reason,
        };
        if source.starts_with("http://") || source.starts_with("https://") {
            match self
                .fetcher
                .get_small(source, None, self.config.limits.max_index_unpacked_bytes)
                .await
            {
                Ok(fetch::Fetched::Body { bytes, .. }) => Ok(bytes),
                Ok(fetch::Fetched::NotModified) => Err(unreadable("304 without a request".into())),
                Err(e) => Err(unreadable(e.reason)),
            }
        } else {
            tokio::fs::read(source)
                .await
                .map_err(|e| unreadable(e.to_string()))
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &BuiltinConfig {
        &self.config
    }

    /// The settings a plan depends on besides the image and the indexes' contents, as a
    /// short fingerprint for [`crate::scan::cache::ScanKey::builtin`]: the repositories and
    /// keyrings, the suites read (`point_releases`), whether changelogs give CVE ids, and
    /// the limits that cut them short. Not the cache directory, timeouts or retries, which
    /// change how the answer is fetched, not what it is.
    pub fn settings(&self) -> String {
        use sha2::Digest as _;
        let c = &*self.config;
        let text = format!(
            "{:?}\n{:?}\n{:?}\npoint_releases={}\nchangelogs={}\n{:?}\nseverities={:?}",
            c.debian,
            c.ubuntu,
            c.alpine,
            c.point_releases,
            c.changelogs,
            c.limits,
            c.severity_sources
        );
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
    }

    /// The Alpine scanner, whose [`apk::ApkScan`] has what fetching the packages needs.
    pub fn apk(&self) -> &apk::ApkScanner {
        &self.apk
    }

    /// The suites [`BuiltinScanner::scan`] reads for `inventory` on `platform`.
    ///
    /// # Errors
    /// As [`suites::select`] and [`suites::apt_architecture`].
    pub fn suites(
        &self,
        inventory: &Inventory,
        platform: &Platform,
    ) -> Result<Vec<Suite>, BuiltinError> {
        let architecture = suites::apt_architecture(platform)?;
        suites::select(&inventory.os, architecture, &self.config)
    }

    /// The version of the indexes (each suite's or repository's publication) a scan of
    /// `inventory` on `platform` reads now: with the image's layers, the key of a cached
    /// plan ([`crate::scan::cache::ScanKey`]). Loads the indexes as a scan would (from
    /// the caches when fresh).
    ///
    /// # Errors
    /// As [`BuiltinScanner::scan`].
    pub async fn index_version(
        &self,
        inventory: &Inventory,
        platform: &Platform,
    ) -> Result<String, BuiltinError> {
        if inventory.ecosystem == Ecosystem::Apk {
            return self.apk.index_version(inventory, platform).await;
        }
        let architecture = suites::apt_architecture(platform)?;
        let selected = suites::select(&inventory.os, architecture, &self.config)?;
        let loads = selected
            .iter()
            .map(|suite| self.repositories.load(suite, architecture));
        let loaded = futures_util::future::try_join_all(loads).await?;
        Ok(loaded
            .iter()
            .map(repo::LoadedSuite::version)
            .collect::<Vec<_>>()
            .join(", "))
    }

    /// Scans one platform of an image: `inventory` is its dpkg or apk database and
    /// os-release (apk images: [`apk::ApkScanner::scan`]).
    ///
    /// # Errors
    /// Anything that stops the suites from being read and verified ([`BuiltinError`]).
    /// A changelog that cannot be fetched or read is not an error: the update is reported
    /// without CVE ids and [`ChangelogStatus::Unavailable`] says why.
    pub async fn scan(
        &self,
        inventory: &Inventory,
        platform: &Platform,
        options: &PlanOptions,
    ) -> Result<BuiltinScan, BuiltinError> {
        if inventory.ecosystem == Ecosystem::Apk {
            let scanned = self.apk.scan(inventory, platform, options).await?;
            return Ok(scanned.into_builtin());
        }
        let architecture = suites::apt_architecture(platform)?;
        let selected = suites::select(&inventory.os, architecture, &self.config)?;
        let loads = selected
            .iter()
            .map(|suite| self.repositories.load(suite, architecture));
        let loaded = futures_util::future::try_join_all(loads).await?;

        let (found, invalid) = matching::find_updates(inventory, architecture, &loaded);
        let reader = cves::ChangelogReader::new(
            &self.config,
            &self.fetcher,
            &self.cache,
            &loaded,
            architecture,
        );
        let mut changelogs = if self.config.changelogs {
            reader.read_all(&found).await
        } else {
            Vec::new()
        }
        .into_iter();
        let mut updates = Vec::with_capacity(found.len());
        for found in found {
            let (fixes, changelog) = changelogs
                .next()
                .unwrap_or((Vec::new(), ChangelogStatus::NotRequested));
            updates.push(Update {
                name: found.installed.name.clone(),
                architecture: found.architecture.clone(),
                installed_version: found.installed.version.clone(),
                fixed_version: found.entry.version.to_string(),
                suite: loaded[found.suite].suite.name.clone(),
                source_name: found.entry.source_name().to_owned(),
                source_version: found.entry.source_version().to_owned(),
                fixes,
                changelog,
            });
        }
        updates.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.architecture.cmp(&b.architecture))
        });
        let index_version = loaded
            .iter()
            .map(repo::LoadedSuite::version)
            .collect::<Vec<_>>()
            .join(", ");
        let severities = self.severities().await?;
        let distribution = selected.first().map(|s| s.distribution.as_str());
        let mut plan = matching::build_plan(
            platform,
            inventory,
            &updates,
            invalid,
            options,
            index_version,
            &|update: &Update, cve: &str| {
                let codename = update.suite.split('-').next().unwrap_or_default();
                severities.lookup(distribution?, codename, &update.source_name, cve)
            },
        );
        let used: Vec<crate::scan::plan::RepositoryIndex> = loaded
            .iter()
            .map(|l| crate::scan::plan::RepositoryIndex {
                url: format!("{}/dists/{}", l.suite.base_url, l.suite.name),
                index: l.version(),
            })
            .collect();
        for platform in &mut plan.platforms {
            platform.repositories = used.clone();
        }
        Ok(BuiltinScan { plan, updates })
    }
}
