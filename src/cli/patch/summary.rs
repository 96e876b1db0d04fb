//! The summary table `patchpull patch` prints to stdout, one section per platform.

use crate::pipeline::patcher::{EngineReport, PatchedImage, PlatformOutcome};
use crate::scan::plan::{PlatformPlan, UnknownSeverity};

pub(super) fn summary(patched: &PatchedImage) -> String {
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
                    if let Some(line) = unknown_severity_line(plan) {
                        out.push_str(&line);
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

/// Under a minimum severity, what became of the findings no source gave a severity.
pub(super) fn unknown_severity_line(plan: &PlatformPlan) -> Option<String> {
    let note = plan.unknown_severity.as_ref()?;
    let verb = match note.choice {
        UnknownSeverity::Patch => "planned anyway",
        UnknownSeverity::Skip => "not planned",
    };
    Some(format!(
        "  severity unknown under the minimum {}: {verb} (patch.unknown_severity = \"{}\"): {}\n",
        note.minimum,
        note.choice.as_str(),
        note.packages.join(", ")
    ))
}

/// `--inventory-only`: one platform's packages.
pub(super) fn inventory_table(
    img: &crate::mirror::image::PlatformImage,
    inventory: &crate::pkgs::Inventory,
) -> String {
    let os = inventory
        .os
        .pretty_name
        .clone()
        .unwrap_or_else(|| inventory.os.id.clone());
    let mut out = format!(
        "{} {} ({os}, {} packages, {})\n",
        img.platform,
        img.manifest.digest,
        inventory.packages.len(),
        inventory.ecosystem
    );
    let rows: Vec<[String; 4]> = inventory
        .packages
        .iter()
        .map(|p| {
            let source = match (&p.source_name, &p.source_version) {
                (Some(name), Some(version)) => format!("{name} ({version})"),
                (Some(name), None) => name.clone(),
                (None, _) => String::new(),
            };
            [
                p.name.clone(),
                p.version.clone(),
                p.architecture.clone().unwrap_or_default(),
                source,
            ]
        })
        .collect();
    let header = ["PACKAGE", "VERSION", "ARCH", "SOURCE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        out.push_str(
            format!(
                "  {:<w0$}  {:<w1$}  {:<w2$}  {}\n",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}
