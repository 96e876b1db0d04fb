//! The operator's view, as an operator sees it: a real `patchpull serve` in front of a real
//! registry, an image patched from a signed archive on loopback, the admin API's job (name,
//! plan, engine, stage timings), the job list after a restart, admin actions in the log, the
//! status page `/patchpull/ui` rendered by headless Chromium and compared row by row with
//! the admin API, and the Grafana dashboard's queries against the metrics `/metrics` has.

#![allow(clippy::unwrap_used)]

mod common;
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;
#[allow(dead_code)]
#[path = "pipeline/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::apt::{AptRepo, DebSpec};
use common::images::{self, Format};
use common::registry::Registry;
use common::serve::ServeProcess;
use common::ProxyConfig;
use serde_json::Value;

const TOKEN: &str = "status-page-token";
const ADMIN_NAME: &str = "ops-oncall";

fn serve_config(registry: &str, scan: Vec<String>) -> ProxyConfig {
    let mut config = ProxyConfig::new(&[("local", registry, true)]);
    config.log_level = "info".into();
    config.patch = support::WAIT.iter().map(|l| l.to_string()).collect();
    config.patch.push(format!("admin_token = {TOKEN:?}"));
    config
        .patch
        .push(format!("admin_token_name = {ADMIN_NAME:?}"));
    config.scan = scan;
    config
}

async fn admin_get(client: &reqwest::Client, serve: &ServeProcess, path: &str) -> Value {
    let r = client
        .get(format!("{}/patchpull/v1/{path}", serve.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    common::json(r).await
}

/// Waits until no job of the list is running; returns the list.
async fn settled(client: &reqwest::Client, serve: &ServeProcess) -> Vec<Value> {
    for _ in 0..300 {
        let list = admin_get(client, serve, "images").await;
        let jobs = list["images"].as_array().unwrap().clone();
        if jobs.iter().all(|j| j["status"] != "running") {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("jobs still running after 60 s");
}

/// `chromium --headless` with a profile of its own under `dir`, at most two minutes.
fn chromium(dir: &Path, args: &[&str]) -> String {
    let profile = dir.join("chromium-profile");
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .env("HOME", dir);
    let out = common::apt::bounded(&mut command, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<tr>` of the images table whose original digest is `original`.
fn row<'a>(dom: &'a str, original: &str) -> &'a str {
    let table = &dom[dom.find("id=\"images\"").expect("the images table")..];
    let start = table
        .find(&format!("<tr data-original=\"{original}\""))
        .unwrap_or_else(|| panic!("no row for {original} in {table}"));
    let rest = &table[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_what_the_admin_api_says() {
    if !support::tools(false) || !common::require_tools(&["chromium"]) {
        return;
    }
    // The archive has libfoo's fix, and a libbar "fix" whose package tries to write
    // outside the image: its patch fails.
    let repo = AptRepo::new(&["amd64"]);
    repo.add(&image::libfoo(image::NEW, "amd64"));
    let libbar = |version: &str| {
        DebSpec::new("libbar", version, "amd64")
            .file("usr/share/libbar/version", version.as_bytes(), 0o644)
            .changelog(&image::changelog("libbar", version))
    };
    repo.add_hostile(&libbar(image::NEW), "../../etc/passwd");
    repo.publish();
    let env = support::Env {
        registry: Registry::start().await,
        repo,
        dir: tempfile::Builder::new().prefix("pp-ui-").tempdir().unwrap(),
    };
    env.push("team/app", "1", &image::libfoo_image(Format::Oci, false))
        .await;
    let old_libbar = libbar(image::OLD);
    let installed = image::Installed {
        spec: &old_libbar,
        modified_conffiles: Vec::new(),
    };
    let broken = image::image(
        Format::Oci,
        "amd64",
        &[image::base_files(false), image::dpkg_files(&[installed])],
    );
    env.push("team/broken", "2", &broken).await;
    images::push_image(
        &env.registry.url(),
        "team/static",
        "1",
        &images::single(Format::Oci, "status"),
    )
    .await;
    let config = serve_config(&env.registry.url(), env.scan_lines(&env.repo.url()));
    let dir = env.path("serve");
    let toml = config.to_toml(&dir.join("store"));
    let serve = ServeProcess::start(&dir, &toml, &[], &[]);
    let client = common::client();

    // A pull patches libfoo; a pre-warm finds nothing to patch in a static image.
    let pulled = client
        .get(format!("{}/v2/team/app/manifests/1", serve.url))
        .header("accept", images::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);
    let patched_digest = common::header(&pulled, "docker-content-digest");
    let r = client
        .post(format!("{}/patchpull/v1/patch", serve.url))
        .bearer_auth(TOKEN)
        .body(r#"{"image": "local/team/static:1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let broken = client
        .get(format!("{}/v2/team/broken/manifests/2", serve.url))
        .header("accept", images::ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 200, "fail-open");
    let jobs = settled(&client, &serve).await;
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let failed = jobs.iter().find(|j| j["status"] == "failed").unwrap();
    assert_eq!(failed["image"], "local/team/broken:2", "{failed}");

    // The admin API names the image and gives its plan, engine and timings.
    let job = jobs.iter().find(|j| j["status"] == "patched").unwrap();
    assert_eq!(job["image"], "local/team/app:1", "{job}");
    assert_eq!(job["patched"], patched_digest.as_str());
    assert_eq!(job["engine"], "native", "{job}");
    assert_eq!(
        job["plan"],
        serde_json::json!([{"platform": "linux/amd64", "name": "libfoo", "from": image::OLD,
            "to": image::NEW, "fixes": ["CVE-2024-0001"]}]),
        "{job}"
    );
    for stage in ["queued_seconds", "patch_seconds", "store_seconds"] {
        assert!(job["stages"][stage].as_f64().is_some(), "{stage}: {job}");
    }
    let original = job["original"].as_str().unwrap().to_owned();
    let one = admin_get(&client, &serve, &format!("images/{original}")).await;
    assert_eq!(&one, job);
    let by_patched = admin_get(&client, &serve, &format!("images/{patched_digest}")).await;
    assert_eq!(&by_patched, job);
    let unknown = client
        .get(format!(
            "{}/patchpull/v1/images/sha256:{}",
            serve.url,
            "0".repeat(64)
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // The pre-warm is logged with who did it.
    let log = serve.log();
    let line = log
        .lines()
        .find(|l| l.contains("pre-warm"))
        .unwrap_or_else(|| panic!("no pre-warm line in\n{log}"));
    assert!(line.contains(ADMIN_NAME), "{line}");
    assert!(line.contains("local/team/static:1"), "{line}");
    assert!(
        log.lines()
            .any(|l| l.contains("patched") && l.contains("local/team/app:1")),
        "the patch is logged by image name:\n{log}"
    );

    // The page asks a browser for the token and refuses without it.
    let refused = client
        .get(format!("{}/patchpull/ui", serve.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(common::header(&refused, "www-authenticate").starts_with("Basic "));

    // Headless Chromium renders the page; each row says what the admin API says.
    let page = format!(
        "http://{ADMIN_NAME}:{TOKEN}@{}/patchpull/ui",
        serve.authority()
    );
    let shots = env.path("chromium");
    std::fs::create_dir_all(&shots).unwrap();
    let dom = chromium(&shots, &["--dump-dom", &page]);
    assert!(dom.contains("id=\"count-patched\">1 patched<"), "{dom}");
    assert!(dom.contains("id=\"count-unchanged\">1 unchanged<"), "{dom}");
    assert!(dom.contains("id=\"count-failed\">1 failed<"), "{dom}");
    assert!(dom.contains("id=\"no-running\""), "{dom}");
    for job in &jobs {
        let row = row(&dom, job["original"].as_str().unwrap());
        assert!(
            row.contains(&format!(
                "data-status=\"{}\"",
                job["status"].as_str().unwrap()
            )),
            "{row}"
        );
        if let Some(image) = job["image"].as_str() {
            assert!(row.contains(image), "{row}");
        }
        for package in job["plan"].as_array().into_iter().flatten() {
            for field in ["name", "from", "to"] {
                assert!(row.contains(package[field].as_str().unwrap()), "{row}");
            }
            for id in package["fixes"].as_array().unwrap() {
                assert!(row.contains(id.as_str().unwrap()), "{row}");
            }
        }
        if let Some(patched) = job["patched"].as_str() {
            assert!(row.contains(&format!("title=\"{patched}\"")), "{row}");
        }
        if let Some(detail) = job["detail"].as_str() {
            let shown = detail
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(row.contains(&shown), "{detail}: {row}");
        }
        if let Some(engine) = job["engine"].as_str() {
            assert!(row.contains(engine), "{row}");
        }
    }
    assert!(dom.contains("data-component=\"sandbox\""), "{dom}");
    let upstream = &dom[dom
        .find("data-upstream=\"local\"")
        .expect("the upstream row")..];
    assert!(
        upstream[..upstream.find("</tr>").unwrap()].contains("answering"),
        "{upstream}"
    );

    let screenshot = shots.join("status.png");
    chromium(
        &shots,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,900",
            &page,
        ],
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    eprintln!("screenshot: {}", screenshot.display());
    if let Ok(to) = std::env::var("PATCHPULL_STATUS_SCREENSHOT") {
        std::fs::copy(&screenshot, to).unwrap();
    }

    // After a restart the job list is read back from the store.
    drop(serve);
    let serve = ServeProcess::start(&dir, &toml, &[], &[]);
    let after = admin_get(&client, &serve, "images").await;
    let again = after["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["original"] == original.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the patched job is gone after a restart: {after}"));
    for field in ["image", "patched", "engine", "plan", "stages", "status"] {
        assert_eq!(again[field], job[field], "{field}");
    }
    assert_eq!(after["images"].as_array().unwrap().len(), 3, "{after}");
}

/// The metric names a PromQL expression mentions.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("patchpull_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names `/metrics` exposes, from its `# TYPE` lines (so a family with no
/// sample yet counts too).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "info" => {
                names.insert(format!("{name}_info"));
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_metrics_patchpull_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/patchpull.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut referenced = BTreeSet::new();
    for panel in panels {
        assert!(panel["type"].as_str().is_some(), "{panel}");
        assert!(panel["title"].as_str().is_some(), "{panel}");
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].as_u64().is_some(), "{panel}");
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} queries no patchpull metric");
            referenced.extend(names);
        }
    }

    let dir = tempfile::Builder::new()
        .prefix("pp-grafana-")
        .tempdir()
        .unwrap();
    // No upstream is asked: the metrics are there from the start.
    let config = ProxyConfig::new(&[("local", "http://127.0.0.1:9", true)]);
    let toml = config.to_toml(&dir.path().join("store"));
    let serve = ServeProcess::start(dir.path(), &toml, &[], &[]);
    let text = common::client()
        .get(format!("{}/metrics", serve.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = exported(&text);
    let missing: Vec<&String> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which /metrics does not have:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "patchpull_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("patchpull_store_max_bytes "), "{text}");
    assert!(text.contains("patchpull_store_used_bytes "), "{text}");
}
