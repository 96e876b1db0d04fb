//! The one jammy root every test of this binary checks, built once: Ubuntu's keyring from
//! the archive, debootstrap, push, scan, patch, pull back, unpack, and real `dpkg -i` of the
//! same .debs in a copy of the original. Only actions happen here; the tests assert on what
//! they left.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Instant;

use crate::archive::{ubuntu_keyring, ARCHIVE};
use crate::common::images::{self, Format};
use crate::common::registry::Registry;
use crate::debian::{in_root, pull, unpack};
use crate::rootfs::{archive_tests_enabled, fresh_work_dir, root_layer};
use crate::run::{bounded, patchpull, sh, stdout_of, tool};

/// The release: debootstrap here has a script for jammy (a link to `gutsy`), none for noble.
pub const CODENAME: &str = "jammy";

/// A debug-build patch of a minbase root takes a few minutes at most.
const PATCHPULL_SECONDS: u32 = 900;

/// What the setup left for the tests.
pub struct Fixture {
    /// The debootstrap root the original image's only layer was made of.
    pub root: PathBuf,
    /// OCI layout with the tags `original` and `patched`.
    pub layout: PathBuf,
    /// The patched image unpacked by umoci.
    pub patched: PathBuf,
    /// The original image unpacked by umoci, then the same .debs installed by `dpkg -i`.
    pub dpkg_root: PathBuf,
    /// package -> version of the .debs patchpull fetched (what `dpkg -i` installed).
    pub debs: BTreeMap<String, String>,
    /// package -> the fetched `.deb`.
    pub deb_files: BTreeMap<String, PathBuf>,
    /// The `dpkg -i` runs, one per batch of [`pre_depends_batches`].
    pub dpkg_installs: Vec<Output>,
    pub scan_table: String,
    /// The scan's stderr: warnings about suites, indexes or changelogs.
    pub scan_log: String,
    pub scan_trivy: String,
    pub patch_summary: String,
    pub rescan_table: String,
    /// `patchpull scan` with `scan.ubuntu_keyring` set to the keyring as Ubuntu ships it.
    pub shipped_keyring_scan: Output,
}

/// patchpull's config `<name>.toml` in `work`: its own store and scan cache (`<name>-store`,
/// `<name>-cache`), the security suite only, archive.ubuntu.com and `keyring`.
fn write_config(work: &Path, name: &str, keyring: &Path) -> PathBuf {
    let config = work.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n[log]\nlevel = \"warn\"\n[scan]\npoint_releases = false\n\
             cache_dir = {:?}\nubuntu_archive_url = {ARCHIVE:?}\nubuntu_security_url = {ARCHIVE:?}\n\
             ubuntu_keyring = {:?}\n",
            work.join(format!("{name}-store")).display(),
            work.join(format!("{name}-cache")).display(),
            keyring.display()
        ),
    )
    .unwrap();
    config
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
        Err(message) => panic!("the ubuntu fixture failed: {message}"),
    }
}

fn lap(phase: &str, since: &mut Instant) {
    eprintln!("ubuntu fixture: {phase} took {:.1?}", since.elapsed());
    *since = Instant::now();
}

/// The package names in batches for one `dpkg -i` each, as apt splits an upgrade: dpkg
/// refuses a package whose Pre-Depends (on another of the set, as e2fsprogs on libext2fs2)
/// is not configured yet, and `dpkg -i` configures only after unpacking all it was given.
/// A package goes in the batch after the last of its pre-dependencies; names sorted.
fn pre_depends_batches(pre_depends: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let needs = |field: &str| -> Vec<String> {
        field
            .split([',', '|'])
            .filter_map(|alt| alt.split_whitespace().next())
            .map(|name| name.split(':').next().unwrap_or(name).to_string())
            .filter(|name| pre_depends.contains_key(name))
            .collect()
    };
    let mut batch_of: BTreeMap<&str, usize> = BTreeMap::new();
    while batch_of.len() < pre_depends.len() {
        let before = batch_of.len();
        for (name, field) in pre_depends {
            if batch_of.contains_key(name.as_str()) {
                continue;
            }
            let batches: Option<Vec<usize>> = needs(field)
                .iter()
                .filter(|n| *n != name)
                .map(|n| batch_of.get(n.as_str()).copied())
                .collect();
            if let Some(batches) = batches {
                let batch = batches.into_iter().map(|b| b + 1).max().unwrap_or(0);
                batch_of.insert(name, batch);
            }
        }
        assert!(
            batch_of.len() > before,
            "a cycle of Pre-Depends among the updates"
        );
    }
    let mut batches = vec![Vec::new(); batch_of.values().max().map_or(0, |b| b + 1)];
    for (name, batch) in batch_of {
        batches[batch].push(name.to_string());
    }
    batches
}

fn setup() -> Option<Fixture> {
    // curl for the keyring and indexes, xz and zstd for Ubuntu's indexes and .debs, gpg for
    // the keyring, timeout for the bounded runs.
    if !archive_tests_enabled(
        "archive.ubuntu.com",
        &["curl", "xz", "zstd", "gpg", "timeout"],
    ) {
        return None;
    }
    let started = Instant::now();
    let mut since = Instant::now();
    let work = fresh_work_dir("ubuntu");
    let keyrings = ubuntu_keyring(&work.join("keyring"));
    lap("ubuntu-keyring from the archive", &mut since);

    let root = work.join("root");
    // debootstrap unpacks Ubuntu's zstd-compressed .debs with the host's zstd.
    let out = sh(
        900,
        &format!(
            "debootstrap --variant=minbase --keyring={} {CODENAME} {} {ARCHIVE}",
            keyrings.shipped.display(),
            root.display()
        ),
    );
    stdout_of(&out, "debootstrap");
    lap("debootstrap", &mut since);

    let (layer, diff_id) = root_layer(&root, &work);
    let image = images::assemble(Format::Oci, "amd64", vec![(layer, diff_id)], &["/bin/bash"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = runtime.block_on(async {
        let registry = Registry::start().await;
        images::push_image(&registry.url(), "ubuntu", "jammy-minbase", &image).await;
        registry
    });
    drop(image);
    lap("image built and pushed", &mut since);

    // patchpull reads only the security suite, so the comparison with its index is exact.
    // It gets the keys re-exported by gpg; a second scan gets them as Ubuntu ships them
    // (the test `scan_accepts_the_keyring_as_ubuntu_ships_it`).
    let config = write_config(&work, "patchpull", &keyrings.exported);
    let cache = work.join("patchpull-cache");
    let shipped_config = write_config(&work, "shipped-keyring", &keyrings.shipped);
    let reference = format!("{}/ubuntu:jammy-minbase", registry.authority());
    let (scan_table, scan_log) = patchpull(
        PATCHPULL_SECONDS,
        &config,
        &["scan", "--insecure", &reference],
    );
    eprintln!("{scan_table}{scan_log}");
    let (scan_trivy, _) = patchpull(
        PATCHPULL_SECONDS,
        &config,
        &["scan", "--insecure", &reference, "--format", "trivy"],
    );
    let shipped_keyring_scan = bounded(
        PATCHPULL_SECONDS,
        env!("CARGO_BIN_EXE_patchpull"),
        &[
            "--config",
            shipped_config.to_str().unwrap(),
            "scan",
            "--insecure",
            &reference,
        ],
    );
    lap("scan (table, trivy, shipped keyring)", &mut since);
    let (patch_summary, patch_log) = patchpull(
        PATCHPULL_SECONDS,
        &config,
        &["patch", "--insecure", &reference, "--push"],
    );
    eprintln!("{patch_summary}{patch_log}");
    lap("patch --push", &mut since);

    let patched_ref = format!("{reference}-patched");
    let layout = work.join("oci");
    pull(&reference, &layout, "original");
    pull(&patched_ref, &layout, "patched");
    let patched = unpack(&layout, "patched", &work.join("bundle-patched"));
    let dpkg_root = unpack(&layout, "original", &work.join("bundle-dpkg"));
    lap("skopeo copy and umoci unpack", &mut since);
    let (rescan_table, _) = patchpull(
        PATCHPULL_SECONDS,
        &config,
        &["scan", "--insecure", &patched_ref],
    );
    lap("scan of the patched image", &mut since);
    drop(registry);

    // The same .debs, by package name, installed by real dpkg in the original root.
    let debs_dir = dpkg_root.join("tmp/debs");
    std::fs::create_dir_all(&debs_dir).unwrap();
    let mut debs = BTreeMap::new();
    let mut deb_files = BTreeMap::new();
    let mut pre_depends = BTreeMap::new();
    for entry in std::fs::read_dir(cache.join("debs")).unwrap() {
        let path = entry.unwrap().path();
        let field = |f: &str| tool(60, "dpkg-deb", &["-f", path.to_str().unwrap(), f]);
        let name = field("Package").trim().to_string();
        std::fs::copy(&path, debs_dir.join(format!("{name}.deb"))).unwrap();
        debs.insert(name.clone(), field("Version").trim().to_string());
        pre_depends.insert(name.clone(), field("Pre-Depends"));
        deb_files.insert(name, path);
    }
    let dpkg_installs = pre_depends_batches(&pre_depends)
        .into_iter()
        .map(|batch| {
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
            command.extend(batch.iter().map(|name| format!("/tmp/debs/{name}.deb")));
            let command: Vec<&str> = command.iter().map(String::as_str).collect();
            in_root(&dpkg_root, &command)
        })
        .collect();
    std::fs::remove_dir_all(&debs_dir).unwrap();
    lap("real dpkg -i", &mut since);
    eprintln!("ubuntu fixture: ready after {:.1?}", started.elapsed());
    Some(Fixture {
        root,
        layout,
        patched,
        dpkg_root,
        debs,
        deb_files,
        dpkg_installs,
        scan_table,
        scan_log,
        scan_trivy,
        patch_summary,
        rescan_table,
        shipped_keyring_scan,
    })
}
