//! Shared integration-test harness: patchpull in-process with a config builder, a real
//! registry (`registry`), hermetic test images (`images`), a fault-injecting upstream
//! (`fault`), a token server (`token`) and `patchpull serve` as a child process (`serve`).
//! Everything listens on 127.0.0.1 with port 0 or a freshly probed port and keeps its files
//! in its own temp dir.
#![allow(dead_code)]

pub mod alpine;
pub mod apt;
pub mod dockerd;
pub mod fault;
pub mod images;
pub mod registry;
pub mod serve;
pub mod token;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use patchpull::config::Config;
use patchpull::server::Server;
use tempfile::TempDir;

/// One `[[upstream]]` table.
#[derive(Clone, Debug)]
pub struct UpstreamSpec {
    pub name: String,
    pub url: String,
    pub default: bool,
    /// Raw TOML lines added inside this `[[upstream]]` table, e.g. `retries = 0`.
    pub extra: Vec<String>,
}

/// What the test harness turns into patchpull's TOML; tests adjust it in a closure.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub upstreams: Vec<UpstreamSpec>,
    pub tag_ttl: String,
    pub log_level: String,
    /// Raw TOML lines added to `[server]`.
    pub server_extra: Vec<String>,
    /// Raw TOML lines added to `[storage]`.
    pub storage_extra: Vec<String>,
    /// Raw TOML lines of `[patch]`; the mirror tests run with `mode = "off"`, so a tag pull
    /// is a plain mirror pull.
    pub patch: Vec<String>,
    /// Raw TOML lines of `[scan]`.
    pub scan: Vec<String>,
    /// Raw TOML lines of `[signing]`.
    pub signing: Vec<String>,
}

impl ProxyConfig {
    pub fn new(upstreams: &[(&str, &str, bool)]) -> ProxyConfig {
        ProxyConfig {
            upstreams: upstreams
                .iter()
                .map(|(name, url, default)| UpstreamSpec {
                    name: name.to_string(),
                    url: url.to_string(),
                    default: *default,
                    extra: Vec::new(),
                })
                .collect(),
            tag_ttl: "60s".into(),
            log_level: "warn".into(),
            server_extra: Vec::new(),
            storage_extra: Vec::new(),
            patch: vec!["mode = \"off\"".into()],
            scan: Vec::new(),
            signing: Vec::new(),
        }
    }

    /// The upstream called `name`, to add lines to.
    pub fn upstream_mut(&mut self, name: &str) -> &mut UpstreamSpec {
        self.upstreams
            .iter_mut()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no upstream {name} in the test config"))
    }

    /// Adds `line` to every upstream table.
    pub fn all_upstreams(&mut self, line: &str) {
        for u in &mut self.upstreams {
            u.extra.push(line.to_string());
        }
    }

    pub fn to_toml(&self, storage: &Path) -> String {
        let mut out = String::new();
        out.push_str("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n");
        for line in &self.server_extra {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!("\n[storage]\npath = {:?}\n", storage.display()));
        for line in &self.storage_extra {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!("\n[cache]\ntag_ttl = {:?}\n", self.tag_ttl));
        out.push_str(&format!("\n[log]\nlevel = {:?}\n", self.log_level));
        out.push_str("\n[patch]\n");
        for line in &self.patch {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!(
            "\n[scan]\ncache_dir = {:?}\n",
            storage.join("scan-cache").display()
        ));
        for line in &self.scan {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("\n[signing]\n");
        for line in &self.signing {
            out.push_str(line);
            out.push('\n');
        }
        for u in &self.upstreams {
            out.push_str(&format!(
                "\n[[upstream]]\nname = {:?}\nurl = {:?}\ndefault = {}\n",
                u.name, u.url, u.default
            ));
            for line in &u.extra {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// patchpull running in-process on 127.0.0.1:0 with its store in a temp dir.
pub struct Proxy {
    server: Option<Server>,
    /// What the proxy's TTLs go by: advance it instead of sleeping past one.
    pub clock: patchpull::clock::Clock,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub toml: String,
    dir: TempDir,
}

impl Proxy {
    /// Starts patchpull with `upstreams` as `(name, url, default)`, after `tweak` adjusted
    /// the config.
    pub async fn start(
        upstreams: &[(&str, &str, bool)],
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> Proxy {
        let mut config = ProxyConfig::new(upstreams);
        tweak(&mut config);
        Self::start_with(&config).await
    }

    pub async fn start_with(config: &ProxyConfig) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("pp-proxy-")
            .tempdir()
            .expect("proxy temp dir");
        let toml = config.to_toml(&dir.path().join("store"));
        let cfg = Config::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let clock = cfg.clock.clone();
        let server = Server::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("patchpull did not start: {e:?}\n{toml}"));
        let addr = server.local_addr();
        Proxy {
            server: Some(server),
            clock,
            addr,
            client: client(),
            toml,
            dir,
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

    /// Connections the server is serving now.
    pub fn open_connections(&self) -> usize {
        self.server.as_ref().map_or(0, |s| s.open_connections())
    }

    /// The store directory.
    pub fn store_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("store")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, &[]).await
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::HEAD, path, &[]).await
    }

    /// Sends `method path` with `headers` and returns the response, whatever its status.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.request(method, format!("{}{path}", self.url()));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("request {path} failed: {e}"))
    }

    /// Graceful shutdown, waiting for the drain.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// A client that never follows redirects, so tests see exactly what patchpull answers.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// Error codes a registry may put in `{"errors":[{"code": ...}]}`: the distribution spec's
/// list plus the ones distribution itself uses.
pub const ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    "RANGE_INVALID",
    "UNAVAILABLE",
    "UNKNOWN",
];

/// Reads an error response and returns its first code, asserting that the body is
/// `{"errors":[{"code": <known code>, ...}]}`.
pub async fn error_code(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.bytes().await.expect("error body");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "status {status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    let code = json["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("status {status}: no errors[0].code in {json}"))
        .to_string();
    assert!(
        ERROR_CODES.contains(&code.as_str()),
        "status {status}: {code} is not a registry error code"
    );
    code
}

/// The body as JSON; panics with the body text when it is not.
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let body = resp.bytes().await.expect("response body");
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "status {status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// A header as a string, or "" when absent.
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_string())
        .unwrap_or_default()
}

/// True when every tool is on PATH. When one is missing: panics if
/// `REQUIRE_TEST_TOOLS=1`, otherwise prints a skip line and returns false.
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("REQUIRE_TEST_TOOLS").as_deref() == Ok("1") {
        panic!("required tools missing: {missing:?} (REQUIRE_TEST_TOOLS=1)");
    }
    eprintln!("SKIP: tools missing: {missing:?}; scripts/test.sh installs them");
    false
}

fn on_path(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).exists();
    }
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(tool).is_file())
}

/// Polls `check` until it returns true or `patience` runs out.
pub async fn eventually(patience: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
