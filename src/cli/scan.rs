//! `patchpull scan <image-ref>`: read an image's package inventory through the mirror
//! machinery (verified, cached blobs; only the layers that hold the package database) and
//! print the plan: from a report (`--report`), else from the built-in scanner for dpkg
//! images (the distribution's signed repositories), else the inventory alone.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::image_ref::{builtin_config, ImageRef};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::mirror::image::PlatformImage;
use crate::mirror::Mirror;
use crate::pkgs::{Ecosystem, Inventory};
use crate::scan::builtin::BuiltinScanner;
use crate::scan::cache::{ScanCache, ScanKey};
use crate::scan::command::{CommandInput, ScannerCommand};
use crate::scan::plan::{Plan, PlanOptions, PlanSource, Platform, Severity};
use crate::scan::report;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Image reference: `[registry[:port]/]repository[:tag|@digest]`.
    image: String,
    /// Output: `table` for people, `trivy` for Trivy-schema JSON.
    #[arg(long, default_value = "table", value_parser = ["table", "trivy"])]
    format: String,
    /// A Trivy or copa report to check against the image and plan from.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Reach a registry that is not configured as an upstream over plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Only this platform of a multi-platform image, e.g. `linux/arm64`.
    #[arg(long)]
    platform: Option<String>,
    /// Leave out fixes below this severity (LOW, MEDIUM, HIGH, CRITICAL).
    #[arg(long)]
    min_severity: Option<String>,
    /// Only list what is installed; do not look for fixes.
    #[arg(long)]
    inventory_only: bool,
}

pub fn run(mut config: Config, args: ScanArgs) -> anyhow::Result<()> {
    let image = ImageRef::parse(&args.image)?;
    let ns = image.reach(&mut config, args.insecure)?;
    let min_severity = match &args.min_severity {
        Some(s) => Some(Severity::parse(s).with_context(|| format!("unknown severity {s:?}"))?),
        None => None,
    };
    let report_bytes = match &args.report {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(Store::open(&config.storage, metrics.clone())?);
        let mirror = Arc::new(Mirror::new(&config, store, metrics)?);
        let route = mirror
            .route(&image.repository, Some(&ns))
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let mut images = mirror
            .platform_images(&route, &image.reference)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", args.image, e.message))?;
        if let Some(wanted) = &args.platform {
            images.retain(|i| {
                i.platform.to_string() == *wanted
                    || format!("{}/{}", i.platform.os, i.platform.architecture) == *wanted
            });
            if images.is_empty() {
                bail!("{} has no platform {wanted}", args.image);
            }
        }
        let parsed_report = match &report_bytes {
            Some(bytes) => Some(report::parse(bytes).context("reading the report")?),
            None => None,
        };
        let options = PlanOptions {
            min_severity,
            unknown_severity: config.patch.unknown_severity,
            ..PlanOptions::default()
        };
        let mut platform_plans = Vec::new();
        let mut inventories = Vec::new();
        let mut builtin: Option<BuiltinScanner> = None;
        let mut builtin_source = None;
        let mut command_source = None;
        let scanner_command = match config.scan.command.is_empty() {
            true => None,
            false => Some(ScannerCommand::new(
                config.scan.command.clone(),
                config.scan.command_timeout,
            )?),
        };
        // Plans of a scanner command and of the built-in scanner, by the image's layers.
        let results = match args.inventory_only {
            true => None,
            false => Some(ScanCache::open(
                config.scan.cache_dir.join("results"),
                config.scan.result_ttl,
            )?),
        };
        for img in &images {
            let inventory = mirror
                .inventory(&route, img)
                .await
                .map_err(|e| anyhow::anyhow!("{} ({}): {}", args.image, img.platform, e.message))?
                .with_context(|| {
                    format!(
                        "{} ({}): no supported package database found",
                        args.image, img.platform
                    )
                })?;
            let platform = to_plan_platform(img);
            if let Some(report) = &parsed_report {
                let plan = report::plan_from_report(report, &platform, &inventory, &options)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "the report does not match {} ({}):\n{e}",
                            args.image,
                            img.platform
                        )
                    })?;
                platform_plans.extend(plan.platforms);
            } else if let (false, Some(command), Some(results)) =
                (args.inventory_only, &scanner_command, &results)
            {
                let key = ScanKey::command(
                    &img.config_digest.to_string(),
                    img.layers.iter().map(|l| l.digest.as_str()),
                    &img.platform.to_string(),
                    &command.display(),
                    &options,
                );
                command_source = Some(PlanSource::ScannerCommand {
                    command: command.display(),
                });
                if let Some(plan) = results.get(&key) {
                    platform_plans.extend(plan.platforms.clone());
                    inventories.push((img.clone(), inventory));
                    continue;
                }
                let oci_dir = tempfile_dir(&config.storage.path)?;
                if command.wants_oci_dir() {
                    mirror
                        .export_oci_layout(&route, img, oci_dir.path())
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "exporting {} ({}): {}",
                                args.image,
                                img.platform,
                                e.message
                            )
                        })?;
                }
                let report = command
                    .run(&CommandInput {
                        image: &args.image,
                        oci_dir: oci_dir.path(),
                        platform: &img.platform.to_string(),
                    })
                    .await?;
                let plan = report::plan_from_report(&report, &platform, &inventory, &options)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "the scanner's report does not match {} ({}):\n{e}",
                            args.image,
                            img.platform
                        )
                    })?;
                let plan = results.put(key, plan)?;
                platform_plans.extend(plan.platforms.clone());
            } else if !args.inventory_only
                && matches!(inventory.ecosystem, Ecosystem::Dpkg | Ecosystem::Apk)
            {
                if builtin.is_none() {
                    builtin = Some(
                        BuiltinScanner::new(builtin_config(&config.scan))
                            .map_err(|e| anyhow::anyhow!("built-in scanner: {e}"))?,
                    );
                }
                let Some(scanner) = builtin.as_ref() else {
                    bail!("built-in scanner unavailable");
                };
                let failed = |e: crate::scan::builtin::BuiltinError| {
                    anyhow::anyhow!("built-in scan of {} ({}): {e}", args.image, img.platform)
                };
                let version = scanner
                    .index_version(&inventory, &platform)
                    .await
                    .map_err(failed)?;
                let key = ScanKey::builtin(
                    img.layers.iter().map(|l| l.digest.as_str()),
                    &img.platform.to_string(),
                    &version,
                    &scanner.settings(),
                    &options,
                );
                let plan = match results.as_ref().and_then(|r| r.get(&key)) {
                    Some(plan) => plan.as_ref().clone(),
                    None => {
                        let plan = scanner
                            .scan(&inventory, &platform, &options)
                            .await
                            .map_err(failed)?
                            .plan;
                        match &results {
                            Some(results) => results.put(key, plan)?.as_ref().clone(),
                            None => plan,
                        }
                    }
                };
                builtin_source = Some(plan.source.clone());
                platform_plans.extend(plan.platforms);
            }
            inventories.push((img.clone(), inventory));
        }
        let plan = match (&parsed_report, command_source.or(builtin_source)) {
            (Some(r), _) => Some(Plan::new(r.format.plan_source(), platform_plans)),
            (None, Some(source)) => Some(Plan::new(source, platform_plans)),
            (None, None) => None,
        };
        let out = match args.format.as_str() {
            "trivy" => trivy_json(&args.image, &inventories, plan.as_ref())?,
            _ => table(&inventories, plan.as_ref()),
        };
        print!("{out}");
        anyhow::Ok(())
    })
}

/// A private temp directory for one scanner run, under the store's directory (same disk
/// as the blobs it copies), removed when dropped.
fn tempfile_dir(storage: &std::path::Path) -> anyhow::Result<TempDir> {
    let parent = storage.join("scanner-tmp");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    TempDir::new_in(&parent)
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new_in(parent: &std::path::Path) -> anyhow::Result<TempDir> {
        for _ in 0..16 {
            let path = parent.join(format!(
                "scanner-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("cannot create a temp directory in {}", parent.display())
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn to_plan_platform(img: &PlatformImage) -> Platform {
    Platform {
        os: img.platform.os.clone(),
        architecture: img.platform.architecture.clone(),
        variant: img.platform.variant.clone(),
    }
}

fn table(inventories: &[(PlatformImage, Inventory)], plan: Option<&Plan>) -> String {
    let mut out = String::new();
    for (img, inventory) in inventories {
        let os = inventory
            .os
            .pretty_name
            .clone()
            .unwrap_or_else(|| inventory.os.id.clone());
        out.push_str(&format!(
            "{} {} ({os}, {} packages, {})\n",
            img.platform,
            img.manifest.digest,
            inventory.packages.len(),
            inventory.ecosystem
        ));
        let Some(plan) = plan else {
            out.push_str(
                "  inventory only (no report given, and no built-in scanner for this image)\n",
            );
            continue;
        };
        let platform = to_plan_platform(img);
        for p in plan.platforms.iter().filter(|p| p.platform == platform) {
            if p.updates.is_empty() {
                out.push_str("  nothing to update\n");
            }
            let rows: Vec<[String; 4]> = p
                .updates
                .iter()
                .map(|u| {
                    let ids: Vec<&str> = u.fixes.iter().map(|f| f.id.as_str()).collect();
                    [
                        u.name.clone(),
                        u.installed_version.clone(),
                        u.fixed_version.clone(),
                        ids.join(", "),
                    ]
                })
                .collect();
            let header = ["PACKAGE", "INSTALLED", "FIXED", "VULNERABILITIES"].map(String::from);
            let mut widths = header.clone().map(|h| h.len());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                out.push_str(&format!(
                    "  {:<w0$}  {:<w1$}  {:<w2$}  {}\n",
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2]
                ));
            }
            if let Some(note) = &p.unknown_severity {
                out.push_str(&format!(
                    "  severity unknown under the minimum {} (patch.unknown_severity = \"{}\"): {}\n",
                    note.minimum,
                    note.choice.as_str(),
                    note.packages.join(", ")
                ));
            }
            if !p.not_planned.is_empty() {
                out.push_str(&format!(
                    "  not planned: {} finding(s)\n",
                    p.not_planned.len()
                ));
                for n in &p.not_planned {
                    out.push_str(&format!(
                        "    {} {} {}: {}\n",
                        n.name, n.installed_version, n.vulnerability_id, n.reason
                    ));
                }
            }
        }
    }
    out
}

/// Trivy's JSON schema (SchemaVersion 2), so tools that read Trivy reports read this.
fn trivy_json(
    artifact: &str,
    inventories: &[(PlatformImage, Inventory)],
    plan: Option<&Plan>,
) -> anyhow::Result<String> {
    let mut results = Vec::new();
    let mut metadata_os = serde_json::Value::Null;
    for (img, inventory) in inventories {
        metadata_os = serde_json::json!({
            "Family": inventory.os.id,
            "Name": inventory.os.version_id.clone().unwrap_or_default(),
        });
        let platform = to_plan_platform(img);
        let mut vulns = Vec::new();
        if let Some(plan) = plan {
            for p in plan.platforms.iter().filter(|p| p.platform == platform) {
                for u in &p.updates {
                    for f in &u.fixes {
                        vulns.push(serde_json::json!({
                            "VulnerabilityID": f.id,
                            "PkgName": u.name,
                            "InstalledVersion": u.installed_version,
                            "FixedVersion": f.fixed_version,
                            "Severity": f.severity.map(|s| s.as_str()).unwrap_or("UNKNOWN"),
                        }));
                    }
                }
            }
        }
        results.push(serde_json::json!({
            "Target": format!("{artifact} ({})", img.platform),
            "Class": "os-pkgs",
            "Type": inventory.os.id,
            "Packages": inventory.packages.iter().map(|p| serde_json::json!({
                "Name": p.name, "Version": p.version, "Arch": p.architecture,
            })).collect::<Vec<_>>(),
            "Vulnerabilities": vulns,
        }));
    }
    let doc = serde_json::json!({
        "SchemaVersion": 2,
        "ArtifactName": artifact,
        "ArtifactType": "container_image",
        "Metadata": { "OS": metadata_os },
        "Results": results,
    });
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}
