use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use p256::pkcs8::EncodePrivateKey as _;

use super::cosign::{self, Attachment, Subject};
use super::key::{encrypt_cosign, KeyError, SigningKey};
use super::{attest, verify};
use crate::config::Secret;
use crate::distribution::Digest;

/// A fixed P-256 key, so the tests' signatures are stable.
fn test_key_der() -> Vec<u8> {
    let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    secret.to_pkcs8_der().unwrap().as_bytes().to_vec()
}

fn pkcs8_pem() -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", test_key_der()))
}

fn digest() -> Digest {
    Digest::sha256_of(b"manifest")
}

#[test]
fn a_pkcs8_key_signs_and_its_public_key_verifies() {
    let key = SigningKey::from_pem(&pkcs8_pem(), None).unwrap();
    let signature = key.sign(b"payload");
    assert!(key.public().verifies(b"payload", &signature));
    assert!(!key.public().verifies(b"other", &signature));
    // RFC 6979: the same message, the same signature.
    assert_eq!(signature, key.sign(b"payload"));
    let public = super::VerifyingKey::from_pem(&key.public().to_pem()).unwrap();
    assert_eq!(&public, key.public());
}

#[test]
fn a_cosign_encrypted_key_opens_with_its_password_only() {
    let text = encrypt_cosign(&test_key_der(), b"hunter2").unwrap();
    assert!(text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    let key = SigningKey::from_pem(&text, Some(&Secret::new("hunter2"))).unwrap();
    let plain = SigningKey::from_pem(&pkcs8_pem(), None).unwrap();
    assert_eq!(key.public(), plain.public());
    assert!(matches!(
        SigningKey::from_pem(&text, Some(&Secret::new("wrong"))),
        Err(KeyError::WrongPassword)
    ));
    assert!(matches!(
        SigningKey::from_pem(&text, None),
        Err(KeyError::NoPassword)
    ));
    // The older label is the same format.
    let old = text.replace("SIGSTORE", "COSIGN");
    assert!(SigningKey::from_pem(&old, Some(&Secret::new("hunter2"))).is_ok());
}

#[test]
fn debug_shows_no_key_material() {
    let key = SigningKey::from_pem(&pkcs8_pem(), None).unwrap();
    let shown = format!("{key:?}");
    assert!(shown.contains("[REDACTED]"), "{shown}");
    assert!(shown.contains(&key.public().fingerprint()), "{shown}");
    let der = test_key_der();
    let scalar_hex = hex::encode(&der[der.len() - 32..]);
    assert!(!shown.contains(&scalar_hex));
    assert!(!shown.contains("0707070707"), "{shown}");
}

#[test]
fn an_rsa_or_garbage_key_is_refused_with_a_reason() {
    let error = SigningKey::from_pem("not pem", None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a PEM private key"), "{error}");
    let other = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", vec![1, 2, 3]));
    let error = SigningKey::from_pem(&other, None).unwrap_err().to_string();
    assert!(error.contains("is not a private key"), "{error}");
}

#[test]
fn attachment_tags_round_trip() {
    let d = digest();
    let tag = cosign::attachment_tag(&d, Attachment::Signature);
    assert_eq!(tag, format!("sha256-{}.sig", d.hex()));
    assert_eq!(
        cosign::parse_attachment_tag(&tag),
        Some((d.clone(), Attachment::Signature))
    );
    let att = cosign::attachment_tag(&d, Attachment::Attestation);
    assert_eq!(
        cosign::parse_attachment_tag(&att),
        Some((d, Attachment::Attestation))
    );
    for tag in ["1.25", "sha256-abc.sig", "latest.sig", "sha256-.att"] {
        assert_eq!(cosign::parse_attachment_tag(tag), None, "{tag}");
    }
}

#[test]
fn the_signature_artifact_is_cosigns_layout_and_verifies() {
    let key = SigningKey::from_pem(&pkcs8_pem(), None).unwrap();
    let d = digest();
    let subject = Subject {
        digest: &d,
        media_type: crate::distribution::media_type::OCI_MANIFEST,
        size: 8,
    };
    let artifact = cosign::signature_artifact(&key, "docker.io/library/nginx", subject);
    let again = cosign::signature_artifact(&key, "docker.io/library/nginx", subject);
    assert_eq!(artifact.digest, again.digest, "deterministic");
    let manifest: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
    assert_eq!(manifest["config"]["mediaType"], cosign::CONFIG_MEDIA_TYPE);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        cosign::SIMPLE_SIGNING_MEDIA_TYPE
    );
    assert_eq!(manifest["subject"]["digest"], d.to_string());
    let layers = verify::signature_layers(&artifact.manifest).unwrap();
    let payload = &artifact.blobs[1].1;
    let doc: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(
        doc["critical"]["identity"]["docker-reference"],
        "docker.io/library/nginx"
    );
    assert_eq!(
        doc["critical"]["image"]["docker-manifest-digest"],
        d.to_string()
    );
    let identity = verify::Identity {
        hosts: vec!["docker.io".to_owned()],
        repository: "library/nginx".to_owned(),
    };
    verify::check(&layers[0], payload, key.public(), &d, &identity).unwrap();
    // Another image's digest, another key, a tampered payload: refused with the reason.
    let other = Digest::sha256_of(b"other");
    let error = verify::check(&layers[0], payload, key.public(), &other, &identity).unwrap_err();
    assert!(
        matches!(error, verify::VerifyError::OtherImage { .. }),
        "{error}"
    );
    let elsewhere = verify::Identity {
        hosts: vec!["docker.io".to_owned()],
        repository: "library/httpd".to_owned(),
    };
    let error = verify::check(&layers[0], payload, key.public(), &d, &elsewhere).unwrap_err();
    assert!(
        matches!(error, verify::VerifyError::OtherIdentity { .. }),
        "{error}"
    );
    let stranger = p256::SecretKey::from_slice(&[9u8; 32]).unwrap();
    let stranger_pem = pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        stranger.to_pkcs8_der().unwrap().as_bytes().to_vec(),
    ));
    let stranger = SigningKey::from_pem(&stranger_pem, None).unwrap();
    let error = verify::check(&layers[0], payload, stranger.public(), &d, &identity).unwrap_err();
    assert!(error.to_string().contains("does not verify"), "{error}");
    let mut tampered = payload.clone();
    tampered[10] ^= 1;
    assert!(verify::check(&layers[0], &tampered, key.public(), &d, &identity).is_err());
}

#[test]
fn a_signed_identity_matches_its_repository_as_containers_image_does() {
    let hub = verify::Identity {
        hosts: vec!["docker.io".to_owned(), "hub".to_owned()],
        repository: "library/nginx".to_owned(),
    };
    for accepted in [
        "docker.io/library/nginx",
        "index.docker.io/library/nginx",
        "docker.io/library/nginx:1.25",
        "nginx",
        "nginx:1.25",
        "docker.io/nginx@sha256:0000",
    ] {
        assert!(hub.accepts(accepted), "{accepted}");
    }
    for refused in [
        "docker.io/library/nginx-extra",
        "ghcr.io/library/nginx",
        "docker.io/other/nginx",
        "",
    ] {
        assert!(!hub.accepts(refused), "{refused}");
    }
    let local = verify::Identity {
        hosts: vec!["upstream.test".to_owned(), "127.0.0.1:5000".to_owned()],
        repository: "test/app".to_owned(),
    };
    assert!(local.accepts("127.0.0.1:5000/test/app:1"));
    assert!(local.accepts("upstream.test/test/app"));
    assert!(!local.accepts("127.0.0.1:5001/test/app"));
    assert!(!local.accepts("test/app"));
}

#[test]
fn the_attestation_is_a_signed_dsse_envelope_of_an_in_toto_statement() {
    let key = SigningKey::from_pem(&pkcs8_pem(), None).unwrap();
    let d = digest();
    let predicate = attest::PatchPredicate {
        original: attest::OriginalImage {
            name: "docker.io/library/nginx".into(),
            digest: Digest::sha256_of(b"original").to_string(),
            signature: None,
        },
        platforms: Vec::new(),
        repositories: vec![attest::RepositoryUsed {
            url: "http://deb.debian.org/debian-security/dists/bookworm-security".into(),
            index: "bookworm-security@2026-12-01T00:00:00Z#0123456789ab".into(),
        }],
        patchpull: attest::Tool::patchpull(),
    };
    let statement = attest::statement("docker.io/library/nginx", &d, &predicate);
    let envelope: serde_json::Value =
        serde_json::from_slice(&attest::envelope(&key, &statement)).unwrap();
    assert_eq!(envelope["payloadType"], attest::IN_TOTO_PAYLOAD_TYPE);
    let payload = BASE64
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(payload, statement);
    let signature = BASE64
        .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let pae = format!("DSSEv1 28 application/vnd.in-toto+json {} ", payload.len());
    let mut signed = pae.into_bytes();
    signed.extend_from_slice(&payload);
    assert!(key.public().verifies(&signed, &signature));
    let doc: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(doc["_type"], attest::STATEMENT_TYPE);
    assert_eq!(doc["subject"][0]["digest"]["sha256"], d.hex());
}
