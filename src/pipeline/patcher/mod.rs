//! [`Patcher::patch`]: one image reference in, its patched image out. Per platform: read
//! the package database (without a patch layer patchpull added before: re-patching
//! replaces it), plan (a report, else the built-in scanner), fetch the verified `.deb`s or
//! `.apk`s, build the layer with the native engine (BuildKit for rpm images, for
//! `engine = "buildkit"`, and for scripts the native engine cannot run), read the result's package database back and
//! check every planned package is at or above its fixed version, and assemble config and
//! manifest. An index is re-assembled with the patched platforms; platforms with nothing
//! to fix keep their manifests, and so do platforms that fail when
//! [`PartialIndex::PatchedWherePossible`] allows it (the index is then partial).

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{PartialIndex, PatchEngine};
use crate::distribution::{media_type, Digest, Reference};
use crate::mirror::image::PlatformImage;
use crate::mirror::{Mirror, ServedManifest};
use crate::patch::assemble::AssembledImage;
use crate::patch::buildkit::{BuildkitEngine, BuildkitPatch, ImageSource};
use crate::patch::layer::BuiltLayer;
use crate::patch::native::NativePatch;
use crate::patch::unpack_cache::UnpackCache;
use crate::patch::verify::Verified;
use crate::patch::PatchError;
use crate::scan::builtin::BuiltinScanner;
use crate::scan::cache::ScanCache;
use crate::scan::command::ScannerCommand;
use crate::scan::plan::{PlanOptions, PlatformPlan};
use crate::scan::report::ScanReport;
use crate::upstream::Route;

pub use crate::patch::native::ApkPatch;

mod apk;
mod build;
mod engines;
mod plan;
mod platform;
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
    /// `require_signature`: what verified the original's signature, for the attestation.
    pub original_signature: Option<crate::sign::attest::VerifiedSignature>,
}

impl PatchOptions {
    /// What of these options decides the plan, as 16 hex digits: the key a job has beside
    /// its original digest in the fleet's Redis lease, so replicas that plan differently
    /// (a policy changed during a rolling upgrade) do not wait for each other's result.
    /// `base_name` is left out: it names the tag pulled, and every tag of one digest is one
    /// job (as it is within a replica). A report given inline (the `patch` command's)
    /// counts by its Debug text.
    pub fn plan_key(&self) -> String {
        let PlanOptions {
            min_severity,
            unknown_severity,
            include,
            exclude,
        } = &self.plan;
        let list = |set: &std::collections::BTreeSet<String>| {
            set.iter().cloned().collect::<Vec<_>>().join(",")
        };
        let text = format!(
            "min_severity={min_severity:?}\nunknown_severity={unknown_severity:?}\ninclude={}\nexclude={}\nplatforms={}\nignore_errors={}\npartial_index={:?}\nreport={}\n",
            list(include),
            list(exclude),
            self.platforms.join(","),
            self.ignore_errors,
            self.partial_index,
            self.report.as_ref().map(|r| format!("{r:?}")).unwrap_or_default(),
        );
        let digest = crate::distribution::Digest::sha256_of(text.as_bytes());
        digest.hex()[..16].to_owned()
    }
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
}

#[cfg(test)]
mod plan_key_tests {
    use super::PatchOptions;
    use crate::scan::plan::Severity;

    #[test]
    fn the_plan_key_follows_the_plan_not_the_tag() {
        let base = PatchOptions::default();
        assert_eq!(base.plan_key(), PatchOptions::default().plan_key());
        assert_eq!(base.plan_key().len(), 16);
        let tagged = PatchOptions {
            base_name: "hub/app:2".into(),
            ..PatchOptions::default()
        };
        assert_eq!(tagged.plan_key(), base.plan_key(), "every tag is one job");
        let mut severe = PatchOptions::default();
        severe.plan.min_severity = Some(Severity::High);
        assert_ne!(severe.plan_key(), base.plan_key());
        let mut excluded = PatchOptions::default();
        excluded.plan.exclude.insert("openssl".into());
        assert_ne!(excluded.plan_key(), base.plan_key());
        let lenient = PatchOptions {
            ignore_errors: true,
            ..PatchOptions::default()
        };
        assert_ne!(lenient.plan_key(), base.plan_key());
    }
}
