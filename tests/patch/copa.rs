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
