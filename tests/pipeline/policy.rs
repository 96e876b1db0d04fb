//! What a tag pull gets as things change: the tag moves upstream, the archive fails and
//! recovers, the policy is fail_closed or background, there is nothing to patch.

use std::time::Duration;

use tempfile::TempDir;

use crate::common::apt::AptRepo;
use crate::common::fault::{Behaviour, FaultServer};
use crate::common::images::{self, Format};
use crate::image::*;
use crate::support::*;

/// The standard image with one more layer, so it is another image with the same old libfoo.
fn second_generation() -> images::Image {
    generation(b"2\n")
}

/// The standard image with a layer holding `/etc/generation` = `text`.
fn generation(text: &[u8]) -> images::Image {
    let old = libfoo(OLD, "amd64");
    let installed = Installed {
        spec: &old,
        modified_conffiles: Vec::new(),
    };
    image(
        Format::Oci,
        "amd64",
        &[
            base_files(false),
            dpkg_files(&[installed]),
            vec![file("etc/generation", text, 0o644)],
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_gets_a_patch_of_the_new_original() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let first = libfoo_image(Format::Oci, false);
        env.push("test/moving", "1", &first).await;
        let proxy = env.proxy("local", WAIT, |c| c.tag_ttl = "1h".into()).await;
        let answer = get(&proxy, "local/test/moving", "1").await;
        let patched_first = answer.ok().to_owned();
        assert_patched_from(&answer.json(), &first);

        let second = second_generation();
        env.push("test/moving", "1", &second).await;
        proxy.clock.advance(Duration::from_secs(2 * 3600));
        let answer = get(&proxy, "local/test/moving", "1").await;
        assert_ne!(answer.ok(), patched_first, "the tag moved upstream");
        assert_ne!(
            answer.digest, second.manifest.digest,
            "and is patched again"
        );
        assert_patched_from(&answer.json(), &second);
        let original = get(&proxy, "local/test/moving", "1-original").await;
        assert_eq!(original.ok(), second.manifest.digest);
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("patched")), 2.0, "{text}");
    })
    .await;
}

/// The archive behind a fault server whose `.deb` downloads answer 500.
async fn failing_archive(env: &Env) -> (FaultServer, String, String) {
    let fault = FaultServer::start_in_front_of(&env.repo.server_url()).await;
    let deb = AptRepo::url_path(&libfoo(NEW, "amd64"));
    fault.set(&deb, Behaviour::ServerError);
    let url = format!("{}/debian-security", fault.url());
    (fault, url, deb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_patch_serves_the_original_and_is_retried_after_recovery() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("test/flaky", "1", &original).await;
        let (fault, archive, deb) = failing_archive(&env).await;
        let patch = [
            WAIT,
            &[
                "retry_failed_after = \"1h\"",
                "admin_token = \"admin-secret\"",
            ],
        ]
        .concat();
        let proxy = env.proxy_via("local", &archive, &patch, |_| {}).await;

        let answer = get(&proxy, "local/test/flaky", "1").await;
        assert_eq!(answer.ok(), original.manifest.digest, "fail-open");
        assert_eq!(answer.bytes, original.manifest.bytes);
        assert!(fault.hits("GET", &deb) >= 1, "the package was asked for");
        let text = metrics(&proxy).await;
        assert!(metric(&text, &jobs("failed")) >= 1.0, "{text}");
        assert_eq!(metric(&text, &jobs("patched")), 0.0, "{text}");
        assert_eq!(fallback_pulls(&text, None), 1.0, "{text}");
        // The admin API shows the failure and why.
        let listed: serde_json::Value = serde_json::from_slice(
            &reqwest::Client::new()
                .get(format!("http://{}/patchpull/v1/images", proxy.authority()))
                .bearer_auth("admin-secret")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let job = &listed["images"][0];
        assert_eq!(job["status"], "failed", "{listed}");
        assert_eq!(
            job["original"],
            original.manifest.digest.as_str(),
            "{listed}"
        );
        assert!(
            job["detail"].as_str().unwrap_or_default().contains("500"),
            "{listed}"
        );

        fault.clear_all();
        proxy.clock.advance(Duration::from_secs(2 * 3600));
        let answer = get(&proxy, "local/test/flaky", "1").await;
        assert_ne!(
            answer.ok(),
            original.manifest.digest,
            "patched after recovery"
        );
        assert_patched_from(&answer.json(), &original);
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("patched")), 1.0, "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_and_containerd_fails_the_pull() {
    if !tools(true) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("library/pp-closed", "1", &original).await;
        let (_fault, archive, _) = failing_archive(&env).await;
        let patch = ["mode = \"fail_closed\"", "wait_timeout = \"60s\""];
        let proxy = env.proxy_via("docker.io", &archive, &patch, |_| {}).await;

        let answer = get(&proxy, "library/pp-closed", "1").await;
        assert_eq!(
            answer.status,
            503,
            "{}",
            String::from_utf8_lossy(&answer.bytes)
        );
        let body = answer.json();
        let code = body["errors"][0]["code"].as_str().unwrap_or_default();
        assert!(
            crate::common::ERROR_CODES.contains(&code),
            "a distribution-spec error body: {body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("fail_closed"),
            "{body}"
        );
        assert!(answer.digest.is_empty(), "no manifest is named");
        assert!(
            answer.retry_after.parse::<u64>().is_ok(),
            "Retry-After says when to come back: {answer:?}"
        );
        // The untouched image stays reachable on purpose.
        let original_answer = get(&proxy, "library/pp-closed", "1-original").await;
        assert_eq!(original_answer.ok(), original.manifest.digest);

        let containerd = Containerd::start().await;
        let work = TempDir::new().unwrap();
        // The proxy is the server and the only host (containerd 1.6 wants a `host` table),
        // so there is nowhere to fall back to.
        let hosts = hosts_dir(
            work.path(),
            &format!(
                "server = \"http://{0}\"\n\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                proxy.authority()
            ),
        );
        let out = containerd
            .ctr_output(&[
                "images",
                "pull",
                "--plain-http",
                "--hosts-dir",
                &hosts,
                "docker.io/library/pp-closed:1",
            ])
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("ctr images pull: {}\n{stderr}", out.status);
        assert!(!out.status.success(), "the pull must fail: {stderr}");
        assert!(stderr.contains("503"), "ctr names the status: {stderr}");
        let listing = containerd.ctr(&["images", "ls", "-q"]).await;
        assert!(listing.trim().is_empty(), "nothing was pulled: {listing}");
        let text = metrics(&proxy).await;
        assert!(fallback_pulls(&text, None) >= 2.0, "{text}");
        assert_eq!(metric(&text, &pulls("patched")), 0.0, "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_serves_the_original_first_and_the_patch_later() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("test/bg", "1", &original).await;
        let proxy = env.proxy("local", &["mode = \"background\""], |_| {}).await;
        let first = get(&proxy, "local/test/bg", "1").await;
        assert_eq!(first.ok(), original.manifest.digest, "the original at once");
        let later =
            poll_until_changed(&proxy, "local/test/bg", "1", &original.manifest.digest, 60).await;
        assert_ne!(
            later.digest, original.manifest.digest,
            "patched within 60 s"
        );
        assert_patched_from(&later.json(), &original);
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("patched")), 1.0, "{text}");
        assert!(fallback_pulls(&text, None) >= 1.0, "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_packages_is_served_unchanged() {
    if !tools(false) {
        return;
    }
    within(120, async {
        let env = Env::new().await;
        let plain = images::single(Format::Oci, "pipeline-plain");
        env.push("test/plain", "1", &plain).await;
        let proxy = env.proxy("local", WAIT, |_| {}).await;
        for _ in 0..2 {
            let answer = get(&proxy, "local/test/plain", "1").await;
            assert_eq!(answer.ok(), plain.manifest.digest);
            assert_eq!(answer.bytes, plain.manifest.bytes);
        }
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("unchanged")), 1.0, "{text}");
        assert_eq!(metric(&text, &jobs("failed")), 0.0, "{text}");
        assert_eq!(metric(&text, &pulls("unchanged")), 2.0, "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_result_ttl_the_old_patch_is_served_while_a_newer_fix_is_applied() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        let original = libfoo_image(Format::Oci, false);
        env.push("test/ttl", "1", &original).await;
        let proxy = env
            .proxy("local", WAIT, |c| c.scan.push("result_ttl = \"1h\"".into()))
            .await;
        let first = get(&proxy, "local/test/ttl", "1").await;
        let patched = first.ok().to_owned();
        assert_eq!(status_version(&proxy, "local/test/ttl", &first).await, NEW);

        // The archive's validators move on (`AptRepo::publish`), and the result's TTL runs
        // out.
        env.repo.add(&libfoo(NEWER, "amd64"));
        env.repo.publish();
        proxy.clock.advance(Duration::from_secs(2 * 3600));
        let stale = get(&proxy, "local/test/ttl", "1").await;
        assert_eq!(
            stale.ok(),
            patched,
            "the old result while the new one is made"
        );
        let fresh = poll_until_changed(&proxy, "local/test/ttl", "1", &patched, 60).await;
        assert_ne!(fresh.digest, patched, "re-patched within 60 s");
        assert_patched_from(&fresh.json(), &original);
        assert_eq!(
            status_version(&proxy, "local/test/ttl", &fresh).await,
            NEWER
        );
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, &jobs("patched")), 2.0, "{text}");
    })
    .await;
}

/// libfoo's version in the dpkg status of the patched image's top layer, read through
/// the proxy.
async fn status_version(proxy: &crate::common::Proxy, name: &str, answer: &Answer) -> String {
    let manifest = answer.json();
    let top = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = proxy.get(&format!("/v2/{name}/blobs/{top}")).await;
    assert_eq!(resp.status(), 200, "blob {top}");
    let gz = resp.bytes().await.unwrap();
    assert_eq!(images::sha256_digest(&gz), top);
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path.trim_start_matches("./") == "var/lib/dpkg/status" {
            let mut status = String::new();
            std::io::Read::read_to_string(&mut entry, &mut status).unwrap();
            let paragraph = status
                .split("\n\n")
                .find(|p| p.starts_with("Package: libfoo\n"))
                .unwrap_or_else(|| panic!("{status}"))
                .to_owned();
            return paragraph
                .lines()
                .find_map(|l| l.strip_prefix("Version: "))
                .unwrap()
                .to_owned();
        }
    }
    panic!("no var/lib/dpkg/status in the patch layer {top}");
}

/// A patch job that dies (a bug that panics) fails open, is listed as failed, and gives its
/// place back: with room for one job, another image still patches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_job_that_panics_fails_open_and_frees_its_place() {
    if !tools(false) {
        return;
    }
    within(240, async {
        let env = Env::new().await;
        // An image of its own: the failpoint is armed by digest for the whole test binary.
        let doomed = generation(b"doomed\n");
        env.push("test/doomed", "1", &doomed).await;
        let other = second_generation();
        env.push("test/other", "1", &other).await;
        let patch = [
            WAIT,
            &["workers = 1", "queue = 0", "admin_token = \"admin-secret\""],
        ]
        .concat();
        let proxy = env.proxy("local", &patch, |_| {}).await;
        let failpoint = patchpull::failpoint::PATCH_JOB;
        patchpull::failpoint::arm_panic(failpoint, &doomed.manifest.digest);

        for pull in ["the first pull", "a later pull"] {
            let answer = get(&proxy, "local/test/doomed", "1").await;
            assert_eq!(answer.ok(), doomed.manifest.digest, "{pull} fails open");
            assert_eq!(answer.bytes, doomed.manifest.bytes);
        }
        patchpull::failpoint::disarm(failpoint, &doomed.manifest.digest);
        let text = metrics(&proxy).await;
        assert_eq!(metric(&text, "patchpull_patch_jobs_active"), 0.0, "{text}");
        assert_eq!(metric(&text, &jobs("failed")), 1.0, "{text}");
        assert_eq!(fallback_pulls(&text, Some("PatchFailed")), 2.0, "{text}");
        let listed: serde_json::Value = serde_json::from_slice(
            &reqwest::Client::new()
                .get(format!("http://{}/patchpull/v1/images", proxy.authority()))
                .bearer_auth("admin-secret")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let job = &listed["images"][0];
        assert_eq!(job["original"], doomed.manifest.digest.as_str(), "{listed}");
        assert_eq!(job["status"], "failed", "{listed}");
        assert!(
            job["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("panicked"),
            "{listed}"
        );

        let answer = get(&proxy, "local/test/other", "1").await;
        assert_ne!(answer.ok(), other.manifest.digest, "the one worker is free");
        assert_patched_from(&answer.json(), &other);
    })
    .await;
}
