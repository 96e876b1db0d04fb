//! The measurements of `benches/scaleout.sh` (issue 16, "Measure"): one replica over the
//! local store, one over the registry backend and three over it, each topology with its own
//! stores, backing registry and Redis, all behind the loopback balancer, against the same
//! upstream. Prints one `scaleout:` line per figure; bounded in count (wrk runs of a fixed
//! duration, a fixed number of blob GETs) and in time (`within`). `#[ignore]`d: the script
//! runs it against the release binary (`SCALEOUT_SERVE_BIN`).

use std::time::{Duration, Instant};

use super::*;

const BIG: &str = "team/big";
const BLOB_MIB: usize = 64;
const BLOB_GETS: usize = 6;

/// A knob from the environment, or its default.
fn knob(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Milliseconds from wrk's `1.23ms` / `456.00us` / `1.02s`.
fn wrk_ms(value: &str) -> f64 {
    let value = value.trim();
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (value, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// `(requests per second, p99 in ms)` of one wrk run on `url`.
fn wrk(url: &str) -> (f64, f64) {
    let threads = knob("SCALEOUT_WRK_THREADS", "2");
    let connections = knob("SCALEOUT_WRK_CONNS", "32");
    let duration = knob("SCALEOUT_WRK_DURATION", "10s");
    let out = support::tool(
        "wrk",
        &[
            "-t",
            &threads,
            "-c",
            &connections,
            "-d",
            &duration,
            "--latency",
            "-H",
            &format!("Accept: {}", images::ACCEPT_ALL),
            url,
        ],
    );
    let mut rate = f64::NAN;
    let mut p99 = f64::NAN;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rate = v.parse().unwrap_or(f64::NAN),
            ["99%", v] => p99 = wrk_ms(v),
            _ => {}
        }
    }
    assert!(
        !out.contains("Non-2xx"),
        "wrk got error answers from {url}:\n{out}"
    );
    (rate, p99)
}

/// One topology: `replicas` replicas (local store when `backing` is none) behind a balancer.
struct Topology {
    name: &'static str,
    replicas: Vec<ServeProcess>,
    balancer: Balancer,
    _backing: Option<Registry>,
    _redis: Option<Redis>,
}

async fn topology(
    env: &support::Env,
    name: &'static str,
    replicas: usize,
    shared: bool,
) -> Topology {
    let backing = if shared {
        Some(Registry::start().await)
    } else {
        None
    };
    let redis = shared.then(Redis::start);
    let processes: Vec<ServeProcess> = (0..replicas)
        .map(|i| {
            let dir = env.path(&format!("{name}-{i}"));
            let toml = match &backing {
                Some(b) => replica_toml(
                    env,
                    &dir.join("store"),
                    &b.url(),
                    redis.as_ref().map(|r| r.url()).as_deref(),
                    // Below the default server.idle_timeout (2m), which the config requires.
                    &["mode = \"wait\"", "wait_timeout = \"110s\""],
                ),
                None => {
                    let mut config =
                        common::ProxyConfig::new(&[("local", &env.registry.url(), true)]);
                    config.log_level = "warn".into();
                    config.patch = vec!["mode = \"wait\"".into(), "wait_timeout = \"110s\"".into()];
                    config.scan = env.scan_lines(&env.repo.url());
                    config.to_toml(&dir.join("store"))
                }
            }
            .replace("level = \"info\"", "level = \"warn\"");
            ServeProcess::start(&dir, &toml, &[], &[])
        })
        .collect();
    let balancer =
        Balancer::start(processes.iter().map(|r| r.authority().to_owned()).collect()).await;
    Topology {
        name,
        replicas: processes,
        balancer,
        _backing: backing,
        _redis: redis,
    }
}

/// Times a full first pull (skopeo: manifest, then every blob) of the cold tag.
async fn first_pull(env: &support::Env, t: &Topology) -> f64 {
    let source = format!(
        "docker://{}/{NAME}:1",
        t.balancer.url.trim_start_matches("http://")
    );
    let layout = env.path(&format!("{}-layout", t.name));
    let started = Instant::now();
    tokio::task::spawn_blocking(move || support::skopeo_copy(&source, &layout, "patched"))
        .await
        .unwrap();
    started.elapsed().as_secs_f64() * 1000.0
}

/// MiB/s of `BLOB_GETS` GETs of the cached big blob, each on a new connection (so the
/// balancer spreads them), after one GET per replica to fill their caches.
async fn blob_throughput(t: &Topology, digest: &str) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = format!("{}/v2/{BIG}/blobs/{digest}", t.balancer.url);
    let get = |client: reqwest::Client, url: String| async move {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.bytes().await.unwrap().len()
    };
    for _ in 0..t.replicas.len() {
        get(client.clone(), url.clone()).await;
    }
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..BLOB_GETS {
        bytes += get(client.clone(), url.clone()).await;
    }
    bytes as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64()
}

async fn measure(env: &support::Env, t: &Topology, digest: &str) {
    let cold_ms = first_pull(env, t).await;
    let all: Vec<&ServeProcess> = t.replicas.iter().collect();
    let runs = sum_metric(&all, RUNS).await;
    // Every replica answers the tag once (an empty one reads the entry back) before wrk.
    for _ in 0..t.replicas.len() {
        let url = t.balancer.url.clone();
        assert_eq!(get_manifest(&url, "1").await.0, 200);
    }
    let (rate, p99) = wrk(&format!("{}/v2/{NAME}/manifests/1", t.balancer.url));
    let mibps = blob_throughput(t, digest).await;
    println!(
        "scaleout: topology={} replicas={} cold_first_pull_ms={cold_ms:.0} patch_runs={runs} manifest_tag_rps={rate:.0} manifest_tag_p99_ms={p99:.2} cached_blob_mibps={mibps:.0}",
        t.name,
        t.replicas.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: benches/scaleout.sh runs it"]
async fn bench_one_replica_against_three() {
    if !support::tools(false) || !common::require_tools(&["redis-server", "wrk"]) {
        return;
    }
    support::within(1200, async {
        let env = support::Env::new().await;
        env.push(NAME, "1", &image::libfoo_image(Format::Oci, false))
            .await;
        let big = images::big_blob(BLOB_MIB << 20, 16);
        images::push_blob(&env.registry.url(), BIG, &big).await;
        for (name, replicas, shared) in [
            ("local-1", 1, false),
            ("registry-1", 1, true),
            ("registry-3", 3, true),
        ] {
            let t = topology(&env, name, replicas, shared).await;
            measure(&env, &t, &big.digest).await;
        }
    })
    .await;
}
