//! The only place that turns an [`ApiError`] into a response: spec error body
//! `{"errors":[{"code","message","detail"}]}`, status, `Retry-After`, headers only for HEAD.
//! Logged once here, at a level by origin; the client never sees internal causes beyond
//! the message.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

use super::body::{full, Body};
use crate::error::{ApiError, Origin};

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
pub const API_VERSION: HeaderValue = HeaderValue::from_static("registry/2.0");

pub fn error_response(method: &Method, err: &ApiError) -> Response<Body> {
    match err.origin {
        Origin::Internal => {
            tracing::error!(code = err.code.as_str(), status = err.status.as_u16(), error = %err.message, "request failed")
        }
        Origin::Upstream => {
            tracing::warn!(code = err.code.as_str(), status = err.status.as_u16(), error = %err.message, "request failed")
        }
        Origin::Client => {
            tracing::debug!(code = err.code.as_str(), status = err.status.as_u16(), error = %err.message, "request refused")
        }
    }
    // Internal causes name host paths and other details a client has no business seeing.
    let message = match err.origin {
        Origin::Internal => "internal error; the server's log has the details",
        Origin::Upstream | Origin::Client => err.message.as_str(),
    };
    let body = serde_json::json!({
        "errors": [{
            "code": err.code.as_str(),
            "message": message,
            "detail": serde_json::Value::Null,
        }]
    });
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut builder = Response::builder()
        .status(err.status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(API_VERSION_HEADER, API_VERSION);
    if let Some(after) = err.retry_after {
        builder = builder.header(header::RETRY_AFTER, after.as_secs().max(1));
    }
    if let Some(total) = err.range_total {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes */{total}"));
    }
    let body = if method == Method::HEAD {
        full(Bytes::new())
    } else {
        full(bytes)
    };
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(super::body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
