//! A static file server on loopback standing in for an apt mirror: serves a directory,
//! answers conditional GETs with 304 (ETag from the content, Last-Modified from the file),
//! counts requests per path, and can answer chosen paths with a fixed status instead.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

#[derive(Default)]
struct State {
    hits: Mutex<HashMap<String, usize>>,
    /// Path -> status served instead of the file.
    overrides: Mutex<HashMap<String, StatusCode>>,
    /// Requests that carried If-None-Match or If-Modified-Since, per path.
    conditional: Mutex<HashMap<String, usize>>,
}

/// The running server; its accept loop stops on drop.
pub struct MirrorServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Drop for MirrorServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl MirrorServer {
    pub async fn start(root: &Path) -> MirrorServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (accept_state, root) = (state.clone(), root.to_owned());
        let accept_loop = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, root) = (accept_state.clone(), root.clone());
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let (state, root) = (state.clone(), root.clone());
                        async move { Ok::<_, Infallible>(handle(&state, &root, &request)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MirrorServer {
            addr,
            state,
            accept_loop,
        }
    }

    /// `http://127.0.0.1:PORT/<archive>`.
    pub fn url(&self, archive: &str) -> String {
        format!("http://{}/{archive}", self.addr)
    }

    /// Requests for exactly `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests for paths that end with `suffix`, summed.
    pub fn hits_ending(&self, suffix: &str) -> usize {
        let hits = self.state.hits.lock().unwrap();
        hits.iter()
            .filter(|(path, _)| path.ends_with(suffix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Conditional requests for paths ending with `suffix`, summed.
    pub fn conditional_ending(&self, suffix: &str) -> usize {
        let conditional = self.state.conditional.lock().unwrap();
        conditional
            .iter()
            .filter(|(path, _)| path.ends_with(suffix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Answers `path` with `status` from now on.
    pub fn answer(&self, path: &str, status: StatusCode) {
        self.state
            .overrides
            .lock()
            .unwrap()
            .insert(path.to_owned(), status);
    }
}

fn handle(state: &State, root: &Path, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    *state.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let if_none_match = request.headers().get("if-none-match").cloned();
    let if_modified_since = request.headers().get("if-modified-since").cloned();
    if if_none_match.is_some() || if_modified_since.is_some() {
        *state
            .conditional
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default() += 1;
    }
    if let Some(status) = state.overrides.lock().unwrap().get(&path) {
        return status_only(*status);
    }
    let Some(file) = resolve(root, &path) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let Ok(bytes) = std::fs::read(&file) else {
        return status_only(StatusCode::NOT_FOUND);
    };
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&bytes))[..16]);
    let last_modified = "Mon, 01 Jan 2024 00:00:00 GMT";
    let unchanged = match (&if_none_match, &if_modified_since) {
        (Some(tag), _) => tag.as_bytes() == etag.as_bytes(),
        (None, Some(date)) => date.as_bytes() == last_modified.as_bytes(),
        (None, None) => false,
    };
    let builder = Response::builder()
        .header("etag", &etag)
        .header("last-modified", last_modified);
    if unchanged {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    builder.body(Full::new(Bytes::from(bytes))).unwrap()
}

/// A request path inside `root`, refusing `..`.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = path.trim_start_matches('/');
    if relative
        .split('/')
        .any(|part| part == ".." || part.is_empty())
    {
        return None;
    }
    let file = root.join(relative);
    file.is_file().then_some(file)
}

fn status_only(status: StatusCode) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap()
}
