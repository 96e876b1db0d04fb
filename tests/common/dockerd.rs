//! A real Docker Engine (Debian's `docker.io`, 20.10, with its built-in BuildKit) on a
//! private socket, one per test.
//!
//! Everything that dockerd keeps on disk or binds is inside the instance's temp dir: data
//! root, exec root (which also holds the managed containerd's socket and state), pid file,
//! API socket and config file, so several instances run side by side. No iptables, no
//! bridge: builds use network `none` (or `host` with the entitlement).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Debian's `docker.io` installs the daemon.
pub const DOCKERD_BIN: &str = "/usr/sbin/dockerd";

/// A running dockerd; stopped (with its containerd) and its directory removed on drop.
pub struct Dockerd {
    child: Child,
    dir: Option<TempDir>,
    socket: PathBuf,
}

impl Dockerd {
    /// Starts dockerd trusting `insecure_registries` (`127.0.0.1:PORT`) over plain HTTP.
    /// `None` (with a skip line) when dockerd is not installed, a panic instead when
    /// `REQUIRE_TEST_TOOLS=1`.
    pub async fn start(insecure_registries: &[String]) -> Option<Dockerd> {
        if !Path::new(DOCKERD_BIN).is_file() {
            if std::env::var("REQUIRE_TEST_TOOLS").as_deref() == Ok("1") {
                panic!("{DOCKERD_BIN} missing (package docker.io; REQUIRE_TEST_TOOLS=1)");
            }
            eprintln!("SKIP: {DOCKERD_BIN} missing (package docker.io); skipped");
            return None;
        }
        // Short path: the containerd socket under the exec root must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("pp-dockerd-")
            .tempdir_in("/tmp")
            .expect("dockerd temp dir");
        let root = dir.path();
        let socket = root.join("docker.sock");
        // An empty config file keeps the host's /etc/docker/daemon.json out.
        std::fs::write(root.join("daemon.json"), "{}").expect("write daemon.json");
        let log = std::fs::File::create(root.join("dockerd.log")).expect("dockerd log");
        let mut cmd = Command::new(DOCKERD_BIN);
        cmd.arg("--config-file")
            .arg(root.join("daemon.json"))
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
            ])
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("-p")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()));
        for registry in insecure_registries {
            cmd.arg("--insecure-registry").arg(registry);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DOCKERD_BIN}: {e}"));
        let mut dockerd = Dockerd {
            child,
            dir: Some(dir),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = dockerd.child.try_wait() {
                panic!("dockerd exited with {status}:\n{}", dockerd.log());
            }
            if ping(&dockerd.socket).await {
                return Some(dockerd);
            }
            if Instant::now() > deadline {
                panic!(
                    "dockerd did not answer /_ping within 30 s:\n{}",
                    dockerd.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Engine API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `docker-unix://<socket>`, the BuildKit address of this engine.
    pub fn address(&self) -> String {
        format!("docker-unix://{}", self.socket.display())
    }

    /// What dockerd logged so far, for failure messages.
    pub fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("dockerd.log")).ok())
            .unwrap_or_default()
    }
}

/// `GET /_ping` answers `200 OK` once the daemon accepts API calls.
async fn ping(socket: &Path) -> bool {
    let attempt = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await.ok()?;
        stream
            .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its managed containerd (it runs in a session of its
        // own, so killing dockerd's process group would miss it) and unmount its layers.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let Some(dir) = self.dir.take() else {
            return;
        };
        // Whatever still runs from this instance's directory (containerd, a shim) goes too.
        let leftovers = processes_mentioning(dir.path());
        for pid in &leftovers {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if !leftovers.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
        for mount in mounts_under(dir.path()) {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
        if let Err(e) = std::fs::remove_dir_all(dir.path()) {
            eprintln!("could not remove {}: {e}", dir.path().display());
        }
        // The TempDir's own cleanup finds nothing left.
        drop(dir);
    }
}

/// Pids whose command line names `dir`.
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Mount points below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}
