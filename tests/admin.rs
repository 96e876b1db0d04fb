//! The admin API under /patchpull/v1/: bearer token, uploaded reports, the job list,
//! pre-warming and forgetting, against a real registry.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::images::{self, Format};
use common::registry::Registry;
use common::{require_tools, Proxy};

const TOKEN: &str = "s3cret-admin-token";

async fn proxy(registry: &Registry, token: bool) -> Proxy {
    let url = registry.url();
    Proxy::start(&[("local", &url, true)], |c| {
        c.patch = vec!["mode = \"wait\"".into(), "wait_timeout = \"20s\"".into()];
        if token {
            c.patch.push(format!("admin_token = {TOKEN:?}"));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token() {
    if !require_tools(&[common::registry::REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let off = proxy(&registry, false).await;
    let r = off
        .client
        .get(format!("{}/patchpull/v1/images", off.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("patch.admin_token"));

    let on = proxy(&registry, true).await;
    for auth in [None, Some("Bearer wrong"), Some("Basic eDp5")] {
        let mut req = on.client.get(format!("{}/patchpull/v1/images", on.url()));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(!r.text().await.unwrap().contains(TOKEN));
    }
    let r = on
        .client
        .get(format!("{}/patchpull/v1/images", on.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["images"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_prewarm_list_and_forget() {
    if !require_tools(&[common::registry::REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let image = images::single(Format::Oci, "admin");
    images::push_image(&registry.url(), "team/app", "1", &image).await;
    let proxy = proxy(&registry, true).await;
    let admin = |path: &str| format!("{}/patchpull/v1/{path}", proxy.url());

    // Reports: refused unless they are reports, stored when they are.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let r = proxy
        .client
        .put(admin(&format!("reports/{digest}")))
        .bearer_auth(TOKEN)
        .body("{\"not\": \"a report\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let report = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/scan/testdata/reports/trivy_debian_bookworm.json"
    ))
    .unwrap();
    let r = proxy
        .client
        .put(admin(&format!("reports/{digest}")))
        .bearer_auth(TOKEN)
        .body(report)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = proxy
        .client
        .put(admin("reports/sha256:nope"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an invalid digest");

    // Pre-warm: the job starts without a pull and shows in the list.
    let r = proxy
        .client
        .post(admin("patch"))
        .bearer_auth(TOKEN)
        .body(serde_json::to_vec(&serde_json::json!({"image": "local/team/app:1"})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let started: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let original = started["original"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let bytes = proxy
            .client
            .get(admin("images"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let list: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let entry = list["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["original"] == original.as_str())
            .cloned();
        if let Some(e) = entry.filter(|e| e["status"] != "running") {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the pre-warmed job never finished: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A synthetic image without a package database: nothing to patch, and it says why.
    assert_eq!(listed["status"], "unchanged", "{listed}");
    assert_eq!(listed["upstream"], "local");
    assert!(listed["detail"]
        .as_str()
        .unwrap()
        .contains("package database"));

    // Forget it; a second forget finds nothing.
    let forget = |d: String| {
        proxy
            .client
            .delete(admin(&format!("images/{d}")))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(forget(original.clone()).await.unwrap().status(), 204);
    assert_eq!(forget(original).await.unwrap().status(), 404);
    let r = proxy
        .client
        .post(admin("patch"))
        .bearer_auth(TOKEN)
        .body(serde_json::to_vec(&serde_json::json!({"image": "nosuch/x:1"})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "an unknown upstream is refused");
}
