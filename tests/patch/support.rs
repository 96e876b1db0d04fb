//! What the `patch` tests share: running the binary, the registry and archive of one
//! test, synthetic Debian images whose dpkg database matches their files, and reading the
//! results back (skopeo, umoci, dpkg-query, layer tars).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::common;
use crate::common::apt::AptRepo;
use crate::common::images;
use crate::common::registry::Registry;
use crate::common::require_tools;

pub const BIN: &str = env!("CARGO_BIN_EXE_patchpull");
pub fn tools() -> bool {
    let mut tools = common::apt::TOOLS.to_vec();
    tools.extend([
        common::registry::REGISTRY_BIN,
        "skopeo",
        "umoci",
        "dpkg-query",
    ]);
    require_tools(&tools)
}

/// What one run of the binary left.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The digest in `patched image <digest> (...)`.
    pub fn patched_digest(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("patched image "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no patched digest in:\n{}\n{}", self.stdout, self.stderr))
            .to_owned()
    }

    pub fn assert_ok(&self) {
        assert_eq!(
            self.code, 0,
            "patchpull failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }
}

/// Runs `patchpull --config CONFIG ARGS`, killed after two minutes.
pub async fn patchpull(config: &Path, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("PATCHPULL_") {
            command.env_remove(key);
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("patchpull {args:?} still running after 120 s"))
        .unwrap();
    // Shown when a test fails (or with --nocapture).
    eprintln!(
        "patchpull {args:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A tool run to completion (at most two minutes); panics on failure.
pub fn tool(program: &str, args: &[&str]) -> String {
    let mut command = std::process::Command::new(program);
    command.args(args);
    let out = common::apt::bounded(&mut command, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A registry, a package archive and a scratch directory for configs and outputs.
pub struct Setup {
    pub registry: Registry,
    pub repo: AptRepo,
    pub dir: TempDir,
}

impl Setup {
    pub async fn new(architectures: &[&str]) -> Setup {
        Setup {
            registry: Registry::start().await,
            repo: AptRepo::new(architectures),
            dir: tempfile::Builder::new()
                .prefix("pp-patch-")
                .tempdir()
                .unwrap(),
        }
    }

    /// A config with its own store and cache under `name`, reading the archive.
    pub fn config(&self, name: &str) -> PathBuf {
        self.config_for(name, &self.repo.url())
    }

    pub fn config_for(&self, name: &str, archive_url: &str) -> PathBuf {
        let base = self.dir.path().join(name);
        std::fs::create_dir_all(&base).unwrap();
        let path = base.join("patchpull.toml");
        std::fs::write(
            &path,
            format!(
                "[storage]\npath = {:?}\n\n[log]\nlevel = \"warn\"\n\n[scan]\ncache_dir = {:?}\n\
                 debian_security_url = {archive_url:?}\ndebian_archive_url = {archive_url:?}\n\
                 debian_keyring = {:?}\npoint_releases = false\nchangelogs = true\n\
                 refresh_interval = \"0s\"\n",
                base.join("store").display().to_string(),
                base.join("cache").display().to_string(),
                self.repo.keyring().display().to_string(),
            ),
        )
        .unwrap();
        path
    }

    /// `127.0.0.1:PORT/<name>`
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.authority())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The manifest `reference` names in the registry: (status, media type, bytes, digest).
    pub async fn manifest(&self, repo: &str, reference: &str) -> (u16, String, Vec<u8>, String) {
        let resp = common::client()
            .get(format!(
                "{}/v2/{repo}/manifests/{reference}",
                self.registry.url()
            ))
            .header("accept", images::ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let media_type = common::header(&resp, "content-type");
        let digest = common::header(&resp, "docker-content-digest");
        (
            status,
            media_type,
            resp.bytes().await.unwrap().to_vec(),
            digest,
        )
    }

    pub async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let resp = common::client()
            .get(format!("{}/v2/{repo}/blobs/{digest}", self.registry.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "blob {digest}");
        resp.bytes().await.unwrap().to_vec()
    }
}

/// skopeo-copies `<registry>/<repo>:<tag>` into the OCI layout `dir` (tag `tag`).
pub fn skopeo_pull(setup: &Setup, repo_tag: &str, dir: &Path, all: bool) {
    let tag = repo_tag.rsplit(':').next().unwrap();
    let src = format!("docker://{}", setup.reference(repo_tag));
    let dst = format!("oci:{}:{tag}", dir.display());
    let mut args = vec!["copy", "--src-tls-verify=false", "-q"];
    if all {
        args.push("--all");
    }
    args.extend([src.as_str(), dst.as_str()]);
    tool("skopeo", &args);
}

/// `umoci unpack` of `layout:tag` into `bundle`; returns the root file system.
pub fn unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{tag}", layout.display());
    tool(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    bundle.join("rootfs")
}

/// A blob in an OCI layout.
pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// The manifest an OCI layout's index names with `tag`: (digest, JSON).
pub fn layout_manifest(layout: &Path, tag: &str) -> (String, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    let digest = entry["digest"].as_str().unwrap().to_owned();
    let manifest = serde_json::from_slice(&layout_blob(layout, &digest)).unwrap();
    (digest, manifest)
}

/// Paths (and entry types) of a gzip'd layer tar.
pub fn layer_entries(gz: &[u8]) -> Vec<(String, tar::EntryType)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    tar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().entry_type(),
            )
        })
        .collect()
}

pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The contents of `path` in a gzip'd layer, if it has it.
pub fn layer_file(gz: &[u8], path: &str) -> Option<String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            == path
        {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            return Some(text);
        }
    }
    None
}
