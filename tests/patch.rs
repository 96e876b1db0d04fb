//! `patchpull patch` as a user runs it: a real registry, a signed package archive made with
//! dpkg-deb/apt-ftparchive/gpg and served by busybox httpd, synthetic Debian images whose
//! dpkg database matches their files, and the real binary. Results are checked the way a
//! user would: skopeo pulls the patched image, umoci unpacks it, dpkg-query reads its
//! database.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

#[path = "patch/cases.rs"]
mod cases;
mod common;
#[path = "patch/copa.rs"]
mod copa;
#[path = "patch/dpkg.rs"]
mod dpkg;
#[path = "patch/holdback.rs"]
mod holdback;
#[path = "patch/image.rs"]
mod image;
#[path = "patch/index.rs"]
mod index;
#[path = "patch/plans.rs"]
mod plans;
#[path = "patch/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::Read;

use common::apt::{AptRepo, DebEntry};
use common::images::{self, Format};
use dpkg::*;
use image::*;
use serde_json::Value;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_and_push_an_oci_image() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    let new = libfoo(NEW, "amd64");
    setup.repo.add(&new);
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/app", "1", &original).await;

    let config = setup.config("run");
    let reference = setup.reference("test/app:1");
    let run = patchpull(&config, &["patch", "--insecure", "--push", &reference]).await;
    run.assert_ok();
    let digest = run.patched_digest();
    assert!(
        run.stdout.contains(&format!(
            "pushed {}:1-patched@{digest}",
            setup.reference("test/app")
        )),
        "{}",
        run.stdout
    );
    let line = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("libfoo"))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["libfoo", OLD, NEW, "1", NEW], "{line}");

    // The registry serves the printed digest under the default tag.
    let (status, media_type, _, served) = setup.manifest("test/app", "1-patched").await;
    assert_eq!(status, 200);
    assert_eq!(served, digest);
    assert_eq!(media_type, images::OCI_MANIFEST);

    let layout = setup.path("layout");
    skopeo_pull(&setup, "test/app:1-patched", &layout, false);
    let (pulled, manifest) = layout_manifest(&layout, "1-patched");
    assert_eq!(pulled, digest, "skopeo kept the manifest bytes");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), original.layers.len() + 1, "{manifest}");
    for (i, blob) in original.layers.iter().enumerate() {
        assert_eq!(
            layers[i]["digest"],
            blob.digest.as_str(),
            "layer {i} in place"
        );
        assert_eq!(
            layout_blob(&layout, &blob.digest),
            blob.data,
            "layer {i} bytes"
        );
    }
    let annotations = &manifest["annotations"];
    assert_eq!(
        annotations["org.opencontainers.image.base.name"], reference,
        "{manifest}"
    );
    assert_eq!(
        annotations["org.opencontainers.image.base.digest"],
        original.manifest.digest.as_str()
    );
    let config_json: Value = serde_json::from_slice(&layout_blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let original_config: Value = serde_json::from_slice(&original.config.data).unwrap();
    let diff_ids = config_json["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), original.layers.len() + 1);
    assert_eq!(
        diff_ids[..original.layers.len()],
        original_config["rootfs"]["diff_ids"].as_array().unwrap()[..]
    );
    for key in ["architecture", "os", "config"] {
        assert_eq!(config_json[key], original_config[key], "{key} is kept");
    }
    let history = config_json["history"].as_array().unwrap();
    assert_eq!(
        history.len(),
        original_config["history"].as_array().unwrap().len() + 1
    );
    let created_by = history.last().unwrap()["created_by"].as_str().unwrap();
    assert!(
        created_by.contains(&format!("libfoo {OLD} -> {NEW}")),
        "{created_by}"
    );

    // The patched root file system.
    let root = unpack(&layout, "1-patched", &setup.path("bundle"));
    let lib = root.join("usr/lib/x86_64-linux-gnu/libfoo.so.1");
    assert_eq!(read_text(&lib), format!("libfoo {NEW}\n"));
    assert_eq!(
        read_text(&root.join("usr/share/libfoo/added.txt")),
        "new in the fix\n"
    );
    assert_eq!(
        read_text(&root.join("usr/share/libfoo/same.txt")),
        "never changes\n"
    );
    assert!(
        !root.join("usr/share/libfoo/removed.txt").exists(),
        "the file 1.0-1 alone had is whited out"
    );
    // Exactly what real dpkg leaves when it installs the same .deb over the original.
    let deb = setup.repo.archive().join(AptRepo::pool_path(&new));
    if let Some(reference) = dpkg_reference(&setup, "test/app:1", &[deb]) {
        assert_same_tree(&reference, &root);
    }
    let query = dpkg_query(&root);
    assert_eq!(query.trim(), format!("libfoo {NEW} install ok installed"));
    let list = read_text(&root.join("var/lib/dpkg/info/libfoo:amd64.list"));
    assert!(list.contains("/usr/share/libfoo/added.txt\n"), "{list}");
    assert!(!list.contains("removed.txt"), "{list}");
    let sums = read_text(&root.join("var/lib/dpkg/info/libfoo:amd64.md5sums"));
    assert_eq!(sums, new.md5sums());

    // The new layer holds the package's files and the dpkg database, nothing else.
    let top = layers.last().unwrap()["digest"].as_str().unwrap();
    let entries = layer_entries(&layout_blob(&layout, top));
    let package_paths: BTreeSet<String> = new
        .all_entries()
        .iter()
        .map(|e| match e {
            DebEntry::Dir(p) => format!("{p}/"),
            DebEntry::File(p, ..) | DebEntry::Symlink(p, _) => p.clone(),
        })
        .collect();
    let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    for (path, _) in &entries {
        let path = path.trim_start_matches("./");
        let allowed = package_paths.contains(path)
            || path.starts_with("var/lib/dpkg/")
            || ["var/", "var/lib/"].contains(&path)
            || path == "usr/share/libfoo/.wh.removed.txt"
            || path == "etc/libfoo/edited.conf.dpkg-dist";
        assert!(
            allowed,
            "unexpected entry {path} in the patch layer: {names:?}"
        );
    }
    for wanted in [
        "usr/lib/x86_64-linux-gnu/libfoo.so.1",
        "usr/share/libfoo/added.txt",
        "usr/share/libfoo/.wh.removed.txt",
        "var/lib/dpkg/status",
        "var/lib/dpkg/info/libfoo:amd64.list",
    ] {
        assert!(
            names.iter().any(|n| n.trim_start_matches("./") == wanted),
            "{wanted} missing from the patch layer: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.ends_with("same.txt")),
        "an unchanged file stays in the lower layer: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conffiles_follow_dpkgs_rule() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    let new = libfoo(NEW, "amd64");
    setup.repo.add(&new);
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/conf", "1", &original).await;

    let layout = setup.path("layout");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--oci-dir",
            layout.to_str().unwrap(),
            &setup.reference("test/conf:1"),
        ],
    )
    .await;
    run.assert_ok();
    assert!(
        run.stdout.contains(
            "libfoo: kept the image's /etc/libfoo/edited.conf; the package's version is /etc/libfoo/edited.conf.dpkg-dist"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("plain.conf"), "{}", run.stdout);

    let root = unpack(&layout, "1-patched", &setup.path("bundle"));
    let etc = root.join("etc/libfoo");
    // Unmodified: replaced by the package's new version.
    assert_eq!(read_text(&etc.join("plain.conf")), format!("plain {NEW}\n"));
    assert!(!etc.join("plain.conf.dpkg-dist").exists());
    // Modified by the image: kept, the new version beside it.
    assert_eq!(std::fs::read(etc.join("edited.conf")).unwrap(), EDITED);
    assert_eq!(
        read_text(&etc.join("edited.conf.dpkg-dist")),
        format!("edited {NEW}\n")
    );
    // The database records the package's new md5 for both, as dpkg does.
    let paragraph = status_paragraph(&root, "libfoo");
    let conffiles: Vec<&str> = paragraph
        .split("\nConffiles:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{paragraph}"))
        .lines()
        .take_while(|l| l.starts_with(' '))
        .map(str::trim)
        .collect();
    assert_eq!(
        conffiles,
        [
            format!(
                "/etc/libfoo/plain.conf {}",
                common::apt::md5_hex(format!("plain {NEW}\n").as_bytes())
            ),
            format!(
                "/etc/libfoo/edited.conf {}",
                common::apt::md5_hex(format!("edited {NEW}\n").as_bytes())
            ),
        ],
        "{paragraph}"
    );
    assert!(
        paragraph.contains(&format!("\nVersion: {NEW}")),
        "{paragraph}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_are_deterministic_and_repatching_replaces_the_patch_layer() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/det", "1", &original).await;
    let reference = setup.reference("test/det:1");

    // Two runs with nothing shared (store, caches) agree on the digest.
    let first = patchpull(&setup.config("a"), &["patch", "--insecure", &reference]).await;
    first.assert_ok();
    let second = patchpull(
        &setup.config("b"),
        &["patch", "--insecure", "--push", &reference],
    )
    .await;
    second.assert_ok();
    let patched = second.patched_digest();
    assert_eq!(first.patched_digest(), patched);
    let (_, _, bytes, _) = setup.manifest("test/det", "1-patched").await;
    let first_manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let first_layers = first_manifest["layers"].as_array().unwrap().clone();

    // A newer fix is published; the patched image is patched again. busybox httpd's
    // validators have one-second resolution: publishing within the second of the last
    // fetch would look "not modified" to the scanner's conditional request.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    setup.repo.add(&libfoo(NEWER, "amd64"));
    setup.repo.publish();
    let run = patchpull(
        &setup.config("a"),
        &[
            "patch",
            "--insecure",
            "--push",
            "--tag",
            &setup.reference("test/det:1-repatched"),
            &setup.reference("test/det:1-patched"),
        ],
    )
    .await;
    run.assert_ok();
    let line = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("libfoo"))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    let cells: Vec<&str> = line.split_whitespace().collect();
    // Planned from the original's database: 1.0-1 to the newest fix.
    assert_eq!(cells[..3], ["libfoo", OLD, NEWER], "{line}");
    let repatched = run.patched_digest();
    assert_ne!(repatched, patched);
    let (status, _, bytes, digest) = setup.manifest("test/det", "1-repatched").await;
    assert_eq!((status, digest.as_str()), (200, repatched.as_str()));
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        first_layers.len(),
        "the patch layer is replaced, not stacked"
    );
    assert_eq!(
        layers[..original.layers.len()],
        first_layers[..original.layers.len()]
    );
    assert_ne!(layers.last(), first_layers.last());
    let annotations = &manifest["annotations"];
    assert_eq!(
        annotations["org.opencontainers.image.base.digest"],
        original.manifest.digest.as_str(),
        "{manifest}"
    );
    assert_eq!(annotations["org.opencontainers.image.base.name"], reference);
    let config: Value = serde_json::from_slice(
        &setup
            .blob("test/det", manifest["config"]["digest"].as_str().unwrap())
            .await,
    )
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        original.layers.len() + 1
    );
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), original.layers.len() + 1, "{config}");
    let top = setup
        .blob(
            "test/det",
            layers.last().unwrap()["digest"].as_str().unwrap(),
        )
        .await;
    let mut status_text = String::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(top.as_slice()));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            == "var/lib/dpkg/status"
        {
            entry.read_to_string(&mut status_text).unwrap();
        }
    }
    assert!(
        status_text.contains(&format!("Version: {NEWER}\n")),
        "{status_text}"
    );

    // The re-patched image is what dpkg makes of the newest fix over the original.
    let layout = setup.path("repatched");
    skopeo_pull(&setup, "test/det:1-repatched", &layout, false);
    let root = unpack(&layout, "1-repatched", &setup.path("repatched-bundle"));
    let deb = setup
        .repo
        .archive()
        .join(AptRepo::pool_path(&libfoo(NEWER, "amd64")));
    if let Some(reference) = dpkg_reference(&setup, "test/det:1", &[deb]) {
        assert_same_tree(&reference, &root);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_images_keep_docker_media_types() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Docker, false);
    images::push_image(&setup.registry.url(), "test/docker", "1", &original).await;
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--push",
            &setup.reference("test/docker:1"),
        ],
    )
    .await;
    run.assert_ok();
    let (status, media_type, bytes, digest) = setup.manifest("test/docker", "1-patched").await;
    assert_eq!(status, 200);
    assert_eq!(digest, run.patched_digest());
    assert_eq!(media_type, images::DOCKER_MANIFEST);
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(manifest["mediaType"], images::DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], images::DOCKER_CONFIG);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), original.layers.len() + 1);
    for layer in layers {
        assert_eq!(layer["mediaType"], images::DOCKER_LAYER_GZIP, "{manifest}");
    }
    // The new layer is really gzip'd tar, as its media type says.
    let top = setup
        .blob(
            "test/docker",
            layers.last().unwrap()["digest"].as_str().unwrap(),
        )
        .await;
    assert!(layer_entries(&top)
        .iter()
        .any(|(p, _)| p.ends_with("var/lib/dpkg/status")));

    // Pushed to another repository of the registry: the same image, complete there.
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--push",
            "--tag",
            &setup.reference("test/docker-patched:1.0"),
            &setup.reference("test/docker:1"),
        ],
    )
    .await;
    run.assert_ok();
    let (status, media_type, _, elsewhere) = setup.manifest("test/docker-patched", "1.0").await;
    assert_eq!(
        (status, media_type.as_str()),
        (200, images::DOCKER_MANIFEST)
    );
    assert_eq!(elsewhere, digest, "the same patch, the same digest");
    for layer in layers {
        let digest = layer["digest"].as_str().unwrap();
        let blob = setup.blob("test/docker-patched", digest).await;
        assert_eq!(images::sha256_digest(&blob), digest);
    }
}
