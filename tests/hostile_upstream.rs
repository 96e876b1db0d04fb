//! A hostile upstream: it redirects to other hosts, points its token realm elsewhere, and
//! sends malformed or absurdly nested manifests. Only configured hosts may ever be
//! contacted (an "other" listener on another port counts every connection it gets), the
//! upstream's credentials go nowhere else, and nothing malformed is served or stored.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use common::fault::{blob_path, manifest_path, Behaviour, FaultServer};
use common::images::{self, Format, Image, ACCEPT_ALL};
use common::{error_code, header, Proxy};
use reqwest::Method;

const REPO: &str = "test/app";
const PASSWORD: &str = "H0stile-Pa55-93e1c7b2-wy";

struct World {
    upstream: FaultServer,
    /// The host a hostile answer points at; it must get nothing unless configured.
    other: FaultServer,
    image: Image,
}

async fn world(seed: &str) -> World {
    let upstream = FaultServer::start().await;
    let other = FaultServer::start().await;
    let image = images::single(Format::Oci, seed);
    upstream.add_image(REPO, "1", &image);
    World {
        upstream,
        other,
        image,
    }
}

/// Starts the proxy with `local` as the default upstream, with credentials and `extra`
/// lines in its `[[upstream]]` table.
async fn proxy(w: &World, extra: &[String]) -> Proxy {
    let url = w.upstream.url();
    Proxy::start(&[("local", &url, true)], |c| {
        let u = c.upstream_mut("local");
        u.extra.push("retries = 0".into());
        u.extra.push("username = \"robot\"".into());
        u.extra.push(format!("password = {PASSWORD:?}"));
        u.extra.extend(extra.iter().cloned());
    })
    .await
}

async fn refused(proxy: &Proxy, method: Method, path: &str) -> String {
    let resp = proxy
        .request(method.clone(), path, &[("accept", ACCEPT_ALL)])
        .await;
    let status = resp.status();
    assert!(
        status.is_server_error(),
        "{method} {path}: expected a 5xx, got {status}"
    );
    if method == Method::HEAD {
        return String::new();
    }
    let body = resp.text().await.unwrap();
    assert!(!body.contains(PASSWORD), "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_other_hosts_are_not_followed() {
    let w = world("redirect-other").await;
    let proxy = proxy(&w, &[]).await;
    let other = w.other.url();
    let manifest = &w.image.manifest.digest;
    let layer = &w.image.layers[0].digest;
    let config = &w.image.config.digest;
    for (path, target) in [
        (manifest_path(REPO, "1"), "/latest/meta-data/"),
        (manifest_path(REPO, manifest), "/latest/meta-data/m"),
        (blob_path(REPO, layer), "/latest/meta-data/b"),
        (blob_path(REPO, config), "/latest/meta-data/c"),
        (format!("/v2/{REPO}/tags/list"), "/latest/meta-data/t"),
    ] {
        w.upstream
            .set(&path, Behaviour::Redirect(format!("{other}{target}")));
    }
    for (method, path) in [
        (Method::HEAD, format!("/v2/{REPO}/manifests/1")),
        (Method::GET, format!("/v2/{REPO}/manifests/1")),
        (Method::GET, format!("/v2/{REPO}/manifests/{manifest}")),
        (Method::HEAD, format!("/v2/{REPO}/blobs/{layer}")),
        (Method::GET, format!("/v2/{REPO}/blobs/{layer}")),
        (Method::GET, format!("/v2/{REPO}/blobs/{config}")),
        (Method::GET, format!("/v2/{REPO}/tags/list")),
    ] {
        let body = refused(&proxy, method.clone(), &path).await;
        if method == Method::GET {
            assert!(body.contains("redirect"), "{method} {path}: {body}");
        }
    }
    assert_eq!(
        w.other.connections(),
        0,
        "the redirect target was contacted: {:?}",
        w.other.requests()
    );
    // Every redirect reached the upstream itself and stopped there.
    assert!(w.upstream.hits("GET", &blob_path(REPO, layer)) >= 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_configured_host_is_followed_without_credentials() {
    let w = world("redirect-cdn").await;
    let layer = w.image.layers[0].clone();
    // The "CDN" holds the blob; the upstream sends the client there.
    w.other.add_blob(&layer);
    let cdn_path = blob_path("cdn/objects", &layer.digest);
    w.upstream.set(
        &blob_path(REPO, &layer.digest),
        Behaviour::Redirect(format!("{}{cdn_path}?signature=abc", w.other.url())),
    );
    let proxy = proxy(
        &w,
        &[format!("redirect_hosts = [{:?}]", w.other.authority())],
    )
    .await;
    let path = format!("/v2/{REPO}/blobs/{}", layer.digest);
    let resp = proxy.get(&path).await;
    assert_eq!(resp.status(), 200, "GET {path}");
    let body = resp.bytes().await.unwrap();
    assert_eq!(images::sha256_digest(&body), layer.digest);
    assert_eq!(
        w.other.hits("GET", &cdn_path),
        1,
        "{:?}",
        w.other.requests()
    );
    assert!(
        w.other.sensitive_headers().is_empty(),
        "the CDN got {:?}",
        w.other.sensitive_headers()
    );

    // A CDN that lies is caught by the digest check: nothing served, nothing stored.
    let config = w.image.config.clone();
    w.other.add_blob(&config);
    let lying_path = blob_path("cdn/objects", &config.digest);
    w.other.set(&lying_path, Behaviour::Lie);
    w.upstream.set(
        &blob_path(REPO, &config.digest),
        Behaviour::Redirect(format!("{}{lying_path}", w.other.url())),
    );
    let path = format!("/v2/{REPO}/blobs/{}", config.digest);
    let resp = proxy.get(&path).await;
    let status = resp.status();
    let body = resp.bytes().await;
    assert!(
        !(status.is_success() && body.is_ok_and(|b| images::sha256_digest(&b) != config.digest)),
        "a lying CDN's bytes were served complete"
    );
    w.other.clear_all();
    let resp = proxy.get(&path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        images::sha256_digest(&resp.bytes().await.unwrap()),
        config.digest
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_to_no_foreign_token_realm() {
    let w = world("realm-other").await;
    let challenge = format!(
        "Bearer realm=\"{}/token\",service=\"registry\",scope=\"repository:{REPO}:pull\"",
        w.other.url()
    );
    w.upstream.set(
        &manifest_path(REPO, "1"),
        Behaviour::Challenge(challenge.clone()),
    );
    w.upstream.set(
        &blob_path(REPO, &w.image.config.digest),
        Behaviour::Challenge(challenge),
    );
    let proxy = proxy(&w, &[]).await;
    for (method, path) in [
        (Method::HEAD, format!("/v2/{REPO}/manifests/1")),
        (Method::GET, format!("/v2/{REPO}/manifests/1")),
        (
            Method::GET,
            format!("/v2/{REPO}/blobs/{}", w.image.config.digest),
        ),
    ] {
        let body = refused(&proxy, method.clone(), &path).await;
        if method == Method::GET {
            assert!(body.contains("auth_hosts"), "{method} {path}: {body}");
        }
    }
    assert!(
        w.other.sensitive_headers().is_empty(),
        "the foreign realm got {:?}",
        w.other.sensitive_headers()
    );
    assert_eq!(w.other.connections(), 0, "{:?}", w.other.requests());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_challenge_sends_credentials_to_the_upstream_only() {
    let w = world("realm-basic").await;
    w.upstream.set_times(
        &manifest_path(REPO, "1"),
        Behaviour::Challenge("Basic realm=\"x\"".into()),
        1,
    );
    let proxy = proxy(&w, &[]).await;
    let resp = proxy
        .request(
            Method::GET,
            &format!("/v2/{REPO}/manifests/1"),
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        w.image.manifest.digest
    );
    assert!(w
        .upstream
        .sensitive_headers()
        .iter()
        .any(|h| h.starts_with("authorization: Basic ")));
    assert_eq!(w.other.connections(), 0);
    proxy.shutdown().await;
}

/// A manifest whose bytes are `bytes`, served under tag `tag` and its digest.
fn raw_manifest(bytes: Vec<u8>) -> images::Manifest {
    images::Manifest {
        media_type: images::OCI_MANIFEST.to_string(),
        digest: images::sha256_digest(&bytes),
        bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_deeply_nested_manifests_are_refused_and_not_stored() {
    let w = world("malformed").await;
    let depth = 200_000;
    let nested = format!(
        "{{\"schemaVersion\":2,\"a\":{}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let cases = [
        ("nested", nested.into_bytes()),
        ("truncated", br#"{"schemaVersion":2,"layers":["#.to_vec()),
        ("array", b"[1,2,3]".to_vec()),
    ];
    let proxy = proxy(&w, &[]).await;
    for (tag, bytes) in cases {
        let manifest = raw_manifest(bytes);
        w.upstream.add_manifest(REPO, tag, &manifest);
        let by_digest = format!("/v2/{REPO}/manifests/{}", manifest.digest);
        for path in [format!("/v2/{REPO}/manifests/{tag}"), by_digest.clone()] {
            for method in [Method::GET, Method::HEAD] {
                let resp = proxy
                    .request(method.clone(), &path, &[("accept", ACCEPT_ALL)])
                    .await;
                assert_eq!(resp.status(), 502, "{method} {path} ({tag})");
                if method == Method::GET {
                    assert_eq!(error_code(resp).await, "UNKNOWN");
                }
            }
        }
        // Nothing was stored: every request went upstream again.
        let upstream_path = manifest_path(REPO, &manifest.digest);
        let before = w.upstream.hits("GET", &upstream_path);
        let resp = proxy
            .request(Method::GET, &by_digest, &[("accept", ACCEPT_ALL)])
            .await;
        assert_eq!(resp.status(), 502);
        assert_eq!(w.upstream.hits("GET", &upstream_path), before + 1, "{tag}");
    }
    let store = proxy.store_dir();
    proxy.shutdown().await;
    let stored: Vec<_> = walk(&store.join("blobs"));
    assert!(stored.is_empty(), "stored: {stored:?}");
}

/// `GET path` as sent, over a fresh connection: (status, body).
async fn raw_get(proxy: &Proxy, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_by_tag_announces_the_verified_size() {
    let w = world("head-length").await;
    let real = w.image.manifest.bytes.len();
    w.upstream.set(
        &manifest_path(REPO, "1"),
        Behaviour::HeadLength(real + 1000),
    );
    let proxy = proxy(&w, &[]).await;
    let path = format!("/v2/{REPO}/manifests/1");
    let head = proxy
        .request(Method::HEAD, &path, &[("accept", ACCEPT_ALL)])
        .await;
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), real.to_string());
    assert_eq!(
        header(&head, "docker-content-digest"),
        w.image.manifest.digest
    );
    let get = proxy
        .request(Method::GET, &path, &[("accept", ACCEPT_ALL)])
        .await;
    assert_eq!(header(&get, "content-length"), real.to_string());
    assert_eq!(get.bytes().await.unwrap().len(), real);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_walk_paths_or_name_unknown_hosts_are_refused_without_connecting() {
    let w = world("names").await;
    let proxy = Proxy::start(&[("local", &w.upstream.url(), true)], |c| {
        c.patch = vec![
            "mode = \"off\"".into(),
            "admin_token = \"adm1n-t0ken\"".into(),
        ];
    })
    .await;
    let digest = &w.image.layers[0].digest;
    for (path, status, code) in [
        (
            format!("/v2/evil.example/{REPO}/manifests/1"),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/evil.example:8080/x/manifests/1".to_string(),
            400,
            "NAME_INVALID",
        ),
        (
            format!("/v2/localhost/{REPO}/blobs/{digest}"),
            404,
            "NAME_UNKNOWN",
        ),
        (format!("/v2/{REPO}/blobs/.."), 400, "DIGEST_INVALID"),
        (
            format!("/v2/{REPO}/blobs/../../../etc/passwd"),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{REPO}/blobs/sha256:../../x"),
            400,
            "DIGEST_INVALID",
        ),
        (format!("/v2/{REPO}/referrers/../x"), 400, "DIGEST_INVALID"),
    ] {
        // Raw, since HTTP clients resolve `..` before sending.
        let (got, body) = raw_get(&proxy, &path).await;
        assert_eq!(got, status, "GET {path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["errors"][0]["code"], code, "GET {path}");
    }
    let client = common::client();
    for image in [
        "local/../../x:1",
        "local/test/../../x:1",
        "local/test/app:..",
    ] {
        let resp = client
            .post(format!("{}/patchpull/v1/patch", proxy.url()))
            .header("authorization", "Bearer adm1n-t0ken")
            .body(serde_json::json!({ "image": image }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "pre-warm of {image}");
        assert_eq!(error_code(resp).await, "NAME_INVALID", "{image}");
    }
    assert_eq!(
        w.upstream.requests(),
        Vec::<String>::new(),
        "upstream was asked"
    );
    proxy.shutdown().await;
}
