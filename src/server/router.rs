//! Request → typed [`DistributionRequest`] → one call into the pipeline (manifests by tag:
//! patch on pull) or the mirror (everything else) → response headers. No business logic:
//! what to fetch, cache, patch or refuse is decided in `pipeline` and `mirror`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::body::{self, Body};
use super::respond::{error_response, API_VERSION, API_VERSION_HEADER};
use super::AppState;
use crate::distribution::media_type::{Accept, OCI_INDEX};
use crate::distribution::range::{self, RangeRequest};
use crate::distribution::{DistributionRequest, Endpoint, ErrorCode, PathError, Reference};
use crate::error::ApiError;
use crate::metrics::{BytesLabels, RequestLabels, Route};
use crate::pipeline::TagAnswer;

/// Serves one request; never fails (errors become responses).
pub async fn handle<B>(state: Arc<AppState>, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (route, response) = if path.starts_with(super::admin::PREFIX) {
        (Route::Admin, super::admin::handle(&state, req).await)
    } else if path == super::status_page::PATH {
        (Route::Admin, super::status_page::handle(&state, &req).await)
    } else if path == crate::admission::PATH {
        (Route::Other, admission(&state, req).await)
    } else {
        dispatch(&state, &req).await
    };
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method: (&method).into(),
            status,
        })
        .inc();
    tracing::debug!(%method, %path, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

async fn dispatch<B>(state: &AppState, req: &Request<B>) -> (Route, Response<Body>) {
    let path = req.uri().path();
    let method = req.method();
    match path {
        "/healthz" => return (Route::Health, text(StatusCode::OK, "ok\n")),
        "/readyz" => {
            let ready = state.is_ready();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            // A full store still serves (blobs stream through uncached), so it stays ready,
            // but says so: operators alert on it (and on `patchpull_store_writable`).
            let store_state = state.mirror.store().state();
            let verbose = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|p| p == "verbose" || p.starts_with("verbose="))
            });
            if verbose {
                // Readiness is serving: a host without the sandbox still mirrors, so it
                // only shows here (and in the gauges), it does not fail the probe.
                let detail = serde_json::json!({
                    "ready": ready,
                    "store": match &store_state {
                        None => serde_json::json!({"writable": true}),
                        Some(reason) => serde_json::json!({"writable": false, "reason": reason.to_string()}),
                    },
                    "sandbox": state.host.sandbox,
                    "overlay": state.host.overlay,
                });
                let mut r = text(status, &format!("{detail}\n"));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return (Route::Health, r);
            }
            let store = match store_state {
                None => "store: ok".to_string(),
                Some(reason) => format!("store: full, blobs are served without caching: {reason}"),
            };
            let head = if ready { "ready" } else { "not ready" };
            return (Route::Health, text(status, &format!("{head}\n{store}\n")));
        }
        "/metrics" => {
            let used = state.mirror.store().used_bytes();
            state
                .metrics
                .store_used_bytes
                .set(i64::try_from(used).unwrap_or(i64::MAX));
            let mut r = text(StatusCode::OK, &state.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return (Route::Metrics, r);
        }
        _ => {}
    }
    let parsed = match DistributionRequest::parse(path, req.uri().query()) {
        Ok(p) => p,
        Err(e) => return (Route::Other, error_response(method, &path_error(e))),
    };
    let route_label = match parsed.endpoint {
        Endpoint::Base => Route::Base,
        Endpoint::Manifest(_) => Route::Manifest,
        Endpoint::Blob(_) => Route::Blob,
        Endpoint::Upload => Route::Upload,
        Endpoint::Tags { .. } => Route::Tags,
        Endpoint::Referrers { .. } => Route::Referrers,
    };
    let result = if parsed.endpoint == Endpoint::Upload
        || (method != Method::GET && method != Method::HEAD)
    {
        Err(ApiError::new(
            ErrorCode::Unsupported,
            "patchpull is a read-only mirror: pushes and deletes are not supported",
        ))
    } else {
        serve(state, req, &parsed, route_label).await
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => error_response(method, &e),
    };
    if let Some(ns) = parsed
        .ns
        .as_deref()
        .and_then(|ns| HeaderValue::from_str(ns).ok())
    {
        response.headers_mut().insert("oci-namespace", ns);
    }
    (route_label, response)
}

/// The Kubernetes webhook: any POST gets a 200 review (allowed, maybe patched), even one
/// whose body cannot be read, so a Pod is never refused for patchpull's trouble.
async fn admission<B>(state: &AppState, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if req.method() != Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admission webhook takes POST with an AdmissionReview\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let answer = match Limited::new(req.into_body(), crate::admission::MAX_BODY)
        .collect()
        .await
    {
        Ok(body) => {
            state
                .admission
                .review(&state.pipeline, &body.to_bytes())
                .await
        }
        Err(e) => crate::admission::unreadable(&format!(
            "{e} (at most {} bytes)",
            crate::admission::MAX_BODY
        )),
    };
    let mut r = Response::new(body::full(Bytes::from(answer)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn path_error(e: PathError) -> ApiError {
    let message = e.to_string();
    match e {
        PathError::NotFound => ApiError::new(
            ErrorCode::Unsupported,
            format!("{message}: see the OCI distribution spec"),
        )
        .with_status(StatusCode::NOT_FOUND),
        PathError::Name(_) => ApiError::new(ErrorCode::NameInvalid, message),
        PathError::Reference(crate::distribution::reference::InvalidReference::Digest(_))
        | PathError::Digest(_) => ApiError::new(ErrorCode::DigestInvalid, message),
        PathError::Reference(_) => ApiError::new(ErrorCode::ManifestInvalid, message),
        PathError::Pagination(_) => {
            ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
        }
    }
}

fn text(status: StatusCode, s: &str) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(s.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn base_builder(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(API_VERSION_HEADER, API_VERSION)
}

fn finish(builder: http::response::Builder, body: Body) -> Result<Response<Body>, ApiError> {
    builder
        .body(body)
        .map_err(|e| ApiError::internal(format!("building response: {e}")))
}

async fn serve<B>(
    state: &AppState,
    req: &Request<B>,
    parsed: &DistributionRequest,
    route_label: Route,
) -> Result<Response<Body>, ApiError> {
    let head = req.method() == Method::HEAD;
    let mirror = &state.mirror;
    if parsed.endpoint == Endpoint::Base {
        let body = if head {
            body::empty()
        } else {
            body::full(Bytes::from_static(b"{}"))
        };
        return finish(
            base_builder(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, 2),
            body,
        );
    }
    let route = mirror.route(&parsed.name, parsed.ns.as_deref())?;
    match &parsed.endpoint {
        Endpoint::Manifest(reference) => {
            let accept = Accept::parse(
                req.headers()
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let reference = match reference {
                Reference::Tag(tag) => {
                    match state.pipeline.resolve_tag(&route, tag, &accept).await? {
                        TagAnswer::Patched(m) => {
                            let builder = manifest_headers(
                                &m.digest.to_string(),
                                &m.media_type,
                                m.bytes.len() as u64,
                            );
                            if head {
                                return finish(builder, body::empty());
                            }
                            count_bytes(state, route_label, m.bytes.len() as u64);
                            return finish(builder, body::full(m.bytes.clone()));
                        }
                        TagAnswer::Original(original) => original,
                    }
                }
                digest => digest.clone(),
            };
            let reference = &reference;
            let by_digest = match reference {
                Reference::Digest(d) => Some(d),
                Reference::Tag(_) => None,
            };
            if head {
                let info = shared(state, &route, by_digest, || {
                    mirror.manifest_info(&route, reference, &accept)
                })
                .await?;
                return finish(
                    manifest_headers(&info.digest.to_string(), &info.media_type, info.size),
                    body::empty(),
                );
            }
            let m = shared(state, &route, by_digest, || {
                mirror.manifest(&route, reference, &accept)
            })
            .await?;
            if let Reference::Digest(d) = reference {
                if *d != m.digest {
                    return Err(ApiError::internal(format!(
                        "store returned {} for {d}",
                        m.digest
                    )));
                }
            }
            count_bytes(state, route_label, m.bytes.len() as u64);
            finish(
                manifest_headers(&m.digest.to_string(), &m.media_type, m.bytes.len() as u64),
                body::full(m.bytes.clone()),
            )
        }
        Endpoint::Blob(digest) => {
            let blob_headers = |status| {
                base_builder(status)
                    .header("docker-content-digest", digest.to_string())
                    .header(header::ETAG, format!("\"{digest}\""))
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::ACCEPT_RANGES, "bytes")
            };
            if head {
                let size = shared(state, &route, Some(digest), || {
                    mirror.blob_size(&route, digest)
                })
                .await?;
                return finish(
                    blob_headers(StatusCode::OK).header(header::CONTENT_LENGTH, size),
                    body::empty(),
                );
            }
            let handle = shared(state, &route, Some(digest), || {
                mirror.open_blob(&route, digest)
            })
            .await?;
            let range_header = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok());
            match handle.size {
                Some(size) => match range::resolve(range_header, size) {
                    RangeRequest::Full => {
                        count_bytes(state, route_label, size);
                        finish(
                            blob_headers(StatusCode::OK).header(header::CONTENT_LENGTH, size),
                            body::stream(handle.into_stream(0, Some(size))),
                        )
                    }
                    RangeRequest::Partial(r) => {
                        count_bytes(state, route_label, r.len());
                        finish(
                            blob_headers(StatusCode::PARTIAL_CONTENT)
                                .header(header::CONTENT_LENGTH, r.len())
                                .header(header::CONTENT_RANGE, r.content_range(size)),
                            body::stream(handle.into_stream(r.start, Some(r.end + 1))),
                        )
                    }
                    RangeRequest::Unsatisfiable => Err(ApiError {
                        range_total: Some(size),
                        ..ApiError::new(
                            ErrorCode::RangeInvalid,
                            format!(
                                "range {:?} is outside blob {digest} of {size} bytes",
                                range_header.unwrap_or("")
                            ),
                        )
                    }),
                },
                // Upstream sent no length: stream it whole, without Range support.
                None => finish(
                    blob_headers(StatusCode::OK),
                    body::stream(handle.into_stream(0, None)),
                ),
            }
        }
        Endpoint::Tags { n, last } => {
            let page = mirror.tags(&route, *n, last.as_deref()).await?;
            let json = serde_json::json!({ "name": parsed.name, "tags": page.tags });
            let bytes = Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
            let mut builder = base_builder(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, bytes.len());
            if let (Some(n), Some(next)) = (n, page.next_last) {
                let mut link = format!("</v2/{}/tags/list?n={n}&last=", parsed.name);
                link.extend(form_urlencoded::byte_serialize(next.as_bytes()));
                if let Some(ns) = &parsed.ns {
                    link.push_str("&ns=");
                    link.extend(form_urlencoded::byte_serialize(ns.as_bytes()));
                }
                link.push_str(">; rel=\"next\"");
                builder = builder.header(header::LINK, link);
            }
            finish(
                builder,
                if head {
                    body::empty()
                } else {
                    body::full(bytes)
                },
            )
        }
        Endpoint::Referrers {
            subject,
            artifact_type,
        } => {
            let (bytes, filtered) = mirror
                .referrers(&route, subject, artifact_type.as_deref())
                .await?;
            let bytes = state
                .pipeline
                .merge_referrers(&route, subject, bytes, artifact_type.as_deref())
                .await?;
            let mut builder = base_builder(StatusCode::OK)
                .header(header::CONTENT_TYPE, OCI_INDEX)
                .header(header::CONTENT_LENGTH, bytes.len());
            if filtered {
                builder = builder.header("oci-filters-applied", "artifactType");
            }
            finish(
                builder,
                if head {
                    body::empty()
                } else {
                    body::full(bytes)
                },
            )
        }
        Endpoint::Base | Endpoint::Upload => Err(ApiError::internal("unreachable endpoint")),
    }
}

/// `read`, asked again once when it finds nothing and `digest` turns out to be content
/// another replica made (the client resolved the tag through it; over a backing registry
/// this replica then adopts that image first). Over the local store it is `read`.
async fn shared<'a, T, F, Fut>(
    state: &AppState,
    route: &crate::upstream::Route,
    digest: Option<&crate::distribution::Digest>,
    read: F,
) -> Result<T, ApiError>
where
    F: Fn() -> Fut + 'a,
    Fut: std::future::Future<Output = Result<T, ApiError>> + 'a,
{
    match read().await {
        Err(e) if matches!(e.code, ErrorCode::ManifestUnknown | ErrorCode::BlobUnknown) => {
            match digest {
                Some(d) if state.pipeline.adopt_made(route, d).await => read().await,
                _ => Err(e),
            }
        }
        answer => answer,
    }
}

fn manifest_headers(digest: &str, media_type: &str, size: u64) -> http::response::Builder {
    base_builder(StatusCode::OK)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, size)
        .header("docker-content-digest", digest)
        .header(header::ETAG, format!("\"{digest}\""))
}

fn count_bytes(state: &AppState, route: Route, n: u64) {
    state
        .metrics
        .bytes_served
        .get_or_create(&BytesLabels { route })
        .inc_by(n);
}
