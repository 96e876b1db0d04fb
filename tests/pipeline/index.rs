//! Multi-platform images through the proxy when one platform cannot be patched: the
//! served index patches what it can and keeps the original of the rest, saying which
//! (`patch.partial_index`).

use serde_json::{json, Value};

use crate::common::images::{self, Format, Manifest, MultiArch};
use crate::image::*;
use crate::support::*;

const TOKEN: &str = "admin-secret";

/// An index of the standard amd64 image and an arm64 image with libfoo 1.0-1 but no
/// os-release, whose package database does not say which release it is.
fn half_patchable() -> MultiArch {
    let amd64 = libfoo_image(Format::Oci, false);
    let old = libfoo(OLD, "arm64");
    let installed = Installed {
        spec: &old,
        modified_conffiles: Vec::new(),
    };
    let arm64 = image(Format::Oci, "arm64", &[dpkg_files(&[installed])]);
    let entries: Vec<Value> = [&amd64, &arm64]
        .iter()
        .map(|c| {
            json!({
                "mediaType": c.manifest.media_type, "digest": c.manifest.digest,
                "size": c.manifest.bytes.len(),
                "platform": {"architecture": c.architecture, "os": "linux"},
            })
        })
        .collect();
    let index = Manifest::from_json(
        images::OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": images::OCI_INDEX, "manifests": entries}),
    );
    MultiArch {
        index,
        children: vec![amd64, arm64],
    }
}

fn entry<'a>(index: &'a Value, architecture: &str) -> &'a Value {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["platform"]["architecture"] == architecture)
        .unwrap_or_else(|| panic!("no {architecture} in {index}"))
}

async fn images_view(proxy: &crate::common::Proxy) -> Value {
    let bytes = reqwest::Client::new()
        .get(format!("http://{}/patchpull/v1/images", proxy.authority()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_is_patched_where_possible_and_keeps_the_original_elsewhere() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let multi = half_patchable();
        images::push_multi_arch(&env.registry.url(), "test/half", "1", &multi).await;
        let original_index: Value = serde_json::from_slice(&multi.index.bytes).unwrap();
        let admin = format!("admin_token = {TOKEN:?}");
        let patch = [WAIT, &[admin.as_str()]].concat();

        let proxy = env.proxy("local", &patch, |_| {}).await;
        let answer = get(&proxy, "local/test/half", "1").await;
        assert_ne!(
            answer.ok(),
            multi.index.digest,
            "the patchable platform is patched"
        );
        assert_eq!(answer.media_type, images::OCI_INDEX);
        let served = answer.json();
        assert_eq!(served["manifests"].as_array().unwrap().len(), 2, "{served}");

        let amd64 = entry(&served, "amd64");
        assert_ne!(
            amd64["digest"],
            multi.child("amd64").manifest.digest.as_str()
        );
        assert_eq!(
            amd64["annotations"]["io.patchpull.patched"], "true",
            "{served}"
        );
        let child = get(&proxy, "local/test/half", amd64["digest"].as_str().unwrap()).await;
        assert_patched_from(&child.json(), multi.child("amd64"));

        // The arm64 entry is the original descriptor, with why it was not patched.
        let arm64 = entry(&served, "arm64");
        let before = entry(&original_index, "arm64");
        for field in ["digest", "size", "mediaType", "platform"] {
            assert_eq!(arm64[field], before[field], "{field}: {served}");
        }
        assert_eq!(
            arm64["annotations"]["io.patchpull.patched"], "false",
            "{served}"
        );
        let reason = arm64["annotations"]["io.patchpull.reason"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains("os-release"), "{served}");
        assert!(reason.contains("release"), "{served}");
        let kept = get(
            &proxy,
            "local/test/half",
            before["digest"].as_str().unwrap(),
        )
        .await;
        assert_eq!(kept.bytes, multi.child("arm64").manifest.bytes);

        // The admin API says the same, per platform.
        let listed = images_view(&proxy).await;
        let job = &listed["images"][0];
        assert_eq!(job["status"], "patched", "{listed}");
        assert_eq!(job["partial"], true, "{listed}");
        let platforms = job["platforms"].as_array().unwrap();
        let arm64_job = platforms
            .iter()
            .find(|p| p["platform"] == "linux/arm64")
            .unwrap_or_else(|| panic!("{listed}"));
        assert_eq!(arm64_job["status"], "failed", "{listed}");
        assert!(
            arm64_job["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("os-release"),
            "{listed}"
        );
        let amd64_job = platforms
            .iter()
            .find(|p| p["platform"] == "linux/amd64")
            .unwrap_or_else(|| panic!("{listed}"));
        assert_eq!(amd64_job["status"], "patched", "{listed}");
        assert_eq!(amd64_job["patched"], amd64["digest"], "{listed}");

        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("partial")), 1.0, "{text}");
        assert_eq!(metric(&text, &jobs("failed")), 0.0, "{text}");

        // Another proxy with its own store makes the same bytes.
        let other = env.proxy("local", WAIT, |_| {}).await;
        let again = get(&other, "local/test/half", "1").await;
        assert_eq!(again.ok(), answer.digest, "deterministic");
        assert_eq!(again.bytes, answer.bytes);

        // With `partial_index = "original"`, the index is served as it was.
        let strict = [WAIT, &["partial_index = \"original\""]].concat();
        let proxy = env.proxy("local", &strict, |_| {}).await;
        let answer = get(&proxy, "local/test/half", "1").await;
        assert_eq!(answer.ok(), multi.index.digest, "the original index");
        assert_eq!(answer.bytes, multi.index.bytes);
    })
    .await;
}
