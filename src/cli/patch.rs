//! `patchpull patch <image-ref>`: copa's job in one command. Plans from `--report` or the
//! built-in scanner, patches natively (or through BuildKit: `--engine`, `--buildkit`),
//! checks the result, then pushes it
//! (`--push`), writes an OCI layout (`--oci-dir`) and the VEX document (`--vex`). Progress
//! goes to stderr, the summary table to stdout, one section per platform saying what
//! became of it. Exit 0 when patched (an index in part, as `patch.partial_index` allows:
//! the platforms that failed keep their originals and the summary says why) or nothing
//! to patch, 1 on any error, 2 on usage errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use super::image_ref::{builtin_config, ImageRef};
use crate::buildkit::transport::BuildkitAddress;
use crate::config::{Config, PatchEngine};
use crate::distribution::{Digest, Reference};
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::patch::buildkit::{BuildkitEngine, ImageSource};
use crate::patch::job::{EngineReport, PatchOptions, PatchedImage, Patcher, PlatformOutcome};
use crate::scan::builtin::BuiltinScanner;
use crate::scan::plan::{PlanOptions, Severity};
use crate::scan::report;
use crate::store::Store;
use crate::upstream::push::BlobSource;
use crate::upstream::Route;

#[derive(Debug, clap::Args)]
pub struct PatchArgs {
    /// Image reference: `[registry[:port]/]repository[:tag|@digest]`.
    image: String,
    /// A Trivy or copa report to plan from; without it the built-in scanner decides.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The patched image's reference (`[registry/]repository:tag`).
    #[arg(long, value_name = "REF", conflicts_with = "tag_suffix")]
    tag: Option<String>,
    /// Tag the patched image `<tag>-<suffix>` in the same repository.
    #[arg(long, default_value = "patched")]
    tag_suffix: String,
    /// Push the patched image to its registry.
    #[arg(long)]
    push: bool,
    /// Write the patched image as an OCI image layout into this directory.
    #[arg(long, value_name = "DIR")]
    oci_dir: Option<PathBuf>,
    /// Write the OpenVEX document here.
    #[arg(long, value_name = "FILE")]
    vex: Option<PathBuf>,
    /// Only these platforms (comma-separated, e.g. `linux/amd64,linux/arm64`).
    #[arg(long, value_delimiter = ',')]
    platform: Vec<String>,
    /// Leave out fixes below this severity (LOW, MEDIUM, HIGH, CRITICAL).
    #[arg(long)]
    min_severity: Option<String>,
    /// Reach registries that are not configured upstreams over plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Patch what can be patched: leave out packages that cannot be fetched or installed.
    #[arg(long)]
    ignore_errors: bool,
    /// The engine: `native`, `buildkit` or `auto` (default: `patch.engine`).
    #[arg(long, value_parser = ["native", "buildkit", "auto"])]
    engine: Option<String>,
    /// BuildKit engine: run the package manager even when BuildKit has the same step
    /// cached (as `docker build --no-cache`, but apt's cache mounts are kept).
    #[arg(long)]
    no_cache: bool,
    /// The BuildKit to use (default: `patch.buildkit.address`): `unix:///PATH`,
    /// `tcp://HOST:PORT` or `docker-unix:///var/run/docker.sock`.
    #[arg(long, value_name = "ADDRESS")]
    buildkit: Option<String>,
}

fn progress(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "==> {message}");
}

pub fn run(mut config: Config, args: PatchArgs) -> anyhow::Result<()> {
    let image = ImageRef::parse(&args.image)?;
    let ns = image.reach(&mut config, args.insecure)?;
    let target = match &args.tag {
        Some(tag) => {
            let parsed = ImageRef::parse(tag)?;
            let registry = if tag.contains('/') && parsed.registry != "docker.io" {
                parsed.registry.clone()
            } else {
                image.registry.clone()
            };
            if registry != image.registry {
                bail!("--tag must name a repository of {} (cross-registry copies are not supported yet)", image.registry);
            }
            match parsed.reference {
                Reference::Tag(_) => {}
                Reference::Digest(_) => bail!("--tag {tag}: a tag, not a digest"),
            }
            (parsed.repository.clone(), parsed.reference.clone())
        }
        None => {
            let tag = match &image.reference {
                Reference::Tag(tag) => format!("{tag}-{}", args.tag_suffix),
                Reference::Digest(d) => format!("{}-{}", &d.hex()[..12], args.tag_suffix),
            };
            (
                image.repository.clone(),
                tag.parse().context("the patched tag")?,
            )
        }
    };
    let min_severity = match &args.min_severity {
        Some(s) => Some(Severity::parse(s).with_context(|| format!("unknown severity {s:?}"))?),
        None => None,
    };
    let report = match &args.report {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(
                report::parse(&bytes)
                    .with_context(|| format!("reading the report {}", path.display()))?,
            )
        }
        None => None,
    };
    let base_name = match &image.reference {
        Reference::Tag(tag) => format!("{}:{tag}", image.name()),
        Reference::Digest(d) => format!("{}@{d}", image.name()),
    };
    let options = PatchOptions {
        platforms: args.platform.clone(),
        report,
        plan: PlanOptions {
            min_severity,
            ..PlanOptions::default()
        },
        base_name,
        ignore_errors: args.ignore_errors,
        no_cache: args.no_cache,
        partial_index: config.patch.partial_index,
    };
    let (engine, buildkit) = engine_choice(&config, &args)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(Store::open(&config.storage, metrics.clone())?);
        let mirror = Arc::new(Mirror::new(&config, store, metrics)?);
        let route = mirror
            .route(&image.repository, Some(&ns))
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let scanner = Arc::new(
            BuiltinScanner::new(builtin_config(&config.scan))
                .map_err(|e| anyhow::anyhow!("built-in scanner: {e}"))?,
        );
        // Precedence as in `scan`: --report, then scan.command, then the built-in scanner.
        let patcher = Patcher::new(
            mirror.clone(),
            scanner,
            config.storage.path.join("patch-tmp"),
        )
        .with_progress(Arc::new(|message: &str| progress(message)))
        .with_unpack_cache(crate::patch::unpack_cache::UnpackCache::for_config(&config))
        .with_scan_command(&config.scan)
        .map_err(|e| anyhow::anyhow!(e))?
        .with_engine(
            engine,
            buildkit.map(|address| {
                (
                    Arc::new(BuildkitEngine::new(address, config.patch.buildkit.clone())),
                    ImageSource::Registry(image.registry.clone()),
                )
            }),
            &config.scan,
        );
        progress(&format!("patching {}", args.image));
        let patched = patcher
            .patch(&route, &image.reference, &options)
            .await
            .with_context(|| format!("patching {}", args.image))?;
        print!("{}", summary(&patched));
        if patched.is_partial() {
            progress(&format!(
                "patched in part: the platforms that failed keep their original manifests (patch.partial_index = \"{}\")",
                options.partial_index.as_str()
            ));
        }
        let Some((top, top_digest, top_type)) = &patched.top else {
            println!("nothing to patch: {} is unchanged", args.image);
            return anyhow::Ok(());
        };
        let vex_document = vex_of(&image, &patched)?;
        if let Some(path) = &args.vex {
            std::fs::write(path, &vex_document)
                .with_context(|| format!("writing {}", path.display()))?;
            progress(&format!("VEX written to {}", path.display()));
        }
        if let Some(dir) = &args.oci_dir {
            progress(&format!("writing the OCI layout {}", dir.display()));
            write_oci_layout(&mirror, &route, &patched, dir, &target.1).await?;
        }
        if args.push {
            let reference = format!("{}/{}:{}", image.registry, target.0, target.1);
            progress(&format!("pushing {reference}"));
            push(&mirror, &route, &patched, &target.0, &target.1).await?;
            println!("pushed {reference}@{top_digest}");
        }
        println!(
            "patched image {top_digest} ({top_type}, {} bytes)",
            top.len()
        );
        anyhow::Ok(())
    })
}

/// `--engine` and `--buildkit` over `patch.engine` and `[patch.buildkit]`: the engine,
/// and the BuildKit address when there is one.
fn engine_choice(
    config: &Config,
    args: &PatchArgs,
) -> anyhow::Result<(PatchEngine, Option<BuildkitAddress>)> {
    let engine = match &args.engine {
        Some(name) => PatchEngine::parse(name).with_context(|| format!("--engine {name}"))?,
        None => config.patch.engine,
    };
    let address = match &args.buildkit {
        Some(address) => Some(
            address
                .parse()
                .map_err(|e| anyhow::anyhow!("--buildkit {address}: {e}"))?,
        ),
        None => config.patch.buildkit.address.clone(),
    };
    if engine == PatchEngine::Buildkit && address.is_none() {
        bail!("--engine buildkit needs a BuildKit: --buildkit ADDRESS or `patch.buildkit.address`");
    }
    Ok((engine, address))
}

fn summary(patched: &PatchedImage) -> String {
    let mut out = String::new();
    for platform in &patched.platforms {
        out.push_str(&format!(
            "{} {}\n",
            platform.original.platform, platform.original.manifest.digest
        ));
        match &platform.outcome {
            PlatformOutcome::Unchanged { reason } => {
                out.push_str(&format!("  unchanged: {reason}\n"))
            }
            PlatformOutcome::Failed { error, .. } => {
                out.push_str(&format!("  not patched, the original is kept: {error}\n"))
            }
            PlatformOutcome::Patched(p) => {
                out.push_str(&format!(
                    "  {:<28} {:<28} {:<28} {:<6} {}\n",
                    "PACKAGE", "INSTALLED", "FIXED", "CVES", "NOW"
                ));
                if let Some(plan) = &platform.plan {
                    for update in &plan.updates {
                        let now = p
                            .verified
                            .iter()
                            .find(|v| v.name == update.name)
                            .and_then(|v| v.installed.clone())
                            .unwrap_or_default();
                        out.push_str(&format!(
                            "  {:<28} {:<28} {:<28} {:<6} {}\n",
                            update.name,
                            update.installed_version,
                            update.fixed_version,
                            update.fixes.len(),
                            now
                        ));
                    }
                    for skipped in &plan.not_planned {
                        out.push_str(&format!(
                            "  not planned: {} {} {}: {}\n",
                            skipped.name,
                            skipped.installed_version,
                            skipped.vulnerability_id,
                            skipped.reason
                        ));
                    }
                }
                match &p.engine {
                    EngineReport::Native(native) => {
                        for outcome in &native.outcomes {
                            for kept in &outcome.conffiles_kept {
                                out.push_str(&format!("  {}: kept the image's {kept}; the package's version is {kept}.dpkg-dist\n", outcome.name));
                            }
                        }
                        if let Some(scripts) = &native.scripts {
                            out.push_str(&format!(
                                "  maintainer scripts run: {}\n",
                                scripts.ran.len()
                            ));
                        }
                        for note in &native.not_run {
                            out.push_str(&format!("  scripts: {note}\n"));
                        }
                    }
                    EngineReport::Apk(apk) => {
                        for outcome in &apk.outcomes {
                            for kept in &outcome.protected_kept {
                                out.push_str(&format!("  {}: kept the image's {kept}; the package's version is {kept}.apk-new\n", outcome.name));
                            }
                        }
                        for package in &apk.packages {
                            out.push_str(&format!(
                                "  {} {}: {} (identity {} from the signed index of {})\n",
                                package.name,
                                package.version,
                                package.url,
                                package.checksum,
                                package.repository
                            ));
                        }
                    }
                    EngineReport::Buildkit(buildkit) => out.push_str(&format!(
                        "  engine: {} through {} ({} steps)\n",
                        buildkit.adapter,
                        buildkit.daemon,
                        buildkit.steps.len()
                    )),
                }
                out.push_str(&format!(
                    "  patch layer {} ({} bytes), image {}\n",
                    p.layer.digest, p.layer.size, p.image.manifest_digest
                ));
            }
        }
    }
    out
}

fn vex_of(image: &ImageRef, patched: &PatchedImage) -> anyhow::Result<Vec<u8>> {
    let timestamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    patched
        .vex_document(&image.name(), &timestamp)?
        .context("nothing was patched")
}

/// Every blob of the patched image: (digest, size, where it is).
enum Blob {
    Local(PathBuf),
    Bytes(Vec<u8>),
    Mirror,
}

fn blobs(patched: &PatchedImage) -> Vec<(Digest, u64, Blob)> {
    let mut blobs = Vec::new();
    for platform in &patched.platforms {
        match &platform.outcome {
            PlatformOutcome::Patched(p) => {
                for layer in &platform.original.layers {
                    if let Ok(digest) = layer.digest.parse::<Digest>() {
                        if digest != p.layer.digest {
                            blobs.push((digest, 0, Blob::Mirror));
                        }
                    }
                }
                blobs.push((
                    p.layer.digest.clone(),
                    p.layer.size,
                    Blob::Local(p.layer.path.clone()),
                ));
                blobs.push((
                    p.image.config_digest.clone(),
                    p.image.config.len() as u64,
                    Blob::Bytes(p.image.config.clone()),
                ));
            }
            PlatformOutcome::Unchanged { .. } | PlatformOutcome::Failed { .. } => {
                for layer in &platform.original.layers {
                    if let Ok(digest) = layer.digest.parse::<Digest>() {
                        blobs.push((digest, 0, Blob::Mirror));
                    }
                }
                blobs.push((platform.original.config_digest.clone(), 0, Blob::Mirror));
            }
        }
    }
    for (_, referenced) in &patched.others {
        blobs.extend(referenced.iter().map(|d| (d.clone(), 0, Blob::Mirror)));
    }
    blobs
}

/// Platform manifests: (digest, media type, bytes).
fn manifests(patched: &PatchedImage) -> Vec<(Digest, String, Vec<u8>)> {
    patched
        .platforms
        .iter()
        .map(|platform| match &platform.outcome {
            PlatformOutcome::Patched(p) => (
                p.image.manifest_digest.clone(),
                p.image.manifest_media_type.clone(),
                p.image.manifest.clone(),
            ),
            PlatformOutcome::Unchanged { .. } | PlatformOutcome::Failed { .. } => (
                platform.original.manifest.digest.clone(),
                platform.original.manifest.media_type.clone(),
                platform.original.manifest.bytes.to_vec(),
            ),
        })
        .chain(
            patched
                .others
                .iter()
                .map(|(m, _)| (m.digest.clone(), m.media_type.clone(), m.bytes.to_vec())),
        )
        .collect()
}

async fn push(
    mirror: &Arc<Mirror>,
    route: &Route,
    patched: &PatchedImage,
    repository: &str,
    reference: &Reference,
) -> anyhow::Result<()> {
    let upstream = &route.upstream;
    let mount_from = (repository != route.repository).then_some(route.repository.as_str());
    for (digest, size, blob) in blobs(patched) {
        match blob {
            Blob::Mirror => {
                if upstream.has_blob(repository, &digest).await? {
                    continue;
                }
                // The registry has it under the original repository: mount it.
                let bytes = read_mirror_blob(mirror, route, &digest).await?;
                let size = bytes.len() as u64;
                upstream
                    .push_blob(
                        repository,
                        &digest,
                        size,
                        BlobSource::Bytes(bytes.into()),
                        mount_from,
                    )
                    .await?;
            }
            Blob::Local(path) => {
                upstream
                    .push_blob(repository, &digest, size, BlobSource::File(path), None)
                    .await?
            }
            Blob::Bytes(bytes) => {
                upstream
                    .push_blob(
                        repository,
                        &digest,
                        size,
                        BlobSource::Bytes(bytes.into()),
                        None,
                    )
                    .await?
            }
        }
    }
    let Some((top, top_digest, top_type)) = &patched.top else {
        return Ok(());
    };
    for (digest, media_type, bytes) in manifests(patched) {
        if digest != *top_digest {
            upstream
                .push_manifest(
                    repository,
                    &Reference::Digest(digest),
                    &media_type,
                    bytes.into(),
                )
                .await?;
        }
    }
    let pushed = upstream
        .push_manifest(repository, reference, top_type, top.clone().into())
        .await?;
    if pushed != *top_digest {
        bail!("the registry stored {pushed}, expected {top_digest}");
    }
    Ok(())
}

async fn read_mirror_blob(
    mirror: &Arc<Mirror>,
    route: &Route,
    digest: &Digest,
) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = mirror
        .blob_file(route, digest)
        .await
        .map_err(|e| anyhow::anyhow!("{digest}: {}", e.message))?;
    let mut bytes = Vec::new();
    (&*file).read_to_end(&mut bytes)?;
    Ok(bytes)
}

async fn write_oci_layout(
    mirror: &Arc<Mirror>,
    route: &Route,
    patched: &PatchedImage,
    dir: &Path,
    reference: &Reference,
) -> anyhow::Result<()> {
    let blob_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir)
        .with_context(|| format!("creating {}", blob_dir.display()))?;
    let write = |digest: &Digest, bytes: &[u8]| -> anyhow::Result<()> {
        let path = blob_dir.join(digest.hex());
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    for (digest, _, blob) in blobs(patched) {
        match blob {
            Blob::Mirror => {
                let file = mirror
                    .blob_file(route, &digest)
                    .await
                    .map_err(|e| anyhow::anyhow!("{digest}: {}", e.message))?;
                let path = blob_dir.join(digest.hex());
                let mut out = std::fs::File::create(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                std::io::copy(&mut &*file, &mut out)?;
            }
            Blob::Local(path) => {
                std::fs::copy(&path, blob_dir.join(digest.hex()))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
            Blob::Bytes(bytes) => write(&digest, &bytes)?,
        }
    }
    for (digest, _, bytes) in manifests(patched) {
        write(&digest, &bytes)?;
    }
    let Some((top, top_digest, top_type)) = &patched.top else {
        return Ok(());
    };
    write(top_digest, top)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::distribution::media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": top_type,
            "digest": top_digest.to_string(),
            "size": top.len(),
            "annotations": {"org.opencontainers.image.ref.name": reference.to_string()},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    Ok(())
}
