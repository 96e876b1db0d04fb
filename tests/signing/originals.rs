//! `require_signature`: originals are patched only when their publisher's cosign signature
//! (the `sha256-<hex>.sig` tag beside them in the real upstream registry) verifies; and
//! re-patching signs the new digest while the old one keeps its signature.

use std::time::Duration;

use patchpull::distribution::Digest;
use patchpull::sign::{SigningKey, Subject};

use super::*;
use common::images::{self, Blob, Manifest};
use image::{libfoo, NEWER};

const TOKEN: &str = "admin-token-for-tests";

/// Pushes `key`'s cosign signature of `image`, naming `identity`, to `repo` as
/// `sha256-<hex>.sig`, as `cosign sign --key` stores it.
async fn push_signature(env: &Env, repo: &str, key: &Path, identity: &str, image: &images::Image) {
    let key = SigningKey::load(key, None).unwrap();
    let digest: Digest = image.manifest.digest.parse().unwrap();
    let artifact = patchpull::sign::cosign::signature_artifact(
        &key,
        identity,
        Subject {
            digest: &digest,
            media_type: &image.manifest.media_type,
            size: image.manifest.bytes.len() as u64,
        },
    );
    let url = env.registry.url();
    for (_, bytes) in &artifact.blobs {
        images::push_blob(
            &url,
            repo,
            &Blob::new("application/octet-stream", bytes.clone()),
        )
        .await;
    }
    let manifest = Manifest {
        media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        bytes: artifact.manifest.clone(),
        digest: artifact.digest.to_string(),
    };
    let tag = format!("sha256-{}.sig", digest.hex());
    images::push_manifest(&url, repo, &tag, &manifest).await;
}

/// The predicate of the attestation patchpull serves for `patched` under `name`.
async fn predicate(proxy: &common::Proxy, name: &str, patched: &str) -> Value {
    let hex = patched.strip_prefix("sha256:").unwrap();
    let att: Value = serde_json::from_slice(
        &bytes(proxy, &format!("/v2/{name}/manifests/sha256-{hex}.att")).await,
    )
    .unwrap();
    let envelope: Value = serde_json::from_slice(
        &bytes(
            proxy,
            &format!(
                "/v2/{name}/blobs/{}",
                att["layers"][0]["digest"].as_str().unwrap()
            ),
        )
        .await,
    )
    .unwrap();
    let statement: Value = serde_json::from_slice(
        &BASE64
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    statement["predicate"].clone()
}

/// The digest a served `sha256-<hex>.sig` of `subject` signs.
async fn signed_digest(proxy: &common::Proxy, name: &str, subject: &str) -> String {
    let hex = subject.strip_prefix("sha256:").unwrap();
    let sig: Value = serde_json::from_slice(
        &bytes(proxy, &format!("/v2/{name}/manifests/sha256-{hex}.sig")).await,
    )
    .unwrap();
    let payload: Value = serde_json::from_slice(
        &bytes(
            proxy,
            &format!(
                "/v2/{name}/blobs/{}",
                sig["layers"][0]["digest"].as_str().unwrap()
            ),
        )
        .await,
    )
    .unwrap();
    payload["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_original_signed_by_the_required_key_is_patched() {
    if !tools(false) || !common::require_tools(&["openssl"]) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        // The same image in every repository: a patched image made for one repository is
        // not served to another whose signature does not verify.
        let original = libfoo_image(Format::Oci, false);
        for repo in ["signed", "stranger", "unsigned", "copied", "closed"] {
            env.push(&format!("test/{repo}"), "1", &original).await;
        }
        let keys = env.path("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (operator, _) = openssl_key_pair(&keys, "operator");
        let (publisher, publisher_pub) = openssl_key_pair(&keys, "publisher");
        let (stranger, _) = openssl_key_pair(&keys, "stranger");
        let registry = env.registry.authority();
        // The publisher signs in its own registry, by its host:port.
        push_signature(
            &env,
            "test/signed",
            &publisher,
            &format!("{registry}/test/signed"),
            &original,
        )
        .await;
        push_signature(
            &env,
            "test/stranger",
            &stranger,
            &format!("{registry}/test/stranger"),
            &original,
        )
        .await;
        // The publisher's key, but a signature made for another repository.
        push_signature(
            &env,
            "test/copied",
            &publisher,
            &format!("{registry}/test/signed"),
            &original,
        )
        .await;
        let required = format!("{{ key = {:?} }}", publisher_pub.display().to_string());
        let policy = |repo: &str, answer: &str| {
            [
                "[[patch.policy]]".to_owned(),
                format!("repository = {repo:?}"),
                format!(
                    "require_signature = {{ key = {:?}, unverified = {answer:?} }}",
                    publisher_pub.display().to_string()
                ),
            ]
        };
        let proxy = env
            .proxy(UPSTREAM, WAIT, |c| {
                c.patch.push(format!("admin_token = {TOKEN:?}"));
                c.patch.extend(policy("test/copied", "deny"));
                c.patch.extend(policy("test/closed", "fail_closed"));
                c.upstream_mut(UPSTREAM)
                    .extra
                    .push(format!("require_signature = {required}"));
                c.signing = vec![format!("key = {:?}", operator.display().to_string())];
            })
            .await;
        let name = |repo: &str| format!("{UPSTREAM}/test/{repo}");

        // Signed with the required key: patched, and the attestation says it was checked.
        let patched = get(&proxy, &name("signed"), "1").await.ok().to_owned();
        assert_ne!(patched, original.manifest.digest);
        let predicate = predicate(&proxy, &name("signed"), &patched).await;
        let publisher_key = patchpull::sign::VerifyingKey::load(&publisher_pub).unwrap();
        assert_eq!(
            predicate["original"]["signature"],
            serde_json::json!({"verified": true, "key": publisher_key.fingerprint()}),
            "{predicate}"
        );

        // Another key, no signature: the original (the upstream default answer).
        for repo in ["stranger", "unsigned"] {
            let answer = get(&proxy, &name(repo), "1").await;
            assert_eq!(answer.ok(), original.manifest.digest, "{repo}");
        }
        // The policies' answers: 403 for a signature of another repository, 503 unsigned.
        let copied = get(&proxy, &name("copied"), "1").await;
        assert_eq!(
            copied.status,
            403,
            "{}",
            String::from_utf8_lossy(&copied.bytes)
        );
        assert_eq!(copied.json()["errors"][0]["code"], "DENIED");
        let closed = get(&proxy, &name("closed"), "1").await;
        assert_eq!(
            closed.status,
            503,
            "{}",
            String::from_utf8_lossy(&closed.bytes)
        );
        assert!(!closed.retry_after.is_empty());

        // The reasons, in the admin API and as bounded metric labels.
        let resp = proxy
            .request(
                reqwest::Method::GET,
                "/patchpull/v1/images",
                &[("authorization", &format!("Bearer {TOKEN}"))],
            )
            .await;
        assert_eq!(resp.status(), 200);
        let listed = common::json(resp).await;
        let entry = |repo: &str| {
            listed["images"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["image"] == name(repo))
                .unwrap_or_else(|| panic!("{repo} not listed: {listed}"))
                .clone()
        };
        let expect = [
            ("stranger", "does not verify with key"),
            ("unsigned", "has no cosign signature"),
            ("copied", "test/signed"),
            ("closed", "has no cosign signature"),
        ];
        for (repo, why) in expect {
            let view = entry(repo);
            assert_eq!(view["status"], "unverified", "{view}");
            let detail = view["detail"].as_str().unwrap();
            assert!(detail.contains(why), "{repo}: {detail}");
            assert!(!detail.contains(&*keys.to_string_lossy()), "{detail}");
        }
        let signed = listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["status"] == "patched")
            .unwrap()
            .clone();
        assert_eq!(
            signed["original_signature"],
            format!("verified with key {}", publisher_key.fingerprint()),
            "{signed}"
        );
        let text = metrics(&proxy).await;
        assert_eq!(
            fallback_pulls(&text, Some("SignatureMissing")),
            2.0,
            "{text}"
        );
        assert_eq!(
            fallback_pulls(&text, Some("SignatureInvalid")),
            2.0,
            "{text}"
        );
        // A warm pull of the signed image is served from the verdict: still patched.
        assert_eq!(get(&proxy, &name("signed"), "1").await.ok(), patched);

        // The publisher signs later: once the verdict is older than
        // `patch.retry_failed_after`, the next pull checks again and gets the patch.
        push_signature(
            &env,
            "test/unsigned",
            &publisher,
            &format!("{UPSTREAM}/test/unsigned"),
            &original,
        )
        .await;
        assert_eq!(
            get(&proxy, &name("unsigned"), "1").await.ok(),
            original.manifest.digest,
            "the verdict is still fresh"
        );
        proxy.clock.advance(Duration::from_secs(600));
        assert_eq!(get(&proxy, &name("unsigned"), "1").await.ok(), patched);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_patching_signs_the_new_digest_and_the_old_keeps_its_signature() {
    if !tools(false) || !common::require_tools(&["openssl"]) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("test/app", "1", &original).await;
        let keys = env.path("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (operator, public) = openssl_key_pair(&keys, "operator");
        let proxy = env
            .proxy(UPSTREAM, WAIT, |c| {
                c.scan.push("result_ttl = \"1h\"".into());
                c.signing = vec![format!("key = {:?}", operator.display().to_string())];
            })
            .await;
        let name = format!("{UPSTREAM}/test/app");
        let first = get(&proxy, &name, "1").await.ok().to_owned();
        assert_eq!(signed_digest(&proxy, &name, &first).await, first);
        // The attestation names the repositories planned from and their signed indexes.
        let before = predicate(&proxy, &name, &first).await["repositories"].clone();
        let listed = before.as_array().unwrap();
        assert!(!listed.is_empty(), "{before}");
        for repository in listed {
            let url = repository["url"].as_str().unwrap();
            assert!(url.starts_with(&env.repo.url()), "{repository}");
            assert!(url.contains("/dists/"), "{repository}");
            let index = repository["index"].as_str().unwrap();
            let suite = url.rsplit('/').next().unwrap();
            assert!(index.starts_with(&format!("{suite}@")), "{repository}");
            assert!(index.contains('#'), "{repository}");
        }

        // A newer fix: the result's TTL runs out and the next pull re-patches.
        env.repo.add(&libfoo(NEWER, "amd64"));
        env.repo.publish();
        proxy.clock.advance(Duration::from_secs(2 * 3600));
        let second = poll_until_changed(&proxy, &name, "1", &first, 60).await;
        let second = second.ok().to_owned();
        assert_ne!(second, first, "re-patched within 60 s");

        // Each digest has its own signature, verified by openssl from the served bytes.
        assert_eq!(signed_digest(&proxy, &name, &second).await, second);
        assert_eq!(signed_digest(&proxy, &name, &first).await, first);
        let check = env.path("check");
        std::fs::create_dir_all(&check).unwrap();
        for digest in [&first, &second] {
            let hex = digest.strip_prefix("sha256:").unwrap();
            let sig: Value = serde_json::from_slice(
                &bytes(&proxy, &format!("/v2/{name}/manifests/sha256-{hex}.sig")).await,
            )
            .unwrap();
            let layer = &sig["layers"][0];
            let payload = bytes(
                &proxy,
                &format!("/v2/{name}/blobs/{}", layer["digest"].as_str().unwrap()),
            )
            .await;
            let der = BASE64
                .decode(
                    layer["annotations"]["dev.cosignproject.cosign/signature"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
            assert!(
                openssl_verifies(&check, &public, &payload, &der),
                "{digest}"
            );
            assert_eq!(sig["subject"]["digest"], digest.as_str());
        }
        // The new attestation names the newer package and the newer index publication.
        let predicate = predicate(&proxy, &name, &second).await;
        assert_eq!(
            predicate["platforms"][0]["packages"][0]["to"], NEWER,
            "{predicate}"
        );
        assert_ne!(predicate["repositories"], before, "{predicate}");
        assert_eq!(
            predicate["repositories"][0]["url"], before[0]["url"],
            "{predicate}"
        );
    })
    .await;
}
