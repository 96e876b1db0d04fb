//! Options and failures of `patchpull patch`: VEX, maintainer scripts, hostile and
//! unavailable packages, OCI layouts, nothing to do.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::apt::{AptRepo, DebSpec};
use crate::common::fault::{Behaviour, FaultServer};
use crate::common::images::{self, Format};
use crate::dpkg::*;
use crate::image::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vex_names_the_fixed_cves_of_the_patched_image() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEWER, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/vex", "1", &original).await;
    let vex_path = setup.path("patched.vex.json");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--vex",
            vex_path.to_str().unwrap(),
            &setup.reference("test/vex:1"),
        ],
    )
    .await;
    run.assert_ok();
    let digest = run.patched_digest();
    let vex: Value = serde_json::from_slice(&std::fs::read(&vex_path).unwrap()).unwrap();
    assert_eq!(vex["@context"], "https://openvex.dev/ns/v0.2.0", "{vex}");
    let statements = vex["statements"].as_array().unwrap();
    // Both uploads newer than the installed 1.0-1 name a CVE in the changelog.
    let ids: BTreeSet<&str> = statements
        .iter()
        .map(|s| s["vulnerability"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["CVE-2024-0001", "CVE-2024-0002"]),
        "{vex}"
    );
    assert_eq!(statements.len(), 2, "one statement per CVE: {vex}");
    let encoded_digest = digest.replace(':', "%3A");
    for statement in statements {
        assert_eq!(statement["status"], "fixed", "{statement}");
        let products = statement["products"].as_array().unwrap();
        assert_eq!(products.len(), 1, "{statement}");
        let product = products[0]["@id"].as_str().unwrap();
        assert!(
            product.starts_with("pkg:oci/vex@")
                && (product.contains(&encoded_digest) || product.contains(&digest)),
            "product {product} should name the patched image {digest}"
        );
        let subcomponents: Vec<&str> = products[0]["subcomponents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["@id"].as_str().unwrap())
            .collect();
        assert_eq!(
            subcomponents,
            ["pkg:deb/debian/libfoo@1.0-1%2Bdeb12u2?arch=amd64&distro=debian-12"],
            "{statement}"
        );
    }
}

/// The digest of the patch layer a `patchpull patch` summary names.
fn patch_layer(summary: &str) -> String {
    summary
        .split("patch layer ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no patch layer in:\n{summary}"))
        .to_owned()
}

/// `hello` at `version`: a program and a postinst that records how it was called.
fn hello(version: &str) -> DebSpec {
    DebSpec::new("hello", version, "amd64")
        .file("usr/bin/hello", format!("#!/bin/sh\necho hello {version}\n").as_bytes(), 0o755)
        .script(
            "postinst",
            "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then echo \"$@\" > /etc/postinst-ran; fi\n",
        )
}

/// A script body that records how it was called into `/etc/greet-<script>`: what
/// debconf's frontend and other helpers derive from (`$0`, the environment dpkg sets, the
/// working directory, the umask, the control members beside a new preinst).
fn recorder(script: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\nout=/etc/greet-{script}\n\
         echo \"0=$0\" > $out\necho \"args=$*\" >> $out\n\
         echo \"env=$DPKG_MAINTSCRIPT_PACKAGE $DPKG_MAINTSCRIPT_NAME $DPKG_MAINTSCRIPT_ARCH $DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT $DPKG_ADMINDIR root=$DPKG_ROOT $DEBIAN_FRONTEND\" >> $out\n\
         echo \"pwd=$(pwd) umask=$(umask)\" >> $out\n\
         dir=${{0%/*}}\n\
         for m in control templates config; do [ -e \"$dir/$m\" ] && echo \"beside=$m $(head -n1 $dir/$m)\" >> $out; done\n\
         [ -e /var/lib/dpkg/info/greet.templates ] && echo \"info=$(cat /var/lib/dpkg/info/greet.templates)\" >> $out\n\
         exit 0\n"
    )
}

/// `greet` at `version`, with a recording preinst, postinst and postrm, and a debconf
/// templates file naming the version.
fn greet(version: &str) -> DebSpec {
    DebSpec::new("greet", version, "amd64")
        .file("usr/share/greet/version", version.as_bytes(), 0o644)
        .script("preinst", &recorder("preinst"))
        .script("postinst", &recorder("postinst"))
        .script("postrm", &recorder("postrm"))
        .script("templates", &format!("Template: greet/{version}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_from_dpkgs_paths_with_dpkgs_environment() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&greet(NEW));
    setup.repo.publish();
    let old = greet(OLD);
    let installed = Installed {
        spec: &old,
        modified_conffiles: Vec::new(),
    };
    let with_shell = image(
        Format::Oci,
        "amd64",
        &[base_files(true), dpkg_files(&[installed])],
    );
    images::push_image(&setup.registry.url(), "test/greet", "1", &with_shell).await;
    let layout = setup.path("layout");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--oci-dir",
            layout.to_str().unwrap(),
            &setup.reference("test/greet:1"),
        ],
    )
    .await;
    run.assert_ok();
    let root = unpack(&layout, "1-patched", &setup.path("bundle"));
    let env = "env=greet {} amd64 1 /var/lib/dpkg root= noninteractive";
    // The new preinst runs from tmp.ci with the new control members beside it (debconf
    // reads the package name from tmp.ci/control and loads templates from there).
    assert_eq!(
        read_text(&root.join("etc/greet-preinst")),
        format!(
            "0=/var/lib/dpkg/tmp.ci/preinst\nargs=upgrade {OLD}\n{}\npwd=/ umask=0022\n\
             beside=control Package: greet\nbeside=templates Template: greet/{NEW}\n\
             info=Template: greet/{OLD}\n",
            env.replace("{}", "preinst")
        )
    );
    // The old postrm runs from info/ while the old control members are still there.
    assert_eq!(
        read_text(&root.join("etc/greet-postrm")),
        format!(
            "0=/var/lib/dpkg/info/greet.postrm\nargs=upgrade {NEW}\n{}\npwd=/ umask=0022\n\
             info=Template: greet/{OLD}\n",
            env.replace("{}", "postrm")
        )
    );
    // The new postinst runs from info/, where the new templates are now.
    assert_eq!(
        read_text(&root.join("etc/greet-postinst")),
        format!(
            "0=/var/lib/dpkg/info/greet.postinst\nargs=configure {OLD}\n{}\npwd=/ umask=0022\n\
             info=Template: greet/{NEW}\n",
            env.replace("{}", "postinst")
        )
    );
    assert!(!root.join("var/lib/dpkg/tmp.ci/preinst").exists());
    assert_eq!(
        dpkg_query(&root).trim(),
        format!("greet {NEW} install ok installed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintainer_scripts_run_in_images_with_a_shell_and_are_refused_without() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&hello(NEW));
    setup.repo.publish();
    let old = hello(OLD);
    let installed = || Installed {
        spec: &old,
        modified_conffiles: Vec::new(),
    };
    let with_shell = image(
        Format::Oci,
        "amd64",
        &[base_files(true), dpkg_files(&[installed()])],
    );
    images::push_image(&setup.registry.url(), "test/shell", "1", &with_shell).await;
    let layout = setup.path("layout");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--oci-dir",
            layout.to_str().unwrap(),
            &setup.reference("test/shell:1"),
        ],
    )
    .await;
    run.assert_ok();
    assert!(
        run.stdout.contains("maintainer scripts run: 1"),
        "{}",
        run.stdout
    );
    let root = unpack(&layout, "1-patched", &setup.path("bundle"));
    assert_eq!(
        read_text(&root.join("etc/postinst-ran")),
        format!("configure {OLD}\n"),
        "the new postinst ran as dpkg runs it on an upgrade"
    );
    assert_eq!(
        read_text(&root.join("usr/bin/hello")),
        format!("#!/bin/sh\necho hello {NEW}\n")
    );
    assert_eq!(
        read_text(&root.join("var/lib/dpkg/info/hello.postinst")),
        hello(NEW).scripts[0].1
    );
    assert_eq!(
        dpkg_query(&root).trim(),
        format!("hello {NEW} install ok installed")
    );
    let deb = setup.repo.archive().join(AptRepo::pool_path(&hello(NEW)));
    if let Some(reference) = dpkg_reference(&setup, "test/shell:1", &[deb]) {
        assert_same_tree(&reference, &root);
    }

    // Again with the same store: the image's root is kept in the unpack cache and the script
    // runs over it through an overlay; without the cache it runs over a plain tree. Both give
    // the first run's layer.
    let first = patch_layer(&run.stdout);
    let roots = setup.path("run/store/unpacked/roots");
    let ready = std::fs::read_dir(&roots)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("ready").exists())
        .count();
    assert_eq!(ready, 1, "one unpacked root in {}", roots.display());
    let again = patchpull(
        &setup.config("run"),
        &["patch", "--insecure", &setup.reference("test/shell:1")],
    )
    .await;
    again.assert_ok();
    assert!(
        again.stdout.contains("maintainer scripts run: 1"),
        "{}",
        again.stdout
    );
    assert_eq!(patch_layer(&again.stdout), first, "{}", again.stdout);
    let plain = setup.config("plain");
    let toml = std::fs::read_to_string(&plain).unwrap();
    std::fs::write(&plain, format!("{toml}\n[patch]\nunpack_cache_size = 0\n")).unwrap();
    let without_cache = patchpull(
        &plain,
        &["patch", "--insecure", &setup.reference("test/shell:1")],
    )
    .await;
    without_cache.assert_ok();
    assert_eq!(
        patch_layer(&without_cache.stdout),
        first,
        "{}",
        without_cache.stdout
    );
    assert!(!setup.path("plain/store/unpacked").exists());

    // The same upgrade on an image without /bin/sh cannot run the script: refused.
    let without = image(
        Format::Oci,
        "amd64",
        &[base_files(false), dpkg_files(&[installed()])],
    );
    images::push_image(&setup.registry.url(), "test/noshell", "1", &without).await;
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--push",
            &setup.reference("test/noshell:1"),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("hello")
            && run.stderr.contains("postinst")
            && run.stderr.contains("/bin/sh"),
        "{}",
        run.stderr
    );
    let (status, ..) = setup.manifest("test/noshell", "1-patched").await;
    assert_eq!(status, 404, "nothing was pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_with_a_path_outside_the_root_is_refused() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup
        .repo
        .add_hostile(&libfoo(NEW, "amd64"), "../../etc/passwd");
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/hostile", "1", &original).await;
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--push",
            &setup.reference("test/hostile:1"),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("../../etc/passwd"), "{}", run.stderr);
    let (status, ..) = setup.manifest("test/hostile", "1-patched").await;
    assert_eq!(status, 404, "nothing was pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_dir_writes_a_layout_skopeo_reads() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/layout", "7", &original).await;
    let layout = setup.path("layout");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--oci-dir",
            layout.to_str().unwrap(),
            &setup.reference("test/layout:7"),
        ],
    )
    .await;
    run.assert_ok();
    let digest = run.patched_digest();
    let inspected: Value = serde_json::from_str(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:7-patched", layout.display())],
    ))
    .unwrap();
    assert_eq!(inspected["Digest"], digest.as_str(), "{inspected}");
    let layers = inspected["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), original.layers.len() + 1);
    // Without --push the registry is left alone.
    let (status, ..) = setup.manifest("test/layout", "7-patched").await;
    assert_eq!(status, 404);
    // Every blob the layout names is there with its digest.
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:7-patched", layout.display()),
        ],
    );
    assert_eq!(images::sha256_digest(raw.as_bytes()), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_patch_when_the_archive_has_nothing_newer() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    setup.repo.add(&libfoo(OLD, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/current", "1", &original).await;
    let reference = setup.reference("test/current:1");
    let run = patchpull(
        &setup.config("run"),
        &["patch", "--insecure", "--push", &reference],
    )
    .await;
    run.assert_ok();
    assert!(
        run.stdout
            .contains(&format!("nothing to patch: {reference} is unchanged")),
        "{}",
        run.stdout
    );
    let (status, ..) = setup.manifest("test/current", "1-patched").await;
    assert_eq!(status, 404, "nothing was pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_download_failure_names_the_url_and_status() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    let new = libfoo(NEW, "amd64");
    setup.repo.add(&new);
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/fault", "1", &original).await;
    // The archive through a proxy that answers 500 for the .deb and passes the rest.
    let fault = FaultServer::start_in_front_of(&setup.repo.server_url()).await;
    let deb_path = AptRepo::url_path(&new);
    fault.set(&deb_path, Behaviour::ServerError);
    let config = setup.config_for("run", &format!("{}/debian-security", fault.url()));
    let run = patchpull(
        &config,
        &[
            "patch",
            "--insecure",
            "--push",
            &setup.reference("test/fault:1"),
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let url = format!("{}{deb_path}", fault.url());
    assert!(
        run.stderr.contains(&url),
        "the error names {url}:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("500"),
        "the error names the status:\n{}",
        run.stderr
    );
    assert!(fault.hits("GET", &deb_path) >= 1);
    let (status, ..) = setup.manifest("test/fault", "1-patched").await;
    assert_eq!(status, 404, "nothing was pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_keeps_the_classification_the_new_control_does_not_set() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    let spec = |version: &str| {
        DebSpec::new("plain", version, "amd64").file("usr/share/plain/v", version.as_bytes(), 0o644)
    };
    let mut old = spec(OLD);
    old.control = vec!["Priority: optional".into(), "Section: misc".into()];
    let new = spec(NEW);
    setup.repo.add(&new);
    setup.repo.publish();
    let installed = Installed {
        spec: &old,
        modified_conffiles: Vec::new(),
    };
    let original = image(
        Format::Oci,
        "amd64",
        &[base_files(false), dpkg_files(&[installed])],
    );
    images::push_image(&setup.registry.url(), "test/plain", "1", &original).await;
    let layout = setup.path("layout");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--oci-dir",
            layout.to_str().unwrap(),
            &setup.reference("test/plain:1"),
        ],
    )
    .await;
    run.assert_ok();
    let root = unpack(&layout, "1-patched", &setup.path("bundle"));
    let deb = setup.repo.archive().join(AptRepo::pool_path(&new));
    if let Some(reference) = dpkg_reference(&setup, "test/plain:1", &[deb]) {
        assert_same_tree(&reference, &root);
    }
    let paragraph = status_paragraph(&root, "plain");
    assert!(
        paragraph.contains("\nPriority: optional\n") && paragraph.contains("\nSection: misc\n"),
        "{paragraph}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_files_keep_their_statoverride_owner_and_mode() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    let spec = |version: &str| {
        DebSpec::new("helperpkg", version, "amd64")
            .file("usr/lib/helperpkg/helper", version.as_bytes(), 0o755)
            .file("usr/share/helperpkg/v", version.as_bytes(), 0o644)
    };
    let old = spec(OLD);
    let new = spec(NEW);
    setup.repo.add(&new);
    setup.repo.publish();
    let installed = Installed {
        spec: &old,
        modified_conffiles: Vec::new(),
    };
    // As `dpkg-statoverride --update --add root messagebus 4754 ...` leaves it (numeric
    // ids, so that the reference dpkg run here resolves them as patchpull does).
    let overrides = vec![file(
        "var/lib/dpkg/statoverride",
        b"#0 #101 4754 /usr/lib/helperpkg/helper\n",
        0o644,
    )];
    let original = image(
        Format::Oci,
        "amd64",
        &[base_files(false), dpkg_files(&[installed]), overrides],
    );
    images::push_image(&setup.registry.url(), "test/helper", "1", &original).await;
    let layout = setup.path("layout");
    let run = patchpull(
        &setup.config("run"),
        &[
            "patch",
            "--insecure",
            "--oci-dir",
            layout.to_str().unwrap(),
            &setup.reference("test/helper:1"),
        ],
    )
    .await;
    run.assert_ok();
    let root = unpack(&layout, "1-patched", &setup.path("bundle"));
    let helper = std::fs::symlink_metadata(root.join("usr/lib/helperpkg/helper")).unwrap();
    assert_eq!(
        std::fs::read(root.join("usr/lib/helperpkg/helper")).unwrap(),
        NEW.as_bytes()
    );
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(helper.mode() & 0o7777, 0o4754);
        if is_root() {
            assert_eq!((helper.uid(), helper.gid()), (0, 101));
        }
    }
    let deb = setup.repo.archive().join(AptRepo::pool_path(&new));
    if let Some(reference) = dpkg_reference(&setup, "test/helper:1", &[deb]) {
        assert_same_tree(&reference, &root);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_errors_patches_what_can_be_patched() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    let spec = |name: &str, version: &str| {
        DebSpec::new(name, version, "amd64").file(
            &format!("usr/share/{name}/v"),
            version.as_bytes(),
            0o644,
        )
    };
    let (old_good, old_bad) = (spec("good", OLD), spec("bad", OLD));
    let (new_good, new_bad) = (spec("good", NEW), spec("bad", NEW));
    setup.repo.add(&new_good);
    setup.repo.add(&new_bad);
    setup.repo.publish();
    let installed = [
        Installed {
            spec: &old_bad,
            modified_conffiles: Vec::new(),
        },
        Installed {
            spec: &old_good,
            modified_conffiles: Vec::new(),
        },
    ];
    let original = image(
        Format::Oci,
        "amd64",
        &[base_files(false), dpkg_files(&installed)],
    );
    images::push_image(&setup.registry.url(), "test/partial", "1", &original).await;
    // The repository fails one package's download.
    let fault = FaultServer::start_in_front_of(&setup.repo.server_url()).await;
    fault.set(&AptRepo::url_path(&new_bad), Behaviour::ServerError);
    let config = setup.config_for("run", &format!("{}/debian-security", fault.url()));
    let reference = setup.reference("test/partial:1");

    // Without --ignore-errors the whole patch fails.
    let strict = patchpull(&config, &["patch", "--insecure", &reference]).await;
    assert_eq!(strict.code, 1, "{}\n{}", strict.stdout, strict.stderr);

    // With it, the other package is patched and the failed one is reported.
    let layout = setup.path("layout");
    let run = patchpull(
        &config,
        &[
            "patch",
            "--insecure",
            "--ignore-errors",
            "--oci-dir",
            layout.to_str().unwrap(),
            &reference,
        ],
    )
    .await;
    run.assert_ok();
    assert!(
        run.stdout.contains("not planned: bad") && run.stdout.contains("could not be patched"),
        "{}",
        run.stdout
    );
    let root = unpack(&layout, "1-patched", &setup.path("bundle"));
    let versions = dpkg_query(&root);
    assert!(
        versions.contains(&format!("good {NEW}")) && versions.contains(&format!("bad {OLD}")),
        "{versions}"
    );
}

/// The built-in scanner's plan is kept by image digest and index version: a second scan
/// of the same image against the same index answers from it (here the package, whose
/// changelog names the CVEs, is gone from the archive by then), and a new index makes a
/// new plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_plans_are_cached_by_image_and_index_version() {
    if !tools() {
        return;
    }
    let setup = Setup::new(&["amd64"]).await;
    let deb = setup.repo.add(&libfoo(NEW, "amd64"));
    setup.repo.publish();
    let original = libfoo_image(Format::Oci, false);
    images::push_image(&setup.registry.url(), "test/plans", "1", &original).await;
    let config = setup.config("run");
    let reference = setup.reference("test/plans:1");
    let ids = |run: &Run| -> BTreeSet<String> {
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        report["Results"][0]["Vulnerabilities"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|f| f["VulnerabilityID"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let scan = ["scan", "--insecure", "--format", "trivy", &reference];
    let first = patchpull(&config, &scan).await;
    first.assert_ok();
    assert_eq!(ids(&first), BTreeSet::from(["CVE-2024-0001".to_string()]));
    let results = setup.dir.path().join("run/cache/results");
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 1);

    // The .deb gone, and the scanner's copy and its changelog cache: only the cached plan
    // has the CVE now.
    std::fs::remove_file(&deb).unwrap();
    for dir in ["debs", "debdocs"] {
        std::fs::remove_dir_all(setup.dir.path().join("run/cache").join(dir)).unwrap();
    }
    let again = patchpull(&config, &scan).await;
    again.assert_ok();
    assert_eq!(ids(&again), ids(&first), "{}", again.stderr);

    // A new upload changes the index: a new plan, with the new version. (A second later:
    // the loopback server's ETag is the file's mtime and size.)
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    setup.repo.add(&libfoo(NEWER, "amd64"));
    setup.repo.publish();
    let newer = patchpull(&config, &scan).await;
    newer.assert_ok();
    assert!(newer.stdout.contains(NEWER), "{}", newer.stdout);
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 2);
}
