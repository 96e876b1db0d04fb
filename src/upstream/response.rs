//! Reading what an upstream answered: headers as sent, manifest media types, bounded bodies,
//! and error descriptions without noise.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use crate::distribution::media_type;

/// `Content-Length` as sent. reqwest's `content_length()` reports the body it will read,
/// which for a HEAD response is always 0.
pub(super) fn header_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "content-length").and_then(|v| v.parse().ok())
}

pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

pub(super) fn content_type(headers: &HeaderMap) -> Option<String> {
    header_str(headers, "content-type")
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|v| !v.is_empty())
}

pub(super) fn is_manifest_type(t: &str) -> bool {
    matches!(
        t,
        media_type::OCI_MANIFEST
            | media_type::OCI_INDEX
            | media_type::DOCKER_MANIFEST
            | media_type::DOCKER_MANIFEST_LIST
            | media_type::DOCKER_SCHEMA1_SIGNED
            | media_type::DOCKER_SCHEMA1
    ) || (t.starts_with("application/vnd.") && t.ends_with("+json"))
}

/// For upstreams that send `application/json`: the manifest's own `mediaType`, or its
/// shape (an OCI manifest may omit the field).
pub(crate) fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(t) = value.get("mediaType").and_then(|t| t.as_str()) {
        return Some(t.to_string());
    }
    if value.get("manifests").is_some() {
        Some(media_type::OCI_INDEX.to_string())
    } else if value.get("layers").is_some() || value.get("config").is_some() {
        Some(media_type::OCI_MANIFEST.to_string())
    } else if value.get("fsLayers").is_some() {
        Some(media_type::DOCKER_SCHEMA1_SIGNED.to_string())
    } else {
        None
    }
}

/// Refuses a manifest that is not a JSON object, or nests deeper than serde_json's limit of
/// 128 levels: clients and patchpull parse what is stored, so it must parse. The exact
/// bytes are kept either way; this only reads them.
pub(crate) fn check_manifest_json(bytes: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err("is JSON but not an object".to_string()),
        Err(e) => Err(format!(
            "is not valid JSON (nested at most 128 levels): {e}"
        )),
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub(super) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe_reqwest(&e))? {
        if buf.len() + chunk.len() > limit {
            return Err(format!("body exceeds the {limit}-byte limit"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A reqwest error without the URL's query (which may hold a scope, never a secret, but
/// keeps messages short) and with its source chain.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_redirect() {
        "redirect not followed"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "body read failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_must_be_json_objects_of_bounded_depth() {
        assert!(check_manifest_json(br#"{"schemaVersion":2,"layers":[{"a":[1]}]}"#).is_ok());
        assert!(check_manifest_json(b"[1,2]").is_err());
        assert!(check_manifest_json(b"{\"a\":").is_err());
        assert!(check_manifest_json(b"not json").is_err());
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200_000), "]".repeat(200_000));
        assert!(check_manifest_json(deep.as_bytes()).is_err());
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(check_manifest_json(fine.as_bytes()).is_ok());
    }

    #[test]
    fn sniffs_media_types() {
        assert_eq!(
            sniff_media_type(br#"{"manifests":[]}"#).as_deref(),
            Some(media_type::OCI_INDEX)
        );
        assert_eq!(
            sniff_media_type(br#"{"mediaType":"x","layers":[]}"#).as_deref(),
            Some("x")
        );
        assert_eq!(sniff_media_type(b"nope"), None);
    }
}
