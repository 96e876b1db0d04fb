//! `[[upstream]]`: the registries patchpull mirrors, checked one by one.

use std::collections::HashSet;
use std::time::Duration;

use super::defaults;
use super::raw::{Problems, RawUpstream};
use super::UpstreamConfig;
use crate::distribution::reference::is_valid_path_component;

/// Checks every `[[upstream]]` (names, URL, credentials, files, durations); problems go to
/// `p`, each naming its key. `tag_ttl` is `cache.tag_ttl`, the default of each upstream's.
pub(super) fn validate(
    raw: Vec<RawUpstream>,
    tag_ttl: Duration,
    p: &mut Problems,
) -> Vec<UpstreamConfig> {
    let mut upstreams = Vec::new();
    let mut names = HashSet::new();
    let mut defaults_seen = 0;
    for (i, u) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("upstream[{i}].{field}");
        for name in std::iter::once(&u.name).chain(&u.aliases) {
            if !is_valid_upstream_name(name) {
                p.0.push(format!(
                    "`{}`: {name:?} is not usable as a path prefix (lowercase letters, digits, \
                     '.', '_' and '-'; no ':' or '/'); give an upstream with a port an alias",
                    key("name")
                ));
            }
            if !names.insert(name.clone()) {
                p.0.push(format!(
                    "`{}`: the name {name:?} is used twice",
                    key("name")
                ));
            }
        }
        let shown = redact_userinfo(&u.url);
        let url = match reqwest::Url::parse(&u.url) {
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                p.0.push(format!(
                    "`{}`: {shown:?} carries credentials; set `username` and `password` instead",
                    key("url")
                ));
                None
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(url)
            }
            Ok(_) => {
                p.0.push(format!(
                    "`{}`: expected an http or https URL, found {shown:?}",
                    key("url")
                ));
                None
            }
            Err(e) => {
                p.0.push(format!("`{}`: {shown:?} is not a URL ({e})", key("url")));
                None
            }
        };
        if u.password.is_some() && u.username.is_none() {
            p.0.push(format!(
                "`{}`: a password needs a username",
                key("password")
            ));
        }
        if let Some(ca) = &u.ca_file {
            if !ca.is_file() {
                p.0.push(format!(
                    "`{}`: file {} does not exist",
                    key("ca_file"),
                    ca.display()
                ));
            }
        }
        if u.default {
            defaults_seen += 1;
        }
        let tag_ttl = match &u.tag_ttl {
            Some(t) => p.duration(&key("tag_ttl"), t),
            None => tag_ttl,
        };
        let connect_timeout = match &u.connect_timeout {
            Some(t) => p.duration(&key("connect_timeout"), t),
            None => defaults::UPSTREAM_CONNECT_TIMEOUT,
        };
        let timeout = match &u.timeout {
            Some(t) => p.duration(&key("timeout"), t),
            None => defaults::UPSTREAM_TIMEOUT,
        };
        let mut host_list = |field: &str, given: Option<Vec<String>>, known: &[(&str, &[&str])]| {
            let list = match given {
                Some(list) => list,
                None => url
                    .as_ref()
                    .and_then(|url| known.iter().find(|(host, _)| url.host_str() == Some(*host)))
                    .map(|(_, hosts)| hosts.iter().map(|h| h.to_string()).collect())
                    .unwrap_or_default(),
            };
            for pattern in &list {
                if !is_valid_host_pattern(pattern) {
                    p.0.push(format!(
                        "`{}`: {pattern:?} is not a host pattern (`host`, `host:port`, `*.example.com`; \
                         lowercase, no scheme or path)",
                        key(field)
                    ));
                }
            }
            list
        };
        let redirect_hosts = host_list(
            "redirect_hosts",
            u.redirect_hosts,
            defaults::UPSTREAM_REDIRECT_HOSTS,
        );
        let auth_hosts = host_list("auth_hosts", u.auth_hosts, defaults::UPSTREAM_AUTH_HOSTS);
        let require_signature = u
            .require_signature
            .as_ref()
            .map(|r| r.validate(&key("require_signature"), &mut p.0));
        if let Some(url) = url {
            upstreams.push(UpstreamConfig {
                require_signature,
                library_prefix: u.library_prefix.unwrap_or(u.name == "docker.io"),
                name: u.name,
                aliases: u.aliases,
                url,
                default: u.default,
                username: u.username,
                password: u.password,
                ca_file: u.ca_file,
                insecure_skip_verify: u.insecure_skip_verify,
                tag_ttl,
                retries: u.retries.unwrap_or(defaults::UPSTREAM_RETRIES),
                connect_timeout,
                timeout,
                redirect_hosts,
                auth_hosts,
            });
        }
    }
    if defaults_seen > 1 {
        p.0.push("`upstream.default`: at most one upstream can be the default".into());
    }
    upstreams
}

/// `scheme://user:pass@host` → `scheme://***@host`, for messages about a URL.
pub(super) fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Upstream names are the first path component of a prefixed request, so they follow the
/// repository component grammar (which has no ':').
pub(super) fn is_valid_upstream_name(name: &str) -> bool {
    is_valid_path_component(name)
}

/// `host`, `host:port` or a glob over the host (`*.cloudfront.net`, `cdn*.quay.io`), in
/// lowercase; `[v6 address]` with an optional port.
pub(super) fn is_valid_host_pattern(pattern: &str) -> bool {
    let (host, port) = match pattern.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, Some(port)),
        _ => (pattern, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-*?".contains(c))
    };
    port_ok && host_ok
}
