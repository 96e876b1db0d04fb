//! The store is shared, what a client reads from it is not: content fetched through one
//! upstream (a private one, with credentials) is served through another upstream's name, or
//! another repository of the same upstream, only when that upstream confirms it has the
//! digest there. Manifests by digest are fetched once however many clients ask at once.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::fault::{blob_path, manifest_path, Behaviour, FaultServer};
use common::images::{self, Format, Image, ACCEPT_ALL};
use common::{error_code, eventually, header, Proxy};
use reqwest::Method;

const REPO: &str = "team/secret";

/// `private` holds the image (and needs credentials); `public` holds nothing at first.
struct World {
    private: FaultServer,
    public: FaultServer,
    image: Image,
    proxy: Proxy,
}

async fn world(seed: &str) -> World {
    let private = FaultServer::start().await;
    let public = FaultServer::start().await;
    let image = images::single(Format::Oci, seed);
    private.add_image(REPO, "1", &image);
    let (private_url, public_url) = (private.url(), public.url());
    let proxy = Proxy::start(
        &[
            ("private", &private_url, true),
            ("public", &public_url, false),
        ],
        |c| {
            c.all_upstreams("retries = 0");
            let p = c.upstream_mut("private");
            p.extra.push("username = \"robot\"".into());
            p.extra.push("password = \"Sc0pe-Pa55-5d1f\"".into());
        },
    )
    .await;
    World {
        private,
        public,
        image,
        proxy,
    }
}

async fn get(proxy: &Proxy, method: Method, path: &str) -> reqwest::Response {
    proxy.request(method, path, &[("accept", ACCEPT_ALL)]).await
}

/// Pulls the whole image through `private`, so every digest is in the store.
async fn pull_private(w: &World) {
    let resp = get(
        &w.proxy,
        Method::GET,
        &format!("/v2/private/{REPO}/manifests/1"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    for blob in w.image.blobs() {
        let resp = w
            .proxy
            .get(&format!("/v2/private/{REPO}/blobs/{}", blob.digest))
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            images::sha256_digest(&resp.bytes().await.unwrap()),
            blob.digest
        );
    }
}

async fn assert_unknown(proxy: &Proxy, path: &str, code: &str) {
    for method in [Method::HEAD, Method::GET] {
        let resp = get(proxy, method.clone(), path).await;
        assert_eq!(
            resp.status(),
            404,
            "{method} {path} was served from the cache"
        );
        if method == Method::GET {
            assert_eq!(error_code(resp).await, code, "{method} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_of_a_private_upstream_is_not_served_through_another() {
    let w = world("scope-cross").await;
    pull_private(&w).await;
    let manifest = &w.image.manifest.digest;
    let layer = &w.image.layers[0].digest;

    // Another upstream's name: it has none of it, so none of it is served.
    assert_unknown(
        &w.proxy,
        &format!("/v2/public/{REPO}/manifests/{manifest}"),
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_unknown(
        &w.proxy,
        &format!("/v2/public/{REPO}/blobs/{layer}"),
        "BLOB_UNKNOWN",
    )
    .await;
    // The private upstream, but a repository it does not have the image in (its manifest
    // request is refused): the blob is not served either.
    let elsewhere = "team/other";
    w.private
        .set(&blob_path(elsewhere, layer), Behaviour::NotFound);
    assert_unknown(
        &w.proxy,
        &format!("/v2/private/{elsewhere}/manifests/{manifest}"),
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_unknown(
        &w.proxy,
        &format!("/v2/private/{elsewhere}/blobs/{layer}"),
        "BLOB_UNKNOWN",
    )
    .await;

    // Once the other upstream has the image, its HEAD is enough: the bytes come from the
    // store, not a second download.
    w.public.add_image(REPO, "1", &w.image);
    let path = format!("/v2/public/{REPO}/blobs/{layer}");
    let resp = w.proxy.get(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(images::sha256_digest(&resp.bytes().await.unwrap()), *layer);
    let upstream_path = blob_path(REPO, layer);
    assert_eq!(
        w.public.hits("GET", &upstream_path),
        0,
        "{:?}",
        w.public.requests()
    );
    let heads = w.public.hits("HEAD", &upstream_path);
    assert!(heads >= 1, "{:?}", w.public.requests());
    // ... and is remembered.
    let resp = w.proxy.get(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(w.public.hits("HEAD", &upstream_path), heads);
    let resp = get(
        &w.proxy,
        Method::GET,
        &format!("/v2/public/{REPO}/manifests/{manifest}"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        &resp.bytes().await.unwrap()[..],
        &w.image.manifest.bytes[..]
    );
    assert_eq!(
        w.public.hits("GET", &manifest_path(REPO, manifest)),
        0,
        "{:?}",
        w.public.requests()
    );
    w.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_in_flight_is_not_joined_through_another_upstream() {
    let w = world("scope-inflight").await;
    let big = images::big_blob(2 << 20, 21);
    w.private.add_blob(&big);
    let private_path = blob_path(REPO, &big.digest);
    w.private.set(
        &private_path,
        Behaviour::Slow {
            chunk: 64 << 10,
            delay: Duration::from_millis(20),
        },
    );
    let client = w.proxy.client.clone();
    let url = format!("{}/v2/private/{REPO}/blobs/{}", w.proxy.url(), big.digest);
    let private_pull = tokio::spawn(async move {
        let resp = client.get(url).send().await.unwrap();
        (resp.status(), resp.bytes().await.unwrap())
    });
    assert!(
        eventually(Duration::from_secs(10), || w
            .private
            .hits("GET", &private_path)
            == 1)
        .await
    );
    assert_unknown(
        &w.proxy,
        &format!("/v2/public/{REPO}/blobs/{}", big.digest),
        "BLOB_UNKNOWN",
    )
    .await;
    let (status, body) = private_pull.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(images::sha256_digest(&body), big.digest);
    w.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_a_cold_tag_get_its_manifest_once() {
    let w = world("flight-manifest").await;
    let digest = &w.image.manifest.digest;
    // Slow enough that the 200 clients overlap with the one download.
    w.private.set(
        &manifest_path(REPO, digest),
        Behaviour::Slow {
            chunk: 64,
            delay: Duration::from_millis(20),
        },
    );
    let mut pulls = Vec::new();
    for _ in 0..200 {
        let client = w.proxy.client.clone();
        let url = format!("{}/v2/private/{REPO}/manifests/1", w.proxy.url());
        pulls.push(tokio::spawn(async move {
            let resp = client
                .get(url)
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            let digest = header(&resp, "docker-content-digest");
            (resp.status(), digest, resp.bytes().await.unwrap())
        }));
    }
    for pull in pulls {
        let (status, got, body) = pull.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(got, *digest);
        assert_eq!(&body[..], &w.image.manifest.bytes[..]);
    }
    assert_eq!(
        w.private.hits("GET", &manifest_path(REPO, digest)),
        1,
        "GETs of the manifest by digest"
    );
    assert_eq!(w.private.hits("HEAD", &manifest_path(REPO, "1")), 1);
    w.proxy.shutdown().await;
}
