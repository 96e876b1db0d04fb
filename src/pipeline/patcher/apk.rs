//! The native engine for apk (Alpine) images: fetch the packages the signed indexes name
//! ([`crate::scan::builtin::apk::packages`]), build the layer
//! ([`crate::patch::native::build_apk_layer`]) and read the result's database back.

use crate::patch::native::{build_apk_layer, ApkPatch};
use crate::patch::verify::Verified;
use crate::patch::PatchError;
use crate::scan::builtin::apk::WantedApk;
use crate::scan::plan::PlatformPlan;

use super::platform::PlatformJob;
use super::Patcher;

impl Patcher {
    /// Fetches, builds and verifies one apk platform's layer for `plan`.
    pub(super) async fn build_apk_platform(
        &self,
        job: &PlatformJob<'_>,
        plan: &PlatformPlan,
    ) -> Result<(ApkPatch, Vec<Verified>), PatchError> {
        let wanted: Vec<WantedApk> = plan
            .updates
            .iter()
            .map(|u| WantedApk {
                name: u.name.clone(),
                version: u.fixed_version.clone(),
            })
            .collect();
        self.tell(&format!(
            "{}: fetching {} verified package(s)",
            job.image.platform,
            wanted.len()
        ));
        let fetched = self
            .scanner
            .apk()
            .fetch_apks(&job.inventory, &job.platform, &wanted)
            .await?;
        self.tell(&format!("{}: building the patch layer", job.image.platform));

        let source = self.unpacked_layers(job.route, job.work)?;
        let build_source = source.clone();
        let (plan_for_build, fetched_for_build) = (plan.clone(), fetched.clone());
        let (layers, work_dir) = (job.base_layers().to_vec(), job.work.to_path_buf());
        let (layer, outcomes) = tokio::task::spawn_blocking(move || {
            build_apk_layer(
                &*build_source,
                &layers,
                &plan_for_build,
                &fetched_for_build,
                &work_dir,
            )
        })
        .await
        .map_err(|e| PatchError::Internal(e.to_string()))??;

        let verified = self.verify_layer(job, source, &layer.path, plan).await?;
        Ok((
            ApkPatch {
                layer,
                outcomes,
                packages: fetched,
            },
            verified,
        ))
    }
}
