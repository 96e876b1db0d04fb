//! deploy/'s security context under a real container runtime: patchpull's container image
//! (the Dockerfile's layout, built from the binary and the host's util-linux, since its base
//! cannot be fetched here) runs under dockerd with exactly the user, groups, capabilities,
//! read-only root, seccomp profile file, AppArmor and /proc settings and volume mounts of
//! the Deployment that `scripts/validate-deploy.sh` renders, and patches a Debian image
//! whose upgrade runs a maintainer script, through its registry API, as a cluster's
//! containerd would pull it.
//!
//! - `deploy/` (sandbox/): the sandbox runs; the pull gets the patched image, whose layer
//!   holds what the postinst wrote.
//! - `deploy/restricted/`: the runtime's default seccomp profile and a masked /proc; the
//!   sandbox cannot run, patchpull says so at start, and the pull gets the original, counted
//!   as `served="Fallback",reason="SandboxUnavailable"` (no BuildKit in this test).
//!
//! Needs root (dockerd), docker.io, the archive tools and a static busybox; skipped without
//! them unless `REQUIRE_TEST_TOOLS=1`.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;
// Only some of the shared image helpers are used here.
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::apt::{AptRepo, DebSpec};
use common::dockerd::Dockerd;
use common::images::{self, Format};
use common::registry::Registry;
use image::{base_files, dpkg_files, Installed, NEW, OLD};
use serde_json::Value;

/// The Engine's own CLI (20.10), not another `docker` first in PATH.
const DOCKER: &str = "/usr/bin/docker";
/// Host tools the image carries, as the Dockerfile's bookworm-slim base does: the shell
/// and util-linux/coreutils programs the sandbox runs (`sandbox::run`'s list).
const IMAGE_TOOLS: &[&str] = &[
    "sh",
    "dash",
    "bash",
    "unshare",
    "mount",
    "umount",
    "pivot_root",
    "setpriv",
    "env",
    "chroot",
    "kill",
    "cat",
    "sleep",
    "readlink",
    "ln",
    "mkdir",
    "rm",
];
const TOKEN: &str = "deploy-test-token";

fn tools() -> bool {
    let mut tools = common::apt::TOOLS.to_vec();
    tools.extend([common::registry::REGISTRY_BIN, DOCKER, "tar", "ldd"]);
    if !common::require_tools(&tools) {
        return false;
    }
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        if std::env::var("REQUIRE_TEST_TOOLS").as_deref() == Ok("1") {
            panic!("this test runs dockerd: it needs root (REQUIRE_TEST_TOOLS=1)");
        }
        eprintln!("SKIP: not root; dockerd needs root");
        return false;
    }
    true
}

/// `hello` at `version`: a program and a postinst that records how dpkg called it.
fn hello(version: &str) -> DebSpec {
    DebSpec::new("hello", version, "amd64")
        .file(
            "usr/bin/hello",
            format!("#!/bin/sh\necho hello {version}\n").as_bytes(),
            0o755,
        )
        .script(
            "postinst",
            "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then echo \"$@\" > /etc/postinst-ran; fi\n",
        )
}

/// The objects `scripts/validate-deploy.sh` renders for `root` (`deploy`,
/// `deploy/restricted`), validated on the way.
fn rendered(out: &Path, root: &str) -> Vec<Value> {
    let file = out.join(format!("{}.json", root.replace('/', "_")));
    if !file.exists() {
        let status = Command::new("scripts/validate-deploy.sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("DEPLOY_RENDER_DIR", out)
            .status()
            .unwrap();
        assert!(status.success(), "scripts/validate-deploy.sh failed");
    }
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

/// The Dockerfile's runtime layout as a root file system: the binary at
/// /usr/local/bin/patchpull, its default configuration, the host's tools with their
/// libraries (merged /usr), user and group 65532, /var/lib/patchpull owned by them.
fn build_rootfs(root: &Path) {
    for dir in [
        "usr/bin",
        "usr/lib/x86_64-linux-gnu",
        "usr/lib64",
        "usr/local/bin",
        "etc/patchpull",
        "var/lib/patchpull",
        "tmp",
        "proc",
        "dev",
        "sys",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(target, root.join(link)).unwrap();
    }
    let mut programs: Vec<PathBuf> = Vec::new();
    for tool in IMAGE_TOOLS {
        let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} not found on the host"));
        let real = std::fs::canonicalize(&found).unwrap();
        let name = real.file_name().unwrap().to_owned();
        let at = root.join("usr/bin").join(&name);
        if !at.exists() {
            std::fs::copy(&real, &at).unwrap();
        }
        if name.to_str() != Some(tool) {
            let _ = std::os::unix::fs::symlink(&name, root.join("usr/bin").join(tool));
        }
        programs.push(real);
    }
    let binary = root.join("usr/local/bin/patchpull");
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(env!("CARGO_BIN_EXE_patchpull"))
        .arg(&binary)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(env!("CARGO_BIN_EXE_patchpull"), &binary).unwrap();
    }
    programs.push(PathBuf::from(env!("CARGO_BIN_EXE_patchpull")));
    for program in &programs {
        let out = Command::new("ldd").arg(program).output().unwrap();
        for library in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let name = Path::new(library).file_name().unwrap();
            let dir = if name.to_string_lossy().starts_with("ld-linux") {
                "usr/lib64"
            } else {
                "usr/lib/x86_64-linux-gnu"
            };
            let at = root.join(dir).join(name);
            if !at.exists() {
                std::fs::copy(library, &at).unwrap();
            }
        }
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/patchpull.toml"),
        root.join("etc/patchpull/patchpull.toml"),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\npatchpull:x:65532:65532::/var/lib/patchpull:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\npatchpull:x:65532:\n").unwrap();
    let owned = Command::new("chown")
        .args(["65532:65532"])
        .arg(root.join("var/lib/patchpull"))
        .status()
        .unwrap();
    assert!(owned.success());
    set_mode(&root.join("var/lib/patchpull"), 0o750);
    set_mode(&root.join("tmp"), 0o1777);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn docker(dockerd: &Dockerd) -> Command {
    let mut c = Command::new(DOCKER);
    c.env(
        "DOCKER_HOST",
        format!("unix://{}", dockerd.socket().display()),
    );
    c
}

fn docker_ok(dockerd: &Dockerd, args: &[String]) -> String {
    let out = docker(dockerd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Imports `rootfs` as the image `tag`, with the Dockerfile's USER, WORKDIR, ENV and
/// ENTRYPOINT.
fn import_image(dockerd: &Dockerd, rootfs: &Path, tag: &str) {
    let mut import = docker(dockerd)
        .args([
            "import",
            "--change",
            "USER 65532:65532",
            "--change",
            "WORKDIR /var/lib/patchpull",
            "--change",
            "ENV PATCHPULL_SERVER__LISTEN=0.0.0.0:5000 PATCHPULL_STORAGE__PATH=/var/lib/patchpull",
            "--change",
            "ENTRYPOINT [\"patchpull\"]",
            "--change",
            "CMD [\"serve\", \"--config\", \"/etc/patchpull/patchpull.toml\"]",
            "-",
            tag,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(import.stdin.take().unwrap())
        .status()
        .unwrap();
    assert!(tar.success());
    assert!(import.wait().unwrap().success(), "docker import failed");
}

/// The Deployment's pod template in `objects`.
fn pod_template(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "patchpull")
        .map(|d| &d["spec"]["template"])
        .expect("a Deployment patchpull")
}

/// What a kubelet gives the container, as `docker run` flags: the pod's and container's
/// security context (user, groups, capabilities, read-only root, no-new-privileges,
/// seccomp, AppArmor, /proc) and its volume mounts at their paths (`volumes`: the host
/// directory for each volume name). Anything the test does not know how to map fails it,
/// so that a new setting in deploy/ cannot go untested.
fn run_flags(template: &Value, volumes: &[(&str, &Path)]) -> Vec<String> {
    let pod = &template["spec"]["securityContext"];
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["name"], "patchpull");
    let sc = &container["securityContext"];
    // A user namespace for the Pod (hostUsers: false) is the kubelet's and runtime's
    // (dockerd only has a daemon-wide userns-remap): the container then sees the same ids
    // and settings, so the run below stands for it.
    assert!(
        matches!(template["spec"]["hostUsers"].as_bool(), None | Some(false)),
        "hostUsers"
    );
    let mut flags = vec!["--network".to_owned(), "host".to_owned()];
    let user = sc["runAsUser"]
        .as_u64()
        .or(pod["runAsUser"].as_u64())
        .unwrap();
    let group = sc["runAsGroup"]
        .as_u64()
        .or(pod["runAsGroup"].as_u64())
        .unwrap();
    flags.extend(["--user".into(), format!("{user}:{group}")]);
    if let Some(fs_group) = pod["fsGroup"].as_u64() {
        flags.extend(["--group-add".into(), fs_group.to_string()]);
    }
    let drop: Vec<&str> = sc["capabilities"]["drop"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(drop, ["ALL"], "capabilities dropped");
    flags.extend(["--cap-drop".into(), "ALL".into()]);
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        flags.extend(["--cap-add".into(), cap.as_str().unwrap().to_owned()]);
    }
    if sc["readOnlyRootFilesystem"] == true {
        flags.push("--read-only".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        flags.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    let seccomp = if sc["seccompProfile"].is_object() {
        &sc["seccompProfile"]
    } else {
        &pod["seccompProfile"]
    };
    match seccomp["type"].as_str().unwrap() {
        // Docker's default profile is the one RuntimeDefault means.
        "RuntimeDefault" => {}
        "Localhost" => {
            // The file the DaemonSet installs: the ConfigMap holds this file's bytes
            // (validate-deploy checks it).
            let profile = seccomp["localhostProfile"].as_str().unwrap();
            let name = Path::new(profile).file_name().unwrap();
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/seccomp")
                .join(name);
            assert!(file.is_file(), "{}", file.display());
            flags.extend([
                "--security-opt".into(),
                format!("seccomp={}", file.display()),
            ]);
        }
        other => panic!("seccomp profile type {other} not mapped"),
    }
    match sc["procMount"].as_str().unwrap_or("Default") {
        "Default" => {}
        "Unmasked" => flags.extend(["--security-opt".into(), "systempaths=unconfined".into()]),
        other => panic!("procMount {other} not mapped"),
    }
    let apparmor = template["metadata"]["annotations"]
        ["container.apparmor.security.beta.kubernetes.io/patchpull"]
        .as_str();
    // This host has no AppArmor (no /sys/module/apparmor): nothing to confine or unconfine;
    // where it has, Docker takes the same setting.
    if let Some(setting) = apparmor {
        assert_eq!(setting, "unconfined");
        if Path::new("/sys/module/apparmor/parameters/enabled").exists() {
            flags.extend(["--security-opt".into(), "apparmor=unconfined".into()]);
        }
    }
    for mount in container["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let (_, host) = volumes
            .iter()
            .find(|(v, _)| *v == name)
            .unwrap_or_else(|| panic!("no host directory for volume {name}"));
        let mut spec = format!(
            "type=bind,source={},target={}",
            host.display(),
            mount["mountPath"].as_str().unwrap()
        );
        if mount["readOnly"] == true {
            spec.push_str(",readonly");
        }
        flags.extend(["--mount".into(), spec]);
    }
    for env in container["env"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().unwrap();
        let value = match (env["value"].as_str(), name) {
            (_, "PATCHPULL_PATCH__ADMIN_TOKEN") => TOKEN.to_owned(),
            // No BuildKit here: the restricted variant's answer without one.
            (_, "PATCHPULL_PATCH__BUILDKIT__ADDRESS") => String::new(),
            (Some(value), _) => value.to_owned(),
            (None, _) => panic!("env {name} not mapped"),
        };
        flags.extend(["--env".into(), format!("{name}={value}")]);
    }
    flags
}

/// patchpull's own configuration for the test (the ConfigMap's names docker.io and TLS),
/// at the ConfigMap's mount path: the local registry, the local archive, wait for patches.
fn write_config(dir: &Path, listen: &str, registry: &Registry, repo: &AptRepo) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(repo.keyring(), dir.join("keyring.gpg")).unwrap();
    let archive = repo.url();
    std::fs::write(
        dir.join("patchpull.toml"),
        format!(
            "[server]\nlisten = {listen:?}\nidle_timeout = \"180s\"\n\n[storage]\npath = \"/var/lib/patchpull\"\n\n\
             [log]\nlevel = \"info\"\n\n[[upstream]]\nname = \"local\"\nurl = {:?}\ndefault = true\n\n\
             [patch]\nmode = \"wait\"\nwait_timeout = \"120s\"\n\n\
             [scan]\ndebian_security_url = {archive:?}\ndebian_archive_url = {archive:?}\n\
             debian_keyring = \"/etc/patchpull/config/keyring.gpg\"\npoint_releases = false\n\
             changelogs = true\nrefresh_interval = \"0s\"\n",
            registry.url()
        ),
    )
    .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running patchpull container; removed on drop.
struct Container<'a> {
    dockerd: &'a Dockerd,
    id: String,
    url: String,
}

impl Container<'_> {
    fn logs(&self) -> String {
        let out = docker(self.dockerd)
            .args(["logs", &self.id])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.url)).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "patchpull in the container never got ready:\n{}",
            self.logs()
        );
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = docker(self.dockerd)
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Starts the image under `template`'s security context with fresh volumes in `dir`.
fn start<'a>(
    dockerd: &'a Dockerd,
    template: &Value,
    dir: &Path,
    registry: &Registry,
    repo: &AptRepo,
) -> Container<'a> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = dir.join("config");
    write_config(&config, &listen, registry, repo);
    let tls = dir.join("tls");
    let store = dir.join("store");
    let tmp = dir.join("tmp");
    for d in [&tls, &store, &tmp] {
        std::fs::create_dir_all(d).unwrap();
    }
    // As a kubelet leaves them: the volume owned by the fsGroup, emptyDir world-writable.
    let owned = Command::new("chown")
        .arg("65532:65532")
        .arg(&store)
        .status()
        .unwrap();
    assert!(owned.success());
    set_mode(&store, 0o2770);
    set_mode(&tmp, 0o777);
    let volumes = [
        ("config", config.as_path()),
        ("tls", tls.as_path()),
        ("store", store.as_path()),
        ("tmp", tmp.as_path()),
    ];
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(run_flags(template, &volumes));
    // The image's ENV listens on 0.0.0.0:5000; on the host network, a port of its own.
    args.extend(["--env".into(), format!("PATCHPULL_SERVER__LISTEN={listen}")]);
    args.push(IMAGE_TAG.into());
    for arg in template["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
    {
        args.push(arg.as_str().unwrap().to_owned());
    }
    eprintln!("docker {}", args.join(" "));
    let id = docker_ok(dockerd, &args);
    Container {
        dockerd,
        id,
        url: format!("http://{listen}"),
    }
}

const IMAGE_TAG: &str = "patchpull:deploy-test";

async fn get_json(url: &str) -> Value {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn manifest(url: &str) -> (String, Value) {
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap()
        .get(url)
        .header("Accept", images::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let digest = r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    (
        digest,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

/// The contents of `path` in a gzip layer.
fn layer_file(gz: &[u8], path: &str) -> Option<String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    for entry in archive.entries().unwrap() {
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

fn metric_line<'t>(text: &'t str, series: &str) -> Option<&'t str> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_security_context_runs_maintainer_scripts_and_restricted_falls_back() {
    if !tools() {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("pp-deploy-")
        .tempdir_in("/tmp")
        .unwrap();
    set_mode(work.path(), 0o755);
    let default = rendered(&work.path().join("render"), "deploy");
    let restricted = rendered(&work.path().join("render"), "deploy/restricted");
    // The Helm chart's defaults and restricted values make the same `docker run` (user,
    // capabilities, seccomp file, /proc, mounts, environment, arguments) as deploy/ and
    // deploy/restricted/: what runs below is also what the chart deploys.
    let elsewhere = Path::new("/nonexistent");
    let volumes = ["config", "tls", "store", "tmp"].map(|v| (v, elsewhere));
    for (kustomized, chart) in [
        (&default, "helm_defaults"),
        (&restricted, "helm_restricted"),
    ] {
        let chart_pod = pod_template(&rendered(&work.path().join("render"), chart)).clone();
        let pod = pod_template(kustomized);
        assert_eq!(
            run_flags(&chart_pod, &volumes),
            run_flags(pod, &volumes),
            "{chart}"
        );
        assert_eq!(
            chart_pod["spec"]["containers"][0]["args"], pod["spec"]["containers"][0]["args"],
            "{chart}"
        );
    }

    let registry = Registry::start().await;
    let repo = AptRepo::new(&["amd64"]);
    repo.add(&hello(NEW));
    repo.publish();
    let old = hello(OLD);
    let installed = Installed {
        spec: &old,
        modified_conffiles: Vec::new(),
    };
    let original = image::image(
        Format::Oci,
        "amd64",
        &[base_files(true), dpkg_files(&[installed])],
    );
    images::push_image(&registry.url(), "test/hello", "1", &original).await;

    let Some(dockerd) = Dockerd::start(&[]).await else {
        return;
    };
    let rootfs = work.path().join("rootfs");
    build_rootfs(&rootfs);
    import_image(&dockerd, &rootfs, IMAGE_TAG);

    // deploy/: the sandbox runs, the pull gets the patched image.
    let container = start(
        &dockerd,
        pod_template(&default),
        &work.path().join("default"),
        &registry,
        &repo,
    );
    container.ready().await;
    let host = get_json(&format!("{}/readyz?verbose", container.url)).await;
    assert_eq!(
        host["sandbox"]["available"],
        true,
        "{host}\n{}",
        container.logs()
    );
    assert_eq!(host["overlay"]["available"], true, "{host}");
    let (digest, patched) = manifest(&format!(
        "{}/v2/local/test/hello/manifests/1",
        container.url
    ))
    .await;
    assert_ne!(
        digest,
        original.manifest.digest,
        "the pull got the original:\n{}",
        container.logs()
    );
    let layers = patched["layers"].as_array().unwrap();
    assert_eq!(layers.len(), original.layers.len() + 1, "{patched}");
    let top = layers.last().unwrap()["digest"].as_str().unwrap();
    let blob = reqwest::get(format!("{}/v2/local/test/hello/blobs/{top}", container.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        layer_file(&blob, "etc/postinst-ran").as_deref(),
        Some(format!("configure {OLD}\n").as_str()),
        "the new postinst ran in the sandbox as dpkg runs it on an upgrade"
    );
    assert_eq!(
        layer_file(&blob, "usr/bin/hello").as_deref(),
        Some(format!("#!/bin/sh\necho hello {NEW}\n").as_str())
    );
    let metrics = reqwest::get(format!("{}/metrics", container.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_line(&metrics, "patchpull_sandbox_available "),
        Some("1")
    );
    drop(container);

    // deploy/restricted/: no sandbox; said at start, and the pull gets the original.
    let container = start(
        &dockerd,
        pod_template(&restricted),
        &work.path().join("restricted"),
        &registry,
        &repo,
    );
    container.ready().await;
    let host = get_json(&format!("{}/patchpull/v1/host", container.url)).await;
    assert_eq!(host["sandbox"]["available"], false, "{host}");
    let reason = host["sandbox"]["reason"].as_str().unwrap();
    assert!(reason.contains("unshare"), "{reason}");
    let logs = container.logs();
    assert!(
        logs.contains("sandbox unavailable") && logs.contains("served unpatched"),
        "one line says so at start:\n{logs}"
    );
    let (digest, _) = manifest(&format!(
        "{}/v2/local/test/hello/manifests/1",
        container.url
    ))
    .await;
    assert_eq!(digest, original.manifest.digest, "fail-open: the original");
    let metrics = reqwest::get(format!("{}/metrics", container.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_line(&metrics, "patchpull_sandbox_available "),
        Some("0")
    );
    assert_eq!(
        metric_line(
            &metrics,
            "patchpull_tag_pulls_total{served=\"Fallback\",reason=\"SandboxUnavailable\"} "
        ),
        Some("1"),
        "{metrics}"
    );
    let images = get_json(&format!("{}/patchpull/v1/images", container.url)).await;
    let detail = images.to_string();
    assert_eq!(
        detail.matches("unshare cannot make").count(),
        1,
        "the reason once, not per script: {detail}"
    );
}
