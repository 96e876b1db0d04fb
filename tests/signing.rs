//! Signed patched images, as clients that enforce signatures see them: a real registry
//! upstream, patchpull signing with a cosign-encrypted key, and `skopeo copy` with a
//! `policy.json` that requires `sigstoreSigned` by the operator's public key (sigstore
//! attachments on). The signature and the attestation are also checked with `openssl` from
//! the bytes served, apart from patchpull's own code.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;
#[path = "signing/originals.rs"]
mod originals;
#[allow(dead_code)]
#[path = "pipeline/support.rs"]
mod support;

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::Value;

use common::images::Format;
use image::{libfoo_image, NEW, OLD};
use support::*;

const UPSTREAM: &str = "upstream.test";

/// An EC P-256 key pair made by openssl: (PKCS#8 private PEM, public PEM).
fn openssl_key_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    support::generate_p256_key(&private);
    tool(
        "openssl",
        &[
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    (private, public)
}

/// The PKCS#8 DER inside a PEM private key.
fn pkcs8_der(pem_path: &Path) -> Vec<u8> {
    pem::parse(std::fs::read_to_string(pem_path).unwrap())
        .unwrap()
        .contents()
        .to_vec()
}

/// `policy.json` accepting images from the proxy's `upstream.test` prefix signed by `public`,
/// their signed identity the upstream name; and `registries.d` turning on sigstore
/// attachments.
fn client_policy(dir: &Path, authority: &str, public: &Path) -> (String, String) {
    let prefix = format!("{authority}/{UPSTREAM}");
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                prefix.clone(): [{
                    "type": "sigstoreSigned",
                    "keyPath": public,
                    "signedIdentity": {
                        "type": "remapIdentity",
                        "prefix": prefix,
                        "signedPrefix": UPSTREAM,
                    },
                }],
            },
        },
    });
    std::fs::create_dir_all(dir).unwrap();
    let policy_path = dir.join("policy.json");
    std::fs::write(&policy_path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    let registries = dir.join("registries.d");
    std::fs::create_dir_all(&registries).unwrap();
    std::fs::write(
        registries.join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    (
        policy_path.display().to_string(),
        registries.display().to_string(),
    )
}

fn skopeo_copy_with_policy(
    policy: &(String, String),
    source: &str,
    layout: &Path,
) -> std::process::Output {
    let dst = format!("oci:{}:x", layout.display());
    run_bounded(
        "skopeo",
        &[
            "--policy",
            &policy.0,
            "--registries.d",
            &policy.1,
            "copy",
            "--src-tls-verify=false",
            "--retry-times=0",
            "-q",
            source,
            &dst,
        ],
    )
}

async fn bytes(proxy: &common::Proxy, path: &str) -> Vec<u8> {
    let resp = proxy.get(path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.bytes().await.unwrap().to_vec()
}

/// `openssl dgst -sha256 -verify public -signature sig message`: whether openssl accepts it.
fn openssl_verifies(dir: &Path, public: &Path, message: &[u8], signature: &[u8]) -> bool {
    let message_path = dir.join("message");
    let signature_path = dir.join("signature");
    std::fs::write(&message_path, message).unwrap();
    std::fs::write(&signature_path, signature).unwrap();
    run_bounded(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            public.to_str().unwrap(),
            "-signature",
            signature_path.to_str().unwrap(),
            message_path.to_str().unwrap(),
        ],
    )
    .status
    .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_accepts_the_signed_patched_image_and_refuses_what_the_key_did_not_sign() {
    if !tools(false) || !common::require_tools(&["openssl"]) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("test/app", "1", &original).await;
        let keys = env.path("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (private, public) = openssl_key_pair(&keys, "operator");
        let (_, stranger) = openssl_key_pair(&keys, "stranger");
        // The operator's key as cosign writes it: encrypted, the password in a file.
        let encrypted = keys.join("cosign.key");
        std::fs::write(
            &encrypted,
            patchpull::sign::key::encrypt_cosign(&pkcs8_der(&private), b"s3cret").unwrap(),
        )
        .unwrap();
        let password = keys.join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let proxy = env
            .proxy(UPSTREAM, WAIT, |c| {
                c.signing = vec![
                    format!("key = {:?}", encrypted.display().to_string()),
                    format!("password_file = {:?}", password.display().to_string()),
                ];
            })
            .await;
        let source = |reference: &str| {
            format!(
                "docker://{}/{UPSTREAM}/test/app{reference}",
                proxy.authority()
            )
        };
        let patched = get(&proxy, &format!("{UPSTREAM}/test/app"), "1")
            .await
            .ok()
            .to_owned();
        assert_ne!(patched, original.manifest.digest);

        // skopeo with the operator's key: the patched image passes.
        let policy = client_policy(&env.path("good"), &proxy.authority(), &public);
        let out = skopeo_copy_with_policy(&policy, &source(":1"), &env.path("layout"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("sigstore disabled") {
            // Debian's containers/image is built without sigstore: this skopeo cannot check
            // signatures at all. The openssl checks below still run.
            eprintln!("skopeo here has sigstore disabled ({stderr}); client checks skipped");
        } else {
            assert!(
                out.status.success(),
                "skopeo refused the signed image: {stderr}"
            );
            // The original has no signature by that key.
            let out = skopeo_copy_with_policy(&policy, &source(":1-original"), &env.path("orig"));
            assert!(!out.status.success(), "the unsigned original passed");
            // Another key: refused.
            let wrong = client_policy(&env.path("wrong"), &proxy.authority(), &stranger);
            let out = skopeo_copy_with_policy(&wrong, &source(":1"), &env.path("layout2"));
            assert!(
                !out.status.success(),
                "a stranger's key accepted the signature"
            );
        }

        // The signature, checked by openssl from the served bytes.
        let base = format!("/v2/{UPSTREAM}/test/app");
        let hex = patched.strip_prefix("sha256:").unwrap();
        let sig: Value = serde_json::from_slice(
            &bytes(&proxy, &format!("{base}/manifests/sha256-{hex}.sig")).await,
        )
        .unwrap();
        let layer = &sig["layers"][0];
        assert_eq!(
            layer["mediaType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        let payload = bytes(
            &proxy,
            &format!("{base}/blobs/{}", layer["digest"].as_str().unwrap()),
        )
        .await;
        let doc: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            doc["critical"]["image"]["docker-manifest-digest"],
            patched.as_str()
        );
        assert_eq!(
            doc["critical"]["identity"]["docker-reference"],
            format!("{UPSTREAM}/test/app")
        );
        assert_eq!(doc["critical"]["type"], "cosign container image signature");
        let der = BASE64
            .decode(
                layer["annotations"]["dev.cosignproject.cosign/signature"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let check = env.path("check");
        std::fs::create_dir_all(&check).unwrap();
        assert!(openssl_verifies(&check, &public, &payload, &der));
        assert!(!openssl_verifies(&check, &stranger, &payload, &der));
        let mut tampered = payload.clone();
        tampered[20] ^= 1;
        assert!(
            !openssl_verifies(&check, &public, &tampered, &der),
            "tampered payload"
        );

        // The attestation: DSSE PAE computed here, verified by openssl; the predicate names
        // the original and the package change.
        let att: Value = serde_json::from_slice(
            &bytes(&proxy, &format!("{base}/manifests/sha256-{hex}.att")).await,
        )
        .unwrap();
        let layer = &att["layers"][0];
        assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
        assert_eq!(
            layer["annotations"]["predicateType"],
            "https://patchpull.dev/attestation/patch/v1"
        );
        let envelope: Value = serde_json::from_slice(
            &bytes(
                &proxy,
                &format!("{base}/blobs/{}", layer["digest"].as_str().unwrap()),
            )
            .await,
        )
        .unwrap();
        let statement = BASE64
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        let payload_type = envelope["payloadType"].as_str().unwrap();
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            statement.len()
        )
        .into_bytes();
        pae.extend_from_slice(&statement);
        let sig = BASE64
            .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        assert!(openssl_verifies(&check, &public, &pae, &sig));
        let statement: Value = serde_json::from_slice(&statement).unwrap();
        assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(statement["subject"][0]["digest"]["sha256"], hex);
        let predicate = &statement["predicate"];
        assert_eq!(
            predicate["original"]["digest"],
            original.manifest.digest.as_str()
        );
        let package = &predicate["platforms"][0]["packages"][0];
        assert_eq!(package["name"], "libfoo", "{predicate}");
        assert_eq!(package["from"], OLD);
        assert_eq!(package["to"], NEW);
        assert!(package["purl_to"].as_str().unwrap().starts_with("pkg:deb/"));

        // Both are referrers of the patched image, beside the VEX document.
        let referrers: Value =
            serde_json::from_slice(&bytes(&proxy, &format!("{base}/referrers/{patched}")).await)
                .unwrap();
        let mut types: Vec<&str> = referrers["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["artifactType"].as_str().unwrap())
            .collect();
        types.sort();
        assert_eq!(
            types,
            [
                "application/vnd.dev.cosign.artifact.att.v1+json",
                "application/vnd.dev.cosign.artifact.sig.v1+json",
                "application/vnd.openvex+json",
            ],
            "{referrers}"
        );

        // The key is nowhere: not in the store, the metrics, or what was served.
        let secrets: Vec<String> = {
            let der = pkcs8_der(&private);
            vec![
                BASE64.encode(&der),
                {
                    use p256::pkcs8::DecodePrivateKey as _;
                    let scalar = p256::SecretKey::from_pkcs8_der(&der).unwrap().to_bytes();
                    hex::encode(scalar)
                },
                BASE64.encode(
                    p256::SecretKey::from_pkcs8_der(&der)
                        .unwrap()
                        .to_bytes()
                        .as_slice(),
                ),
                std::fs::read_to_string(&encrypted)
                    .unwrap()
                    .lines()
                    .nth(1)
                    .unwrap()
                    .to_owned(),
                "s3cret".to_owned(),
            ]
        };
        let mut seen = metrics(&proxy).await;
        seen.push_str(&serde_json::to_string(&sig).unwrap());
        seen.push_str(&serde_json::to_string(&att).unwrap());
        for entry in walk(&proxy.store_dir()) {
            seen.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap()));
        }
        for secret in &secrets {
            assert!(!seen.contains(secret.as_str()), "key material leaked");
        }
    })
    .await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
