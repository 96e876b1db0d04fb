//! What patchpull finds out at start about running maintainer scripts here, and where it
//! keeps the sandbox's trees: `patchpull serve` and `patchpull patch` as an operator runs
//! them, with the store where operators put it (a relative `./data`, under a `0700`
//! directory, on a file system of its own with no usable `/tmp`), against a real registry
//! and a signed archive on loopback.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;
// Only some of the shared image helpers are used here.
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::apt::{AptRepo, DebSpec};
use common::images::{self, Format};
use common::registry::Registry;
use common::serve::ServeProcess;
use image::{base_files, dpkg_files, Installed, NEW, OLD};
use serde_json::Value;

const TOKEN: &str = "host-test-token";

fn tools() -> bool {
    let mut tools = common::apt::TOOLS.to_vec();
    tools.push(common::registry::REGISTRY_BIN);
    common::require_tools(&tools)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `name` at `version`, with a postinst that records its arguments.
fn scripted(name: &str, version: &str) -> DebSpec {
    DebSpec::new(name, version, "amd64")
        .file(
            &format!("usr/share/{name}/version"),
            version.as_bytes(),
            0o644,
        )
        .script(
            "postinst",
            &format!("#!/bin/sh\nset -e\necho \"$@\" > /etc/{name}-postinst\n"),
        )
}

/// A registry with `test/<repo>:1` (the `names` packages at OLD, with or without a shell)
/// and an archive with them at NEW.
struct Fixture {
    registry: Registry,
    repo: AptRepo,
}

impl Fixture {
    async fn new(images_: &[(&str, bool)], names: &[&str]) -> Fixture {
        let registry = Registry::start().await;
        let repo = AptRepo::new(&["amd64"]);
        for name in names {
            repo.add(&scripted(name, NEW));
        }
        repo.publish();
        let old: Vec<DebSpec> = names.iter().map(|n| scripted(n, OLD)).collect();
        for (name, shell) in images_ {
            let installed: Vec<Installed> = old
                .iter()
                .map(|spec| Installed {
                    spec,
                    modified_conffiles: Vec::new(),
                })
                .collect();
            let image = image::image(
                Format::Oci,
                "amd64",
                &[base_files(*shell), dpkg_files(&installed)],
            );
            images::push_image(&registry.url(), &format!("test/{name}"), "1", &image).await;
        }
        Fixture { registry, repo }
    }

    /// A config with the store at `storage` (as written) and the archive.
    fn toml(&self, storage: &str, extra_patch: &str) -> String {
        let archive = self.repo.url();
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {storage:?}\n\n\
             [log]\nlevel = \"info\"\n\n[[upstream]]\nname = \"local\"\nurl = {:?}\n\n\
             [patch]\nmode = \"wait\"\nwait_timeout = \"60s\"\nadmin_token = {TOKEN:?}\n{extra_patch}\n\
             [scan]\ndebian_security_url = {archive:?}\ndebian_archive_url = {archive:?}\n\
             debian_keyring = {:?}\npoint_releases = false\nchangelogs = true\n\
             refresh_interval = \"0s\"\n",
            self.registry.url(),
            self.repo.keyring().display().to_string(),
        )
    }
}

/// A temp dir whose ancestors and itself others may search (a root caller's sandbox runs as
/// another user).
fn open_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .get(url)
        .bearer_auth(TOKEN)
        .header("Accept", images::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn series<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_relative_store_gets_the_overlay_and_the_probe_is_reported() {
    if !tools() {
        return;
    }
    let fixture = Fixture::new(&[], &[]).await;
    let dir = open_dir("pp-host-");
    // The README's setup: `storage.path = "./data"`, run from the checkout.
    let serve = ServeProcess::start(dir.path(), &fixture.toml("./data", ""), &[], &[]);
    let (status, body) = get(&format!("{}/readyz?verbose", serve.url)).await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["sandbox"]["available"], true, "{body}");
    assert_eq!(
        ready["overlay"]["available"],
        true,
        "a relative store keeps the overlay: {body}\n{}",
        serve.log()
    );
    assert!(
        !body.contains(&dir.path().display().to_string()),
        "no host paths for anyone: {body}"
    );
    let (_, host) = get(&format!("{}/patchpull/v1/host", serve.url)).await;
    let host: Value = serde_json::from_str(&host).unwrap();
    assert_eq!(host["sandbox"], ready["sandbox"]);
    assert_eq!(host["overlay"], ready["overlay"]);
    let (_, metrics) = get(&format!("{}/metrics", serve.url)).await;
    assert_eq!(series(&metrics, "patchpull_sandbox_available "), Some("1"));
    assert_eq!(series(&metrics, "patchpull_overlay_available "), Some("1"));
    let lines: Vec<String> = serve
        .log()
        .lines()
        .filter(|l| l.contains("sandbox available"))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "one line at start: {lines:?}");
    assert!(lines[0].contains("overlay available"), "{lines:?}");
    assert!(
        dir.path().join("data/patch-tmp").is_dir(),
        "the store is ./data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_caller_refuses_at_start_a_store_under_a_directory_the_sandbox_cannot_search() {
    if !tools() || !is_root() {
        // Only a root caller's sandbox runs as another user than patchpull.
        return;
    }
    let fixture = Fixture::new(&[], &[]).await;
    let outer = open_dir("pp-host-");
    let private = outer.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = outer.path().join("patchpull.toml");
    let store = private.join("store");
    std::fs::write(&config, fixture.toml(store.to_str().unwrap(), "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("patchpull serve started with a store the sandbox cannot reach");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} (mode 700) is not searchable",
            private.display()
        )),
        "names the directory: {stderr}"
    );
    assert!(stderr.contains("chmod o+x"), "and the fix: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "never served"
    );
}

/// Mounts a tmpfs at `at` (root only) and unmounts it when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755,size=512m", "pp-test"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn patch(config: &Path, reference: &str, tmpdir: &str) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_patchpull"))
            .arg("--config")
            .arg(config)
            .args(["patch", "--verbose", "--insecure", reference])
            .env_remove("RUST_LOG")
            .env("TMPDIR", tmpdir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_its_own_file_system_runs_scripts_without_a_usable_tmp() {
    if !tools() || !is_root() {
        // Mounting a file system of its own needs root.
        return;
    }
    let fixture = Fixture::new(&[("shell", true)], &["greet"]).await;
    let dir = open_dir("pp-host-");
    let mount = Tmpfs::mount(&dir.path().join("fs"));
    let config = dir.path().join("patchpull.toml");
    let store = mount.0.join("store");
    std::fs::write(&config, fixture.toml(store.to_str().unwrap(), "")).unwrap();
    let reference = format!("{}/test/shell:1", fixture.registry.authority());
    // No /tmp to rely on: the sandbox's mount point and trees are the store's.
    let (code, first, stderr) = patch(&config, &reference, "/nonexistent/tmp").await;
    assert_eq!(code, 0, "{first}\n{stderr}");
    assert!(first.contains("maintainer scripts run: 1"), "{first}");
    // Again: the root is in the unpack cache on the tmpfs, the scripts run over an overlay.
    let (code, again, stderr) = patch(&config, &reference, "/nonexistent/tmp").await;
    assert_eq!(code, 0, "{again}\n{stderr}");
    let layer = |summary: &str| {
        summary
            .split("patch layer ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_owned)
    };
    assert!(layer(&first).is_some(), "{first}");
    assert_eq!(layer(&again), layer(&first), "{again}");
    assert!(
        stderr.contains("scripts ran over the cached root"),
        "the overlay on the store's own file system: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_that_cannot_run_are_counted_by_reason_and_said_once() {
    if !tools() {
        return;
    }
    // Two packages with a postinst, on an image without a shell.
    let fixture = Fixture::new(&[("noshell", false)], &["greet", "hello"]).await;
    let dir = open_dir("pp-host-");
    let storage = dir.path().join("store");
    let serve = ServeProcess::start(
        dir.path(),
        &fixture.toml(storage.to_str().unwrap(), ""),
        &[],
        &[],
    );
    let (status, _) = get(&format!("{}/v2/local/test/noshell/manifests/1", serve.url)).await;
    assert_eq!(status, 200, "fail-open");
    let (_, metrics) = get(&format!("{}/metrics", serve.url)).await;
    assert_eq!(
        series(
            &metrics,
            "patchpull_tag_pulls_total{served=\"Fallback\",reason=\"ScriptsCannotRun\"} "
        ),
        Some("1"),
        "{metrics}"
    );
    let (_, listed) = get(&format!("{}/patchpull/v1/images", serve.url)).await;
    assert_eq!(
        listed.matches("the image has no /bin/sh").count(),
        1,
        "the reason once: {listed}"
    );
    assert!(
        listed.contains("greet postinst configure") && listed.contains("hello postinst configure"),
        "then the scripts: {listed}"
    );
}
