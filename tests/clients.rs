//! Real clients through the proxy: skopeo copies images and containerd pulls and runs one,
//! with patchpull as the mirror in front of a real registry.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::images::{self, Format};
use common::registry::{Registry, REGISTRY_BIN};
use common::{require_tools, Proxy};
use tempfile::TempDir;
use tokio::process::Command;

/// Runs a command to completion and returns stdout; panics with stderr when it fails.
async fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}\nexit: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The digest of the one manifest an `oci:` layout's index.json lists.
fn layout_digest(layout: &Path) -> String {
    let index = std::fs::read(layout.join("index.json")).expect("index.json");
    let json: serde_json::Value = serde_json::from_slice(&index).expect("index.json JSON");
    let manifests = json["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{json}");
    manifests[0]["digest"].as_str().expect("digest").to_string()
}

/// `skopeo copy` of `source` into a fresh `oci:` layout; returns the layout's manifest digest.
async fn skopeo_copy(source: &str, dest: &Path, all: bool) -> String {
    let dest_ref = format!("oci:{}:t", dest.display());
    let mut args = vec![
        "copy",
        "--insecure-policy",
        "--src-tls-verify=false",
        "--retry-times=0",
    ];
    if all {
        args.push("--all");
    }
    args.push(source);
    args.push(&dest_ref);
    run("skopeo", &args).await;
    layout_digest(dest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_through_the_proxy() {
    if !require_tools(&[REGISTRY_BIN, "skopeo"]) {
        return;
    }
    let registry = Registry::start().await;
    let oci = images::single(Format::Oci, "skopeo-oci");
    let docker = images::single(Format::Docker, "skopeo-docker");
    let index = images::multi_arch(Format::Oci, "skopeo-index");
    let list = images::multi_arch(Format::Docker, "skopeo-list");
    images::push_image(&registry.url(), "test/oci", "1", &oci).await;
    images::push_image(&registry.url(), "test/docker", "1", &docker).await;
    images::push_multi_arch(&registry.url(), "test/index", "1", &index).await;
    images::push_multi_arch(&registry.url(), "test/list", "1", &list).await;
    let proxy = Proxy::start(&[("local", &registry.url(), true)], |_| {}).await;
    let work = TempDir::new().unwrap();

    let cases = [
        ("test/oci", false, Some(&oci.manifest)),
        ("test/docker", false, None),
        ("test/index", true, Some(&index.index)),
        ("test/list", true, None),
        ("test/list", false, None),
    ];
    for (n, (repo, all, unchanged)) in cases.into_iter().enumerate() {
        let via_proxy = format!("docker://{}/local/{repo}:1", proxy.authority());
        let direct = format!("docker://{}/{repo}:1", registry.authority());

        let raw = run(
            "skopeo",
            &["inspect", "--raw", "--tls-verify=false", &via_proxy],
        )
        .await;
        let raw_direct = run(
            "skopeo",
            &["inspect", "--raw", "--tls-verify=false", &direct],
        )
        .await;
        assert_eq!(raw, raw_direct, "skopeo inspect --raw {via_proxy}");

        let tags = |out: String| -> serde_json::Value {
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["Tags"].clone()
        };
        let listed = run(
            "skopeo",
            &[
                "list-tags",
                "--tls-verify=false",
                &format!("docker://{}/local/{repo}", proxy.authority()),
            ],
        )
        .await;
        let listed_direct = run(
            "skopeo",
            &[
                "list-tags",
                "--tls-verify=false",
                &format!("docker://{}/{repo}", registry.authority()),
            ],
        )
        .await;
        assert_eq!(tags(listed), tags(listed_direct), "skopeo list-tags {repo}");

        let proxied = skopeo_copy(&via_proxy, &work.path().join(format!("p{n}")), all).await;
        let reference = skopeo_copy(&direct, &work.path().join(format!("d{n}")), all).await;
        assert_eq!(proxied, reference, "{repo} (all={all}) via proxy vs direct");
        if let Some(manifest) = unchanged {
            // OCI stays OCI: the layout holds the very manifest that was pushed.
            assert_eq!(proxied, manifest.digest, "{repo}");
        }
    }
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
            .expect("containerd dir");
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
            .expect("start containerd");
        let mut me = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if me.socket().exists() {
                let out = Command::new("ctr")
                    .arg("-a")
                    .arg(me.socket())
                    .arg("version")
                    .output()
                    .await
                    .expect("ctr version");
                if out.status.success() {
                    return me;
                }
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -a SOCK -n patchpull ARGS...`
    async fn ctr(&self, args: &[&str]) -> String {
        let socket = self.socket().display().to_string();
        let mut full = vec!["-a", socket.as_str(), "-n", "patchpull"];
        full.extend_from_slice(args);
        run("ctr", &full).await
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// hosts.toml that sends every docker.io pull and resolve to `mirror`.
fn hosts_dir(work: &Path, mirror: &str) -> PathBuf {
    let hosts = work.join("hosts");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    std::fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n\
             [host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    hosts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_and_runs_through_the_proxy() {
    if !require_tools(&[REGISTRY_BIN, "containerd", "ctr", "runc", "/bin/busybox"]) {
        return;
    }
    let busybox = images::runnable_busybox().expect("static /bin/busybox");
    let index = images::multi_arch(Format::Oci, "containerd-index");
    let registry = Registry::start().await;
    images::push_image(&registry.url(), "library/pp-busybox", "1", &busybox).await;
    images::push_multi_arch(&registry.url(), "library/pp-multi", "1", &index).await;
    // The mirror's upstream is called docker.io, as containerd's ns= says.
    let proxy = Proxy::start(&[("docker.io", &registry.url(), true)], |_| {}).await;

    let containerd = Containerd::start().await;
    let work = TempDir::new().unwrap();
    let hosts = hosts_dir(work.path(), &proxy.authority());
    let hosts = hosts.display().to_string();

    let image = "docker.io/library/pp-busybox:1";
    containerd
        .ctr(&[
            "images",
            "pull",
            "--plain-http",
            "--hosts-dir",
            &hosts,
            image,
        ])
        .await;
    let listing = containerd.ctr(&["images", "ls"]).await;
    assert!(
        listing.contains(&busybox.manifest.digest),
        "ctr images ls lacks {}:\n{listing}",
        busybox.manifest.digest
    );
    let container = format!("pp-hello-{}", std::process::id());
    let output = containerd.ctr(&["run", "--rm", image, &container]).await;
    assert_eq!(output, images::HELLO_TEXT, "output of the image's Cmd");

    // A multi-arch index: containerd keeps the index digest and fetches the amd64 child.
    let multi = "docker.io/library/pp-multi:1";
    containerd
        .ctr(&[
            "images",
            "pull",
            "--plain-http",
            "--hosts-dir",
            &hosts,
            multi,
        ])
        .await;
    let listing = containerd.ctr(&["images", "ls"]).await;
    assert!(
        listing.contains(&index.index.digest),
        "ctr images ls lacks {}:\n{listing}",
        index.index.digest
    );
    let content = containerd.ctr(&["content", "ls"]).await;
    let amd64 = index.child("amd64");
    for blob in amd64.blobs() {
        assert!(
            content.contains(&blob.digest),
            "missing {} in:\n{content}",
            blob.digest
        );
    }
    drop(containerd);
}
