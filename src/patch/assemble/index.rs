//! The patched index (or manifest list) of a multi-platform image.

use serde_json::Value;

use super::{json, set_base_annotations, AssembleError, MAX_MANIFEST_BYTES};
use crate::distribution::media_type::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use crate::distribution::reference::Digest;

/// One platform manifest of the index and its patched replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub original: Digest,
    pub patched: Digest,
    pub size: u64,
    pub media_type: String,
}

/// Builds the patched index: the entries named in `replacements` point at their patched
/// manifests (platform and other fields kept); every other entry (platforms that were not
/// patched, attestation manifests) is kept as it was. An OCI index gets the base
/// annotations naming `base_name` and `index_digest`; a Docker manifest list has no
/// annotations and gets none.
///
/// `index_digest` is what the base digest annotation names: the index being patched, or,
/// when that index is itself a patchpull output, the original it names (see
/// [`super::base_annotations`]).
pub fn assemble_index(
    index: &[u8],
    index_media_type: &str,
    index_digest: &Digest,
    base_name: &str,
    replacements: &[Replacement],
) -> Result<(Vec<u8>, Digest), AssembleError> {
    if index_media_type != OCI_INDEX && index_media_type != DOCKER_MANIFEST_LIST {
        return Err(AssembleError::NotIndex);
    }
    let mut value = json::parse_object(index, "the index")?;
    if value.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(AssembleError::Invalid {
            what: "the index",
            problem: "schemaVersion is not 2".into(),
        });
    }
    if let Some(declared) = value.get("mediaType") {
        if declared.as_str() != Some(index_media_type) {
            return Err(AssembleError::Invalid {
                what: "the index",
                problem: format!("its mediaType {declared} is not {index_media_type:?}"),
            });
        }
    }
    if value.get("subject").is_some_and(|s| !s.is_null()) {
        return Err(AssembleError::HasSubject);
    }
    let manifests = json::array_field_mut(&mut value, "manifests", "the index")?;
    let mut used = vec![false; replacements.len()];
    for (i, entry) in manifests.iter_mut().enumerate() {
        let descriptor = entry
            .as_object_mut()
            .ok_or_else(|| AssembleError::Invalid {
                what: "the index",
                problem: format!("manifests[{i}] is not an object"),
            })?;
        let digest = json::digest_field(descriptor, "an index entry")?;
        let Some(position) = replacements.iter().position(|r| r.original == digest) else {
            continue;
        };
        used[position] = true;
        let replacement = &replacements[position];
        descriptor.insert("digest".into(), replacement.patched.to_string().into());
        descriptor.insert("size".into(), replacement.size.into());
        descriptor.insert("mediaType".into(), replacement.media_type.clone().into());
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(AssembleError::UnknownReplacement(
            replacements[unused].original.to_string(),
        ));
    }
    if index_media_type == OCI_INDEX {
        set_base_annotations(&mut value, base_name, index_digest)?;
    }
    let bytes = json::canonical_bytes(&Value::Object(value), "the patched index")?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(AssembleError::TooLarge(bytes.len()));
    }
    let digest = Digest::sha256_of(&bytes);
    Ok((bytes, digest))
}
