//! A real distribution registry (`docker-registry`, 2.8) on loopback, one per test.
//!
//! Each instance gets a free port, its own temp dir for storage and config, and is killed when
//! the handle drops. Extra YAML (an `auth:` or `proxy:` section) is appended to the generated
//! config as top-level keys, so callers must not repeat `version`, `log`, `storage` or `http`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The binary the Debian package `docker-registry` installs.
pub const REGISTRY_BIN: &str = "docker-registry";

/// A running `docker-registry serve`; killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Registry {
    /// A plain, anonymous registry with filesystem storage and deletes enabled.
    pub async fn start() -> Registry {
        Self::start_with_config("").await
    }

    /// A registry whose config has `extra_yaml` appended as top-level sections, for example
    /// an `auth:` section with a token realm.
    pub async fn start_with_config(extra_yaml: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("pp-registry-")
            .tempdir()
            .expect("registry temp dir");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, render_config(dir.path(), port, extra_yaml))
                .expect("write registry config");
            let log_path = dir.path().join(format!("registry-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("registry log file");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .env("REGISTRY_HTTP_SECRET", "patchpull-tests")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
            if wait_ready(&mut child, port, Duration::from_secs(20)).await {
                return Registry { child, port, dir };
            }
            // Most likely the port was taken between probing and binding: try another one.
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("docker-registry did not come up after 5 attempts; last log:\n{last_log}");
    }

    /// A pull-through cache of `remote_url` (distribution's own `proxy.remoteurl` mode), to
    /// compare patchpull against.
    pub async fn start_proxy(remote_url: &str) -> Registry {
        Self::start_with_config(&format!("proxy:\n  remoteurl: {remote_url}\n")).await
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, what `ns=` carries for this registry.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's own temp dir (config, logs, storage under `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the registry logged so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("registry-{}.log", self.port)))
            .unwrap_or_default()
    }
}

/// Waits until the registry answers `GET /v2/` with any status (401 with an auth section).
async fn wait_ready(child: &mut Child, port: u16, patience: Duration) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("reqwest client");
    let deadline = Instant::now() + patience;
    let url = format!("http://127.0.0.1:{port}/v2/");
    while Instant::now() < deadline {
        if let Ok(Some(_status)) = child.try_wait() {
            return false;
        }
        if client.get(&url).send().await.is_ok() {
            // Someone answered; make sure it is our child and not another server that took
            // the port first (then our child exits at once with "address already in use").
            tokio::time::sleep(Duration::from_millis(100)).await;
            return matches!(child.try_wait(), Ok(None));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn render_config(dir: &Path, port: u16, extra_yaml: &str) -> String {
    let data = dir.join("data");
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n\
         {extra_yaml}\n",
        data = data.display(),
    )
}

/// A port that was free a moment ago: bind port 0, read it, release it.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}
