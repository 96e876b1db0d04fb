//! Checking an original's cosign signature: the layers of its `sha256-<hex>.sig` artifact
//! are simple-signing payloads with a signature annotation; one of them must verify with
//! the configured key, name the original's digest (`critical.image.docker-manifest-digest`)
//! and name its repository (`critical.identity.docker-reference`, compared as
//! containers/image's `matchRepository` does: tag and digest ignored, Docker Hub's host
//! spellings and `library/` normalized).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::cosign::{SIGNATURE_ANNOTATION, SIGNATURE_TYPE, SIMPLE_SIGNING_MEDIA_TYPE};
use super::key::VerifyingKey;
use crate::distribution::Digest;

/// At most this many signature layers are fetched and checked.
pub const MAX_SIGNATURES: usize = 16;
/// A simple-signing payload is small; a bigger layer is not one.
pub const MAX_PAYLOAD: u64 = 64 * 1024;

/// Why a signature artifact does not vouch for an image. The messages name digests and key
/// fingerprints only, so they may be shown to clients and in the admin API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature manifest is not JSON")]
    ManifestNotJson,
    #[error("the signature artifact has no simple-signing layer")]
    NoSignatureLayer,
    #[error("the signature annotation is not base64")]
    NotBase64,
    #[error("the signature does not verify with key {key}")]
    WrongKey { key: String },
    #[error("the signed payload is not a cosign container image signature")]
    NotCosignPayload,
    #[error("the signature is of {signed:?}, not {image}")]
    OtherImage { signed: String, image: Digest },
    #[error("the signature names {signed:?}, not {expected}")]
    OtherIdentity { signed: String, expected: String },
}

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
pub fn signature_layers(manifest: &[u8]) -> Result<Vec<SignatureLayer>, VerifyError> {
    let doc: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|_| VerifyError::ManifestNotJson)?;
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
        return Err(VerifyError::NoSignatureLayer);
    }
    Ok(found)
}

/// The repository a signature must name: its hosts (the upstream's name, aliases and
/// `host[:port]`) and its path (`library/nginx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub hosts: Vec<String>,
    pub repository: String,
}

/// Docker Hub's spellings of its own host.
const DOCKER_HUB: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

impl Identity {
    /// Whether `docker_reference` (`host/path[:tag][@digest]`, or a Docker Hub short name)
    /// names this repository.
    pub fn accepts(&self, docker_reference: &str) -> bool {
        let name = docker_reference
            .split_once('@')
            .map_or(docker_reference, |(n, _)| n);
        let name = match name.rsplit_once(':') {
            Some((n, tag)) if !tag.contains('/') => n,
            _ => name,
        };
        let (host, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest.to_owned())
            }
            _ => ("docker.io", name.to_owned()),
        };
        let hub = DOCKER_HUB.contains(&host);
        let path = if hub && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let host_ok = self
            .hosts
            .iter()
            .any(|h| h == host || (hub && DOCKER_HUB.contains(&h.as_str())));
        host_ok && path == self.repository
    }

    fn expected(&self) -> String {
        format!(
            "{}/{}",
            self.hosts.first().map_or("", String::as_str),
            self.repository
        )
    }
}

/// Whether `payload` (the bytes of `layer.payload`, already digest-checked) is `key`'s
/// signature of `image` in the repository `identity`.
///
/// # Errors
/// Why it is not: the signature does not verify with the key, or the payload is of
/// another image or repository, or no cosign payload.
pub fn check(
    layer: &SignatureLayer,
    payload: &[u8],
    key: &VerifyingKey,
    image: &Digest,
    identity: &Identity,
) -> Result<(), VerifyError> {
    let signature = BASE64
        .decode(layer.signature.trim())
        .map_err(|_| VerifyError::NotBase64)?;
    if !key.verifies(payload, &signature) {
        return Err(VerifyError::WrongKey {
            key: key.fingerprint(),
        });
    }
    let doc: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| VerifyError::NotCosignPayload)?;
    if doc["critical"]["type"] != SIGNATURE_TYPE {
        return Err(VerifyError::NotCosignPayload);
    }
    let signed = doc["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if signed != image.to_string() {
        return Err(VerifyError::OtherImage {
            signed: signed.chars().take(80).collect(),
            image: image.clone(),
        });
    }
    let reference = doc["critical"]["identity"]["docker-reference"]
        .as_str()
        .unwrap_or_default();
    if !identity.accepts(reference) {
        return Err(VerifyError::OtherIdentity {
            signed: reference.chars().take(200).collect(),
            expected: identity.expected(),
        });
    }
    Ok(())
}
