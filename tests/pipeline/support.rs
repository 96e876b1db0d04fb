//! What the pipeline tests share: a registry and a signed archive per test, patchpull
//! in-process configured to patch from that archive, manifest requests with their headers,
//! `/metrics` read back, real tools run with a deadline, and a containerd of the test's own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::apt::AptRepo;
use crate::common::images::{self, Image};
use crate::common::registry::Registry;
use crate::common::{require_tools, Proxy, ProxyConfig};
use crate::image::{libfoo, NEW};

/// The tools every pipeline test needs; with `containerd`, the ones containerd needs too.
pub fn tools(containerd: bool) -> bool {
    let mut tools = crate::common::apt::TOOLS.to_vec();
    tools.extend([
        crate::common::registry::REGISTRY_BIN,
        "skopeo",
        "umoci",
        "dpkg-query",
    ]);
    if containerd {
        tools.extend(["containerd", "ctr"]);
    }
    require_tools(&tools)
}

/// Runs a test body, failing it when it takes longer than `secs`.
pub async fn within<F: Future<Output = ()>>(secs: u64, body: F) {
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("the test took longer than {secs} s"));
    eprintln!("test body took {:.1} s", started.elapsed().as_secs_f64());
}

/// A registry (the upstream) and an archive holding `libfoo` at [`NEW`].
pub struct Env {
    pub registry: Registry,
    pub repo: AptRepo,
    pub dir: TempDir,
}

impl Env {
    pub async fn new() -> Env {
        let repo = AptRepo::new(&["amd64"]);
        repo.add(&libfoo(NEW, "amd64"));
        repo.publish();
        Env {
            registry: Registry::start().await,
            repo,
            dir: tempfile::Builder::new()
                .prefix("pp-pipeline-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[scan]` lines that read the archive at `archive_url` (the repo, or a proxy of it).
    pub fn scan_lines(&self, archive_url: &str) -> Vec<String> {
        vec![
            format!("debian_security_url = {archive_url:?}"),
            format!("debian_archive_url = {archive_url:?}"),
            format!(
                "debian_keyring = {:?}",
                self.repo.keyring().display().to_string()
            ),
            "point_releases = false".into(),
            "changelogs = true".into(),
            "refresh_interval = \"0s\"".into(),
        ]
    }

    /// patchpull with the registry as upstream `upstream` (the default one), `[patch]`
    /// set to `patch`, patching from the archive at `archive_url`.
    pub async fn proxy_via(
        &self,
        upstream: &str,
        archive_url: &str,
        patch: &[&str],
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> Proxy {
        let url = self.registry.url();
        let scan = self.scan_lines(archive_url);
        Proxy::start(&[(upstream, &url, true)], move |c| {
            c.patch = patch.iter().map(|l| l.to_string()).collect();
            c.scan = scan;
            tweak(c);
        })
        .await
    }

    /// [`Env::proxy_via`] reading the archive directly.
    pub async fn proxy(
        &self,
        upstream: &str,
        patch: &[&str],
        tweak: impl FnOnce(&mut ProxyConfig),
    ) -> Proxy {
        let url = self.repo.url();
        self.proxy_via(upstream, &url, patch, tweak).await
    }

    pub async fn push(&self, repo: &str, tag: &str, image: &Image) {
        images::push_image(&self.registry.url(), repo, tag, image).await;
    }
}

/// `[patch]` of a pull that waits for the patch.
pub const WAIT: &[&str] = &["mode = \"wait\"", "wait_timeout = \"60s\""];

/// One manifest answer, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub digest: String,
    pub media_type: String,
    pub length: String,
    pub retry_after: String,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    /// Asserts a 200 and returns the digest.
    pub fn ok(&self) -> &str {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.bytes));
        &self.digest
    }
}

/// `METHOD /v2/<name>/manifests/<reference>` with an Accept header for every manifest type.
pub async fn manifest(
    proxy: &Proxy,
    method: reqwest::Method,
    name: &str,
    reference: &str,
) -> Answer {
    let path = format!("/v2/{name}/manifests/{reference}");
    let resp = proxy
        .request(method, &path, &[("accept", images::ACCEPT_ALL)])
        .await;
    let header = |n: &str| crate::common::header(&resp, n);
    let (status, digest, media_type, length, retry_after) = (
        resp.status().as_u16(),
        header("docker-content-digest"),
        header("content-type"),
        header("content-length"),
        header("retry-after"),
    );
    Answer {
        status,
        digest,
        media_type,
        length,
        retry_after,
        bytes: resp.bytes().await.unwrap().to_vec(),
    }
}

pub async fn get(proxy: &Proxy, name: &str, reference: &str) -> Answer {
    manifest(proxy, reqwest::Method::GET, name, reference).await
}

/// The text of `/metrics`.
pub async fn metrics(proxy: &Proxy) -> String {
    let resp = proxy.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The value of `series` (name and labels as exposed, compared without case: the label
/// values are spelled `Patched` today, the issue says `patched`) in `text`; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            name.eq_ignore_ascii_case(series)
                .then(|| value.parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

pub fn jobs(outcome: &str) -> String {
    format!("patchpull_patch_jobs_total{{outcome=\"{outcome}\"}}")
}

pub fn pulls(served: &str) -> String {
    format!("patchpull_tag_pulls_total{{served=\"{served}\"}}")
}

/// The pulls served the original for `reason` (`None`: for any reason).
pub fn fallback_pulls(text: &str, reason: Option<&str>) -> f64 {
    let prefix = match reason {
        Some(reason) => {
            format!("patchpull_tag_pulls_total{{served=\"Fallback\",reason=\"{reason}\"}}")
        }
        None => "patchpull_tag_pulls_total{served=\"Fallback\",".to_owned(),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| name.starts_with(&prefix))
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

/// Polls the tag until it answers with a digest other than `not`, for at most `secs`.
pub async fn poll_until_changed(
    proxy: &Proxy,
    name: &str,
    tag: &str,
    not: &str,
    secs: u64,
) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let answer = get(proxy, name, tag).await;
        answer.ok();
        if answer.digest != not || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tool run to completion (at most two minutes); panics on failure.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = run_bounded(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new ECDSA P-256 private key (PKCS#8 PEM) at `path`, as an operator makes a signing key.
#[allow(dead_code)] // used by the signing, admission and scale-out tests, not by pipeline
pub fn generate_p256_key(path: &std::path::Path) {
    let out = path.to_str().expect("a UTF-8 key path");
    tool(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            out,
        ],
    );
}

/// A tool run to completion (at most two minutes), whatever its exit status.
pub fn run_bounded(program: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(program);
    command.args(args);
    crate::common::apt::bounded(&mut command, Duration::from_secs(120))
}

/// `skopeo copy` of `source` (a `docker://` reference) into the layout `dir` as `tag`.
pub fn skopeo_copy(source: &str, dir: &Path, tag: &str) {
    let dst = format!("oci:{}:{tag}", dir.display());
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--retry-times=0",
            "-q",
            source,
            &dst,
        ],
    );
}

/// `skopeo inspect --raw`: the exact manifest bytes `source` serves.
pub fn skopeo_raw(source: &str) -> Vec<u8> {
    let out = run_bounded(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", source],
    );
    assert!(
        out.status.success(),
        "skopeo inspect {source}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `umoci unpack` of `layout:tag` into `bundle`; the root file system.
pub fn unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{tag}", layout.display());
    tool(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    bundle.join("rootfs")
}

/// `dpkg-query -W` over the image's own database.
pub fn dpkg_query(root: &Path) -> String {
    let admindir = format!("--admindir={}", root.join("var/lib/dpkg").display());
    tool(
        "dpkg-query",
        &[&admindir, "-W", "-f", "${Package} ${Version} ${Status}\n"],
    )
}

/// Asserts that `manifest` is `original`'s layers plus one, and names `original` as its base.
pub fn assert_patched_from(manifest: &Value, original: &Image) {
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), original.layers.len() + 1, "{manifest}");
    for (i, blob) in original.layers.iter().enumerate() {
        assert_eq!(
            layers[i]["digest"],
            blob.digest.as_str(),
            "layer {i}: {manifest}"
        );
    }
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.digest"],
        original.manifest.digest.as_str(),
        "{manifest}"
    );
}

/// A containerd of our own: temp root, state and socket, no CRI; killed on drop.
pub struct Containerd {
    child: std::process::Child,
    dir: TempDir,
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    pub async fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("pp-ctrd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = std::process::Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut me = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if me.socket().exists() && me.ctr_output(&["version"]).await.status.success() {
                return me;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("containerd exited with {status}:\n{}", me.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                me.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -a SOCK -n patchpull ARGS...`, whatever its exit status (two minutes at most).
    pub async fn ctr_output(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new("ctr");
        command
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "patchpull"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .unwrap_or_else(|_| panic!("ctr {args:?} still running after 120 s"))
            .unwrap()
    }

    /// `ctr ARGS...`, asserting success; stdout.
    pub async fn ctr(&self, args: &[&str]) -> String {
        let out = self.ctr_output(args).await;
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}\ncontainerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hosts dir whose `docker.io/hosts.toml` says `body`.
pub fn hosts_dir(work: &Path, body: &str) -> String {
    let hosts = work.join("hosts");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    std::fs::write(hosts.join("docker.io/hosts.toml"), body).unwrap();
    hosts.display().to_string()
}

/// A TCP relay on loopback that holds every new connection for `delay` before passing it
/// on to `target` (`127.0.0.1:PORT`), so whatever reads through it is slow. Stops on drop.
pub struct SlowRelay {
    pub addr: std::net::SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl SlowRelay {
    pub async fn start(target: &str, delay: Duration) -> SlowRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = target.to_owned();
        let accept_loop = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        SlowRelay { addr, accept_loop }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}
