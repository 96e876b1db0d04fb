//! The in-toto attestation of a patch: a `https://in-toto.io/Statement/v1` whose subject is
//! the patched image and whose predicate says what was done to which original, in a DSSE
//! envelope signed with the operator's key (what `cosign verify-attestation` checks).
//! Nothing in it comes from the clock: replicas attest the same patch with the same bytes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;

use super::key::SigningKey;
use crate::distribution::Digest;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate patchpull writes (documented in docs/signing.md).
pub const PATCH_PREDICATE_TYPE: &str = "https://patchpull.dev/attestation/patch/v1";

/// What the predicate records about one patch.
#[derive(Debug, Clone, Serialize)]
pub struct PatchPredicate {
    pub original: OriginalImage,
    pub platforms: Vec<PlatformPatch>,
    /// The package repositories the plan read and their signed index versions, sorted.
    pub repositories: Vec<RepositoryUsed>,
    pub patchpull: Tool,
}

/// One package repository and the version of its signed index the plan was made from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RepositoryUsed {
    pub url: String,
    /// `bookworm-security@<Date>#<hash>`: changes with every publication of the index.
    pub index: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OriginalImage {
    /// The upstream name, `docker.io/library/nginx`.
    pub name: String,
    pub digest: String,
    /// Set when the original's signature was checked before patching (`require_signature`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<VerifiedSignature>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSignature {
    pub verified: bool,
    /// `sha256:<hex>` of the public key it verified with.
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlatformPatch {
    pub platform: String,
    pub original: String,
    pub patched: String,
    pub engine: String,
    pub packages: Vec<PackageChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageChange {
    pub name: String,
    pub from: String,
    pub to: String,
    pub purl_from: String,
    pub purl_to: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

impl Tool {
    pub fn patchpull() -> Tool {
        Tool {
            name: "patchpull".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The statement about `subject` (named `name`), sorted keys, no whitespace.
pub fn statement(name: &str, subject: &Digest, predicate: &PatchPredicate) -> Vec<u8> {
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": name,
            "digest": {subject.algorithm().as_str(): subject.hex()},
        }],
        "predicateType": PATCH_PREDICATE_TYPE,
        "predicate": predicate,
    });
    serde_json::to_vec(&statement).unwrap_or_default()
}

/// DSSE's pre-authentication encoding: what the signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The DSSE envelope of `statement`, signed with `key`.
pub fn envelope(key: &SigningKey, statement: &[u8]) -> Vec<u8> {
    let signature = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, statement));
    let envelope = json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": BASE64.encode(statement),
        "signatures": [{"keyid": "", "sig": BASE64.encode(signature)}],
    });
    serde_json::to_vec(&envelope).unwrap_or_default()
}
