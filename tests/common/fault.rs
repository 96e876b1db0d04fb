//! A fault-injecting upstream registry on loopback.
//!
//! It serves images held in memory (or forwards to a real registry) through enough of the
//! distribution API to act as patchpull's upstream: `GET /v2/`, manifests and blobs (GET and
//! HEAD, with Range), and tags/list. Per path, a [`Behaviour`] replaces the correct answer
//! with a lie, a dropped connection, a 429 or a 500. Every request is counted per method and
//! path, and every accepted connection is counted, so tests assert on upstream traffic
//! instead of sleeping.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use super::images::{Blob, Image, Manifest, MultiArch};

type Body = BoxBody<Bytes, std::io::Error>;

/// What the server does for one path instead of (or on top of) the correct answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// The correct content.
    Normal,
    /// Same length and headers (including the true `Docker-Content-Digest`), wrong bytes.
    Lie,
    /// Headers with the full `Content-Length`, then `n` bytes of the body, then the
    /// connection is dropped.
    CutAfter(usize),
    /// `429 Too Many Requests` with `Retry-After: <secs>` and a TOOMANYREQUESTS body.
    TooManyRequests { retry_after_secs: u64 },
    /// `500` with an UNKNOWN body.
    ServerError,
    /// The correct content, sent `chunk` bytes at a time with `delay` between chunks, so
    /// concurrent requests overlap.
    Slow { chunk: usize, delay: Duration },
    /// `307 Temporary Redirect` to this URL.
    Redirect(String),
    /// `401 Unauthorized` with this `WWW-Authenticate` value.
    Challenge(String),
    /// The correct answer, but a HEAD announces this `Content-Length`.
    HeadLength(usize),
    /// `404` with a `BLOB_UNKNOWN` or `MANIFEST_UNKNOWN` body, as a registry answers for
    /// content that is not in that repository (blobs are otherwise served under any).
    NotFound,
}

#[derive(Clone, Debug)]
struct Rule {
    behaviour: Behaviour,
    /// `None`: until changed. `Some(n)`: for the next `n` requests, then [`Behaviour::Normal`].
    remaining: Option<usize>,
}

#[derive(Default)]
struct Content {
    /// (repo, tag or digest) -> manifest
    manifests: HashMap<(String, String), Manifest>,
    /// digest -> blob, shared by every repo
    blobs: HashMap<String, Blob>,
}

#[derive(Default)]
struct State {
    content: Mutex<Content>,
    rules: Mutex<HashMap<String, Rule>>,
    hits: Mutex<HashMap<(String, String), Arc<AtomicUsize>>>,
    log: Mutex<Vec<String>>,
    /// `Authorization` and `Referer` values received, as `name: value`.
    sensitive: Mutex<Vec<String>>,
    connections: AtomicUsize,
    /// Connection tasks, aborted on drop so a dropped server is really gone even for
    /// clients holding a keep-alive connection.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    backend: Option<String>,
}

/// The running server; its accept loop stops on drop.
pub struct FaultServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept_loop: JoinHandle<()>,
}

impl FaultServer {
    /// An empty upstream: add content with [`FaultServer::add_image`] and friends.
    pub async fn start() -> FaultServer {
        Self::start_with(None).await
    }

    /// A counting reverse proxy in front of a real registry: paths without in-memory content
    /// are forwarded to `backend_url`. 429 and 500 rules apply to forwarded paths too; lies,
    /// cuts and slowness only to in-memory content.
    pub async fn start_in_front_of(backend_url: &str) -> FaultServer {
        Self::start_with(Some(backend_url.trim_end_matches('/').to_string())).await
    }

    async fn start_with(backend: Option<String>) -> FaultServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault server");
        let addr = listener.local_addr().expect("fault server addr");
        let state = Arc::new(State {
            backend,
            ..State::default()
        });
        let accept_state = state.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = accept_state.clone();
                let task = tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                accept_state
                    .tasks
                    .lock()
                    .expect("tasks lock")
                    .push(task.abort_handle());
            }
        });
        FaultServer {
            addr,
            state,
            accept_loop,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn add_blob(&self, blob: &Blob) {
        let mut content = self.state.content.lock().expect("content lock");
        content.blobs.insert(blob.digest.clone(), blob.clone());
    }

    /// Serves `manifest` under `reference` (a tag) and under its own digest.
    pub fn add_manifest(&self, repo: &str, reference: &str, manifest: &Manifest) {
        let mut content = self.state.content.lock().expect("content lock");
        for r in [reference, manifest.digest.as_str()] {
            content
                .manifests
                .insert((repo.to_string(), r.to_string()), manifest.clone());
        }
    }

    pub fn add_image(&self, repo: &str, tag: &str, image: &Image) {
        for blob in image.blobs() {
            self.add_blob(blob);
        }
        self.add_manifest(repo, tag, &image.manifest);
    }

    pub fn add_multi_arch(&self, repo: &str, tag: &str, multi: &MultiArch) {
        for child in &multi.children {
            let digest = child.manifest.digest.clone();
            self.add_image(repo, &digest, child);
        }
        self.add_manifest(repo, tag, &multi.index);
    }

    /// Replaces the answer for `path` (no query) until changed.
    pub fn set(&self, path: &str, behaviour: Behaviour) {
        self.set_rule(path, behaviour, None);
    }

    /// Replaces the answer for the next `times` requests to `path`, then serves normally.
    pub fn set_times(&self, path: &str, behaviour: Behaviour, times: usize) {
        self.set_rule(path, behaviour, Some(times));
    }

    fn set_rule(&self, path: &str, behaviour: Behaviour, remaining: Option<usize>) {
        let mut rules = self.state.rules.lock().expect("rules lock");
        rules.insert(
            path.to_string(),
            Rule {
                behaviour,
                remaining,
            },
        );
    }

    /// Back to correct answers for every path.
    pub fn clear_all(&self) {
        self.state.rules.lock().expect("rules lock").clear();
    }

    /// How many `method` requests reached `path` (no query) so far.
    pub fn hits(&self, method: &str, path: &str) -> usize {
        self.hit_counter(method, path).load(Ordering::SeqCst)
    }

    /// The live counter behind [`FaultServer::hits`].
    pub fn hit_counter(&self, method: &str, path: &str) -> Arc<AtomicUsize> {
        let mut hits = self.state.hits.lock().expect("hits lock");
        hits.entry((method.to_string(), path.to_string()))
            .or_default()
            .clone()
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().expect("log lock").clone()
    }

    /// Every `Authorization` and `Referer` header received, as `name: value`.
    pub fn sensitive_headers(&self) -> Vec<String> {
        self.state.sensitive.lock().expect("sensitive lock").clone()
    }

    /// Accepted TCP connections so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
        for task in self.state.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

pub fn manifest_path(repo: &str, reference: &str) -> String {
    format!("/v2/{repo}/manifests/{reference}")
}

pub fn blob_path(repo: &str, digest: &str) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    state.log.lock().expect("log lock").push(format!(
        "{method} {}",
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    ));
    state
        .hits
        .lock()
        .expect("hits lock")
        .entry((method.to_string(), path.clone()))
        .or_default()
        .fetch_add(1, Ordering::SeqCst);

    for name in ["authorization", "referer"] {
        for value in req.headers().get_all(name) {
            state
                .sensitive
                .lock()
                .expect("sensitive lock")
                .push(format!("{name}: {}", value.to_str().unwrap_or("<binary>")));
        }
    }

    let behaviour = take_behaviour(state, &path);
    match behaviour {
        Behaviour::Redirect(location) => {
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", location)
                .body(empty())
                .unwrap()
        }
        Behaviour::NotFound => {
            let code = if path.contains("/blobs/") {
                "BLOB_UNKNOWN"
            } else {
                "MANIFEST_UNKNOWN"
            };
            return error(
                StatusCode::NOT_FOUND,
                code,
                "not in this repository",
                &method,
            );
        }
        Behaviour::Challenge(challenge) => {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authenticate",
                &method,
            );
            resp.headers_mut()
                .insert("www-authenticate", challenge.parse().unwrap());
            return resp;
        }
        Behaviour::TooManyRequests { retry_after_secs } => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                "slow down",
                &method,
            );
            resp.headers_mut()
                .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
            return resp;
        }
        Behaviour::ServerError => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "injected failure",
                &method,
            )
        }
        _ => {}
    }
    if method != Method::GET && method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "read-only",
            &method,
        );
    }
    if path == "/v2/" || path == "/v2" {
        return Response::builder()
            .status(200)
            .header("docker-distribution-api-version", "registry/2.0")
            .header("content-type", "application/json")
            .body(full(Bytes::from_static(b"{}"), &method))
            .unwrap();
    }

    let found = lookup(state, &path);
    let (content_type, digest, data, is_blob) = match found {
        Lookup::Manifest(m) => (m.media_type, m.digest, Bytes::from(m.bytes), false),
        Lookup::Blob(b) => (b.media_type, b.digest, Bytes::from(b.data), true),
        Lookup::Tags(body) => {
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(full(Bytes::from(body), &method))
                .unwrap()
        }
        Lookup::Missing(code) => {
            if let Some(backend) = &state.backend {
                return forward(backend, req).await;
            }
            return error(StatusCode::NOT_FOUND, code, "not here", &method);
        }
    };

    let total = data.len();
    let (status, range) = match req.headers().get("range").and_then(|v| v.to_str().ok()) {
        Some(spec) if is_blob => match parse_range(spec, total) {
            Some(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
            None => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header("content-range", format!("bytes */{total}"))
                    .body(full(Bytes::new(), &method))
                    .unwrap()
            }
        },
        _ => (StatusCode::OK, None),
    };
    let body_bytes = match range {
        Some((start, end)) => data.slice(start..=end),
        None => data,
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("docker-content-digest", digest)
        .header("content-length", body_bytes.len())
        .header("accept-ranges", "bytes");
    if let Some((start, end)) = range {
        builder = builder.header("content-range", format!("bytes {start}-{end}/{total}"));
    }
    if method == Method::HEAD {
        if let Behaviour::HeadLength(n) = behaviour {
            let mut resp = builder.body(empty()).unwrap();
            resp.headers_mut().insert("content-length", n.into());
            return resp;
        }
        return builder.body(empty()).unwrap();
    }
    let body = match behaviour {
        Behaviour::Lie => full(
            Bytes::from(body_bytes.iter().map(|b| !b).collect::<Vec<u8>>()),
            &method,
        ),
        Behaviour::CutAfter(n) => cut_body(body_bytes, n),
        Behaviour::Slow { chunk, delay } => slow_body(body_bytes, chunk, delay),
        _ => full(body_bytes, &method),
    };
    builder.body(body).unwrap()
}

fn take_behaviour(state: &State, path: &str) -> Behaviour {
    let mut rules = state.rules.lock().expect("rules lock");
    let Some(rule) = rules.get_mut(path) else {
        return Behaviour::Normal;
    };
    let behaviour = rule.behaviour.clone();
    if let Some(remaining) = rule.remaining.as_mut() {
        *remaining -= 1;
        if *remaining == 0 {
            rules.remove(path);
        }
    }
    behaviour
}

enum Lookup {
    Manifest(Manifest),
    Blob(Blob),
    Tags(Vec<u8>),
    Missing(&'static str),
}

fn lookup(state: &State, path: &str) -> Lookup {
    let content = state.content.lock().expect("content lock");
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Lookup::Missing("NAME_UNKNOWN");
    };
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        let tags: BTreeSet<&str> = content
            .manifests
            .keys()
            .filter(|(r, t)| r == repo && !t.contains(':'))
            .map(|(_, t)| t.as_str())
            .collect();
        if tags.is_empty() {
            return Lookup::Missing("NAME_UNKNOWN");
        }
        let body = serde_json::json!({"name": repo, "tags": tags});
        return Lookup::Tags(serde_json::to_vec(&body).unwrap());
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return match content
            .manifests
            .get(&(repo.to_string(), reference.to_string()))
        {
            Some(m) => Lookup::Manifest(m.clone()),
            None => Lookup::Missing("MANIFEST_UNKNOWN"),
        };
    }
    if let Some((_repo, digest)) = rest.rsplit_once("/blobs/") {
        return match content.blobs.get(digest) {
            Some(b) => Lookup::Blob(b.clone()),
            None => Lookup::Missing("BLOB_UNKNOWN"),
        };
    }
    Lookup::Missing("NAME_UNKNOWN")
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` -> inclusive (start, end); `None` if unsatisfiable.
pub fn parse_range(spec: &str, total: usize) -> Option<(usize, usize)> {
    let spec = spec.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if total == 0 {
        return None;
    }
    if a.is_empty() {
        let n: usize = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((total.saturating_sub(n), total - 1));
    }
    let start: usize = a.parse().ok()?;
    if start >= total {
        return None;
    }
    let end = if b.is_empty() {
        total - 1
    } else {
        b.parse::<usize>().ok()?.min(total - 1)
    };
    (start <= end).then_some((start, end))
}

async fn forward(backend: &str, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let url = format!(
        "{backend}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let client = reqwest::Client::new();
    let mut outbound = client.request(method.clone(), url);
    for name in ["accept", "range", "authorization"] {
        for value in req.headers().get_all(name) {
            outbound = outbound.header(name, value.clone());
        }
    }
    let resp = match outbound.send().await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "UNKNOWN",
                &format!("backend: {e}"),
                &method,
            )
        }
    };
    let mut builder = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if name != "transfer-encoding" && name != "connection" {
            builder = builder.header(name, value.clone());
        }
    }
    let body = resp.bytes().await.unwrap_or_default();
    let body = if method == Method::HEAD {
        empty()
    } else {
        full(body, &method)
    };
    builder.body(body).unwrap()
}

fn error(status: StatusCode, code: &str, message: &str, method: &Method) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(
            Bytes::from(serde_json::to_vec(&body).unwrap()),
            method,
        ))
        .unwrap()
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn full(data: Bytes, method: &Method) -> Body {
    if method == Method::HEAD {
        return empty();
    }
    Full::new(data)
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// `n` bytes, then an error: hyper drops the connection short of `Content-Length`. The
/// pause lets hyper flush the head and the first bytes before the connection dies, as a
/// real upstream dying mid-blob would.
fn cut_body(data: Bytes, n: usize) -> Body {
    let head = data.slice(..n.min(data.len()));
    let frames = stream::unfold(Some(head), |head| async move {
        match head {
            Some(head) => Some((Ok(Frame::data(head)), None)),
            None => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let cut = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected cut");
                Some((Err(cut), None))
            }
        }
    });
    BodyExt::boxed(StreamBody::new(frames))
}

fn slow_body(data: Bytes, chunk: usize, delay: Duration) -> Body {
    let chunk = chunk.max(1);
    let frames = stream::unfold(0usize, move |offset| {
        let data = data.clone();
        async move {
            if offset >= data.len() {
                return None;
            }
            if offset > 0 {
                tokio::time::sleep(delay).await;
            }
            let end = (offset + chunk).min(data.len());
            Some((
                Ok::<_, std::io::Error>(Frame::data(data.slice(offset..end))),
                end,
            ))
        }
    });
    BodyExt::boxed(StreamBody::new(frames))
}
