//! `patchpull hosts-toml` read back by a real containerd: the files it writes make
//! `ctr images pull --hosts-dir` resolve and fetch through patchpull, fall back to the upstream
//! when fail-open, and refuse to when fail-closed.
//!
//! Nothing here may reach beyond 127.0.0.1: `ctr` runs with a dead HTTP(S) proxy, which Go's
//! client skips for loopback addresses only, so a stray request to Docker Hub fails at once.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::images::{self, Format};
use common::registry::{Registry, REGISTRY_BIN};
use common::{require_tools, Proxy};
use tempfile::TempDir;
use tokio::process::Command;

/// A proxy nobody listens on: requests that are not for a loopback address fail fast.
const DEAD_PROXY: &str = "http://127.0.0.1:9";

/// Runs `patchpull --config CONFIG hosts-toml ARGS --out OUT` and returns the paths it
/// printed; panics with its stderr when it fails.
async fn hosts_toml(config: &Path, out: &Path, args: &[&str]) -> Vec<PathBuf> {
    let output = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .arg("--config")
        .arg(config)
        .arg("hosts-toml")
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "hosts-toml {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// A containerd of our own: temp root, state and socket, no CRI; killed on drop.
struct Containerd {
    child: std::process::Child,
    dir: TempDir,
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    async fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("pp-ctrd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        let config = format!(
            "version = 2\n\
             root = \"{d}/root\"\n\
             state = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n\
             [ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
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
            assert!(Instant::now() < deadline, "containerd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -a SOCK -n patchpull ARGS...`, whatever its exit status.
    async fn ctr_output(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "patchpull"])
            .args(args)
            .env("HTTPS_PROXY", DEAD_PROXY)
            .env("HTTP_PROXY", DEAD_PROXY)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap()
    }

    /// `ctr images pull --hosts-dir HOSTS IMAGE`, with no --plain-http: the file alone says
    /// which hosts speak plain HTTP.
    async fn pull(&self, hosts: &Path, image: &str) -> Output {
        let hosts = hosts.display().to_string();
        self.ctr_output(&["images", "pull", "--hosts-dir", &hosts, image])
            .await
    }

    /// Pulls `image` and asserts that containerd now lists it with `digest`.
    async fn pull_ok(&self, hosts: &Path, image: &str, digest: &str) {
        let out = self.pull(hosts, image).await;
        assert!(
            out.status.success(),
            "ctr pull {image} via {}: {}\n{}\n{}",
            hosts.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(hosts_file(hosts)).unwrap_or_default()
        );
        let listing = self.ctr_output(&["images", "ls"]).await;
        let listing = String::from_utf8_lossy(&listing.stdout);
        let line = listing
            .lines()
            .find(|l| l.starts_with(&format!("{image} ")))
            .unwrap_or_else(|| panic!("ctr images ls lacks {image}:\n{listing}"));
        assert!(line.contains(digest), "{image}: want {digest}, have {line}");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one `<host>/hosts.toml` under `dir`.
fn hosts_file(dir: &Path) -> PathBuf {
    let entry = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap();
    entry.path().join("hosts.toml")
}

/// Successful manifest requests patchpull has answered, from its `/metrics`.
async fn manifests_served(proxy: &Proxy) -> u64 {
    let text = proxy.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("patchpull_http_requests_total{")
                && l.contains("route=\"Manifest\"")
                && l.contains("status=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_docker_hub_images_through_generated_hosts_toml() {
    if !require_tools(&[REGISTRY_BIN, "containerd", "ctr"]) {
        return;
    }
    let registry = Registry::start().await;
    let closed_image = images::single(Format::Oci, "hosts-toml-closed");
    let open_image = images::single(Format::Docker, "hosts-toml-open");
    images::push_image(&registry.url(), "library/pp-closed", "1", &closed_image).await;
    images::push_image(&registry.url(), "library/pp-open", "1", &open_image).await;
    // The registry stands in for Docker Hub: patchpull's upstream docker.io points at it.
    let proxy = Proxy::start(&[("docker.io", &registry.url(), true)], |_| {}).await;

    // The configuration a production patchpull has: Docker Hub as it really is.
    let work = TempDir::new().unwrap();
    let config = work.path().join("patchpull.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n\n[[upstream]]\nname = \"docker.io\"\n\
             url = \"https://registry-1.docker.io\"\ndefault = true\n",
            work.path().join("data").display()
        ),
    )
    .unwrap();
    // patchpull takes no credentials from clients; containerd must still parse and send
    // this, quotes, backslash and all.
    let header = "Authorization=Bearer t\"o\\k'en";
    let closed = work.path().join("closed");
    let open = work.path().join("open");
    let server = proxy.url();
    let written = hosts_toml(
        &config,
        &closed,
        &["--server", &server, "--fail-closed", "--header", header],
    )
    .await;
    assert_eq!(written, [closed.join("docker.io/hosts.toml")]);
    let written = hosts_toml(&config, &open, &["--server", &server, "--header", header]).await;
    assert_eq!(written, [open.join("docker.io/hosts.toml")]);
    let open_text = std::fs::read_to_string(&written[0]).unwrap();
    assert!(
        open_text.contains("server = \"https://registry-1.docker.io\"\n"),
        "{open_text}"
    );
    assert!(
        open_text.contains(&format!("[host.\"{server}\"]\n")),
        "{open_text}"
    );

    let containerd = Containerd::start().await;
    let before = manifests_served(&proxy).await;
    containerd
        .pull_ok(
            &closed,
            "docker.io/library/pp-closed:1",
            &closed_image.manifest.digest,
        )
        .await;
    let after_closed = manifests_served(&proxy).await;
    assert!(
        after_closed > before,
        "fail-closed pull did not reach patchpull"
    );
    // Fail-open: Docker Hub is the server, but it has no such image and is not reachable from
    // here; the digest can only have come through patchpull.
    containerd
        .pull_ok(
            &open,
            "docker.io/library/pp-open:1",
            &open_image.manifest.digest,
        )
        .await;
    assert!(
        manifests_served(&proxy).await > after_closed,
        "fail-open pull did not reach patchpull"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_falls_back_to_the_upstream_and_fail_closed_does_not() {
    if !require_tools(&[REGISTRY_BIN, "containerd", "ctr"]) {
        return;
    }
    let registry = Registry::start().await;
    let first = images::single(Format::Oci, "hosts-toml-first");
    let second = images::single(Format::Oci, "hosts-toml-second");
    images::push_image(&registry.url(), "team/app", "1", &first).await;
    images::push_image(&registry.url(), "team/app", "2", &second).await;
    let proxy = Proxy::start(&[("local", &registry.url(), true)], |_| {}).await;

    // The proxy's own configuration: the upstream is the registry on its loopback port, so
    // containerd's directory is 127.0.0.1:PORT and its ns= is routed by the URL's authority.
    let work = TempDir::new().unwrap();
    let config = work.path().join("patchpull.toml");
    std::fs::write(&config, &proxy.toml).unwrap();
    let closed = work.path().join("closed");
    let open = work.path().join("open");
    let server = proxy.url();
    let host = registry.authority();
    let written = hosts_toml(&config, &closed, &["--server", &server, "--fail-closed"]).await;
    assert_eq!(written, [closed.join(&host).join("hosts.toml")]);
    let written = hosts_toml(&config, &open, &["--server", &server]).await;
    assert_eq!(written, [open.join(&host).join("hosts.toml")]);

    let containerd = Containerd::start().await;
    let before = manifests_served(&proxy).await;
    containerd
        .pull_ok(&open, &format!("{host}/team/app:1"), &first.manifest.digest)
        .await;
    assert!(
        manifests_served(&proxy).await > before,
        "the fail-open pull went around patchpull"
    );

    // patchpull goes away.
    proxy.shutdown().await;
    let image = format!("{host}/team/app:2");
    let out = containerd.pull(&closed, &image).await;
    assert!(
        !out.status.success(),
        "fail-closed pulled {image} without patchpull:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    containerd
        .pull_ok(&open, &image, &second.manifest.digest)
        .await;
}

/// The examples under deploy/ are the command's own output, so they cannot drift from it.
#[tokio::test]
async fn deploy_examples_are_what_the_command_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("config/patchpull.toml");
    let server = "https://patchpull.example.internal:5000";
    let work = TempDir::new().unwrap();
    for (example, extra) in [
        ("deploy/containerd", &[][..]),
        ("deploy/containerd-fail-closed", &["--fail-closed"][..]),
    ] {
        let out = work.path().join(example);
        let mut args = vec!["--server", server];
        args.extend_from_slice(extra);
        let written = hosts_toml(&config, &out, &args).await;
        assert!(!written.is_empty());
        for path in written {
            let relative = path.strip_prefix(&out).unwrap();
            assert_eq!(
                std::fs::read_to_string(root.join(example).join(relative)).unwrap_or_default(),
                std::fs::read_to_string(&path).unwrap(),
                "{example}/{} differs from `patchpull hosts-toml {}`; regenerate it",
                relative.display(),
                args.join(" ")
            );
        }
    }

    // The node DaemonSet's ConfigMap holds the fail-open file with the CA beside it.
    let out = work.path().join("node");
    let args = ["--server", server, "--ca", "patchpull-ca.crt"];
    let written = hosts_toml(&config, &out, &args).await;
    let yaml = std::fs::read_to_string(root.join("deploy/node/hosts-toml.yaml")).unwrap();
    for path in written {
        let host = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let key = host.replace(':', "_") + if host.contains(':') { "_" } else { "" };
        let mut block = format!("  {key}: |\n");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if !line.is_empty() {
                block.push_str("    ");
            }
            block.push_str(line);
            block.push('\n');
        }
        assert!(
            yaml.contains(&block),
            "deploy/node/hosts-toml.yaml lacks the output of `hosts-toml {}` as key {key}:\n{block}",
            args.join(" ")
        );
    }
}

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A test CA and a leaf certificate for 127.0.0.1.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "patchpull hosts-toml test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// A CA that signed nothing patchpull serves.
fn pki_other_ca() -> String {
    pki().ca_pem
}

/// What the node DaemonSet installs: patchpull over HTTPS with a private CA, the hosts.toml
/// naming the CA by a relative path, and the CA file beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_patchpull_is_trusted_through_a_ca_beside_the_hosts_toml() {
    if !require_tools(&[REGISTRY_BIN, "containerd", "ctr"]) {
        return;
    }
    let registry = Registry::start().await;
    let image = images::single(Format::Oci, "hosts-toml-tls");
    images::push_image(&registry.url(), "library/pp-tls", "1", &image).await;
    let work = TempDir::new().unwrap();
    let pki = pki();
    let cert = work.path().join("tls.crt");
    let key = work.path().join("tls.key");
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let proxy = Proxy::start(&[("docker.io", &registry.url(), true)], |c| {
        c.server_extra
            .push(format!("tls_cert = {:?}", cert.display()));
        c.server_extra
            .push(format!("tls_key = {:?}", key.display()));
    })
    .await;

    let config = work.path().join("patchpull.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n\n[[upstream]]\nname = \"docker.io\"\n\
             url = \"https://registry-1.docker.io\"\ndefault = true\n",
            work.path().join("data").display()
        ),
    )
    .unwrap();
    let certs = work.path().join("certs.d");
    let server = format!("https://{}", proxy.authority());
    let written = hosts_toml(
        &config,
        &certs,
        &[
            "--server",
            &server,
            "--fail-closed",
            "--ca",
            "patchpull-ca.crt",
        ],
    )
    .await;
    assert_eq!(written, [certs.join("docker.io/hosts.toml")]);

    let containerd = Containerd::start().await;
    let name = "docker.io/library/pp-tls:1";
    // With another CA in the file containerd does not trust patchpull, so the pull fails
    // (and goes nowhere else: fail-closed)...
    let ca_file = certs.join("docker.io/patchpull-ca.crt");
    std::fs::write(&ca_file, pki_other_ca()).unwrap();
    let out = containerd.pull(&certs, name).await;
    assert!(!out.status.success(), "pulled {name} trusting the wrong CA");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and with the right CA beside the file, as the DaemonSet puts it, it goes through.
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    containerd
        .pull_ok(&certs, name, &image.manifest.digest)
        .await;
}
