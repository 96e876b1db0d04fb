//! The OpenVEX (v0.2.0) document that says which vulnerabilities a patched image no longer
//! has: one `fixed` statement per vulnerability, naming the patched image and the package
//! versions it now carries, as package URLs.
//!
//! The document is a function of its input alone (the caller supplies the timestamp), so
//! replicas produce the same bytes and the same digest for the same patch.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::distribution::reference::Digest;
use crate::patch::assemble::json::sort_keys;
use crate::pkgs::{Ecosystem, OsRelease};
use crate::scan::plan::PlatformPlan;

pub const OPENVEX_CONTEXT: &str = "https://openvex.dev/ns/v0.2.0";
/// OpenVEX's convention for documents without a home of their own: this prefix and a
/// content hash.
pub const OPENVEX_ID_PREFIX: &str = "https://openvex.dev/docs/public/vex-";
pub const TOOLING: &str = "patchpull";

pub struct VexInput<'a> {
    /// `docker.io/library/debian`.
    pub repository: &'a str,
    /// The patched image (manifest or index) the statements are about.
    pub patched_digest: &'a Digest,
    pub platforms: &'a [PlatformFixes<'a>],
    /// RFC 3339, supplied by the caller so the document does not depend on the clock.
    pub timestamp: &'a str,
    pub author: &'a str,
}

pub struct PlatformFixes<'a> {
    pub plan: &'a PlatformPlan,
    /// The package architecture, `amd64`, `x86_64`, ...
    pub architecture: &'a str,
    /// The planned packages the patched image really has at or above their fixed version;
    /// updates not named here are left out of the document.
    pub fixed: &'a [String],
}

#[derive(Debug, thiserror::Error)]
pub enum VexError {
    #[error("VEX document: {0} is empty")]
    Missing(&'static str),
    #[error("VEX document: timestamp {0:?} is not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM))")]
    Timestamp(String),
    #[error(
        "VEX document: package {name:?} is listed as fixed on {platform} but not planned there"
    )]
    UnknownPackage { platform: String, name: String },
    #[error("VEX document: cannot write JSON")]
    Json(#[from] serde_json::Error),
}

/// The package URL of an OS package: `pkg:deb/debian/perl-base@5.36.0-7%2Bdeb12u2?arch=amd64&distro=debian-12`.
/// The namespace is the OS id; `distro` is `<id>-<VERSION_ID>`, or `<id>-<VERSION_CODENAME>`
/// when the OS has no version id.
pub fn package_purl(
    ecosystem: Ecosystem,
    os: &OsRelease,
    name: &str,
    version: &str,
    arch: &str,
) -> String {
    let kind = match ecosystem {
        Ecosystem::Dpkg => "deb",
        Ecosystem::Apk => "apk",
        Ecosystem::Rpm => "rpm",
    };
    let distro = os
        .version_id
        .as_deref()
        .or(os.version_codename.as_deref())
        .filter(|v| !v.is_empty())
        .map(|v| format!("{}-{v}", os.id));
    let mut purl = format!("pkg:{kind}/");
    if !os.id.is_empty() {
        purl.push_str(&encode(&os.id, false));
        purl.push('/');
    }
    purl.push_str(&encode(name, false));
    purl.push('@');
    purl.push_str(&encode(version, false));
    purl.push_str(&qualifiers(&[
        ("arch", Some(arch)),
        ("distro", distro.as_deref()),
    ]));
    purl
}

/// The package URL of an image: `pkg:oci/debian@sha256%3A<hex>?repository_url=docker.io/library/debian`.
pub fn image_purl(repository: &str, digest: &Digest) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository);
    format!(
        "pkg:oci/{}@{}{}",
        encode(&name.to_ascii_lowercase(), false),
        encode(&digest.to_string(), false),
        qualifiers(&[("repository_url", Some(repository))])
    )
}

/// `?k=v&...` in the given (sorted) key order, empty values left out.
fn qualifiers(pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (key, value) in pairs {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        out.push_str(&encode(value, true));
    }
    out
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/` in qualifier values,
/// as the purl spec's own `repository_url` examples do): `+` -> `%2B`, `:` -> `%3A`,
/// `~` kept.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The OpenVEX document, pretty-printed JSON with sorted keys.
pub fn document(input: &VexInput) -> Result<Vec<u8>, VexError> {
    for (what, value) in [
        ("repository", input.repository),
        ("author", input.author),
        ("timestamp", input.timestamp),
    ] {
        if value.trim().is_empty() {
            return Err(VexError::Missing(what));
        }
    }
    if !is_rfc3339(input.timestamp) {
        return Err(VexError::Timestamp(input.timestamp.to_owned()));
    }

    // Vulnerability id -> the package versions that fix it.
    let mut fixes: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for platform in input.platforms {
        let plan = platform.plan;
        for name in platform.fixed {
            if !plan.updates.iter().any(|u| &u.name == name) {
                return Err(VexError::UnknownPackage {
                    platform: plan.platform.to_string(),
                    name: name.clone(),
                });
            }
        }
        for update in &plan.updates {
            if !platform.fixed.contains(&update.name) {
                continue;
            }
            let purl = package_purl(
                plan.ecosystem,
                &plan.os,
                &update.name,
                &update.fixed_version,
                platform.architecture,
            );
            for vulnerability in &update.fixes {
                fixes
                    .entry(vulnerability.id.as_str())
                    .or_default()
                    .insert(purl.clone());
            }
        }
    }

    let product = image_purl(input.repository, input.patched_digest);
    let statements: Vec<Value> = fixes
        .into_iter()
        .map(|(id, packages)| {
            let subcomponents: Vec<Value> =
                packages.into_iter().map(|p| json!({ "@id": p })).collect();
            json!({
                "vulnerability": { "name": id },
                "products": [{ "@id": product, "subcomponents": subcomponents }],
                "status": "fixed",
            })
        })
        .collect();
    let mut doc = json!({
        "@context": OPENVEX_CONTEXT,
        "author": input.author,
        "timestamp": input.timestamp,
        "version": 1,
        "tooling": TOOLING,
        "statements": statements,
    });
    // The id is the hash of the canonical (compact, sorted) document without it.
    let canonical = serde_json::to_vec(&sort_keys(&doc))?;
    let id = format!("{OPENVEX_ID_PREFIX}{}", Digest::sha256_of(&canonical).hex());
    if let Value::Object(map) = &mut doc {
        map.insert("@id".to_owned(), Value::String(id));
    }
    Ok(serde_json::to_vec_pretty(&sort_keys(&doc))?)
}

/// `2024-08-01T12:00:00Z`, `2024-08-01T12:00:00.5+02:00`: the shape, not the calendar.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
