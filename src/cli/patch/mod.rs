//! `patchpull patch <image-ref>`: copa's job in one command. Plans from `--report` or the
//! built-in scanner, patches natively (or through BuildKit: `--engine`, `--buildkit`),
//! checks the result, then pushes it
//! (`--push`, signed with `--sign-key`: cosign's `.sig` and `.att` beside it), writes an OCI
//! layout (`--oci-dir`) and the VEX document (`--vex`). Progress
//! goes to stderr, the summary table to stdout, one section per platform saying what
//! became of it. Exit 0 when patched (an index in part, as `patch.partial_index` allows:
//! the platforms that failed keep their originals and the summary says why) or nothing
//! to patch, 1 on any error, 2 on usage errors.

mod output;
mod summary;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::image_ref::{builtin_config, ImageRef};
use crate::buildkit::transport::BuildkitAddress;
use crate::config::{Config, PatchEngine};
use crate::distribution::Reference;
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::patch::buildkit::{BuildkitEngine, ImageSource};
use crate::pipeline::patcher::{PatchOptions, Patcher};
use crate::scan::builtin::BuiltinScanner;
use crate::scan::plan::{PlanOptions, Severity};
use crate::scan::report::{self, ReportFormat, ScanReport};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct PatchArgs {
    /// Image reference: `[registry[:port]/]repository[:tag|@digest]` (or `-i/--image`).
    #[arg(
        value_name = "IMAGE",
        required_unless_present = "image_flag",
        conflicts_with = "image_flag"
    )]
    image: Option<String>,
    /// The image to patch, as copa's `-i/--image`.
    #[arg(short = 'i', long = "image", value_name = "IMAGE")]
    image_flag: Option<String>,
    /// A Trivy or copa report to plan from; without it the built-in scanner decides.
    #[arg(short = 'r', long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The patched image's tag, in the image's repository (copa's `-t`); a value with `:`
    /// or `@` is a whole reference (`[registry/]repository:tag`).
    #[arg(short = 't', long, value_name = "TAG")]
    tag: Option<String>,
    /// Without `--tag`: tag the patched image `<tag>-<suffix>` in the same repository (an
    /// image already tagged `...-<suffix>` keeps its tag).
    #[arg(long, default_value = "patched")]
    tag_suffix: String,
    /// Push the patched image to its registry.
    #[arg(short = 'p', long)]
    push: bool,
    /// Sign what `--push` pushes with this key: a cosign signature of every patched
    /// manifest (and index) and an in-toto attestation of the patch, pushed beside the
    /// image as cosign's `sha256-<hex>.sig`/`.att` tags. A PEM private key (PKCS#8 or SEC1
    /// EC P-256, or cosign's encrypted key, its password as `signing.password_env` or
    /// `signing.password_file` say).
    #[arg(long, value_name = "FILE", requires = "push")]
    sign_key: Option<PathBuf>,
    /// Write the patched image as an OCI image layout into this directory.
    #[arg(long, value_name = "DIR")]
    oci_dir: Option<PathBuf>,
    /// Write the VEX document here (copa's `-o/--output`).
    #[arg(
        short = 'o',
        long = "vex",
        visible_alias = "output",
        value_name = "FILE"
    )]
    vex: Option<PathBuf>,
    /// The VEX document's format: `openvex`, the only one (as copa).
    #[arg(short = 'f', long, default_value = "openvex", value_parser = ["openvex"])]
    format: String,
    /// The scanner that wrote `--report`: `trivy`, `native` (copa's own format), or a
    /// plugin NAME run as `copa-NAME REPORT` whose output is a copa report (as copa).
    /// Without it, a Trivy or copa report is recognised by its content.
    #[arg(short = 's', long, value_name = "SCANNER")]
    scanner: Option<String>,
    /// The longest the patch (and push) may take, as copa's `--timeout`.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Only these platforms (comma-separated, e.g. `linux/amd64,linux/arm64`).
    #[arg(long, value_delimiter = ',')]
    platform: Vec<String>,
    /// Leave out fixes below this severity (LOW, MEDIUM, HIGH, CRITICAL); unknown
    /// severities as `patch.unknown_severity` says.
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
    /// List the image's packages (name, version, architecture, source) and exit.
    #[arg(long)]
    inventory_only: bool,
    /// Log lines on stderr (at `log.level`) besides the progress lines.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Write log lines to this file (stderr keeps only progress).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

fn progress(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "==> {message}");
}

/// The patched image's (repository, tag): copa's rules. `--tag` without `:` or `@` is the
/// tag; with them, a whole reference. Else `<tag>-<suffix>`, unless the tag already ends
/// so: re-patching `1.0-patched` gives `1.0-patched`, not `1.0-patched-patched`.
fn patched_target(image: &ImageRef, args: &PatchArgs) -> anyhow::Result<(String, Reference)> {
    if let Some(tag) = &args.tag {
        if !tag.contains(':') && !tag.contains('@') {
            let parsed: Reference = tag
                .parse()
                .with_context(|| format!("--tag {tag:?} is not a valid tag"))?;
            return Ok((image.repository.clone(), parsed));
        }
        let parsed = ImageRef::parse(tag)?;
        let registry = if tag.contains('/') && parsed.registry != "docker.io" {
            parsed.registry.clone()
        } else {
            image.registry.clone()
        };
        if registry != image.registry {
            bail!(
                "--tag must name a repository of {} (cross-registry copies are not supported yet)",
                image.registry
            );
        }
        if let Reference::Digest(_) = parsed.reference {
            bail!("--tag {tag}: a tag, not a digest");
        }
        return Ok((parsed.repository.clone(), parsed.reference.clone()));
    }
    let suffix = format!("-{}", args.tag_suffix);
    let tag = match &image.reference {
        Reference::Tag(tag) if tag.ends_with(&suffix) => tag.clone(),
        Reference::Tag(tag) => format!("{tag}{suffix}"),
        Reference::Digest(d) => format!("{}{suffix}", &d.hex()[..12]),
    };
    Ok((
        image.repository.clone(),
        tag.parse().context("the patched tag")?,
    ))
}

/// Reads `--report` as `--scanner` says.
fn read_report(path: &std::path::Path, scanner: Option<&str>) -> anyhow::Result<ScanReport> {
    let bytes = match scanner {
        None | Some("trivy") | Some("native") => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        Some(plugin) => {
            let valid = plugin
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && plugin
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                bail!("--scanner {plugin:?}: a scanner plugin name is letters, digits, _ and -");
            }
            let program = format!("copa-{plugin}");
            let out = std::process::Command::new(&program)
                .arg(path)
                .output()
                .with_context(|| format!("--scanner {plugin}: running {program} (on PATH?)"))?;
            if !out.status.success() {
                bail!(
                    "--scanner {plugin}: {program} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            out.stdout
        }
    };
    let parsed =
        report::parse(&bytes).with_context(|| format!("reading the report {}", path.display()))?;
    let copa = matches!(
        parsed.format,
        ReportFormat::CopaV1alpha1 | ReportFormat::CopaV1alpha2
    );
    match scanner {
        Some("trivy") if copa => bail!(
            "{} is a copa report, not Trivy's: use --scanner native",
            path.display()
        ),
        Some(name) if name != "trivy" && !copa => bail!(
            "--scanner {name}: expected a copa report (apiVersion v1alpha1 or v1alpha2), found Trivy's JSON"
        ),
        _ => Ok(parsed),
    }
}

pub fn run(mut config: Config, args: PatchArgs) -> anyhow::Result<()> {
    let image_text = args
        .image
        .clone()
        .or_else(|| args.image_flag.clone())
        .context("name the image to patch (IMAGE or -i/--image)")?;
    let image = ImageRef::parse(&image_text)?;
    let ns = image.reach(&mut config, args.insecure)?;
    let target = patched_target(&image, &args)?;
    let min_severity = match &args.min_severity {
        Some(s) => Some(Severity::parse(s).with_context(|| format!("unknown severity {s:?}"))?),
        None => None,
    };
    let report = match &args.report {
        Some(path) => Some(read_report(path, args.scanner.as_deref())?),
        None if args.scanner.is_some() => {
            bail!("--scanner names the scanner of --report; give --report too")
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
            unknown_severity: config.patch.unknown_severity,
            ..PlanOptions::default()
        },
        base_name,
        ignore_errors: args.ignore_errors,
        no_cache: args.no_cache,
        partial_index: config.patch.partial_index,
        original_signature: None,
    };
    // The key is read before anything is patched: a wrong password fails at once.
    let signer = match &args.sign_key {
        Some(path) => {
            let signing = crate::config::SigningConfig {
                key: Some(path.clone()),
                ..config.signing.clone()
            };
            crate::sign::Signer::from_config(&signing).context("--sign-key")?
        }
        None => None,
    };
    let (engine, buildkit) = engine_choice(&config, &args)?;
    let insecure_hint = hint_for_http(&image, &config, args.insecure);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let timeout = args.timeout;
    let work = runtime.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(Store::open(&config.storage, metrics.clone())?);
        let mirror = Arc::new(Mirror::new(&config, store, metrics)?);
        let route = mirror
            .route(&image.repository, Some(&ns))
            .map_err(|e| anyhow::anyhow!(e.message))?;
        if args.inventory_only {
            return inventory(&mirror, &route, &image, &image_text).await;
        }
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
        let patch = async {
            progress(&format!("patching {image_text}"));
            let patched = patcher
                .patch(&route, &image.reference, &options)
                .await
                .with_context(|| format!("patching {image_text}"))?;
            print!("{}", summary::summary(&patched));
            if patched.is_partial() {
                progress(&format!(
                    "patched in part: the platforms that failed keep their original manifests (patch.partial_index = \"{}\")",
                    options.partial_index.as_str()
                ));
            }
            let Some((top, top_digest, top_type)) = &patched.top else {
                println!("nothing to patch: {image_text} is unchanged");
                return anyhow::Ok(());
            };
            let vex_document = output::vex_of(&image, &patched)?;
            if let Some(path) = &args.vex {
                std::fs::write(path, &vex_document)
                    .with_context(|| format!("writing {}", path.display()))?;
                progress(&format!("VEX written to {}", path.display()));
            }
            if let Some(dir) = &args.oci_dir {
                progress(&format!("writing the OCI layout {}", dir.display()));
                output::write_oci_layout(&mirror, &route, &patched, dir, &target.1).await?;
            }
            if args.push {
                let reference = format!("{}/{}:{}", image.registry, target.0, target.1);
                progress(&format!("pushing {reference}"));
                output::push(&mirror, &route, &patched, &target.0, &target.1).await?;
                println!("pushed {reference}@{top_digest}");
                if let Some(signer) = &signer {
                    // The signed identity is the name it was pushed as, as `cosign sign`
                    // writes it.
                    let name = format!("{}/{}", image.registry, target.0);
                    let attachments = crate::pipeline::signing::attachments(
                        signer,
                        &name,
                        &patched.original.digest,
                        None,
                        &patched,
                    );
                    for tag in output::push_attachments(&route, &target.0, attachments).await? {
                        println!("pushed {name}:{tag}");
                    }
                    progress(&format!(
                        "signed with key {}",
                        signer.public().fingerprint()
                    ));
                }
            }
            println!(
                "patched image {top_digest} ({top_type}, {} bytes)",
                top.len()
            );
            anyhow::Ok(())
        };
        match tokio::time::timeout(timeout, patch).await {
            Ok(result) => result,
            Err(_) => bail!(
                "patching {image_text} took longer than --timeout {}",
                humantime::format_duration(timeout)
            ),
        }
    });
    // The TLS library's words for "that was not TLS" mean nothing to a user; the fix does.
    work.map_err(|e| match insecure_hint {
        Some(hint) if looks_like_tls_to_http(&e) => anyhow::anyhow!(hint),
        _ => e,
    })
}

/// For a registry reached over https that may be plain HTTP (a loopback or private
/// address, or a port): what to add.
fn hint_for_http(image: &ImageRef, config: &Config, insecure: bool) -> Option<String> {
    if insecure {
        return None;
    }
    let configured = config
        .upstream
        .iter()
        .any(|u| u.name != "cli" && (u.name == image.registry || u.authority() == image.registry));
    (!configured).then(|| {
        format!(
            "{registry} did not answer HTTPS (a plain-HTTP registry?): add --insecure to reach {registry} over HTTP",
            registry = image.registry
        )
    })
}

/// A TLS handshake against a plain-HTTP server fails with these words somewhere in the chain.
fn looks_like_tls_to_http(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}").to_ascii_lowercase();
    [
        "tls",
        "ssl",
        "certificate",
        "handshake",
        "invalid http version",
        "corrupt message",
        "unexpected eof",
        "http2",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// `--inventory-only`: every platform's packages, as a table.
async fn inventory(
    mirror: &Arc<Mirror>,
    route: &crate::upstream::Route,
    image: &ImageRef,
    image_text: &str,
) -> anyhow::Result<()> {
    let images = mirror
        .platform_images(route, &image.reference)
        .await
        .map_err(|e| anyhow::anyhow!("{image_text}: {}", e.message))?;
    let mut out = String::new();
    for img in &images {
        let inventory = mirror
            .inventory(route, img)
            .await
            .map_err(|e| anyhow::anyhow!("{image_text} ({}): {}", img.platform, e.message))?
            .with_context(|| {
                format!(
                    "{image_text} ({}): no supported package database found",
                    img.platform
                )
            })?;
        out.push_str(&summary::inventory_table(img, &inventory));
    }
    print!("{out}");
    Ok(())
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
