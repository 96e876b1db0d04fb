//! Pushing images with `Upstream::{has_blob, push_blob, push_manifest}` into a real
//! `docker-registry`: anonymous, behind htpasswd Basic auth and behind the Docker token
//! protocol. What was pushed is read back with skopeo or plain HTTP GETs and compared by
//! digest; refusals carry the registry's error code and never the password.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::images::{self, sha256_digest, Blob, Format, Image};
use common::registry::{Registry, REGISTRY_BIN};
use common::require_tools;
use common::token::{basic_authorization, htpasswd_auth_yaml, TokenConfig, TokenServer};
use patchpull::config::Config;
use patchpull::distribution::reference::{Digest, Reference};
use patchpull::metrics::Metrics;
use patchpull::upstream::{Allowlist, BlobSource, Upstream, UpstreamError};
use tempfile::TempDir;

const USER: &str = "pusher";
/// Distinctive enough that finding it in an error can only mean a leak.
const PASSWORD: &str = "Pu5h-Pa55-3e8b1f0a-wy";
const WRONG_PASSWORD: &str = "Wr0ng-Pu5h-9d2c44b7-jt";

/// The `Upstream` patchpull builds for a registry at `url`, as config and the allowlist do.
fn upstream(url: &str, credentials: Option<(&str, &str)>) -> Arc<Upstream> {
    upstream_with(url, credentials, "")
}

/// [`upstream`] with more lines in its `[[upstream]]` table.
fn upstream_with(url: &str, credentials: Option<(&str, &str)>, extra: &str) -> Arc<Upstream> {
    let mut toml =
        format!("[[upstream]]\nname = \"target\"\nurl = {url:?}\nretries = 1\n{extra}\n");
    if let Some((user, password)) = credentials {
        toml.push_str(&format!("username = {user:?}\npassword = {password:?}\n"));
    }
    let config = Config::from_toml_str(&toml).unwrap();
    let allowlist = Allowlist::new(&config.upstream, Arc::new(Metrics::new())).unwrap();
    allowlist
        .route("any/repo", Some("target"))
        .unwrap()
        .upstream
}

fn digest(blob: &Blob) -> Digest {
    blob.digest.parse().unwrap()
}

fn tag(t: &str) -> Reference {
    Reference::Tag(t.to_string())
}

/// Pushes config (from memory) and layers (streamed from files in `dir`), then the manifest.
async fn push_image(up: &Upstream, repo: &str, reference: &Reference, image: &Image, dir: &Path) {
    up.push_blob(
        repo,
        &digest(&image.config),
        image.config.data.len() as u64,
        BlobSource::Bytes(Bytes::from(image.config.data.clone())),
        None,
    )
    .await
    .unwrap();
    for layer in &image.layers {
        let path = dir.join(layer.digest.replace(':', "_"));
        std::fs::write(&path, &layer.data).unwrap();
        up.push_blob(
            repo,
            &digest(layer),
            layer.data.len() as u64,
            BlobSource::File(path),
            None,
        )
        .await
        .unwrap();
    }
    let pushed = up
        .push_manifest(
            repo,
            reference,
            &image.manifest.media_type,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap();
    assert_eq!(pushed.to_string(), image.manifest.digest);
}

/// GETs the manifest and every blob of `image` back with `authorization` and compares
/// bytes and digests.
async fn assert_pulled_back(
    registry: &Registry,
    repo: &str,
    reference: &str,
    image: &Image,
    authorization: Option<&str>,
) {
    let client = common::client();
    let get = |path: String, accept: Option<&str>| {
        let mut req = client.get(format!("{}{path}", registry.url()));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        req.send()
    };
    let resp = get(
        format!("/v2/{repo}/manifests/{reference}"),
        Some(images::ACCEPT_ALL),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200, "manifest {repo}:{reference}");
    assert_eq!(
        common::header(&resp, "docker-content-digest"),
        image.manifest.digest
    );
    assert_eq!(
        common::header(&resp, "content-type"),
        image.manifest.media_type
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), image.manifest.bytes);
    for blob in image.blobs() {
        let resp = get(format!("/v2/{repo}/blobs/{}", blob.digest), None)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "blob {} in {repo}", blob.digest);
        let body = resp.bytes().await.unwrap();
        assert_eq!(sha256_digest(&body), blob.digest);
    }
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("pp-push-")
        .tempdir()
        .unwrap()
}

#[tokio::test]
async fn anonymous_push_reads_back_with_skopeo() {
    if !require_tools(&[REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let up = upstream(&registry.url(), None);
    let dir = temp_dir();
    let image = images::single(Format::Oci, "push-anonymous");
    let repo = "patched/app";

    for blob in image.blobs() {
        assert!(!up.has_blob(repo, &digest(blob)).await.unwrap());
    }
    push_image(&up, repo, &tag("v1-patched"), &image, dir.path()).await;
    for blob in image.blobs() {
        assert!(up.has_blob(repo, &digest(blob)).await.unwrap());
    }
    assert_pulled_back(&registry, repo, "v1-patched", &image, None).await;
    // By digest too, and a Docker-format image next to it.
    assert_pulled_back(&registry, repo, &image.manifest.digest, &image, None).await;
    let docker = images::single(Format::Docker, "push-docker");
    let by_digest = Reference::Digest(docker.manifest.digest.parse().unwrap());
    push_image(&up, repo, &by_digest, &docker, dir.path()).await;
    assert_pulled_back(&registry, repo, &docker.manifest.digest, &docker, None).await;

    if !require_tools(&["skopeo"]) {
        return;
    }
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!(
            "docker://{}/{repo}:v1-patched",
            registry.authority()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["Digest"], image.manifest.digest.as_str());
    let layers: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(inspected["Layers"], serde_json::json!(layers));
    assert_eq!(inspected["Architecture"], "amd64");
}

#[tokio::test]
async fn second_push_of_a_present_blob_uploads_nothing() {
    if !require_tools(&[REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let up = upstream(&registry.url(), None);
    let dir = temp_dir();
    // Big enough to be streamed in many chunks.
    let blob = images::big_blob(6 * 1024 * 1024 + 17, 7);
    let path = dir.path().join("blob");
    std::fs::write(&path, &blob.data).unwrap();
    let size = blob.data.len() as u64;
    let d = digest(&blob);

    assert!(!up.has_blob("a/b", &d).await.unwrap());
    up.push_blob("a/b", &d, size, BlobSource::File(path.clone()), None)
        .await
        .unwrap();
    assert!(up.has_blob("a/b", &d).await.unwrap());

    // The same size but other bytes: an upload would be refused as DIGEST_INVALID, so an
    // Ok proves that nothing was sent.
    std::fs::write(&path, images::deterministic_bytes(blob.data.len(), 8)).unwrap();
    up.push_blob("a/b", &d, size, BlobSource::File(path.clone()), None)
        .await
        .unwrap();
    // Where the blob is absent the wrong bytes do reach the registry, which refuses them.
    let err = up
        .push_blob("c/d", &d, size, BlobSource::File(path), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("DIGEST_INVALID"), "{err}");
    assert!(!up.has_blob("c/d", &d).await.unwrap());

    let resp = common::client()
        .get(format!("{}/v2/a/b/blobs/{}", registry.url(), blob.digest))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), blob.digest);
}

#[tokio::test]
async fn blobs_are_mounted_from_another_repository() {
    if !require_tools(&[REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let up = upstream(&registry.url(), None);
    let dir = temp_dir();
    let image = images::single(Format::Oci, "push-mount");
    push_image(&up, "library/base", &tag("1"), &image, dir.path()).await;

    // Wrong bytes of the right size: only a mount can succeed with them.
    for blob in image.blobs() {
        let path = dir.path().join("decoy");
        std::fs::write(&path, images::deterministic_bytes(blob.data.len(), 99)).unwrap();
        up.push_blob(
            "patched/base",
            &digest(blob),
            blob.data.len() as u64,
            BlobSource::File(path),
            Some("library/base"),
        )
        .await
        .unwrap();
    }
    up.push_manifest(
        "patched/base",
        &tag("1-patched"),
        &image.manifest.media_type,
        Bytes::from(image.manifest.bytes.clone()),
    )
    .await
    .unwrap();
    assert_pulled_back(&registry, "patched/base", "1-patched", &image, None).await;

    // A mount source without the blob: the registry opens an upload instead, which is used.
    let extra = images::big_blob(1000, 3);
    up.push_blob(
        "patched/base",
        &digest(&extra),
        1000,
        BlobSource::Bytes(Bytes::from(extra.data.clone())),
        Some("library/base"),
    )
    .await
    .unwrap();
    assert!(up.has_blob("patched/base", &digest(&extra)).await.unwrap());
    assert!(!up.has_blob("library/base", &digest(&extra)).await.unwrap());
}

#[tokio::test]
async fn manifest_naming_a_missing_blob_is_refused_with_the_registry_code() {
    if !require_tools(&[REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let up = upstream(&registry.url(), None);
    let image = images::single(Format::Oci, "push-missing");
    // Only the config: the layers are missing.
    up.push_blob(
        "a/b",
        &digest(&image.config),
        image.config.data.len() as u64,
        BlobSource::Bytes(Bytes::from(image.config.data.clone())),
        None,
    )
    .await
    .unwrap();
    let err = up
        .push_manifest(
            "a/b",
            &tag("v1"),
            &image.manifest.media_type,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("MANIFEST_BLOB_UNKNOWN"), "{text}");
    assert!(text.contains("a/b:v1"), "{text}");
    let resp = common::client()
        .get(format!("{}/v2/a/b/manifests/v1", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Bytes that are not what the digest reference says never leave.
    let wrong = Reference::Digest(image.config.digest.parse().unwrap());
    let err = up
        .push_manifest(
            "a/b",
            &wrong,
            &image.manifest.media_type,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
    // A source shorter than announced is refused before anything is sent.
    let err = up
        .push_blob(
            "a/b",
            &digest(&image.layers[0]),
            image.layers[0].data.len() as u64 + 1,
            BlobSource::Bytes(Bytes::from(image.layers[0].data.clone())),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Setup { .. }), "{err}");
}

#[tokio::test]
async fn basic_auth_push_and_wrong_password() {
    if !require_tools(&[REGISTRY_BIN]) {
        return;
    }
    let dir = temp_dir();
    let Some(yaml) = htpasswd_auth_yaml(dir.path(), USER, PASSWORD) else {
        assert!(!require_tools(&["htpasswd"]), "htpasswd found but unusable");
        return;
    };
    let registry = Registry::start_with_config(&yaml).await;
    let image = images::single(Format::Docker, "push-basic");

    let up = upstream(&registry.url(), Some((USER, PASSWORD)));
    push_image(&up, "team/app", &tag("v2"), &image, dir.path()).await;
    let auth = basic_authorization(USER, PASSWORD);
    assert_pulled_back(&registry, "team/app", "v2", &image, Some(&auth)).await;

    for up in [
        upstream(&registry.url(), Some((USER, WRONG_PASSWORD))),
        upstream(&registry.url(), None),
    ] {
        let other = images::single(Format::Docker, "push-basic-refused");
        let err = up
            .push_blob(
                "team/app",
                &digest(&other.config),
                other.config.data.len() as u64,
                BlobSource::Bytes(Bytes::from(other.config.data.clone())),
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Unauthorized { .. }), "{err}");
        assert_no_secret(&format!("{err} {err:?}"));
        let err = up
            .push_manifest(
                "team/app",
                &tag("v3"),
                &image.manifest.media_type,
                Bytes::from(image.manifest.bytes.clone()),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Unauthorized { .. }), "{err}");
        assert_no_secret(&format!("{err} {err:?}"));
    }
}

fn assert_no_secret(text: &str) {
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(!text.contains(secret), "password leaked: {text}");
    }
}

#[tokio::test]
async fn token_auth_push_mount_and_refusals() {
    if !require_tools(&[REGISTRY_BIN]) {
        return;
    }
    let tokens = TokenServer::start(TokenConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        anonymous_all: true,
        ..TokenConfig::default()
    })
    .await;
    let registry = Registry::start_with_config(&tokens.registry_auth_yaml()).await;
    let dir = temp_dir();
    let image = images::single(Format::Oci, "push-token");

    let up = upstream_with(
        &registry.url(),
        Some((USER, PASSWORD)),
        &tokens.auth_hosts_line(),
    );
    push_image(&up, "base/app", &tag("v1"), &image, dir.path()).await;
    assert!(tokens.requests_for_scope("repository:base/app:pull,push") >= 1);
    // One token serves the whole push of one repository.
    assert_eq!(
        tokens.requests_for_repo("base/app"),
        1,
        "{:?}",
        tokens.requests()
    );
    let auth = tokens.push_authorization("base/app").await;
    assert_pulled_back(&registry, "base/app", "v1", &image, Some(&auth)).await;

    // Mount into another repository: the token must grant pull on the source too.
    tokens.reset_requests();
    for blob in image.blobs() {
        let path = dir.path().join("decoy");
        std::fs::write(&path, images::deterministic_bytes(blob.data.len(), 5)).unwrap();
        up.push_blob(
            "patched/app",
            &digest(blob),
            blob.data.len() as u64,
            BlobSource::File(path),
            Some("base/app"),
        )
        .await
        .unwrap();
    }
    let mount_requests = tokens.requests();
    assert!(
        mount_requests.iter().any(|r| {
            r.scopes
                .iter()
                .any(|s| s == "repository:patched/app:pull,push")
                && r.scopes.iter().any(|s| s == "repository:base/app:pull")
        }),
        "{mount_requests:?}"
    );
    up.push_manifest(
        "patched/app",
        &tag("v1-patched"),
        &image.manifest.media_type,
        Bytes::from(image.manifest.bytes.clone()),
    )
    .await
    .unwrap();
    let auth = tokens.push_authorization("patched/app").await;
    assert_pulled_back(&registry, "patched/app", "v1-patched", &image, Some(&auth)).await;

    // Anonymous: the token server grants pull only, so the registry refuses the push.
    let anonymous = upstream_with(&registry.url(), None, &tokens.auth_hosts_line());
    assert!(anonymous
        .has_blob("base/app", &digest(&image.config))
        .await
        .unwrap());
    let err = anonymous
        .push_manifest(
            "base/app",
            &tag("anon"),
            &image.manifest.media_type,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, UpstreamError::Unauthorized { .. }), "{text}");
    assert!(text.contains("UNAUTHORIZED"), "{text}");

    // A wrong password is refused by the token server; the error does not carry it.
    let wrong = upstream_with(
        &registry.url(),
        Some((USER, WRONG_PASSWORD)),
        &tokens.auth_hosts_line(),
    );
    let err = wrong
        .push_manifest(
            "base/app",
            &tag("wrong"),
            &image.manifest.media_type,
            Bytes::from(image.manifest.bytes.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unauthorized { .. }), "{err}");
    assert_no_secret(&format!("{err} {err:?}"));
    for token in tokens.issued_tokens() {
        assert!(!text.contains(&token));
    }
}
