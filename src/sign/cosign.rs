//! cosign's formats: the simple-signing payload, the signature artifact of the
//! `sha256-<hex>.sig` tag, and the attestation artifact of the `sha256-<hex>.att` tag, as
//! `cosign verify`, `cosign verify-attestation` and containers/image's sigstore support
//! (`use-sigstore-attachments`) read them. Each artifact also names its image as `subject`,
//! so the OCI 1.1 referrers API lists it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::json;

use super::key::SigningKey;
use crate::distribution::{media_type, Digest};
use crate::patch::referrer::Artifact;

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The artifact types a referrers index lists them under (cosign's OCI 1.1 names).
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const ATTESTATION_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.att.v1+json";

/// Which attachment a tag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    Signature,
    Attestation,
}

impl Attachment {
    pub fn suffix(self) -> &'static str {
        match self {
            Attachment::Signature => "sig",
            Attachment::Attestation => "att",
        }
    }

    pub fn artifact_type(self) -> &'static str {
        match self {
            Attachment::Signature => SIGNATURE_ARTIFACT_TYPE,
            Attachment::Attestation => ATTESTATION_ARTIFACT_TYPE,
        }
    }
}

/// `sha256-<hex>.sig` (or `.att`): the tag cosign keeps `digest`'s attachment under.
pub fn attachment_tag(digest: &Digest, kind: Attachment) -> String {
    format!(
        "{}-{}.{}",
        digest.algorithm().as_str(),
        digest.hex(),
        kind.suffix()
    )
}

/// The image digest and attachment a `sha256-<hex>.sig`/`.att` tag names, if it is one.
pub fn parse_attachment_tag(tag: &str) -> Option<(Digest, Attachment)> {
    let (rest, kind) = if let Some(rest) = tag.strip_suffix(".sig") {
        (rest, Attachment::Signature)
    } else {
        (tag.strip_suffix(".att")?, Attachment::Attestation)
    };
    let (algorithm, hex) = rest.split_once('-')?;
    format!("{algorithm}:{hex}").parse().ok().map(|d| (d, kind))
}

/// The simple-signing payload cosign signs: the image's name and digest. Key order and
/// spacing are fixed, so the payload (and its signature) is the same on every replica.
pub fn simple_signing_payload(docker_reference: &str, digest: &Digest) -> Vec<u8> {
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// The image an attachment is about: digest, media type, size.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
}

/// The signature artifact of `subject`, signed with `key` for `docker_reference`.
pub fn signature_artifact(key: &SigningKey, docker_reference: &str, subject: Subject) -> Artifact {
    let payload = simple_signing_payload(docker_reference, subject.digest);
    let signature = BASE64.encode(key.sign(&payload));
    let annotations = json!({ SIGNATURE_ANNOTATION: signature });
    artifact(
        Attachment::Signature,
        SIMPLE_SIGNING_MEDIA_TYPE,
        payload,
        annotations,
        subject,
    )
}

/// The attestation artifact of `subject`: `envelope` (a DSSE envelope, already signed) with
/// its predicate type, as `cosign attest` stores it (an empty signature annotation: the
/// signature is inside the envelope).
pub fn attestation_artifact(envelope: Vec<u8>, predicate_type: &str, subject: Subject) -> Artifact {
    let annotations = json!({
        SIGNATURE_ANNOTATION: "",
        PREDICATE_TYPE_ANNOTATION: predicate_type,
    });
    artifact(
        Attachment::Attestation,
        DSSE_MEDIA_TYPE,
        envelope,
        annotations,
        subject,
    )
}

/// cosign's layout: an image config naming the one layer, the layer with its annotations.
fn artifact(
    kind: Attachment,
    layer_media_type: &str,
    layer: Vec<u8>,
    annotations: serde_json::Value,
    subject: Subject,
) -> Artifact {
    let layer_digest = Digest::sha256_of(&layer);
    // Zero times, as cosign writes them: the artifact is the same whenever it is made.
    let config = json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = Digest::sha256_of(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": kind.artifact_type(),
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": layer_media_type,
            "digest": layer_digest.to_string(),
            "size": layer.len(),
            "annotations": annotations,
        }],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest.to_string(),
            "size": subject.size,
        },
    });
    // serde_json's map is sorted: the same input gives the same bytes.
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    let digest = Digest::sha256_of(&manifest);
    let descriptor = json!({
        "mediaType": media_type::OCI_MANIFEST,
        "digest": digest.to_string(),
        "size": manifest.len(),
        "artifactType": kind.artifact_type(),
    });
    Artifact {
        manifest,
        digest,
        blobs: vec![(config_digest, config), (layer_digest, layer)],
        descriptor,
    }
}
