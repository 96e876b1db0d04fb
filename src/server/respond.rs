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
    // Internal causes name host paths and other details a client has no business seeing:
    // the client gets an id, the log gets the id and the whole error.
    let internal_message;
    let message = match err.origin {
        Origin::Internal => {
            let id = crate::error::new_error_id();
            tracing::error!(code = err.code.as_str(), status = err.status.as_u16(), error_id = %id, error = %err.message, "request failed");
            internal_message =
                format!("internal error {id}; the server's log has the details under this id");
            internal_message.as_str()
        }
        Origin::Upstream => {
            tracing::warn!(code = err.code.as_str(), status = err.status.as_u16(), error = %err.message, "request failed");
            err.message.as_str()
        }
        Origin::Client => {
            tracing::debug!(code = err.code.as_str(), status = err.status.as_u16(), error = %err.message, "request refused");
            err.message.as_str()
        }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http_body_util::BodyExt;

    use super::*;
    use crate::store::StoreError;

    async fn body_of(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_store_failure_answers_a_generic_500_with_an_id_and_no_host_path() {
        let failure = StoreError::io(
            "writing",
            Path::new("/var/lib/patchpull/store/blobs/sha256/ab/tmp-1"),
            std::io::Error::other("No space left on device"),
        );
        let response = error_response(&Method::GET, &ApiError::from(failure));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(response).await;
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(!message.contains("/var/lib"), "{message}");
        assert!(!message.contains("No space"), "{message}");
        let id = message
            .strip_prefix("internal error ")
            .and_then(|rest| rest.split(';').next())
            .unwrap();
        assert_eq!(id.len(), 16, "{message}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{message}");
        // Each failure its own id, so that the log line is the one.
        let other = body_of(error_response(&Method::GET, &ApiError::internal("x"))).await;
        assert_ne!(other["errors"][0]["message"].as_str().unwrap(), message);
    }
}
