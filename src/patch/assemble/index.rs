//! The patched index (or manifest list) of a multi-platform image.

use serde_json::Value;

use super::{json, set_base_annotations, AssembleError, MAX_MANIFEST_BYTES};
use crate::distribution::media_type::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use crate::distribution::reference::Digest;

/// What a patched index says of each platform descriptor, in an OCI index: `"true"` when
/// it points at a patched manifest, `"false"` when it is the original's.
pub const ANNOTATION_PATCHED: &str = "io.patchpull.patched";
/// Why a descriptor is the original's: `nothing to fix`, `patch failed: ...`.
pub const ANNOTATION_REASON: &str = "io.patchpull.reason";

/// One platform manifest of the index and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformEntry {
    /// Its digest in the index being patched.
    pub original: Digest,
    pub outcome: EntryOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOutcome {
    /// The entry points at this manifest instead.
    Patched {
        digest: Digest,
        size: u64,
        media_type: String,
    },
    /// The entry stays the original's; `reason` says why.
    Kept { reason: String },
}

/// Builds the patched index: the entries of patched platforms point at their patched
/// manifests (platform and other fields kept); every other entry (platforms kept, entries
/// that are not platforms such as attestation manifests) keeps its descriptor. An OCI
/// index gets the base annotations naming `base_name` and `index_digest`, and each entry
/// of `platforms` [`ANNOTATION_PATCHED`] (and, when kept, [`ANNOTATION_REASON`]); a
/// Docker manifest list's schema has no annotations, and it gets none.
///
/// `index_digest` is what the base digest annotation names: the index being patched, or,
/// when that index is itself a patchpull output, the original it names (see
/// [`super::base_annotations`]).
///
/// # Errors
/// [`AssembleError`] for an index that is not one, has a subject, or names no entry of
/// `platforms` ([`AssembleError::UnknownReplacement`]), and for a result above the
/// manifest size limit.
pub fn assemble_index(
    index: &[u8],
    index_media_type: &str,
    index_digest: &Digest,
    base_name: &str,
    platforms: &[PlatformEntry],
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
    let annotate = index_media_type == OCI_INDEX;
    let mut used = vec![false; platforms.len()];
    for (i, entry) in manifests.iter_mut().enumerate() {
        let descriptor = entry
            .as_object_mut()
            .ok_or_else(|| AssembleError::Invalid {
                what: "the index",
                problem: format!("manifests[{i}] is not an object"),
            })?;
        let digest = json::digest_field(descriptor, "an index entry")?;
        let Some(position) = platforms.iter().position(|p| p.original == digest) else {
            continue;
        };
        used[position] = true;
        let (patched, reason) = match &platforms[position].outcome {
            EntryOutcome::Patched {
                digest,
                size,
                media_type,
            } => {
                descriptor.insert("digest".into(), digest.to_string().into());
                descriptor.insert("size".into(), (*size).into());
                descriptor.insert("mediaType".into(), media_type.clone().into());
                ("true", None)
            }
            EntryOutcome::Kept { reason } => ("false", Some(reason.as_str())),
        };
        if annotate {
            let annotations = annotations_mut(descriptor, i)?;
            annotations.insert(ANNOTATION_PATCHED.into(), patched.into());
            match reason {
                Some(reason) => annotations.insert(ANNOTATION_REASON.into(), reason.into()),
                // A patchpull index patched again: an old reason no longer holds.
                None => annotations.remove(ANNOTATION_REASON),
            };
        }
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(AssembleError::UnknownReplacement(
            platforms[unused].original.to_string(),
        ));
    }
    if annotate {
        set_base_annotations(&mut value, base_name, index_digest)?;
    }
    let bytes = json::canonical_bytes(&Value::Object(value), "the patched index")?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(AssembleError::TooLarge(bytes.len()));
    }
    let digest = Digest::sha256_of(&bytes);
    Ok((bytes, digest))
}

/// The descriptor's annotations, made when it has none.
fn annotations_mut(
    descriptor: &mut serde_json::Map<String, Value>,
    i: usize,
) -> Result<&mut serde_json::Map<String, Value>, AssembleError> {
    let slot = descriptor
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if slot.is_null() {
        *slot = Value::Object(Default::default());
    }
    slot.as_object_mut().ok_or_else(|| AssembleError::Invalid {
        what: "the index",
        problem: format!("manifests[{i}].annotations is not an object"),
    })
}
