//! Cached plans answer only for what they were made from: the layers read, the scanner's
//! settings, the plan options.

use serde_json::Value;

use crate::common::images::{self, Format};
use crate::image::*;
use crate::support::*;

/// The fixes a Trivy-format `scan` reports: (package, installed version, fixed version).
fn scan_findings(run: &Run) -> Vec<(String, String, String)> {
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    report["Results"][0]["Vulnerabilities"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", run.stdout))
        .iter()
        .map(|v| {
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (
                text("PkgName"),
                text("InstalledVersion"),
                text("FixedVersion"),
            )
        })
        .collect()
}

/// Plans are kept by the layers they were read from, not by the manifest's digest: a
/// patched image patched again is planned from its base layers under its own manifest,
/// and that plan must answer neither a `scan` of the patched image (which has the new
/// versions) nor, the other way round, a re-patch from a `scan`'s plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_and_repatch_of_a_patched_image_share_no_plan() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/rescan", "1", &original).await;
    let config = setup.config("run");
    let patched_ref = setup.reference("test/rescan:1-patched");
    let scan = ["scan", "--insecure", "--format", "trivy", &patched_ref];
    patchpull(
        &config,
        &[
            "patch",
            "--insecure",
            "--push",
            &setup.reference("test/rescan:1"),
        ],
    )
    .await
    .assert_ok();

    // The patched image patched again (nothing newer: the same patch), then scanned.
    patchpull(&config, &["patch", "--insecure", &patched_ref])
        .await
        .assert_ok();
    let run = patchpull(&config, &scan).await;
    run.assert_ok();
    assert!(
        run.stdout.contains(&format!("\"Version\": \"{NEW}\"")),
        "{}",
        run.stdout
    );
    assert_eq!(
        scan_findings(&run),
        vec![],
        "the patched image has every fix"
    );

    // A newer fix: the scan of the patched image plans from its versions...
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    setup.repo.add(&libfoo(NEWER, "amd64"));
    setup.repo.publish();
    let run = patchpull(&config, &scan).await;
    run.assert_ok();
    assert_eq!(
        scan_findings(&run),
        vec![("libfoo".to_owned(), NEW.to_owned(), NEWER.to_owned())]
    );
    // ... and a re-patch from its base layers', which have the original's.
    let run = patchpull(&config, &["patch", "--insecure", &patched_ref]).await;
    run.assert_ok();
    let line = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("libfoo"))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["libfoo", OLD, NEWER, "2", NEWER], "{line}");
}

/// The built-in scanner's settings are part of a cached plan's key: a scan without
/// changelogs (no CVE ids) does not answer a later scan with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_plans_are_cached_per_scanner_settings() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/settings", "1", &original).await;
    let config = setup.config("run");
    let without = setup.path("run/no-changelogs.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("changelogs = true"), "{text}");
    std::fs::write(
        &without,
        text.replace("changelogs = true", "changelogs = false"),
    )
    .unwrap();
    let reference = setup.reference("test/settings:1");
    let scan = ["scan", "--insecure", &reference];

    let run = patchpull(&without, &scan).await;
    run.assert_ok();
    assert!(!run.stdout.contains("CVE-2024-0001"), "{}", run.stdout);
    let run = patchpull(&config, &scan).await;
    run.assert_ok();
    let line = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("libfoo"))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(line.contains("CVE-2024-0001"), "{line}");
}
