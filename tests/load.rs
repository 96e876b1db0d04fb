//! The load suite: 1,000 clients at once pull one cold tag with patching on, then 1,000 pull
//! one cold blob, through `patchpull serve` (a child process, so its peak RSS is its own)
//! with a real registry upstream behind a counting relay. Each digest is fetched upstream
//! once, the tag is resolved once, one patch job runs, every client gets the same bytes.
//! The peak RSS of each run is printed (`load: ... peak RSS`), not asserted: the figure
//! belongs to `benches/load.sh`, which runs this test on the release build.
//!
//! `LOAD_CLIENTS` (default 1000) sets the number of clients, `LOAD_BLOB_MIB` (default 2) the
//! blob's size.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;
// Only some of the shared image helpers are used here.
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::apt::AptRepo;
use common::fault::{blob_path, Behaviour, FaultServer};
use common::images::{self, Format};
use common::registry::Registry;
use common::serve::ServeProcess;
use image::{libfoo, libfoo_image, NEW};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Room for the clients' sockets in this process.
fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// `VmHWM` of `pid` in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// Upstream requests seen more than once, by `METHOD path` (queries dropped).
fn repeated(relay: &FaultServer) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in relay.requests() {
        let key = request.split('?').next().unwrap_or_default().to_owned();
        *counts.entry(key).or_insert(0usize) += 1;
    }
    counts.retain(|key, n| *n > 1 && key != "GET /v2/");
    counts
}

fn toml(storage: &std::path::Path, upstream: &str, repo: &AptRepo) -> String {
    let archive = repo.url();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\nidle_timeout = \"180s\"\n\n\
         [storage]\npath = {:?}\n\n[log]\nlevel = \"warn\"\n\n\
         [[upstream]]\nname = \"local\"\nurl = {upstream:?}\n\n\
         [patch]\nmode = \"wait\"\nwait_timeout = \"120s\"\n\n\
         [scan]\ndebian_security_url = {archive:?}\ndebian_archive_url = {archive:?}\n\
         debian_keyring = {:?}\npoint_releases = false\nchangelogs = true\n\
         refresh_interval = \"0s\"\n",
        storage.display().to_string(),
        repo.keyring().display().to_string(),
    )
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn metrics(url: &str) -> String {
    http_client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of `series` (compared without case: label values are spelled `Patched`).
fn series(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            name.eq_ignore_ascii_case(series)
                .then(|| value.parse().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_pulls_of_a_tag_and_of_a_blob_go_upstream_once_and_patch_once() {
    let mut tools = common::apt::TOOLS.to_vec();
    tools.push(common::registry::REGISTRY_BIN);
    if !common::require_tools(&tools) {
        return;
    }
    raise_open_files();
    let n = env_number("LOAD_CLIENTS", 1000);
    let blob_mib = env_number("LOAD_BLOB_MIB", 2);
    let registry = Registry::start().await;
    let repo = AptRepo::new(&["amd64"]);
    repo.add(&libfoo(NEW, "amd64"));
    repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&registry.url(), "test/app", "1", &original).await;
    let blob = images::big_blob(blob_mib << 20, 1000);
    images::push_blob(&registry.url(), "test/big", &blob).await;

    // The tag: every client waits for the one patch job.
    let relay = FaultServer::start_in_front_of(&registry.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(
        dir.path(),
        &toml(&dir.path().join("store"), &relay.url(), &repo),
        &[],
        &[],
    );
    let client = http_client();
    let pulls: Vec<_> = (0..n)
        .map(|_| {
            let req = client
                .get(format!("{}/v2/local/test/app/manifests/1", serve.url))
                .header("Accept", images::ACCEPT_ALL);
            tokio::spawn(async move {
                let resp = req.send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let digest = common::header(&resp, "docker-content-digest");
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, digest, images::sha256_digest(&body)))
            })
        })
        .collect();
    let mut answers = BTreeSet::new();
    for pull in pulls {
        answers.insert(pull.await.unwrap());
    }
    let text = metrics(&serve.url).await;
    let tag_rss = peak_rss_mib(serve.pid());
    assert_eq!(
        answers.len(),
        1,
        "every client the same answer: {answers:?}"
    );
    let (status, digest, body_digest) = answers.into_iter().next().unwrap().unwrap();
    assert_eq!((status, &digest), (200, &body_digest));
    assert_ne!(digest, original.manifest.digest, "the patched image");
    assert_eq!(
        series(&text, "patchpull_patch_jobs_total{outcome=\"patched\"}"),
        1.0,
        "one patch job:\n{text}"
    );
    assert_eq!(
        repeated(&relay),
        BTreeMap::new(),
        "each upstream request once: {:?}",
        relay.requests()
    );
    eprintln!(
        "load: {n} cold pulls of a tag (patching on): 1 patch job, {} upstream requests, peak RSS {tag_rss:.1} MiB",
        relay.requests().len()
    );
    drop(serve);

    // The blob, cold in a fresh store, upstream slow enough that the clients overlap its
    // one download.
    let relay = FaultServer::start_in_front_of(&registry.url()).await;
    relay.add_blob(&blob);
    let path = blob_path("test/big", &blob.digest);
    relay.set(
        &path,
        Behaviour::Slow {
            chunk: 64 << 10,
            delay: Duration::from_millis(20),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(
        dir.path(),
        &toml(&dir.path().join("store"), &relay.url(), &repo),
        &[],
        &[],
    );
    let pulls: Vec<_> = (0..n)
        .map(|_| {
            let req = client.get(format!(
                "{}/v2/local/test/big/blobs/{}",
                serve.url, blob.digest
            ));
            tokio::spawn(async move {
                let resp = req.send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((status, images::sha256_digest(&body)))
            })
        })
        .collect();
    let mut answers = BTreeMap::new();
    for pull in pulls {
        *answers.entry(pull.await.unwrap()).or_insert(0usize) += 1;
    }
    let blob_rss = peak_rss_mib(serve.pid());
    assert_eq!(
        answers,
        BTreeMap::from([(Ok((200, blob.digest.clone())), n)]),
        "every client the whole blob"
    );
    assert_eq!(relay.hits("GET", &path), 1, "{:?}", relay.requests());
    assert_eq!(repeated(&relay), BTreeMap::new(), "{:?}", relay.requests());
    eprintln!(
        "load: {n} cold pulls of a {blob_mib} MiB blob: {} upstream GET, peak RSS {blob_rss:.1} MiB",
        relay.hits("GET", &path)
    );
}
