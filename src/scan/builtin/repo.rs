//! Loading a suite: its `InRelease` (signature checked, conditionally refreshed) and its
//! `Packages` indexes (hash checked, cached by hash, parsed once per process).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::cache::{cache_error, hash_file, DiskCache, Validators};
use super::fetch::{Fetched, Fetcher};
use super::index::{read_index, Compression, PackageIndex};
use super::keyring::Keyring;
use super::release::{format_rfc3339, FileHash, Freshness, Release};
use super::suites::Suite;
use super::{BuiltinConfig, BuiltinError};

/// A suite ready to scan against.
#[derive(Debug, Clone)]
pub struct LoadedSuite {
    pub suite: Suite,
    pub release: Arc<Release>,
    /// One per component (and `binary-all` where the Release has it separately).
    pub indexes: Vec<Arc<PackageIndex>>,
}

impl LoadedSuite {
    /// `<suite>@<Date>#<hash>` (`bookworm-security@2024-08-20T10:00:00Z#1a2b3c4d5e6f`):
    /// changes with every publication of the suite. The hash covers every file the Release
    /// lists, so two publications within one second differ too.
    pub fn version(&self) -> String {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for (path, file) in &self.release.files {
            hasher.update(path.as_bytes());
            hasher.update(b" ");
            hasher.update(file.sha256.as_bytes());
            hasher.update(b"\n");
        }
        let hash = hex::encode(hasher.finalize());
        format!(
            "{}@{}#{}",
            self.suite.name,
            format_rfc3339(self.release.date),
            &hash[..12]
        )
    }
}

#[derive(Debug)]
struct KnownRelease {
    release: Arc<Release>,
    validators: Validators,
    checked_at: Instant,
}

/// The in-memory side of the repository cache; the disk side is [`DiskCache`].
#[derive(Debug)]
pub struct Repositories {
    config: Arc<BuiltinConfig>,
    fetcher: Fetcher,
    cache: DiskCache,
    releases: Mutex<HashMap<String, Arc<KnownRelease>>>,
    /// Index URL -> the parsed index of the hash last seen there. One per URL, so memory
    /// stays bounded as suites are republished.
    indexes: Mutex<HashMap<String, (String, Arc<PackageIndex>)>>,
    /// One load per suite at a time: concurrent scans wait and then find a warm cache.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Repositories {
    pub fn new(config: Arc<BuiltinConfig>, fetcher: Fetcher, cache: DiskCache) -> Repositories {
        Repositories {
            config,
            fetcher,
            cache,
            releases: Mutex::default(),
            indexes: Mutex::default(),
            loading: Mutex::default(),
        }
    }

    /// The suite's verified Release and its indexes for `architecture`.
    ///
    /// # Errors
    /// Any [`BuiltinError`] naming the suite: fetch, signature, Release, expiry, missing or
    /// mismatching indexes.
    pub async fn load(
        &self,
        suite: &Suite,
        architecture: &str,
    ) -> Result<LoadedSuite, BuiltinError> {
        let gate = {
            let mut loading = lock(&self.loading);
            loading.entry(suite.inrelease_url()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        let release = self.release(suite).await?;
        let mut indexes = Vec::new();
        for component in &suite.components {
            indexes.push(self.index(suite, &release, component, architecture).await?);
            if release.has_separate_all() {
                indexes.push(self.index(suite, &release, component, "all").await?);
            }
        }
        Ok(LoadedSuite {
            suite: suite.clone(),
            release,
            indexes,
        })
    }

    async fn release(&self, suite: &Suite) -> Result<Arc<Release>, BuiltinError> {
        let url = suite.inrelease_url();
        let now = SystemTime::now();
        let mut known = lock(&self.releases).get(&url).cloned();
        if let Some(k) = known
            .as_ref()
            .filter(|k| k.checked_at.elapsed() < self.config.refresh_interval)
        {
            check(suite, &url, &k.release, now)?;
            return Ok(k.release.clone());
        }
        if known.is_none() {
            // A cold process: the disk copy is re-verified, and ignored if it fails.
            if let Some((text, validators)) = self.cache.read_inrelease(&url) {
                known = self.verify(suite, &url, &text, now).ok().map(|release| {
                    Arc::new(KnownRelease {
                        release: Arc::new(release),
                        validators,
                        checked_at: Instant::now(),
                    })
                });
            }
        }
        let limit = self.config.limits.max_release_bytes;
        let validators = known.as_ref().map(|k| &k.validators);
        let fetched = self.fetcher.get_small(&url, validators, limit).await;
        let (release, validators) = match (fetched, known) {
            (Ok(Fetched::NotModified), Some(k)) => (k.release.clone(), k.validators.clone()),
            (
                Ok(Fetched::Body {
                    bytes,
                    etag,
                    last_modified,
                }),
                known,
            ) => {
                let text = String::from_utf8(bytes).map_err(|_| BuiltinError::Release {
                    suite: suite.name.clone(),
                    url: url.clone(),
                    reason: "InRelease is not UTF-8".to_owned(),
                })?;
                let release = self.verify(suite, &url, &text, now)?;
                match known.filter(|k| k.release.date > release.date) {
                    // A mirror behind the one we last saw: keep the newer Release rather
                    // than let a lagging (or replaying) mirror roll the index back.
                    Some(k) => (k.release.clone(), k.validators.clone()),
                    None => {
                        let validators = Validators {
                            url: url.clone(),
                            etag,
                            last_modified,
                        };
                        let (cache, stored) = (self.cache.clone(), validators.clone());
                        blocking(move || cache.write_inrelease(&text, &stored)).await?;
                        (Arc::new(release), validators)
                    }
                }
            }
            (Ok(Fetched::NotModified), None) => {
                return Err(BuiltinError::Fetch {
                    suite: suite.name.clone(),
                    url,
                    reason: "server answered 304 Not Modified to an unconditional request"
                        .to_owned(),
                    retryable: true,
                })
            }
            // Remote first, cached fallback: a Release still within Valid-Until beats no scan.
            (Err(failure), Some(k)) if failure.retryable => {
                tracing::warn!(suite = %suite.name, url = %url, reason = %failure.reason, "InRelease fetch failed; using the cached copy");
                (k.release.clone(), k.validators.clone())
            }
            (Err(failure), _) => return Err(failure.in_suite(&suite.name, &url)),
        };
        let known = KnownRelease {
            release: release.clone(),
            validators,
            checked_at: Instant::now(),
        };
        lock(&self.releases).insert(url.clone(), Arc::new(known));
        check(suite, &url, &release, now)?;
        Ok(release)
    }

    fn verify(
        &self,
        suite: &Suite,
        url: &str,
        text: &str,
        now: SystemTime,
    ) -> Result<Release, BuiltinError> {
        let keyring = Keyring::load(&suite.keyring).map_err(|source| BuiltinError::Keyring {
            path: suite.keyring.clone(),
            source,
        })?;
        let verified =
            keyring
                .verify_cleartext(text, now)
                .map_err(|source| BuiltinError::Signature {
                    suite: suite.name.clone(),
                    url: url.to_owned(),
                    source,
                })?;
        let release_error = |reason| BuiltinError::Release {
            suite: suite.name.clone(),
            url: url.to_owned(),
            reason,
        };
        let release = Release::parse(&verified.text).map_err(release_error)?;
        release.check_suite(&suite.name).map_err(release_error)?;
        Ok(release)
    }

    async fn index(
        &self,
        suite: &Suite,
        release: &Release,
        component: &str,
        architecture: &str,
    ) -> Result<Arc<PackageIndex>, BuiltinError> {
        let listed = release.packages_indexes(component, architecture);
        if listed.is_empty() {
            return Err(BuiltinError::NoIndex {
                suite: suite.name.clone(),
                component: component.to_owned(),
                architecture: architecture.to_owned(),
            });
        }
        let mut not_served = Vec::new();
        for (path, hash) in listed {
            let url = suite.dists_url(path);
            if let Some((sha, index)) = lock(&self.indexes).get(&url) {
                if *sha == hash.sha256 {
                    return Ok(index.clone());
                }
            }
            let cached = self.cache.index_path(&hash.sha256);
            let parsed = match self.parse_cached(suite, path, hash, &cached).await? {
                Some(index) => index,
                None => match self
                    .download_index(suite, release, path, hash, &cached)
                    .await?
                {
                    Some(index) => {
                        self.write_compact(&hash.sha256, &index).await;
                        index
                    }
                    None => {
                        // Listed but not served (Debian's plain `Packages`): try the next.
                        not_served.push(url);
                        continue;
                    }
                },
            };
            let index = Arc::new(parsed);
            lock(&self.indexes).insert(url, (hash.sha256.clone(), index.clone()));
            return Ok(index);
        }
        Err(BuiltinError::Fetch {
            suite: suite.name.clone(),
            url: not_served.join(", "),
            reason: "no Packages index that InRelease lists is served (404)".to_owned(),
            retryable: false,
        })
    }

    /// The cached index file parsed, if it is there and still matches its hash.
    async fn parse_cached(
        &self,
        suite: &Suite,
        path: &str,
        hash: &FileHash,
        cached: &Path,
    ) -> Result<Option<PackageIndex>, BuiltinError> {
        if !cached.exists() {
            return Ok(None);
        }
        let (cached, expected) = (cached.to_owned(), hash.clone());
        let intact = blocking(move || {
            let matches = hash_file(&cached)
                .is_ok_and(|(sha, size)| sha == expected.sha256 && size == expected.size);
            if !matches {
                let _ = std::fs::remove_file(&cached);
            }
            Ok(matches)
        })
        .await?;
        if !intact {
            return Ok(None);
        }
        // The compact copy made from this verified file, when there is one.
        let compact = compact_path(&self.cache.index_path(&hash.sha256));
        let quick = blocking(move || {
            Ok(std::fs::read(&compact)
                .ok()
                .and_then(|text| PackageIndex::from_compact(&text).ok()))
        })
        .await?;
        if let Some(index) = quick {
            return Ok(Some(index));
        }
        let index = self
            .parse_file(suite, path, &self.cache.index_path(&hash.sha256))
            .await?;
        self.write_compact(&hash.sha256, &index).await;
        Ok(Some(index))
    }

    /// Keeps a compact copy of a verified, parsed index; failing to is only slower later.
    async fn write_compact(&self, sha256: &str, index: &PackageIndex) {
        let (cache, target, bytes) = (
            self.cache.clone(),
            compact_path(&self.cache.index_path(sha256)),
            index.to_compact(),
        );
        let written = blocking(move || cache.write_file(&target, &bytes)).await;
        if let Err(e) = written {
            tracing::debug!(error = %e, "not keeping a compact index copy");
        }
    }

    async fn download_index(
        &self,
        suite: &Suite,
        release: &Release,
        path: &str,
        hash: &FileHash,
        cached: &Path,
    ) -> Result<Option<PackageIndex>, BuiltinError> {
        let limit = self.config.limits.max_index_bytes;
        if hash.size > limit {
            return Err(BuiltinError::MalformedIndex {
                suite: suite.name.clone(),
                path: path.to_owned(),
                reason: format!(
                    "InRelease lists {} bytes, more than the limit of {limit}",
                    hash.size
                ),
            });
        }
        let temp = self.cache.temp_file()?;
        let by_path = suite.dists_url(path);
        let mut url = by_path.clone();
        if release.acquire_by_hash {
            // By hash, the file cannot change between InRelease and this request.
            let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
            url = suite.dists_url(&format!("{dir}/by-hash/SHA256/{}", hash.sha256));
        }
        let mut result = self.fetcher.download(&url, &temp, limit).await;
        if matches!(&result, Err(f) if f.is_not_found()) && url != by_path {
            url = by_path;
            result = self.fetcher.download(&url, &temp, limit).await;
        }
        let (sha, size) = match result {
            Ok(done) => done,
            Err(failure) if failure.is_not_found() => return Ok(None),
            Err(failure) => return Err(failure.in_suite(&suite.name, &url)),
        };
        if size != hash.size || sha != hash.sha256 {
            return Err(BuiltinError::IndexMismatch {
                suite: suite.name.clone(),
                path: path.to_owned(),
                reason: format!(
                    "InRelease lists {} bytes with SHA256 {}, the server sent {size} bytes with SHA256 {sha}",
                    hash.size, hash.sha256
                ),
            });
        }
        let target = cached.to_owned();
        blocking(move || temp.commit(&target)).await?;
        self.parse_file(suite, path, cached).await.map(Some)
    }

    async fn parse_file(
        &self,
        suite: &Suite,
        path: &str,
        file: &Path,
    ) -> Result<PackageIndex, BuiltinError> {
        let (file, compression) = (file.to_owned(), Compression::of_path(path));
        let max_unpacked = self.config.limits.max_index_unpacked_bytes;
        let parsed = blocking(move || {
            let input =
                std::fs::File::open(&file).map_err(|e| cache_error(&file, "opening", &e))?;
            Ok(read_index(input, compression, max_unpacked))
        })
        .await?;
        parsed.map_err(|reason| BuiltinError::MalformedIndex {
            suite: suite.name.clone(),
            path: path.to_owned(),
            reason,
        })
    }
}

/// Where the compact copy of the index at `index` is kept.
fn compact_path(index: &Path) -> std::path::PathBuf {
    let mut path = index.as_os_str().to_owned();
    path.push(".compact");
    std::path::PathBuf::from(path)
}

fn check(suite: &Suite, url: &str, release: &Release, now: SystemTime) -> Result<(), BuiltinError> {
    release
        .check_time(now)
        .map_err(|freshness| match freshness {
            Freshness::Expired(valid_until) => BuiltinError::Expired {
                suite: suite.name.clone(),
                url: url.to_owned(),
                valid_until,
            },
            Freshness::Invalid(reason) => BuiltinError::Release {
                suite: suite.name.clone(),
                url: url.to_owned(),
                reason,
            },
        })
}

/// Runs blocking work (disk, decompression) off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BuiltinError> + Send + 'static,
) -> Result<T, BuiltinError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BuiltinError::Cache {
            path: Default::default(),
            reason: format!("blocking task failed: {e}"),
        })?
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
