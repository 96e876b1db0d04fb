//! Scan results by (image, platform, source), in memory (moka) and on disk, so a plan is
//! computed once per image and source. The image part is what the plan was read from: the
//! layers' blob digests (and the config's, for a scanner that sees the whole image), never
//! a manifest digest, since a re-patch plans a patched image from its base layers under
//! the patched image's own manifest. The source part carries what else makes a result
//! stale: the repository indexes' version and the scanner's settings, the plan options,
//! the scanner command. Entries also expire after a TTL (vulnerability data moves on).
//!
//! Disk layout: `<dir>/<sha256 of the key>.json`, holding the key, the time it was made and
//! the plan; written through a temp file and rename. A file whose key does not match (a
//! hash collision, or tampering) is ignored.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::plan::Plan;

impl ScanKey {
    /// The key of a built-in scan of the image of `layers` (blob digests, in order): the
    /// indexes' version, the scanner's settings (`settings`, see
    /// [`crate::scan::builtin::BuiltinScanner::settings`]) and the plan options (a
    /// policy's filters change the plan). The config is not part of it: the scanner reads
    /// the package database and os-release from the layers alone.
    pub fn builtin<'a>(
        layers: impl IntoIterator<Item = &'a str>,
        platform: &str,
        index_version: &str,
        settings: &str,
        options: &super::plan::PlanOptions,
    ) -> ScanKey {
        ScanKey {
            layers: layers.into_iter().map(str::to_owned).collect(),
            config_digest: None,
            platform: platform.to_owned(),
            source: format!(
                "builtin:{index_version};settings={settings};min_severity={:?};include={:?};exclude={:?}",
                options.min_severity, options.include, options.exclude
            ),
        }
    }

    /// The key of a scanner command's plan for the image of `config_digest` and `layers`
    /// (the command reads the whole image), run as `command` with the plan `options`.
    pub fn command<'a>(
        config_digest: &str,
        layers: impl IntoIterator<Item = &'a str>,
        platform: &str,
        command: &str,
        options: &super::plan::PlanOptions,
    ) -> ScanKey {
        ScanKey {
            layers: layers.into_iter().map(str::to_owned).collect(),
            config_digest: Some(config_digest.to_owned()),
            platform: platform.to_owned(),
            source: format!(
                "command:{command};min_severity={:?};include={:?};exclude={:?}",
                options.min_severity, options.include, options.exclude
            ),
        }
    }
}

/// What a cached plan was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanKey {
    /// The blob digests of the layers the plan was read from, in order.
    pub layers: Vec<String>,
    /// The config's digest, when the scanner read it (a scanner command sees the whole
    /// image); `None` for the built-in scanner.
    pub config_digest: Option<String>,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// `builtin:<index version>;...`, `command:<argv>;...`.
    pub source: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: ScanKey,
    made_unix: u64,
    plan: Plan,
}

pub struct ScanCache {
    memory: moka::sync::Cache<ScanKey, (SystemTime, Arc<Plan>)>,
    dir: PathBuf,
    ttl: Duration,
    clock: crate::clock::Clock,
}

#[derive(Debug, thiserror::Error)]
#[error("scan cache {path}: {source}")]
pub struct CacheError {
    path: String,
    source: std::io::Error,
}

impl ScanCache {
    pub fn open(dir: impl Into<PathBuf>, ttl: Duration) -> Result<ScanCache, CacheError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| CacheError {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(ScanCache {
            memory: moka::sync::Cache::builder().max_capacity(10_000).build(),
            dir,
            ttl,
            clock: crate::clock::Clock::new(),
        })
    }

    /// The same cache, its TTL going by `clock`.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> ScanCache {
        self.clock = clock;
        self
    }

    fn path(&self, key: &ScanKey) -> PathBuf {
        let text = serde_json::to_string(key).unwrap_or_default();
        self.dir.join(format!(
            "{}.json",
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        ))
    }

    fn fresh(&self, made: SystemTime) -> bool {
        self.clock
            .system_now()
            .duration_since(made)
            .map(|age| age < self.ttl)
            .unwrap_or(false)
    }

    /// A plan made from `key` within the TTL.
    pub fn get(&self, key: &ScanKey) -> Option<Arc<Plan>> {
        if let Some((made, plan)) = self.memory.get(key) {
            if self.fresh(made) {
                return Some(plan);
            }
            self.memory.invalidate(key);
        }
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        let made = SystemTime::UNIX_EPOCH + Duration::from_secs(entry.made_unix);
        if entry.key != *key || !self.fresh(made) {
            return None;
        }
        let plan = Arc::new(entry.plan);
        self.memory.insert(key.clone(), (made, plan.clone()));
        Some(plan)
    }

    /// Records a plan (memory, then disk atomically).
    pub fn put(&self, key: ScanKey, plan: Plan) -> Result<Arc<Plan>, CacheError> {
        let now = self.clock.system_now();
        let made_unix = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = self.path(&key);
        let entry = Entry {
            key: key.clone(),
            made_unix,
            plan,
        };
        let io = |source: std::io::Error| CacheError {
            path: path.display().to_string(),
            source,
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| io(std::io::Error::other(e)))?;
        crate::durable::write_atomically(&path, &bytes).map_err(io)?;
        let plan = Arc::new(entry.plan);
        self.memory.insert(key, (now, plan.clone()));
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::plan::PlanSource;

    fn key(source: &str) -> ScanKey {
        ScanKey {
            layers: vec!["sha256:aa".into()],
            config_digest: None,
            platform: "linux/amd64".into(),
            source: source.into(),
        }
    }

    #[test]
    fn plans_are_kept_per_key_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::new(PlanSource::TrivyReport, vec![]);
        {
            let cache = ScanCache::open(dir.path(), Duration::from_secs(3600)).unwrap();
            assert!(cache.get(&key("a")).is_none());
            cache.put(key("a"), plan.clone()).unwrap();
            assert_eq!(*cache.get(&key("a")).unwrap(), plan);
            assert!(cache.get(&key("b")).is_none());
        }
        let cache = ScanCache::open(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(*cache.get(&key("a")).unwrap(), plan);
        let mut other = key("a");
        other.platform = "linux/arm64".into();
        assert!(cache.get(&other).is_none());
    }

    #[test]
    fn expired_or_foreign_entries_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::new(PlanSource::TrivyReport, vec![]);
        let cache = ScanCache::open(dir.path(), Duration::ZERO).unwrap();
        cache.put(key("a"), plan.clone()).unwrap();
        assert!(cache.get(&key("a")).is_none(), "a zero TTL keeps nothing");
        // A file under another key's name is ignored.
        let cache = ScanCache::open(dir.path(), Duration::from_secs(3600)).unwrap();
        cache.put(key("a"), plan).unwrap();
        std::fs::copy(cache.path(&key("a")), cache.path(&key("b"))).unwrap();
        let fresh = ScanCache::open(dir.path(), Duration::from_secs(3600)).unwrap();
        assert!(fresh.get(&key("b")).is_none());
        std::fs::write(fresh.path(&key("a")), b"garbage").unwrap();
        let fresh = ScanCache::open(dir.path(), Duration::from_secs(3600)).unwrap();
        assert!(fresh.get(&key("a")).is_none());
    }
}
