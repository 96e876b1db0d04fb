//! `patchpull store check`: reads a store on disk and lists what is wrong with it. Every
//! blob must hash to its name; every manifest type file must have its blob; every record of
//! a patched image (`patched/`) and of a referrer (`patched/referrers/`) must name a stored
//! manifest whose config, layers and child manifests are stored too (patchpull made them;
//! nobody else has them); and nothing may be left over from an interrupted write (temp files
//! under `tmp/`, `patched/` and `patch-tmp/`). Read-only: it repairs nothing. Run it on a
//! store no server is writing to, or expect downloads in progress to show up as leftovers.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::layout;
use crate::distribution::reference::Hasher;
use crate::distribution::Digest;

/// One thing wrong, with the path relative to the store's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    pub blobs: usize,
    pub manifests: usize,
    pub records: usize,
    pub problems: Vec<Problem>,
}

/// Checks the store at `root`. An unreadable root is one problem, not an error.
pub fn check(root: &Path) -> Report {
    let mut report = Report::default();
    let problem = |report: &mut Report, path: &Path, what: String| {
        let rel = path.strip_prefix(root).unwrap_or(path);
        report.problems.push(Problem {
            path: rel.display().to_string(),
            what,
        });
    };
    if !root.is_dir() {
        problem(
            &mut report,
            root,
            "the store directory does not exist".into(),
        );
        return report;
    }
    for alg in ["sha256", "sha512"] {
        for path in files_in(&layout::blobs_dir(root).join(alg)) {
            report.blobs += 1;
            let Some(digest) = digest_named(alg, &path) else {
                problem(&mut report, &path, "not named by a digest".into());
                continue;
            };
            match hash_file(&path, &digest) {
                Ok(actual) if actual == digest => {}
                Ok(actual) => problem(
                    &mut report,
                    &path,
                    format!("corrupt blob: its content hashes to {actual}"),
                ),
                Err(e) => problem(&mut report, &path, format!("cannot read: {e}")),
            }
        }
        for path in files_in(&root.join("manifests").join(alg)) {
            report.manifests += 1;
            match digest_named(alg, &path) {
                None => problem(&mut report, &path, "not named by a digest".into()),
                Some(d) if !layout::blob_path(root, &d).is_file() => problem(
                    &mut report,
                    &path,
                    format!("dangling manifest entry: the blob of {d} is missing"),
                ),
                Some(_) => {}
            }
        }
    }
    let patched = root.join("patched");
    for dir in dirs_in(&patched) {
        for path in files_in(&dir) {
            if is_temp_name(&path) {
                problem(&mut report, &path, "leftover temp file".into());
                continue;
            }
            report.records += 1;
            let first = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_owned));
            match first.and_then(|l| l.parse::<Digest>().ok()) {
                None => problem(
                    &mut report,
                    &path,
                    "record does not start with a digest".into(),
                ),
                Some(d) => {
                    for missing in missing_content(root, &d) {
                        problem(
                            &mut report,
                            &path,
                            format!("dangling index entry: {missing}"),
                        );
                    }
                }
            }
        }
    }
    for dir in [layout::tmp_dir(root), root.join("patch-tmp")] {
        for path in entries_in(&dir) {
            problem(
                &mut report,
                &path,
                "leftover from an interrupted write".into(),
            );
        }
    }
    report
}

/// What of manifest `digest` and the content it refers to is not stored.
fn missing_content(root: &Path, digest: &Digest) -> Vec<String> {
    let mut missing = Vec::new();
    let mut todo = vec![digest.clone()];
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Ok(bytes) = std::fs::read(layout::blob_path(root, &d)) else {
            missing.push(format!("manifest {d} is not stored"));
            continue;
        };
        if !layout::manifest_type_path(root, &d).is_file() {
            missing.push(format!("manifest {d} has no media type file"));
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            missing.push(format!("manifest {d} is not JSON"));
            continue;
        };
        let descriptors = json["config"]
            .as_object()
            .map(|c| vec![c])
            .unwrap_or_default()
            .into_iter()
            .chain(
                json["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l.as_object()),
            );
        for desc in descriptors {
            let Some(child) = desc.get("digest").and_then(|v| v.as_str()) else {
                continue;
            };
            match child.parse::<Digest>() {
                Ok(c) if layout::blob_path(root, &c).is_file() => {}
                Ok(c) => missing.push(format!("blob {c} of manifest {d} is not stored")),
                Err(_) => missing.push(format!("manifest {d} names an invalid digest")),
            }
        }
        for child in json["manifests"].as_array().into_iter().flatten() {
            if let Some(c) = child["digest"].as_str().and_then(|c| c.parse().ok()) {
                todo.push(c);
            }
        }
    }
    missing
}

fn digest_named(alg: &str, path: &Path) -> Option<Digest> {
    let hex = path.file_name()?.to_str()?;
    format!("{alg}:{hex}").parse().ok()
}

fn hash_file(path: &Path, digest: &Digest) -> std::io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = Hasher::new(digest.algorithm());
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// `write_atomically`'s temp files are `.tmp-<pid>-<n>` (`<name>.tmp<pid>` before).
fn is_temp_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.starts_with(".tmp-")
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.starts_with("tmp"))
}

fn entries_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    entries_in(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

fn dirs_in(dir: &Path) -> Vec<PathBuf> {
    entries_in(dir).into_iter().filter(|p| p.is_dir()).collect()
}
