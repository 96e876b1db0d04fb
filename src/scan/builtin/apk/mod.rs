//! The built-in scanner for Alpine images: which installed packages have newer versions in
//! Alpine's signed repositories, and (with a secdb configured) which CVEs those versions
//! fix. A pure-Rust reading of what `apk upgrade` would do, without apk.
//!
//! For an image's `/etc/os-release` and platform ([`repos`]): fetch each repository's
//! `APKINDEX.tar.gz` (`main`, `community`), verify its RSA signature against the
//! operator's Alpine keys before reading anything else of it ([`signed`]), parse it
//! ([`index`]). Every installed package with a higher version (apk's order,
//! [`crate::pkgs::apk::version`]) in any repository is an update. With
//! [`AlpineConfig::secdb_url`] set, the secdb ([`secdb`]) names the CVEs fixed between
//! the installed and the new version, looked up by the package's origin (`libcrypto3` is
//! built from `openssl`). The secdb stands in for dpkg's changelogs: a secdb that cannot be
//! read leaves the updates without CVE ids, it does not fail the scan.
//!
//! Caching ([`load`]): verified indexes on disk and in memory, refreshed with conditional
//! requests at most once per [`BuiltinConfig::refresh_interval`].

mod error;
pub mod index;
pub mod load;
pub mod packages;
pub mod repos;
pub mod secdb;
pub mod signed;

#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::path::PathBuf;
use std::sync::Arc;

use crate::pkgs::apk::version::{compare, validate};
use crate::pkgs::{Ecosystem, InstalledPackage, Inventory};
use crate::scan::plan::{
    NotPlanned, Plan, PlanOptions, PlanSource, Platform, PlatformPlanBuilder, SkipReason,
    VulnerabilityRef,
};

use super::cache::DiskCache;
use super::fetch::Fetcher;
use super::{BuiltinConfig, BuiltinError, BuiltinScan, ChangelogStatus, CveFix, Update};

pub use error::{ApkError, IndexError};
pub use index::{ApkIndex, ApkIndexEntry};
pub use load::LoadedIndex;
pub use packages::{FetchedApk, WantedApk};
pub use repos::ApkRepository;
pub use secdb::SecDb;

pub const DEFAULT_ALPINE_URL: &str = crate::config::defaults::SCAN_ALPINE_URL;
pub const DEFAULT_ALPINE_KEYS_DIR: &str = crate::config::defaults::SCAN_ALPINE_KEYS_DIR;

/// Size limits against a hostile or broken mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlpineLimits {
    /// An `APKINDEX.tar.gz` as downloaded (community's is ~1.5 MiB), held in memory.
    pub max_index_bytes: u64,
    /// Its index tar once decompressed.
    pub max_index_unpacked_bytes: u64,
    /// One secdb JSON file (~1 MiB).
    pub max_secdb_bytes: u64,
}

impl Default for AlpineLimits {
    fn default() -> AlpineLimits {
        const MIB: u64 = 1024 * 1024;
        AlpineLimits {
            max_index_bytes: 64 * MIB,
            max_index_unpacked_bytes: 512 * MIB,
            max_secdb_bytes: 64 * MIB,
        }
    }
}

/// Alpine's repositories, keys and secdb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlpineConfig {
    /// `https://dl-cdn.alpinelinux.org/alpine` or a mirror.
    pub url: String,
    /// PEM RSA public keys, each named as its signatures name it.
    pub keys_dir: PathBuf,
    /// `https://secdb.alpinelinux.org`; `None`: no CVE ids.
    pub secdb_url: Option<String>,
    /// Repositories read in every branch, in preference order.
    pub repositories: Vec<String>,
    pub limits: AlpineLimits,
}

impl Default for AlpineConfig {
    fn default() -> AlpineConfig {
        AlpineConfig {
            url: DEFAULT_ALPINE_URL.to_owned(),
            keys_dir: PathBuf::from(DEFAULT_ALPINE_KEYS_DIR),
            secdb_url: None,
            repositories: vec!["main".to_owned(), "community".to_owned()],
            limits: AlpineLimits::default(),
        }
    }
}

/// One package to update, with what fetching it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkUpdate {
    pub name: String,
    /// The index's `A:` (`x86_64`, `noarch`), or the repository's architecture.
    pub architecture: String,
    pub installed_version: String,
    /// The highest version in the repositories read.
    pub fixed_version: String,
    /// The repository that has it, `v3.20/main` (the first configured one when several do).
    pub repository: String,
    /// The source package (`o:`), which the secdb is keyed by.
    pub origin: String,
    /// The index's `C:` for `fixed_version`: `Q1` + base64 SHA-1 of the control member.
    pub checksum: Option<String>,
    /// The index's `S:`, the `.apk`'s size.
    pub size: Option<u64>,
    /// `<repository base>/<name>-<fixed_version>.apk`.
    pub url: String,
    /// CVE ids the secdb lists between the installed and the new version, sorted.
    pub fixes: Vec<CveFix>,
}

/// The result of one Alpine scan of one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkScan {
    /// One platform, ecosystem `apk`; its source's `index_version` names every index read.
    pub plan: Plan,
    /// Sorted by name.
    pub updates: Vec<ApkUpdate>,
    /// Whether the CVE ids come from the secdb: `Read`, `NotRequested` (no secdb URL) or
    /// `Unavailable` with the reason.
    pub cves: ChangelogStatus,
}

impl ApkScan {
    /// The shape [`super::BuiltinScanner::scan`] returns for every ecosystem: `suite` is
    /// the repository, `source_*` the origin and new version, `changelog` the secdb status.
    pub fn into_builtin(self) -> BuiltinScan {
        let updates = self
            .updates
            .into_iter()
            .map(|u| Update {
                source_version: u.fixed_version.clone(),
                name: u.name,
                architecture: u.architecture,
                installed_version: u.installed_version,
                fixed_version: u.fixed_version,
                suite: u.repository,
                source_name: u.origin,
                fixes: u.fixes,
                changelog: self.cves.clone(),
            })
            .collect();
        BuiltinScan {
            plan: self.plan,
            updates,
        }
    }
}

/// The Alpine side of [`super::BuiltinScanner`]: its caches.
#[derive(Debug)]
pub struct ApkScanner {
    config: Arc<BuiltinConfig>,
    loader: load::Loader,
    /// For package downloads ([`packages`]).
    fetcher: Fetcher,
    cache: DiskCache,
}

impl ApkScanner {
    /// # Errors
    /// [`BuiltinError::Cache`] when `<cache_dir>/apk` cannot be created.
    pub(super) fn new(
        config: Arc<BuiltinConfig>,
        fetcher: Fetcher,
        cache: DiskCache,
    ) -> Result<ApkScanner, BuiltinError> {
        Ok(ApkScanner {
            loader: load::Loader::new(config.clone(), fetcher.clone(), cache.clone())?,
            config,
            fetcher,
            cache,
        })
    }

    /// The repositories [`ApkScanner::scan`] reads for `inventory` on `platform`.
    ///
    /// # Errors
    /// As [`repos::select`].
    pub fn repositories(
        &self,
        inventory: &Inventory,
        platform: &Platform,
    ) -> Result<Vec<ApkRepository>, BuiltinError> {
        Ok(repos::select(&inventory.os, platform, &self.config.alpine)?)
    }

    /// The verified index of one repository (for fetching packages after a scan).
    ///
    /// # Errors
    /// As [`ApkScanner::scan`].
    pub async fn index(
        &self,
        repository: &ApkRepository,
    ) -> Result<Arc<LoadedIndex>, BuiltinError> {
        self.loader.index(repository).await
    }

    /// Every repository's index, loaded together. A failure is the first one in repository
    /// order (main before community), not the first to arrive: the same failure gives the
    /// same message every time.
    pub async fn indexes(
        &self,
        repositories: &[ApkRepository],
    ) -> Result<Vec<Arc<LoadedIndex>>, BuiltinError> {
        let loads = repositories.iter().map(|r| self.loader.index(r));
        futures_util::future::join_all(loads)
            .await
            .into_iter()
            .collect()
    }

    /// The version of the indexes a scan of `inventory` on `platform` reads now: part of
    /// a cached plan's key.
    ///
    /// # Errors
    /// As [`ApkScanner::scan`].
    pub async fn index_version(
        &self,
        inventory: &Inventory,
        platform: &Platform,
    ) -> Result<String, BuiltinError> {
        let repositories = self.repositories(inventory, platform)?;
        let loaded = self.indexes(&repositories).await?;
        Ok(loaded
            .iter()
            .map(|l| l.version())
            .collect::<Vec<_>>()
            .join(", "))
    }

    /// Scans one platform of an Alpine image: `inventory` is its apk database and
    /// os-release.
    ///
    /// # Errors
    /// [`BuiltinError::Apk`] when the image is not Alpine or its platform has no Alpine
    /// port, or when any repository's index cannot be fetched or fails verification.
    pub async fn scan(
        &self,
        inventory: &Inventory,
        platform: &Platform,
        options: &PlanOptions,
    ) -> Result<ApkScan, BuiltinError> {
        let repositories = self.repositories(inventory, platform)?;
        let loaded = self.indexes(&repositories).await?;
        let (found, invalid) = find_updates(inventory, &loaded);

        let branch = repositories
            .first()
            .map(|r| r.branch.clone())
            .unwrap_or_default();
        let (secdb, cves) = if found.is_empty() {
            (None, ChangelogStatus::NotRequested)
        } else {
            match self.loader.secdb(&branch).await {
                Ok(Some(db)) => (Some(db), ChangelogStatus::Read),
                Ok(None) => (None, ChangelogStatus::NotRequested),
                Err(reason) => {
                    tracing::warn!(%reason, "Alpine secdb unavailable; updates listed without CVE ids");
                    (None, ChangelogStatus::Unavailable { reason })
                }
            }
        };
        let mut updates: Vec<ApkUpdate> = found
            .into_iter()
            .map(|(installed, position, entry)| {
                let repository = &loaded[position].repository;
                let fixes = secdb.as_ref().map_or_else(Vec::new, |db| {
                    db.fixes(
                        entry.origin(),
                        &entry.name,
                        &installed.version,
                        &entry.version,
                    )
                });
                ApkUpdate {
                    architecture: entry
                        .architecture
                        .clone()
                        .unwrap_or_else(|| repository.architecture.clone()),
                    installed_version: installed.version.clone(),
                    fixed_version: entry.version.clone(),
                    repository: repository.label(),
                    origin: entry.origin().to_owned(),
                    checksum: entry.checksum.clone(),
                    size: entry.size,
                    url: repository.package_url(&entry.name, &entry.version),
                    fixes,
                    name: installed.name.clone(),
                }
            })
            .collect();
        updates.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.installed_version.cmp(&b.installed_version))
        });
        let index_version = loaded
            .iter()
            .map(|l| l.version())
            .collect::<Vec<_>>()
            .join(", ");
        let mut plan = build_plan(
            platform,
            inventory,
            &updates,
            invalid,
            options,
            index_version,
        );
        let used: Vec<crate::scan::plan::RepositoryIndex> = loaded
            .iter()
            .map(|l| crate::scan::plan::RepositoryIndex {
                url: l.repository.base_url.clone(),
                index: l.version(),
            })
            .collect();
        for platform in &mut plan.platforms {
            platform.repositories = used.clone();
        }
        Ok(ApkScan {
            plan,
            updates,
            cves,
        })
    }
}

/// Every installed package with a higher version in `loaded`, as (package, index of the
/// repository, entry), and the packages whose installed version apk cannot order.
///
/// Candidates are the entries of the same name whose `A:` is the repository's
/// architecture, `noarch`, or absent; on equal versions the earlier repository wins.
fn find_updates<'a>(
    inventory: &'a Inventory,
    loaded: &'a [Arc<LoadedIndex>],
) -> (
    Vec<(&'a InstalledPackage, usize, &'a ApkIndexEntry)>,
    Vec<NotPlanned>,
) {
    let mut found = Vec::new();
    let mut invalid = Vec::new();
    for installed in &inventory.packages {
        if let Err(e) = validate(&installed.version) {
            invalid.push(NotPlanned {
                name: installed.name.clone(),
                installed_version: installed.version.clone(),
                vulnerability_id: String::new(),
                severity: None,
                fixed_versions: Vec::new(),
                reason: SkipReason::InvalidVersion {
                    detail: e.to_string(),
                },
            });
            continue;
        }
        let mut best: Option<(usize, &ApkIndexEntry)> = None;
        for (position, index) in loaded.iter().enumerate() {
            let native = index.repository.architecture.as_str();
            for entry in index.index.lookup(&installed.name) {
                let arch_ok = entry
                    .architecture
                    .as_deref()
                    .is_none_or(|a| a == native || a == "noarch");
                if !arch_ok {
                    continue;
                }
                let better = match best {
                    None => validate(&entry.version).is_ok(),
                    Some((_, current)) => {
                        compare(&entry.version, &current.version) == Ok(Ordering::Greater)
                    }
                };
                if better {
                    best = Some((position, entry));
                }
            }
        }
        if let Some((position, entry)) = best {
            if compare(&entry.version, &installed.version) == Ok(Ordering::Greater) {
                found.push((installed, position, entry));
            }
        }
    }
    (found, invalid)
}

/// The plan for one platform: every update, with the secdb's CVE ids, filtered by
/// `options`. No severities are known, so a minimum severity treats updates as `UNKNOWN`.
fn build_plan(
    platform: &Platform,
    inventory: &Inventory,
    updates: &[ApkUpdate],
    invalid: Vec<NotPlanned>,
    options: &PlanOptions,
    index_version: String,
) -> Plan {
    let mut builder =
        PlatformPlanBuilder::new(platform.clone(), inventory.os.clone(), Ecosystem::Apk);
    for skip in invalid {
        builder.skip(skip);
    }
    for update in updates {
        let filtered = options
            .name_filter(&update.name)
            .or_else(|| builder.severity_filter(options, &update.name, None));
        if let Some(reason) = filtered {
            let ids: Vec<&str> = match update.fixes.is_empty() {
                true => vec![""],
                false => update.fixes.iter().map(|f| f.id.as_str()).collect(),
            };
            for id in ids {
                builder.skip(NotPlanned {
                    name: update.name.clone(),
                    installed_version: update.installed_version.clone(),
                    vulnerability_id: id.to_owned(),
                    severity: None,
                    fixed_versions: vec![update.fixed_version.clone()],
                    reason: reason.clone(),
                });
            }
            continue;
        }
        builder.add_fix(
            &update.name,
            &update.installed_version,
            &update.fixed_version,
            None,
        );
        for fix in &update.fixes {
            builder.add_fix(
                &update.name,
                &update.installed_version,
                &fix.fixed_version,
                Some(VulnerabilityRef {
                    id: fix.id.clone(),
                    severity: None,
                }),
            );
        }
    }
    Plan::new(
        PlanSource::BuiltinScanner { index_version },
        vec![builder.finish()],
    )
}
