//! The VEX document of a patched image as an OCI 1.1 referrer: an artifact manifest whose
//! `subject` is the patched manifest, `artifactType` `application/vnd.openvex+json`, the
//! empty config, and the document as its one layer. Clients find it with
//! `GET /v2/<name>/referrers/<patched digest>`.

use serde_json::json;

use crate::distribution::media_type;
use crate::distribution::Digest;

pub const VEX_ARTIFACT_TYPE: &str = "application/vnd.openvex+json";
/// The OCI empty descriptor's media type and content.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONTENT: &[u8] = b"{}";

/// The artifact: its manifest and the blobs it names.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub digest: Digest,
    /// (digest, bytes) of the empty config and the document.
    pub blobs: Vec<(Digest, Vec<u8>)>,
    /// The descriptor a referrers index lists.
    pub descriptor: serde_json::Value,
}

/// The referrer of `subject` (digest, media type, size) carrying `document`.
pub fn vex_artifact(document: Vec<u8>, subject: (&Digest, &str, u64)) -> Artifact {
    let empty = Digest::sha256_of(EMPTY_CONTENT);
    let vex = Digest::sha256_of(&document);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": VEX_ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": empty.to_string(),
            "size": EMPTY_CONTENT.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": VEX_ARTIFACT_TYPE,
            "digest": vex.to_string(),
            "size": document.len(),
        }],
        "subject": {
            "mediaType": subject.1,
            "digest": subject.0.to_string(),
            "size": subject.2,
        },
    });
    // serde_json's map is sorted: the same document gives the same bytes.
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    let digest = Digest::sha256_of(&manifest);
    let descriptor = json!({
        "mediaType": media_type::OCI_MANIFEST,
        "digest": digest.to_string(),
        "size": manifest.len(),
        "artifactType": VEX_ARTIFACT_TYPE,
    });
    Artifact {
        manifest,
        digest,
        blobs: vec![(empty, EMPTY_CONTENT.to_vec()), (vex, document)],
        descriptor,
    }
}
