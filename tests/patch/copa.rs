//! `patchpull patch` as copa users type it: copa's flags with copa's meanings, against a
//! real registry and a real signed apt archive on loopback.

use crate::common::images::{self, Format};
use crate::image::*;
use crate::support::*;

/// `-i -t --push -o -f --timeout --ignore-errors` mean what they mean to copa: `-t` is the
/// tag in the image's own repository, `-o` the VEX file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copa_flags_patch_push_and_write_the_vex() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEWER, "amd64"));
    setup.repo.publish();
    images::push_image(
        &setup.registry.url(),
        "test/copa",
        "1",
        &libfoo_image(Format::Oci, false),
    )
    .await;
    let vex = setup.path("copa.vex.json");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "-i",
            &setup.reference("test/copa:1"),
            "-t",
            "1-fixed",
            "-p",
            "-o",
            vex.to_str().unwrap(),
            "-f",
            "openvex",
            "--timeout",
            "2m",
            "--ignore-errors",
            "--min-severity",
            "HIGH",
        ],
    )
    .await;
    run.assert_ok();
    let digest = run.patched_digest();
    // No severity source: under a minimum the unknown severity is patched (the default
    // `patch.unknown_severity = "patch"`), and the summary says so.
    assert!(
        run.stdout
            .contains("severity unknown under the minimum HIGH: planned anyway")
            && run
                .stdout
                .contains("patch.unknown_severity = \"patch\"): libfoo"),
        "{}",
        run.stdout
    );
    let (status, _, _, pushed) = setup.manifest("test/copa", "1-fixed").await;
    assert_eq!((status, pushed), (200, digest), "-t is the tag");
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&vex).unwrap()).unwrap();
    assert_eq!(document["@context"], "https://openvex.dev/ns/v0.2.0");
    // Without -v, stderr has progress lines only.
    for line in run.stderr.lines() {
        assert!(line.starts_with("==> "), "not a progress line: {line:?}");
    }

    // copa's `--timeout`: a patch that cannot finish in time is an error that says so.
    let run = patchpull(
        &setup.config("timeout"),
        &[
            "patch",
            "--insecure",
            "--timeout",
            "1ms",
            &setup.reference("test/copa:1"),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("--timeout 1ms"), "{}", run.stderr);

    // `-s trivy` with a copa report is refused by name; `--format` other than openvex too.
    let copa_report = setup.path("copa-report.json");
    std::fs::write(
        &copa_report,
        r#"{"apiVersion":"v1alpha1","metadata":{"os":{"type":"debian","version":"12"},"config":{"arch":"amd64"}},"updates":[]}"#,
    )
    .unwrap();
    let run = patchpull(
        &setup.config("scanner"),
        &[
            "patch",
            "--insecure",
            "-r",
            copa_report.to_str().unwrap(),
            "-s",
            "trivy",
            &setup.reference("test/copa:1"),
        ],
    )
    .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--scanner native"), "{}", run.stderr);
    let run = patchpull(
        &setup.config("format"),
        &["patch", "-f", "csaf", &setup.reference("test/copa:1")],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
}

/// Re-patching `1-patched` gives `1-patched` again (as copa), not `1-patched-patched`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repatching_a_patched_tag_keeps_the_tag() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEWER, "amd64"));
    setup.repo.publish();
    images::push_image(
        &setup.registry.url(),
        "test/again",
        "1-patched",
        &libfoo_image(Format::Oci, false),
    )
    .await;
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--push",
            &setup.reference("test/again:1-patched"),
        ],
    )
    .await;
    run.assert_ok();
    let digest = run.patched_digest();
    let (status, _, _, pushed) = setup.manifest("test/again", "1-patched").await;
    assert_eq!((status, pushed), (200, digest));
    let (status, ..) = setup.manifest("test/again", "1-patched-patched").await;
    assert_eq!(status, 404);
}

/// `--inventory-only` lists the packages and patches nothing; `--log-file` takes the log
/// lines; a plain-HTTP registry reached without `--insecure` gets the hint to add it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_only_log_file_and_the_insecure_hint() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEWER, "amd64"));
    setup.repo.publish();
    images::push_image(
        &setup.registry.url(),
        "test/inv",
        "1",
        &libfoo_image(Format::Oci, false),
    )
    .await;
    let reference = setup.reference("test/inv:1");
    let log = setup.path("patch.log");
    let run = patchpull(
        &setup.config("inv"),
        &[
            "patch",
            "--insecure",
            "--inventory-only",
            "--log-file",
            log.to_str().unwrap(),
            &reference,
        ],
    )
    .await;
    run.assert_ok();
    assert!(run.stdout.contains("PACKAGE"), "{}", run.stdout);
    let row = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("libfoo "))
        .unwrap_or_else(|| panic!("no libfoo row:\n{}", run.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["libfoo", "1.0-1", "amd64"], "{row}");
    assert!(!run.stdout.contains("patched image"), "{}", run.stdout);
    assert!(log.exists(), "--log-file not created");
    let (status, ..) = setup.manifest("test/inv", "1-patched").await;
    assert_eq!(status, 404);

    let run = patchpull(&setup.config("https"), &["patch", &reference]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("add --insecure"),
        "no hint:\n{}",
        run.stderr
    );
    for internal in ["InvalidContentType", "upstream cli", "client error"] {
        assert!(
            !run.stderr.contains(internal),
            "{internal}:\n{}",
            run.stderr
        );
    }
}

/// `--push --sign-key`: the pushed image's cosign signature and attestation are pushed
/// beside it as `sha256-<hex>.sig`/`.att`, as `cosign verify` reads them; openssl checks
/// the signature from the registry's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_with_a_sign_key_pushes_the_signature_and_the_attestation() {
    use base64::Engine as _;
    if !tools() || !crate::common::require_tools(&["openssl"]) {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/signed", "1", &original).await;
    let key = setup.path("cosign.key");
    let public = setup.path("cosign.pub");
    tool(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key.to_str().unwrap(),
        ],
    );
    tool(
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    let config = setup.config("run");
    // Without --push there is nothing to sign: a usage error.
    let run = patchpull(
        &config,
        &[
            "patch",
            "--sign-key",
            key.to_str().unwrap(),
            &setup.reference("test/signed:1"),
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);

    let run = patchpull(
        &config,
        &[
            "patch",
            "--insecure",
            "--push",
            "--sign-key",
            key.to_str().unwrap(),
            &setup.reference("test/signed:1"),
        ],
    )
    .await;
    run.assert_ok();
    let digest = run.patched_digest();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let name = setup.reference("test/signed");
    for suffix in ["sig", "att"] {
        assert!(
            run.stdout
                .contains(&format!("pushed {name}:sha256-{hex}.{suffix}")),
            "{}",
            run.stdout
        );
    }
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_body: String = key_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!run.stdout.contains(&key_body) && !run.stderr.contains(&key_body));

    // The signature, from the registry: the payload names the pushed digest and name, and
    // openssl verifies it with the public key.
    let (status, _, sig, _) = setup
        .manifest("test/signed", &format!("sha256-{hex}.sig"))
        .await;
    assert_eq!(status, 200);
    let sig: serde_json::Value = serde_json::from_slice(&sig).unwrap();
    assert_eq!(sig["subject"]["digest"], digest.as_str());
    let layer = &sig["layers"][0];
    let payload = setup
        .blob("test/signed", layer["digest"].as_str().unwrap())
        .await;
    let doc: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        doc["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert_eq!(doc["critical"]["identity"]["docker-reference"], name);
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let (message, signature) = (setup.path("payload"), setup.path("payload.sig"));
    std::fs::write(&message, &payload).unwrap();
    std::fs::write(&signature, &der).unwrap();
    tool(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            public.to_str().unwrap(),
            "-signature",
            signature.to_str().unwrap(),
            message.to_str().unwrap(),
        ],
    );

    // The attestation names the original and the package change.
    let (status, _, att, _) = setup
        .manifest("test/signed", &format!("sha256-{hex}.att"))
        .await;
    assert_eq!(status, 200);
    let att: serde_json::Value = serde_json::from_slice(&att).unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(
        &setup
            .blob("test/signed", att["layers"][0]["digest"].as_str().unwrap())
            .await,
    )
    .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(statement["subject"][0]["digest"]["sha256"], hex);
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["original"]["digest"],
        original.manifest.digest.as_str()
    );
    assert_eq!(predicate["platforms"][0]["packages"][0]["to"], NEW);
}
