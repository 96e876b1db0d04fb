//! What became of each platform of a patched image, as a job's outcome keeps it (and
//! `<storage.path>/patched/` records it) and the admin API shows it.

use crate::pipeline::patcher::{PlatformOutcome, PlatformResult};

/// What became of the platforms of a patched image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlatformsView {
    /// Some platform of the index failed and kept its original manifest.
    pub partial: bool,
    pub platforms: Vec<PlatformView>,
}

/// One platform of a patched image, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlatformView {
    /// `linux/arm64`.
    pub platform: String,
    /// Its original manifest's digest.
    pub original: String,
    pub status: PlatformStatus,
    /// The patched manifest's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patched: Option<String>,
    /// Why it was not patched: the reason, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformStatus {
    Patched,
    /// Nothing to fix, or not a platform patchpull patches: the original, as intended.
    Unchanged,
    /// It could not be patched; the index keeps its original.
    Failed,
}

impl PlatformsView {
    pub(super) fn of(platforms: &[PlatformResult]) -> PlatformsView {
        let platforms: Vec<PlatformView> = platforms
            .iter()
            .map(|p| {
                let (status, patched, detail) = match &p.outcome {
                    PlatformOutcome::Patched(patched) => (
                        PlatformStatus::Patched,
                        Some(patched.image.manifest_digest.to_string()),
                        None,
                    ),
                    PlatformOutcome::Unchanged { reason } => {
                        (PlatformStatus::Unchanged, None, Some(reason.clone()))
                    }
                    PlatformOutcome::Failed { error, .. } => {
                        (PlatformStatus::Failed, None, Some(error.clone()))
                    }
                };
                PlatformView {
                    platform: p.original.platform.to_string(),
                    original: p.original.manifest.digest.to_string(),
                    status,
                    patched,
                    detail,
                }
            })
            .collect();
        PlatformsView {
            partial: platforms.iter().any(|p| p.status == PlatformStatus::Failed),
            platforms,
        }
    }

    /// `linux/arm64: <error>; ...` for the platforms that failed.
    pub(super) fn failures(&self) -> Option<String> {
        let failed: Vec<String> = self
            .platforms
            .iter()
            .filter(|p| p.status == PlatformStatus::Failed)
            .map(|p| {
                format!(
                    "{}: {}",
                    p.platform,
                    p.detail.as_deref().unwrap_or_default()
                )
            })
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }
}
