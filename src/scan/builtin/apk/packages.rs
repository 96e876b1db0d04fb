//! The `.apk` files of planned updates, for the patch engine. The trust chain: the
//! repository's `APKINDEX.tar.gz` is signed by a key of `scan.alpine_keys_dir` ([`super::signed`]);
//! its `C:` line names the package's identity (`Q1` + base64 SHA-1 of the control gzip
//! member, which carries `datahash`, the SHA-256 of the data); the downloaded package is
//! opened ([`ApkPackage::open`], which checks `datahash` and every file's SHA-1) and its
//! identity must equal that `C:`. Only then is it kept, in the cache by its SHA-256:
//!
//! ```text
//! apks/<sha256>.apk               a verified package, never modified once committed
//! apks/<sha256 of the C: value>   "<sha256> <size>": which file verified as that identity
//! ```
//!
//! A cached file is hashed again before it is handed out, so a damaged cache costs a
//! download, never a wrong package.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::super::cache::{cache_error, hash_file};
use super::super::repo::blocking;
use super::super::BuiltinError;
use super::load::LoadedIndex;
use super::{ApkError, ApkIndexEntry, ApkScanner};
use crate::pkgs::apk::package::{ApkLimits, ApkPackage};
use crate::pkgs::Inventory;
use crate::scan::plan::Platform;

/// Downloads at a time.
const CONCURRENT_DOWNLOADS: usize = 4;

/// A package wanted at an exact version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WantedApk {
    pub name: String,
    pub version: String,
}

/// A verified `.apk` in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedApk {
    pub name: String,
    pub version: String,
    /// The index's `A:`, or the repository's architecture.
    pub architecture: String,
    /// `v3.20/main`: the repository whose signed index named it.
    pub repository: String,
    pub url: String,
    /// The index's `C:`, which the package's identity equals.
    pub checksum: String,
    pub size: u64,
    pub sha256: String,
    /// The cached file; never modified once committed.
    pub path: PathBuf,
}

/// Where one wanted package is, from the index.
#[derive(Debug, Clone)]
struct Located {
    name: String,
    version: String,
    architecture: String,
    repository: String,
    url: String,
    checksum: String,
    size: Option<u64>,
}

impl ApkScanner {
    /// The verified `.apk` of every wanted package, in `wanted`'s order, located in the
    /// same (cached) verified indexes a scan reads.
    ///
    /// # Errors
    /// [`BuiltinError::PackageUnavailable`] when no repository's index has the package at
    /// that version (or names no `C:` for it); [`BuiltinError::PackageDownload`] naming the
    /// package when the download fails or the file is not what the index names; any error
    /// of loading the indexes.
    pub async fn fetch_apks(
        &self,
        inventory: &Inventory,
        platform: &Platform,
        wanted: &[WantedApk],
    ) -> Result<Vec<FetchedApk>, BuiltinError> {
        let repositories = self.repositories(inventory, platform)?;
        let loaded = self.indexes(&repositories).await?;
        let located = wanted
            .iter()
            .map(|w| locate(&loaded, w))
            .collect::<Result<Vec<_>, _>>()?;
        // One download per identity, however many wanted entries name it.
        let mut unique: HashMap<String, Located> = HashMap::new();
        for l in &located {
            unique
                .entry(l.checksum.clone())
                .or_insert_with(|| l.clone());
        }
        let fetches: Vec<_> = unique
            .into_values()
            .map(|l| async move {
                match self.cached_apk(&l).await {
                    Ok(found) => Ok((l.checksum.clone(), found)),
                    Err(cause) => Err(BuiltinError::PackageDownload {
                        name: l.name.clone(),
                        cause: Box::new(cause),
                    }),
                }
            })
            .collect();
        let downloads = futures_util::stream::iter(fetches)
            .buffer_unordered(CONCURRENT_DOWNLOADS)
            .collect::<Vec<_>>()
            .await;
        let mut files = HashMap::new();
        for download in downloads {
            let (checksum, found) = download?;
            files.insert(checksum, found);
        }
        let mut fetched = Vec::with_capacity(located.len());
        for l in located {
            let Some((sha256, size, path)) = files.get(&l.checksum).cloned() else {
                continue;
            };
            fetched.push(FetchedApk {
                name: l.name,
                version: l.version,
                architecture: l.architecture,
                repository: l.repository,
                url: l.url,
                checksum: l.checksum,
                size,
                sha256,
                path,
            });
        }
        Ok(fetched)
    }

    /// The cached, verified file for `l` as (SHA-256, size, path), downloading and
    /// verifying it when absent or damaged.
    async fn cached_apk(&self, l: &Located) -> Result<(String, u64, PathBuf), BuiltinError> {
        let dir = self.config.cache_dir.join("apks");
        let record = dir.join(hex::encode(Sha256::digest(l.checksum.as_bytes())));
        let (check_dir, check_record, expected_size) = (dir.clone(), record.clone(), l.size);
        let cached = blocking(move || {
            std::fs::create_dir_all(&check_dir)
                .map_err(|e| cache_error(&check_dir, "creating", &e))?;
            Ok(reuse(&check_dir, &check_record, expected_size))
        })
        .await?;
        if let Some(found) = cached {
            return Ok(found);
        }

        let failure = |reason: String, retryable: bool| {
            BuiltinError::Apk(ApkError::Fetch {
                repository: l.repository.clone(),
                url: l.url.clone(),
                reason,
                retryable,
            })
        };
        let refused = |reason: String| {
            BuiltinError::Apk(ApkError::Package {
                repository: l.repository.clone(),
                url: l.url.clone(),
                reason,
            })
        };
        let limits = ApkLimits::default();
        if let Some(size) = l.size.filter(|s| *s > limits.max_package_bytes) {
            return Err(refused(format!(
                "the index says {size} bytes, more than the limit of {}",
                limits.max_package_bytes
            )));
        }
        // No more than the signed index says: a longer body is not the indexed package.
        let limit = l.size.unwrap_or(limits.max_package_bytes);
        let temp = self.cache.temp_file()?;
        let (sha256, size) = self
            .fetcher
            .download(&l.url, &temp, limit)
            .await
            .map_err(|f| failure(f.reason, f.retryable))?;
        if let Some(expected) = l.size.filter(|s| *s != size) {
            return Err(refused(format!(
                "{size} bytes, but the signed index says {expected}"
            )));
        }
        let scratch = self.config.cache_dir.join("tmp");
        let (temp_path, checksum) = (temp.path().to_owned(), l.checksum.clone());
        let identity = blocking(move || {
            Ok(ApkPackage::open(&temp_path, &scratch, &limits).map(|p| p.identity()))
        })
        .await?
        .map_err(|e| refused(format!("not a valid package: {e}")))?;
        if identity != checksum {
            return Err(refused(format!(
                "the package's identity is {identity}, but the signed index names {checksum} \
                 (C:): the file was altered or is not the indexed package"
            )));
        }
        let target = dir.join(format!("{sha256}.apk"));
        let cache = self.cache.clone();
        let line = format!("{sha256} {size}\n");
        let (commit_target, commit_record) = (target.clone(), record);
        blocking(move || {
            temp.commit(&commit_target)?;
            cache.write_file(&commit_record, line.as_bytes())
        })
        .await?;
        Ok((sha256, size, target))
    }
}

/// The cached file `record` points to, if it is there with the recorded SHA-256 and size
/// (and the index's size, when it gives one).
fn reuse(dir: &Path, record: &Path, expected_size: Option<u64>) -> Option<(String, u64, PathBuf)> {
    let text = std::fs::read_to_string(record).ok()?;
    let mut fields = text.split_whitespace();
    let sha256 = fields.next()?.to_owned();
    let size: u64 = fields.next()?.parse().ok()?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if expected_size.is_some_and(|s| s != size) {
        return None;
    }
    let path = dir.join(format!("{sha256}.apk"));
    let (got_sha, got_size) = hash_file(&path).ok()?;
    (got_sha == sha256 && got_size == size).then_some((sha256, size, path))
}

/// The index entry for `wanted`, first repository first.
fn locate(loaded: &[Arc<LoadedIndex>], wanted: &WantedApk) -> Result<Located, BuiltinError> {
    for index in loaded {
        let native = index.repository.architecture.as_str();
        let found = index.index.lookup(&wanted.name).iter().find(|e| {
            e.version == wanted.version
                && e.checksum.is_some()
                && e.architecture
                    .as_deref()
                    .is_none_or(|a| a == native || a == "noarch")
        });
        if let Some(entry) = found {
            return Ok(located(index, entry));
        }
    }
    Err(BuiltinError::PackageUnavailable {
        name: wanted.name.clone(),
        version: wanted.version.clone(),
        architecture: loaded
            .first()
            .map(|l| l.repository.architecture.clone())
            .unwrap_or_default(),
        suites: loaded
            .iter()
            .map(|l| l.repository.label())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn located(index: &LoadedIndex, entry: &ApkIndexEntry) -> Located {
    let repository = &index.repository;
    Located {
        name: entry.name.clone(),
        version: entry.version.clone(),
        architecture: entry
            .architecture
            .clone()
            .unwrap_or_else(|| repository.architecture.clone()),
        repository: repository.label(),
        url: repository.package_url(&entry.name, &entry.version),
        checksum: entry.checksum.clone().unwrap_or_default(),
        size: entry.size,
    }
}
