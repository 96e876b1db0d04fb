//! The `.deb` files of planned updates, for the patch engine: located in the same verified
//! indexes the scan read (the entry with the planned name, version and architecture), then
//! downloaded with their size and SHA256 checked against the index, and kept in the cache
//! by SHA256. A cached file is hashed again before it is handed out: what the patch uses is
//! always what the signed index names.

use std::collections::HashMap;
use std::path::PathBuf;

use futures_util::StreamExt;

use super::cache::hash_file;
use super::index::IndexEntry;
use super::repo::{blocking, LoadedSuite};
use super::{suites, BuiltinError, BuiltinScanner};
use crate::pkgs::Inventory;
use crate::scan::plan::Platform;

/// Downloads at a time; the pool serves many small files.
const CONCURRENT_DOWNLOADS: usize = 4;

/// A package wanted at an exact version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WantedPackage {
    pub name: String,
    pub version: String,
    /// The installed package's architecture (`amd64`, `all`); `None` for the image's own.
    pub architecture: Option<String>,
}

/// A verified `.deb` in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedDeb {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The suite whose index named it.
    pub suite: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
    /// The cached file; never modified once committed.
    pub path: PathBuf,
}

impl BuiltinScanner {
    /// The verified `.deb` of every wanted package, in `wanted`'s order.
    ///
    /// # Errors
    /// [`BuiltinError::PackageUnavailable`] when no suite's index has the package at that
    /// version and architecture; [`BuiltinError::Fetch`] when the download fails or does
    /// not match the index; any error of loading the suites.
    pub async fn fetch_debs(
        &self,
        inventory: &Inventory,
        platform: &Platform,
        wanted: &[WantedPackage],
    ) -> Result<Vec<FetchedDeb>, BuiltinError> {
        let architecture = suites::apt_architecture(platform)?;
        let selected = suites::select(&inventory.os, architecture, &self.config)?;
        let loads = selected
            .iter()
            .map(|suite| self.repositories.load(suite, architecture));
        let loaded = futures_util::future::try_join_all(loads).await?;
        let mut located = Vec::with_capacity(wanted.len());
        for package in wanted {
            let arch = package.architecture.as_deref().unwrap_or(architecture);
            located.push(locate(&loaded, package, arch)?);
        }
        // One download per file, however many wanted entries name it.
        let mut unique: HashMap<String, (String, u64, String)> = HashMap::new();
        for (suite, entry) in &located {
            if let Some(deb) = &entry.deb {
                let url = loaded[*suite].suite.pool_url(&deb.filename);
                unique
                    .entry(deb.sha256_hex())
                    .or_insert((url, deb.size, entry.name.to_string()));
            }
        }
        let fetches: Vec<_> = unique
            .into_iter()
            .map(|(sha256, (url, size, name))| async move {
                match self.cached_deb(&url, &sha256, size).await {
                    Ok(path) => Ok((sha256, path)),
                    // Named, so a caller can leave this one package out.
                    Err(cause) => Err(BuiltinError::PackageDownload {
                        name,
                        cause: Box::new(cause),
                    }),
                }
            })
            .collect();
        let downloads = futures_util::stream::iter(fetches)
            .buffer_unordered(CONCURRENT_DOWNLOADS)
            .collect::<Vec<_>>()
            .await;
        let mut paths = HashMap::new();
        for download in downloads {
            let (sha256, path) = download?;
            paths.insert(sha256, path);
        }
        let mut fetched = Vec::with_capacity(located.len());
        for (suite, entry) in located {
            let Some(deb) = &entry.deb else { continue };
            let sha256 = deb.sha256_hex();
            let Some(path) = paths.get(&sha256) else {
                continue;
            };
            fetched.push(FetchedDeb {
                name: entry.name.to_string(),
                version: entry.version.to_string(),
                architecture: entry.architecture.to_string(),
                suite: loaded[suite].suite.name.clone(),
                url: loaded[suite].suite.pool_url(&deb.filename),
                sha256,
                size: deb.size,
                path: path.clone(),
            });
        }
        Ok(fetched)
    }

    /// The cached file for `sha256`, downloading it when absent or damaged.
    async fn cached_deb(
        &self,
        url: &str,
        sha256: &str,
        size: u64,
    ) -> Result<PathBuf, BuiltinError> {
        let path = self.cache.deb_path(sha256);
        let check = path.clone();
        let cached = blocking(move || Ok(hash_file(&check).ok())).await?;
        if cached
            .as_ref()
            .is_some_and(|(sha, len)| sha == sha256 && *len == size)
        {
            return Ok(path);
        }
        let failure = |reason: String, retryable: bool| BuiltinError::Fetch {
            suite: "pool".to_owned(),
            url: url.to_owned(),
            reason,
            retryable,
        };
        let limit = self.config.limits.max_deb_bytes;
        if size > limit {
            return Err(failure(
                format!("the index says {size} bytes, more than the limit of {limit}"),
                false,
            ));
        }
        let temp = self.cache.temp_file()?;
        let (got_sha, got_size) = self
            .fetcher
            .download(url, &temp, limit)
            .await
            .map_err(|f| failure(f.reason, f.retryable))?;
        if got_sha != sha256 || got_size != size {
            return Err(failure(
                format!(
                    "does not match the signed index: expected {size} bytes with SHA256 \
                     {sha256}, got {got_size} bytes with SHA256 {got_sha}"
                ),
                true,
            ));
        }
        let target = path.clone();
        blocking(move || temp.commit(&target)).await?;
        Ok(path)
    }
}

/// The index entry for `package`, security suite first.
fn locate(
    loaded: &[LoadedSuite],
    package: &WantedPackage,
    architecture: &str,
) -> Result<(usize, IndexEntry), BuiltinError> {
    for (position, suite) in loaded.iter().enumerate() {
        let found = suite
            .indexes
            .iter()
            .flat_map(|index| index.lookup(&package.name))
            .find(|entry| {
                *entry.version == *package.version
                    && (*entry.architecture == *architecture || &*entry.architecture == "all")
                    && entry.deb.is_some()
            });
        if let Some(entry) = found {
            return Ok((position, entry.clone()));
        }
    }
    Err(BuiltinError::PackageUnavailable {
        name: package.name.clone(),
        version: package.version.clone(),
        architecture: architecture.to_owned(),
        suites: loaded
            .iter()
            .map(|s| s.suite.name.clone())
            .collect::<Vec<_>>()
            .join(", "),
    })
}
