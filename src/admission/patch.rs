//! RFC 6902 JSON Patch `replace` operations addressed by RFC 6901 JSON Pointers.

use base64::Engine as _;
use serde::Serialize;

/// One `{"op":"replace","path":...,"value":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replace {
    op: &'static str,
    pub path: String,
    pub value: String,
}

impl Replace {
    /// Replaces the string at the pointer made of `tokens`.
    pub fn new(tokens: &[&str], value: String) -> Replace {
        Replace {
            op: "replace",
            path: pointer(tokens),
            value,
        }
    }
}

/// A JSON Pointer from reference tokens; `~` is written `~0` and `/` is written `~1`.
pub fn pointer(tokens: &[&str]) -> String {
    let mut out = String::new();
    for token in tokens {
        out.push('/');
        for c in token.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    }
    out
}

/// The patch as the `patch` field carries it: base64 (standard, padded) of its JSON.
pub fn encode(ops: &[Replace]) -> String {
    let json = serde_json::to_vec(ops).unwrap_or_else(|_| b"[]".to_vec());
    base64::engine::general_purpose::STANDARD.encode(json)
}
