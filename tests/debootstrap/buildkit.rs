//! The BuildKit engine on the same real Debian root: the image gets Debian's official
//! sources file (as Debian's own images have; a debootstrap root lists only `bookworm`), is
//! patched through a real dockerd's BuildKit (`/grpc` on a private socket), and must end
//! up with what the native engine installed: the same package versions, a sound dpkg
//! database, the maintainer scripts' effects, and the original layer untouched.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use crate::common::dockerd::Dockerd;
use crate::common::images::{self, Blob, Format};
use crate::common::registry::Registry;
use crate::common::Proxy;
use crate::fixture::{
    fixture, in_root, layout_blob, layout_manifest, planned_rows, pull, sh, stdout_of, unpack,
    Fixture,
};
use crate::tree::layer_paths;

/// Only the release and its security suite: the native engine's plan in this binary reads
/// the security suite alone (`point_releases = false`), so apt must choose among the same
/// versions. (`bookworm-updates` could offer a newer tzdata than the security suite.)
const SOURCES: &str = "Types: deb\n\
URIs: http://deb.debian.org/debian\n\
Suites: bookworm\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
\n\
Types: deb\n\
URIs: http://deb.debian.org/debian-security\n\
Suites: bookworm-security\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

pub struct BuildkitRun {
    pub summary: String,
    /// The patched image unpacked.
    pub patched: std::path::PathBuf,
    pub layout: std::path::PathBuf,
    pub evil_report: std::process::Output,
    /// Patch on pull: the proxy's answer to a tag pull, patched through BuildKit, which
    /// pulled the original through the proxy.
    pub pulled: PulledThroughProxy,
    /// A distroless image (two library packages in `status.d`, no shell, no apt), patched
    /// through the tooling image: the packages patched and the unpacked result.
    pub distroless: (Vec<String>, std::path::PathBuf, String),
}

pub struct PulledThroughProxy {
    pub digest: String,
    pub manifest: serde_json::Value,
    /// The patched image's dpkg status, read from the patch layer served by the proxy.
    pub status: String,
}

/// The root with the sources file, as one gzip layer: (blob, diff_id).
fn image_layer(f: &Fixture) -> (Blob, String) {
    let extra = f.work.join("bk-extra");
    std::fs::create_dir_all(extra.join("etc/apt/sources.list.d")).unwrap();
    std::fs::write(extra.join("etc/apt/sources.list.d/debian.sources"), SOURCES).unwrap();
    let tar_path = f.work.join("bk-layer.tar");
    let out = sh(&format!(
        "tar -C {r} --numeric-owner --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* \
         --exclude=./etc/apt/sources.list -cf {t} . && \
         tar -C {e} --numeric-owner --owner=0 --group=0 -rf {t} ./etc/apt/sources.list.d/debian.sources",
        r = f.root.display(),
        e = extra.display(),
        t = tar_path.display()
    ));
    stdout_of(&out, "tar");
    let tar_bytes = std::fs::read(&tar_path).unwrap();
    std::fs::remove_file(&tar_path).unwrap();
    let diff_id = images::sha256_digest(&tar_bytes);
    let mut gz = Vec::new();
    flate2::read::GzEncoder::new(tar_bytes.as_slice(), flate2::Compression::fast())
        .read_to_end(&mut gz)
        .unwrap();
    (
        Blob::new("application/vnd.oci.image.layer.v1.tar+gzip", gz),
        diff_id,
    )
}

/// Pushes the image, starts dockerd, patches through its BuildKit, pulls the result back.
pub fn run() -> Option<BuildkitRun> {
    let f = fixture()?;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (layer, diff_id) = image_layer(f);
    let image = images::assemble(Format::Oci, "amd64", vec![(layer, diff_id)], &["/bin/bash"]);
    let registry = runtime.block_on(async {
        let registry = Registry::start().await;
        images::push_image(&registry.url(), "debian", "bookworm-sources", &image).await;
        registry
    });
    drop(image);
    // Every loopback port: the registry, and the proxy started below on a port not yet known.
    let dockerd = runtime.block_on(Dockerd::start(&["127.0.0.0/8".to_string()]))?;
    let config = f.work.join("patchpull-buildkit.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = {:?}\n[log]\nlevel = \"warn\"\n[scan]\npoint_releases = false\ncache_dir = {:?}\n",
            f.work.join("bk-store").display(),
            f.work.join("scan-cache").display()
        ),
    )
    .unwrap();
    let reference = format!("{}/debian:bookworm-sources", registry.authority());
    let patch = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_patchpull"));
        command.arg("--config").arg(&config).args([
            "patch",
            "--insecure",
            &reference,
            "--engine",
            "buildkit",
            "--buildkit",
            &dockerd.address(),
        ]);
        command.args(extra).output().unwrap()
    };
    let out = patch(&["--push"]);
    let summary = stdout_of(&out, "patchpull patch --engine buildkit");
    eprintln!("{summary}");

    let evil = f.work.join("evil-report.json");
    std::fs::write(&evil, EVIL_REPORT).unwrap();
    let evil_report = patch(&["--report", evil.to_str().unwrap()]);

    let layout = f.work.join("bk-oci");
    pull(&reference, &layout, "original");
    pull(&format!("{reference}-patched"), &layout, "patched");
    let patched = unpack(&layout, "patched", &f.work.join("bk-bundle"));
    let pulled = runtime.block_on(pull_through_proxy(&registry, &dockerd));
    let distroless = distroless(f, &runtime, &registry, &dockerd, &config);
    drop(dockerd);
    drop(registry);
    Some(BuildkitRun {
        summary,
        patched,
        layout,
        evil_report,
        pulled,
        distroless,
    })
}

/// The first two planned library packages, with their files, as a distroless image: each
/// package's control paragraph in `status.d/<name>`, no shell, no apt. Patched through the
/// tooling image (the Debian image with sources) and unpacked.
fn distroless(
    f: &Fixture,
    runtime: &tokio::runtime::Runtime,
    registry: &Registry,
    dockerd: &Dockerd,
    config: &Path,
) -> (Vec<String>, std::path::PathBuf, String) {
    let packages: Vec<String> = planned_rows(&f.scan_table)
        .into_keys()
        .filter(|name| name.starts_with("lib"))
        .take(2)
        .collect();
    assert!(!packages.is_empty(), "no library in the plan");
    let root = f.work.join("distroless-root");
    let script = format!(
        "set -e; src={src}; dst={dst}; mkdir -p $dst/var/lib/dpkg/status.d $dst/etc; \
         cp $src/usr/lib/os-release $dst/etc/os-release; \
         for p in {names}; do \
           awk -v p=\"$p\" 'BEGIN{{RS=\"\";ORS=\"\\n\"}} $0 ~ \"^Package: \"p\"\\n\" {{print}}' $src/var/lib/dpkg/status \
             | grep -v '^Status:' > $dst/var/lib/dpkg/status.d/$p; \
           list=$(ls $src/var/lib/dpkg/info/$p.list $src/var/lib/dpkg/info/$p:*.list 2>/dev/null | head -n1); \
           while read -r path; do \
             if [ -d \"$src$path\" ] && [ ! -L \"$src$path\" ]; then mkdir -p \"$dst$path\"; \
             else mkdir -p \"$dst$(dirname \"$path\")\"; cp -a \"$src$path\" \"$dst$path\"; fi; \
           done < $list; \
         done",
        src = f.root.display(),
        dst = root.display(),
        names = packages.join(" ")
    );
    stdout_of(&sh(&script), "making the distroless root");
    let tar_path = f.work.join("distroless.tar");
    stdout_of(
        &sh(&format!(
            "tar -C {} --numeric-owner -cf {} .",
            root.display(),
            tar_path.display()
        )),
        "tar",
    );
    let tar_bytes = std::fs::read(&tar_path).unwrap();
    let diff_id = images::sha256_digest(&tar_bytes);
    let mut gz = Vec::new();
    flate2::read::GzEncoder::new(tar_bytes.as_slice(), flate2::Compression::fast())
        .read_to_end(&mut gz)
        .unwrap();
    let layer = Blob::new("application/vnd.oci.image.layer.v1.tar+gzip", gz);
    let image = images::assemble(Format::Oci, "amd64", vec![(layer, diff_id)], &[]);
    runtime.block_on(images::push_image(
        &registry.url(),
        "distroless",
        "12",
        &image,
    ));
    let mut toml = std::fs::read_to_string(config).unwrap();
    toml.push_str(&format!(
        "[patch.buildkit]\ntooling_image = \"{}/debian:bookworm-sources\"\n",
        registry.authority()
    ));
    let config = f.work.join("patchpull-distroless.toml");
    std::fs::write(&config, toml).unwrap();
    let reference = format!("{}/distroless:12", registry.authority());
    let out = Command::new(env!("CARGO_BIN_EXE_patchpull"))
        .arg("--config")
        .arg(&config)
        .args([
            "patch",
            "--insecure",
            &reference,
            "--engine",
            "buildkit",
            "--buildkit",
            &dockerd.address(),
            "--push",
        ])
        .output()
        .unwrap();
    let summary = stdout_of(&out, "patchpull patch (distroless, BuildKit)");
    let layout = f.work.join("distroless-oci");
    pull(&format!("{reference}-patched"), &layout, "patched");
    let patched = unpack(&layout, "patched", &f.work.join("distroless-bundle"));
    (packages, patched, summary)
}

/// patchpull serving with `patch.engine = "buildkit"`: a pull of the tag waits for the
/// patch and gets the patched manifest.
async fn pull_through_proxy(registry: &Registry, dockerd: &Dockerd) -> PulledThroughProxy {
    let proxy = Proxy::start(&[("local", &registry.url(), true)], |config| {
        config.log_level = "info".into();
        config.patch = vec![
            "mode = \"wait\"".into(),
            "wait_timeout = \"15m\"".into(),
            "engine = \"buildkit\"".into(),
            "[patch.buildkit]".into(),
            format!("address = {:?}", dockerd.address()),
        ];
        config.scan = vec!["point_releases = false".into()];
        // The connection must outlive the wait (config check refuses otherwise).
        config.server_extra = vec!["idle_timeout = \"16m\"".into()];
    })
    .await;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(900))
        .build()
        .unwrap();
    let response = client
        .get(format!(
            "{}/v2/local/debian/manifests/bookworm-sources",
            proxy.url()
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let digest = response.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let top = layers.last().unwrap()["digest"].as_str().unwrap();
    let gz = client
        .get(format!("{}/v2/local/debian/blobs/{top}", proxy.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    let mut status = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == "var/lib/dpkg/status" {
            entry.read_to_string(&mut status).unwrap();
        }
    }
    proxy.shutdown().await;
    PulledThroughProxy {
        digest,
        manifest,
        status,
    }
}

const EVIL_REPORT: &str = r#"{"SchemaVersion":2,"ArtifactName":"x","ArtifactType":"container_image",
"Metadata":{"OS":{"Family":"debian","Name":"12"}},
"Results":[{"Target":"x (debian 12)","Class":"os-pkgs","Type":"debian","Vulnerabilities":[
{"VulnerabilityID":"CVE-2099-0001","PkgName":"perl-base$(touch /pwned)","InstalledVersion":"1","FixedVersion":"2","Severity":"HIGH"}]}]}"#;

/// package -> version from a root's dpkg status.
pub fn installed_versions(root: &Path) -> BTreeMap<String, String> {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    status
        .split("\n\n")
        .filter_map(|paragraph| {
            let field = |name: &str| {
                paragraph
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .map(str::to_string)
            };
            Some((field("Package")?, field("Version")?))
        })
        .collect()
}

/// The assertions, in one test: the run costs a dockerd, a pull and an apt upgrade.
pub fn check(f: &Fixture, run: &BuildkitRun) {
    assert!(
        run.summary.contains("engine: apt through BuildKit"),
        "{}",
        run.summary
    );
    // The plan is the native engine's; BuildKit's apt installed the same versions.
    let planned = planned_rows(&f.scan_table);
    assert!(!planned.is_empty());
    let after = installed_versions(&run.patched);
    for name in planned.keys() {
        assert_eq!(
            after.get(name),
            f.debs.get(name),
            "{name}: BuildKit's apt and the native engine installed other versions"
        );
    }
    // A sound database, and the programs run.
    let audit = in_root(&run.patched, &["dpkg", "--audit"]);
    assert!(audit.status.success());
    assert_eq!(String::from_utf8_lossy(&audit.stdout), "", "dpkg --audit");

    // The original layer is untouched; one layer on top; the config kept.
    let original = layout_manifest(&run.layout, "original");
    let patched = layout_manifest(&run.layout, "patched");
    let layers = patched["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0], original["layers"][0]);
    let config: serde_json::Value = serde_json::from_slice(&layout_blob(
        &run.layout,
        patched["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/bash"]));

    // The maintainer scripts ran: libraries were upgraded, so the ldconfig trigger rewrote
    // the cache. apt's lists, archives and logs stayed out of the layer.
    let paths = layer_paths(&layout_blob(
        &run.layout,
        layers[1]["digest"].as_str().unwrap(),
    ));
    if planned.keys().any(|name| name.starts_with("lib")) {
        assert!(paths.iter().any(|p| p == "etc/ld.so.cache"), "{paths:#?}");
    }
    let leaked: Vec<&String> = paths
        .iter()
        .filter(|p| {
            p.starts_with("var/lib/apt/lists/")
                || p.starts_with("var/cache/apt/")
                || p.starts_with("var/log/apt")
                || p.as_str() == "var/log/dpkg.log"
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");

    // A report naming a package with shell metacharacters never reaches BuildKit.
    let stderr = String::from_utf8_lossy(&run.evil_report.stderr);
    assert_eq!(run.evil_report.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused before anything runs"), "{stderr}");
    assert!(!run.patched.join("pwned").exists());

    // Distroless: the tooling image's dpkg unpacked the same versions into the image, and
    // the status.d entries say so; the library files equal the native engine's.
    let (packages, root, summary) = &run.distroless;
    assert!(summary.contains("distroless dpkg"), "{summary}");
    for name in packages {
        let entry = std::fs::read_to_string(root.join("var/lib/dpkg/status.d").join(name)).unwrap();
        let version = f.debs.get(name).unwrap();
        assert!(
            entry.contains(&format!("\nVersion: {version}\n")),
            "{name}: {entry}"
        );
        let list = ["", ":amd64"]
            .iter()
            .find_map(|arch| {
                std::fs::read_to_string(
                    f.patched
                        .join(format!("var/lib/dpkg/info/{name}{arch}.list")),
                )
                .ok()
            })
            .unwrap();
        let library = list
            .lines()
            .find(|path| path.contains(".so.") && f.patched.join(&path[1..]).is_file())
            .unwrap_or_else(|| panic!("{name} ships no library"));
        let native = std::fs::read(f.patched.join(&library[1..])).unwrap();
        let through_buildkit = std::fs::read(root.join(&library[1..])).unwrap();
        assert!(
            native == through_buildkit,
            "{library} differs from the native engine's"
        );
    }
    assert!(
        !root.join("bin/sh").exists(),
        "the tooling image leaked into the result"
    );

    // Patch on pull: the proxy served the patched image for the tag.
    let pulled = &run.pulled;
    let served_layers = pulled.manifest["layers"].as_array().unwrap();
    assert_eq!(served_layers.len(), 2);
    assert_eq!(served_layers[0], original["layers"][0]);
    let original_digest = pulled.manifest["annotations"]["org.opencontainers.image.base.digest"]
        .as_str()
        .unwrap();
    assert_ne!(pulled.digest, original_digest);
    for (name, version) in &planned {
        assert!(
            pulled.status.contains(&format!("Package: {name}\n")),
            "{name} missing from the served patch layer's status"
        );
        let paragraph = pulled
            .status
            .split("\n\n")
            .find(|p| p.starts_with(&format!("Package: {name}\n")))
            .unwrap();
        assert!(
            paragraph.contains(&format!("\nVersion: {version}\n")),
            "{name} in the served image: {paragraph}"
        );
    }
}
