//! Registry authentication: `WWW-Authenticate` challenges, the Docker token protocol and a
//! per-scope token cache. Credentials are the proxy's own (from config) and only ever go
//! to the upstream's token realm or the upstream itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::config::Secret;

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parses the first Bearer or Basic challenge in a header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `key="value", key=value` pairs; commas inside quotes belong to the value (scopes
/// such as `repository:a:pull,push` contain them).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
    out
}

/// The configured credentials of one upstream.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Bearer tokens per scope, until their expiry (less a safety margin).
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, (Secret, Instant)>>,
    clock: crate::clock::Clock,
}

/// Above this many scopes the cache is cleared rather than grown without bound.
const MAX_CACHED_SCOPES: usize = 10_000;

impl TokenCache {
    /// A cache whose expiries go by `clock`.
    pub fn with_clock(clock: crate::clock::Clock) -> TokenCache {
        TokenCache {
            tokens: Mutex::default(),
            clock,
        }
    }

    pub fn get(&self, scope: &str) -> Option<Secret> {
        let tokens = self.tokens.lock().ok()?;
        match tokens.get(scope) {
            Some((token, until)) if *until > self.clock.now() => Some(token.clone()),
            _ => None,
        }
    }

    pub fn put(&self, scope: &str, token: Secret, expires_in: Duration) {
        // Renew a little early so a token never expires between check and use.
        let margin = (expires_in / 10)
            .max(Duration::from_secs(5))
            .min(expires_in / 2);
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= MAX_CACHED_SCOPES {
                tokens.clear();
            }
            tokens.insert(
                scope.to_string(),
                (token, self.clock.now() + expires_in - margin),
            );
        }
    }

    pub fn forget(&self, scope: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(scope);
        }
    }
}

/// The token endpoint's answer (`token` and `access_token` are synonyms).
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    pub token: Option<String>,
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

/// Tokens "should never be returned with less than 60 seconds to live" (token spec).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn token_cache_expires() {
        let c = TokenCache::default();
        c.put("s", Secret::new("t"), Duration::from_secs(60));
        assert_eq!(c.get("s").unwrap().expose(), "t");
        c.put("z", Secret::new("t"), Duration::ZERO);
        assert!(c.get("z").is_none());
        c.forget("s");
        assert!(c.get("s").is_none());
    }
}
