//! One platform of an image: what is patched ([`PlatformJob`]), its plan, the engine that
//! builds its layer, and the patched image assembled from it.

use std::path::Path;

use crate::config::PatchEngine;
use crate::distribution::Digest;
use crate::image::LayerDescriptor;
use crate::metrics::PatchStage;
use crate::mirror::image::PlatformImage;
use crate::patch::assemble::{self, ImageInput, PatchLayer};
use crate::patch::native::NativeError;
use crate::patch::PatchError;
use crate::pkgs::{Ecosystem, Inventory};
use crate::scan::plan::{Platform, PlatformPlan};
use crate::upstream::Route;

use super::build::history_text;
use super::{PatchOptions, PatchedPlatform, Patcher, PlatformOutcome, PlatformResult};

/// One platform being patched: what every stage (plan, fetch, build, verify, assemble)
/// reads. Built once its package database is known.
pub(super) struct PlatformJob<'a> {
    pub(super) route: &'a Route,
    /// The platform's image as upstream serves it.
    pub(super) image: &'a PlatformImage,
    /// `image` without a patch layer patchpull added before: what is planned, patched and
    /// verified (re-patching replaces that layer).
    pub(super) base: PlatformImage,
    /// The image's config blob.
    pub(super) config: &'a [u8],
    /// What `base` has installed.
    pub(super) inventory: Inventory,
    pub(super) platform: Platform,
    pub(super) options: &'a PatchOptions,
    /// This platform's scratch directory.
    pub(super) work: &'a Path,
}

impl PlatformJob<'_> {
    /// The layers the patch layer goes on.
    pub(super) fn base_layers(&self) -> &[LayerDescriptor] {
        &self.base.layers
    }
}

/// A platform kept as it was, with the reason.
fn unchanged(
    plan: Option<PlatformPlan>,
    reason: impl Into<String>,
) -> (Option<PlatformPlan>, PlatformOutcome) {
    (
        plan,
        PlatformOutcome::Unchanged {
            reason: reason.into(),
        },
    )
}

impl Patcher {
    pub(super) async fn patch_platform(
        &self,
        route: &Route,
        image: PlatformImage,
        top_digest: &Digest,
        options: &PatchOptions,
        work: &Path,
    ) -> Result<PlatformResult, PatchError> {
        let (plan, outcome) = self
            .platform_outcome(route, &image, top_digest, options, work)
            .await?;
        Ok(PlatformResult {
            original: image,
            plan,
            outcome,
        })
    }

    async fn platform_outcome(
        &self,
        route: &Route,
        image: &PlatformImage,
        top_digest: &Digest,
        options: &PatchOptions,
        work: &Path,
    ) -> Result<(Option<PlatformPlan>, PlatformOutcome), PatchError> {
        let config = self
            .mirror
            .read_small_blob(route, &image.config_digest)
            .await
            .map_err(PatchError::from_api)?;
        // An image patchpull patched before is patched again from its base layers.
        let existing = assemble::existing_patch(&image.manifest.bytes, &config)?;
        let base = PlatformImage {
            layers: match &existing {
                Some(patch) => image.layers[..patch.layer_index.min(image.layers.len())].to_vec(),
                None => image.layers.clone(),
            },
            ..image.clone()
        };
        let Some(inventory) = self.inventory(route, &base, work).await? else {
            return Ok(unchanged(None, "no supported package database"));
        };
        let buildkit_usable = self.buildkit.is_some() && self.engine != PatchEngine::Native;
        // The native engine patches dpkg images and Alpine's apk images (it fetches from
        // Alpine's signed repositories); rpm, Wolfi and Chainguard need BuildKit.
        let native_capable = match inventory.ecosystem {
            Ecosystem::Dpkg => true,
            Ecosystem::Apk => inventory.os.id == "alpine",
            Ecosystem::Rpm => false,
        };
        if !native_capable && !buildkit_usable {
            let kind = match inventory.ecosystem {
                Ecosystem::Apk => format!("apk images of {:?}", inventory.os.id),
                other => format!("{} images", other.as_str()),
            };
            return Ok(unchanged(
                None,
                format!("{kind} are patched through BuildKit only, and none is configured"),
            ));
        }
        let job = PlatformJob {
            route,
            image,
            base,
            config: &config,
            inventory,
            platform: Platform {
                os: image.platform.os.clone(),
                architecture: image.platform.architecture.clone(),
                variant: image.platform.variant.clone(),
            },
            options,
            work,
        };
        // Detached: it only fills the cache, which the build then finds (or waits for).
        let _unpacking = self.unpack_ahead(&job);
        let started = std::time::Instant::now();
        let platform_name = image.platform.to_string();
        // A macro, not a closure: a closure over `&str` held across awaits makes the
        // future's `Send` bound higher-ranked, which `tokio::spawn` cannot prove.
        macro_rules! stage {
            ($name:expr) => {
                tracing::info!(
                    platform = %platform_name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "patch stage done: {}",
                    $name
                )
            };
        }
        let plan = match self.platform_plan(&job, top_digest).await? {
            Ok(plan) => plan,
            Err(reason) => return Ok(unchanged(None, reason)),
        };
        stage!("plan");
        self.mirror
            .metrics()
            .patch_stage(PatchStage::Plan, started.elapsed().as_secs_f64());
        let build_started = std::time::Instant::now();
        if plan.updates.is_empty() {
            return Ok(unchanged(Some(plan), "nothing to fix"));
        }
        let mut plan = plan;
        let buildkit_first =
            buildkit_usable && (self.engine == PatchEngine::Buildkit || !native_capable);
        let built = if buildkit_first {
            self.build_with_buildkit(&job, &plan).await?
        } else {
            match self.build_native(&job, &mut plan).await {
                Ok(Some(built)) => built,
                Ok(None) => return Ok(unchanged(
                    Some(plan),
                    "no planned package could be patched (each is in not_planned, with the reason)",
                )),
                Err(PatchError::Native(NativeError::ScriptsCannotRun { reasons }))
                    if buildkit_usable =>
                {
                    self.tell(&format!(
                        "{platform_name}: the native engine cannot run the scripts ({}); BuildKit patches it",
                        reasons.join("; ")
                    ));
                    self.build_with_buildkit(&job, &plan).await?
                }
                Err(error) => return Err(error),
            }
        };
        let (layer, engine, verified) = built;
        stage!("build and verify");
        self.mirror
            .metrics()
            .patch_stage(PatchStage::Build, build_started.elapsed().as_secs_f64());
        let fixed: std::collections::BTreeSet<&str> = plan
            .updates
            .iter()
            .flat_map(|u| u.fixes.iter().map(|f| f.id.as_str()))
            .collect();
        self.mirror
            .metrics()
            .vulnerabilities_fixed
            .inc_by(fixed.len() as u64);

        let created_by = history_text(&plan);
        let assembled = assemble::assemble(&ImageInput {
            manifest: &image.manifest.bytes,
            manifest_media_type: &image.manifest.media_type,
            manifest_digest: &image.manifest.digest,
            config: &config,
            layer: PatchLayer {
                digest: &layer.digest,
                diff_id: &layer.diff_id,
                size: layer.size,
            },
            base_name: &options.base_name,
            created_by: &created_by,
            created: None,
        })?;
        Ok((
            Some(plan),
            PlatformOutcome::Patched(Box::new(PatchedPlatform {
                image: assembled,
                layer,
                engine,
                verified,
            })),
        ))
    }

    /// The platform's plan: from the options' report or a stored one, else the scanner
    /// command, else the built-in scanner. `Err(reason)` when none can plan this image.
    async fn platform_plan(
        &self,
        job: &PlatformJob<'_>,
        top_digest: &Digest,
    ) -> Result<Result<PlatformPlan, String>, PatchError> {
        let options = job.options;
        let stored = match &options.report {
            Some(_) => None,
            None => self.stored_report(&[&job.image.manifest.digest, top_digest])?,
        };
        let report = options.report.as_ref().or(stored.as_ref());
        if report.is_none() {
            if let Some(plan) = self.command_plan(job).await? {
                return Ok(Ok(plan));
            }
            if job.inventory.ecosystem == Ecosystem::Rpm {
                return Ok(Err(format!(
                    "no report for this {} image, and the built-in scanner reads dpkg and apk images only",
                    job.inventory.ecosystem.as_str()
                )));
            }
        }
        self.tell(&format!(
            "{}: planning from {}",
            job.image.platform,
            if report.is_some() {
                "the report"
            } else {
                "the distribution's security repositories"
            }
        ));
        Ok(Ok(self.plan(job, report).await?))
    }
}
