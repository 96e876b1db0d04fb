//! Pushing to a registry (`patchpull patch --push`, a backing store): blobs by cross-repository
//! mount or monolithic upload, manifests as their exact bytes. Every request goes through
//! [`Upstream::send_with`], so credentials, token auth, custom CA, retries and 429 handling are
//! those of the pull path; only the token scope differs.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::io::AsyncReadExt;

use super::client::Upstream;
use super::error::UpstreamError;
use super::response::{header_str, read_limited};
use crate::distribution::reference::{Digest, Reference};
use crate::metrics::UpstreamOp;

/// Latency metric of upload and manifest PUT requests: none until `UpstreamOp` has push
/// operations (reporting them as pulls would skew the pull histograms).
const PUSH_OP: Option<UpstreamOp> = None;
/// A registry's error body is read up to this size for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Read size when streaming a blob file.
const CHUNK: usize = 256 * 1024;

/// Where the bytes of a pushed blob come from. A file is streamed, never held whole.
#[derive(Debug, Clone)]
pub enum BlobSource {
    Bytes(Bytes),
    File(PathBuf),
}

impl BlobSource {
    /// Refuses a source whose length is not `size` before anything is sent.
    async fn check(&self, size: u64) -> Result<(), String> {
        let actual = match self {
            BlobSource::Bytes(b) => b.len() as u64,
            BlobSource::File(path) => tokio::fs::metadata(path)
                .await
                .map_err(|e| format!("blob file {}: {e}", path.display()))?
                .len(),
        };
        if actual != size {
            return Err(format!(
                "blob {} is {actual} bytes, expected {size}",
                self.describe()
            ));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self {
            BlobSource::Bytes(_) => "in memory".to_string(),
            BlobSource::File(path) => format!("file {}", path.display()),
        }
    }

    /// A fresh request body of exactly `size` bytes; a file is opened anew on each call.
    pub(super) async fn body(&self, size: u64) -> Result<reqwest::Body, String> {
        self.check(size).await?;
        match self {
            BlobSource::Bytes(b) => Ok(reqwest::Body::from(b.clone())),
            BlobSource::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| format!("blob file {}: {e}", path.display()))?;
                let reader = Some(file.take(size));
                let stream = futures_util::stream::unfold(reader, |reader| async move {
                    let mut reader = reader?;
                    let mut buf = BytesMut::with_capacity(CHUNK);
                    match reader.read_buf(&mut buf).await {
                        Ok(0) => None,
                        Ok(_) => Some((Ok(buf.freeze()), Some(reader))),
                        // End the stream after an error: the request fails with it.
                        Err(e) => Some((Err(e), None)),
                    }
                });
                Ok(reqwest::Body::wrap_stream(stream))
            }
        }
    }
}

/// What the token for a request must grant; also the token cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access<'a> {
    Pull(&'a str),
    Push(&'a str),
    /// Push on `to`, pull on `from`: a cross-repository mount.
    Mount {
        to: &'a str,
        from: &'a str,
    },
}

impl Access<'_> {
    /// The repository the request is about (named in errors).
    pub(super) fn repository(&self) -> &str {
        match self {
            Access::Pull(r) | Access::Push(r) => r,
            Access::Mount { to, .. } => to,
        }
    }

    pub(super) fn pushes(&self) -> bool {
        !matches!(self, Access::Pull(_))
    }

    fn own_scopes(&self) -> Vec<String> {
        match self {
            Access::Pull(r) => vec![format!("repository:{r}:pull")],
            Access::Push(r) => vec![format!("repository:{r}:pull,push")],
            Access::Mount { to, from } => vec![
                format!("repository:{to}:pull,push"),
                format!("repository:{from}:pull"),
            ],
        }
    }

    /// The token cache key; for a pull it is the scope the pull path always used.
    pub(super) fn cache_key(&self) -> String {
        self.own_scopes().join(" ")
    }

    /// The `scope` parameters of a token request after a challenge that `asked` for a scope.
    /// A pull sends what the registry asked, as it always did; a push sends its own scopes
    /// (the registry's challenge for a HEAD names only `pull`) plus whatever else was asked.
    pub(super) fn token_scopes(&self, asked: Option<String>) -> Vec<String> {
        if let Access::Pull(_) = self {
            return vec![asked.unwrap_or_else(|| self.cache_key())];
        }
        let mut scopes = self.own_scopes();
        for extra in asked.iter().flat_map(|a| a.split_whitespace()) {
            if !scopes.iter().any(|s| s == extra) {
                scopes.push(extra.to_string());
            }
        }
        scopes
    }
}

/// The outcome of `POST /blobs/uploads/`.
enum Upload {
    /// The mount succeeded: the blob is in place.
    Mounted,
    /// An upload session to `PUT` the blob to.
    Session(reqwest::Url),
}

impl Upstream {
    /// A problem on our side (a source that is not what was announced), not the registry's.
    pub(super) fn local(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Setup {
            upstream: self.name().to_string(),
            reason: reason.into(),
        }
    }

    /// True when the registry already has the blob (HEAD /v2/<repo>/blobs/<digest>). Asks
    /// for a push token: a push follows, and token servers grant the pull part regardless.
    pub async fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, UpstreamError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let response = self
            .send_with(
                Some(UpstreamOp::HeadBlob),
                Method::HEAD,
                &url,
                Access::Push(repository),
                HeaderMap::new(),
                None,
                Some(self.config().timeout),
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.protocol(format!(
                "HEAD blob {digest} in {repository} answered HTTP {s}"
            ))),
        }
    }

    /// Uploads a blob unless the registry has it: a cross-repository mount first when
    /// `mount_from` names another repository of this registry, else (or when the mount is
    /// declined) a monolithic upload streaming `source` with its `Content-Length`.
    pub async fn push_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        source: BlobSource,
        mount_from: Option<&str>,
    ) -> Result<(), UpstreamError> {
        source.check(size).await.map_err(|e| self.local(e))?;
        if let BlobSource::Bytes(bytes) = &source {
            if !digest.verifies(bytes) {
                return Err(self.local(format!("blob bytes do not match {digest}")));
            }
        }
        if self.has_blob(repository, digest).await? {
            return Ok(());
        }
        let mount = mount_from
            .filter(|from| *from != repository)
            .map(|from| (from, digest));
        let session = match self.start_upload(repository, mount).await? {
            Upload::Mounted => return Ok(()),
            Upload::Session(url) => url,
        };
        self.finish_upload(repository, digest, size, &source, session)
            .await
    }

    /// `POST /v2/<repo>/blobs/uploads/`, with `?mount=&from=` for a mount.
    async fn start_upload(
        &self,
        repository: &str,
        mount: Option<(&str, &Digest)>,
    ) -> Result<Upload, UpstreamError> {
        let base = format!("{}/v2/{repository}/blobs/uploads/", self.base);
        let (url, access) = match mount {
            Some((from, digest)) => {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("mount", &digest.to_string())
                    .append_pair("from", from)
                    .finish();
                let access = Access::Mount {
                    to: repository,
                    from,
                };
                (format!("{base}?{query}"), access)
            }
            None => (base, Access::Push(repository)),
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let response = self
            .send_with(
                PUSH_OP,
                Method::POST,
                &url,
                access,
                headers,
                None,
                Some(self.config().timeout),
            )
            .await?;
        match response.status() {
            StatusCode::CREATED if mount.is_some() => Ok(Upload::Mounted),
            StatusCode::ACCEPTED => {
                let location = header_str(response.headers(), "location").ok_or_else(|| {
                    self.protocol(format!(
                        "upload to {repository} started without a Location header"
                    ))
                })?;
                Ok(Upload::Session(self.upload_url(&location)?))
            }
            _ => Err(self
                .rejected(
                    response,
                    access,
                    &format!("starting an upload to {repository}"),
                )
                .await),
        }
    }

    /// The upload session URL: `location` resolved against the registry's URL, refused when
    /// it points at another origin (credentials must stay with the registry).
    fn upload_url(&self, location: &str) -> Result<reqwest::Url, UpstreamError> {
        let base = reqwest::Url::parse(&self.base)
            .map_err(|e| self.local(format!("registry URL {}: {e}", self.base)))?;
        let url = base.join(location).map_err(|e| {
            self.protocol(format!(
                "upload Location {:?} is not a URL: {e}",
                clip(location)
            ))
        })?;
        if url.origin() != base.origin() {
            return Err(self.protocol(format!(
                "upload Location {:?} points away from {}",
                clip(location),
                self.base
            )));
        }
        Ok(url)
    }

    /// `PUT <session>?digest=` with the whole blob as the body.
    async fn finish_upload(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        source: &BlobSource,
        mut session: reqwest::Url,
    ) -> Result<(), UpstreamError> {
        session
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        let access = Access::Push(repository);
        let response = self
            .send_with(
                PUSH_OP,
                Method::PUT,
                session.as_str(),
                access,
                headers,
                Some((source, size)),
                None,
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self
                .rejected(
                    response,
                    access,
                    &format!("upload of {digest} to {repository}"),
                )
                .await);
        }
        let stored = header_str(response.headers(), "docker-content-digest");
        if let Some(stored) = stored.filter(|s| *s != digest.to_string()) {
            return Err(self.protocol(format!(
                "upload of {digest} to {repository} was stored as {}",
                clip(&stored)
            )));
        }
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with the exact bytes and `media_type`; returns
    /// the bytes' digest after checking the registry's `Docker-Content-Digest` against it.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &Reference,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, UpstreamError> {
        let digest = match reference {
            Reference::Digest(d) if !d.verifies(&bytes) => {
                return Err(self.local(format!("manifest bytes do not match {d}")))
            }
            Reference::Digest(d) => d.clone(),
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        let content_type = HeaderValue::from_str(media_type).map_err(|_| {
            self.local(format!("media type {:?} is not a header", clip(media_type)))
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        let size = bytes.len() as u64;
        let source = BlobSource::Bytes(bytes.clone());
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let access = Access::Push(repository);
        let response = self
            .send_with(
                PUSH_OP,
                Method::PUT,
                &url,
                access,
                headers,
                Some((&source, size)),
                Some(self.config().timeout),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self
                .rejected(
                    response,
                    access,
                    &format!("manifest {repository}:{reference}"),
                )
                .await);
        }
        let announced = header_str(response.headers(), "docker-content-digest");
        if let Some(announced) = announced {
            let matches = announced
                .parse::<Digest>()
                .is_ok_and(|d| d.verifies(&bytes));
            if !matches {
                return Err(self.protocol(format!(
                    "manifest {repository}:{reference} is {digest}, the registry announced {}",
                    clip(&announced)
                )));
            }
        }
        Ok(digest)
    }

    /// A refusal that `send` passed through (4xx other than 401/403/429), with the
    /// registry's error codes and messages.
    async fn rejected(
        &self,
        response: reqwest::Response,
        access: Access<'_>,
        what: &str,
    ) -> UpstreamError {
        let status = response.status();
        let said = self
            .registry_message(response, access)
            .await
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        self.protocol(format!("registry refused {what} (HTTP {status}){said}"))
    }

    /// The registry's `{"errors":[{"code","message","detail"}]}` as `CODE: message (detail)`,
    /// or the start of a non-JSON body; secrets we sent are blanked out.
    pub(super) async fn registry_message(
        &self,
        response: reqwest::Response,
        access: Access<'_>,
    ) -> Option<String> {
        let body = read_limited(response, MAX_ERROR_BODY).await.ok()?;
        let text = format_error_body(&body)?;
        Some(self.scrub(text, access))
    }

    /// Blanks out the password, its Basic header form and the token of `access`.
    fn scrub(&self, text: String, access: Access<'_>) -> String {
        let mut secrets = Vec::new();
        if let Some(creds) = &self.credentials {
            secrets.push(creds.password.expose().to_string());
            let header = creds.basic_header();
            secrets.push(header.trim_start_matches("Basic ").to_string());
        }
        if let Some(token) = self.tokens.get(&access.cache_key()) {
            secrets.push(token.expose().to_string());
        }
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text, |text, s| text.replace(s.as_str(), "[REDACTED]"))
    }
}

/// Formats a registry error body; `None` when it says nothing.
fn format_error_body(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
        detail: Option<serde_json::Value>,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        let text: String = String::from_utf8_lossy(body)
            .chars()
            .filter(|c| !c.is_control() || *c == ' ')
            .take(200)
            .collect();
        let text = text.trim().to_string();
        return (!text.is_empty()).then_some(text);
    };
    let parts: Vec<String> = parsed
        .errors
        .iter()
        .take(5)
        .map(|e| {
            let mut part = e.code.clone().unwrap_or_else(|| "UNKNOWN".into());
            if let Some(m) = e.message.as_deref().filter(|m| !m.is_empty()) {
                part.push_str(": ");
                part.push_str(&clip(m));
            }
            let detail = match &e.detail {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    Some(v.to_string())
                }
                _ => None,
            };
            if let Some(d) = detail {
                part.push_str(&format!(" ({})", clip(&d)));
            }
            part
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// At most 200 characters of a value from the registry, for messages.
fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests;
