//! A full disk (issue 19, defect 6), on a real 50 MiB tmpfs with a real distribution
//! registry upstream (and a slow fault server where the disk must fill mid-download): the oldest blobs are evicted to make room, a blob the disk cannot take
//! is streamed to the client whole and verified without being stored (counted, and said in
//! `/readyz` and a gauge), a disk that fills up in the middle of a download never cuts a
//! client's 200 short, and a 500 never shows the store's host path.
//!
//! Needs root (mount); without it the tests say so and pass, unless REQUIRE_TEST_TOOLS=1.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::fault::{blob_path, Behaviour, FaultServer};
use common::images::{self, Blob};
use common::registry::Registry;
use common::ProxyConfig;
use patchpull::config::Config;
use patchpull::server::Server;

const MIB: usize = 1024 * 1024;

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let root = is_root();
        if !root {
            if std::env::var("REQUIRE_TEST_TOOLS").as_deref() == Ok("1") {
                panic!("the full-disk tests need root to mount a tmpfs (REQUIRE_TEST_TOOLS=1)");
            }
            eprintln!("SKIP: the full-disk tests need root to mount a tmpfs");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("pp-tmpfs-")
            .tempdir()
            .unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes junk next to the store until the disk is full (bounded); returns its path.
    fn fill_up(&self) -> PathBuf {
        let junk = self.path().join("junk");
        let mut f = std::fs::File::create(&junk).unwrap();
        // Big pieces first, then pages, so not even a small manifest fits afterwards.
        for piece in [MIB, 4096] {
            let chunk = vec![0x5a; piece];
            for _ in 0..(100 * MIB / piece) {
                if f.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
        junk
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

async fn start(upstream: &str, store: &Path) -> Server {
    let config = ProxyConfig::new(&[("local", upstream, true)]);
    let toml = config.to_toml(store);
    Server::start(Config::from_toml_str(&toml).unwrap())
        .await
        .unwrap()
}

fn blob(seed: u64, size: usize) -> Blob {
    Blob::new(
        "application/vnd.oci.image.layer.v1.tar",
        images::deterministic_bytes(size, seed),
    )
}

/// GET and read the whole body: (status, body complete per Content-Length, body).
async fn fetch(client: &reqwest::Client, url: &str) -> (u16, bool, Vec<u8>) {
    let resp = client.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let declared = resp.content_length();
    match resp.bytes().await {
        Ok(b) => (
            status,
            declared.is_none_or(|n| n == b.len() as u64),
            b.to_vec(),
        ),
        Err(_) => (status, false, Vec::new()),
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn text(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn stored(store: &Path, b: &Blob) -> bool {
    let hex = b.digest.trim_start_matches("sha256:");
    store.join("blobs/sha256").join(hex).is_file()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_evicts_the_oldest_and_streams_what_does_not_fit() {
    let Some(disk) = Tmpfs::mount("50m") else {
        return;
    };
    if !common::require_tools(&["docker-registry"]) {
        return;
    }
    let registry = Registry::start().await;
    let (a, b, c) = (blob(1, 20 * MIB), blob(2, 20 * MIB), blob(3, 20 * MIB));
    let huge = blob(5, 60 * MIB);
    for x in [&a, &b, &c, &huge] {
        images::push_blob(&registry.url(), "test/big", x).await;
    }
    let image = images::assemble(
        images::Format::Oci,
        "amd64",
        vec![images::layer(
            images::Format::Oci,
            &[images::Entry::File("f", b"x", 0o644)],
        )],
        &["/bin/sh"],
    );
    images::push_image(&registry.url(), "test/small", "1", &image).await;
    let store = disk.path().join("store");
    let server = start(&registry.url(), &store).await;
    let client = common::client();
    let url = |x: &Blob| format!("{}{}", server.url(), blob_path("test/big", &x.digest));

    // A and B fit (40 of 50 MiB); C does not until the oldest, A, is evicted.
    for x in [&a, &b, &c] {
        let (status, complete, body) = fetch(&client, &url(x)).await;
        assert_eq!((status, complete), (200, true));
        assert!(body == x.data, "wrong bytes for {}", x.digest);
    }
    assert!(
        !stored(&store, &a),
        "the oldest blob should have been evicted"
    );
    assert!(stored(&store, &b) && stored(&store, &c));
    let metrics = text(&client, &format!("{}/metrics", server.url())).await.1;
    assert!(
        metric(&metrics, "patchpull_store_evictions_total") >= 1.0,
        "{metrics}"
    );

    // A blob larger than the disk: streamed whole and verified, not cut, nothing evicted
    // for it, and the store says it is full.
    let (status, complete, body) = fetch(&client, &url(&huge)).await;
    assert_eq!(
        (status, complete),
        (200, true),
        "a full store must not cut a 200"
    );
    assert!(body == huge.data);
    assert!(!stored(&store, &huge));
    assert!(stored(&store, &b) && stored(&store, &c));
    let (ready, readyz) = text(&client, &format!("{}/readyz", server.url())).await;
    assert_eq!(ready, 200);
    assert!(readyz.contains("store: full"), "{readyz}");
    let metrics = text(&client, &format!("{}/metrics", server.url())).await.1;
    assert_eq!(
        metric(&metrics, "patchpull_blobs_uncached_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "patchpull_store_writable"),
        0.0,
        "{metrics}"
    );

    let junk = disk.fill_up();
    // A manifest that cannot be stored is a 500 whose body names no host path.
    let resp = client
        .get(format!("{}/v2/test/small/manifests/1", server.url()))
        .header("accept", images::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 500, "{body}");
    let root = disk.path().display().to_string();
    assert!(
        !body.contains(&root),
        "a 500 body shows the host path: {body}"
    );
    assert!(!body.contains("/tmp"), "a 500 body shows a path: {body}");

    // Room again: the next pull is stored and the store is ok.
    std::fs::remove_file(junk).unwrap();
    let (status, complete, _) = fetch(&client, &url(&a)).await;
    assert_eq!((status, complete), (200, true));
    assert!(stored(&store, &a));
    let readyz = text(&client, &format!("{}/readyz", server.url())).await.1;
    assert!(readyz.contains("store: ok"), "{readyz}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_up_mid_download_does_not_cut_the_body() {
    let Some(disk) = Tmpfs::mount("50m") else {
        return;
    };
    let a = blob(4, 16 * MIB);
    // A stalling upstream cannot be a real registry: the fault server serves the blob
    // slowly, so the disk can fill while the download runs.
    let upstream = FaultServer::start().await;
    upstream.add_blob(&a);
    upstream.set(
        &blob_path("test/big", &a.digest),
        Behaviour::Slow {
            chunk: 256 * 1024,
            delay: Duration::from_millis(25),
        },
    );
    let store = disk.path().join("store");
    let server = start(&upstream.url(), &store).await;
    let client = common::client();
    let url = format!("{}{}", server.url(), blob_path("test/big", &a.digest));
    let pull = tokio::spawn({
        let client = client.clone();
        async move { fetch(&client, &url).await }
    });
    // Once the download has written something, fill the disk.
    let tmp = store.join("tmp");
    let started = common::eventually(Duration::from_secs(20), || {
        std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > MIB as u64))
    })
    .await;
    assert!(started, "the download never started writing");
    let junk = disk.fill_up();
    let (status, complete, body) = tokio::time::timeout(Duration::from_secs(60), pull)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (status, complete),
        (200, true),
        "the disk filling up cut the 200"
    );
    assert!(body == a.data, "wrong bytes");
    assert!(!stored(&store, &a));
    let metrics = text(&client, &format!("{}/metrics", server.url())).await.1;
    assert!(
        metric(&metrics, "patchpull_blobs_uncached_total") >= 1.0,
        "{metrics}"
    );
    std::fs::remove_file(junk).unwrap();
    server.shutdown().await;
}
