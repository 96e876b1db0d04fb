//! The patched image's JSON: config, manifest and index, as the exact bytes that are
//! hashed, stored and served.
//!
//! The original layers stay untouched (their descriptors are copied as JSON values, with
//! every field they had); one patch layer goes on top, in the manifest's media-type family.
//! Re-patching a patchpull image replaces its patch layer instead of stacking a second one.
//! Output is compact JSON with sorted keys, so equal inputs give equal digests.

use serde_json::{Map, Value};

use crate::distribution::media_type::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_INDEX,
    OCI_MANIFEST,
};
use crate::distribution::reference::Digest;

mod index;
pub(crate) mod json;

#[cfg(test)]
mod tests;

pub use index::{
    assemble_index, EntryOutcome, PlatformEntry, ANNOTATION_PATCHED, ANNOTATION_REASON,
};

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// The history comment that marks patchpull's layer.
pub const HISTORY_COMMENT: &str = "patchpull";
/// Registries and clients commonly cap manifests at 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The media-type family of an image manifest; the patch layer keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Oci,
    Docker,
}

impl Family {
    /// The family of a single-image manifest media type.
    pub fn from_manifest_media_type(media_type: &str) -> Result<Family, AssembleError> {
        match media_type {
            OCI_MANIFEST => Ok(Family::Oci),
            DOCKER_MANIFEST => Ok(Family::Docker),
            OCI_INDEX | DOCKER_MANIFEST_LIST => Err(AssembleError::IsIndex),
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(AssembleError::Schema1),
            other => Err(AssembleError::UnsupportedMediaType(other.to_owned())),
        }
    }

    pub fn layer_media_type(self) -> &'static str {
        match self {
            Family::Oci => OCI_LAYER_GZIP,
            Family::Docker => DOCKER_LAYER_GZIP,
        }
    }
}

/// The patch layer's descriptor facts.
#[derive(Debug, Clone, Copy)]
pub struct PatchLayer<'a> {
    pub digest: &'a Digest,
    pub diff_id: &'a Digest,
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct ImageInput<'a> {
    /// The image being patched, as fetched (already verified against its digest).
    pub manifest: &'a [u8],
    pub manifest_media_type: &'a str,
    pub manifest_digest: &'a Digest,
    pub config: &'a [u8],
    pub layer: PatchLayer<'a>,
    /// `docker.io/library/debian:bookworm`: the base annotation's value.
    pub base_name: &'a str,
    /// The history entry's text, saying what was updated.
    pub created_by: &'a str,
    /// RFC 3339; `None` leaves the history entry without a time, keeping the digest
    /// independent of the clock.
    pub created: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layer_media_type: &'static str,
}

/// A patchpull patch found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingPatch {
    /// The patch layer's index in the manifest's layers: always the last.
    pub layer_index: usize,
    /// From the manifest's base annotations: the image the first patch was made from.
    pub base_name: Option<String>,
    pub base_digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("{what} is not valid JSON or cannot be written as JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {problem}")]
    Invalid { what: &'static str, problem: String },
    #[error("an index or manifest list was given where an image manifest is needed")]
    IsIndex,
    #[error("an image manifest was given where an index is needed")]
    NotIndex,
    #[error("Docker schema 1 manifests cannot be patched")]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("the manifest has a subject: it is an artifact, not an image")]
    HasSubject,
    #[error("the manifest has no config descriptor")]
    MissingConfig,
    #[error("the config media type {0:?} is not an image config: not an image")]
    NotAnImage(String),
    #[error("{what} does not match its digest {expected}")]
    DigestMismatch {
        what: &'static str,
        expected: String,
    },
    #[error("the config lists {diff_ids} diff_ids but {layers} {of}")]
    LayerCount {
        diff_ids: usize,
        layers: usize,
        of: &'static str,
    },
    #[error("platform manifest {0} names no entry of the index")]
    UnknownReplacement(String),
    #[error("the assembled manifest is {0} bytes, above the 4 MiB manifest limit")]
    TooLarge(usize),
}

/// Builds the patched config and manifest: the original layers, then `input.layer`.
pub fn assemble(input: &ImageInput) -> Result<AssembledImage, AssembleError> {
    let family = Family::from_manifest_media_type(input.manifest_media_type)?;
    if !input.manifest_digest.verifies(input.manifest) {
        return Err(AssembleError::DigestMismatch {
            what: "the manifest",
            expected: input.manifest_digest.to_string(),
        });
    }
    let mut manifest = json::parse_object(input.manifest, "the manifest")?;
    check_manifest(&manifest, input.manifest_media_type)?;
    let config_desc = config_descriptor(&manifest)?;
    let config_digest = json::digest_field(config_desc, "the config descriptor")?;
    if !config_digest.verifies(input.config) {
        return Err(AssembleError::DigestMismatch {
            what: "the config",
            expected: config_digest.to_string(),
        });
    }
    let mut config = json::parse_object(input.config, "the config")?;
    let layer_count = layers(&manifest)?.len();
    check_config(&config, layer_count)?;

    let existing = detect(&manifest, &config)?;
    let (base_name, base_digest) = match &existing {
        Some(patch) => (
            patch
                .base_name
                .clone()
                .unwrap_or_else(|| input.base_name.to_owned()),
            patch
                .base_digest
                .clone()
                .unwrap_or_else(|| input.manifest_digest.clone()),
        ),
        None => (input.base_name.to_owned(), input.manifest_digest.clone()),
    };

    // The config: drop an earlier patch, then record this one.
    let rootfs = json::object_field_mut(&mut config, "rootfs", "the config")?;
    let diff_ids = json::array_field_mut(rootfs, "diff_ids", "the config's rootfs")?;
    if existing.is_some() {
        diff_ids.pop();
    }
    diff_ids.push(Value::String(input.layer.diff_id.to_string()));
    let history = history_mut(&mut config, layer_count)?;
    if existing.is_some() {
        history.pop();
    }
    let mut entry = Map::new();
    if let Some(created) = input.created {
        entry.insert("created".into(), Value::String(created.to_owned()));
    }
    entry.insert(
        "created_by".into(),
        Value::String(input.created_by.to_owned()),
    );
    entry.insert("comment".into(), Value::String(HISTORY_COMMENT.to_owned()));
    history.push(Value::Object(entry));
    let config_bytes = json::canonical_bytes(&Value::Object(config), "the patched config")?;
    let new_config_digest = Digest::sha256_of(&config_bytes);

    // The manifest: same layers, the new config, the patch layer, the base annotations.
    let layers = json::array_field_mut(&mut manifest, "layers", "the manifest")?;
    if existing.is_some() {
        layers.pop();
    }
    let mut layer = Map::new();
    layer.insert("mediaType".into(), family.layer_media_type().into());
    layer.insert("digest".into(), input.layer.digest.to_string().into());
    layer.insert("size".into(), input.layer.size.into());
    layers.push(Value::Object(layer));
    let config_desc = json::object_field_mut(&mut manifest, "config", "the manifest")?;
    config_desc.insert("digest".into(), new_config_digest.to_string().into());
    config_desc.insert("size".into(), (config_bytes.len() as u64).into());
    set_base_annotations(&mut manifest, &base_name, &base_digest)?;
    let manifest_bytes = json::canonical_bytes(&Value::Object(manifest), "the patched manifest")?;
    if manifest_bytes.len() > MAX_MANIFEST_BYTES {
        return Err(AssembleError::TooLarge(manifest_bytes.len()));
    }
    Ok(AssembledImage {
        manifest_digest: Digest::sha256_of(&manifest_bytes),
        manifest: manifest_bytes,
        manifest_media_type: input.manifest_media_type.to_owned(),
        config: config_bytes,
        config_digest: new_config_digest,
        layer_media_type: family.layer_media_type(),
    })
}

/// Whether the image already carries a patchpull layer: its config's last history entry
/// is a non-empty one with the comment `patchpull`, matching the manifest's last layer.
pub fn existing_patch(
    manifest: &[u8],
    config: &[u8],
) -> Result<Option<ExistingPatch>, AssembleError> {
    let manifest = json::parse_object(manifest, "the manifest")?;
    let config = json::parse_object(config, "the config")?;
    check_config(&config, layers(&manifest)?.len())?;
    detect(&manifest, &config)
}

/// The base annotations of a manifest or index, when present and well-formed: on a
/// re-patch, the caller passes these on instead of the patched image's own name.
pub fn base_annotations(json: &[u8]) -> Result<(Option<String>, Option<Digest>), AssembleError> {
    let value = json::parse_object(json, "the manifest")?;
    Ok(read_base_annotations(&value))
}

fn read_base_annotations(value: &Map<String, Value>) -> (Option<String>, Option<Digest>) {
    let annotations = value.get("annotations").and_then(Value::as_object);
    let get = |key| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    (
        get(ANNOTATION_BASE_NAME).map(str::to_owned),
        get(ANNOTATION_BASE_DIGEST).and_then(|d| d.parse().ok()),
    )
}

fn detect(
    manifest: &Map<String, Value>,
    config: &Map<String, Value>,
) -> Result<Option<ExistingPatch>, AssembleError> {
    let layer_count = layers(manifest)?.len();
    let Some(last) = config
        .get("history")
        .and_then(Value::as_array)
        .and_then(|h| h.last())
    else {
        return Ok(None);
    };
    let ours = last.get("comment").and_then(Value::as_str) == Some(HISTORY_COMMENT)
        && !is_empty_layer(last);
    if !ours || layer_count == 0 {
        return Ok(None);
    }
    let (base_name, base_digest) = read_base_annotations(manifest);
    Ok(Some(ExistingPatch {
        layer_index: layer_count - 1,
        base_name,
        base_digest,
    }))
}

fn check_manifest(manifest: &Map<String, Value>, media_type: &str) -> Result<(), AssembleError> {
    match manifest.get("schemaVersion").and_then(Value::as_u64) {
        Some(2) => {}
        Some(1) => return Err(AssembleError::Schema1),
        _ => {
            return Err(AssembleError::Invalid {
                what: "the manifest",
                problem: "schemaVersion is not 2".into(),
            })
        }
    }
    if let Some(declared) = manifest.get("mediaType") {
        if declared.as_str() != Some(media_type) {
            return Err(AssembleError::Invalid {
                what: "the manifest",
                problem: format!("its mediaType {declared} is not {media_type:?}"),
            });
        }
    }
    if manifest.contains_key("manifests") {
        return Err(AssembleError::IsIndex);
    }
    if manifest.get("subject").is_some_and(|s| !s.is_null()) {
        return Err(AssembleError::HasSubject);
    }
    let config = config_descriptor(manifest)?;
    let config_type = config
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or("");
    if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
        return Err(AssembleError::NotAnImage(config_type.to_owned()));
    }
    if config.get("size").and_then(Value::as_u64).is_none() {
        return Err(AssembleError::Invalid {
            what: "the config descriptor",
            problem: "size is not a number".into(),
        });
    }
    for (i, layer) in layers(manifest)?.iter().enumerate() {
        if !layer.is_object() {
            return Err(AssembleError::Invalid {
                what: "the manifest",
                problem: format!("layers[{i}] is not an object"),
            });
        }
    }
    Ok(())
}

fn config_descriptor(manifest: &Map<String, Value>) -> Result<&Map<String, Value>, AssembleError> {
    manifest
        .get("config")
        .and_then(Value::as_object)
        .ok_or(AssembleError::MissingConfig)
}

fn layers(manifest: &Map<String, Value>) -> Result<&Vec<Value>, AssembleError> {
    manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| AssembleError::Invalid {
            what: "the manifest",
            problem: "layers is missing or not an array".into(),
        })
}

fn is_empty_layer(history: &Value) -> bool {
    history.get("empty_layer").and_then(Value::as_bool) == Some(true)
}

/// The config's diff_ids must pair one to one with the manifest's layers and with the
/// history entries that made a layer; otherwise appending would misalign them.
fn check_config(config: &Map<String, Value>, layer_count: usize) -> Result<(), AssembleError> {
    let rootfs = config
        .get("rootfs")
        .and_then(Value::as_object)
        .ok_or_else(|| AssembleError::Invalid {
            what: "the config",
            problem: "rootfs is missing or not an object".into(),
        })?;
    let diff_ids = rootfs
        .get("diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| AssembleError::Invalid {
            what: "the config",
            problem: "rootfs.diff_ids is missing or not an array".into(),
        })?;
    for (i, id) in diff_ids.iter().enumerate() {
        if id.as_str().and_then(|s| s.parse::<Digest>().ok()).is_none() {
            return Err(AssembleError::Invalid {
                what: "the config",
                problem: format!("rootfs.diff_ids[{i}] is not a digest"),
            });
        }
    }
    if diff_ids.len() != layer_count {
        return Err(AssembleError::LayerCount {
            diff_ids: diff_ids.len(),
            layers: layer_count,
            of: "the manifest has layers",
        });
    }
    match config.get("history") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(history)) => {
            // Fewer entries than layers is common (tools that skip history); they are
            // padded. More entries than layers cannot be lined up.
            let made_layers = history.iter().filter(|h| !is_empty_layer(h)).count();
            if made_layers > diff_ids.len() {
                return Err(AssembleError::LayerCount {
                    diff_ids: diff_ids.len(),
                    layers: made_layers,
                    of: "history entries made layers",
                });
            }
            Ok(())
        }
        Some(_) => Err(AssembleError::Invalid {
            what: "the config",
            problem: "history is not an array".into(),
        }),
    }
}

/// The config's history, created or padded with empty entries so that one entry per
/// existing layer precedes ours (as BuildKit fills in missing history).
fn history_mut(
    config: &mut Map<String, Value>,
    layer_count: usize,
) -> Result<&mut Vec<Value>, AssembleError> {
    let slot = config.entry("history").or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Array(vec![Value::Object(Map::new()); layer_count]);
    }
    let history = slot.as_array_mut().ok_or_else(|| AssembleError::Invalid {
        what: "the config",
        problem: "history is not an array".into(),
    })?;
    let made_layers = history.iter().filter(|h| !is_empty_layer(h)).count();
    for _ in made_layers..layer_count {
        history.push(Value::Object(Map::new()));
    }
    Ok(history)
}

pub(super) fn set_base_annotations(
    value: &mut Map<String, Value>,
    base_name: &str,
    base_digest: &Digest,
) -> Result<(), AssembleError> {
    let slot = value.entry("annotations").or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    let annotations = slot.as_object_mut().ok_or_else(|| AssembleError::Invalid {
        what: "the manifest",
        problem: "annotations is not an object".into(),
    })?;
    annotations.insert(ANNOTATION_BASE_NAME.into(), base_name.into());
    annotations.insert(
        ANNOTATION_BASE_DIGEST.into(),
        base_digest.to_string().into(),
    );
    Ok(())
}
