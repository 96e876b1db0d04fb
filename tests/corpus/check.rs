//! One image of the corpus, end to end: its root (shared), pushed as one layer to a loopback
//! registry; then at once: patched on pull and unpacked, patched again by a second patchpull
//! (another store, another clock), and apt's reference upgrade (shared); then every check,
//! all reported together, as a row of the matrix and a report in `corpus-results/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::build::{self, corpus_dir, expected_root, image_root, results_dir, stanzas};
use crate::common::images::{self, Format};
use crate::common::registry::Registry;
use crate::compare::{differences, EXCLUDED};
use crate::matrix::ImageSpec;
use crate::pull::{clock_shift, pull_manifest_later, pull_whole};
use crate::rootfs::{archive_tests_enabled, in_root_within, paragraphs};

/// The repository the corpus' images are pushed to; the tag is the image's name.
const REPOSITORY: &str = "corpus";

/// What libfaketime takes in the python image's maintainer scripts (the package installs
/// it at that path), for the second patch.
const SCRIPT_CLOCK: &str =
    "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 FAKETIME=+40d";

/// What the tests run besides the ones every real-root test needs.
const TOOLS: &[&str] = &[
    "curl", "xz", "zstd", "gpg", "timeout", "faketime", "cp", "date",
];

/// `CORPUS`: unset (or `fast`) the fast images only, `full` every image, `rest` those that
/// are not fast (what scripts/test.sh runs after `cargo test` ran the fast ones).
pub fn selected(spec: &ImageSpec) -> bool {
    match std::env::var("CORPUS").as_deref() {
        Ok("full") => true,
        Ok("rest") => !spec.fast,
        _ => spec.fast,
    }
}

/// Starts debootstrapping every suite the run needs, once, when the run is the whole matrix
/// (`CORPUS=full` or `rest` and no test name filter among the arguments): the harness runs
/// the tests in name order, so jammy's, noble's and trixie's roots would otherwise be made
/// only at the end, one after the other. With a filter it is not done: a root no test waits
/// for would leave its debootstrap running after the tests.
fn prefetch_suites() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let whole = matches!(std::env::var("CORPUS").as_deref(), Ok("full" | "rest"))
            && !std::env::args().skip(1).any(|a| !a.starts_with('-'));
        if !whole {
            return;
        }
        let suites: std::collections::BTreeSet<_> = crate::matrix::ALL
            .iter()
            .filter(|s| selected(s))
            .map(|s| s.variant.suite)
            .collect();
        for suite in suites {
            // A failure is kept by `shared` and reported by the tests that need the root.
            std::thread::spawn(move || {
                let _ = std::panic::catch_unwind(|| build::base_root(suite));
            });
        }
    });
}

/// Installed package -> version, from `status` or, in a distroless root, `status.d`.
fn versions(root: &Path) -> BTreeMap<String, String> {
    let mut text = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(root.join("var/lib/dpkg/status.d")) {
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().ends_with(".md5sums") {
                text.push_str("\n\n");
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    paragraphs(&text)
        .into_iter()
        .filter(|p| p.get("Status").is_none_or(|s| s.ends_with(" installed")))
        .map(|p| {
            (
                p["Package"].clone(),
                p.get("Version").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// package -> (old, new) where `after` differs from `before`.
fn upgrades(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> BTreeMap<String, (String, String)> {
    after
        .iter()
        .filter(|(name, version)| before.get(*name) != Some(version))
        .map(|(name, version)| {
            let old = before.get(name).cloned().unwrap_or_else(|| "(new)".into());
            (name.clone(), (old, version.clone()))
        })
        .collect()
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string()
}

/// `dpkg --audit` and `dpkg --verify` in the root: what each printed, empty when clean.
fn dpkg_checks(root: &Path) -> (String, String) {
    let audit = in_root_within(300, root, &["dpkg", "--audit"]);
    let verify = in_root_within(600, root, &["dpkg", "--verify"]);
    let text = |out: &std::process::Output| {
        let text = output_text(out);
        if out.status.success() || !text.is_empty() {
            text
        } else {
            format!("failed with {}", out.status)
        }
    };
    (text(&audit), text(&verify))
}

/// What dpkg cannot check of a distroless root: that every stanza kept its Status and every
/// file its `.md5sums` names has that md5.
fn distroless_checks(root: &Path) -> (String, String) {
    use md5::{Digest, Md5};
    let dir = root.join("var/lib/dpkg/status.d");
    let mut audit = Vec::new();
    let mut verify = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if let Some(package) = name.strip_suffix(".md5sums") {
            for line in text.lines() {
                let Some((sum, path)) = line.split_once("  ") else {
                    verify.push(format!("{package}: bad md5sums line {line:?}"));
                    continue;
                };
                match std::fs::read(root.join(path)) {
                    Ok(bytes) if hex::encode(Md5::digest(&bytes)) == sum => {}
                    Ok(_) => verify.push(format!("{package}: /{path} md5 differs")),
                    Err(_) => verify.push(format!("{package}: /{path} missing")),
                }
            }
        } else {
            for (package, stanza) in stanzas(&text) {
                if !stanza.contains("\nStatus: install ok installed\n") {
                    audit.push(format!(
                        "status.d/{name}: {package} has no Status: install ok installed"
                    ));
                }
            }
        }
    }
    (audit.join("\n"), verify.join("\n"))
}

/// The CA bundle of both trees: `same`, `absent`, or how they differ.
fn ca_bundle(apt: &Path, patched: &Path) -> String {
    const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
    let certs = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    match (
        std::fs::read(apt.join(BUNDLE)),
        std::fs::read(patched.join(BUNDLE)),
    ) {
        (Err(_), Err(_)) => "absent".into(),
        (Ok(a), Ok(b)) if a == b => "same".into(),
        (Ok(a), Ok(b)) => format!(
            "differs: apt's has {} certificates, patchpull's {}",
            certs(&a),
            certs(&b)
        ),
        (Ok(_), Err(_)) => "missing from patchpull's tree".into(),
        (Err(_), Ok(_)) => "only in patchpull's tree".into(),
    }
}

/// Runs `spec.programs` in the patched root: the failures, with their output.
fn programs(spec: &ImageSpec, root: &Path) -> Vec<String> {
    spec.programs
        .iter()
        .filter_map(|argv| {
            let out = in_root_within(120, root, argv);
            (!out.status.success()).then(|| {
                format!(
                    "`{}` failed ({}): {}",
                    argv.join(" "),
                    out.status,
                    output_text(&out)
                )
            })
        })
        .collect()
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// Joins a scoped thread, turning its panic into an error message.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> Result<T, String> {
    handle.join().map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Checks `spec` end to end; panics with every failure at once.
pub fn check_image(spec: &'static ImageSpec) {
    if !selected(spec) {
        eprintln!(
            "skipped: {} is in the full corpus (scripts/corpus.sh, CORPUS=full)",
            spec.name
        );
        return;
    }
    if !archive_tests_enabled("the corpus", TOOLS) {
        return;
    }
    prefetch_suites();
    let started = Instant::now();
    let suite = spec.variant.suite;
    let mut times: BTreeMap<&str, f64> = BTreeMap::new();
    let work = corpus_dir().join("images").join(spec.name);
    std::fs::create_dir_all(&work).unwrap();

    let since = Instant::now();
    let (root, built) = image_root(spec);
    times.insert("root (shared build)", seconds(built));
    times.insert("root (waited)", seconds(since.elapsed()));
    let since = Instant::now();
    let (layer, diff_id) = crate::rootfs::root_layer(&root, &work);
    let image = images::assemble(Format::Oci, "amd64", vec![(layer, diff_id)], &["/bin/sh"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = runtime.block_on(Registry::start());
    runtime.block_on(images::push_image(
        &registry.url(),
        REPOSITORY,
        spec.name,
        &image,
    ));
    let original_layers = image.layers.len();
    drop(image);
    times.insert("layer and push", seconds(since.elapsed()));

    let url = registry.url();
    let shift = clock_shift(suite);
    let (first, second, expected) = std::thread::scope(|s| {
        let first = s.spawn(|| {
            let since = Instant::now();
            let pulled = pull_whole(suite, &url, REPOSITORY, spec.name, &work.join("first"));
            (pulled, since.elapsed())
        });
        let second = s.spawn(|| {
            let since = Instant::now();
            let script_env = spec.fake_script_clock.then_some(SCRIPT_CLOCK);
            let pulled = pull_manifest_later(
                suite,
                &url,
                REPOSITORY,
                spec.name,
                &work.join("second"),
                &shift,
                script_env,
            );
            (pulled, since.elapsed())
        });
        let expected = s.spawn(|| {
            let since = Instant::now();
            let (dir, built) = expected_root(spec);
            (dir, built, since.elapsed())
        });
        (joined(first), joined(second), joined(expected))
    });
    drop(registry);

    let mut failures: Vec<String> = Vec::new();
    let mut report: Vec<String> = Vec::new();
    let mut row = json!({
        "image": spec.name,
        "suite": suite.codename(),
        "distroless": spec.distroless,
        "fast": spec.fast,
        "packages": spec.variant.packages,
        "second_clock": shift,
        "order": crate::matrix::ALL.iter().position(|s| std::ptr::eq(*s, spec)),
    });
    let first = match first {
        Ok((pulled, took)) => {
            times.insert("patch on pull, skopeo, umoci", seconds(took));
            Some(pulled)
        }
        Err(e) => {
            failures.push(format!("the pull through patchpull failed: {e}"));
            None
        }
    };
    match &second {
        Ok((_, took)) => {
            times.insert("second patch (other store, clock)", seconds(*took));
        }
        Err(e) => failures.push(format!("the second pull through patchpull failed: {e}")),
    }
    let expected = match expected {
        Ok((dir, built, waited)) => {
            times.insert("apt reference (shared build)", seconds(built));
            times.insert("apt reference (waited)", seconds(waited));
            Some(dir)
        }
        Err(e) => {
            failures.push(format!("apt's reference upgrade failed: {e}"));
            None
        }
    };

    if let Some(first) = &first {
        if first.layers != original_layers + 1 {
            failures.push(format!(
                "the pull got {} layers, the original has {original_layers}: not patched\n{}",
                first.layers, first.log
            ));
        }
    }
    let patched_root = first.as_ref().and_then(|p| p.root.clone());
    if let (Some(apt), Some(patched)) = (&expected, &patched_root) {
        let before = versions(&root);
        let by_apt = upgrades(&before, &versions(apt));
        let by_patchpull = upgrades(&before, &versions(patched));
        row["fixed_by_apt"] = json!(by_apt.len());
        row["fixed_by_patchpull"] = json!(by_patchpull.len());
        report.push(format!(
            "upgraded by apt ({}): {}",
            by_apt.len(),
            by_apt
                .iter()
                .map(|(n, (o, v))| format!("{n} {o} -> {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if by_apt != by_patchpull {
            failures.push(format!(
                "patchpull upgraded other packages than apt: apt {by_apt:?}, patchpull {by_patchpull:?}"
            ));
        }

        let since = Instant::now();
        let diffs = differences(apt, patched);
        times.insert("tree comparison", seconds(since.elapsed()));
        row["tree_differences"] = json!(diffs.len());
        if !diffs.is_empty() {
            failures.push(format!(
                "the patched tree differs from apt's in {} path(s) (left out: {}):\n{}",
                diffs.len(),
                EXCLUDED
                    .iter()
                    .map(|(p, _)| *p)
                    .collect::<Vec<_>>()
                    .join(" "),
                diffs.join("\n")
            ));
        }

        let since = Instant::now();
        let checks = |root: &Path| {
            if spec.distroless {
                distroless_checks(root)
            } else {
                dpkg_checks(root)
            }
        };
        let (audit, verify) = checks(patched);
        // dpkg itself is not always clean: it reports the files path-exclude kept out as
        // missing. What patchpull's root must not have is what apt's has not.
        let (_, apt_verify) = checks(apt);
        times.insert("audit and verify", seconds(since.elapsed()));
        row["audit"] = json!(if audit.is_empty() {
            "clean"
        } else {
            "not clean"
        });
        let lines = |text: &str| text.lines().count();
        row["verify"] = json!(match (verify.is_empty(), verify == apt_verify) {
            (true, _) => "clean".to_string(),
            (false, true) => format!("as apt's: {} line(s)", lines(&verify)),
            (false, false) => format!("{} line(s), apt's {}", lines(&verify), lines(&apt_verify)),
        });
        let (what_audit, what_verify) = if spec.distroless {
            ("status.d", "the md5sums of status.d")
        } else {
            ("dpkg --audit", "dpkg --verify")
        };
        if !audit.is_empty() {
            failures.push(format!("{what_audit} in the patched root:\n{audit}"));
        }
        if !verify.is_empty() && verify != apt_verify {
            failures.push(format!(
                "{what_verify} in the patched root:\n{verify}\n(in apt's tree:\n{apt_verify})"
            ));
        } else if !verify.is_empty() {
            report.push(format!(
                "{what_verify}, the same in apt's tree and patchpull's:\n{verify}"
            ));
        }

        let bundle = ca_bundle(apt, patched);
        if bundle != "same" && bundle != "absent" {
            failures.push(format!("/etc/ssl/certs/ca-certificates.crt: {bundle}"));
        }
        row["ca_bundle"] = json!(bundle);

        let broken = programs(spec, patched);
        row["programs"] = json!(if broken.is_empty() {
            "run".to_string()
        } else {
            format!("{} of {} fail", broken.len(), spec.programs.len())
        });
        failures.extend(broken);
    }

    if let (Some(first), Ok((second, _))) = (&first, &second) {
        let stable =
            first.manifest_digest == second.manifest_digest && first.top_layer == second.top_layer;
        row["digest_stable"] = json!(stable);
        row["manifest_digest"] = json!(first.manifest_digest);
        if !stable {
            failures.push(format!(
                "patched twice (another store, clock {shift}{}), two images: manifest {} vs {}, patch layer {} vs {}",
                if spec.fake_script_clock { ", scripts' clock +40d" } else { "" },
                first.manifest_digest,
                second.manifest_digest,
                first.top_layer,
                second.top_layer
            ));
        }
    }

    times.insert("total", seconds(started.elapsed()));
    row["seconds"] = json!(times);
    row["failures"] = json!(failures.len());
    let results = results_dir();
    std::fs::write(
        results.join(format!("{}.json", spec.name)),
        serde_json::to_string_pretty(&row).unwrap(),
    )
    .unwrap();
    report.extend(failures.iter().cloned());
    std::fs::write(
        results.join(format!("{}.txt", spec.name)),
        report.join("\n\n"),
    )
    .unwrap();
    eprintln!("corpus: {}: {row}", spec.name);
    build::release(spec, selected);
    if std::env::var_os("CORPUS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    assert!(
        failures.is_empty(),
        "{}: {} failure(s) (report in {}):\n\n{}",
        spec.name,
        failures.len(),
        results.join(format!("{}.txt", spec.name)).display(),
        failures.join("\n\n")
    );
}
