//! What a patch produced.

use super::{PatchedImage, PatchedPlatform, PlatformOutcome};

impl PatchedImage {
    /// The OpenVEX document of the patched image (`None` when nothing was patched): one
    /// `fixed` statement per vulnerability the verified updates fix.
    ///
    /// # Errors
    /// [`crate::patch::vex::VexError`] for an invalid timestamp or plan.
    pub fn vex_document(
        &self,
        repository: &str,
        timestamp: &str,
    ) -> Result<Option<Vec<u8>>, crate::patch::vex::VexError> {
        let Some((_, digest, _)) = &self.top else {
            return Ok(None);
        };
        let mut platforms = Vec::new();
        for platform in &self.platforms {
            let (PlatformOutcome::Patched(p), Some(plan)) = (&platform.outcome, &platform.plan)
            else {
                continue;
            };
            let fixed: Vec<String> = p
                .verified
                .iter()
                .filter(|v| v.installed.is_some())
                .map(|v| v.name.clone())
                .collect();
            platforms.push((plan, platform.original.platform.architecture.clone(), fixed));
        }
        let fixes: Vec<crate::patch::vex::PlatformFixes<'_>> = platforms
            .iter()
            .map(
                |(plan, architecture, fixed)| crate::patch::vex::PlatformFixes {
                    plan,
                    architecture,
                    fixed,
                },
            )
            .collect();
        crate::patch::vex::document(&crate::patch::vex::VexInput {
            repository,
            patched_digest: digest,
            platforms: &fixes,
            timestamp,
            author: "patchpull",
        })
        .map(Some)
    }

    /// The patched platforms.
    pub fn patched(&self) -> impl Iterator<Item = &PatchedPlatform> {
        self.platforms.iter().filter_map(|p| match &p.outcome {
            PlatformOutcome::Patched(patched) => Some(patched.as_ref()),
            PlatformOutcome::Unchanged { .. } | PlatformOutcome::Failed { .. } => None,
        })
    }

    /// Whether the patched index keeps the original of a platform that failed.
    pub fn is_partial(&self) -> bool {
        self.top.is_some()
            && self
                .platforms
                .iter()
                .any(|p| matches!(p.outcome, PlatformOutcome::Failed { .. }))
    }
}
