//! CVE ids for updates, from the new version's `changelog.Debian.gz`, or a native package's
//! `changelog.gz` (Debian policy 12.7) when it is a Debian changelog.
//!
//! The changelog is in the updated package's own `.deb`, unless its doc directory (or its
//! changelog file) is a symlink into another package's, as `-data`, `-common` and `-dev`
//! packages often do: then the linked package of the same source version is fetched too,
//! and so on, since links chain (Ubuntu's mount -> libmount1 -> libblkid1), up to
//! [`MAX_LINKS`] and never in a circle. Failing that, the source package's doc directory in
//! the same `.deb` is tried.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use super::cache::DiskCache;
use super::changelog;
use super::deb::{read_docs, DebDocs, DebLimits};
use super::fetch::Fetcher;
use super::index::{DebFile, IndexEntry};
use super::matching::Found;
use super::repo::{blocking, lock, LoadedSuite};
use super::{BuiltinConfig, BuiltinError, ChangelogStatus, CveFix};

/// Changelogs fetched concurrently; small, since each is a download plus decompression.
const CONCURRENT_DEBS: usize = 4;

/// Doc directory links followed from an updated package; Ubuntu chains two.
const MAX_LINKS: usize = 8;

/// Reads changelogs for one scan.
pub struct ChangelogReader<'s> {
    config: &'s BuiltinConfig,
    fetcher: &'s Fetcher,
    cache: &'s DiskCache,
    suites: &'s [LoadedSuite],
    native_architecture: &'s str,
    docs: Mutex<HashMap<String, Arc<DebDocs>>>,
    /// One fetch per `.deb` at a time: a package and the one its doc directory links to
    /// are often read concurrently.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicUsize,
}

impl<'s> ChangelogReader<'s> {
    pub fn new(
        config: &'s BuiltinConfig,
        fetcher: &'s Fetcher,
        cache: &'s DiskCache,
        suites: &'s [LoadedSuite],
        native_architecture: &'s str,
    ) -> ChangelogReader<'s> {
        ChangelogReader {
            config,
            fetcher,
            cache,
            suites,
            native_architecture,
            docs: Mutex::default(),
            fetching: Mutex::default(),
            downloads: AtomicUsize::new(0),
        }
    }

    /// The CVE fixes of every update, in `found`'s order.
    pub async fn read_all(&self, found: &[Found]) -> Vec<(Vec<CveFix>, ChangelogStatus)> {
        // The futures are made first: a stream mapping `&Found` through a closure would make
        // the returned future's `Send` higher-ranked, which `tokio::spawn` cannot prove.
        let reads: Vec<_> = found.iter().map(|f| self.read(f)).collect();
        futures_util::stream::iter(reads)
            .buffered(CONCURRENT_DEBS)
            .collect()
            .await
    }

    async fn read(&self, found: &Found) -> (Vec<CveFix>, ChangelogStatus) {
        let max = self.config.limits.max_changelog_bytes;
        let source = found.entry.source_name();
        let parsed = self.changelog_of(found).await.and_then(|c| {
            if c.native {
                changelog::parse_native_gz(&c.gz, max, source)
                    .map_err(|reason| format!("usr/share/doc/{}/changelog.gz: {reason}", c.dir))
            } else {
                changelog::parse_gz(&c.gz, max)
            }
        });
        match parsed {
            Ok(entries) => {
                let fixes = changelog::fixed_between(
                    &entries,
                    found.installed_source_version(),
                    found.entry.source_version(),
                );
                let fixes = fixes
                    .into_iter()
                    .map(|(id, fixed_version)| CveFix { id, fixed_version })
                    .collect();
                (fixes, ChangelogStatus::Read)
            }
            Err(reason) => (Vec::new(), ChangelogStatus::Unavailable { reason }),
        }
    }

    /// The changelog that covers `found`'s new version.
    async fn changelog_of(&self, found: &Found) -> Result<Changelog, String> {
        let entry = &found.entry;
        let mut docs = self.docs_of(found.suite, entry).await?;
        let mut dir = entry.name.to_string();
        let mut visited = vec![dir.clone()];
        loop {
            let next = match look_up(&docs, &dir) {
                Lookup::Changelog(changelog) => return Ok(changelog),
                Lookup::Link(next) => next,
                Lookup::Nothing if visited.len() == 1 => {
                    // The source package's directory in the same .deb.
                    return match look_up(&docs, entry.source_name()) {
                        Lookup::Changelog(changelog) => Ok(changelog),
                        _ => Err(format!(
                            "the .deb has no usr/share/doc/{}/changelog.Debian.gz",
                            entry.name
                        )),
                    };
                }
                Lookup::Nothing => {
                    return Err(format!(
                        "{dir}'s .deb has no usr/share/doc/{dir}/changelog.Debian.gz"
                    ))
                }
            };
            if visited.contains(&next) {
                return Err(format!(
                    "the usr/share/doc links go round in a circle: {} -> {next}",
                    visited.join(" -> ")
                ));
            }
            if visited.len() > MAX_LINKS {
                return Err(format!(
                    "more than {MAX_LINKS} usr/share/doc links: {} -> {next}",
                    visited.join(" -> ")
                ));
            }
            visited.push(next.clone());
            if !matches!(look_up(&docs, &next), Lookup::Nothing) {
                dir = next;
                continue;
            }
            let other = self.sibling(found, &next).ok_or_else(|| {
                format!(
                    "usr/share/doc/{dir} links to {next}, and no package {next} {} is in the suites",
                    entry.source_version()
                )
            })?;
            docs = self.docs_of(found.suite, &other).await?;
            dir = next;
        }
    }

    /// The package `name` built from the same source version as `found`, in the suite
    /// `found` came from, for the image's architecture or `all` (an arch-`all` package's
    /// docs often link to an arch-specific sibling's).
    fn sibling(&self, found: &Found, name: &str) -> Option<IndexEntry> {
        self.suites[found.suite]
            .indexes
            .iter()
            .flat_map(|index| index.lookup(name))
            .find(|e| {
                (*e.architecture == *self.native_architecture || &*e.architecture == "all")
                    && e.source_name() == found.entry.source_name()
                    && e.source_version() == found.entry.source_version()
            })
            .cloned()
    }

    /// The docs of `entry`'s `.deb`: from this scan, the disk cache, or the pool.
    async fn docs_of(&self, suite: usize, entry: &IndexEntry) -> Result<Arc<DebDocs>, String> {
        let deb = entry.deb.as_ref().ok_or_else(|| {
            format!(
                "the index gives no Filename, Size and SHA256 for {}",
                entry.name
            )
        })?;
        let sha256 = deb.sha256_hex();
        let gate = lock(&self.fetching)
            .entry(sha256.clone())
            .or_default()
            .clone();
        let _one_fetch = gate.lock().await;
        if let Some(docs) = lock(&self.docs).get(&sha256) {
            return Ok(docs.clone());
        }
        let path = self.cache.debdocs_path(&sha256);
        let cached = blocking(move || Ok(std::fs::read(&path).ok()))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|json| serde_json::from_slice::<DebDocs>(&json).ok());
        let docs = match cached {
            Some(docs) => docs,
            None => self.download_docs(suite, deb).await?,
        };
        let docs = Arc::new(docs);
        lock(&self.docs).insert(sha256, docs.clone());
        Ok(docs)
    }

    async fn download_docs(&self, suite: usize, deb: &DebFile) -> Result<DebDocs, String> {
        let limits = &self.config.limits;
        if deb.size > limits.max_deb_bytes {
            return Err(format!(
                "{} is {} bytes, more than the limit of {}",
                deb.filename, deb.size, limits.max_deb_bytes
            ));
        }
        if self.downloads.fetch_add(1, Ordering::Relaxed) >= limits.max_changelog_downloads {
            return Err(format!(
                "more than {} .deb downloads in one scan",
                limits.max_changelog_downloads
            ));
        }
        let url = self.suites[suite].suite.pool_url(&deb.filename);
        let temp = self.cache.temp_file().map_err(|e| e.to_string())?;
        let (sha, size) = self
            .fetcher
            .download(&url, &temp, limits.max_deb_bytes)
            .await
            .map_err(|f| format!("fetching {url}: {}", f.reason))?;
        if sha != deb.sha256_hex() || size != deb.size {
            return Err(format!(
                "{url} does not match its index: expected {} bytes with SHA256 {}, got {size} bytes with SHA256 {sha}",
                deb.size,
                deb.sha256_hex()
            ));
        }
        let deb_limits = DebLimits {
            max_unpacked: limits.max_deb_unpacked_bytes,
            max_changelog: limits.max_changelog_bytes,
        };
        let (cache, target, deb_target, filename) = (
            self.cache.clone(),
            self.cache.debdocs_path(&deb.sha256_hex()),
            self.cache.deb_path(&deb.sha256_hex()),
            deb.filename.clone(),
        );
        blocking(move || {
            let mut file = temp
                .file()
                .try_clone()
                .map_err(|e| cache_io(temp.path(), &e))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| cache_io(temp.path(), &e))?;
            let docs = match read_docs(&mut file, deb_limits) {
                Ok(docs) => docs,
                Err(reason) => return Ok(Err(format!("{filename}: {reason}"))),
            };
            let json = serde_json::to_vec(&docs).map_err(|e| BuiltinError::Cache {
                path: target.clone(),
                reason: e.to_string(),
            })?;
            cache.write_file(&target, &json)?;
            // Verified against the index above; the patch engine installs this very file.
            temp.commit(&deb_target)?;
            Ok(Ok(docs))
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// A changelog found for an update.
#[derive(Debug, PartialEq, Eq)]
struct Changelog {
    /// The doc directory it is in.
    dir: String,
    /// `changelog.gz` rather than `changelog.Debian.gz`.
    native: bool,
    gz: Vec<u8>,
}

/// What one `.deb` has for one doc directory.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Changelog(Changelog),
    /// The doc directory, or its changelog, links to this one.
    Link(String),
    Nothing,
}

/// The changelog or link `docs` has for `dir`, in the order dpkg-based tools read them: a
/// `changelog.Debian.gz` (or a link of it or of the directory) comes before a `changelog.gz`,
/// which beside one is the upstream changelog.
fn look_up(docs: &DebDocs, dir: &str) -> Lookup {
    let changelog = |gz: &Vec<u8>, native| {
        Lookup::Changelog(Changelog {
            dir: dir.to_owned(),
            native,
            gz: gz.clone(),
        })
    };
    let link = |key: String, of_changelog_file| {
        docs.links
            .get(&key)
            .map(|target| link_dir(target, of_changelog_file))
            .filter(|target| !target.is_empty() && target != dir)
    };
    if let Some(gz) = docs.changelogs.get(dir) {
        return changelog(gz, false);
    }
    let debian_link =
        link(dir.to_owned(), false).or_else(|| link(format!("{dir}/changelog.Debian.gz"), true));
    if let Some(next) = debian_link {
        return Lookup::Link(next);
    }
    if let Some(gz) = docs.native_changelogs.get(dir) {
        return changelog(gz, true);
    }
    link(format!("{dir}/changelog.gz"), true).map_or(Lookup::Nothing, Lookup::Link)
}

fn cache_io(path: &std::path::Path, error: &std::io::Error) -> BuiltinError {
    super::cache::cache_error(path, "reading", error)
}

/// The doc directory a symlink points at: `foo`, `../foo`, `/usr/share/doc/foo` -> `foo`;
/// for a link of the changelog file itself, the target's parent directory.
fn link_dir(target: &str, of_changelog_file: bool) -> String {
    let target = target.trim_end_matches('/');
    let target = if of_changelog_file {
        target.rsplit_once('/').map_or("", |(dir, _)| dir)
    } else {
        target
    };
    target.rsplit('/').next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::{link_dir, look_up, Changelog, DebDocs, Lookup};

    #[test]
    fn a_debian_changelog_or_its_link_comes_before_a_changelog_gz() {
        let mut docs = DebDocs::default();
        let native = |dir: &str, gz: &[u8]| {
            Lookup::Changelog(Changelog {
                dir: dir.to_owned(),
                native: true,
                gz: gz.to_vec(),
            })
        };
        // A -dev package: its changelog.Debian.gz links to the library's, and it has the
        // upstream changelog.gz.
        docs.links.insert(
            "libfoo-dev/changelog.Debian.gz".to_owned(),
            "../libfoo1/changelog.Debian.gz".to_owned(),
        );
        docs.native_changelogs
            .insert("libfoo-dev".to_owned(), b"upstream".to_vec());
        assert_eq!(
            look_up(&docs, "libfoo-dev"),
            Lookup::Link("libfoo1".to_owned())
        );
        docs.native_changelogs
            .insert("apt".to_owned(), b"native".to_vec());
        assert_eq!(look_up(&docs, "apt"), native("apt", b"native"));
        docs.links.insert(
            "apt-utils/changelog.gz".to_owned(),
            "../apt/changelog.gz".to_owned(),
        );
        assert_eq!(look_up(&docs, "apt-utils"), Lookup::Link("apt".to_owned()));
        // A link to itself is no link.
        docs.links.insert("self".to_owned(), "self".to_owned());
        assert_eq!(look_up(&docs, "self"), Lookup::Nothing);
        docs.changelogs
            .insert("self".to_owned(), b"debian".to_vec());
        assert!(matches!(
            look_up(&docs, "self"),
            Lookup::Changelog(Changelog { native: false, .. })
        ));
    }

    #[test]
    fn link_targets_name_a_doc_directory() {
        assert_eq!(link_dir("hello", false), "hello");
        assert_eq!(link_dir("../doc/hello/", false), "hello");
        assert_eq!(link_dir("/usr/share/doc/hello", false), "hello");
        assert_eq!(link_dir("../hello/changelog.Debian.gz", true), "hello");
        assert_eq!(link_dir("changelog.Debian.gz", true), "");
    }
}
