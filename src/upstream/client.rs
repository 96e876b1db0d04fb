//! One upstream registry: HEAD-first manifest resolution, manifests with verified digests,
//! blob streams (resumable with Range), tags and referrers. Auth, retries and 429 handling
//! wrap every request in [`Upstream::send`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use super::auth::{
    parse_challenge, Challenge, Credentials, TokenCache, TokenResponse, DEFAULT_TOKEN_LIFETIME,
};
use super::error::UpstreamError;
use super::push::{Access, BlobSource};
use super::response::{
    check_manifest_json, content_type, describe_reqwest, header_length, header_str,
    is_manifest_type, read_limited, sniff_media_type,
};
use super::retry::{backoff, parse_retry_after};
use crate::config::{Secret, UpstreamConfig};
use crate::distribution::media_type::UPSTREAM_ACCEPT;
use crate::distribution::reference::{Digest, Reference};
use crate::metrics::{Metrics, UpstreamLabels, UpstreamOp};

/// The longest `Retry-After` honoured; a hostile or broken upstream cannot park us longer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What a HEAD on a manifest tells.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest as upstream sent it, digest verified.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// Upstream's referrers index for a subject.
#[derive(Debug, Clone)]
pub struct Referrers {
    pub bytes: Bytes,
    pub filters_applied: bool,
}

pub struct Upstream {
    config: UpstreamConfig,
    http: reqwest::Client,
    pub(super) base: String,
    pub(super) credentials: Option<Credentials>,
    pub(super) tokens: TokenCache,
    /// Set once the upstream answered with a Basic challenge, so later requests send the
    /// credentials up front instead of being refused first.
    basic_auth: AtomicBool,
    rate_limited_until: Mutex<Option<Instant>>,
    /// One token request at a time per upstream: concurrent cold pulls share its result.
    token_fetch: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    #[cfg(test)]
    pub(super) fn new(
        config: UpstreamConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, UpstreamError> {
        Self::with_clock(config, metrics, crate::clock::Clock::new())
    }

    /// An upstream whose token cache goes by `clock`.
    pub(super) fn with_clock(
        config: UpstreamConfig,
        metrics: Arc<Metrics>,
        clock: crate::clock::Clock,
    ) -> Result<Upstream, UpstreamError> {
        let setup = |reason: String| UpstreamError::Setup {
            upstream: config.name.clone(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            // Where a redirect may lead is checked before it is followed; a Referer would
            // tell the redirect target the upstream's URL.
            .redirect(super::hosts::redirect_policy(&config))
            .referer(false)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("patchpull/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(config.insecure_skip_verify);
        if let Some(ca) = &config.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| setup(format!("reading {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup(format!("parsing {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(setup(format!("{} holds no PEM certificate", ca.display())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| setup(e.to_string()))?;
        let credentials = match (&config.username, &config.password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }),
            (Some(u), None) => Some(Credentials {
                username: u.clone(),
                password: Secret::new(""),
            }),
            _ => None,
        };
        Ok(Upstream {
            base: config.url.as_str().trim_end_matches('/').to_string(),
            config,
            http,
            credentials,
            tokens: TokenCache::with_clock(clock),
            basic_auth: AtomicBool::new(false),
            rate_limited_until: Mutex::new(None),
            token_fetch: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn unavailable(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.config.name.clone(),
            reason: reason.into(),
        }
    }

    pub(super) fn protocol(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.config.name.clone(),
            reason: reason.into(),
        }
    }

    pub(super) fn not_found(&self, what: String) -> UpstreamError {
        UpstreamError::NotFound {
            upstream: self.config.name.clone(),
            what,
        }
    }

    /// The remaining `Retry-After` window of a previous 429, if any.
    pub fn rate_limited_for(&self) -> Option<Duration> {
        let until = (*self.rate_limited_until.lock().ok()?)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Sends one request with auth, retries on connection errors and 5xx, and 429 handling.
    /// Returns any other response, including 404, for the caller to interpret.
    pub(super) async fn send(
        &self,
        op: UpstreamOp,
        method: Method,
        url: &str,
        repository: &str,
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let access = Access::Pull(repository);
        self.send_with(Some(op), method, url, access, headers, None, timeout)
            .await
    }

    /// [`Upstream::send`] for any access (push, mount) and with an optional body. The body is
    /// rebuilt for every attempt (a file is reopened), so a retry or the auth round trip
    /// resends it whole. `op: None` records no latency metric.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_with(
        &self,
        op: Option<UpstreamOp>,
        method: Method,
        url: &str,
        access: Access<'_>,
        headers: HeaderMap,
        body: Option<(&BlobSource, u64)>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        if let Some(wait) = self.rate_limited_for() {
            return Err(UpstreamError::RateLimited {
                upstream: self.config.name.clone(),
                retry_after: Some(wait),
            });
        }
        let repository = access.repository();
        let scope = access.cache_key();
        let mut auth_attempted = false;
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some((source, size)) = body {
                req = req.body(source.body(size).await.map_err(|e| self.local(e))?);
            }
            let sent_token = self.tokens.get(&scope);
            if let Some(token) = &sent_token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
            } else if let (true, Some(creds)) =
                (self.basic_auth.load(Ordering::Relaxed), &self.credentials)
            {
                req = req.header(header::AUTHORIZATION, creds.basic_header());
            }
            let started = Instant::now();
            let result = req.send().await;
            let status = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
            if let Some(op) = op {
                self.observe(op, status, started);
            }
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    if attempt < self.config.retries && (e.is_connect() || e.is_timeout()) {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(self.unavailable(describe_reqwest(&e)));
                }
            };
            match response.status() {
                StatusCode::UNAUTHORIZED if !auth_attempted => {
                    auth_attempted = true;
                    let challenge = response
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    match challenge {
                        Some(Challenge::Bearer {
                            realm,
                            service,
                            scope: asked,
                        }) => {
                            let _turn = self.token_fetch.lock().await;
                            let fresh = self.tokens.get(&scope);
                            if fresh.is_some() && fresh != sent_token {
                                continue; // another request fetched one while we waited
                            }
                            let token_scopes = access.token_scopes(asked);
                            let (token, ttl) = self
                                .fetch_token(&realm, service.as_deref(), &token_scopes, repository)
                                .await?;
                            self.tokens.put(&scope, token, ttl);
                            continue;
                        }
                        Some(Challenge::Basic) if self.credentials.is_some() => {
                            self.basic_auth.store(true, Ordering::Relaxed);
                            continue;
                        }
                        _ => return Err(self.unauthorized(repository, "no usable challenge")),
                    }
                }
                StatusCode::UNAUTHORIZED => {
                    let mut detail = if self.credentials.is_some() {
                        "credentials refused"
                    } else {
                        "anonymous access refused"
                    }
                    .to_string();
                    if access.pushes() {
                        if let Some(said) = self.registry_message(response, access).await {
                            detail = format!("{detail}; registry said {said}");
                        }
                    }
                    self.tokens.forget(&scope);
                    return Err(self.unauthorized(repository, &detail));
                }
                StatusCode::FORBIDDEN => {
                    return Err(UpstreamError::Denied {
                        upstream: self.config.name.clone(),
                        repository: repository.to_string(),
                    })
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let retry_after = response
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after)
                        .map(|d| d.min(MAX_RETRY_AFTER));
                    if let (Some(wait), Ok(mut until)) =
                        (retry_after, self.rate_limited_until.lock())
                    {
                        *until = Some(Instant::now() + wait);
                    }
                    return Err(UpstreamError::RateLimited {
                        upstream: self.config.name.clone(),
                        retry_after,
                    });
                }
                s if s.is_server_error() => {
                    if attempt < self.config.retries {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(
                        self.unavailable(format!("HTTP {s} after {} attempts", attempt + 1))
                    );
                }
                _ => return Ok(response),
            }
        }
    }

    fn unauthorized(&self, repository: &str, detail: &str) -> UpstreamError {
        UpstreamError::Unauthorized {
            upstream: self.config.name.clone(),
            repository: repository.to_string(),
            detail: detail.to_string(),
        }
    }

    fn observe(&self, op: UpstreamOp, status: u16, started: Instant) {
        self.metrics.upstream_seen(&self.config.name, status);
        self.metrics
            .upstream_latency
            .get_or_create(&UpstreamLabels {
                upstream: self.config.name.clone(),
                op,
                status,
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The Docker token protocol: GET realm?service=&scope=, Basic credentials if configured.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        repository: &str,
    ) -> Result<(Secret, Duration), UpstreamError> {
        let mut params: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(s) = service {
            params.push(("service", s));
        }
        let url = reqwest::Url::parse_with_params(realm, &params)
            .map_err(|e| self.protocol(format!("token realm {realm:?} is not a URL: {e}")))?;
        // The realm comes from the upstream's answer: it gets a request (and the
        // credentials) only where config says the upstream's token service is.
        super::hosts::check_realm(&self.config.url, &self.config.auth_hosts, &url)
            .map_err(|reason| self.protocol(reason))?;
        let mut req = self.http.get(url).timeout(self.config.timeout);
        if let Some(creds) = &self.credentials {
            req = req.header(header::AUTHORIZATION, creds.basic_header());
        }
        let started = Instant::now();
        let result = req.send().await;
        self.observe(
            UpstreamOp::Token,
            result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0),
            started,
        );
        let response = result
            .map_err(|e| self.unavailable(format!("token endpoint: {}", describe_reqwest(&e))))?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(self.unauthorized(repository, "token endpoint refused the request"))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(UpstreamError::RateLimited {
                    upstream: self.config.name.clone(),
                    retry_after: None,
                })
            }
            s => return Err(self.unavailable(format!("token endpoint answered HTTP {s}"))),
        }
        let body = read_limited(response, 1024 * 1024)
            .await
            .map_err(|e| self.protocol(format!("token response: {e}")))?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("token response is not JSON: {e}")))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.protocol("token response has no token"))?;
        let ttl = parsed
            .expires_in
            .map(Duration::from_secs)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok((Secret::new(token), ttl))
    }

    fn manifest_url(&self, repository: &str, reference: &Reference) -> String {
        format!("{}/v2/{repository}/manifests/{reference}", self.base)
    }

    /// HEAD or GET of a manifest with every manifest type accepted; 404 and other failures
    /// become errors.
    async fn manifest_request(
        &self,
        op: UpstreamOp,
        method: Method,
        repository: &str,
        reference: &Reference,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = self.manifest_url(repository, reference);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(UPSTREAM_ACCEPT));
        let response = self
            .send(
                op,
                method.clone(),
                &url,
                repository,
                headers,
                Some(self.config.timeout),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(self.not_found(format!("manifest {repository}:{reference}")));
        }
        if !response.status().is_success() {
            return Err(self.protocol(format!(
                "{method} manifest answered HTTP {}",
                response.status()
            )));
        }
        Ok(response)
    }

    /// Resolves a manifest with HEAD (free on Docker Hub's rate limit). Falls back to GET
    /// when upstream omits `Docker-Content-Digest`.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &Reference,
        max_size: u64,
    ) -> Result<(ManifestHead, Option<FetchedManifest>), UpstreamError> {
        let response = self
            .manifest_request(
                UpstreamOp::HeadManifest,
                Method::HEAD,
                repository,
                reference,
            )
            .await?;
        let digest = header_str(response.headers(), "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok());
        let length = header_length(response.headers()).filter(|l| *l > 0);
        let media_type = content_type(response.headers());
        match (digest, length, media_type) {
            (Some(digest), Some(size), Some(media_type)) if is_manifest_type(&media_type) => {
                if let Reference::Digest(asked) = reference {
                    if *asked != digest {
                        return Err(
                            self.protocol(format!("asked for {asked}, HEAD answered {digest}"))
                        );
                    }
                }
                Ok((
                    ManifestHead {
                        digest,
                        media_type,
                        size,
                    },
                    None,
                ))
            }
            _ => {
                let fetched = self.get_manifest(repository, reference, max_size).await?;
                let head = ManifestHead {
                    digest: fetched.digest.clone(),
                    media_type: fetched.media_type.clone(),
                    size: fetched.bytes.len() as u64,
                };
                Ok((head, Some(fetched)))
            }
        }
    }

    /// Fetches a manifest's exact bytes and verifies them against the requested digest, or
    /// against `Docker-Content-Digest` for a tag.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &Reference,
        max_size: u64,
    ) -> Result<FetchedManifest, UpstreamError> {
        let response = self
            .manifest_request(UpstreamOp::GetManifest, Method::GET, repository, reference)
            .await?;
        if response.content_length().is_some_and(|l| l > max_size) {
            return Err(self.protocol(format!("manifest is larger than the {max_size}-byte limit")));
        }
        let announced = header_str(response.headers(), "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok());
        let header_type = content_type(response.headers());
        let bytes = read_limited(response, max_size as usize)
            .await
            .map_err(|e| self.protocol(format!("manifest {repository}:{reference}: {e}")))?;
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => announced,
        };
        let digest = match &expected {
            Some(expected) => {
                let actual = expected.same_algorithm_of(&bytes);
                if actual != *expected {
                    return Err(self.protocol(format!(
                        "manifest {repository}:{reference} does not match its digest: expected {expected}, got {actual}"
                    )));
                }
                actual
            }
            None => Digest::sha256_of(&bytes),
        };
        check_manifest_json(&bytes).map_err(|reason| {
            self.protocol(format!("manifest {repository}:{reference} {reason}"))
        })?;
        let media_type = header_type
            .filter(|t| is_manifest_type(t))
            .or_else(|| sniff_media_type(&bytes))
            .ok_or_else(|| {
                self.protocol(format!(
                    "manifest {repository}:{reference} has no known media type"
                ))
            })?;
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn blob_url(&self, repository: &str, digest: &Digest) -> String {
        format!("{}/v2/{repository}/blobs/{digest}", self.base)
    }

    /// The size of a blob upstream.
    pub async fn head_blob(&self, repository: &str, digest: &Digest) -> Result<u64, UpstreamError> {
        let url = self.blob_url(repository, digest);
        let response = self
            .send(
                UpstreamOp::HeadBlob,
                Method::HEAD,
                &url,
                repository,
                HeaderMap::new(),
                Some(self.config.timeout),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(self.not_found(format!("blob {digest} in {repository}")));
        }
        if !response.status().is_success() {
            return Err(self.protocol(format!("HEAD blob answered HTTP {}", response.status())));
        }
        header_length(response.headers())
            .ok_or_else(|| self.protocol(format!("HEAD blob {digest} has no Content-Length")))
    }

    /// Starts a blob download at `offset` (a resume after a broken stream uses Range).
    /// Returns the response (200 from 0, or 206 from `offset`) and the blob's total size
    /// when upstream says it.
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<(reqwest::Response, Option<u64>), UpstreamError> {
        let url = self.blob_url(repository, digest);
        let mut headers = HeaderMap::new();
        if offset > 0 {
            let range = HeaderValue::from_str(&format!("bytes={offset}-"))
                .map_err(|e| self.protocol(e.to_string()))?;
            headers.insert(header::RANGE, range);
        }
        let response = self
            .send(
                UpstreamOp::GetBlob,
                Method::GET,
                &url,
                repository,
                headers,
                None,
            )
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Err(self.not_found(format!("blob {digest} in {repository}"))),
            StatusCode::OK if offset == 0 => {
                let total = response.content_length();
                Ok((response, total))
            }
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let total = header_str(response.headers(), "content-range").and_then(|v| {
                    v.rsplit_once('/')
                        .and_then(|(_, total)| total.parse::<u64>().ok())
                });
                Ok((response, total))
            }
            s => Err(self.protocol(format!(
                "GET blob {digest} (offset {offset}) answered HTTP {s}"
            ))),
        }
    }
}
