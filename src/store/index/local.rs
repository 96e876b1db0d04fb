//! The index as files under `<storage.path>/patched/` (today's single-process layout):
//!
//! ```text
//! patched/<upstream>/<original hex>   the patched digest, its media type, the platforms
//!                                      as JSON and the repository, one per line
//! patched/referrers/<subject hex>     referrer manifest digests of a patched manifest
//! ```
//!
//! Each file is written whole through [`write_atomically`]: a crash leaves the old record or
//! the new one.

use std::path::PathBuf;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{IndexEntry, IndexError, IndexKey, PatchedIndex};
use crate::distribution::Digest;
use crate::durable::{remove_abandoned_temps, write_atomically};

/// The directory of referrer records; an upstream cannot be named this (it holds no hex
/// files an entry lookup would take for its own).
const REFERRERS: &str = "referrers";

pub struct LocalIndex {
    dir: PathBuf,
}

impl LocalIndex {
    /// The index under `dir` (`<storage.path>/patched`), created if missing.
    ///
    /// # Errors
    /// The directory cannot be created.
    /// The temporaries of a write that a crash interrupted are removed (the record
    /// itself is its old content or absent).
    pub fn open(dir: PathBuf) -> Result<LocalIndex, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let subdirs = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path());
        let removed: usize = std::iter::once(dir.clone())
            .chain(subdirs)
            .map(|d| remove_abandoned_temps(&d))
            .sum();
        if removed > 0 {
            tracing::info!(removed, "removed temporaries of interrupted index writes");
        }
        Ok(LocalIndex { dir })
    }

    fn path(&self, key: &IndexKey) -> PathBuf {
        self.dir.join(&key.upstream).join(key.original.hex())
    }

    fn referrer_path(&self, subject: &Digest) -> PathBuf {
        self.dir.join(REFERRERS).join(subject.hex())
    }

    async fn read(&self, key: &IndexKey) -> Option<IndexEntry> {
        let text = tokio::fs::read_to_string(self.path(key)).await.ok()?;
        let mut lines = text.lines();
        let patched: Digest = lines.next()?.parse().ok()?;
        let media_type = lines.next()?.to_owned();
        let platforms = lines.next().unwrap_or_default().to_owned();
        let repository = lines.next().unwrap_or_default().to_owned();
        Some(IndexEntry {
            patched,
            media_type,
            platforms,
            repository,
            content: Vec::new(),
            referrers: Vec::new(),
        })
    }

    async fn write(&self, key: &IndexKey, entry: &IndexEntry) -> Result<(), IndexError> {
        let path = self.path(key);
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            entry.patched, entry.media_type, entry.platforms, entry.repository
        );
        tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(|e| IndexError::Local(e.to_string()))?
            .map_err(|e| IndexError::Local(format!("recording the patched image: {e}")))
    }

    /// Drops the record of `original` under every upstream.
    pub(crate) fn remove_everywhere(&self, original: &Digest) -> bool {
        let mut dropped = false;
        if let Ok(upstreams) = std::fs::read_dir(&self.dir) {
            for upstream in upstreams.flatten() {
                if upstream.file_name() == REFERRERS {
                    continue;
                }
                dropped |= std::fs::remove_file(upstream.path().join(original.hex())).is_ok();
            }
        }
        dropped
    }
}

impl PatchedIndex for LocalIndex {
    fn get<'a>(
        &'a self,
        key: &'a IndexKey,
    ) -> BoxFuture<'a, Result<Option<IndexEntry>, IndexError>> {
        async move { Ok(self.read(key).await) }.boxed()
    }

    fn materialize<'a>(
        &'a self,
        _key: &'a IndexKey,
        _entry: &'a IndexEntry,
    ) -> BoxFuture<'a, Result<(), IndexError>> {
        async { Ok(()) }.boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a IndexKey,
        entry: &'a IndexEntry,
    ) -> BoxFuture<'a, Result<(), IndexError>> {
        self.write(key, entry).boxed()
    }

    fn list<'a>(&'a self, upstream: &'a str) -> BoxFuture<'a, Result<Vec<Digest>, IndexError>> {
        async move {
            let mut found = Vec::new();
            if upstream == REFERRERS {
                return Ok(found);
            }
            let Ok(files) = std::fs::read_dir(self.dir.join(upstream)) else {
                return Ok(found);
            };
            for file in files.flatten() {
                let name = file.file_name();
                let Some(hex) = name.to_str() else { continue };
                if let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() {
                    found.push(digest);
                }
            }
            found.sort_by_key(|d| d.to_string());
            Ok(found)
        }
        .boxed()
    }

    fn forget(&self, key: &IndexKey) {
        let _ = std::fs::remove_file(self.path(key));
    }

    fn forget_everywhere<'a>(&'a self, original: &'a Digest) -> BoxFuture<'a, bool> {
        async move { self.remove_everywhere(original) }.boxed()
    }

    fn add_referrer<'a>(
        &'a self,
        subject: &'a Digest,
        referrer: &'a Digest,
    ) -> BoxFuture<'a, Result<(), IndexError>> {
        async move {
            // One line per referrer (the VEX document, signatures, attestations).
            let path = self.referrer_path(subject);
            let mut text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
            let line = referrer.to_string();
            if text.lines().any(|l| l == line) {
                return Ok(());
            }
            text.push_str(&line);
            text.push('\n');
            tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
                .await
                .map_err(|e| IndexError::Local(e.to_string()))?
                .map_err(|e| IndexError::Local(format!("recording a referrer: {e}")))
        }
        .boxed()
    }

    fn referrers<'a>(&'a self, subject: &'a Digest) -> BoxFuture<'a, Vec<Digest>> {
        async move {
            let Ok(text) = tokio::fs::read_to_string(self.referrer_path(subject)).await else {
                return Vec::new();
            };
            text.lines().filter_map(|l| l.parse().ok()).collect()
        }
        .boxed()
    }
}
