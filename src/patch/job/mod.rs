//! [`Patcher::patch`]: one image reference in, its patched image out. Per platform: read
//! the package database (without a patch layer patchpull added before: re-patching
//! replaces it), plan (a report, else the built-in scanner), fetch the verified `.deb`s or
//! `.apk`s, build the layer with the native engine (BuildKit for rpm images, for
//! `engine = "buildkit"`, and for scripts the native engine cannot run), read the result's package database back and
//! check every planned package is at or above its fixed version, and assemble config and
//! manifest. An index is re-assembled with the patched platforms; platforms with nothing
//! to fix keep their manifests, and so do platforms that fail when
//! [`PartialIndex::PatchedWherePossible`] allows it (the index is then partial).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{PartialIndex, PatchEngine};
use crate::distribution::{media_type, Digest, Reference};
use crate::image::LayerDescriptor;
use crate::metrics::PatchStage;
use crate::mirror::image::PlatformImage;
use crate::mirror::{Mirror, ServedManifest};
use crate::patch::assemble::{self, AssembledImage, ImageInput, PatchLayer};
use crate::patch::buildkit::{BuildkitEngine, BuildkitPatch, ImageSource};
use crate::patch::layer::BuiltLayer;
use crate::patch::native::{NativeError, NativePatch};
use crate::patch::unpack_cache::UnpackCache;
use crate::patch::verify::Verified;
use crate::patch::PatchError;
use crate::pkgs::Ecosystem;
use crate::scan::builtin::BuiltinScanner;
use crate::scan::cache::ScanCache;
use crate::scan::command::ScannerCommand;
use crate::scan::plan::{PlanOptions, Platform, PlatformPlan};
use crate::scan::report::ScanReport;
use crate::upstream::Route;

use build::history_text;

pub use apk::ApkPatch;

mod apk;
mod build;
mod engines;
mod plan;
mod result;
pub mod tempdir;
mod top;

/// What to patch and how.
#[derive(Debug, Clone, Default)]
pub struct PatchOptions {
    /// Only these platforms (`linux/arm64`); empty for all.
    pub platforms: Vec<String>,
    /// A report to plan from instead of the built-in scanner.
    pub report: Option<ScanReport>,
    pub plan: PlanOptions,
    /// Recorded as `org.opencontainers.image.base.name`.
    pub base_name: String,
    /// Leave out a package that cannot be fetched or installed instead of failing.
    pub ignore_errors: bool,
    /// BuildKit engine: run the package manager even when BuildKit has the step cached.
    pub no_cache: bool,
    /// An index some of whose platforms fail: patched where possible, or an error.
    pub partial_index: PartialIndex,
}

/// The patcher: the mirror for images, the built-in scanner for plans and packages.
pub struct Patcher {
    mirror: Arc<Mirror>,
    scanner: Arc<BuiltinScanner>,
    scratch: PathBuf,
    /// Uploaded reports by image digest (`<hex>` files); see [`Patcher::with_reports`].
    reports: Option<PathBuf>,
    /// Told what is happening, for a progress display.
    progress: Option<Progress>,
    /// A configured scanner (`scan.command`) and the cache of its plans; used when no
    /// report was given or stored, before the built-in scanner.
    command: Option<(ScannerCommand, ScanCache)>,
    /// Built-in scanner plans by image layers, index version and scanner settings.
    plans: Option<ScanCache>,
    engine: PatchEngine,
    buildkit: Option<BuildkitSetup>,
    /// Unpacked layers and roots kept between patches; see [`Patcher::with_unpack_cache`].
    unpack_cache: Option<Arc<UnpackCache>>,
}

/// A BuildKit and how it reaches images.
struct BuildkitSetup {
    engine: Arc<BuildkitEngine>,
    source: ImageSource,
    debian_archive_url: String,
    debian_security_url: String,
}

/// A progress callback: one line per step.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

tokio::task_local! {
    /// Where the steps of the patch running in this task go, besides
    /// [`Patcher::with_progress`]: a pipeline job's status in the admin API.
    pub static JOB_PROGRESS: Progress;
}

/// What became of one platform.
#[derive(Debug)]
pub enum PlatformOutcome {
    Patched(Box<PatchedPlatform>),
    /// Kept as it was; the reason says why (nothing to fix, an rpm image without BuildKit, ...).
    Unchanged {
        reason: String,
    },
    /// Could not be patched; its original manifest stays in the index (which is then
    /// partial). `error` is the whole error, without this run's scratch paths, for the
    /// log, the admin API and the CLI; `cause` is what the served index says
    /// ([`PatchError::cause`]): no host path, nothing that differs from run to run.
    Failed {
        error: String,
        cause: String,
    },
}

#[derive(Debug)]
pub struct PlatformResult {
    pub original: PlatformImage,
    pub plan: Option<PlatformPlan>,
    pub outcome: PlatformOutcome,
}

#[derive(Debug)]
pub struct PatchedPlatform {
    pub image: AssembledImage,
    pub layer: BuiltLayer,
    pub engine: EngineReport,
    pub verified: Vec<Verified>,
}

/// What the engine that built the layer did.
#[derive(Debug)]
pub enum EngineReport {
    /// The native engine on a dpkg image.
    Native(NativePatch),
    /// The native engine on an apk image.
    Apk(ApkPatch),
    Buildkit(BuildkitPatch),
}

/// The patched image, its blobs in the scratch directory until dropped.
#[derive(Debug)]
pub struct PatchedImage {
    pub original: ServedManifest,
    pub platforms: Vec<PlatformResult>,
    /// The new top-level manifest or index: bytes, digest, media type. `None` when no
    /// platform changed.
    pub top: Option<(Vec<u8>, Digest, String)>,
    /// Manifests an index names that are not platform images (attestations), kept as they
    /// are, with the blobs they reference.
    pub others: Vec<(ServedManifest, Vec<Digest>)>,
    pub scratch: tempdir::ScratchDir,
}

impl Patcher {
    pub fn new(mirror: Arc<Mirror>, scanner: Arc<BuiltinScanner>, scratch: PathBuf) -> Patcher {
        tempdir::remove_abandoned(&scratch);
        Patcher {
            mirror,
            scanner,
            scratch,
            reports: None,
            progress: None,
            command: None,
            plans: None,
            engine: PatchEngine::Native,
            buildkit: None,
            unpack_cache: None,
        }
    }

    /// Which engine builds layers; `buildkit` with how BuildKit reaches images (`None`:
    /// native only, whatever `engine` says).
    pub fn with_engine(
        mut self,
        engine: PatchEngine,
        buildkit: Option<(Arc<BuildkitEngine>, ImageSource)>,
        scan: &crate::config::ScanConfig,
    ) -> Patcher {
        self.engine = engine;
        self.buildkit = buildkit.map(|(engine, source)| BuildkitSetup {
            engine,
            source,
            debian_archive_url: scan.debian_archive_url.clone(),
            debian_security_url: scan.debian_security_url.clone(),
        });
        self
    }

    /// Plans with `scan.command` (its plans cached under `scan.cache_dir`) when no report
    /// applies; unchanged when no command is configured.
    ///
    /// # Errors
    /// The command is not runnable as configured, or its cache cannot be opened.
    pub fn with_scan_command(
        mut self,
        scan: &crate::config::ScanConfig,
    ) -> Result<Patcher, String> {
        let results = scan.cache_dir.join("results");
        self.plans = Some(
            ScanCache::open(&results, scan.result_ttl)
                .map_err(|e| format!("the scan result cache: {e}"))?,
        );
        if scan.command.is_empty() {
            return Ok(self);
        }
        let command = ScannerCommand::new(scan.command.clone(), scan.command_timeout)
            .map_err(|e| format!("scan.command: {e}"))?;
        let cache = ScanCache::open(scan.cache_dir.join("results"), scan.result_ttl)
            .map_err(|e| format!("the scan result cache: {e}"))?;
        self.command = Some((command, cache));
        Ok(self)
    }

    /// Lets the scan result caches' TTL go by `clock` (call after
    /// [`Patcher::with_scan_command`]).
    pub fn with_clock(mut self, clock: &crate::clock::Clock) -> Patcher {
        self.plans = self.plans.map(|plans| plans.with_clock(clock.clone()));
        self.command = self
            .command
            .map(|(command, cache)| (command, cache.with_clock(clock.clone())));
        self
    }

    /// Reports each step (planning, fetching, building, verifying) to `progress`.
    pub fn with_progress(mut self, progress: Progress) -> Patcher {
        self.progress = Some(progress);
        self
    }

    fn tell(&self, message: &str) {
        if let Some(progress) = &self.progress {
            progress(message);
        }
        let _ = JOB_PROGRESS.try_with(|progress| progress(message));
    }

    /// Plans from a report stored in `dir` under an image's digest (its platform manifest's
    /// or the tag's top manifest's) when one is there, before the built-in scanner.
    pub fn with_reports(mut self, dir: PathBuf) -> Patcher {
        self.reports = Some(dir);
        self
    }

    /// Keeps decompressed layers and unpacked roots in `cache` between patches.
    pub fn with_unpack_cache(mut self, cache: Option<Arc<UnpackCache>>) -> Patcher {
        self.unpack_cache = cache;
        self
    }

    /// Patches the image `reference` names behind `route`. In an index, a platform that
    /// cannot be patched keeps its original manifest when `options.partial_index` is
    /// [`PartialIndex::PatchedWherePossible`] and another platform is patched
    /// ([`PlatformOutcome::Failed`]).
    ///
    /// # Errors
    /// [`PatchError`] for the first platform that cannot be patched, unless the index is
    /// served partial; when no platform is patched, the first failure.
    pub async fn patch(
        &self,
        route: &Route,
        reference: &Reference,
        options: &PatchOptions,
    ) -> Result<PatchedImage, PatchError> {
        let scratch = tempdir::ScratchDir::new_in(&self.scratch)?;
        let any = media_type::Accept::parse([]);
        let top = self
            .mirror
            .manifest(route, reference, &any)
            .await
            .map_err(PatchError::from_api)?;
        let images = self
            .mirror
            .platform_images(route, reference)
            .await
            .map_err(PatchError::from_api)?;
        let partial_allowed = media_type::is_index(&top.media_type)
            && options.partial_index == PartialIndex::PatchedWherePossible;
        let mut first_failure = None;
        let mut platforms = Vec::new();
        for image in images {
            let wanted = options.platforms.is_empty()
                || options.platforms.iter().any(|p| {
                    *p == image.platform.to_string()
                        || *p == format!("{}/{}", image.platform.os, image.platform.architecture)
                });
            if !wanted {
                platforms.push(PlatformResult {
                    original: image,
                    plan: None,
                    outcome: PlatformOutcome::Unchanged {
                        reason: "not a requested platform".to_owned(),
                    },
                });
                continue;
            }
            let work = scratch.path().join(format!("p{}", platforms.len()));
            std::fs::create_dir_all(&work).map_err(|e| PatchError::io(&work, e))?;
            let result = self
                .patch_platform(route, image.clone(), &top.digest, options, &work)
                .await;
            match result {
                Ok(result) => platforms.push(result),
                Err(error) if partial_allowed => {
                    let text = top::failure_text(&error, scratch.path());
                    self.tell(&format!(
                        "{}: not patched, its original is kept: {text}",
                        image.platform
                    ));
                    let cause = top::one_bounded_line(&error.cause());
                    first_failure.get_or_insert(error);
                    platforms.push(PlatformResult {
                        original: image,
                        plan: None,
                        outcome: PlatformOutcome::Failed { error: text, cause },
                    });
                }
                Err(error) => return Err(error),
            }
        }
        let patched_any = platforms
            .iter()
            .any(|p| matches!(p.outcome, PlatformOutcome::Patched(_)));
        if let (false, Some(error)) = (patched_any, first_failure) {
            return Err(error);
        }
        let top_new = if patched_any {
            top::patched_top(&top, &platforms, &options.base_name)?
        } else {
            None
        };
        let others = self.other_manifests(route, &top, &platforms).await?;
        if let Some(cache) = self.unpack_cache.clone() {
            // Layer tars and package data were added without a root being made, maybe.
            let _ = tokio::task::spawn_blocking(move || cache.evict()).await;
        }
        Ok(PatchedImage {
            original: top,
            platforms,
            top: top_new,
            others,
            scratch,
        })
    }

    /// The index entries that are not platform images, with the blobs they name.
    async fn other_manifests(
        &self,
        route: &Route,
        top: &ServedManifest,
        platforms: &[PlatformResult],
    ) -> Result<Vec<(ServedManifest, Vec<Digest>)>, PatchError> {
        #[derive(serde::Deserialize)]
        struct Descriptor {
            digest: String,
        }
        #[derive(serde::Deserialize)]
        struct Doc {
            #[serde(default)]
            manifests: Vec<Descriptor>,
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Vec<Descriptor>,
        }
        if !media_type::is_index(&top.media_type) {
            return Ok(Vec::new());
        }
        let index: Doc = serde_json::from_slice(&top.bytes)
            .map_err(|e| PatchError::Image(format!("index {}: {e}", top.digest)))?;
        let any = media_type::Accept::parse([]);
        let mut others = Vec::new();
        for entry in index.manifests {
            let digest: Digest = entry
                .digest
                .parse()
                .map_err(|e| PatchError::Image(format!("index {}: {e}", top.digest)))?;
            if platforms
                .iter()
                .any(|p| p.original.manifest.digest == digest)
            {
                continue;
            }
            let manifest = self
                .mirror
                .manifest(route, &Reference::Digest(digest), &any)
                .await
                .map_err(PatchError::from_api)?;
            let doc: Doc = serde_json::from_slice(&manifest.bytes)
                .map_err(|e| PatchError::Image(format!("manifest {}: {e}", manifest.digest)))?;
            let blobs = doc
                .config
                .into_iter()
                .chain(doc.layers)
                .filter_map(|d| d.digest.parse().ok())
                .collect();
            others.push((manifest, blobs));
        }
        Ok(others)
    }

    async fn patch_platform(
        &self,
        route: &Route,
        image: PlatformImage,
        top_digest: &Digest,
        options: &PatchOptions,
        work: &Path,
    ) -> Result<PlatformResult, PatchError> {
        let unchanged = |image, plan, reason: String| PlatformResult {
            original: image,
            plan,
            outcome: PlatformOutcome::Unchanged { reason },
        };
        let config = self
            .mirror
            .read_small_blob(route, &image.config_digest)
            .await
            .map_err(PatchError::from_api)?;
        // An image patchpull patched before is patched again from its base layers.
        let existing = assemble::existing_patch(&image.manifest.bytes, &config)?;
        let base_layers: Vec<LayerDescriptor> = match &existing {
            Some(patch) => image.layers[..patch.layer_index.min(image.layers.len())].to_vec(),
            None => image.layers.clone(),
        };
        let base = PlatformImage {
            layers: base_layers.clone(),
            ..image.clone()
        };
        let Some(inventory) = self.inventory(route, &base, work).await? else {
            return Ok(unchanged(
                image,
                None,
                "no supported package database".to_owned(),
            ));
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
                image,
                None,
                format!("{kind} are patched through BuildKit only, and none is configured"),
            ));
        }
        // Detached: it only fills the cache, which the build then finds (or waits for).
        let _unpacking = self.unpack_ahead(route, &base, &inventory, work);
        let platform = Platform {
            os: image.platform.os.clone(),
            architecture: image.platform.architecture.clone(),
            variant: image.platform.variant.clone(),
        };
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
        let stored = match &options.report {
            Some(_) => None,
            None => self.stored_report(&[&image.manifest.digest, top_digest])?,
        };
        let report = options.report.as_ref().or(stored.as_ref());
        let from_command = match report {
            Some(_) => None,
            None => {
                self.command_plan(route, &base, &inventory, &platform, options, work)
                    .await?
            }
        };
        let plan = match from_command {
            Some(plan) => plan,
            None if report.is_none() && inventory.ecosystem == Ecosystem::Rpm => {
                return Ok(unchanged(
                    image,
                    None,
                    format!(
                        "no report for this {} image, and the built-in scanner reads dpkg and apk images only",
                        inventory.ecosystem.as_str()
                    ),
                ));
            }
            None => {
                self.tell(&format!(
                    "{platform_name}: planning from {}",
                    if report.is_some() {
                        "the report"
                    } else {
                        "the distribution's security repositories"
                    }
                ));
                self.plan(&base, &inventory, &platform, report, &options.plan)
                    .await?
            }
        };
        stage!("plan");
        self.mirror
            .metrics()
            .patch_stage(PatchStage::Plan, started.elapsed().as_secs_f64());
        let build_started = std::time::Instant::now();
        if plan.updates.is_empty() {
            return Ok(unchanged(image, Some(plan), "nothing to fix".to_owned()));
        }
        let mut plan = plan;
        let buildkit_first =
            buildkit_usable && (self.engine == PatchEngine::Buildkit || !native_capable);
        let built = if buildkit_first {
            self.build_with_buildkit(route, &image, &config, &plan, &base_layers, work, options)
                .await?
        } else {
            match self
                .build_native(
                    route,
                    &image,
                    &inventory,
                    &platform,
                    &mut plan,
                    &base_layers,
                    work,
                    options,
                )
                .await
            {
                Ok(Some(built)) => built,
                Ok(None) => return Ok(unchanged(
                    image,
                    Some(plan),
                    "no planned package could be patched (each is in not_planned, with the reason)"
                        .to_owned(),
                )),
                Err(PatchError::Native(NativeError::ScriptsCannotRun { reasons }))
                    if buildkit_usable =>
                {
                    self.tell(&format!(
                        "{platform_name}: the native engine cannot run the scripts ({}); BuildKit patches it",
                        reasons.join("; ")
                    ));
                    self.build_with_buildkit(
                        route,
                        &image,
                        &config,
                        &plan,
                        &base_layers,
                        work,
                        options,
                    )
                    .await?
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
        Ok(PlatformResult {
            original: image,
            plan: Some(plan),
            outcome: PlatformOutcome::Patched(Box::new(PatchedPlatform {
                image: assembled,
                layer,
                engine,
                verified,
            })),
        })
    }
}
