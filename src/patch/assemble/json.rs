//! JSON helpers: parsing with located errors, and the canonical output form.

use serde_json::{Map, Value};

use super::AssembleError;
use crate::distribution::reference::Digest;

pub(super) fn parse_object(
    bytes: &[u8],
    what: &'static str,
) -> Result<Map<String, Value>, AssembleError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AssembleError::Invalid {
            what,
            problem: "not a JSON object".into(),
        }),
        Err(source) => Err(AssembleError::Json { what, source }),
    }
}

/// Compact JSON with every object's keys sorted by bytes, whether or not serde_json's
/// `preserve_order` feature is on somewhere in the build: the bytes are a function of the
/// value alone.
pub(super) fn canonical_bytes(value: &Value, what: &'static str) -> Result<Vec<u8>, AssembleError> {
    serde_json::to_vec(&sort_keys(value)).map_err(|source| AssembleError::Json { what, source })
}

/// `value` with every object's keys in byte order, whatever map type serde_json uses.
pub(crate) fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

pub(super) fn digest_field(
    map: &Map<String, Value>,
    what: &'static str,
) -> Result<Digest, AssembleError> {
    map.get("digest")
        .and_then(Value::as_str)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| AssembleError::Invalid {
            what,
            problem: "digest is missing or invalid".into(),
        })
}

pub(super) fn object_field_mut<'m>(
    map: &'m mut Map<String, Value>,
    key: &str,
    what: &'static str,
) -> Result<&'m mut Map<String, Value>, AssembleError> {
    map.get_mut(key)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| AssembleError::Invalid {
            what,
            problem: format!("{key} is missing or not an object"),
        })
}

pub(super) fn array_field_mut<'m>(
    map: &'m mut Map<String, Value>,
    key: &str,
    what: &'static str,
) -> Result<&'m mut Vec<Value>, AssembleError> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .ok_or_else(|| AssembleError::Invalid {
            what,
            problem: format!("{key} is missing or not an array"),
        })
}
