//! The admin API under `/patchpull/v1/`, for operators and tooling; every request needs
//! `Authorization: Bearer <patch.admin_token>` (or Basic credentials whose password is
//! the token, which is how a browser sends it), and without a configured token the API
//! answers 403. Every change made through it is logged with `admin = <patch.admin_token_name>`.
//!
//! - `PUT /patchpull/v1/reports/<digest>`: a Trivy or copa report for an image (its
//!   top or platform manifest digest); it then plans that image's patches.
//! - `GET /patchpull/v1/images`: patch jobs and their outcomes; for a patched image, what
//!   became of each platform and whether the index is partial. Each names its image
//!   (`upstream/repository:tag`) and carries its plan, engine and stage timings; the
//!   finished ones are kept in the store, so the list survives a restart.
//! - `GET /patchpull/v1/images/<digest>`: the one job of an original (or patched) digest.
//! - `POST /patchpull/v1/patch` with `{"image": "<upstream>/<repository>:<tag>"}`: start
//!   patching an image now (pre-warm), without waiting.
//! - `DELETE /patchpull/v1/images/<original digest>`: forget a patched image; the next
//!   pull patches it again.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::body::{self, Body};
use super::respond::error_response;
use super::AppState;
use crate::distribution::{Digest, ErrorCode};
use crate::error::ApiError;

/// The admin API's path prefix.
pub const PREFIX: &str = "/patchpull/v1/";
/// Largest request body: reports of big images are a few MiB.
const MAX_BODY: usize = 32 << 20;

pub async fn handle<B>(state: &AppState, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    match serve(state, req).await {
        Ok(response) => response,
        Err(e) => error_response(&method, &e),
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Result<Response<Body>, ApiError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| ApiError::internal(e.to_string()))?;
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(body::full(Bytes::from(bytes)))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn denied(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Denied, message).with_status(StatusCode::FORBIDDEN)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            ApiError::new(
                ErrorCode::SizeInvalid,
                format!("reading the request body (at most {MAX_BODY} bytes): {e}"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })
}

/// The token a request presents: a Bearer token, or the password of Basic credentials.
fn presented_token(headers: &http::HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// Checks the admin token of `headers`: 403 when the admin API is off, 401 without the
/// right token.
pub(super) fn authorize(state: &AppState, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(token) = state.admin_token.as_ref() else {
        return Err(denied(
            "the admin API is off: set patch.admin_token (PATCHPULL_PATCH__ADMIN_TOKEN)",
        ));
    };
    let presented = presented_token(headers).unwrap_or_default();
    if !same(presented.as_bytes(), token.expose().as_bytes()) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "a valid `Authorization: Bearer <patch.admin_token>` is required",
        )
        .with_status(StatusCode::UNAUTHORIZED));
    }
    Ok(())
}

async fn serve<B>(state: &AppState, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    authorize(state, req.headers())?;
    let admin = state.admin_token_name.as_str();
    let path = req.uri().path().trim_start_matches(PREFIX).to_owned();
    let method = req.method().clone();
    let pipeline = &state.pipeline;
    match (method, path.split_once('/')) {
        (Method::PUT, Some(("reports", digest))) => {
            let digest: Digest = digest
                .parse()
                .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, format!("{e}")))?;
            let bytes = read_body(req.into_body()).await?;
            // Refused unless it is a report this version reads.
            crate::scan::report::parse(&bytes).map_err(|e| {
                ApiError::new(
                    ErrorCode::ManifestInvalid,
                    format!("not a usable report: {e}"),
                )
                .with_status(StatusCode::BAD_REQUEST)
            })?;
            pipeline
                .jobs()
                .put_report(&digest, bytes.to_vec())
                .await
                .map_err(ApiError::internal)?;
            tracing::info!(%admin, %digest, "admin: report stored; the image is planned again");
            json(
                StatusCode::CREATED,
                &serde_json::json!({"digest": digest.to_string(), "stored": true}),
            )
        }
        (Method::GET, None) if path == "host" => json(
            StatusCode::OK,
            &serde_json::json!({
                "sandbox": state.host.sandbox,
                "overlay": state.host.overlay,
            }),
        ),
        (Method::GET, None) if path == "images" => {
            let jobs = pipeline.jobs().list();
            json(StatusCode::OK, &serde_json::json!({ "images": jobs }))
        }
        (Method::GET, Some(("images", digest))) => {
            let digest: Digest = digest
                .parse()
                .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, format!("{e}")))?;
            match pipeline.jobs().get(&digest) {
                Some(job) => json(StatusCode::OK, &serde_json::json!(job)),
                None => Err(ApiError::new(
                    ErrorCode::ManifestUnknown,
                    format!("no patch job is known for {digest}"),
                )),
            }
        }
        (Method::DELETE, Some(("images", digest))) => {
            let digest: Digest = digest
                .parse()
                .map_err(|e| ApiError::new(ErrorCode::DigestInvalid, format!("{e}")))?;
            if pipeline.jobs().forget_everywhere(&digest).await {
                tracing::info!(%admin, %digest, "admin: patched image forgotten");
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(body::empty())
                    .map_err(|e| ApiError::internal(e.to_string()))
            } else {
                Err(ApiError::new(
                    ErrorCode::ManifestUnknown,
                    format!("no patched image is known for {digest}"),
                ))
            }
        }
        (Method::POST, None) if path == "patch" => {
            #[derive(serde::Deserialize)]
            struct Prewarm {
                image: String,
            }
            let bytes = read_body(req.into_body()).await?;
            let request: Prewarm = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(
                    ErrorCode::Unsupported,
                    format!("expected {{\"image\": \"<upstream>/<repository>:<tag>\"}}: {e}"),
                )
                .with_status(StatusCode::BAD_REQUEST)
            })?;
            let (name, tag) = request
                .image
                .rsplit_once(':')
                .filter(|(name, tag)| {
                    crate::distribution::reference::is_valid_tag(tag) && !name.is_empty()
                })
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::NameInvalid,
                        format!("{:?} is not <upstream>/<repository>:<tag>", request.image),
                    )
                })?;
            let route = state.mirror.route(name, None)?;
            let original = pipeline.prewarm(&route, tag).await?;
            tracing::info!(%admin, image = %request.image, %original, "admin: patch started (pre-warm)");
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"image": request.image, "original": original.to_string()}),
            )
        }
        _ => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("no admin endpoint {} {PREFIX}{path}", req.method()),
        )
        .with_status(StatusCode::NOT_FOUND)),
    }
}
