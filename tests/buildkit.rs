//! The BuildKit client against a real Docker Engine 20.10 (its built-in BuildKit reached
//! through `POST /grpc` on the Docker socket): capabilities, a Solve that adds one layer on
//! top of an image pulled from a loopback registry, the status stream, a failing step, and
//! the Engine API calls that take the result out of dockerd.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patchpull::buildkit::client::{Client, StatusEvent};
use patchpull::buildkit::engine_api;
use patchpull::buildkit::proto::control::SolveRequest;
use patchpull::buildkit::proto::ops::{
    op, CacheOpt, CacheSharingOpt, Definition, ExecOp, Input, Meta, Mount, MountType, NetMode, Op,
    Platform, SourceOp,
};
use patchpull::buildkit::transport::{BuildkitAddress, TlsFiles};
use patchpull::buildkit::BuildkitError;
use prost::Message;
use sha2::{Digest, Sha256};

use common::dockerd::Dockerd;
use common::images;
use common::registry::Registry;
use common::require_tools;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

fn amd64() -> Option<Platform> {
    Some(Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: String::new(),
    })
}

/// Marshals `op` and appends it to `def`; returns its digest, how later ops name it.
fn push_op(def: &mut Definition, op: &Op) -> String {
    let bytes = op.encode_to_vec();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    def.def.push(bytes);
    digest
}

/// source -> `/bin/sh -c script` (root mount 0 -> output 0, network none, a cache mount on
/// /cache) -> terminal op.
fn graph(image: &str, script: &str) -> Definition {
    let mut def = Definition::default();
    let source = push_op(
        &mut def,
        &Op {
            kind: Some(op::Kind::Source(SourceOp {
                identifier: format!("docker-image://{image}"),
                attrs: BTreeMap::new(),
            })),
            platform: amd64(),
            ..Default::default()
        },
    );
    let exec = push_op(
        &mut def,
        &Op {
            inputs: vec![Input {
                digest: source,
                index: 0,
            }],
            kind: Some(op::Kind::Exec(ExecOp {
                meta: Some(Meta {
                    args: vec!["/bin/sh".into(), "-c".into(), script.into()],
                    env: vec!["PATH=/bin".into()],
                    cwd: "/".into(),
                    ..Default::default()
                }),
                mounts: vec![
                    Mount {
                        input: 0,
                        dest: "/".into(),
                        output: 0,
                        ..Default::default()
                    },
                    Mount {
                        input: -1,
                        dest: "/cache".into(),
                        output: -1,
                        mount_type: MountType::Cache as i32,
                        cache_opt: Some(CacheOpt {
                            id: "patchpull-test-cache".into(),
                            sharing: CacheSharingOpt::Locked as i32,
                        }),
                        ..Default::default()
                    },
                ],
                network: NetMode::None as i32,
                security: 0,
            })),
            platform: amd64(),
            ..Default::default()
        },
    );
    push_op(
        &mut def,
        &Op {
            inputs: vec![Input {
                digest: exec,
                index: 0,
            }],
            ..Default::default()
        },
    );
    def
}

fn moby_export(definition: Definition, name: &str) -> SolveRequest {
    SolveRequest {
        definition: Some(definition),
        exporter: "moby".into(),
        exporter_attrs: BTreeMap::from([("name".to_string(), name.to_string())]),
        ..Default::default()
    }
}

fn recorder() -> (Arc<Mutex<Vec<StatusEvent>>>, impl FnMut(StatusEvent) + Send) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |e| sink.lock().unwrap().push(e))
}

/// Every file of a tar, by path.
fn tar_files(data: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        files.insert(path, content);
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solve_through_dockerd_adds_one_layer_and_reports_progress() {
    if !require_tools(&["docker-registry"]) {
        return;
    }
    let Some(busybox) = images::runnable_busybox() else {
        eprintln!("SKIP: no static /bin/busybox");
        return;
    };
    let registry = Registry::start().await;
    images::push_image(&registry.url(), "busybox", "1", &busybox).await;
    let Some(dockerd) = Dockerd::start(&[registry.authority()]).await else {
        return;
    };

    let address: BuildkitAddress = dockerd.address().parse().unwrap();
    let client = match Client::connect(&address, &TlsFiles::default(), CONNECT_TIMEOUT).await {
        Ok(client) => client,
        Err(e) => panic!("connect to {address}: {e}\n{}", dockerd.log()),
    };
    let caps = client.detected_capabilities().clone();
    assert!(
        caps.platforms.iter().any(|p| p == "linux/amd64"),
        "{caps:?}"
    );
    // dockerd 20.10 vendors BuildKit 0.8: no Info, no MergeOp/DiffOp.
    assert_eq!(caps.version, None, "{caps:?}");
    assert!(!caps.diff_merge, "{caps:?}");
    assert_eq!(client.capabilities().await.unwrap(), caps);

    let image = format!(
        "{}/busybox:1@{}",
        registry.authority(),
        busybox.manifest.digest
    );
    let script = "busybox mkdir -p /etc && echo patched > /etc/marker \
                  && echo stamp > /cache/stamp && echo marker written";
    let (events, sink) = recorder();
    let response = match client
        .solve(
            moby_export(graph(&image, script), "patchpull-test/x:1"),
            sink,
        )
        .await
    {
        Ok(response) => response,
        Err(e) => panic!("solve: {e}\n{}", dockerd.log()),
    };
    assert!(
        response
            .exporter_response
            .get("containerimage.digest")
            .is_some_and(|d| d.starts_with("sha256:")),
        "{:?}",
        response.exporter_response
    );

    let events = events.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(e,
            StatusEvent::Vertex { name, completed: true, error: None, .. } if name.contains("echo patched"))),
        "no completed exec vertex in {events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(e,
            StatusEvent::Log { line, vertex_name } if line == "marker written" && vertex_name.contains("echo patched"))),
        "the exec's output is missing from {events:#?}"
    );

    // The image in dockerd: the base layer untouched plus exactly one new layer.
    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("x.tar");
    engine_api::save_image(dockerd.socket(), "patchpull-test/x:1", &saved)
        .await
        .unwrap();
    let files = tar_files(&std::fs::read(&saved).unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let layers: Vec<&str> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), 2, "{manifest}");
    let base_config: serde_json::Value = serde_json::from_slice(&busybox.config.data).unwrap();
    let base_diff_id = base_config["rootfs"]["diff_ids"][0].as_str().unwrap();
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&files[layers[0]]))),
        base_diff_id,
        "the base layer changed"
    );
    let new_layer = tar_files(&files[layers[1]]);
    assert_eq!(
        new_layer.get("etc/marker").map(Vec::as_slice),
        Some(&b"patched\n"[..]),
        "new layer holds {:?}",
        new_layer.keys().collect::<Vec<_>>()
    );
    assert!(
        !new_layer.keys().any(|p| p.contains("stamp")),
        "the cache mount leaked into the layer: {:?}",
        new_layer.keys().collect::<Vec<_>>()
    );

    // A failing step: the error says how it failed and shows the step's output.
    let (_events, sink) = recorder();
    let err = client
        .solve(
            moby_export(
                graph(&image, "echo about to fail; exit 3"),
                "patchpull-test/fail:1",
            ),
            sink,
        )
        .await
        .err();
    match &err {
        Some(e @ BuildkitError::SolveFailed { log_tail, .. }) => {
            let text = e.to_string();
            eprintln!("failing solve reports: {text}");
            assert!(text.contains("exit code: 3"), "{text}");
            assert!(
                text.contains("exit 3"),
                "the failing step is not named: {text}"
            );
            assert_eq!(log_tail, &["about to fail"], "{text}");
        }
        other => panic!("expected SolveFailed, got {other:?}"),
    }

    engine_api::remove_image(dockerd.socket(), "patchpull-test/x:1")
        .await
        .unwrap();
    let gone_tar = work.path().join("gone.tar");
    let gone = engine_api::save_image(dockerd.socket(), "patchpull-test/x:1", &gone_tar).await;
    match gone {
        Err(BuildkitError::EngineApi {
            status, message, ..
        }) => {
            // dockerd 20.10 says "reference does not exist" for a name it just untagged.
            assert_eq!(status, 404, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("the removed image is still there: {other:?}"),
    }
    assert!(!gone_tar.exists(), "a failed save leaves no file behind");
}

#[tokio::test]
async fn connecting_to_a_missing_docker_socket_is_a_clear_error() {
    let address: BuildkitAddress = "docker-unix:///nonexistent/patchpull/docker.sock"
        .parse()
        .unwrap();
    let err = Client::connect(&address, &TlsFiles::default(), Duration::from_secs(5))
        .await
        .err();
    match err {
        Some(e @ BuildkitError::Connect { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("docker-unix:///nonexistent/patchpull/docker.sock")
                    && text.contains("No such file or directory"),
                "{text}"
            );
        }
        other => panic!("expected a Connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn engine_api_on_a_missing_socket_names_it() {
    let err = engine_api::remove_image(
        std::path::Path::new("/nonexistent/patchpull/docker.sock"),
        "x:1",
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("/nonexistent/patchpull/docker.sock"), "{err}");
}

/// A standalone buildkitd pushes its result to `patch.buildkit.export_registry`; patchpull
/// reads the one new layer back from a real registry, every digest checked. (No standalone
/// buildkitd runs here: the image it would push is pushed by the test.)
#[tokio::test]
async fn a_result_pushed_to_the_export_registry_is_read_back_verified() {
    use images::{Entry, Format};
    use patchpull::patch::buildkit::registry_export::{ExportRegistry, REPOSITORY};
    if !require_tools(&[common::registry::REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let (base, base_id) = images::layer(
        Format::Oci,
        &[
            Entry::Dir("etc"),
            Entry::File("etc/os-release", b"ID=debian\n", 0o644),
        ],
    );
    let (patch, patch_id) = images::layer(
        Format::Oci,
        &[
            Entry::Dir("usr"),
            Entry::Dir("usr/lib"),
            Entry::File("usr/lib/libz.so.1", b"patched library", 0o644),
            Entry::File("var/log/dpkg.log", b"clock stamps", 0o644),
        ],
    );
    let image = images::assemble(
        Format::Oci,
        "amd64",
        vec![
            (base.clone(), base_id.clone()),
            (patch.clone(), patch_id.clone()),
        ],
        &[],
    );
    images::push_image(&registry.url(), REPOSITORY, "t1", &image).await;
    let export = ExportRegistry {
        host: registry.authority(),
        insecure: true,
    };
    let attrs = export.exporter_attrs("t1");
    assert_eq!(
        attrs["name"],
        format!("{}/{REPOSITORY}:t1", registry.authority())
    );
    assert_eq!(attrs["push"], "true");
    assert_eq!(attrs["registry.insecure"], "true");

    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let base_digest = base_id.parse().unwrap();
    let layer = export
        .patch_layer(
            &client,
            "t1",
            std::slice::from_ref(&base_digest),
            dir.path(),
        )
        .await
        .unwrap();
    let gz = std::fs::read(&layer.path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(entry.path().unwrap().to_string_lossy().into_owned(), data);
    }
    assert_eq!(files["usr/lib/libz.so.1"], b"patched library");
    assert!(
        !files.contains_key("var/log/dpkg.log"),
        "{:?}",
        files.keys()
    );

    // Another base: refused; no such tag: the registry's answer.
    let other: patchpull::distribution::Digest = patch_id.parse().unwrap();
    let error = export
        .patch_layer(&client, "t1", &[other], dir.path())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("does not keep the original layers"),
        "{error}"
    );
    let error = export
        .patch_layer(&client, "missing", &[base_digest], dir.path())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
}
