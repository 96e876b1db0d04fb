//! Authenticated upstreams: a real registry behind the Docker token protocol (the token server
//! in `common::token`) and one behind htpasswd Basic auth. The proxy pulls anonymously where
//! the upstream allows it and with its configured credentials elsewhere, caches tokens per
//! scope, and never lets the credentials reach a response, a log line or `config check`.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::images::{self, Format, Image, ACCEPT_ALL};
use common::registry::{Registry, REGISTRY_BIN};
use common::token::{
    basic_authorization, htpasswd_auth_yaml, push_image_authed, push_manifest_authed, Guard,
    RedirectingUpstream, TokenConfig, TokenServer,
};
use common::{error_code, header, require_tools, Proxy, ProxyConfig};
use reqwest::Method;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_patchpull");

/// Anonymous pulls allowed.
const PUBLIC: &str = "public/app";
/// Only the configured user may pull.
const PRIVATE: &str = "private/app";
/// Tags the private image is pushed under, so several pulls each need upstream.
const PRIVATE_TAGS: &[&str] = &["v1", "v2", "v3"];

const USER: &str = "puller";
/// Distinctive enough that finding it anywhere can only mean a leak.
const PASSWORD: &str = "Tok3n-Pa55-7f3a9c1e-zq";
/// What a misconfigured upstream sends; must not leak either.
const WRONG_PASSWORD: &str = "Wr0ng-Pa55-b84d02e6-qx";
const BASIC_PASSWORD: &str = "Ba5ic-Pa55-1c9e77d4-kv";

/// A token-protected registry with a public and a private repository.
struct TokenWorld {
    tokens: TokenServer,
    registry: Registry,
    public: Image,
    private: Image,
}

async fn token_world(expires_in: u64) -> Option<TokenWorld> {
    if !require_tools(&[REGISTRY_BIN]) {
        return None;
    }
    let tokens = TokenServer::start(TokenConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        public_repos: vec![PUBLIC.into()],
        expires_in,
        ..TokenConfig::default()
    })
    .await;
    let registry = Registry::start_with_config(&tokens.registry_auth_yaml()).await;
    let url = registry.url();
    let public = images::single(Format::Oci, "auth-public");
    let private = images::single(Format::Docker, "auth-private");

    let auth = tokens.push_authorization(PUBLIC).await;
    push_image_authed(&url, PUBLIC, "v1", &public, &auth).await;
    let auth = tokens.push_authorization(PRIVATE).await;
    push_image_authed(&url, PRIVATE, PRIVATE_TAGS[0], &private, &auth).await;
    for tag in &PRIVATE_TAGS[1..] {
        push_manifest_authed(&url, PRIVATE, tag, &private.manifest, &auth).await;
    }
    // Only what the proxy asks for from here on counts.
    tokens.reset_requests();
    Some(TokenWorld {
        tokens,
        registry,
        public,
        private,
    })
}

/// A registry with htpasswd auth holding the private image.
struct BasicWorld {
    registry: Registry,
    private: Image,
    _dir: TempDir,
}

async fn basic_world() -> Option<BasicWorld> {
    if !require_tools(&[REGISTRY_BIN]) {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("pp-htpasswd-")
        .tempdir()
        .unwrap();
    let Some(yaml) = htpasswd_auth_yaml(dir.path(), USER, BASIC_PASSWORD) else {
        // Neither htpasswd (apache2-utils) nor a bcrypt-capable python3: skip, or fail
        // under REQUIRE_TEST_TOOLS=1.
        assert!(!require_tools(&["htpasswd"]), "htpasswd found but unusable");
        return None;
    };
    let registry = Registry::start_with_config(&yaml).await;
    let private = images::single(Format::Oci, "auth-basic");
    push_image_authed(
        &registry.url(),
        PRIVATE,
        "v1",
        &private,
        &basic_authorization(USER, BASIC_PASSWORD),
    )
    .await;
    Some(BasicWorld {
        registry,
        private,
        _dir: dir,
    })
}

/// `username`/`password` lines for an `[[upstream]]` table.
fn credentials(password: &str) -> Vec<String> {
    vec![
        format!("username = {USER:?}"),
        format!("password = {password:?}"),
    ]
}

/// `/v2/<prefix/>repo/...`: the upstream named in the path, or the default one.
fn path(prefix: Option<&str>, repo: &str, rest: &str) -> String {
    match prefix {
        Some(p) => format!("/v2/{p}/{repo}/{rest}"),
        None => format!("/v2/{repo}/{rest}"),
    }
}

/// Pulls `repo:tag` through `base` (the proxy's URL) like a client: the manifest must be the
/// pushed bytes with their digest, then every blob byte for byte.
async fn pull_ok(base: &str, prefix: Option<&str>, repo: &str, tag: &str, image: &Image) {
    let client = common::client();
    let manifest_path = path(prefix, repo, &format!("manifests/{tag}"));
    let resp = client
        .get(format!("{base}{manifest_path}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let digest = header(&resp, "docker-content-digest");
    let content_type = header(&resp, "content-type");
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        status,
        200,
        "GET {manifest_path}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        body.as_ref(),
        image.manifest.bytes.as_slice(),
        "GET {manifest_path}: manifest bytes"
    );
    assert_eq!(digest, image.manifest.digest, "GET {manifest_path}: digest");
    assert_eq!(
        content_type, image.manifest.media_type,
        "GET {manifest_path}: type"
    );
    for blob in image.blobs() {
        let blob_path = path(prefix, repo, &format!("blobs/{}", blob.digest));
        let resp = client
            .get(format!("{base}{blob_path}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            status,
            200,
            "GET {blob_path}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            body.as_ref() == blob.data.as_slice(),
            "GET {blob_path}: blob bytes differ"
        );
    }
}

/// A refused pull: 401, 403 or 404 with a registry error body (never a 200, a 5xx or a
/// dropped connection).
async fn refused(resp: reqwest::Response, what: &str) -> String {
    let status = resp.status().as_u16();
    assert!(
        matches!(status, 401 | 403 | 404),
        "{what}: expected 401/403/404 with an error body, got {status}"
    );
    error_code(resp).await
}

// ---------------------------------------------------------------------------------------
// Token auth.

/// The fixture itself: the registry trusts the token server, refuses anonymous pulls of the
/// private repository and allows them on the public one. If this fails, the other token
/// tests say nothing about patchpull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_fixture_protects_the_registry() {
    let Some(w) = token_world(300).await else {
        return;
    };
    let client = common::client();
    let url = w.registry.url();
    let get = |repo: &str, token: Option<String>| {
        let mut req = client
            .get(format!("{url}/v2/{repo}/manifests/v1"))
            .header("accept", ACCEPT_ALL);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let resp = get(PRIVATE, None).await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = header(&resp, "www-authenticate");
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(&w.tokens.realm()),
        "challenge: {challenge}"
    );

    let anonymous = w
        .tokens
        .fetch_token(None, &format!("repository:{PRIVATE}:pull"))
        .await;
    assert_eq!(get(PRIVATE, Some(anonymous)).await.unwrap().status(), 401);
    let anonymous = w
        .tokens
        .fetch_token(None, &format!("repository:{PUBLIC}:pull"))
        .await;
    assert_eq!(get(PUBLIC, Some(anonymous)).await.unwrap().status(), 200);
    let user = w
        .tokens
        .fetch_token(
            Some((USER, PASSWORD)),
            &format!("repository:{PRIVATE}:pull"),
        )
        .await;
    let resp = get(PRIVATE, Some(user)).await.unwrap();
    assert_eq!(resp.status(), 200, "registry log:\n{}", w.registry.log());

    let wrong = client
        .get(w.tokens.realm())
        .query(&[("service", "test-registry"), ("scope", "repository:x:pull")])
        .basic_auth(USER, Some(WRONG_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "wrong credentials at the token server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_upstream_pulls_public_and_refuses_private_cleanly() {
    let Some(w) = token_world(300).await else {
        return;
    };
    let proxy = Proxy::start(&[("authreg", &w.registry.url(), true)], |c| {
        c.all_upstreams(&w.tokens.auth_hosts_line());
    })
    .await;
    let base = proxy.url();

    pull_ok(&base, None, PUBLIC, "v1", &w.public).await;
    // The upstream named in the path works the same.
    pull_ok(&base, Some("authreg"), PUBLIC, "v1", &w.public).await;

    let resp = proxy
        .request(
            Method::GET,
            &format!("/v2/{PRIVATE}/manifests/v1"),
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    let code = refused(resp, "anonymous GET of the private manifest").await;
    assert!(
        ["UNAUTHORIZED", "DENIED", "NAME_UNKNOWN", "MANIFEST_UNKNOWN"].contains(&code.as_str()),
        "private manifest: code {code}"
    );
    let resp = proxy
        .request(
            Method::HEAD,
            &format!("/v2/{PRIVATE}/manifests/v1"),
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    assert!(
        matches!(resp.status().as_u16(), 401 | 403 | 404),
        "anonymous HEAD of the private manifest: {}",
        resp.status()
    );
    let blob = &w.private.layers[0];
    let resp = proxy
        .get(&format!("/v2/{PRIVATE}/blobs/{}", blob.digest))
        .await;
    refused(resp, "anonymous GET of a private blob").await;
    let resp = proxy.get(&format!("/v2/{PRIVATE}/tags/list")).await;
    refused(resp, "anonymous tags/list of the private repository").await;

    // Still serving, and nothing of the private image was cached on the way.
    assert_eq!(proxy.get("/v2/").await.status(), 200);
    pull_ok(&base, None, PUBLIC, "v1", &w.public).await;
    let resp = proxy
        .request(
            Method::GET,
            &format!("/v2/{PRIVATE}/manifests/v1"),
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    refused(resp, "second anonymous GET of the private manifest").await;

    // An anonymous proxy asks for pull and nothing more, without credentials.
    let requests = w.tokens.requests();
    assert!(!requests.is_empty(), "the proxy never asked for a token");
    for r in &requests {
        assert!(
            !r.had_authorization,
            "anonymous proxy sent credentials: {r:?}"
        );
        for scope in &r.scopes {
            assert!(scope.ends_with(":pull"), "asked for more than pull: {r:?}");
        }
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentialed_upstream_pulls_private_repo() {
    let Some(w) = token_world(300).await else {
        return;
    };
    let proxy = Proxy::start(&[("authreg", &w.registry.url(), true)], |c| {
        c.all_upstreams(&w.tokens.auth_hosts_line());
        c.upstream_mut("authreg")
            .extra
            .extend(credentials(PASSWORD));
    })
    .await;
    let base = proxy.url();
    for tag in PRIVATE_TAGS {
        pull_ok(&base, None, PRIVATE, tag, &w.private).await;
    }
    pull_ok(&base, Some("authreg"), PRIVATE, "v1", &w.private).await;
    pull_ok(&base, None, PUBLIC, "v1", &w.public).await;

    let resp = proxy.get(&format!("/v2/{PRIVATE}/tags/list")).await;
    assert_eq!(resp.status(), 200);
    let tags: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(tags["name"], PRIVATE);
    let mut listed: Vec<&str> = tags["tags"]
        .as_array()
        .expect("tags array")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, PRIVATE_TAGS);

    // Credentials went to the token server as the configured user, for pull only.
    let requests = w.tokens.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.user.as_deref() == Some(USER) && r.status == 200),
        "no authenticated token request: {requests:?}"
    );
    for r in &requests {
        for scope in &r.scopes {
            assert!(scope.ends_with(":pull"), "asked for more than pull: {r:?}");
        }
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clean_error() {
    let Some(w) = token_world(300).await else {
        return;
    };
    let proxy = Proxy::start(&[("authreg", &w.registry.url(), true)], |c| {
        c.all_upstreams(&w.tokens.auth_hosts_line());
        c.upstream_mut("authreg")
            .extra
            .extend(credentials(WRONG_PASSWORD));
    })
    .await;
    for _ in 0..2 {
        let resp = proxy
            .request(
                Method::GET,
                &format!("/v2/{PRIVATE}/manifests/v1"),
                &[("accept", ACCEPT_ALL)],
            )
            .await;
        let status = resp.status();
        let headers = format!("{:?}", resp.headers());
        let body = resp.bytes().await.unwrap();
        assert!(
            matches!(status.as_u16(), 401 | 403 | 404),
            "wrong credentials: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(WRONG_PASSWORD) && !headers.contains(WRONG_PASSWORD));
        let json: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
        assert!(
            json["errors"][0]["code"].is_string(),
            "no errors[0].code: {text}"
        );
    }
    assert_eq!(proxy.get("/v2/").await.status(), 200);
    proxy.shutdown().await;
}

/// Several pulls of one repository within the token's lifetime fetch one token; another
/// repository (another scope) gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_cached_per_scope() {
    let Some(w) = token_world(300).await else {
        return;
    };
    let proxy = Proxy::start(&[("authreg", &w.registry.url(), true)], |c| {
        c.all_upstreams(&w.tokens.auth_hosts_line());
        c.tag_ttl = "0s".into();
        c.upstream_mut("authreg")
            .extra
            .extend(credentials(PASSWORD));
    })
    .await;
    let base = proxy.url();
    // Every tag is new to the proxy, so each one is an upstream request.
    for tag in PRIVATE_TAGS {
        pull_ok(&base, None, PRIVATE, tag, &w.private).await;
    }
    for _ in 0..3 {
        pull_ok(&base, None, PRIVATE, "v1", &w.private).await;
        let resp = proxy
            .request(
                Method::HEAD,
                &format!("/v2/{PRIVATE}/manifests/v2"),
                &[("accept", ACCEPT_ALL)],
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    let resp = proxy.get(&format!("/v2/{PRIVATE}/tags/list")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        w.tokens.requests_for_repo(PRIVATE),
        1,
        "token requests: {:#?}",
        w.tokens.requests()
    );

    pull_ok(&base, None, PUBLIC, "v1", &w.public).await;
    pull_ok(&base, None, PUBLIC, "v1", &w.public).await;
    assert_eq!(
        w.tokens.requests_for_repo(PUBLIC),
        1,
        "token requests: {:#?}",
        w.tokens.requests()
    );
    assert_eq!(w.tokens.requests_for_repo(PRIVATE), 1);
    proxy.shutdown().await;
}

/// A token is used until it expires, then a new one is fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_renewed() {
    let Some(w) = token_world(60).await else {
        return;
    };
    let proxy = Proxy::start(&[("authreg", &w.registry.url(), true)], |c| {
        c.all_upstreams(&w.tokens.auth_hosts_line());
        c.upstream_mut("authreg")
            .extra
            .extend(credentials(PASSWORD));
    })
    .await;
    let base = proxy.url();
    pull_ok(&base, None, PRIVATE, "v1", &w.private).await;
    assert_eq!(w.tokens.requests_for_repo(PRIVATE), 1);
    // Past the token's 60 s (less the renewal margin).
    proxy.clock.advance(Duration::from_secs(120));
    // A tag the proxy has never seen: it must go upstream, with a fresh token.
    pull_ok(&base, None, PRIVATE, "v2", &w.private).await;
    assert_eq!(
        w.tokens.requests_for_repo(PRIVATE),
        2,
        "an expired token was reused: {:#?}",
        w.tokens.requests()
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Basic auth.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_upstream_pulls_with_credentials() {
    let Some(w) = basic_world().await else {
        return;
    };
    // The fixture: anonymous pulls are refused with a Basic challenge.
    let resp = common::client()
        .get(format!("{}/v2/{PRIVATE}/manifests/v1", w.registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "www-authenticate").starts_with("Basic "));

    let proxy = Proxy::start(&[("basicreg", &w.registry.url(), true)], |c| {
        c.upstream_mut("basicreg")
            .extra
            .extend(credentials(BASIC_PASSWORD));
    })
    .await;
    pull_ok(&proxy.url(), None, PRIVATE, "v1", &w.private).await;
    pull_ok(&proxy.url(), Some("basicreg"), PRIVATE, "v1", &w.private).await;
    let resp = proxy.get(&format!("/v2/{PRIVATE}/tags/list")).await;
    assert_eq!(resp.status(), 200);
    proxy.shutdown().await;

    let anonymous = Proxy::start(&[("basicreg", &w.registry.url(), true)], |_| {}).await;
    let resp = anonymous
        .request(
            Method::GET,
            &format!("/v2/{PRIVATE}/manifests/v1"),
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    refused(resp, "anonymous pull from a Basic-auth upstream").await;
    anonymous.shutdown().await;

    let wrong = Proxy::start(&[("basicreg", &w.registry.url(), true)], |c| {
        c.upstream_mut("basicreg")
            .extra
            .extend(credentials(WRONG_PASSWORD));
    })
    .await;
    let resp = wrong
        .request(
            Method::GET,
            &format!("/v2/{PRIVATE}/manifests/v1"),
            &[("accept", ACCEPT_ALL)],
        )
        .await;
    let headers = format!("{:?}", resp.headers());
    assert!(!headers.contains(WRONG_PASSWORD));
    let code = refused(resp, "pull with wrong Basic credentials").await;
    assert!(!code.is_empty());
    wrong.shutdown().await;
}

/// Registries on object storage answer blob GETs with a redirect to another origin. The
/// upstream's credentials (Basic header or Bearer token) must not follow it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_do_not_follow_blob_redirects_to_another_origin() {
    // Two images: blobs are content-addressed, so one pulled through the first upstream
    // would be served from the cache for the second.
    let image = images::single(Format::Oci, "auth-redirect-basic");
    let other = images::single(Format::Oci, "auth-redirect-token");

    let basic = RedirectingUpstream::start(Guard::Basic {
        user: USER.into(),
        password: BASIC_PASSWORD.into(),
    })
    .await;
    basic.add_image(PRIVATE, "v1", &image);

    let tokens = TokenServer::start(TokenConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        ..TokenConfig::default()
    })
    .await;
    let bearer = RedirectingUpstream::start(Guard::Token(&tokens)).await;
    bearer.add_image(PRIVATE, "v1", &other);

    let proxy = Proxy::start(
        &[
            ("basicup", &basic.url(), true),
            ("tokenup", &bearer.url(), false),
        ],
        |c| {
            c.upstream_mut("basicup")
                .extra
                .extend(credentials(BASIC_PASSWORD));
            c.upstream_mut("basicup")
                .extra
                .push(basic.redirect_hosts_line());
            c.upstream_mut("tokenup")
                .extra
                .extend(credentials(PASSWORD));
            c.upstream_mut("tokenup")
                .extra
                .extend([bearer.redirect_hosts_line(), tokens.auth_hosts_line()]);
        },
    )
    .await;
    pull_ok(&proxy.url(), Some("basicup"), PRIVATE, "v1", &image).await;
    pull_ok(&proxy.url(), Some("tokenup"), PRIVATE, "v1", &other).await;

    for (name, upstream) in [("basic", &basic), ("token", &bearer)] {
        let authed = upstream.upstream_requests();
        assert!(
            authed.iter().any(|(_, auth)| auth != "-"),
            "{name}: the upstream never saw credentials: {authed:?}"
        );
        let cdn = upstream.cdn_requests();
        assert!(!cdn.is_empty(), "{name}: no blob went through the redirect");
        for (path, auth) in &cdn {
            assert_eq!(
                auth, "-",
                "{name}: the redirect target {path} got the upstream's Authorization"
            );
        }
    }
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Credentials never leak.

/// Every form a credential could take in a leak: the passwords, the Basic header values
/// built from them, and every token the token server issued.
fn secrets(tokens: Option<&TokenServer>) -> Vec<String> {
    let mut out = Vec::new();
    for password in [PASSWORD, WRONG_PASSWORD, BASIC_PASSWORD] {
        out.push(password.to_string());
        out.push(base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}")));
    }
    if let Some(t) = tokens {
        out.extend(t.issued_tokens());
    }
    out
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        let shown = if secret.len() > 24 {
            format!("{}...", &secret[..24])
        } else {
            secret.clone()
        };
        assert!(
            !text.contains(secret.as_str()),
            "{what} contains a credential ({shown}):\n{text}"
        );
    }
}

/// The proxy config for the leak tests: `good` (token auth, right password, default),
/// `bad` (token auth, wrong password) and, with htpasswd, `basic`.
fn leak_config(w: &TokenWorld, basic: Option<&BasicWorld>) -> ProxyConfig {
    let mut upstreams = vec![
        ("good", w.registry.url(), true),
        ("bad", w.registry.url(), false),
    ];
    if let Some(b) = basic {
        upstreams.push(("basic", b.registry.url(), false));
    }
    let borrowed: Vec<(&str, &str, bool)> = upstreams
        .iter()
        .map(|(n, u, d)| (*n, u.as_str(), *d))
        .collect();
    let mut config = ProxyConfig::new(&borrowed);
    config.log_level = "debug".into();
    for name in ["good", "bad"] {
        config
            .upstream_mut(name)
            .extra
            .push(w.tokens.auth_hosts_line());
    }
    config
        .upstream_mut("good")
        .extra
        .extend(credentials(PASSWORD));
    config
        .upstream_mut("bad")
        .extra
        .extend(credentials(WRONG_PASSWORD));
    if basic.is_some() {
        config
            .upstream_mut("basic")
            .extra
            .extend(credentials(BASIC_PASSWORD));
    }
    config
}

/// Drives successful and failing requests through the proxy at `base` and returns every
/// response as text: status line, headers, body.
async fn exercise(base: &str, w: &TokenWorld, basic: Option<&BasicWorld>) -> Vec<String> {
    let client = common::client();
    let private_blob = &w.private.layers[0].digest;
    let public_blob = &w.public.layers[0].digest;
    let mut requests: Vec<(Method, String)> = vec![
        (Method::GET, "/v2/".into()),
        (Method::GET, "/healthz".into()),
        (Method::GET, "/readyz".into()),
        (Method::GET, "/metrics".into()),
        // Successful pulls with credentials.
        (Method::GET, format!("/v2/{PRIVATE}/manifests/v1")),
        (Method::HEAD, format!("/v2/{PRIVATE}/manifests/v2")),
        (Method::GET, format!("/v2/{PRIVATE}/blobs/{private_blob}")),
        (Method::GET, format!("/v2/{PRIVATE}/tags/list")),
        (Method::GET, format!("/v2/good/{PUBLIC}/manifests/v1")),
        (Method::GET, format!("/v2/{PUBLIC}/blobs/{public_blob}")),
        // Upstream 404s behind auth.
        (Method::GET, format!("/v2/{PRIVATE}/manifests/missing")),
        (Method::GET, "/v2/nobody/here/manifests/v1".into()),
        // Wrong credentials: errors.
        (Method::GET, format!("/v2/bad/{PRIVATE}/manifests/v1")),
        (Method::HEAD, format!("/v2/bad/{PRIVATE}/manifests/v1")),
        (
            Method::GET,
            format!("/v2/bad/{PRIVATE}/blobs/{private_blob}"),
        ),
        (Method::GET, format!("/v2/bad/{PRIVATE}/tags/list")),
        (Method::GET, format!("/v2/{PUBLIC}/manifests/v1?ns=bad")),
        // Not allowed at all.
        (Method::PUT, format!("/v2/{PRIVATE}/manifests/v1")),
        (Method::DELETE, format!("/v2/{PRIVATE}/manifests/v1")),
        (
            Method::GET,
            format!("/v2/{PRIVATE}/manifests/v1?ns=unknown"),
        ),
    ];
    if let Some(b) = basic {
        let blob = &b.private.layers[0].digest;
        requests.extend([
            (Method::GET, format!("/v2/basic/{PRIVATE}/manifests/v1")),
            (Method::GET, format!("/v2/basic/{PRIVATE}/blobs/{blob}")),
            (
                Method::GET,
                format!("/v2/basic/{PRIVATE}/manifests/missing"),
            ),
        ]);
    }
    requests.push((Method::GET, "/metrics".into()));

    let mut out = Vec::new();
    for (method, path) in requests {
        let resp = client
            .request(method.clone(), format!("{base}{path}"))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let mut text = format!("{method} {path} -> {status}\n");
        for (name, value) in resp.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = resp.bytes().await.unwrap_or_default();
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&body));
        out.push(text);
    }
    // Sanity: the successful ones did succeed (else the test proves little).
    assert!(out[4].contains("-> 200"), "{}", out[4]);
    assert!(out[6].contains("-> 200"), "{}", out[6]);
    assert!(!out[12].contains("-> 200"), "{}", out[12]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_appear_in_responses_or_metrics() {
    let Some(w) = token_world(300).await else {
        return;
    };
    let basic = basic_world().await;
    let proxy = Proxy::start_with(&leak_config(&w, basic.as_ref())).await;
    let responses = exercise(&proxy.url(), &w, basic.as_ref()).await;
    let secrets = secrets(Some(&w.tokens));
    assert!(secrets.len() > 6, "no tokens were issued");
    for text in &responses {
        assert_clean("a response", text, &secrets);
    }
    proxy.shutdown().await;
}

/// `patchpull serve` as a child process with its stdout and stderr in files.
struct ServeProcess {
    child: Child,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ServeProcess {
    async fn start(dir: &Path, toml: &str) -> ServeProcess {
        let config = dir.join("patchpull.toml");
        std::fs::write(&config, toml).unwrap();
        let stdout = dir.join("serve.stdout");
        let stderr = dir.join("serve.stderr");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .env_remove("RUST_LOG");
        for (key, _) in std::env::vars() {
            if key.starts_with("PATCHPULL_") && key != "REQUIRE_TEST_TOOLS" {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(line) = out
                .lines()
                .find(|l| l.starts_with("patchpull listening on "))
            {
                let base = line
                    .trim_start_matches("patchpull listening on ")
                    .trim()
                    .to_string();
                return ServeProcess {
                    child,
                    base,
                    stdout,
                    stderr,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "patchpull serve exited with {status}:\n{out}\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "patchpull serve printed no listening line:\n{out}\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, wait for the drain (SIGKILL after 15 s), and return stdout + stderr.
    async fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_appear_in_debug_logs() {
    let Some(w) = token_world(300).await else {
        return;
    };
    let basic = basic_world().await;
    let dir = tempfile::Builder::new()
        .prefix("pp-serve-")
        .tempdir()
        .unwrap();
    let toml = leak_config(&w, basic.as_ref()).to_toml(&dir.path().join("store"));
    let serve = ServeProcess::start(dir.path(), &toml).await;
    let responses = exercise(&serve.base, &w, basic.as_ref()).await;
    let logs = serve.stop().await;

    let secrets = secrets(Some(&w.tokens));
    for text in &responses {
        assert_clean("a response of `patchpull serve`", text, &secrets);
    }
    assert!(
        logs.to_lowercase().contains("debug"),
        "log.level = \"debug\" logged nothing at debug level:\n{logs}"
    );
    assert_clean("the debug log of `patchpull serve`", &logs, &secrets);
}

/// Runs `patchpull config check --config FILE` and returns (success, stdout + stderr).
fn config_check(dir: &Path, toml: &str) -> (bool, String) {
    let config = dir.join("check.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["config", "check", "--config"])
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("PATCHPULL_") && key != "REQUIRE_TEST_TOOLS" {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn config_check_never_prints_passwords() {
    let dir = tempfile::Builder::new()
        .prefix("pp-check-")
        .tempdir()
        .unwrap();
    let store = dir.path().join("store");
    let secrets = secrets(None);

    let mut config = ProxyConfig::new(&[
        ("good", "http://127.0.0.1:9", true),
        ("bad", "http://127.0.0.1:10", false),
    ]);
    config
        .upstream_mut("good")
        .extra
        .extend(credentials(PASSWORD));
    config
        .upstream_mut("bad")
        .extra
        .extend(credentials(WRONG_PASSWORD));
    let (ok, output) = config_check(dir.path(), &config.to_toml(&store));
    assert!(ok, "a valid config was rejected:\n{output}");
    assert_clean("`config check` output", &output, &secrets);

    // An invalid config: the problems are reported, the passwords still are not.
    let mut broken = config.clone();
    broken.upstream_mut("good").extra = vec![format!("password = {PASSWORD:?}")];
    broken
        .upstream_mut("bad")
        .extra
        .push("timeout = \"soon\"".into());
    let (ok, output) = config_check(dir.path(), &broken.to_toml(&store));
    assert!(!ok, "a password without a username was accepted:\n{output}");
    assert!(!output.trim().is_empty(), "no problem reported");
    assert_clean(
        "`config check` output for a broken config",
        &output,
        &secrets,
    );
}

/// Config mistakes near a credential: the error must point at the problem without quoting
/// the secret (TOML parse errors quote the offending source line; type errors quote the
/// offending value; a URL can carry `user:password@`).
#[test]
fn config_check_errors_never_quote_passwords() {
    let dir = tempfile::Builder::new()
        .prefix("pp-check-")
        .tempdir()
        .unwrap();
    let store = dir.path().join("store");
    let head = format!(
        "[storage]\npath = {:?}\n\n[[upstream]]\nname = \"up\"\ndefault = true\n",
        store.display()
    );
    let numeric = "80417263955";
    let cases = [
        (
            "a TOML syntax error on the password line",
            format!(
                "{head}url = \"http://127.0.0.1:9\"\nusername = {USER:?}\npassword = {PASSWORD:?} oops\n"
            ),
            PASSWORD.to_string(),
        ),
        (
            "a password written as a bare number",
            format!("{head}url = \"http://127.0.0.1:9\"\nusername = {USER:?}\npassword = {numeric}\n"),
            numeric.to_string(),
        ),
        (
            "credentials inside the upstream URL",
            format!("{head}url = \"http://{USER}:{PASSWORD}@127.0.0.1:9\"\n"),
            PASSWORD.to_string(),
        ),
    ];
    let mut leaks = Vec::new();
    for (what, toml, secret) in &cases {
        let (_ok, output) = config_check(dir.path(), toml);
        assert!(!output.trim().is_empty(), "{what}: no output");
        if output.contains(secret.as_str()) {
            leaks.push(format!("--- {what}:\n{output}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "`patchpull config check` printed a password:\n{}",
        leaks.join("\n")
    );
}
