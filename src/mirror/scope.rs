//! Which stored content a request may read. The store is shared by every upstream, but what a
//! client may read through `<upstream>/<repository>` is what that upstream would serve it
//! there: content fetched or verified through that same upstream and repository, or content
//! the upstream confirms it has (a HEAD for that digest in that repository), or content
//! patchpull made from such an image (a patched manifest, its config and patch layer, its VEX
//! document). Without this, a blob fetched with a private upstream's credentials would be
//! served under any other upstream's name, and under the private one to any repository.
//!
//! Grants are kept in memory (bounded; an evicted one is confirmed again with a HEAD) and
//! appended to a log read back at start, so a restart neither asks upstream again nor stops
//! serving what is cached while upstream is down. What patchpull made is recorded too:
//!
//! ```text
//! <storage.path>/scope/granted                       one hashed (upstream, repository, digest) a line
//! <storage.path>/scope/made/<upstream>/<alg>/<hex>   the original digest the content was made from
//! ```
//!
//! A lost log line (a crash before the page cache reached the disk) only costs a HEAD.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::Digest as _;

use crate::distribution::{Digest, ErrorCode, Reference};
use crate::error::ApiError;
use crate::upstream::Route;

/// Grants remembered; each is about 100 bytes.
const GRANTS: u64 = 200_000;

/// (upstream, repository, digest), hashed: the key of one grant or one fetch in flight.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct ScopeKey([u8; 32]);

impl ScopeKey {
    pub(super) fn new(route: &Route, digest: &Digest) -> ScopeKey {
        let mut hasher = sha2::Sha256::new();
        for part in [
            route.upstream.name(),
            route.repository.as_str(),
            &digest.to_string(),
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        ScopeKey(hasher.finalize().into())
    }
}

/// How an upstream is asked whether it has a digest.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Manifest,
    Blob,
}

pub(crate) struct Scopes {
    granted: moka::sync::Cache<ScopeKey, ()>,
    /// Confirmations in flight, so concurrent requests share one HEAD.
    confirming: moka::future::Cache<ScopeKey, ()>,
    /// Appended to on every new grant; `None` when it cannot be opened (grants then last
    /// until a restart, which was said at start).
    log: Mutex<Option<std::fs::File>>,
    made_dir: PathBuf,
    max_manifest_size: u64,
}

impl Scopes {
    /// Opens the scope records under `<storage>/scope`, loading the grants of earlier runs.
    pub(crate) fn new(storage: &Path, max_manifest_size: u64) -> Arc<Scopes> {
        let dir = storage.join("scope");
        let granted = moka::sync::Cache::builder().max_capacity(GRANTS).build();
        let log = open_log(&dir.join("granted"), &granted)
            .map_err(|e| tracing::warn!(error = %e, "cannot keep cache grants across restarts; each first read after one asks its upstream"))
            .ok();
        Arc::new(Scopes {
            granted,
            confirming: moka::future::Cache::builder().max_capacity(GRANTS).build(),
            log: Mutex::new(log),
            made_dir: dir.join("made"),
            max_manifest_size,
        })
    }

    /// Records that `route` may read `digest` (it was fetched or verified through it).
    pub(crate) async fn grant(&self, route: &Route, digest: &Digest) {
        self.grant_key(ScopeKey::new(route, digest));
    }

    fn grant_key(&self, key: ScopeKey) {
        if self.granted.contains_key(&key) {
            return;
        }
        self.granted.insert(key, ());
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = log.as_mut() {
            // One small append; no fsync: a lost line costs one HEAD later, nothing more.
            if let Err(e) = writeln!(file, "{}", hex::encode(key.0)) {
                tracing::warn!(error = %e, "cannot append to the cache grant log");
                *log = None;
            }
        }
    }

    /// Ok when `route` may read the stored `digest`: granted before, made by patchpull from
    /// an image `route` may read, or confirmed by the upstream now (one HEAD, shared by
    /// concurrent requests). Otherwise the upstream's answer: `404` when it lacks it.
    pub(crate) async fn ensure(
        &self,
        route: &Route,
        digest: &Digest,
        kind: Kind,
    ) -> Result<(), ApiError> {
        let key = ScopeKey::new(route, digest);
        if self.granted.contains_key(&key) {
            return Ok(());
        }
        let confirmed = self
            .confirming
            .try_get_with(key, async {
                // Originals are upstream content, so this goes one level deep. Made
                // content the upstream also has (the empty config of a VEX artifact) is
                // still readable where the upstream confirms it.
                if let Some(original) = self.made_from(route.upstream.name(), digest).await {
                    if original != *digest && self.original_readable(route, &original).await {
                        self.grant_key(key);
                        return Ok(());
                    }
                }
                self.confirm_upstream(route, digest, kind).await?;
                self.grant_key(key);
                Ok(())
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone());
        self.confirming.invalidate(&key).await;
        confirmed
    }

    async fn original_readable(&self, route: &Route, original: &Digest) -> bool {
        let key = ScopeKey::new(route, original);
        if self.granted.contains_key(&key) {
            return true;
        }
        let confirmed = self
            .confirming
            .try_get_with(key, async {
                self.confirm_upstream(route, original, Kind::Manifest)
                    .await?;
                self.grant_key(key);
                Ok::<_, ApiError>(())
            })
            .await
            .is_ok();
        self.confirming.invalidate(&key).await;
        confirmed
    }

    async fn confirm_upstream(
        &self,
        route: &Route,
        digest: &Digest,
        kind: Kind,
    ) -> Result<(), ApiError> {
        let upstream = &route.upstream;
        match kind {
            Kind::Manifest => upstream
                .head_manifest(
                    &route.repository,
                    &Reference::Digest(digest.clone()),
                    self.max_manifest_size,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.into_api(ErrorCode::ManifestUnknown)),
            Kind::Blob => upstream
                .head_blob(&route.repository, digest)
                .await
                .map(|_| ())
                .map_err(|e| e.into_api(ErrorCode::BlobUnknown)),
        }
    }

    fn made_path(&self, upstream: &str, digest: &Digest) -> PathBuf {
        self.made_dir
            .join(upstream)
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    async fn made_from(&self, upstream: &str, digest: &Digest) -> Option<Digest> {
        let text = tokio::fs::read_to_string(self.made_path(upstream, digest))
            .await
            .ok()?;
        text.trim().parse().ok()
    }

    /// Records that patchpull made `made` from `original`, an image of `route`'s upstream:
    /// readable wherever `original` is. Granted to `route` at once.
    ///
    /// # Errors
    /// The record cannot be written; the content would not be readable after a restart.
    pub(crate) async fn record_made(
        &self,
        route: &Route,
        original: &Digest,
        made: &[Digest],
    ) -> Result<(), String> {
        let paths: Vec<PathBuf> = made
            .iter()
            .map(|d| self.made_path(route.upstream.name(), d))
            .collect();
        let text = format!("{original}\n");
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for path in paths {
                write_small(&path, text.as_bytes())?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("recording what the patched image was made from: {e}"))?;
        for digest in made {
            self.grant(route, digest).await;
        }
        Ok(())
    }
}

/// Opens the grant log for appending after loading it into `granted`; a log grown past
/// twice the cache is first rewritten with its newest lines.
fn open_log(
    path: &Path,
    granted: &moka::sync::Cache<ScopeKey, ()>,
) -> std::io::Result<std::fs::File> {
    let mut keys: Vec<[u8; 32]> = Vec::new();
    match std::fs::File::open(path) {
        Ok(file) => {
            for line in std::io::BufReader::new(file).lines() {
                let mut key = [0u8; 32];
                if hex::decode_to_slice(line?.trim(), &mut key).is_ok() {
                    keys.push(key);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if keys.len() as u64 > 2 * GRANTS {
        keys.drain(..keys.len() - GRANTS as usize);
        let text: String = keys
            .iter()
            .map(|k| format!("{}\n", hex::encode(k)))
            .collect();
        write_small(path, text.as_bytes())?;
    }
    for key in keys {
        granted.insert(ScopeKey(key), ());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Temp file, fsync, rename: a crash leaves the old record or the new one.
fn write_small(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    // Two jobs may record the same content (a shared patch layer) at once.
    static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let temp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::upstream::Allowlist;

    /// Routes to two upstreams nobody listens on: any question to them fails.
    fn routes() -> [Route; 4] {
        let toml = r#"
            [[upstream]]
            name = "a"
            url = "http://127.0.0.1:9"
            retries = 0
            [[upstream]]
            name = "b"
            url = "http://127.0.0.1:9"
            retries = 0
        "#;
        let config = Config::from_toml_str(toml).unwrap();
        let allowlist = Allowlist::new(&config.upstream, Arc::new(Metrics::new())).unwrap();
        let route = |name: &str| allowlist.route(name, None).unwrap();
        [
            route("a/team/app"),
            route("a/team/copy"),
            route("a/team/other"),
            route("b/team/app"),
        ]
    }

    #[tokio::test]
    async fn grants_and_made_content_survive_a_restart_and_stay_in_their_scope() {
        let dir = tempfile::tempdir().unwrap();
        let [a, a_copy, a_other, b] = routes();
        let original = Digest::sha256_of(b"original manifest");
        let made = Digest::sha256_of(b"patch layer");
        let fetched = Digest::sha256_of(b"a layer");
        let scopes = Scopes::new(dir.path(), 4 << 20);
        scopes.grant(&a, &fetched).await;
        scopes
            .record_made(&a, &original, std::slice::from_ref(&made))
            .await
            .unwrap();
        scopes.grant(&a_copy, &original).await; // the same image, in another repository
        scopes.ensure(&a, &made, Kind::Blob).await.unwrap();

        let scopes = Scopes::new(dir.path(), 4 << 20);
        scopes.ensure(&a, &fetched, Kind::Blob).await.unwrap();
        scopes.ensure(&a, &made, Kind::Blob).await.unwrap();
        // Made from an original readable there.
        scopes.ensure(&a_copy, &made, Kind::Blob).await.unwrap();
        // Not through another upstream, nor a repository the original is not known in:
        // those ask their upstream, which does not answer here.
        for route in [&a_other, &b] {
            assert!(scopes.ensure(route, &made, Kind::Blob).await.is_err());
            assert!(scopes.ensure(route, &fetched, Kind::Blob).await.is_err());
            assert!(scopes
                .ensure(route, &original, Kind::Manifest)
                .await
                .is_err());
        }
    }
}
