//! Real clients resolving a tag through the proxy get the patched image: skopeo with the
//! path prefix, many concurrent cold pulls, containerd with the proxy as docker.io's mirror.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use tempfile::TempDir;

use crate::common::images::{self, Format};
use crate::image::{libfoo_image, NEW};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_gets_the_patched_image_for_a_tag_and_the_original_by_digest() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("test/app", "1", &original).await;
        let proxy = env.proxy("local", WAIT, |_| {}).await;
        let source =
            |reference: &str| format!("docker://{}/local/test/app{reference}", proxy.authority());

        let layout = env.path("layout");
        skopeo_copy(&source(":1"), &layout, "1");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let patched = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
        assert_ne!(
            patched, original.manifest.digest,
            "the tag gives a new image"
        );
        let hex = patched.strip_prefix("sha256:").unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
                .unwrap();
        assert_patched_from(&manifest, &original);
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.base.name"], "local/test/app:1",
            "{manifest}"
        );
        let root = unpack(&layout, "1", &env.path("bundle"));
        assert_eq!(
            dpkg_query(&root).trim(),
            format!("libfoo {NEW} install ok installed")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("usr/lib/x86_64-linux-gnu/libfoo.so.1")).unwrap(),
            format!("libfoo {NEW}\n")
        );

        // copa's name for the patched image is the same image.
        let raw = skopeo_raw(&source(":1-patched"));
        assert_eq!(images::sha256_digest(&raw), patched);
        // `-original` and the digest give upstream's exact bytes.
        for reference in [
            ":1-original".to_owned(),
            format!("@{}", original.manifest.digest),
        ] {
            let raw = skopeo_raw(&source(&reference));
            assert_eq!(raw, original.manifest.bytes, "{reference}");
            let answer = get(
                &proxy,
                "local/test/app",
                reference.trim_start_matches([':', '@']),
            )
            .await;
            assert_eq!(answer.ok(), original.manifest.digest, "{reference}");
            assert_eq!(answer.bytes, original.manifest.bytes, "{reference}");
        }
        // HEAD by tag answers what GET serves.
        let body = get(&proxy, "local/test/app", "1").await;
        assert_eq!(body.ok(), patched);
        let head = manifest_head(&proxy, "local/test/app", "1").await;
        assert_eq!(head.ok(), patched);
        assert_eq!(head.length, body.bytes.len().to_string());
        assert_eq!(head.media_type, images::OCI_MANIFEST);
        assert!(head.bytes.is_empty());
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("patched")), 1.0, "{text}");

        // The VEX document is a referrer of the patched manifest, naming the fixed CVE.
        let client = reqwest::Client::new();
        let base = format!("http://{}/v2/local/test/app", proxy.authority());
        let referrers: serde_json::Value = serde_json::from_slice(
            &client
                .get(format!("{base}/referrers/{patched}"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let listed = referrers["manifests"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{referrers}");
        assert_eq!(listed[0]["artifactType"], "application/vnd.openvex+json");
        let filtered: serde_json::Value = serde_json::from_slice(
            &client
                .get(format!(
                    "{base}/referrers/{patched}?artifactType=application/spdx%2Bjson"
                ))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(filtered["manifests"], serde_json::json!([]), "filtered out");
        let artifact: serde_json::Value = serde_json::from_slice(
            &client
                .get(format!(
                    "{base}/manifests/{}",
                    listed[0]["digest"].as_str().unwrap()
                ))
                .header("accept", images::OCI_MANIFEST)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(artifact["subject"]["digest"], patched.as_str());
        let vex: serde_json::Value = serde_json::from_slice(
            &client
                .get(format!(
                    "{base}/blobs/{}",
                    artifact["layers"][0]["digest"].as_str().unwrap()
                ))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let ids: Vec<&str> = vex["statements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["vulnerability"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["CVE-2024-0001"], "{vex}");
        assert_eq!(vex["statements"][0]["status"], "fixed");
        assert!(vex["statements"][0]["products"][0]["@id"]
            .as_str()
            .unwrap()
            .contains(&patched.replace(':', "%3A")));
    })
    .await;
}

async fn manifest_head(proxy: &crate::common::Proxy, name: &str, reference: &str) -> Answer {
    manifest(proxy, Method::HEAD, name, reference).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_pulls_share_one_patch_job() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("test/busy", "1", &original).await;
        // Every connection to the archive waits a second, so the job runs for seconds and
        // all fifty pulls arrive while it runs.
        let relay = SlowRelay::start(
            env.repo.server_url().trim_start_matches("http://"),
            Duration::from_secs(1),
        )
        .await;
        let archive = format!("{}/debian-security", relay.url());
        let proxy = Arc::new(env.proxy_via("local", &archive, WAIT, |_| {}).await);
        let started = Instant::now();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let answer = get(&proxy, "local/test/busy", "1").await;
                    (answer, started.elapsed())
                })
            })
            .collect();
        let mut digests = BTreeSet::new();
        let mut first_answer = Duration::MAX;
        for task in tasks {
            let (answer, at) = task.await.unwrap();
            digests.insert(answer.ok().to_owned());
            first_answer = first_answer.min(at);
        }
        assert!(
            first_answer >= Duration::from_secs(1),
            "the pulls waited for the (slow) patch: first answer after {first_answer:?}"
        );
        assert_eq!(
            digests.len(),
            1,
            "every pull got the same image: {digests:?}"
        );
        let patched = digests.into_iter().next().unwrap();
        assert_ne!(patched, original.manifest.digest, "the patched one");
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("patched")), 1.0, "{text}");
        assert_eq!(metric(&text, &jobs("failed")), 0.0, "{text}");
        assert_eq!(metric(&text, &pulls("patched")), 50.0, "{text}");
        assert_eq!(metric(&text, "patchpull_patch_jobs_active"), 0.0, "{text}");
        assert_eq!(
            metric(&text, "patchpull_patch_duration_seconds_count"),
            1.0,
            "{text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_the_patched_image_through_the_mirror() {
    if !tools(true) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("library/pp-app", "1", &original).await;
        let proxy = env.proxy("docker.io", WAIT, |_| {}).await;
        let containerd = Containerd::start().await;
        let work = TempDir::new().unwrap();
        // Nothing listens on the discard port: a fallback past the mirror fails here
        // instead of reaching for the network.
        let hosts = hosts_dir(
            work.path(),
            &format!(
                "server = \"http://127.0.0.1:9\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                proxy.authority()
            ),
        );
        let image = "docker.io/library/pp-app:1";
        containerd
            .ctr(&["images", "pull", "--plain-http", "--hosts-dir", &hosts, image])
            .await;
        let listing = containerd.ctr(&["images", "ls"]).await;
        let line = listing
            .lines()
            .find(|l| l.starts_with(image))
            .unwrap_or_else(|| panic!("{image} not listed:\n{listing}"));
        let digest = line
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap()
            .to_owned();
        assert_ne!(digest, original.manifest.digest, "{line}");
        let tag = get(&proxy, "library/pp-app", "1").await;
        assert_eq!(tag.ok(), digest, "containerd keeps what the tag resolves to");

        let manifest: serde_json::Value =
            serde_json::from_str(&containerd.ctr(&["content", "get", &digest]).await).unwrap();
        assert_patched_from(&manifest, &original);
        let content = containerd.ctr(&["content", "ls"]).await;
        for layer in manifest["layers"].as_array().unwrap() {
            let layer = layer["digest"].as_str().unwrap();
            assert!(content.contains(layer), "missing {layer} in:\n{content}");
        }
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("patched")), 1.0, "{text}");
    })
    .await;
}
