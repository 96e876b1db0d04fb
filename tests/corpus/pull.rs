//! An image patched on pull: `patchpull serve` of the test's own (its own store and scan
//! cache, the loopback registry as its one upstream, `patch.mode = "wait"` so that the first
//! pull gets the patched image), pulled by skopeo into an OCI layout and unpacked by umoci;
//! or, for the second patch, only its manifest, under another clock.

use std::path::{Path, PathBuf};

use crate::common::serve::ServeProcess;
use crate::common::ProxyConfig;
use crate::debian::{layout_manifest, unpack};
use crate::matrix::Suite;
use crate::run::{bounded, stdout_of, tool};

/// The upstream's name in patchpull's config, and so the first part of the pulled names.
const UPSTREAM: &str = "local";

/// A patch of a debug build of a big image with scripts takes a few minutes at most; a wait
/// pull waits that long.
const PATCH_SECONDS: u32 = 900;

/// What a pull through patchpull gave.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub manifest_digest: String,
    /// The top layer's digest, the patch layer when the image was patched.
    pub top_layer: String,
    pub layers: usize,
    /// The patched root, when the image was pulled whole.
    pub root: Option<PathBuf>,
    /// patchpull's stderr.
    pub log: String,
}

/// patchpull's config for a store in `dir`.
fn config(suite: Suite, registry_url: &str, dir: &Path) -> String {
    let mut config = ProxyConfig::new(&[(UPSTREAM, registry_url, true)]);
    config.patch = vec![
        "mode = \"wait\"".into(),
        format!("wait_timeout = \"{PATCH_SECONDS}s\""),
    ];
    // A waiting pull moves no byte until the patch is done: the connection's idle clock
    // must outlast the wait (`server.idle_timeout`, 2 min by default, cut the openjdk
    // image's first pull).
    config.server_extra = vec![format!("idle_timeout = \"{}s\"", PATCH_SECONDS + 60)];
    config.scan = vec!["point_releases = false".into()];
    if suite.is_ubuntu() {
        let keyring = &crate::build::keyrings().exported;
        config.scan.extend([
            format!("ubuntu_archive_url = {:?}", crate::archive::ARCHIVE),
            format!("ubuntu_security_url = {:?}", crate::archive::ARCHIVE),
            format!("ubuntu_keyring = {:?}", keyring.display().to_string()),
        ]);
    }
    config.to_toml(&dir.join("store"))
}

/// The name the image has through patchpull.
fn source(serve: &ServeProcess, repository: &str, tag: &str) -> String {
    format!(
        "docker://{}/{UPSTREAM}/{repository}:{tag}",
        serve.authority()
    )
}

/// Pulls `repository:tag` of `registry_url` through a new `patchpull serve` in `dir`, with
/// the original (`<tag>-original`) beside it in the layout, and unpacks the pulled image.
pub fn pull_whole(
    suite: Suite,
    registry_url: &str,
    repository: &str,
    tag: &str,
    dir: &Path,
) -> Pulled {
    let serve = ServeProcess::start(dir, &config(suite, registry_url, dir), &[], &[]);
    let layout = dir.join("oci");
    let dst = |t: &str| format!("oci:{}:{t}", layout.display());
    let copy = |from: &str, to: &str| {
        let out = bounded(
            PATCH_SECONDS + 300,
            "skopeo",
            &["copy", "-q", "--src-tls-verify=false", from, to],
        );
        stdout_of(&out, &format!("skopeo copy {from}\n{}", serve.log()));
    };
    copy(&source(&serve, repository, tag), &dst("patched"));
    copy(
        &source(&serve, repository, &format!("{tag}-original")),
        &dst("original"),
    );
    let manifest = layout_manifest(&layout, "patched");
    let layers = manifest["layers"].as_array().unwrap();
    let root = unpack(&layout, "patched", &dir.join("bundle"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "patched")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    Pulled {
        manifest_digest,
        top_layer: layers.last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        layers: layers.len(),
        root: Some(root),
        log: serve.log(),
    }
}

/// The shift of patchpull's clock for the second patch: 40 days, or less when the security
/// suite's `InRelease` says it is valid for less (Debian's security suites are valid for a
/// week: patchpull rightly refuses an expired one, and no later one exists to fetch).
pub fn clock_shift(suite: Suite) -> String {
    const FORTY_DAYS_IN_HOURS: i64 = 40 * 24;
    let text = tool(
        120,
        "curl",
        &["-fsS", "--max-time", "60", &suite.security_inrelease()],
    );
    let Some(until) = text.lines().find_map(|l| l.strip_prefix("Valid-Until: ")) else {
        return "+40d".to_string();
    };
    let epoch = |date: &str| -> i64 {
        tool(10, "date", &["-u", "-d", date, "+%s"])
            .trim()
            .parse()
            .unwrap()
    };
    let hours_left = (epoch(until.trim()) - epoch("now")) / 3600;
    // Two hours short of expiry, for the time the patch takes.
    let hours = (hours_left - 2).clamp(1, FORTY_DAYS_IN_HOURS);
    if hours == FORTY_DAYS_IN_HOURS {
        "+40d".to_string()
    } else {
        format!("+{hours}h")
    }
}

/// The library the `faketime` wrapper preloads (package libfaketime).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The manifest `repository:tag` resolves to through a new `patchpull serve` in `dir` run
/// under libfaketime with `FAKETIME=<shift>`, with `script_env` as `PATCHPULL_SCRIPTS_EXTRA_ENV`.
pub fn pull_manifest_later(
    suite: Suite,
    registry_url: &str,
    repository: &str,
    tag: &str,
    dir: &Path,
    shift: &str,
    script_env: Option<&str>,
) -> Pulled {
    // libfaketime preloaded as the `faketime` wrapper does, without the wrapper: killed,
    // the wrapper leaves its semaphore in /dev/shm, and a later wrapper that gets the same
    // pid cannot start ("sem_open: File exists"). A relative shift needs no shared state.
    let mut env: Vec<(&str, &str)> = vec![("LD_PRELOAD", LIBFAKETIME), ("FAKETIME", shift)];
    env.extend(script_env.map(|e| ("PATCHPULL_SCRIPTS_EXTRA_ENV", e)));
    let serve = ServeProcess::start(dir, &config(suite, registry_url, dir), &[], &env);
    let out = bounded(
        PATCH_SECONDS + 300,
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &source(&serve, repository, tag),
        ],
    );
    let raw = stdout_of(&out, &format!("skopeo inspect\n{}", serve.log()));
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    Pulled {
        manifest_digest: crate::common::images::sha256_digest(raw.as_bytes()),
        top_layer: layers.last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        layers: layers.len(),
        root: None,
        log: serve.log(),
    }
}
