//! The crash suite: `patchpull serve` killed with SIGKILL at seeded random points of blob
//! fills, patch jobs (with maintainer scripts, so the unpack cache builds a root) and the
//! index writes that end them; restarted on the same store; then `patchpull store check`
//! finds nothing wrong, no unpack-cache temporary survives, and the next pull gives the
//! right digest (the blob's own, and the patched image of an uncrashed run).
//!
//! A kill point is a count of progress seen from outside: bytes the client received (blob
//! fills), or distinct paths that appeared in the store (patch jobs). The test waits on
//! that condition by polling, never on a clock. `CRASH_SEED` (default 19) and
//! `CRASH_ROUNDS` (default 20) choose the points; a failure names its seed, round
//! and point, so it reruns the same.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;
// Only some of the shared image helpers are used here.
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::apt::{AptRepo, DebSpec};
use common::images::{self, Blob, Format};
use common::registry::Registry;
use common::serve::ServeProcess;
use image::{base_files, dpkg_files, Installed, NEW, OLD};

const BLOB_SIZE: usize = 24 * 1024 * 1024;

/// splitmix64: the same points for the same seed on every machine.
struct Points(u64);

impl Points {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `1..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        1 + self.next() % max.max(1)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `name` at `version` with a postinst, so a patch runs it over an unpacked root.
fn scripted(name: &str, version: &str) -> DebSpec {
    DebSpec::new(name, version, "amd64")
        .file(
            &format!("usr/share/{name}/version"),
            version.as_bytes(),
            0o644,
        )
        .script(
            "postinst",
            &format!("#!/bin/sh\nset -e\necho \"$@\" > /etc/{name}-postinst\n"),
        )
}

/// An upstream with `test/app:1` (greet at OLD, a shell) and a large blob in `test/big`, and
/// an archive with greet at NEW.
struct Fixture {
    registry: Registry,
    repo: AptRepo,
    blob: Blob,
}

impl Fixture {
    async fn new() -> Fixture {
        let registry = Registry::start().await;
        let repo = AptRepo::new(&["amd64"]);
        repo.add(&scripted("greet", NEW));
        repo.publish();
        let old = scripted("greet", OLD);
        let installed = [Installed {
            spec: &old,
            modified_conffiles: Vec::new(),
        }];
        let image = image::image(
            Format::Oci,
            "amd64",
            &[base_files(true), dpkg_files(&installed)],
        );
        images::push_image(&registry.url(), "test/app", "1", &image).await;
        let blob = images::big_blob(BLOB_SIZE, 19);
        images::push_blob(&registry.url(), "test/big", &blob).await;
        Fixture {
            registry,
            repo,
            blob,
        }
    }

    fn toml(&self, storage: &Path) -> String {
        let archive = self.repo.url();
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\nidle_timeout = \"180s\"\n\n\
             [storage]\npath = {:?}\n\n[log]\nlevel = \"info\"\n\n\
             [[upstream]]\nname = \"local\"\nurl = {:?}\n\n\
             [patch]\nmode = \"wait\"\nwait_timeout = \"120s\"\n\n\
             [scan]\ndebian_security_url = {archive:?}\ndebian_archive_url = {archive:?}\n\
             debian_keyring = {:?}\npoint_releases = false\nchangelogs = true\n\
             refresh_interval = \"0s\"\n",
            storage.display().to_string(),
            self.registry.url(),
            self.repo.keyring().display().to_string(),
        )
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// `GET` of the tag, waiting for its patch: the digest served.
async fn pull_tag(url: &str) -> Result<String, String> {
    let resp = client()
        .get(format!("{url}/v2/local/test/app/manifests/1"))
        .header("Accept", images::ACCEPT_ALL)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let digest = common::header(&resp, "docker-content-digest");
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    assert_eq!(
        digest,
        images::sha256_digest(&body),
        "the digest of the body"
    );
    Ok(digest)
}

fn blob_url(url: &str, blob: &Blob) -> String {
    format!("{url}/v2/local/test/big/blobs/{}", blob.digest)
}

/// Every path under `root` (relative), recursively; what cannot be read is skipped (the
/// server renames and removes as this walks).
fn paths_under(root: &Path, out: &mut HashSet<PathBuf>) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(rel) = path.strip_prefix(root) {
                out.insert(rel.to_path_buf());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            }
        }
    }
}

/// What [`patch_until`] saw.
struct Watched {
    /// Distinct paths that appeared in the store.
    appeared: u64,
    /// The pull answered before the kill.
    finished: bool,
    /// What it answered, when it finished without a kill.
    digest: Option<String>,
}

/// Pulls the tag while watching the store; kills the server (SIGKILL, its whole process
/// group) once `kill_at` distinct paths have appeared in it, or else after the answer.
async fn patch_until(serve: ServeProcess, storage: &Path, kill_at: Option<u64>) -> Watched {
    let url = serve.url.clone();
    let pull = tokio::spawn(async move { pull_tag(&url).await });
    let mut seen = HashSet::new();
    paths_under(storage, &mut seen);
    let at_start = seen.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        paths_under(storage, &mut seen);
        let appeared = seen.len() as u64 - at_start;
        if kill_at.is_some_and(|k| appeared >= k) {
            let finished = pull.is_finished();
            drop(serve);
            pull.abort();
            return Watched {
                appeared,
                finished,
                digest: None,
            };
        }
        if pull.is_finished() {
            let result = pull.await.unwrap();
            let digest = result.unwrap_or_else(|e| panic!("the pull failed: {e}\n{}", serve.log()));
            // The job's last writes (the scratch directory's removal) may follow the answer.
            serve.terminate(Duration::from_secs(30));
            paths_under(storage, &mut seen);
            return Watched {
                appeared: seen.len() as u64 - at_start,
                finished: true,
                digest: Some(digest),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the patch did not finish in 180 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Downloads the blob, killing the server once `kill_at` bytes arrived.
async fn fill_until(serve: ServeProcess, blob: &Blob, kill_at: u64) -> u64 {
    let mut resp = client()
        .get(blob_url(&serve.url, blob))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", serve.log());
    let mut received = 0u64;
    while let Ok(Some(chunk)) = resp.chunk().await {
        received += chunk.len() as u64;
        if received >= kill_at {
            break;
        }
    }
    drop(serve);
    received
}

/// How far the killed job had got, from what it left in the store.
fn phase(storage: &Path) -> &'static str {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(storage.join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let roots = names("unpacked/roots");
    if !names("patched/local/test").is_empty() || !names("patched/local").is_empty() {
        "the index entry written"
    } else if roots.iter().any(|n| !n.starts_with(".tmp-")) {
        "the root built, layers being written"
    } else if !roots.is_empty() {
        "building the unpack cache's root"
    } else if !names("unpacked/layers").is_empty() {
        "unpacking layers into the cache"
    } else {
        "before unpacking"
    }
}

/// `patchpull store check` on the config `serve` wrote in `dir`: exit code and output.
fn store_check(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .args(["store", "check", "--config"])
        .arg(dir.join("patchpull.toml"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The unpack cache's temporaries (`.tmp-…`), which a start removes when their writer is gone.
fn unpack_temporaries(storage: &Path) -> Vec<PathBuf> {
    ["layers", "roots"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(storage.join("unpacked").join(sub)).into_iter())
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.path())
        .collect()
}

/// A directory the sandbox's user may search (a root caller's scripts run as another user).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pp-crash-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_seeded_points_leaves_a_store_that_checks_clean_and_serves_the_right_digests() {
    let mut tools = common::apt::TOOLS.to_vec();
    tools.push(common::registry::REGISTRY_BIN);
    if !common::require_tools(&tools) {
        return;
    }
    let seed = env_number("CRASH_SEED", 19);
    let rounds = env_number("CRASH_ROUNDS", 20);
    let mut points = Points(seed);
    let fixture = Fixture::new().await;

    // An uncrashed patch: the digest every later pull must give, and how many paths a job
    // makes in a fresh store (the range the kill points are drawn from).
    let reference = open_dir();
    let storage = reference.path().join("store");
    let serve = ServeProcess::start(reference.path(), &fixture.toml(&storage), &[], &[]);
    let done = patch_until(serve, &storage, None).await;
    let patched = done.digest.unwrap();
    let job_paths = done.appeared;
    assert!(job_paths > 10, "{job_paths} paths");
    eprintln!("crash: seed {seed}, {rounds} rounds; a patch job makes {job_paths} paths");

    let mut summary = Vec::new();
    for round in 0..rounds {
        let dir = open_dir();
        let storage = dir.path().join("store");
        let toml = fixture.toml(&storage);
        let serve = ServeProcess::start(dir.path(), &toml, &[], &[]);
        let blob_round = round % 3 == 0;
        let what = if blob_round {
            let kill_at = points.upto(BLOB_SIZE as u64 - 1);
            let received = fill_until(serve, &fixture.blob, kill_at).await;
            format!("blob fill, killed after {received} of {BLOB_SIZE} bytes")
        } else {
            let kill_at = points.upto(job_paths);
            let watched = patch_until(serve, &storage, Some(kill_at)).await;
            let when = if watched.finished {
                "after its answer"
            } else {
                "mid-job"
            };
            format!(
                "patch job, killed at {} of {job_paths} paths ({when}, {})",
                watched.appeared,
                phase(&storage)
            )
        };
        let context = format!("seed {seed}, round {round}: {what}");

        // Restart: the start removes what the crash left; then the store checks clean.
        let serve = ServeProcess::start(dir.path(), &toml, &[], &[]);
        let (code, out) = store_check(dir.path());
        assert_eq!(code, 0, "{context}: store check after the restart:\n{out}");
        let leftovers = unpack_temporaries(&storage);
        assert!(leftovers.is_empty(), "{context}: {leftovers:?}");

        // The next pull gives the right digest, and the store still checks clean after it.
        if blob_round {
            let resp = client()
                .get(blob_url(&serve.url, &fixture.blob))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{context}");
            let body = resp.bytes().await.unwrap();
            assert_eq!(
                images::sha256_digest(&body),
                fixture.blob.digest,
                "{context}"
            );
        } else {
            let digest = pull_tag(&serve.url).await;
            assert_eq!(
                digest.as_deref(),
                Ok(patched.as_str()),
                "{context}\n{}",
                serve.log()
            );
        }
        let (code, out) = store_check_after_stop(serve, dir.path());
        assert_eq!(code, 0, "{context}: store check after the pull:\n{out}");
        eprintln!("crash: {context}: ok");
        summary.push(what);
    }
    eprintln!("crash: {} of {rounds} rounds passed", summary.len());
}

/// Stops `serve` gracefully (SIGTERM, waiting for its exit), then checks the store.
fn store_check_after_stop(serve: ServeProcess, dir: &Path) -> (i32, String) {
    serve.terminate(Duration::from_secs(30));
    store_check(dir)
}
