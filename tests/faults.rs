//! Upstream failures: lies, dropped connections, throttling and errors. A client must never
//! get wrong bytes as a complete 200, nothing wrong may be cached, and a cached tag keeps
//! being served while upstream is unhappy.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::fault::{blob_path, manifest_path, Behaviour, FaultServer};
use common::images::{self, Blob, Format, Image, ACCEPT_ALL};
use common::{error_code, header, Proxy};
use reqwest::Method;

/// What a client ended up with; statuses are read through `Debug` in failure messages.
#[derive(Debug)]
#[allow(dead_code)]
enum Outcome {
    /// The status was not 2xx.
    Refused(u16),
    /// A 2xx whose body did not arrive in full (the connection was cut or errored).
    Broken(u16),
    /// A 2xx with a complete body.
    Complete(u16, Bytes),
}

async fn outcome(resp: reqwest::Response) -> Outcome {
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        return Outcome::Refused(status);
    }
    let declared = resp.content_length();
    match resp.bytes().await {
        Ok(body) if declared.is_none_or(|n| n == body.len() as u64) => {
            Outcome::Complete(status, body)
        }
        _ => Outcome::Broken(status),
    }
}

/// An image with a 1 MiB layer, so a blob is more than one write.
fn image_with_big_layer(seed: &str) -> (Image, Blob) {
    let data = images::deterministic_bytes(1 << 20, seed.len() as u64);
    let layer = images::layer(Format::Oci, &[images::Entry::File("big.bin", &data, 0o644)]);
    let image = images::assemble(Format::Oci, "amd64", vec![layer], &["/bin/sh"]);
    let blob = image.layers[0].clone();
    (image, blob)
}

async fn setup(
    seed: &str,
    tweak: impl FnOnce(&mut common::ProxyConfig),
) -> (FaultServer, Proxy, Image, Blob) {
    let upstream = FaultServer::start().await;
    let (image, blob) = image_with_big_layer(seed);
    upstream.add_image("test/app", "1", &image);
    let proxy = Proxy::start(&[("local", &upstream.url(), true)], tweak).await;
    (upstream, proxy, image, blob)
}

fn assert_not_served(outcome: &Outcome, what: &str) {
    eprintln!("{what}: {outcome:?}");
    assert!(
        !matches!(outcome, Outcome::Complete(..)),
        "{what}: the client got a complete 2xx from a faulty upstream: {outcome:?}"
    );
}

async fn assert_blob_served(proxy: &Proxy, path: &str, blob: &Blob) {
    match outcome(proxy.get(path).await).await {
        Outcome::Complete(200, body) => {
            assert_eq!(images::sha256_digest(&body), blob.digest, "GET {path}")
        }
        other => panic!("GET {path}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_blob_is_neither_served_nor_cached() {
    let (upstream, proxy, _image, blob) = setup("lie", |c| c.all_upstreams("retries = 1")).await;
    let upstream_path = blob_path("test/app", &blob.digest);
    upstream.set(&upstream_path, Behaviour::Lie);
    let path = format!("/v2/test/app/blobs/{}", blob.digest);

    let first = outcome(proxy.get(&path).await).await;
    assert_not_served(&first, "first GET of a lying blob");
    // The wrong bytes were not kept: asking again goes upstream again and fails again.
    let hits = upstream.hits("GET", &upstream_path);
    let second = outcome(proxy.get(&path).await).await;
    assert_not_served(&second, "second GET of a lying blob");
    assert!(
        upstream.hits("GET", &upstream_path) > hits,
        "served from the store"
    );

    upstream.clear_all();
    assert_blob_served(&proxy, &path, &blob).await;
    let hits = upstream.hits("GET", &upstream_path);
    assert_blob_served(&proxy, &path, &blob).await;
    assert_eq!(
        upstream.hits("GET", &upstream_path),
        hits,
        "good blob not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_manifest_is_refused() {
    let (upstream, proxy, image, _blob) =
        setup("lie-manifest", |c| c.all_upstreams("retries = 0")).await;
    let digest = &image.manifest.digest;
    upstream.set(&manifest_path("test/app", digest), Behaviour::Lie);
    let path = format!("/v2/test/app/manifests/{digest}");
    let resp = proxy
        .request(Method::GET, &path, &[("accept", ACCEPT_ALL)])
        .await;
    assert!(
        resp.status().is_server_error(),
        "GET {path}: {}",
        resp.status()
    );
    error_code(resp).await;

    // A tag whose bytes do not hash to the Docker-Content-Digest upstream sent.
    upstream.set(&manifest_path("test/app", "1"), Behaviour::Lie);
    let resp = proxy
        .request(
            Method::GET,
            "/v2/test/app/manifests/1",
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert!(
        !(status.is_success() && body[..] != image.manifest.bytes[..]),
        "served lying manifest bytes with {status}"
    );

    upstream.clear_all();
    for path in [path.as_str(), "/v2/test/app/manifests/1"] {
        let resp = proxy
            .request(Method::GET, path, &[("accept", ACCEPT_ALL)])
            .await;
        assert_eq!(resp.status(), 200, "GET {path} after the upstream healed");
        assert_eq!(&resp.bytes().await.unwrap()[..], &image.manifest.bytes[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_mid_blob_is_not_cached() {
    let (upstream, proxy, _image, blob) = setup("cut", |c| c.all_upstreams("retries = 1")).await;
    let upstream_path = blob_path("test/app", &blob.digest);
    upstream.set(&upstream_path, Behaviour::CutAfter(100_000));
    let path = format!("/v2/test/app/blobs/{}", blob.digest);

    let first = outcome(proxy.get(&path).await).await;
    assert_not_served(&first, "GET while upstream dies mid-blob");
    let hits = upstream.hits("GET", &upstream_path);
    let second = outcome(proxy.get(&path).await).await;
    assert_not_served(&second, "second GET while upstream dies mid-blob");
    assert!(
        upstream.hits("GET", &upstream_path) > hits,
        "partial blob served from the store"
    );

    upstream.clear_all();
    assert_blob_served(&proxy, &path, &blob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_once_is_resumed() {
    let (upstream, proxy, _image, blob) =
        setup("cut-once", |c| c.all_upstreams("retries = 3")).await;
    let upstream_path = blob_path("test/app", &blob.digest);
    upstream.set_times(&upstream_path, Behaviour::CutAfter(300_000), 1);
    let path = format!("/v2/test/app/blobs/{}", blob.digest);
    assert_blob_served(&proxy, &path, &blob).await;
    assert!(
        upstream.hits("GET", &upstream_path) >= 2,
        "{:?}",
        upstream.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_passed_on_with_retry_after() {
    let (upstream, proxy, image, blob) = setup("429", |c| c.all_upstreams("retries = 0")).await;
    let throttle = Behaviour::TooManyRequests {
        retry_after_secs: 7,
    };
    upstream.set(&manifest_path("test/app", "1"), throttle.clone());
    upstream.set(&blob_path("test/app", &blob.digest), throttle);
    let cases = [
        "/v2/test/app/manifests/1".to_string(),
        format!("/v2/test/app/blobs/{}", blob.digest),
    ];
    for path in cases {
        let resp = proxy
            .request(Method::GET, &path, &[("accept", ACCEPT_ALL)])
            .await;
        assert_eq!(resp.status(), 429, "GET {path}");
        let retry_after = header(&resp, "retry-after");
        assert!(!retry_after.is_empty(), "GET {path}: no Retry-After");
        assert!(
            retry_after.parse::<u64>().is_ok(),
            "Retry-After: {retry_after}"
        );
        assert_eq!(error_code(resp).await, "TOOMANYREQUESTS", "GET {path}");
    }
    // Within the Retry-After window upstream is left alone: the client is told to wait.
    let before = upstream.requests().len();
    let resp = proxy
        .get(&format!("/v2/test/app/blobs/{}", image.config.digest))
        .await;
    assert_eq!(resp.status(), 429, "GET during the Retry-After window");
    assert!(!header(&resp, "retry-after").is_empty(), "no Retry-After");
    assert_eq!(
        upstream.requests().len(),
        before,
        "upstream asked again inside its Retry-After window: {:?}",
        upstream.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_reported_clearly() {
    let (upstream, proxy, _image, blob) = setup("500", |c| c.all_upstreams("retries = 0")).await;
    upstream.set(&manifest_path("test/app", "1"), Behaviour::ServerError);
    upstream.set(&blob_path("test/app", &blob.digest), Behaviour::ServerError);
    for path in [
        "/v2/test/app/manifests/1".to_string(),
        format!("/v2/test/app/blobs/{}", blob.digest),
    ] {
        let resp = proxy
            .request(Method::GET, &path, &[("accept", ACCEPT_ALL)])
            .await;
        let status = resp.status();
        assert!(status.is_server_error(), "GET {path}: {status}");
        let code = error_code(resp).await;
        eprintln!("GET {path} with upstream 500 -> {status} {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_upstream_error_is_retried() {
    let (upstream, proxy, image, blob) = setup("retry", |c| c.all_upstreams("retries = 2")).await;
    let upstream_path = blob_path("test/app", &blob.digest);
    upstream.set_times(&upstream_path, Behaviour::ServerError, 1);
    let tag_path = manifest_path("test/app", "1");
    upstream.set_times(&tag_path, Behaviour::ServerError, 1);

    let resp = proxy
        .request(
            Method::GET,
            "/v2/test/app/manifests/1",
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], &image.manifest.bytes[..]);
    let path = format!("/v2/test/app/blobs/{}", blob.digest);
    assert_blob_served(&proxy, &path, &blob).await;
    assert!(
        upstream.hits("GET", &upstream_path) >= 2,
        "{:?}",
        upstream.requests()
    );
}

/// Warms the tag, lets its TTL run out, breaks upstream with `break_it`, and expects the
/// cached manifest to be served anyway.
async fn stale_tag_is_served(seed: &str, break_it: impl FnOnce(&mut Option<FaultServer>, &Image)) {
    let (upstream, proxy, image, _blob) = setup(seed, |c| {
        c.tag_ttl = "1h".into();
        c.all_upstreams("retries = 0");
    })
    .await;
    let path = "/v2/test/app/manifests/1";
    let accept = [("accept", ACCEPT_ALL)];
    let resp = proxy.request(Method::GET, path, &accept).await;
    assert_eq!(resp.status(), 200, "warming {path}");
    let _ = resp.bytes().await;

    let tag_path = manifest_path("test/app", "1");
    let asked = |u: &FaultServer| u.hits("GET", &tag_path) + u.hits("HEAD", &tag_path);
    let before = asked(&upstream);
    let mut upstream = Some(upstream);
    break_it(&mut upstream, &image);
    proxy.clock.advance(Duration::from_secs(2 * 3600));

    for method in [Method::GET, Method::HEAD] {
        let resp = proxy.request(method.clone(), path, &accept).await;
        assert_eq!(
            resp.status(),
            200,
            "{method} {path} with a stale tag ({seed})"
        );
        assert_eq!(
            header(&resp, "docker-content-digest"),
            image.manifest.digest
        );
        if method == Method::GET {
            assert_eq!(&resp.bytes().await.unwrap()[..], &image.manifest.bytes[..]);
        }
    }
    if let Some(upstream) = &upstream {
        assert!(
            asked(upstream) > before,
            "the expired tag was not re-checked upstream: {:?}",
            upstream.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_tag_is_served_while_upstream_throttles() {
    stale_tag_is_served("stale-429", |upstream, _| {
        let u = upstream.as_ref().unwrap();
        u.set(
            &manifest_path("test/app", "1"),
            Behaviour::TooManyRequests {
                retry_after_secs: 1,
            },
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_tag_is_served_while_upstream_fails() {
    stale_tag_is_served("stale-500", |upstream, _| {
        let u = upstream.as_ref().unwrap();
        u.set(&manifest_path("test/app", "1"), Behaviour::ServerError);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_tag_is_served_while_upstream_is_down() {
    stale_tag_is_served("stale-down", |upstream, _| {
        upstream.take();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_with_nothing_cached_is_an_error() {
    let upstream = FaultServer::start().await;
    let url = upstream.url();
    drop(upstream);
    let proxy = Proxy::start(&[("local", &url, true)], |c| {
        c.all_upstreams("retries = 0");
        c.all_upstreams("connect_timeout = \"2s\"");
    })
    .await;
    let resp = proxy
        .request(
            Method::GET,
            "/v2/test/app/manifests/1",
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    let status = resp.status();
    assert!(status.is_server_error(), "{status}");
    let code = error_code(resp).await;
    eprintln!("unreachable upstream -> {status} {code}");
}

// === what the store saves upstream ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_by_digest_are_served_from_the_store() {
    let upstream = FaultServer::start().await;
    let image = images::single(Format::Oci, "store");
    upstream.add_image("test/store", "1", &image);
    let proxy = Proxy::start(&[("local", &upstream.url(), true)], |_| {}).await;
    let path = format!("/v2/test/store/manifests/{}", image.manifest.digest);
    for _ in 0..3 {
        let resp = proxy.get(&path).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(&resp.bytes().await.unwrap()[..], &image.manifest.bytes[..]);
    }
    let upstream_path = manifest_path("test/store", &image.manifest.digest);
    let fetches = upstream.hits("GET", &upstream_path);
    assert_eq!(fetches, 1, "{:?}", upstream.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_rechecked_only_after_its_ttl() {
    let upstream = FaultServer::start().await;
    let first = images::single(Format::Oci, "ttl-first");
    let second = images::single(Format::Oci, "ttl-second");
    upstream.add_image("test/ttl", "1", &first);
    let proxy = Proxy::start(&[("local", &upstream.url(), true)], |c| {
        c.tag_ttl = "1h".into();
    })
    .await;
    let path = "/v2/test/ttl/manifests/1";
    let tag_path = manifest_path("test/ttl", "1");
    let asked = || upstream.hits("GET", &tag_path) + upstream.hits("HEAD", &tag_path);
    let digest_of = |resp: &reqwest::Response| header(resp, "docker-content-digest");

    let resp = proxy
        .request(Method::GET, path, &[("accept", ACCEPT_ALL)])
        .await;
    assert_eq!(digest_of(&resp), first.manifest.digest);
    let asked_once = asked();
    assert!(asked_once >= 1);
    // Upstream moves the tag; within the TTL the proxy neither asks nor notices.
    upstream.add_image("test/ttl", "1", &second);
    for _ in 0..3 {
        let resp = proxy
            .request(Method::GET, path, &[("accept", ACCEPT_ALL)])
            .await;
        assert_eq!(digest_of(&resp), first.manifest.digest, "within the TTL");
    }
    assert_eq!(asked(), asked_once, "{:?}", upstream.requests());
    proxy.clock.advance(Duration::from_secs(2 * 3600));
    let resp = proxy
        .request(Method::GET, path, &[("accept", ACCEPT_ALL)])
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(digest_of(&resp), second.manifest.digest, "after the TTL");
    assert_eq!(&resp.bytes().await.unwrap()[..], &second.manifest.bytes[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_does_not_abort_the_fill() {
    let upstream = FaultServer::start().await;
    let big = images::big_blob(4 << 20, 11);
    upstream.add_blob(&big);
    let upstream_path = blob_path("test/big", &big.digest);
    upstream.set(
        &upstream_path,
        Behaviour::Slow {
            chunk: 64 << 10,
            delay: Duration::from_millis(10),
        },
    );
    let proxy = Proxy::start(&[("local", &upstream.url(), true)], |_| {}).await;
    let path = format!("/v2/test/big/blobs/{}", big.digest);

    let mut resp = proxy.get(&path).await;
    assert_eq!(resp.status(), 200);
    let chunk = resp.chunk().await.unwrap().expect("a first chunk");
    assert!(!chunk.is_empty());
    drop(resp);

    // The fill went on without its client: the next pull is whole, with no second fetch.
    assert_blob_served(&proxy, &path, &big).await;
    assert_eq!(
        upstream.hits("GET", &upstream_path),
        1,
        "{:?}",
        upstream.requests()
    );
}
