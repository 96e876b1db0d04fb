//! Patched images belong to their original's upstream: their manifests, configs and patch
//! layers are served through it (where the original is readable) and through no other
//! upstream's name, although they sit in the one shared store.

use crate::common::fault::FaultServer;
use crate::common::images::{self, Format};
use crate::common::UpstreamSpec;
use crate::image::libfoo_image;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patched_content_is_served_through_its_upstream_only() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("test/app", "1", &original).await;
        let other = FaultServer::start().await;
        let other_url = other.url();
        let proxy = env
            .proxy("local", WAIT, |c| {
                c.upstreams.push(UpstreamSpec {
                    name: "other".into(),
                    url: other_url,
                    default: false,
                    extra: vec!["retries = 0".into()],
                });
            })
            .await;
        let answer = get(&proxy, "local/test/app", "1").await;
        let patched = answer.ok().to_owned();
        assert_ne!(patched, original.manifest.digest, "not patched");
        let manifest = answer.json();
        let layers = manifest["layers"].as_array().unwrap();
        let patch_layer = layers.last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        let config = manifest["config"]["digest"].as_str().unwrap().to_owned();

        for name in ["other/test/app", "local/test/elsewhere"] {
            let answer = get(&proxy, name, &patched).await;
            assert_eq!(answer.status, 404, "{name}@{patched}");
            for blob in [&patch_layer, &config] {
                let resp = proxy.get(&format!("/v2/{name}/blobs/{blob}")).await;
                assert_eq!(resp.status(), 404, "{name} blob {blob}");
            }
        }
        // The VEX referrer of the patched image is not even listed through another name.
        let listed = |name: &'static str| {
            let path = format!("/v2/{name}/referrers/{patched}");
            let proxy = &proxy;
            async move {
                let resp = proxy.get(&path).await;
                assert_eq!(resp.status(), 200, "{path}");
                let index: serde_json::Value =
                    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
                index["manifests"].as_array().unwrap().len()
            }
        };
        assert_eq!(listed("other/test/app").await, 0);
        assert_eq!(listed("local/test/app").await, 1);

        let answer = get(&proxy, "local/test/app", &patched).await;
        assert_eq!(answer.ok(), patched);
        assert_eq!(images::sha256_digest(&answer.bytes), patched);
        for blob in [&patch_layer, &config] {
            let resp = proxy.get(&format!("/v2/local/test/app/blobs/{blob}")).await;
            assert_eq!(resp.status(), 200, "blob {blob}");
            assert_eq!(images::sha256_digest(&resp.bytes().await.unwrap()), *blob);
        }
        proxy.shutdown().await;
    })
    .await;
}
