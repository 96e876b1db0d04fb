//! [`ApiError`]: what a failed request tells the client. Every module's error converts
//! into one with the spec code, the status and a message that names the value at fault;
//! `server::respond` is the only place that turns it into a response.

use std::time::Duration;

use http::StatusCode;

use crate::distribution::ErrorCode;

/// Where a failure came from; decides how it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request was wrong; nothing to log above debug.
    Client,
    /// The upstream registry failed or refused.
    Upstream,
    /// Our own fault (disk, bug).
    Internal,
}

/// A fresh id for one internal failure: the client is told it, the log line that has the
/// whole error carries it, so an operator finds the one from the other.
pub fn new_error_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?} ({status}): {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub origin: Origin,
    /// Sent as `Retry-After` (429 and 503).
    pub retry_after: Option<Duration>,
    /// Sent as `Content-Range: bytes */<len>` with a 416.
    pub range_total: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: code.default_status(),
            message: message.into(),
            origin: Origin::Client,
            retry_after: None,
            range_total: None,
        }
    }

    pub fn upstream(code: ErrorCode, status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            origin: Origin::Upstream,
            ..ApiError::new(code, message)
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            origin: Origin::Internal,
            ..ApiError::new(ErrorCode::Unknown, message)
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }
}
