//! Where an upstream's requests may go besides the upstream itself: redirects (to its own
//! origin or to `upstream.redirect_hosts`, never from https to http) and token realms (on its
//! own `host[:port]` or in `upstream.auth_hosts`, over https unless the upstream is http).
//! Everything else is refused before a connection is opened, so a hostile or compromised
//! upstream cannot make patchpull reach other hosts (cloud metadata, internal services) or
//! hand them the upstream's credentials.

use reqwest::Url;

use crate::config::UpstreamConfig;
use crate::glob::glob;

/// How many redirects one request may follow.
const MAX_REDIRECTS: usize = 10;

/// `host:port` as compared: the port is always explicit (the scheme's default when absent).
fn authority(url: &Url) -> Option<(String, u16)> {
    Some((
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// Whether `url`'s host matches one of `patterns` (`host` or `host:port` globs; a pattern
/// without a port matches the scheme's default port only, so `127.0.0.1` does not open every
/// port of the host).
pub(super) fn host_matches(patterns: &[String], url: &Url) -> bool {
    let Some((host, port)) = authority(url) else {
        return false;
    };
    patterns.iter().any(|pattern| {
        let (host_pattern, port_pattern) = match pattern.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, p.parse::<u16>().ok()),
            _ => (pattern.as_str(), None),
        };
        let port_ok = match port_pattern {
            Some(p) => p == port,
            None => url.port().is_none(),
        };
        port_ok && glob(host_pattern.as_bytes(), host.as_bytes())
    })
}

/// The redirect policy of an upstream's HTTP client: [`check_redirect`] before each hop.
pub(super) fn redirect_policy(config: &UpstreamConfig) -> reqwest::redirect::Policy {
    let base = config.url.clone();
    let redirect_hosts = config.redirect_hosts.clone();
    reqwest::redirect::Policy::custom(move |attempt| {
        let checked = check_redirect(
            &base,
            &redirect_hosts,
            attempt.previous().last(),
            attempt.url(),
            attempt.previous().len(),
        );
        match checked {
            Ok(()) => attempt.follow(),
            Err(reason) => attempt.error(reason),
        }
    })
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && authority(a).is_some() && authority(a) == authority(b)
}

/// Whether a redirect from `from` to `to` may be followed for the upstream at `base`, and
/// why not. `hops` is the number of URLs visited so far.
pub(super) fn check_redirect(
    base: &Url,
    redirect_hosts: &[String],
    from: Option<&Url>,
    to: &Url,
    hops: usize,
) -> Result<(), String> {
    if hops > MAX_REDIRECTS {
        return Err(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let shown = shown(to);
    if !matches!(to.scheme(), "http" | "https") {
        return Err(format!("redirect to {shown} refused: not http(s)"));
    }
    let from_https = from.map_or(base.scheme() == "https", |f| f.scheme() == "https");
    if from_https && to.scheme() != "https" {
        return Err(format!("redirect to {shown} refused: from https to http"));
    }
    if same_origin(base, to) || host_matches(redirect_hosts, to) {
        return Ok(());
    }
    Err(format!(
        "redirect to {shown} refused: not the upstream's origin and not in `redirect_hosts`"
    ))
}

/// Whether a token realm may be asked for a token (with the credentials, if any).
pub(super) fn check_realm(base: &Url, auth_hosts: &[String], realm: &Url) -> Result<(), String> {
    let shown = shown(realm);
    if realm.scheme() != "https" && !(realm.scheme() == "http" && base.scheme() == "http") {
        return Err(format!(
            "token realm {shown} refused: only https (or http for an http upstream)"
        ));
    }
    if (authority(base).is_some() && authority(base) == authority(realm))
        || host_matches(auth_hosts, realm)
    {
        return Ok(());
    }
    Err(format!(
        "token realm {shown} refused: not on the upstream's host and not in `auth_hosts`"
    ))
}

/// `scheme://host[:port]` of a URL, for messages: paths and queries may hold signatures.
fn shown(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn redirects_stay_on_the_origin_or_the_configured_hosts() {
        let base = url("https://registry-1.docker.io");
        let cdn = list(&["production.cloudflare.docker.com", "*.cloudfront.net"]);
        let ok = |to: &str| check_redirect(&base, &cdn, None, &url(to), 1);
        assert!(ok("https://registry-1.docker.io/v2/x/blobs/y").is_ok());
        assert!(ok("https://production.cloudflare.docker.com/blob?sig=1").is_ok());
        assert!(ok("https://d1.cloudfront.net/blob").is_ok());
        assert!(ok("https://cloudfront.net.evil.example/blob").is_err());
        assert!(ok("https://registry-1.docker.io:8443/v2/").is_err());
        assert!(
            ok("http://registry-1.docker.io/v2/").is_err(),
            "https to http"
        );
        assert!(ok("http://169.254.169.254/latest/meta-data/").is_err());
        assert!(ok("http://[::1]:15700/latest/meta-data/").is_err());
        assert!(ok("file:///etc/passwd").is_err());
        assert!(check_redirect(&base, &cdn, None, &url("https://d1.cloudfront.net/"), 11).is_err());
    }

    #[test]
    fn a_pattern_without_a_port_means_the_default_port() {
        let base = url("http://127.0.0.1:5000");
        let to = url("http://127.0.0.1:6000/x");
        assert!(check_redirect(&base, &list(&["127.0.0.1"]), None, &to, 1).is_err());
        assert!(check_redirect(&base, &list(&["127.0.0.1:6000"]), None, &to, 1).is_ok());
        assert!(check_redirect(
            &base,
            &list(&["127.0.0.1"]),
            None,
            &url("http://127.0.0.1/"),
            1
        )
        .is_ok());
    }

    #[test]
    fn realms_need_the_upstream_host_or_auth_hosts_and_https() {
        let hub = url("https://registry-1.docker.io");
        let auth = list(&["auth.docker.io"]);
        assert!(check_realm(&hub, &auth, &url("https://auth.docker.io/token")).is_ok());
        assert!(check_realm(&hub, &auth, &url("https://registry-1.docker.io/token")).is_ok());
        assert!(check_realm(&hub, &auth, &url("http://auth.docker.io/token")).is_err());
        assert!(check_realm(&hub, &auth, &url("https://evil.example/token")).is_err());
        let plain = url("http://127.0.0.1:5000");
        assert!(check_realm(&plain, &[], &url("http://127.0.0.1:5000/token")).is_ok());
        assert!(check_realm(&plain, &[], &url("http://127.0.0.1:5001/token")).is_err());
        let allowed = list(&["127.0.0.1:5001"]);
        assert!(check_realm(&plain, &allowed, &url("http://127.0.0.1:5001/token")).is_ok());
    }
}
