//! Where a platform's plan comes from: a report (given, or stored by digest), the
//! configured scanner command, or the built-in scanner.

use crate::distribution::Digest;
use crate::patch::PatchError;
use crate::scan::cache::ScanKey;
use crate::scan::command::CommandInput;
use crate::scan::plan::{Plan, PlatformPlan};
use crate::scan::report::{self, ScanReport};

use super::platform::PlatformJob;
use super::Patcher;

impl Patcher {
    /// The stored report for the first of `digests` that has one.
    pub(super) fn stored_report(
        &self,
        digests: &[&Digest],
    ) -> Result<Option<ScanReport>, PatchError> {
        let Some(dir) = &self.reports else {
            return Ok(None);
        };
        for digest in digests {
            let path = dir.join(digest.hex());
            match std::fs::read(&path) {
                Ok(bytes) => {
                    return report::parse(&bytes).map(Some).map_err(|e| {
                        PatchError::Report(format!("the stored report for {digest}: {e}"))
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(PatchError::io(&path, e)),
            }
        }
        Ok(None)
    }

    /// A plan from the configured scanner command for the job's base image, cached by its
    /// config and layers.
    pub(super) async fn command_plan(
        &self,
        job: &PlatformJob<'_>,
    ) -> Result<Option<PlatformPlan>, PatchError> {
        let Some((command, cache)) = &self.command else {
            return Ok(None);
        };
        let (image, options) = (&job.base, job.options);
        let key = ScanKey::command(
            &image.config_digest.to_string(),
            image.layers.iter().map(|l| l.digest.as_str()),
            &image.platform.to_string(),
            &command.display(),
            &options.plan,
        );
        let plan = match cache.get(&key) {
            Some(plan) => plan,
            None => {
                let dir = job.work.join("scanner-oci");
                std::fs::create_dir_all(&dir).map_err(|e| PatchError::io(&dir, e))?;
                if command.wants_oci_dir() {
                    self.mirror
                        .export_oci_layout(job.route, image, &dir)
                        .await
                        .map_err(PatchError::from_api)?;
                }
                self.tell(&format!("{}: running the scanner command", image.platform));
                let report = command
                    .run(&CommandInput {
                        image: &options.base_name,
                        oci_dir: &dir,
                        platform: &image.platform.to_string(),
                    })
                    .await
                    .map_err(|e| PatchError::Report(format!("the scanner command: {e}")))?;
                let plan =
                    report::plan_from_report(&report, &job.platform, &job.inventory, &options.plan)
                        .map_err(|e| PatchError::Report(format!("the scanner's report: {e}")))?;
                cache
                    .put(key, plan)
                    .map_err(|e| PatchError::Internal(e.to_string()))?
            }
        };
        Ok(plan.platforms.first().cloned())
    }

    /// The built-in scanner's plan, from the cache when the image's layers, the indexes'
    /// version and the scanner's settings are the same as when it was made.
    async fn builtin_plan(&self, job: &PlatformJob<'_>) -> Result<Plan, PatchError> {
        let (image, inventory, platform) = (&job.base, &job.inventory, &job.platform);
        let options = &job.options.plan;
        let Some(cache) = &self.plans else {
            return Ok(self.scanner.scan(inventory, platform, options).await?.plan);
        };
        let version = self.scanner.index_version(inventory, platform).await?;
        // By the layers the inventory was read from: on a re-patch `image` is the
        // patched manifest with only its base layers.
        let key = ScanKey::builtin(
            image.layers.iter().map(|l| l.digest.as_str()),
            &image.platform.to_string(),
            &version,
            &self.scanner.settings(),
            options,
        );
        if let Some(plan) = cache.get(&key) {
            return Ok(plan.as_ref().clone());
        }
        let plan = self.scanner.scan(inventory, platform, options).await?.plan;
        cache
            .put(key, plan.clone())
            .map_err(|e| PatchError::Internal(e.to_string()))?;
        Ok(plan)
    }

    /// The job's plan from `report`, else from the built-in scanner.
    pub(super) async fn plan(
        &self,
        job: &PlatformJob<'_>,
        report: Option<&ScanReport>,
    ) -> Result<PlatformPlan, PatchError> {
        let plan = match report {
            Some(report) => {
                report::plan_from_report(report, &job.platform, &job.inventory, &job.options.plan)
                    .map_err(|e| PatchError::Report(e.to_string()))?
            }
            None => self.builtin_plan(job).await?,
        };
        plan.platforms
            .into_iter()
            .next()
            .ok_or_else(|| PatchError::Internal("the plan has no platform".to_owned()))
    }
}
