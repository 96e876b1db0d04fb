//! Fetching and caching the indexes and the secdb.
//!
//! Indexes: the last verified `APKINDEX.tar.gz` of each URL is kept on disk
//! (`<cache_dir>/apk/<sha256 of the URL>.tar.gz` and `.meta` with its validators) and, parsed,
//! in memory. A URL checked less than [`BuiltinConfig::refresh_interval`] ago is not asked
//! for again; after that it is asked for conditionally (`If-None-Match`,
//! `If-Modified-Since`), so a warm scan costs one 304 per repository. The disk copy is
//! verified again when a new process reads it. There is no stale fallback: an index has no
//! expiry date to bound how old a cached copy may be, so a failed refresh fails the scan.
//!
//! The secdb: in memory only, refreshed the same way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::super::cache::{cache_error, DiskCache, Validators};
use super::super::fetch::{Fetched, Fetcher};
use super::super::{BuiltinConfig, BuiltinError};
use super::error::{ApkError, IndexError};
use super::index::ApkIndex;
use super::repos::ApkRepository;
use super::secdb::SecDb;
use super::signed::verify_and_extract;

/// A verified, parsed index.
#[derive(Debug)]
pub struct LoadedIndex {
    pub repository: ApkRepository,
    pub index: ApkIndex,
    /// SHA-256 (hex) of the `APKINDEX.tar.gz` as served: identifies the publication.
    pub sha256: String,
    pub description: Option<String>,
    /// The trusted key that signed it.
    pub key: String,
}

impl LoadedIndex {
    /// `v3.20/main@<DESCRIPTION>#<first 12 hex of the SHA-256>`.
    pub fn version(&self) -> String {
        format!(
            "{}@{}#{}",
            self.repository.label(),
            self.description.as_deref().unwrap_or("-"),
            &self.sha256[..12.min(self.sha256.len())]
        )
    }
}

#[derive(Debug)]
struct Known<T> {
    value: Arc<T>,
    validators: Validators,
    checked_at: Instant,
}

/// The in-memory caches and the disk directory.
#[derive(Debug)]
pub struct Loader {
    config: Arc<BuiltinConfig>,
    fetcher: Fetcher,
    cache: DiskCache,
    dir: PathBuf,
    indexes: Mutex<HashMap<String, Arc<Known<LoadedIndex>>>>,
    secdbs: Mutex<HashMap<String, Arc<Known<SecDb>>>>,
    /// One load per URL at a time: concurrent scans wait and then find a warm cache.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Loader {
    /// # Errors
    /// [`BuiltinError::Cache`] when `<cache_dir>/apk` cannot be created.
    pub fn new(
        config: Arc<BuiltinConfig>,
        fetcher: Fetcher,
        cache: DiskCache,
    ) -> Result<Loader, BuiltinError> {
        let dir = config.cache_dir.join("apk");
        std::fs::create_dir_all(&dir).map_err(|e| cache_error(&dir, "creating", &e))?;
        Ok(Loader {
            config,
            fetcher,
            cache,
            dir,
            indexes: Mutex::default(),
            secdbs: Mutex::default(),
            loading: Mutex::default(),
        })
    }

    /// The repository's verified index.
    ///
    /// # Errors
    /// [`ApkError::Fetch`] and [`ApkError::Index`] naming the repository;
    /// [`BuiltinError::Cache`] when the verified copy cannot be stored.
    pub async fn index(
        &self,
        repository: &ApkRepository,
    ) -> Result<Arc<LoadedIndex>, BuiltinError> {
        let url = repository.index_url();
        let gate = lock(&self.loading).entry(url.clone()).or_default().clone();
        let _one_at_a_time = gate.lock().await;
        let mut known = lock(&self.indexes).get(&url).cloned();
        if let Some(k) = known
            .as_ref()
            .filter(|k| k.checked_at.elapsed() < self.config.refresh_interval)
        {
            return Ok(k.value.clone());
        }
        let (data_path, meta_path) = self.paths(&url);
        if known.is_none() {
            // A cold process: the disk copy is verified again, and ignored if it fails.
            let disk = (
                tokio::fs::read(&data_path).await,
                tokio::fs::read(&meta_path).await,
            );
            if let (Ok(bytes), Ok(meta)) = disk {
                let validators = serde_json::from_slice::<Validators>(&meta).ok();
                let parsed = self.verify(repository, bytes).await;
                if let (Some(validators), Ok(value)) = (validators, parsed) {
                    known = Some(Arc::new(Known {
                        value: Arc::new(value),
                        validators,
                        checked_at: Instant::now(),
                    }));
                }
            }
        }
        let limit = self.config.alpine.limits.max_index_bytes;
        let fetched = self
            .fetcher
            .get_small(&url, known.as_ref().map(|k| &k.validators), limit)
            .await;
        let fresh = match (fetched, known) {
            (Ok(Fetched::NotModified), Some(k)) => Known {
                value: k.value.clone(),
                validators: k.validators.clone(),
                checked_at: Instant::now(),
            },
            (
                Ok(Fetched::Body {
                    bytes,
                    etag,
                    last_modified,
                }),
                _,
            ) => {
                let value = self.verify(repository, bytes.clone()).await?;
                let validators = Validators {
                    url: url.clone(),
                    etag,
                    last_modified,
                };
                let meta = serde_json::to_vec(&validators).map_err(|e| BuiltinError::Cache {
                    path: meta_path.clone(),
                    reason: e.to_string(),
                })?;
                let cache = self.cache.clone();
                blocking(move || {
                    cache.write_file(&data_path, &bytes)?;
                    cache.write_file(&meta_path, &meta)
                })
                .await?;
                Known {
                    value: Arc::new(value),
                    validators,
                    checked_at: Instant::now(),
                }
            }
            (Ok(Fetched::NotModified), None) => {
                return Err(fetch_error(
                    repository,
                    &url,
                    "server answered 304 Not Modified to an unconditional request".to_owned(),
                    true,
                ))
            }
            (Err(failure), _) => {
                let mut reason = failure.reason.clone();
                if failure.is_not_found() {
                    reason.push_str(&format!(
                        " (is {} a branch, and {} an architecture, that this mirror carries?)",
                        repository.branch, repository.architecture
                    ));
                }
                return Err(fetch_error(repository, &url, reason, failure.retryable));
            }
        };
        let value = fresh.value.clone();
        lock(&self.indexes).insert(url, Arc::new(fresh));
        Ok(value)
    }

    /// Signature check, extraction and parsing, off the async threads.
    async fn verify(
        &self,
        repository: &ApkRepository,
        bytes: Vec<u8>,
    ) -> Result<LoadedIndex, BuiltinError> {
        let keys_dir = self.config.alpine.keys_dir.clone();
        let max_unpacked = self.config.alpine.limits.max_index_unpacked_bytes;
        let (repository, url) = (repository.clone(), repository.index_url());
        blocking(move || {
            let index_error = |source: IndexError| ApkError::Index {
                repository: repository.label(),
                url: url.clone(),
                source,
            };
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let verified =
                verify_and_extract(&bytes, &keys_dir, max_unpacked).map_err(index_error)?;
            let index = ApkIndex::parse(&verified.apkindex)
                .map_err(|reason| index_error(IndexError::Malformed { reason }))?;
            Ok(LoadedIndex {
                repository,
                index,
                sha256,
                description: verified.description,
                key: verified.key,
            })
        })
        .await
    }

    /// The secdb of `branch`: every configured repository's file merged. `Ok(None)` when
    /// no secdb URL is configured.
    ///
    /// # Errors
    /// The reason, for the scan to report: the CVE ids are then missing, the updates stand.
    pub async fn secdb(&self, branch: &str) -> Result<Option<Arc<SecDb>>, String> {
        let Some(base) = self.config.alpine.secdb_url.as_deref() else {
            return Ok(None);
        };
        let base = base.trim_end_matches('/');
        let mut merged = SecDb::default();
        for name in &self.config.alpine.repositories {
            let url = format!("{base}/{branch}/{name}.json");
            let db = self.secdb_file(&url).await?;
            merged.extend(&db);
        }
        Ok(Some(Arc::new(merged)))
    }

    async fn secdb_file(&self, url: &str) -> Result<Arc<SecDb>, String> {
        let gate = lock(&self.loading)
            .entry(url.to_owned())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().await;
        let known = lock(&self.secdbs).get(url).cloned();
        if let Some(k) = known
            .as_ref()
            .filter(|k| k.checked_at.elapsed() < self.config.refresh_interval)
        {
            return Ok(k.value.clone());
        }
        let limit = self.config.alpine.limits.max_secdb_bytes;
        let fetched = self
            .fetcher
            .get_small(url, known.as_ref().map(|k| &k.validators), limit)
            .await;
        let fresh = match (fetched, known) {
            (Ok(Fetched::NotModified), Some(k)) => Known {
                value: k.value.clone(),
                validators: k.validators.clone(),
                checked_at: Instant::now(),
            },
            (
                Ok(Fetched::Body {
                    bytes,
                    etag,
                    last_modified,
                }),
                _,
            ) => Known {
                value: Arc::new(SecDb::parse(&bytes).map_err(|e| format!("secdb {url}: {e}"))?),
                validators: Validators {
                    url: url.to_owned(),
                    etag,
                    last_modified,
                },
                checked_at: Instant::now(),
            },
            (Ok(Fetched::NotModified), None) => {
                return Err(format!("secdb {url}: 304 to an unconditional request"))
            }
            (Err(failure), _) => return Err(format!("secdb {url}: {}", failure.reason)),
        };
        let value = fresh.value.clone();
        lock(&self.secdbs).insert(url.to_owned(), Arc::new(fresh));
        Ok(value)
    }

    fn paths(&self, url: &str) -> (PathBuf, PathBuf) {
        let name = hex::encode(Sha256::digest(url.as_bytes()));
        (
            self.dir.join(format!("{name}.tar.gz")),
            self.dir.join(format!("{name}.meta")),
        )
    }
}

fn fetch_error(
    repository: &ApkRepository,
    url: &str,
    reason: String,
    retryable: bool,
) -> BuiltinError {
    ApkError::Fetch {
        repository: repository.label(),
        url: url.to_owned(),
        reason,
        retryable,
    }
    .into()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BuiltinError> + Send + 'static,
) -> Result<T, BuiltinError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BuiltinError::Cache {
            path: PathBuf::new(),
            reason: format!("a blocking task failed: {e}"),
        })?
}
