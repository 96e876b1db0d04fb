//! Checking an original's cosign signature: the layers of its `sha256-<hex>.sig` artifact
//! are simple-signing payloads with a signature annotation; one of them must verify with
//! the configured key and name the original's digest.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::cosign::{SIGNATURE_ANNOTATION, SIGNATURE_TYPE, SIMPLE_SIGNING_MEDIA_TYPE};
use super::key::VerifyingKey;
use crate::distribution::Digest;

/// At most this many signature layers are fetched and checked.
pub const MAX_SIGNATURES: usize = 16;
/// A simple-signing payload is small; a bigger layer is not one.
pub const MAX_PAYLOAD: u64 = 64 * 1024;

/// One signature of a `.sig` artifact: the payload's blob and the base64 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    pub payload: Digest,
    pub size: u64,
    pub signature: String,
}

/// The signature layers of a `.sig` artifact manifest (others are skipped).
///
/// # Errors
/// The manifest is not JSON or names no signature.
pub fn signature_layers(manifest: &[u8]) -> Result<Vec<SignatureLayer>, String> {
    let doc: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| format!("the signature manifest is not JSON ({e})"))?;
    let mut found = Vec::new();
    for layer in doc["layers"].as_array().into_iter().flatten() {
        if layer["mediaType"] != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let (Some(digest), Some(size), Some(signature)) = (
            layer["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok()),
            layer["size"].as_u64(),
            layer["annotations"][SIGNATURE_ANNOTATION].as_str(),
        ) else {
            continue;
        };
        if size > MAX_PAYLOAD || found.len() == MAX_SIGNATURES {
            continue;
        }
        found.push(SignatureLayer {
            payload: digest,
            size,
            signature: signature.to_owned(),
        });
    }
    if found.is_empty() {
        return Err("the signature artifact has no simple-signing layer".to_owned());
    }
    Ok(found)
}

/// Whether `payload` (the bytes of `layer.payload`, already digest-checked) is `key`'s
/// signature of `image`.
///
/// # Errors
/// Why it is not: the signature does not verify with the key, or the payload is of
/// another image or no cosign payload.
pub fn check(
    layer: &SignatureLayer,
    payload: &[u8],
    key: &VerifyingKey,
    image: &Digest,
) -> Result<(), String> {
    let signature = BASE64
        .decode(layer.signature.trim())
        .map_err(|_| "the signature annotation is not base64".to_owned())?;
    if !key.verifies(payload, &signature) {
        return Err(format!(
            "the signature does not verify with key {}",
            key.fingerprint()
        ));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| "the signed payload is not JSON".to_owned())?;
    if doc["critical"]["type"] != SIGNATURE_TYPE {
        return Err("the signed payload is not a cosign container image signature".to_owned());
    }
    let signed = doc["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if signed != image.to_string() {
        return Err(format!("the signature is of {signed:?}, not {image}"));
    }
    Ok(())
}
