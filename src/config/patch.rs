//! `[patch]`: patching on pull. What a tag pull gets while its image is not patched yet,
//! and how much patching may run at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::defaults;

/// What a pull of a tag gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMode {
    /// Wait up to `wait_timeout` for the patch, then serve the original and finish in the
    /// background (fail-open).
    Wait,
    /// Serve the original now; later pulls get the patched image.
    Background,
    /// Answer 503 until a patched image exists (fail-closed).
    FailClosed,
    /// A plain mirror: never patch.
    Off,
}

impl PatchMode {
    pub fn parse(text: &str) -> Option<PatchMode> {
        match text {
            "wait" => Some(PatchMode::Wait),
            "background" => Some(PatchMode::Background),
            "fail_closed" => Some(PatchMode::FailClosed),
            "off" => Some(PatchMode::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatchMode::Wait => "wait",
            PatchMode::Background => "background",
            PatchMode::FailClosed => "fail_closed",
            PatchMode::Off => "off",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PatchConfig {
    pub mode: PatchMode,
    pub wait_timeout: Duration,
    /// Patch jobs running at once.
    pub workers: usize,
    /// Jobs waiting for a worker; past it, pulls get the original (or 503 when
    /// fail-closed) and no job is queued.
    pub queue: usize,
    /// A failed patch is tried again on a pull after this long.
    pub retry_failed_after: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPatch {
    pub mode: String,
    #[serde(deserialize_with = "super::raw::text_or_number")]
    pub wait_timeout: String,
    pub workers: usize,
    pub queue: usize,
    #[serde(deserialize_with = "super::raw::text_or_number")]
    pub retry_failed_after: String,
}

impl Default for RawPatch {
    fn default() -> Self {
        RawPatch {
            mode: defaults::PATCH_MODE.as_str().into(),
            wait_timeout: super::raw::fmt_duration(defaults::PATCH_WAIT_TIMEOUT),
            workers: defaults::PATCH_WORKERS,
            queue: defaults::PATCH_QUEUE,
            retry_failed_after: super::raw::fmt_duration(defaults::PATCH_RETRY_FAILED_AFTER),
        }
    }
}

impl RawPatch {
    /// Checks the section; problems are appended to `problems`, each naming its key.
    pub(super) fn validate(
        &self,
        problems: &mut Vec<String>,
        duration: &mut dyn FnMut(&str, &str) -> Duration,
    ) -> PatchConfig {
        let mode = PatchMode::parse(&self.mode).unwrap_or_else(|| {
            problems.push(format!(
                "`patch.mode`: expected \"wait\", \"background\", \"fail_closed\" or \"off\", found {:?}",
                self.mode
            ));
            defaults::PATCH_MODE
        });
        if self.workers == 0 {
            problems.push("`patch.workers`: at least 1".into());
        }
        PatchConfig {
            mode,
            wait_timeout: duration("patch.wait_timeout", &self.wait_timeout),
            workers: self.workers.max(1),
            queue: self.queue,
            retry_failed_after: duration("patch.retry_failed_after", &self.retry_failed_after),
        }
    }

    pub(super) fn from_checked(c: &PatchConfig) -> RawPatch {
        RawPatch {
            mode: c.mode.as_str().into(),
            wait_timeout: super::raw::fmt_duration(c.wait_timeout),
            workers: c.workers,
            queue: c.queue,
            retry_failed_after: super::raw::fmt_duration(c.retry_failed_after),
        }
    }
}
