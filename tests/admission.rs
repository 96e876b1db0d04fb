//! The Kubernetes mutating webhook as the API server meets it: `AdmissionReview` fixtures
//! in the API server's own shapes posted to `/admission/v1/mutate` of a running patchpull
//! (plain HTTP, and HTTPS as the API server requires), the exact answers, and the JSON
//! Patch applied with an independent RFC 6902 implementation (`json-patch`) to see the Pod
//! the cluster would run. The last test makes a real patched image through the proxy and
//! shows a digest-pinned Pod pointed at it, and the rewritten names pulled back.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;
#[allow(dead_code)]
#[path = "pipeline/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use patchpull::config::Config;
use patchpull::server::Server;
use serde_json::{json, Value};

const REGISTRY: &str = "patchpull.example.internal:5000";
const PATH: &str = "/admission/v1/mutate";
/// The original digest the store knows a patched image for (behind `docker.io`).
const KNOWN: &str = "sha256:1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f";
const PATCHED: &str = "sha256:9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a";

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// patchpull with `[admission]` on, three upstreams (never contacted here) and a store
/// that knows one patched image, the way a finished patch job leaves it on disk.
struct Webhook {
    server: Option<Server>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Webhook {
    async fn start(server_extra: &str) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let known = store
            .join("patched/docker.io")
            .join(KNOWN.trim_start_matches("sha256:"));
        std::fs::create_dir_all(known.parent().unwrap()).unwrap();
        std::fs::write(
            &known,
            format!("{PATCHED}\napplication/vnd.oci.image.index.v1+json\n"),
        )
        .unwrap();
        let toml = format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            shutdown_grace = "1s"
            {server_extra}
            [storage]
            path = {store:?}
            [scan]
            cache_dir = {cache:?}
            [log]
            level = "warn"
            [admission]
            registry = "{REGISTRY}"
            [[upstream]]
            name = "docker.io"
            url = "https://registry-1.docker.io"
            default = true
            [[upstream]]
            name = "ghcr.io"
            url = "https://ghcr.io"
            [[upstream]]
            name = "internal"
            url = "https://registry.corp.example:8443"
            "#,
            store = store.display().to_string(),
            cache = dir.path().join("scan-cache").display().to_string(),
        );
        let config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let server = Server::start(config).await.unwrap();
        Webhook {
            server: Some(server),
            client: common::client(),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("{}{PATH}", self.server.as_ref().unwrap().url())
    }

    /// POSTs `body` as the API server does; asserts a 200 JSON answer and returns it.
    async fn post(&self, client: &reqwest::Client, body: Vec<u8>) -> Value {
        let resp = client
            .post(self.url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(common::header(&resp, "content-type"), "application/json");
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
    }

    async fn review(&self, body: Vec<u8>) -> Value {
        self.post(&self.client, body).await
    }

    async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// The patch a response carries, decoded; `None` when it has none.
fn decoded_patch(response: &Value) -> Option<Value> {
    let b64 = response["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("patch is not standard base64 ({e}): {b64}"));
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// Applies `patch` to the review's object with `json-patch`, checks that nothing but the
/// patched paths changed, and returns the Pod as the cluster would store it.
fn apply(review: &Value, patch: &Value) -> Value {
    let original = review["request"]["object"].clone();
    let mut pod = original.clone();
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut pod, &ops).unwrap_or_else(|e| panic!("{e}: {patch}"));
    let mut reverted = pod.clone();
    for op in patch.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        assert_eq!(pod.pointer(path), Some(&op["value"]), "{path}");
        *reverted.pointer_mut(path).unwrap() = original.pointer(path).unwrap().clone();
    }
    assert_eq!(reverted, original, "the patch changed more than images");
    pod
}

/// The images of one container list of `pod`.
fn images(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["image"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn allowed(uid: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
           "response": {"uid": uid, "allowed": true}})
}

/// Checks the whole answer to fixture `name`: allowed, the request's uid, and exactly the
/// patch in `<name>.patch.json` (or none). Returns the Pod after the patch.
async fn check_fixture(webhook: &Webhook, name: &str, patch: Option<&str>) -> Value {
    let review = fixture_json(&format!("{name}.json"));
    let answer = webhook.review(fixture(&format!("{name}.json"))).await;
    let uid = review["request"]["uid"].as_str().unwrap();
    let mut expected = allowed(uid);
    let Some(patch_file) = patch else {
        assert_eq!(answer, expected, "{name}");
        return review["request"]["object"].clone();
    };
    let patch = decoded_patch(&answer).unwrap_or_else(|| panic!("{name}: no patch in {answer}"));
    assert_eq!(patch, fixture_json(patch_file), "{name}");
    expected["response"]["patchType"] = json!("JSONPatch");
    expected["response"]["patch"] = answer["response"]["patch"].clone();
    assert_eq!(answer, expected, "{name}");
    apply(&review, &patch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_exact_patches_that_point_them_at_the_patched_name_space() {
    let webhook = Webhook::start("").await;

    let pod = check_fixture(&webhook, "pod-create", Some("pod-create.patch.json")).await;
    assert_eq!(
        images(&pod, "containers"),
        [
            "patchpull.example.internal:5000/docker.io/library/nginx:1.25",
            "patchpull.example.internal:5000/internal/shop/api:2.3.1",
            "quay.io/prometheus/node-exporter:v1.8.2",
            "patchpull.example.internal:5000/docker.io/bitnami/redis:7.2",
        ]
    );
    assert_eq!(
        images(&pod, "initContainers"),
        [
            "patchpull.example.internal:5000/ghcr.io/shop/migrations:v42",
            "patchpull.example.internal:5000/docker.io/library/busybox",
        ]
    );

    // `kubectl debug`: only the new ephemeral container is rewritten; the running
    // containers keep their images (a change would restart them, and the subresource
    // refuses it), already rewritten ones stay as they are.
    let pod = check_fixture(
        &webhook,
        "pod-debug-ephemeral",
        Some("pod-debug-ephemeral.patch.json"),
    )
    .await;
    assert_eq!(
        images(&pod, "ephemeralContainers"),
        [
            "docker.io/library/alpine:3.20",
            "patchpull.example.internal:5000/docker.io/library/busybox:1.36",
        ]
    );
    assert_eq!(
        images(&pod, "containers"),
        [
            "patchpull.example.internal:5000/docker.io/library/nginx:1.25",
            "registry.corp.example:8443/shop/api:2.3.1",
        ]
    );

    // Digests: the known one (with or without a tag) goes to its patched digest; an
    // unknown one, and the known digest behind another upstream, stay as they are.
    let pod = check_fixture(&webhook, "pod-digests", Some("pod-digests.patch.json")).await;
    assert_eq!(
        images(&pod, "containers"),
        [
            format!("{REGISTRY}/docker.io/library/nginx@{PATCHED}"),
            format!("{REGISTRY}/docker.io/library/nginx:1.25@{PATCHED}"),
            "bitnami/redis@sha256:2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e"
                .to_owned(),
            format!("quay.io/prometheus/node-exporter@{KNOWN}"),
        ]
    );
    assert_eq!(
        images(&pod, "initContainers"),
        [format!("ghcr.io/shop/migrations@{KNOWN}")]
    );

    // Registries no upstream names, and the excluded kube-system: no patch at all.
    check_fixture(&webhook, "pod-unconfigured", None).await;
    check_fixture(&webhook, "pod-kube-system", None).await;

    // The answer is stable: the API server may call again (reinvocationPolicy IfNeeded),
    // and a Pod already rewritten is left alone.
    let mut again = fixture_json("pod-create.json");
    let answer = webhook.review(fixture("pod-create.json")).await;
    again["request"]["object"] = apply(&again, &decoded_patch(&answer).unwrap());
    let second = webhook.review(serde_json::to_vec(&again).unwrap()).await;
    assert_eq!(second, allowed(again["request"]["uid"].as_str().unwrap()));

    webhook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reviews_are_allowed_unchanged_and_never_fail() {
    let webhook = Webhook::start("").await;
    for (name, uid) in [
        ("malformed-not-json.json", ""),
        (
            "malformed-wrong-kind.json",
            "7a8b9c0d-1e2f-4a3b-8c4d-e5f6a7b8c9d0",
        ),
        ("malformed-missing-uid.json", ""),
    ] {
        let answer = webhook.review(fixture(name)).await;
        let warnings = answer["response"]["warnings"].clone();
        let first = warnings[0].as_str().unwrap_or_default();
        assert!(
            first.starts_with("patchpull: malformed AdmissionReview"),
            "{name}: {answer}"
        );
        let mut expected = allowed(uid);
        expected["response"]["warnings"] = warnings;
        assert_eq!(answer, expected, "{name}");
    }

    // A body above the limit still gets an "allowed" review (the API server then applies
    // its failure policy to the uid mismatch, not to a refusal from patchpull).
    let answer = webhook.review(vec![b' '; (3 << 20) + 1]).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // Only POST.
    let resp = webhook.client.get(webhook.url()).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(common::header(&resp, "allow"), "POST");
    webhook.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_over_tls_as_the_api_server_requires() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    // The name the API server dials: the webhook Service's DNS name (and loopback here).
    let leaf = CertificateParams::new(vec![
        "patchpull.patchpull.svc".to_owned(),
        "127.0.0.1".to_owned(),
    ])
    .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();

    let webhook = Webhook::start(&format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert.display().to_string(),
        key.display().to_string()
    ))
    .await;
    assert!(webhook.url().starts_with("https://"), "{}", webhook.url());
    let root = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    // The API server speaks HTTP/2 to webhooks when offered, HTTP/1.1 otherwise.
    for http1_only in [false, true] {
        let mut builder = reqwest::Client::builder().add_root_certificate(root.clone());
        if http1_only {
            builder = builder.http1_only();
        }
        let client = builder.build().unwrap();
        let answer = webhook.post(&client, fixture("pod-create.json")).await;
        assert_eq!(
            decoded_patch(&answer).unwrap(),
            fixture_json("pod-create.patch.json")
        );
        assert_eq!(answer["response"]["allowed"], true);
    }
    webhook.shutdown().await;
}

/// A real patch, made by pulling the tag through the proxy: before it exists a
/// digest-pinned Pod is left alone (and the review starts no patch); after, the Pod points
/// at the patched digest, and both rewritten names pull the patched image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_pinned_pod_follows_a_patch_made_through_the_proxy() {
    use support::*;
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = image::libfoo_image(common::images::Format::Oci, false);
        env.push("test/app", "1", &original).await;
        let proxy = env
            .proxy("local", WAIT, |c| {
                // `[admission]` follows the `[patch]` lines in the harness's TOML.
                c.patch.push("[admission]".into());
                c.patch.push(format!("registry = {REGISTRY:?}"));
            })
            .await;
        let upstream = env.registry.url();
        let upstream = upstream.trim_start_matches("http://");
        let template = String::from_utf8(fixture("pod-digests.json")).unwrap();
        let mut review: Value = serde_json::from_str(&template).unwrap();
        review["request"]["object"]["spec"]["containers"] = json!([
            {"name": "pinned", "image": format!("{upstream}/test/app@{}", original.manifest.digest)},
            {"name": "tagged", "image": format!("{upstream}/test/app:1")},
        ]);
        review["request"]["object"]["spec"]["initContainers"] = json!([]);
        let post = |review: &Value| {
            let body = serde_json::to_vec(review).unwrap();
            let url = format!("{}{PATH}", proxy.url());
            let client = proxy.client.clone();
            async move {
                let resp = client.post(url).body(body).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).unwrap()
            }
        };

        let before = post(&review).await;
        let pod = apply(&review, &decoded_patch(&before).unwrap());
        assert_eq!(
            images(&pod, "containers"),
            [
                format!("{upstream}/test/app@{}", original.manifest.digest),
                format!("{REGISTRY}/local/test/app:1"),
            ]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, "patchpull_patch_jobs_active"), 0.0, "{text}");
        assert_eq!(metric(&text, &jobs("patched")), 0.0, "{text}");

        // A pull of the tag makes the patch.
        let patched = get(&proxy, "local/test/app", "1").await.ok().to_owned();
        assert_ne!(patched, original.manifest.digest);

        let after = post(&review).await;
        let pod = apply(&review, &decoded_patch(&after).unwrap());
        let rewritten = images(&pod, "containers");
        assert_eq!(
            rewritten,
            [
                format!("{REGISTRY}/local/test/app@{patched}"),
                format!("{REGISTRY}/local/test/app:1"),
            ]
        );
        // What a runtime pulling from the patched name space gets: the patched image.
        for image in &rewritten {
            let name = image.strip_prefix(&format!("{REGISTRY}/")).unwrap();
            let (name, reference) = name
                .split_once('@')
                .or_else(|| name.rsplit_once(':'))
                .unwrap();
            let answer = get(&proxy, name, reference).await;
            assert_eq!(answer.ok(), patched, "{image}");
            assert_eq!(
                common::images::sha256_digest(&answer.bytes),
                patched,
                "{image}"
            );
        }
        proxy.shutdown().await;
    })
    .await;
}

/// `admission.signed_digests_only`: a digest-pinned Pod is pinned to the patched digest by
/// a patchpull that signs (`[signing] key`), and left alone by one that does not, though
/// both have the patch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_digests_only_pins_to_a_signed_patch_only() {
    use support::*;
    if !tools(false) || !common::require_tools(&["openssl"]) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = image::libfoo_image(common::images::Format::Oci, false);
        env.push("test/app", "1", &original).await;
        let key = env.path("operator.key");
        generate_p256_key(&key);
        let start = |signing: Vec<String>| {
            env.proxy("local", WAIT, move |c| {
                c.patch.push("[admission]".into());
                c.patch.push(format!("registry = {REGISTRY:?}"));
                c.patch.push("signed_digests_only = true".into());
                c.signing = signing;
            })
        };
        let signing = start(vec![format!("key = {:?}", key.display().to_string())]).await;
        let unsigned = start(Vec::new()).await;
        let upstream = env.registry.url();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let pinned = format!("{upstream}/test/app@{}", original.manifest.digest);
        let mut review: Value = serde_json::from_slice(&fixture("pod-digests.json")).unwrap();
        review["request"]["object"]["spec"]["containers"] =
            json!([{"name": "pinned", "image": pinned}]);
        review["request"]["object"]["spec"]["initContainers"] = json!([]);
        for (proxy, signs) in [(&signing, true), (&unsigned, false)] {
            let patched = get(proxy, "local/test/app", "1").await.ok().to_owned();
            assert_ne!(patched, original.manifest.digest);
            let resp = proxy
                .client
                .post(format!("{}{PATH}", proxy.url()))
                .body(serde_json::to_vec(&review).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let answer: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            let pod = match decoded_patch(&answer) {
                Some(patch) => apply(&review, &patch),
                None => review["request"]["object"].clone(),
            };
            let expected = if signs {
                format!("{REGISTRY}/local/test/app@{patched}")
            } else {
                pinned.clone()
            };
            assert_eq!(images(&pod, "containers"), [expected], "signs: {signs}");
        }
        signing.shutdown().await;
        unsigned.shutdown().await;
    })
    .await;
}
