//! The built-in scanner's disk cache. Layout under the configured directory:
//!
//! ```text
//! inrelease/<sha256 of the URL>        the last InRelease that passed verification
//! inrelease/<sha256 of the URL>.meta   {"url", "etag", "last_modified"} for conditional GETs
//! index/<sha256>                       a Packages file (as served, compressed), by the
//!                                      SHA256 its InRelease lists
//! debdocs/<sha256>.json                changelogs and doc links read from a .deb, by the
//!                                      .deb's SHA256 from its index
//! tmp/                                 writes in progress; a crash leaves only files here
//! ```
//!
//! Content-addressed files never change, so a scan with warm caches downloads nothing but
//! InRelease. Everything is re-verified when read (the InRelease signature, the index
//! hash), so a damaged cache costs a download, never a wrong answer. Blocking I/O: call
//! from a blocking thread.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BuiltinError;

/// The cache directory and its typed paths.
#[derive(Debug, Clone)]
pub struct DiskCache {
    root: PathBuf,
}

/// Conditional-request validators kept beside a cached InRelease.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl DiskCache {
    /// Uses `root`, creating its subdirectories.
    ///
    /// # Errors
    /// [`BuiltinError::Cache`] when a directory cannot be created.
    pub fn open(root: &Path) -> Result<DiskCache, BuiltinError> {
        for dir in ["inrelease", "index", "debdocs", "debs", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|e| cache_error(&path, "creating", &e))?;
        }
        Ok(DiskCache {
            root: root.to_owned(),
        })
    }

    pub fn inrelease_path(&self, url: &str) -> PathBuf {
        self.root
            .join("inrelease")
            .join(hex::encode(Sha256::digest(url)))
    }

    pub fn inrelease_meta_path(&self, url: &str) -> PathBuf {
        let mut path = self.inrelease_path(url).into_os_string();
        path.push(".meta");
        PathBuf::from(path)
    }

    pub fn index_path(&self, sha256: &str) -> PathBuf {
        self.root.join("index").join(sha256)
    }

    pub fn debdocs_path(&self, sha256: &str) -> PathBuf {
        self.root.join("debdocs").join(format!("{sha256}.json"))
    }

    /// A verified `.deb`, by its SHA256.
    pub fn deb_path(&self, sha256: &str) -> PathBuf {
        self.root.join("debs").join(format!("{sha256}.deb"))
    }

    /// The cached InRelease of `url` and its validators, if both are there and readable.
    pub fn read_inrelease(&self, url: &str) -> Option<(String, Validators)> {
        let text = fs::read_to_string(self.inrelease_path(url)).ok()?;
        let meta = fs::read(self.inrelease_meta_path(url)).ok()?;
        let validators: Validators = serde_json::from_slice(&meta).ok()?;
        (validators.url == url).then_some((text, validators))
    }

    /// Stores a verified InRelease and its validators.
    ///
    /// # Errors
    /// [`BuiltinError::Cache`] on any I/O failure.
    pub fn write_inrelease(&self, text: &str, validators: &Validators) -> Result<(), BuiltinError> {
        let meta = serde_json::to_vec(validators).map_err(|e| BuiltinError::Cache {
            path: self.inrelease_meta_path(&validators.url),
            reason: e.to_string(),
        })?;
        self.write_file(&self.inrelease_path(&validators.url), text.as_bytes())?;
        self.write_file(&self.inrelease_meta_path(&validators.url), &meta)
    }

    /// Writes `bytes` to `path` as a commit (see [`crate::durable`]).
    ///
    /// # Errors
    /// [`BuiltinError::Cache`] on any I/O failure; the temp file is removed.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), BuiltinError> {
        let mut temp = self.temp_file()?;
        temp.0
            .file_mut()
            .write_all(bytes)
            .map_err(|e| cache_error(temp.path(), "writing", &e))?;
        temp.commit(path)
    }

    /// A new temp file in `tmp/` that deletes itself unless committed.
    ///
    /// # Errors
    /// [`BuiltinError::Cache`] when it cannot be created.
    pub fn temp_file(&self) -> Result<TempFile, BuiltinError> {
        let dir = self.root.join("tmp");
        crate::durable::TempFile::new_in(&dir)
            .map(TempFile)
            .map_err(|e| cache_error(&dir, "creating a file in", &e))
    }
}

/// A file in `tmp/`; removed on drop unless [`TempFile::commit`] renamed it into place.
#[derive(Debug)]
pub struct TempFile(crate::durable::TempFile);

impl TempFile {
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn file(&self) -> &File {
        self.0.file()
    }

    /// Commits the file as `target` (see [`crate::durable::TempFile::commit`]): after a
    /// crash the target is either absent or complete.
    ///
    /// # Errors
    /// [`BuiltinError::Cache`] on any I/O failure.
    pub fn commit(self, target: &Path) -> Result<(), BuiltinError> {
        self.0
            .commit(target)
            .map_err(|e| cache_error(target, "committing", &e))
    }
}

/// The SHA256 (lower-case hex) and length of a file.
///
/// # Errors
/// The I/O error.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}

pub(super) fn cache_error(path: &Path, doing: &str, error: &io::Error) -> BuiltinError {
    BuiltinError::Cache {
        path: path.to_owned(),
        reason: format!("{doing}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_atomic_and_temp_files_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path()).unwrap();
        let target = cache.index_path("abc");
        cache.write_file(&target, b"hello").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        let (sha, size) = hash_file(&target).unwrap();
        assert_eq!(size, 5);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello")));

        let temp = cache.temp_file().unwrap();
        let temp_path = temp.path().to_owned();
        assert!(temp_path.exists());
        drop(temp);
        assert!(!temp_path.exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn inrelease_round_trips_with_validators() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path()).unwrap();
        let url = "http://example.invalid/dists/x/InRelease";
        assert!(cache.read_inrelease(url).is_none());
        let validators = Validators {
            url: url.to_owned(),
            etag: Some("\"abc\"".to_owned()),
            last_modified: None,
        };
        cache.write_inrelease("signed", &validators).unwrap();
        assert_eq!(
            cache.read_inrelease(url),
            Some(("signed".to_owned(), validators))
        );
    }
}
