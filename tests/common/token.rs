//! A Docker token server (distribution `docs/spec/auth/token.md`) on loopback, for a real
//! `docker-registry` configured with `auth: token:`; plus an htpasswd (Basic) variant.
//!
//! `GET /token?service=S&scope=repository:NAME:pull` answers
//! `{"token", "access_token", "expires_in", "issued_at"}`. Tokens are ES256 JWTs whose header
//! carries the signing certificate (`x5c`); the same self-signed certificate is written to a
//! PEM file that the registry trusts as `auth.token.rootcertbundle`, which is how
//! distribution 2.8 verifies them (chain in `x5c` against the root bundle, then `iss`, `aud`,
//! `exp`/`nbf` with a minute of leeway, then the `access` claim against the request).
//!
//! Granting: the configured user (HTTP Basic on the token request) gets `pull` and `push` on
//! every repository; anonymous requests get `pull` on the public repositories only (or on
//! all of them with `anonymous_all`); anything else yields a token with an empty access list,
//! which the registry answers with 401. Wrong credentials get 401 from the token server
//! itself. Every request is recorded, so tests can count token fetches per scope.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tempfile::TempDir;

use super::images::{Blob, Image, Manifest};

/// What the token server accepts and grants.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// The registry's `auth.token.service`; a request naming another service gets 400.
    pub service: String,
    /// The registry's `auth.token.issuer`; the `iss` claim.
    pub issuer: String,
    /// The one account: `pull` and `push` on every repository.
    pub username: String,
    pub password: String,
    /// Repositories that anonymous requests may pull.
    pub public_repos: Vec<String>,
    /// Anonymous requests may pull every repository.
    pub anonymous_all: bool,
    /// `expires_in` of every token, in seconds.
    pub expires_in: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            service: "test-registry".into(),
            issuer: "test-issuer".into(),
            username: "puller".into(),
            password: "s3cret-Pa55w0rd-XyZ".into(),
            public_repos: Vec::new(),
            anonymous_all: false,
            expires_in: 300,
        }
    }
}

/// One request the token server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    /// Every requested scope, as sent (`repository:NAME:ACTIONS`).
    pub scopes: Vec<String>,
    pub service: Option<String>,
    /// The authenticated user, `None` for anonymous requests (and refused ones).
    pub user: Option<String>,
    /// An `Authorization` header was present (valid or not).
    pub had_authorization: bool,
    pub status: u16,
    /// What the token grants: `(repository, actions)`.
    pub granted: Vec<(String, Vec<String>)>,
    /// The token issued, if any.
    pub token: Option<String>,
}

struct State {
    config: TokenConfig,
    encoding_key: jsonwebtoken::EncodingKey,
    cert_b64: String,
    requests: Mutex<Vec<TokenRequest>>,
    next_id: AtomicU64,
}

/// The token server; stops when dropped.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    cert_path: PathBuf,
    _dir: TempDir,
}

impl TokenServer {
    /// Generates a P-256 key and a self-signed certificate, writes the certificate to a temp
    /// file and serves on 127.0.0.1:0.
    pub async fn start(config: TokenConfig) -> TokenServer {
        let dir = tempfile::Builder::new()
            .prefix("pp-token-")
            .tempdir()
            .expect("token temp dir");
        let key = rcgen::KeyPair::generate().expect("generate P-256 key");
        let mut params =
            rcgen::CertificateParams::new(vec!["token-issuer.test".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "patchpull test token issuer");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let cert_path = dir.path().join("token-root.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write rootcertbundle");
        let encoding_key = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
            .expect("ES256 encoding key");
        let state = Arc::new(State {
            config,
            encoding_key,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            requests: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token server");
        let addr = listener.local_addr().expect("token server addr");
        let served = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TokenServer {
            addr,
            state,
            task,
            cert_path,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/token`
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The `auth_hosts` line of an `[[upstream]]` that uses this token server: its realm is
    /// on another port than the registry, so patchpull only asks it when told to.
    pub fn auth_hosts_line(&self) -> String {
        format!("auth_hosts = [\"{}\"]", self.addr)
    }

    pub fn config(&self) -> &TokenConfig {
        &self.state.config
    }

    /// The PEM file with the signing certificate (`auth.token.rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The `auth:` section for [`super::registry::Registry::start_with_config`].
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {cert}\n",
            realm = self.realm(),
            service = self.state.config.service,
            issuer = self.state.config.issuer,
            cert = self.cert_path.display(),
        )
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// How many requests asked for exactly `scope`.
    pub fn requests_for_scope(&self, scope: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.scopes.iter().any(|s| s == scope))
            .count()
    }

    /// How many requests asked for any scope on `repository` (whatever the actions).
    pub fn requests_for_repo(&self, repository: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.scopes
                    .iter()
                    .any(|s| parse_scope(s).is_some_and(|(_, name, _)| name == repository))
            })
            .count()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().expect("requests lock").len()
    }

    /// Forgets the recorded requests (for example those made while pushing fixtures).
    pub fn reset_requests(&self) {
        self.state.requests.lock().expect("requests lock").clear();
    }

    /// Every token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|r| r.token)
            .collect()
    }

    /// Fetches a token over HTTP like a client would: `GET realm?service=&scope=`, with Basic
    /// credentials when `credentials` is set. Panics unless the answer is 200.
    pub async fn fetch_token(&self, credentials: Option<(&str, &str)>, scope: &str) -> String {
        let mut req = reqwest::Client::new().get(self.realm()).query(&[
            ("service", self.state.config.service.as_str()),
            ("scope", scope),
        ]);
        if let Some((user, password)) = credentials {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.send().await.expect("token request");
        let status = resp.status();
        let body: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.expect("token body")).expect("token JSON");
        assert_eq!(status, 200, "token request for {scope}: {body}");
        body["token"].as_str().expect("token field").to_string()
    }

    /// `Bearer <token>` with `pull,push` on `repository` for the configured user.
    pub async fn push_authorization(&self, repository: &str) -> String {
        let config = &self.state.config;
        let token = self
            .fetch_token(
                Some((&config.username, &config.password)),
                &format!("repository:{repository}:pull,push"),
            )
            .await;
        format!("Bearer {token}")
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    if req.uri().path() != "/token" {
        return json_response(StatusCode::NOT_FOUND, json!({"error": "not found"}));
    }
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // GET carries the parameters in the query; POST (the OAuth2 flavour) in a form body.
    let mut params: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let mut form_credentials = None;
    if method == Method::POST {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let get = |k: &str| {
            form.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        if get("grant_type").as_deref() == Some("password") {
            form_credentials = get("username").zip(get("password"));
        }
        params.extend(form);
    } else if method != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "GET or POST"}),
        );
    }

    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let mut record = TokenRequest {
        method: method.to_string(),
        scopes: scopes.clone(),
        service: service.clone(),
        user: None,
        had_authorization: authorization.is_some() || form_credentials.is_some(),
        status: 200,
        granted: Vec::new(),
        token: None,
    };
    let config = &state.config;

    // Who is asking: anonymous, the configured user, or someone to refuse.
    let presented = match (&authorization, form_credentials) {
        (Some(header), _) => match decode_basic(header) {
            Some(pair) => Some(pair),
            None => {
                return refuse(state, record, "authorization is not valid HTTP Basic");
            }
        },
        (None, Some(pair)) => Some(pair),
        (None, None) => None,
    };
    if let Some((user, password)) = &presented {
        if *user != config.username || *password != config.password {
            return refuse(state, record, "invalid username or password");
        }
        record.user = Some(user.clone());
    }

    if service.as_deref().is_some_and(|s| s != config.service) {
        record.status = 400;
        state.record(record);
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"errors": [{"code": "DENIED", "message": "unknown service"}]}),
        );
    }

    let public: HashSet<&str> = config.public_repos.iter().map(String::as_str).collect();
    let mut access = Vec::new();
    for scope in &scopes {
        let Some((kind, name, actions)) = parse_scope(scope) else {
            continue;
        };
        if kind != "repository" {
            continue;
        }
        let allowed: Vec<String> = actions
            .iter()
            .filter(|a| match record.user {
                Some(_) => matches!(a.as_str(), "pull" | "push" | "*"),
                None => {
                    a.as_str() == "pull" && (config.anonymous_all || public.contains(name.as_str()))
                }
            })
            .cloned()
            .collect();
        if !allowed.is_empty() {
            access.push((name, allowed));
        }
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = json!({
        "iss": config.issuer,
        "sub": record.user.clone().unwrap_or_default(),
        // distribution 2.8 reads `aud` as a single string.
        "aud": config.service,
        "exp": now + config.expires_in,
        "nbf": now.saturating_sub(1),
        "iat": now,
        "jti": format!("pp-{}", state.next_id.fetch_add(1, Ordering::Relaxed)),
        "access": access
            .iter()
            .map(|(name, actions)| json!({"type": "repository", "name": name, "actions": actions}))
            .collect::<Vec<_>>(),
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.x5c = Some(vec![state.cert_b64.clone()]);
    let token = jsonwebtoken::encode(&header, &claims, &state.encoding_key).expect("sign token");
    record.granted = access;
    record.token = Some(token.clone());
    state.record(record);
    json_response(
        StatusCode::OK,
        json!({
            "token": token,
            "access_token": token,
            "expires_in": config.expires_in,
            "issued_at": rfc3339(now),
        }),
    )
}

impl State {
    fn record(&self, request: TokenRequest) {
        self.requests.lock().expect("requests lock").push(request);
    }
}

fn refuse(state: &State, mut record: TokenRequest, message: &str) -> Response<Full<Bytes>> {
    record.status = 401;
    state.record(record);
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]}),
    );
    resp.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"patchpull test token server\""),
    );
    resp
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `Basic base64(user:password)` -> `(user, password)`.
fn decode_basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `repository:NAME:a,b` -> `("repository", NAME, [a, b])`. The type is everything before the
/// first ':' and the actions everything after the last, so names with ':' in a resource
/// class (`repository(plugin):x:pull`) still split.
pub fn parse_scope(scope: &str) -> Option<(String, String, Vec<String>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((
        kind.to_string(),
        name.to_string(),
        actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    ))
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------
// Pushing into an authenticated registry.

/// Monolithic upload with `authorization` on every request.
pub async fn push_blob_authed(registry_url: &str, repo: &str, blob: &Blob, authorization: &str) {
    super::images::push_blob_with(registry_url, repo, blob, Some(authorization)).await
}

pub async fn push_manifest_authed(
    registry_url: &str,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
    authorization: &str,
) {
    super::images::push_manifest_with(registry_url, repo, reference, manifest, Some(authorization))
        .await
}

/// Pushes blobs and the manifest, tagged `tag`, sending `authorization` (a `Bearer` token
/// with push scope, or `Basic` credentials) on every request.
pub async fn push_image_authed(
    registry_url: &str,
    repo: &str,
    tag: &str,
    image: &Image,
    authorization: &str,
) {
    for blob in image.blobs() {
        push_blob_authed(registry_url, repo, blob, authorization).await;
    }
    push_manifest_authed(registry_url, repo, tag, &image.manifest, authorization).await;
}

/// `Basic base64(user:password)`
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

// ---------------------------------------------------------------------------------------
// htpasswd (Basic) auth for the registry.

/// Writes a bcrypt htpasswd file for `user`/`password` into `dir` and returns the registry's
/// `auth:` section for it. Uses `htpasswd -Bbn` (apache2-utils); without it, tries Python's
/// `crypt` module (bcrypt through libxcrypt). `None` when neither can make a bcrypt hash.
pub fn htpasswd_auth_yaml(dir: &Path, user: &str, password: &str) -> Option<String> {
    let line = htpasswd_line(user, password)?;
    let path = dir.join("htpasswd");
    std::fs::write(&path, format!("{line}\n")).expect("write htpasswd");
    Some(format!(
        "auth:\n  htpasswd:\n    realm: patchpull-test-basic\n    path: {}\n",
        path.display()
    ))
}

fn htpasswd_line(user: &str, password: &str) -> Option<String> {
    let from_htpasswd = std::process::Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    if let Some(line) = from_htpasswd.filter(|l| l.starts_with(&format!("{user}:$2"))) {
        return Some(line);
    }
    // The password goes through stdin, never the command line. Cost 5 like `htpasswd -B`:
    // the registry checks the hash on every request.
    let script = "import crypt,sys\n\
                  p=sys.stdin.read()\n\
                  print(crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)))\n";
    let mut child = std::process::Command::new("python3")
        .args(["-W", "ignore", "-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take()?;
        stdin.write_all(password.as_bytes()).ok()?;
    }
    let out = child.wait_with_output().ok()?;
    let hash = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && hash.starts_with("$2")).then(|| format!("{user}:{hash}"))
}

// ---------------------------------------------------------------------------------------
// An authenticated upstream that redirects blob downloads to a second origin (a "CDN"), the
// way registries backed by object storage do. The CDN records the headers it was sent, so a
// test can check that the upstream's credentials stayed with the upstream.

/// How [`RedirectingUpstream`] authenticates `/v2/` requests.
pub enum Guard<'a> {
    /// HTTP Basic with this user and password.
    Basic { user: String, password: String },
    /// Bearer tokens issued by this token server (with pull on the repository).
    Token(&'a TokenServer),
}

enum GuardState {
    Basic { expected: String },
    Token { server: Arc<State>, realm: String },
}

struct UpstreamState {
    guard: GuardState,
    manifests: Mutex<Vec<(String, String, Manifest)>>,
    blobs: Mutex<Vec<Blob>>,
    cdn: SocketAddr,
    /// `Authorization` values (or "-") the CDN received, with the path.
    cdn_log: Mutex<Vec<(String, String)>>,
    /// Every request line and its `Authorization` (or "-") the upstream received.
    upstream_log: Mutex<Vec<(String, String)>>,
}

/// The upstream and its CDN; both stop when dropped.
pub struct RedirectingUpstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RedirectingUpstream {
    pub async fn start(guard: Guard<'_>) -> RedirectingUpstream {
        let guard = match guard {
            Guard::Basic { user, password } => GuardState::Basic {
                expected: basic_authorization(&user, &password),
            },
            Guard::Token(server) => GuardState::Token {
                server: server.state.clone(),
                realm: server.realm(),
            },
        };
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let cdn = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind cdn");
        let state = Arc::new(UpstreamState {
            guard,
            manifests: Mutex::new(Vec::new()),
            blobs: Mutex::new(Vec::new()),
            cdn: cdn.local_addr().expect("cdn addr"),
            cdn_log: Mutex::new(Vec::new()),
            upstream_log: Mutex::new(Vec::new()),
        });
        let addr = upstream.local_addr().expect("upstream addr");
        let tasks = vec![
            serve(upstream, state.clone(), |s, r| {
                Box::pin(upstream_handle(s, r))
            }),
            serve(cdn, state.clone(), |s, r| Box::pin(cdn_handle(s, r))),
        ];
        RedirectingUpstream { addr, state, tasks }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT` of the CDN the blobs redirect to.
    pub fn cdn_url(&self) -> String {
        format!("http://{}", self.state.cdn)
    }

    /// The `redirect_hosts` line of an `[[upstream]]` for this upstream: its blobs redirect
    /// to the CDN on another port.
    pub fn redirect_hosts_line(&self) -> String {
        format!("redirect_hosts = [\"{}\"]", self.state.cdn)
    }

    pub fn add_image(&self, repo: &str, tag: &str, image: &Image) {
        let mut manifests = self.state.manifests.lock().expect("lock");
        for reference in [tag, image.manifest.digest.as_str()] {
            manifests.push((
                repo.to_string(),
                reference.to_string(),
                image.manifest.clone(),
            ));
        }
        let mut blobs = self.state.blobs.lock().expect("lock");
        for blob in image.blobs() {
            blobs.push(blob.clone());
        }
    }

    /// `(path, Authorization or "-")` for every request the CDN received.
    pub fn cdn_requests(&self) -> Vec<(String, String)> {
        self.state.cdn_log.lock().expect("lock").clone()
    }

    /// `(method path, Authorization or "-")` for every request the upstream received.
    pub fn upstream_requests(&self) -> Vec<(String, String)> {
        self.state.upstream_log.lock().expect("lock").clone()
    }
}

impl Drop for RedirectingUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

type Handler =
    fn(
        Arc<UpstreamState>,
        Request<Incoming>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>>;

fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<UpstreamState>,
    handler: Handler,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handler(state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn authorization_of(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn registry_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let mut resp = json_response(status, json!({"errors": [{"code": code, "message": code}]}));
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        hyper::header::HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn upstream_handle(
    state: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let authorization = authorization_of(&req);
    let path = req.uri().path().to_string();
    state.upstream_log.lock().expect("lock").push((
        format!("{} {path}", req.method()),
        authorization.clone().unwrap_or_else(|| "-".into()),
    ));
    let Some(rest) = path.strip_prefix("/v2/") else {
        return registry_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    };
    // `<repo>/manifests/<ref>` or `<repo>/blobs/<digest>`; `/v2/` itself has no repository.
    let (repo, kind, reference) = match rest
        .rsplit_once("/manifests/")
        .map(|(r, x)| (r, "manifests", x))
        .or_else(|| rest.rsplit_once("/blobs/").map(|(r, x)| (r, "blobs", x)))
    {
        Some((repo, kind, reference)) => (repo.to_string(), kind, reference.to_string()),
        None => (String::new(), "", String::new()),
    };

    let allowed = match &state.guard {
        GuardState::Basic { expected } => authorization.as_deref() == Some(expected.as_str()),
        GuardState::Token { server, .. } => authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|token| {
                server.requests.lock().expect("lock").iter().any(|r| {
                    r.token.as_deref() == Some(token)
                        && (repo.is_empty()
                            || r.granted.iter().any(|(name, actions)| {
                                *name == repo && actions.iter().any(|a| a == "pull")
                            }))
                })
            }),
    };
    if !allowed {
        let challenge = match &state.guard {
            GuardState::Basic { .. } => "Basic realm=\"patchpull-test-redirecting\"".to_string(),
            GuardState::Token { server, realm } => {
                let mut c = format!(
                    "Bearer realm=\"{realm}\",service=\"{}\"",
                    server.config.service
                );
                if !repo.is_empty() {
                    c.push_str(&format!(",scope=\"repository:{repo}:pull\""));
                }
                c
            }
        };
        let mut resp = registry_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        resp.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_str(&challenge).expect("challenge header"),
        );
        return resp;
    }

    let head = req.method() == Method::HEAD;
    match kind {
        "" if rest.is_empty() => registry_error(StatusCode::OK, "OK"),
        "manifests" => {
            let found = state
                .manifests
                .lock()
                .expect("lock")
                .iter()
                .find(|(r, x, _)| *r == repo && *x == reference)
                .map(|(_, _, m)| m.clone());
            let Some(manifest) = found else {
                return registry_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
            };
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from(manifest.bytes.clone())
            };
            let mut resp = Response::new(Full::new(body));
            let h = resp.headers_mut();
            h.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_str(&manifest.media_type).expect("type"),
            );
            h.insert(
                hyper::header::CONTENT_LENGTH,
                hyper::header::HeaderValue::from(manifest.bytes.len()),
            );
            h.insert(
                "docker-content-digest",
                hyper::header::HeaderValue::from_str(&manifest.digest).expect("digest"),
            );
            resp
        }
        "blobs" => {
            let known = state
                .blobs
                .lock()
                .expect("lock")
                .iter()
                .any(|b| b.digest == reference);
            if !known {
                return registry_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
            }
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            resp.headers_mut().insert(
                hyper::header::LOCATION,
                hyper::header::HeaderValue::from_str(&format!(
                    "http://{}/cdn/{reference}?signature=test",
                    state.cdn
                ))
                .expect("location"),
            );
            resp
        }
        _ => registry_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
    }
}

async fn cdn_handle(state: Arc<UpstreamState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    state.cdn_log.lock().expect("lock").push((
        path.clone(),
        authorization_of(&req).unwrap_or_else(|| "-".into()),
    ));
    let digest = path.strip_prefix("/cdn/").unwrap_or_default();
    let blob = state
        .blobs
        .lock()
        .expect("lock")
        .iter()
        .find(|b| b.digest == digest)
        .cloned();
    let Some(blob) = blob else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"no such object")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    let len = blob.data.len();
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(blob.data)
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut().insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(len),
    );
    resp
}
