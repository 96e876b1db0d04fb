//! HTTP for apt repositories: small bodies (InRelease) into memory with conditional
//! requests, large ones (indexes, .debs) into a temp file while hashing. Every body has a
//! size limit. Connection failures, 5xx and 429 are retried with backoff (honouring
//! `Retry-After`); everything else fails at once.

use std::time::Duration;

use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::cache::{TempFile, Validators};
use super::{BuiltinConfig, BuiltinError};
use crate::upstream::retry::{backoff, parse_retry_after};

/// The longest `Retry-After` honoured; a longer one fails the request instead of
/// stalling the scan.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A request that failed; the caller adds the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    pub reason: String,
    pub retryable: bool,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// What a 429's `Retry-After` asked for.
    pub retry_after: Option<Duration>,
}

impl FetchFailure {
    /// The error for `suite`.
    pub fn in_suite(self, suite: &str, url: &str) -> BuiltinError {
        BuiltinError::Fetch {
            suite: suite.to_owned(),
            url: url.to_owned(),
            reason: self.reason,
            retryable: self.retryable,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.status, Some(404 | 410))
    }
}

/// A small body, or the news that the cached copy is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// The shared HTTP client of one scanner.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    retries: u32,
}

impl Fetcher {
    /// # Errors
    /// [`BuiltinError::Client`] when reqwest cannot build a client.
    pub fn new(config: &BuiltinConfig) -> Result<Fetcher, BuiltinError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.timeout)
            .user_agent(concat!("patchpull/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuiltinError::Client {
                reason: e.to_string(),
            })?;
        Ok(Fetcher {
            http,
            retries: config.retries,
        })
    }

    /// GETs `url` into memory, conditionally when `validators` are given.
    ///
    /// # Errors
    /// [`FetchFailure`] for transport errors, statuses other than 200 and 304, and bodies
    /// over `limit` bytes.
    pub async fn get_small(
        &self,
        url: &str,
        validators: Option<&Validators>,
        limit: u64,
    ) -> Result<Fetched, FetchFailure> {
        let mut attempt = 0;
        loop {
            let result = self.get_small_once(url, validators, limit).await;
            match result {
                Err(failure) if failure.retryable && attempt < self.retries => {
                    tokio::time::sleep(failure.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn get_small_once(
        &self,
        url: &str,
        validators: Option<&Validators>,
        limit: u64,
    ) -> Result<Fetched, FetchFailure> {
        let mut request = self.http.get(url);
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(date) = &v.last_modified {
                request = request.header(IF_MODIFIED_SINCE, date);
            }
        }
        let mut response = request.send().await.map_err(transport)?;
        if response.status() == StatusCode::NOT_MODIFIED && validators.is_some() {
            return Ok(Fetched::NotModified);
        }
        check_status(&response)?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        check_length(response.content_length(), limit)?;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            bytes.extend_from_slice(&chunk);
            check_length(Some(bytes.len() as u64), limit)?;
        }
        Ok(Fetched::Body {
            bytes,
            etag,
            last_modified,
        })
    }

    /// GETs `url` into `temp` (from its start), hashing as it writes, and returns the
    /// SHA256 (lower-case hex) and size. The caller compares them with what it expects.
    ///
    /// # Errors
    /// As [`Fetcher::get_small`]; also a write failure, as a non-retryable failure.
    pub async fn download(
        &self,
        url: &str,
        temp: &TempFile,
        limit: u64,
    ) -> Result<(String, u64), FetchFailure> {
        let mut attempt = 0;
        loop {
            match self.download_once(url, temp, limit).await {
                Err(failure) if failure.retryable && attempt < self.retries => {
                    tokio::time::sleep(failure.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn download_once(
        &self,
        url: &str,
        temp: &TempFile,
        limit: u64,
    ) -> Result<(String, u64), FetchFailure> {
        let disk = |e: std::io::Error| FetchFailure {
            reason: format!("writing {}: {e}", temp.path().display()),
            retryable: false,
            status: None,
            retry_after: None,
        };
        let std_file = temp.file().try_clone().map_err(disk)?;
        let mut file = tokio::fs::File::from_std(std_file);
        file.set_len(0).await.map_err(disk)?;
        file.seek(std::io::SeekFrom::Start(0)).await.map_err(disk)?;

        let mut response = self.http.get(url).send().await.map_err(transport)?;
        check_status(&response)?;
        check_length(response.content_length(), limit)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            size += chunk.len() as u64;
            check_length(Some(size), limit)?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(disk)?;
        }
        file.flush().await.map_err(disk)?;
        Ok((hex::encode(hasher.finalize()), size))
    }
}

impl FetchFailure {
    fn delay(&self, attempt: u32) -> Duration {
        self.retry_after.unwrap_or_else(|| backoff(attempt))
    }
}

fn transport(error: reqwest::Error) -> FetchFailure {
    FetchFailure {
        reason: error_chain(&error),
        retryable: error.is_connect()
            || error.is_timeout()
            || error.is_request()
            || error.is_body(),
        status: None,
        retry_after: None,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn check_status(response: &reqwest::Response) -> Result<(), FetchFailure> {
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let retryable = status.is_server_error()
        || (status == StatusCode::TOO_MANY_REQUESTS
            && retry_after.is_none_or(|d| d <= MAX_RETRY_AFTER));
    Err(FetchFailure {
        reason: format!("server answered {status}"),
        retryable,
        status: Some(status.as_u16()),
        retry_after: retry_after.filter(|_| retryable),
    })
}

fn check_length(length: Option<u64>, limit: u64) -> Result<(), FetchFailure> {
    match length {
        Some(length) if length > limit => Err(FetchFailure {
            reason: format!("body is larger than the limit of {limit} bytes"),
            retryable: false,
            status: None,
            retry_after: None,
        }),
        _ => Ok(()),
    }
}
