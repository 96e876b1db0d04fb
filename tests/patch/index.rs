//! Multi-platform images: every platform patched, entries that are not platforms kept.

use serde_json::Value;

use crate::common::images::{self, Format, Image};
use crate::image::*;
use crate::support::*;

/// An index of a Debian amd64 image, a distroless arm64 image and a BuildKit-style
/// provenance attestation (platform unknown/unknown) for the amd64 one, pushed to `repo`
/// as tag `1`; the archive has libfoo 1.0-1+deb12u1 for both architectures.
struct Fixture {
    amd64: Image,
    arm64: Image,
    attestation: images::Manifest,
    attestation_entry: Value,
    index: images::Manifest,
}

async fn fixture(setup: &Setup, repo: &str) -> Fixture {
    setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.add(&libfoo(NEW, "arm64"));
    setup.repo.publish();
    let amd64 = libfoo_image(Format::Oci, false);
    let arm64 = distroless_image(&libfoo(OLD, "arm64"));
    let registry = setup.registry.url();
    for child in [&amd64, &arm64] {
        images::push_image(&registry, repo, &child.manifest.digest, child).await;
    }
    // A BuildKit-style provenance attestation for the amd64 image.
    let statement = images::Blob::new(
        "application/vnd.in-toto+json",
        br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2"}"#.to_vec(),
    );
    let att_config = images::Blob::new(images::OCI_CONFIG, b"{}".to_vec());
    let att_bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": images::OCI_MANIFEST,
        "config": {"mediaType": att_config.media_type, "digest": att_config.digest, "size": att_config.data.len()},
        "layers": [{"mediaType": statement.media_type, "digest": statement.digest, "size": statement.data.len(),
                    "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}],
    }))
    .unwrap();
    let attestation = images::Manifest {
        media_type: images::OCI_MANIFEST.into(),
        digest: images::sha256_digest(&att_bytes),
        bytes: att_bytes,
    };
    images::push_blob(&registry, repo, &statement).await;
    images::push_blob(&registry, repo, &att_config).await;
    images::push_manifest(&registry, repo, &attestation.digest, &attestation).await;
    let platform_entry = |image: &Image| {
        serde_json::json!({
            "mediaType": image.manifest.media_type, "digest": image.manifest.digest,
            "size": image.manifest.bytes.len(),
            "platform": {"architecture": image.architecture, "os": "linux"},
        })
    };
    let attestation_entry = serde_json::json!({
        "mediaType": images::OCI_MANIFEST, "digest": attestation.digest, "size": attestation.bytes.len(),
        "platform": {"architecture": "unknown", "os": "unknown"},
        "annotations": {"vnd.docker.reference.digest": amd64.manifest.digest,
                        "vnd.docker.reference.type": "attestation-manifest"},
    });
    let index_bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": images::OCI_INDEX,
        "manifests": [platform_entry(&amd64), platform_entry(&arm64), attestation_entry],
    }))
    .unwrap();
    let index = images::Manifest {
        media_type: images::OCI_INDEX.into(),
        digest: images::sha256_digest(&index_bytes),
        bytes: index_bytes,
    };
    images::push_manifest(&registry, repo, "1", &index).await;

    Fixture {
        amd64,
        arm64,
        attestation,
        attestation_entry,
        index,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_platform_of_an_index_is_patched_and_attestations_are_kept() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64", "arm64"]).await;
    let Fixture {
        amd64,
        arm64,
        attestation_entry,
        index,
        ..
    } = fixture(&setup, "test/multi").await;
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--push",
            &setup.reference("test/multi:1"),
        ],
    )
    .await;
    run.assert_ok();
    let digest = run.patched_digest();
    assert!(run.stdout.contains("linux/arm64"), "{}", run.stdout);
    let (status, media_type, bytes, served) = setup.manifest("test/multi", "1-patched").await;
    assert_eq!((status, served.as_str()), (200, digest.as_str()));
    assert_eq!(media_type, images::OCI_INDEX);
    let patched: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        patched["annotations"]["org.opencontainers.image.base.digest"],
        index.digest.as_str(),
        "{patched}"
    );
    let entries = patched["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{patched}");
    assert!(
        entries.contains(&attestation_entry),
        "the attestation entry is kept as it was: {patched}"
    );
    for (image, triplet) in [(&amd64, "x86_64-linux-gnu"), (&arm64, "aarch64-linux-gnu")] {
        let entry = entries
            .iter()
            .find(|e| e["platform"]["architecture"] == image.architecture.as_str())
            .unwrap_or_else(|| panic!("no {} in {patched}", image.architecture));
        let child_digest = entry["digest"].as_str().unwrap();
        assert_ne!(
            child_digest, image.manifest.digest,
            "{} is patched",
            image.architecture
        );
        let (status, _, child_bytes, _) = setup.manifest("test/multi", child_digest).await;
        assert_eq!(status, 200);
        let child: Value = serde_json::from_slice(&child_bytes).unwrap();
        let layers = child["layers"].as_array().unwrap();
        assert_eq!(layers.len(), image.layers.len() + 1);
        let top = setup
            .blob(
                "test/multi",
                layers.last().unwrap()["digest"].as_str().unwrap(),
            )
            .await;
        assert_eq!(
            layer_file(&top, &format!("usr/lib/{triplet}/libfoo.so.1")).as_deref(),
            Some(format!("libfoo {NEW}\n").as_str())
        );
        let database = if image.architecture == "arm64" {
            assert!(
                layer_file(&top, "var/lib/dpkg/status").is_none(),
                "distroless has no status"
            );
            layer_file(&top, "var/lib/dpkg/status.d/libfoo")
        } else {
            layer_file(&top, "var/lib/dpkg/status")
        };
        let database = database.unwrap_or_else(|| panic!("no database in the {triplet} layer"));
        assert!(database.contains(&format!("Version: {NEW}")), "{database}");
    }
    // Everything the patched index names can be pulled.
    skopeo_pull(&setup, "test/multi:1-patched", &setup.path("layout"), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_travel_with_the_patched_index() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64", "arm64"]).await;
    let fixture = fixture(&setup, "test/multi").await;
    let layout = setup.path("layout");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--oci-dir",
            layout.to_str().unwrap(),
            &setup.reference("test/multi:1"),
        ],
    )
    .await;
    run.assert_ok();
    // The layout holds every manifest its index names: skopeo can copy all of it.
    let attestation = layout
        .join("blobs/sha256")
        .join(&fixture.attestation.digest[7..]);
    assert!(
        attestation.exists(),
        "{} missing from the layout",
        fixture.attestation.digest
    );
    tool(
        "skopeo",
        &[
            "copy",
            "--all",
            &format!("oci:{}:1-patched", layout.display()),
            &format!("oci:{}:copy", setup.path("copy").display()),
        ],
    );
    // Pushed to another repository, the index and everything it names are there.
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--push",
            "--tag",
            &setup.reference("test/elsewhere:1"),
            &setup.reference("test/multi:1"),
        ],
    )
    .await;
    run.assert_ok();
    let (status, ..) = setup
        .manifest("test/elsewhere", &fixture.attestation.digest)
        .await;
    assert_eq!(status, 200);
    skopeo_pull(&setup, "test/elsewhere:1", &setup.path("pulled"), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_that_cannot_be_planned_keeps_its_original_and_the_summary_says_why() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.publish();
    let amd64 = libfoo_image(Format::Oci, false);
    // No os-release, and libfoo 1.0-1 does not say which release this is.
    let old = libfoo(OLD, "arm64");
    let installed = Installed {
        spec: &old,
        modified_conffiles: Vec::new(),
    };
    let arm64 = image(Format::Oci, "arm64", &[dpkg_files(&[installed])]);
    let registry = setup.registry.url();
    let mut entries = Vec::new();
    for child in [&amd64, &arm64] {
        images::push_image(&registry, "test/half", &child.manifest.digest, child).await;
        entries.push(serde_json::json!({
            "mediaType": child.manifest.media_type, "digest": child.manifest.digest,
            "size": child.manifest.bytes.len(),
            "platform": {"architecture": child.architecture, "os": "linux"},
        }));
    }
    let index = images::Manifest::from_json(
        images::OCI_INDEX,
        &serde_json::json!({"schemaVersion": 2, "mediaType": images::OCI_INDEX, "manifests": entries}),
    );
    images::push_manifest(&registry, "test/half", "1", &index).await;

    let reference = setup.reference("test/half:1");
    let run = patchpull(
        &setup.config("run"),
        &["patch", "--insecure", "--push", &reference],
    )
    .await;
    run.assert_ok();
    // Per platform, what happened.
    let arm64_section = run
        .stdout
        .split_once(&format!("linux/arm64 {}\n", arm64.manifest.digest))
        .map(|(_, rest)| rest.lines().next().unwrap_or_default())
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(
        arm64_section.starts_with("  not patched, the original is kept: ")
            && arm64_section.contains("os-release"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("linux/amd64 {}\n", amd64.manifest.digest)),
        "{}",
        run.stdout
    );
    let digest = run.patched_digest();
    let (status, _, bytes, served) = setup.manifest("test/half", "1-patched").await;
    assert_eq!((status, served.as_str()), (200, digest.as_str()));
    let patched: Value = serde_json::from_slice(&bytes).unwrap();
    let kept = &patched["manifests"][1];
    assert_eq!(kept["digest"], arm64.manifest.digest.as_str(), "{patched}");
    assert_eq!(kept["size"], arm64.manifest.bytes.len(), "{patched}");
    assert_eq!(kept["annotations"]["io.patchpull.patched"], "false");
    assert_ne!(
        patched["manifests"][0]["digest"],
        amd64.manifest.digest.as_str()
    );
    // Everything the partial index names can be pulled.
    skopeo_pull(&setup, "test/half:1-patched", &setup.path("layout"), true);

    // `partial_index = "original"`: no partial index; the failure is the answer.
    let strict = setup.config("strict");
    let mut text = std::fs::read_to_string(&strict).unwrap();
    text.push_str("\n[patch]\npartial_index = \"original\"\n");
    std::fs::write(&strict, text).unwrap();
    let run = patchpull(&strict, &["patch", "--insecure", "--push", &reference]).await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("os-release"), "{}", run.stderr);
}
