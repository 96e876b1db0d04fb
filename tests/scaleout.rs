//! Stateless replicas (issue 16), with real pieces on loopback: a `docker-registry` as the
//! upstream, another as the backing store, a real `redis-server`, `patchpull serve`
//! replicas on their own ports and directories, and a round-robin TCP balancer in front.
#![allow(clippy::unwrap_used)]

mod common;
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;
#[allow(dead_code)]
#[path = "pipeline/support.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::images::{self, Format};
use common::registry::{free_port, Registry};
use common::serve::ServeProcess;
use support::metric;

#[path = "scaleout/bench.rs"]
mod bench;

const NAME: &str = "team/app";

/// A `redis-server` of the test's own, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("pp-redis-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Redis {
                    child,
                    port,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A round-robin TCP balancer on loopback: each connection goes to the next backend.
struct Balancer {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(backends: Vec<String>) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let backend =
                    backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()].clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Balancer { url, task }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The TOML of one replica over `backing` (a registry URL) and `redis` (a URL or none),
/// signing with `signing_key` when there is one.
fn replica_toml(
    env: &support::Env,
    store: &Path,
    backing: &str,
    redis: Option<&str>,
    patch: &[&str],
) -> String {
    let mut config = common::ProxyConfig::new(&[("local", &env.registry.url(), true)]);
    config.log_level = "info".into();
    config.patch = patch.iter().map(|l| l.to_string()).collect();
    let key = env.path("keys").join("signing.key");
    if key.exists() {
        config.signing = vec![format!("key = {:?}", key.display().to_string())];
    }
    config.scan = env.scan_lines(&env.repo.url());
    config.storage_extra = vec![
        "backend = \"registry\"".into(),
        "[storage.registry]".into(),
        format!("url = {backing:?}"),
        "repository_prefix = \"patchpull/cache\"".into(),
    ];
    let mut toml = config.to_toml(store);
    toml.push_str("\n[coordination]\nlease_ttl = \"3s\"\npoll_interval = \"100ms\"\n");
    if let Some(url) = redis {
        toml.push_str(&format!("redis_url = {url:?}\n"));
    }
    toml
}

/// A listener that accepts connections and never answers: an archive that hangs, to keep a
/// patch job running.
async fn hanging_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/debian", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

fn start_replica(
    env: &support::Env,
    name: &str,
    backing: &str,
    redis: Option<&str>,
    patch: &[&str],
) -> ServeProcess {
    let dir = env.path(name);
    let toml = replica_toml(env, &dir.join("store"), backing, redis, patch);
    ServeProcess::start(&dir, &toml, &[], &[])
}

async fn get_manifest(base: &str, reference: &str) -> (u16, String) {
    let resp = common::client()
        .get(format!("{base}/v2/{NAME}/manifests/{reference}"))
        .header("accept", images::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, common::header(&resp, "docker-content-digest"))
}

async fn metrics_of(serve: &ServeProcess) -> String {
    common::client()
        .get(format!("{}/metrics", serve.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn sum_metric(replicas: &[&ServeProcess], series: &str) -> f64 {
    let mut total = 0.0;
    for r in replicas {
        total += metric(&metrics_of(r).await, series);
    }
    total
}

const RUNS: &str = "patchpull_patch_runs_total";

/// Writes the replicas' signing key (an EC P-256 PKCS#8 key made by openssl) where
/// [`replica_toml`] looks for it.
fn signing_key(env: &support::Env) {
    let keys = env.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("signing.key");
    support::generate_p256_key(&key);
}

/// The body of `GET /v2/<NAME>/<path>`, which must answer 200.
async fn get_bytes(base: &str, path: &str) -> Vec<u8> {
    let resp = common::client()
        .get(format!("{base}/v2/{NAME}/{path}"))
        .header("accept", images::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    resp.bytes().await.unwrap().to_vec()
}

/// `(artifactType, digest)` of the referrers of `subject` a replica lists, sorted.
async fn referrer_types(base: &str, subject: &str) -> Vec<(String, String)> {
    let resp = common::client()
        .get(format!("{base}/v2/{NAME}/referrers/{subject}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let mut found: Vec<(String, String)> = doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["artifactType"].as_str().unwrap_or_default().to_owned(),
                m["digest"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_patch_a_cold_tag_once_and_a_fresh_replica_serves_it_without_a_job() {
    if !support::tools(false) || !common::require_tools(&["redis-server"]) {
        return;
    }
    support::within(240, async {
        let env = support::Env::new().await;
        env.push(NAME, "1", &image::libfoo_image(Format::Oci, false))
            .await;
        signing_key(&env);
        let backing = Registry::start().await;
        let redis = Redis::start();
        let replicas: Vec<ServeProcess> = (0..3)
            .map(|i| {
                start_replica(
                    &env,
                    &format!("replica-{i}"),
                    &backing.url(),
                    Some(&redis.url()),
                    support::WAIT,
                )
            })
            .collect();
        let balancer =
            Balancer::start(replicas.iter().map(|r| r.authority().to_owned()).collect()).await;
        let (_, original) = get_manifest(&replicas[0].url, "1-original").await;

        // 60 concurrent pulls of the cold tag, spread over the replicas.
        let pulls: Vec<_> = (0..60)
            .map(|_| {
                let url = balancer.url.clone();
                tokio::spawn(async move { get_manifest(&url, "1").await })
            })
            .collect();
        let mut digests = std::collections::BTreeSet::new();
        for pull in pulls {
            let (status, digest) = pull.await.unwrap();
            assert_eq!(status, 200);
            digests.insert(digest);
        }
        assert_eq!(
            digests.len(),
            1,
            "one patched digest for every client: {digests:?}"
        );
        let patched = digests.into_iter().next().unwrap();
        assert_ne!(patched, original, "the patched image, not the original");
        let all: Vec<&ServeProcess> = replicas.iter().collect();
        assert_eq!(
            sum_metric(&all, RUNS).await,
            1.0,
            "exactly one patch job across the replicas"
        );
        let waited = sum_metric(&all, "patchpull_coordinated_jobs_total{how=\"Waited\"}").await;
        assert_eq!(waited, 2.0, "the two other replicas read the result");

        // A client that resolved the tag through one replica fetches the rest from others:
        // a replica with an empty disk, asked first for the patched manifest by digest and
        // its blobs (no tag pull), serves them, every byte as made.
        let blobs_first = start_replica(&env, "replica-blobs", &backing.url(), None, support::WAIT);
        let manifest = get_bytes(&replicas[0].url, &format!("manifests/{patched}")).await;
        assert_eq!(
            get_bytes(&blobs_first.url, &format!("manifests/{patched}")).await,
            manifest
        );
        let doc: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let mut digests = vec![doc["config"]["digest"].as_str().unwrap().to_owned()];
        for layer in doc["layers"].as_array().unwrap() {
            digests.push(layer["digest"].as_str().unwrap().to_owned());
        }
        for digest in &digests {
            let bytes = get_bytes(&blobs_first.url, &format!("blobs/{digest}")).await;
            assert_eq!(&images::sha256_digest(&bytes), digest);
        }
        assert_eq!(metric(&metrics_of(&blobs_first).await, RUNS), 0.0);

        let made = referrer_types(&replicas[0].url, &patched).await;
        assert_eq!(made.len(), 3, "VEX, signature, attestation: {made:?}");

        // A fourth replica with an empty disk (and no Redis) serves it without a job, and
        // the whole image reads back through it. Asked first for the referrers and the
        // cosign signature of the patched image (as `cosign verify` would, through
        // whichever replica the balancer picks), before any pull of the tag.
        let fresh = start_replica(&env, "replica-fresh", &backing.url(), None, support::WAIT);
        assert_eq!(referrer_types(&fresh.url, &patched).await, made);
        let signature = &made
            .iter()
            .find(|(t, _)| t == "application/vnd.dev.cosign.artifact.sig.v1+json")
            .unwrap()
            .1;
        let sig_tag = format!("{}.sig", patched.replace(':', "-"));
        assert_eq!(
            get_manifest(&fresh.url, &sig_tag).await,
            (200, signature.clone()),
            "the .sig tag names the signature the referrers list"
        );
        assert_eq!(get_manifest(&fresh.url, "1").await, (200, patched.clone()));
        assert_eq!(metric(&metrics_of(&fresh).await, RUNS), 0.0);
        let layout = env.path("layout");
        support::skopeo_copy(
            &format!("docker://{}/{NAME}:1", fresh.authority()),
            &layout,
            "patched",
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert!(index["manifests"].as_array().unwrap().len() == 1);
        drop(redis);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_patches_uncoordinated_and_backing_registry_down_serves_the_original() {
    if !support::tools(false) {
        return;
    }
    support::within(180, async {
        let env = support::Env::new().await;
        env.push(NAME, "1", &image::libfoo_image(Format::Oci, false))
            .await;
        let backing = Registry::start().await;
        let dead = format!("redis://127.0.0.1:{}/0", free_port());
        let replica = start_replica(&env, "no-redis", &backing.url(), Some(&dead), support::WAIT);
        let (_, original) = get_manifest(&replica.url, "1-original").await;
        let (status, patched) = get_manifest(&replica.url, "1").await;
        assert_eq!(status, 200);
        assert_ne!(patched, original, "patched without coordination");
        let text = metrics_of(&replica).await;
        assert_eq!(
            metric(
                &text,
                "patchpull_coordinated_jobs_total{how=\"Uncoordinated\"}"
            ),
            1.0,
            "{text}"
        );
        assert_eq!(metric(&text, "patchpull_coordination_redis_up"), 0.0);
        assert!(
            replica.log().contains("Redis does not answer"),
            "{}",
            replica.log()
        );

        // The backing registry is gone: the original (fail-open), or 503 under fail_closed;
        // never a patched answer the fleet could not read back.
        let gone = format!("http://127.0.0.1:{}", free_port());
        let open = start_replica(&env, "backing-down", &gone, None, support::WAIT);
        assert_eq!(get_manifest(&open.url, "1").await, (200, original.clone()));
        let text = metrics_of(&open).await;
        assert_eq!(
            metric(&text, "patchpull_backing_registry_up"),
            0.0,
            "{text}"
        );
        let closed = start_replica(
            &env,
            "backing-down-closed",
            &gone,
            None,
            &["mode = \"fail_closed\"", "wait_timeout = \"60s\""],
        );
        assert_eq!(get_manifest(&closed.url, "1").await.0, 503);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_it_holds_the_job_loses_it_to_another() {
    if !support::tools(false) || !common::require_tools(&["redis-server"]) {
        return;
    }
    support::within(180, async {
        let env = support::Env::new().await;
        env.push(NAME, "1", &image::libfoo_image(Format::Oci, false))
            .await;
        let backing = Registry::start().await;
        let redis = Redis::start();
        // The holder reads a package archive that never answers: its job hangs.
        let (hanging, _hang) = hanging_server().await;
        let holder = {
            let dir = env.path("holder");
            let toml = replica_toml(
                &env,
                &dir.join("store"),
                &backing.url(),
                Some(&redis.url()),
                &["mode = \"wait\"", "wait_timeout = \"1s\""],
            )
            .replace(&env.repo.url(), &hanging);
            ServeProcess::start(&dir, &toml, &[], &[])
        };
        let (_, original) = get_manifest(&holder.url, "1-original").await;
        assert_eq!(
            get_manifest(&holder.url, "1").await,
            (200, original.clone())
        );
        let claimed = "patchpull_coordinated_jobs_total{how=\"Claimed\"}";
        assert_eq!(metric(&metrics_of(&holder).await, claimed), 1.0);

        // Another replica waits for the holder; the holder dies (SIGKILL).
        let other = start_replica(
            &env,
            "other",
            &backing.url(),
            Some(&redis.url()),
            support::WAIT,
        );
        let pull = {
            let url = other.url.clone();
            tokio::spawn(async move { get_manifest(&url, "1").await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(holder);
        let started = std::time::Instant::now();
        let (status, patched) = pull.await.unwrap();
        assert_eq!(status, 200);
        assert_ne!(patched, original, "the other replica finished the job");
        // Within the lease time (3 s) plus the patch itself.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        let text = metrics_of(&other).await;
        assert_eq!(
            metric(&text, "patchpull_coordinated_jobs_total{how=\"TakenOver\"}"),
            1.0,
            "{text}"
        );
        assert_eq!(metric(&text, RUNS), 1.0);

        // The shared store names exactly that image, readable by a replica with an empty
        // disk (every byte verified on the way in): no dangling or partial entry.
        let fresh = start_replica(&env, "fresh", &backing.url(), None, support::WAIT);
        assert_eq!(get_manifest(&fresh.url, "1").await, (200, patched));
        assert_eq!(metric(&metrics_of(&fresh).await, RUNS), 0.0);
        support::skopeo_copy(
            &format!("docker://{}/{NAME}:1", fresh.authority()),
            &env.path("layout"),
            "patched",
        );
    })
    .await;
}
