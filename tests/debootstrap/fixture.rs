//! The one bookworm root every test of this binary checks, built once: debootstrap, push,
//! scan, patch, pull back, unpack, and real `dpkg -i` of the same .debs in a copy of the
//! original. Only actions happen here; the tests assert on what they left.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use crate::common::images::{self, Format};
use crate::common::registry::Registry;

pub fn sh(script: &str) -> Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

/// Runs `program args`, asserting success; returns stdout.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    stdout_of(&out, &format!("{program} {args:?}"))
}

/// stdout of a run that must have succeeded.
pub fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `patchpull --config CONFIG args`, asserting success; returns stdout.
pub fn patchpull(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    stdout_of(&out, &format!("patchpull {args:?}"))
}

/// Runs `command` chrooted into `root` with /dev and /proc mounted in a private mount
/// namespace (see [`crate::rootfs::in_root_within`]), within half an hour.
pub fn in_root(root: &Path, command: &[&str]) -> Output {
    crate::rootfs::in_root_within(1800, root, command)
}

/// skopeo-copies `docker://<source>` into the OCI layout `layout` as `tag`.
pub fn pull(source: &str, layout: &Path, tag: &str) {
    let dst = format!("oci:{}:{tag}", layout.display());
    let src = format!("docker://{source}");
    tool(
        "skopeo",
        &["copy", "-q", "--src-tls-verify=false", &src, &dst],
    );
}

/// skopeo-copies the OCI layout's `tag` to `docker://<target>`.
pub fn push(layout: &Path, tag: &str, target: &str) {
    let src = format!("oci:{}:{tag}", layout.display());
    let dst = format!("docker://{target}");
    tool(
        "skopeo",
        &["copy", "-q", "--dest-tls-verify=false", &src, &dst],
    );
}

/// `umoci unpack` of the layout's `tag` into `bundle`; returns the root file system.
pub fn unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{tag}", layout.display());
    tool(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    bundle.join("rootfs")
}

/// The manifest an OCI layout's index names with `tag`.
pub fn layout_manifest(layout: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_slice(&layout_blob(layout, &digest)).unwrap()
}

pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// package -> fixed version, from the rows of a `scan` or `patch` table: the lines with
/// words starting in the header's INSTALLED and FIXED columns (notes under the table, such
/// as "maintainer scripts run: N", do not line up with them).
pub fn planned_rows(table: &str) -> BTreeMap<String, String> {
    let mut planned = BTreeMap::new();
    let mut columns: Option<(usize, usize)> = None;
    for line in table.lines() {
        if line.trim_start().starts_with("PACKAGE ") {
            columns = line.find(" INSTALLED").zip(line.find(" FIXED"));
            continue;
        }
        let Some((installed, fixed)) = columns else {
            continue;
        };
        let bytes = line.as_bytes();
        let starts_word = |at: usize| {
            bytes.get(at) == Some(&b' ') && bytes.get(at + 1).is_some_and(|b| *b != b' ')
        };
        if !line.starts_with("  ")
            || line.starts_with("  not planned")
            || !starts_word(installed)
            || !starts_word(fixed)
        {
            continue;
        }
        let name = line[..installed].trim();
        let version = line[fixed..].split_whitespace().next().unwrap_or_default();
        planned.insert(name.to_string(), version.to_string());
    }
    planned
}

/// What the setup left for the tests.
pub struct Fixture {
    pub work: PathBuf,
    /// The debootstrap root the original image's only layer was made of.
    pub root: PathBuf,
    /// patchpull's config: its own store, `[scan] point_releases = false`.
    pub config: PathBuf,
    /// OCI layout with the tags `original` and `patched`.
    pub layout: PathBuf,
    /// The patched image unpacked by umoci.
    pub patched: PathBuf,
    /// The original image unpacked by umoci, then the same .debs installed by `dpkg -i`.
    pub dpkg_root: PathBuf,
    /// package -> version of the .debs patchpull fetched (what `dpkg -i` installed).
    pub debs: BTreeMap<String, String>,
    pub dpkg_install: Output,
    pub scan_table: String,
    pub scan_trivy: String,
    pub patch_summary: String,
    pub rescan_table: String,
}

/// The fixture, built by the first test that asks; `None` when the archive tests are off
/// or tools are missing. A failed setup fails every test with its message, once.
pub fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Result<Option<Fixture>, String>> = OnceLock::new();
    let built = FIXTURE.get_or_init(|| {
        std::panic::catch_unwind(AssertUnwindSafe(setup)).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match built {
        Ok(fixture) => fixture.as_ref(),
        Err(message) => panic!("the debootstrap fixture failed: {message}"),
    }
}

fn lap(phase: &str, since: &mut Instant) {
    eprintln!("debootstrap fixture: {phase} took {:.1?}", since.elapsed());
    *since = Instant::now();
}

fn setup() -> Option<Fixture> {
    if !crate::rootfs::archive_tests_enabled("deb.debian.org", &["curl", "xz"]) {
        return None;
    }
    let started = Instant::now();
    let mut since = Instant::now();
    let work = crate::rootfs::fresh_work_dir("debootstrap");
    let root = work.join("root");
    // minbase, plus xz-utils so that `xz --version` shows which liblzma runs.
    let out = sh(&format!(
        "timeout 600 debootstrap --variant=minbase --include=xz-utils bookworm {} http://deb.debian.org/debian",
        root.display()
    ));
    stdout_of(&out, "debootstrap");
    lap("debootstrap", &mut since);

    let (layer, diff_id) = crate::rootfs::root_layer(&root, &work);
    let image = images::assemble(Format::Oci, "amd64", vec![(layer, diff_id)], &["/bin/bash"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = runtime.block_on(async {
        let registry = Registry::start().await;
        images::push_image(&registry.url(), "debian", "bookworm-minbase", &image).await;
        registry
    });
    drop(image);
    lap("image built and pushed", &mut since);

    // patchpull reads only the security suite, so the comparison with its index is exact.
    let config = work.join("patchpull.toml");
    let cache = work.join("scan-cache");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n[log]\nlevel = \"warn\"\n[scan]\npoint_releases = false\ncache_dir = {:?}\n",
            work.join("store").display(),
            cache.display()
        ),
    )
    .unwrap();
    let reference = format!("{}/debian:bookworm-minbase", registry.authority());
    let scan_table = patchpull(&config, &["scan", "--insecure", &reference]);
    let scan_trivy = patchpull(
        &config,
        &["scan", "--insecure", &reference, "--format", "trivy"],
    );
    lap("scan (table and trivy)", &mut since);
    let patch_summary = patchpull(&config, &["patch", "--insecure", &reference, "--push"]);
    eprintln!("{patch_summary}");
    lap("patch --push", &mut since);

    let patched_ref = format!("{reference}-patched");
    let layout = work.join("oci");
    pull(&reference, &layout, "original");
    pull(&patched_ref, &layout, "patched");
    let patched = unpack(&layout, "patched", &work.join("bundle-patched"));
    let dpkg_root = unpack(&layout, "original", &work.join("bundle-dpkg"));
    lap("skopeo copy and umoci unpack", &mut since);
    let rescan_table = patchpull(&config, &["scan", "--insecure", &patched_ref]);
    lap("scan of the patched image", &mut since);
    drop(registry);

    // The same .debs, by package name, installed by real dpkg in the original root.
    let debs_dir = dpkg_root.join("tmp/debs");
    std::fs::create_dir_all(&debs_dir).unwrap();
    let mut debs = BTreeMap::new();
    for entry in std::fs::read_dir(cache.join("debs")).unwrap() {
        let path = entry.unwrap().path();
        let field = |f: &str| tool("dpkg-deb", &["-f", path.to_str().unwrap(), f]);
        let name = field("Package").trim().to_string();
        std::fs::copy(&path, debs_dir.join(format!("{name}.deb"))).unwrap();
        debs.insert(name, field("Version").trim().to_string());
    }
    // `dpkg -i` of them all at once refuses a package whose pre-dependency is unpacked in
    // the same run (libpam-modules on libpam-modules-bin), as apt would not order it; a
    // second pass installs what the first refused, once its pre-dependency is configured.
    let mut command = [
        "sh",
        "-c",
        "dpkg -i \"$@\" || dpkg -i --skip-same-version \"$@\"",
        "sh",
    ]
    .map(str::to_string)
    .to_vec();
    command.extend(debs.keys().map(|name| format!("/tmp/debs/{name}.deb")));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let dpkg_install = in_root(&dpkg_root, &command);
    std::fs::remove_dir_all(&debs_dir).unwrap();
    lap("real dpkg -i", &mut since);
    eprintln!("debootstrap fixture: ready after {:.1?}", started.elapsed());
    Some(Fixture {
        work,
        root,
        config,
        layout,
        patched,
        dpkg_root,
        debs,
        dpkg_install,
        scan_table,
        scan_trivy,
        patch_summary,
        rescan_table,
    })
}
