//! The pull-through mirror against a real registry and the fault server: what a client sees
//! must equal what the registry holds, byte for byte.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::fault::{blob_path, Behaviour, FaultServer};
use common::images::{self, Format, Image, MultiArch, ACCEPT_ALL};
use common::registry::Registry;
use common::{error_code, header, require_tools, Proxy};
use reqwest::Method;

/// The images every mirror test can pull, pushed to one registry.
struct Fixture {
    registry: Registry,
    oci: Image,
    docker: Image,
    index: MultiArch,
    list: MultiArch,
}

async fn fixture() -> Option<Fixture> {
    if !require_tools(&[common::registry::REGISTRY_BIN]) {
        return None;
    }
    let registry = Registry::start().await;
    let url = registry.url();
    let oci = images::single(Format::Oci, "mirror-oci");
    let docker = images::single(Format::Docker, "mirror-docker");
    let index = images::multi_arch(Format::Oci, "mirror-index");
    let list = images::multi_arch(Format::Docker, "mirror-list");
    images::push_image(&url, "test/oci", "1", &oci).await;
    images::push_image(&url, "test/docker", "1", &docker).await;
    images::push_multi_arch(&url, "test/index", "1", &index).await;
    images::push_multi_arch(&url, "test/list", "1", &list).await;
    Some(Fixture {
        registry,
        oci,
        docker,
        index,
        list,
    })
}

async fn proxy_for(registry: &Registry) -> Proxy {
    Proxy::start(&[("local", &registry.url(), true)], |_| {}).await
}

async fn direct(
    registry: &Registry,
    method: Method,
    path: &str,
    accept: &str,
) -> reqwest::Response {
    common::client()
        .request(method, format!("{}{path}", registry.url()))
        .header("accept", accept)
        .send()
        .await
        .expect("direct request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_endpoint_and_health() {
    let Some(fx) = fixture().await else { return };
    let proxy = proxy_for(&fx.registry).await;
    for path in ["/v2/", "/v2"] {
        let resp = proxy.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(
            header(&resp, "docker-distribution-api-version"),
            "registry/2.0"
        );
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(proxy.get(path).await.status(), 200, "GET {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_equal_the_registry_byte_for_byte() {
    let Some(fx) = fixture().await else { return };
    let proxy = proxy_for(&fx.registry).await;
    let cases = [
        ("test/oci", &fx.oci.manifest),
        ("test/docker", &fx.docker.manifest),
        ("test/index", &fx.index.index),
        ("test/list", &fx.list.index),
    ];
    for (repo, manifest) in cases {
        // Tag first (cold), then digest, then both again (warm).
        for reference in ["1", manifest.digest.as_str(), "1", manifest.digest.as_str()] {
            let path = format!("/v2/{repo}/manifests/{reference}");
            let want = direct(&fx.registry, Method::GET, &path, ACCEPT_ALL).await;
            assert_eq!(want.status(), 200, "registry GET {path}");
            let got = proxy
                .request(Method::GET, &path, &[("accept", ACCEPT_ALL)])
                .await;
            assert_eq!(got.status(), 200, "GET {path}");
            for name in ["content-type", "docker-content-digest", "content-length"] {
                assert_eq!(
                    header(&got, name),
                    header(&want, name),
                    "{name} of GET {path}"
                );
            }
            assert_eq!(header(&got, "docker-content-digest"), manifest.digest);
            assert_eq!(header(&got, "content-type"), manifest.media_type);
            let body = got.bytes().await.expect("manifest body");
            assert_eq!(&body[..], &manifest.bytes[..], "bytes of GET {path}");

            let got = proxy
                .request(Method::HEAD, &path, &[("accept", ACCEPT_ALL)])
                .await;
            assert_eq!(got.status(), 200, "HEAD {path}");
            assert_eq!(header(&got, "docker-content-digest"), manifest.digest);
            assert_eq!(header(&got, "content-type"), manifest.media_type);
            assert_eq!(
                header(&got, "content-length"),
                manifest.bytes.len().to_string(),
                "Content-Length of HEAD {path}"
            );
        }
    }
    let resp = proxy
        .request(
            Method::GET,
            "/v2/test/oci/manifests/nope",
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_code(resp).await, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_image_clients_get_the_linux_amd64_manifest() {
    let Some(fx) = fixture().await else { return };
    let proxy = proxy_for(&fx.registry).await;
    for (repo, multi, accept) in [
        ("test/index", &fx.index, images::OCI_MANIFEST),
        ("test/list", &fx.list, images::DOCKER_MANIFEST),
    ] {
        let amd64 = &multi.child("amd64").manifest;
        let path = format!("/v2/{repo}/manifests/1");
        let resp = proxy
            .request(Method::GET, &path, &[("accept", accept)])
            .await;
        assert_eq!(resp.status(), 200, "GET {path} accepting {accept}");
        assert_eq!(header(&resp, "docker-content-digest"), amd64.digest);
        assert_eq!(header(&resp, "content-type"), amd64.media_type);
        assert_eq!(&resp.bytes().await.unwrap()[..], &amd64.bytes[..]);

        // By digest, the client gets exactly what it asked for.
        let path = format!("/v2/{repo}/manifests/{}", multi.index.digest);
        let resp = proxy
            .request(Method::GET, &path, &[("accept", accept)])
            .await;
        assert_eq!(resp.status(), 200, "GET {path} accepting {accept}");
        assert_eq!(header(&resp, "docker-content-digest"), multi.index.digest);
        assert_eq!(&resp.bytes().await.unwrap()[..], &multi.index.bytes[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_get_and_head() {
    let Some(fx) = fixture().await else { return };
    let proxy = proxy_for(&fx.registry).await;
    for round in ["cold", "warm"] {
        for blob in fx.docker.blobs() {
            let path = format!("/v2/test/docker/blobs/{}", blob.digest);
            let resp = proxy.head(&path).await;
            assert_eq!(resp.status(), 200, "{round} HEAD {path}");
            assert_eq!(header(&resp, "content-length"), blob.data.len().to_string());
            assert_eq!(header(&resp, "docker-content-digest"), blob.digest);
            let resp = proxy.get(&path).await;
            assert_eq!(resp.status(), 200, "{round} GET {path}");
            assert_eq!(header(&resp, "docker-content-digest"), blob.digest);
            let body = resp.bytes().await.expect("blob body");
            assert_eq!(
                images::sha256_digest(&body),
                blob.digest,
                "{round} GET {path}"
            );
        }
    }
    let missing = images::sha256_digest(b"not pushed anywhere");
    let resp = proxy.get(&format!("/v2/test/docker/blobs/{missing}")).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_code(resp).await, "BLOB_UNKNOWN");
    let resp = proxy
        .head(&format!("/v2/test/docker/blobs/{missing}"))
        .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_return_the_right_bytes() {
    let Some(fx) = fixture().await else { return };
    let big = images::big_blob(8 << 20, 42);
    images::push_blob(&fx.registry.url(), "test/big", &big).await;
    let proxy = proxy_for(&fx.registry).await;
    let path = format!("/v2/test/big/blobs/{}", big.digest);
    let total = big.data.len();
    let cases: [(&str, usize, usize); 4] = [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, total - 1),
        ("bytes=-50", total - 50, total - 1),
        ("bytes=1048576-2097151", 1 << 20, (2 << 20) - 1),
    ];
    // The first round finds the blob cold, the second in the store.
    for round in ["cold", "warm"] {
        for (spec, start, end) in cases {
            let resp = proxy.request(Method::GET, &path, &[("range", spec)]).await;
            assert_eq!(resp.status(), 206, "{round} {spec}");
            assert_eq!(
                header(&resp, "content-range"),
                format!("bytes {start}-{end}/{total}"),
                "{round} {spec}"
            );
            let body = resp.bytes().await.expect("range body");
            assert_eq!(body.len(), end - start + 1, "{round} {spec}");
            assert!(
                body[..] == big.data[start..=end],
                "{round} {spec}: wrong bytes"
            );
        }
        let resp = proxy
            .request(Method::GET, &path, &[("range", &format!("bytes={total}-"))])
            .await;
        assert_eq!(resp.status(), 416, "{round} range past the end");
        if round == "cold" {
            let full = proxy.get(&path).await;
            assert_eq!(full.status(), 200);
            let body = full.bytes().await.expect("full body");
            assert_eq!(images::sha256_digest(&body), big.digest);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_paginates() {
    let Some(fx) = fixture().await else { return };
    let image = images::single(Format::Oci, "tags");
    for tag in ["d", "b", "a", "c"] {
        images::push_image(&fx.registry.url(), "test/tags", tag, &image).await;
    }
    let proxy = proxy_for(&fx.registry).await;

    let resp = proxy.get("/v2/test/tags/tags/list").await;
    assert_eq!(resp.status(), 200);
    let json = common::json(resp).await;
    assert_eq!(json["tags"], serde_json::json!(["a", "b", "c", "d"]));
    assert!(
        json["name"].as_str().unwrap().ends_with("test/tags"),
        "{json}"
    );

    let resp = proxy.get("/v2/test/tags/tags/list?n=2").await;
    assert_eq!(resp.status(), 200);
    let link = header(&resp, "link");
    let json = common::json(resp).await;
    assert_eq!(json["tags"], serde_json::json!(["a", "b"]));
    assert!(link.contains("rel=\"next\""), "Link: {link}");
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("Link target")
        .to_string();
    assert!(next.contains("last=b"), "Link: {link}");
    let resp = proxy.get(&next).await;
    assert_eq!(resp.status(), 200, "GET {next}");
    let json = common::json(resp).await;
    assert_eq!(json["tags"], serde_json::json!(["c", "d"]));

    let resp = proxy.get("/v2/test/tags/tags/list?n=10&last=b").await;
    let json = common::json(resp).await;
    assert_eq!(json["tags"], serde_json::json!(["c", "d"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_without_any_is_an_empty_index() {
    let Some(fx) = fixture().await else { return };
    let proxy = proxy_for(&fx.registry).await;
    let resp = proxy
        .get(&format!(
            "/v2/test/oci/referrers/{}",
            fx.oci.manifest.digest
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").starts_with(images::OCI_INDEX));
    let json = common::json(resp).await;
    assert_eq!(json["schemaVersion"], 2);
    assert_eq!(json["manifests"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_delete_are_unsupported() {
    let Some(fx) = fixture().await else { return };
    let proxy = proxy_for(&fx.registry).await;
    let digest = &fx.oci.manifest.digest;
    let cases = [
        (Method::POST, "/v2/test/oci/blobs/uploads/".to_string()),
        (Method::PUT, "/v2/test/oci/manifests/2".to_string()),
        (Method::DELETE, format!("/v2/test/oci/manifests/{digest}")),
        (
            Method::DELETE,
            format!("/v2/test/oci/blobs/{}", fx.oci.config.digest),
        ),
        (Method::PATCH, "/v2/test/oci/blobs/uploads/abc".to_string()),
    ];
    for (method, path) in cases {
        let resp = proxy.request(method.clone(), &path, &[]).await;
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(error_code(resp).await, "UNSUPPORTED", "{method} {path}");
    }
    // Nothing changed upstream.
    let resp = direct(
        &fx.registry,
        Method::GET,
        &format!("/v2/test/oci/manifests/{digest}"),
        ACCEPT_ALL,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_by_ns_prefix_alias_and_default() {
    let Some(fx) = fixture().await else { return };
    // A second registry holds an image the default one does not have.
    let other = Registry::start().await;
    let only_other = images::single(Format::Oci, "only-other");
    images::push_image(&other.url(), "team/app", "v1", &only_other).await;
    let proxy = Proxy::start(
        &[
            ("local", &fx.registry.url(), true),
            ("other", &other.url(), false),
        ],
        |c| {
            c.upstream_mut("other")
                .extra
                .push("aliases = [\"o\"]".into())
        },
    )
    .await;
    let want = &only_other.manifest.digest;
    let accept = [("accept", ACCEPT_ALL)];
    let routed = [
        "/v2/team/app/manifests/v1?ns=other".to_string(),
        "/v2/team/app/manifests/v1?ns=o".to_string(),
        format!("/v2/team/app/manifests/v1?ns={}", other.authority()),
        "/v2/other/team/app/manifests/v1".to_string(),
        "/v2/o/team/app/manifests/v1".to_string(),
    ];
    for path in routed {
        let resp = proxy.request(Method::GET, &path, &accept).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(header(&resp, "docker-content-digest"), *want, "GET {path}");
        let blob_path = match path.split_once('?') {
            Some((p, q)) => format!(
                "{}/blobs/{}?{q}",
                p.rsplit_once("/manifests/").unwrap().0,
                only_other.config.digest
            ),
            None => format!(
                "{}/blobs/{}",
                path.rsplit_once("/manifests/").unwrap().0,
                only_other.config.digest
            ),
        };
        let resp = proxy.get(&blob_path).await;
        assert_eq!(resp.status(), 200, "GET {blob_path}");
        assert_eq!(
            &resp.bytes().await.unwrap()[..],
            &only_other.config.data[..]
        );
    }
    // Pagination stays on the upstream the first page came from.
    images::push_image(&other.url(), "team/app", "v2", &only_other).await;
    for first in [
        "/v2/other/team/app/tags/list?n=1",
        "/v2/team/app/tags/list?n=1&ns=other",
    ] {
        let resp = proxy.get(first).await;
        assert_eq!(resp.status(), 200, "GET {first}");
        let link = header(&resp, "link");
        assert_eq!(common::json(resp).await["tags"], serde_json::json!(["v1"]));
        let next = link.trim_start_matches('<').split('>').next().unwrap();
        let resp = proxy.get(next).await;
        assert_eq!(resp.status(), 200, "GET {next} (Link of {first})");
        let page = common::json(resp).await;
        assert_eq!(page["tags"], serde_json::json!(["v2"]), "GET {next}");
    }
    // Without ns or prefix the default upstream answers, and it does not have the image.
    let resp = proxy
        .request(Method::GET, "/v2/team/app/manifests/v1", &accept)
        .await;
    assert_eq!(resp.status(), 404);
    // The default upstream serves its own images with and without its prefix.
    for path in ["/v2/test/oci/manifests/1", "/v2/local/test/oci/manifests/1"] {
        let resp = proxy.request(Method::GET, path, &accept).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(
            header(&resp, "docker-content-digest"),
            fx.oci.manifest.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_io_default_adds_library_to_one_component_names() {
    let Some(fx) = fixture().await else { return };
    let image = images::single(Format::Docker, "library");
    images::push_image(&fx.registry.url(), "library/alpinish", "3", &image).await;
    let proxy = Proxy::start(&[("docker.io", &fx.registry.url(), true)], |_| {}).await;
    let accept = [("accept", ACCEPT_ALL)];
    for path in [
        "/v2/alpinish/manifests/3",
        "/v2/library/alpinish/manifests/3",
        "/v2/library/alpinish/manifests/3?ns=docker.io",
        "/v2/docker.io/library/alpinish/manifests/3",
    ] {
        let resp = proxy.request(Method::GET, path, &accept).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(
            header(&resp, "docker-content-digest"),
            image.manifest.digest
        );
    }
    let resp = proxy
        .get(&format!("/v2/alpinish/blobs/{}", image.config.digest))
        .await;
    assert_eq!(resp.status(), 200);
    // Two-component names are left alone.
    let resp = proxy
        .request(Method::GET, "/v2/test/docker/manifests/1", &accept)
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        fx.docker.manifest.digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_upstream_is_refused_without_connecting() {
    let listener = FaultServer::start().await;
    let configured = FaultServer::start().await;
    let proxy = Proxy::start(&[("known", &configured.url(), true)], |_| {}).await;
    let stranger = listener.authority();
    for path in [
        format!("/v2/some/repo/manifests/latest?ns={stranger}"),
        "/v2/some/repo/manifests/latest?ns=evil.example.com".to_string(),
        format!(
            "/v2/some/repo/blobs/{}?ns={stranger}",
            images::sha256_digest(b"x")
        ),
        "/v2/some/repo/tags/list?ns=unknown".to_string(),
    ] {
        let resp = proxy.get(&path).await;
        assert_eq!(resp.status(), 404, "GET {path}");
        assert_eq!(error_code(resp).await, "NAME_UNKNOWN", "GET {path}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        listener.connections(),
        0,
        "patchpull connected to an unlisted host"
    );
    assert_eq!(configured.connections(), 0, "ns= named another upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_client_errors() {
    let upstream = FaultServer::start().await;
    let proxy = Proxy::start(&[("local", &upstream.url(), true)], |_| {}).await;
    let long_tag = "t".repeat(129);
    let cases = [
        ("/v2/UPPER/case/manifests/latest", "NAME_INVALID"),
        ("/v2/bad..name/manifests/latest", "NAME_INVALID"),
        ("/v2/-leading/manifests/latest", "NAME_INVALID"),
        ("/v2/a//b/manifests/latest", "NAME_INVALID"),
        ("/v2/ok/manifests/-bad-tag", "MANIFEST_INVALID"),
        (&format!("/v2/ok/manifests/{long_tag}"), "MANIFEST_INVALID"),
        ("/v2/ok/manifests/sha256:abc", "DIGEST_INVALID"),
        (
            "/v2/ok/manifests/sha256:zz99999999999999999999999999999999999999999999999999999999999999",
            "DIGEST_INVALID",
        ),
        ("/v2/ok/blobs/sha256:1234", "DIGEST_INVALID"),
        ("/v2/ok/blobs/latest", "DIGEST_INVALID"),
        ("/v2/ok/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "DIGEST_INVALID"),
        ("/v2/ok/referrers/not-a-digest", "DIGEST_INVALID"),
    ];
    for (path, want) in cases {
        let resp = proxy.get(path).await;
        assert_eq!(resp.status(), 400, "GET {path}");
        assert_eq!(error_code(resp).await, want, "GET {path}");
        let resp = proxy.head(path).await;
        assert_eq!(resp.status(), 400, "HEAD {path}");
    }
    // Paths that are not part of the API at all.
    for path in ["/v2/ok/nonsense/latest", "/v3/", "/v2/ok/manifests/"] {
        let resp = proxy.get(path).await;
        let status = resp.status().as_u16();
        assert!(
            status == 400 || status == 404,
            "GET {path}: status {status}"
        );
        error_code(resp).await;
    }
    assert_eq!(
        upstream.connections(),
        0,
        "invalid requests reached upstream"
    );
}

/// Sum of every sample of counters whose name mentions requests.
fn request_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            name.contains("request") && name.ends_with("_total")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests() {
    let Some(fx) = fixture().await else { return };
    let proxy = proxy_for(&fx.registry).await;
    let resp = proxy.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let before = request_total(&resp.text().await.unwrap());
    for _ in 0..5 {
        let resp = proxy.get("/v2/test/oci/manifests/1").await;
        assert_eq!(resp.status(), 200);
    }
    let text = proxy.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("# TYPE"), "not Prometheus text:\n{text}");
    let after = request_total(&text);
    assert!(
        after - before >= 5.0,
        "request counters went from {before} to {after}:\n{text}"
    );
    // Label values are bounded: no repository names or digests.
    assert!(
        !text.contains("test/oci"),
        "repository name in a label:\n{text}"
    );
    assert!(!text.contains("sha256:"), "digest in a label:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_a_cold_blob_fetch_it_once() {
    let upstream = FaultServer::start().await;
    let big = images::big_blob(4 << 20, 7);
    upstream.add_blob(&big);
    let path = blob_path("test/big", &big.digest);
    // Slow enough (about 0.7 s) that all 16 requests overlap with the one fill.
    upstream.set(
        &path,
        Behaviour::Slow {
            chunk: 64 << 10,
            delay: Duration::from_millis(10),
        },
    );
    let proxy = Proxy::start(&[("local", &upstream.url(), true)], |_| {}).await;
    let mut pulls = Vec::new();
    for _ in 0..16 {
        let client = proxy.client.clone();
        let url = format!("{}{path}", proxy.url());
        pulls.push(tokio::spawn(async move {
            let resp = client.get(url).send().await.expect("blob GET");
            let status = resp.status();
            (status, resp.bytes().await.expect("blob body"))
        }));
    }
    for pull in pulls {
        let (status, body) = pull.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.len(), big.data.len());
        assert_eq!(images::sha256_digest(&body), big.digest);
    }
    assert_eq!(upstream.hits("GET", &path), 1, "{:?}", upstream.requests());
    // Warm: served from the store.
    let resp = proxy.get(&path).await;
    assert_eq!(
        images::sha256_digest(&resp.bytes().await.unwrap()),
        big.digest
    );
    assert_eq!(upstream.hits("GET", &path), 1, "{:?}", upstream.requests());
}
