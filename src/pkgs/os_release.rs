//! The OS identity file `os-release(5)`: `/etc/os-release`, or `/usr/lib/os-release`
//! where `/etc/os-release` is missing (or is a symlink the image reader did not follow,
//! as in Google distroless, where it points there).
//!
//! Syntax: one `KEY=value` per line, blank lines and `#` comments ignored; the value is
//! shell-like: `"double quoted"` (where `\"`, `\\`, `\$` and `` \` `` are escapes),
//! `'single quoted'` (no escapes) or bare (where `\x` means `x`), and pieces may be joined
//! (`A="x"'y'z`). Surrounding whitespace is ignored; whitespace inside a bare value is kept,
//! as systemd does.
//!
//! Codename: `VERSION_CODENAME`, else `UBUNTU_CODENAME`, else the one lowercase word in
//! parentheses at the end of `VERSION` (`VERSION="Debian GNU/Linux 12 (bookworm)"`):
//! Google distroless writes no `VERSION_CODENAME`, and the scanner needs the codename to
//! find the release's security suite.

use std::collections::BTreeMap;

use crate::pkgs::error::LineError;
use crate::pkgs::{InventoryError, OsRelease};

/// Where os-release lives, in the order to try.
pub const PATHS: &[&str] = &["/etc/os-release", "/usr/lib/os-release"];

/// Reads an os-release file into the fields scanning needs. `path` only names the file
/// in errors. A missing `ID` is an empty string, other missing or empty fields `None`.
///
/// Errors with [`InventoryError::Malformed`] (path and line) as [`parse_fields`] does.
pub fn parse(path: &str, data: &[u8]) -> Result<OsRelease, InventoryError> {
    let fields = parse_fields(path, data)?;
    let get = |key: &str| fields.get(key).filter(|v| !v.is_empty()).cloned();
    let version_codename = get("VERSION_CODENAME")
        .or_else(|| get("UBUNTU_CODENAME"))
        .or_else(|| fields.get("VERSION").and_then(|v| codename_in(v)));
    Ok(OsRelease {
        id: get("ID").unwrap_or_default(),
        id_like: fields
            .get("ID_LIKE")
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        version_id: get("VERSION_ID"),
        version_codename,
        pretty_name: get("PRETTY_NAME"),
    })
}

/// Reads every `KEY=value` of an os-release file, values unquoted and unescaped. A key
/// given twice keeps its last value, as a shell would.
///
/// Errors with [`InventoryError::Malformed`] (path and line) on a line that is not
/// `KEY=value`, a key that is not `[A-Za-z_][A-Za-z0-9_]*`, an unterminated quote, or a
/// line that is not UTF-8.
pub fn parse_fields(path: &str, data: &[u8]) -> Result<BTreeMap<String, String>, InventoryError> {
    let mut fields = BTreeMap::new();
    for (index, line) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = std::str::from_utf8(line)
            .map_err(|_| LineError::new(line_no, "not valid UTF-8").in_file(path))?
            .trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, raw) = line
            .split_once('=')
            .ok_or_else(|| LineError::new(line_no, "expected `KEY=value`").in_file(path))?;
        if !is_key(key) {
            return Err(LineError::new(line_no, format!("invalid key {key:?}")).in_file(path));
        }
        let value = unquote(raw).map_err(|reason| LineError::new(line_no, reason).in_file(path))?;
        fields.insert(key.to_owned(), value);
    }
    Ok(fields)
}

fn is_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Shell-style value: quoted and bare pieces, joined.
fn unquote(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    None => return Err("unterminated double quote".to_owned()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                        Some(other) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => return Err("unterminated double quote".to_owned()),
                    },
                    Some(other) => out.push(other),
                }
            },
            '\'' => loop {
                match chars.next() {
                    None => return Err("unterminated single quote".to_owned()),
                    Some('\'') => break,
                    Some(other) => out.push(other),
                }
            },
            '\\' => {
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `12 (bookworm)` -> `bookworm`; `22.04.4 LTS (Jammy Jellyfish)` -> `None`.
fn codename_in(version: &str) -> Option<String> {
    let inner = version.trim().strip_suffix(')')?.rsplit_once('(')?.1.trim();
    let is_word = !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_lowercase());
    is_word.then(|| inner.to_owned())
}

#[cfg(test)]
mod tests;
