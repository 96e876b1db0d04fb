//! The patched image's top manifest: the one patched platform's manifest, or the index
//! re-assembled with what became of each platform (patched, kept, failed and kept).

use std::path::Path;

use crate::distribution::{media_type, Digest};
use crate::mirror::ServedManifest;
use crate::patch::assemble::{self, EntryOutcome, PlatformEntry};
use crate::patch::PatchError;

use super::{PlatformOutcome, PlatformResult};

/// Longest failure text kept: it goes into the index as an annotation.
const MAX_FAILURE_TEXT: usize = 1024;

/// The new top manifest (bytes, digest, media type) for `platforms`, at least one of
/// which is patched; `None` when none is.
///
/// # Errors
/// [`PatchError::Assemble`] when the index cannot be re-assembled.
pub(super) fn patched_top(
    top: &ServedManifest,
    platforms: &[PlatformResult],
    base_name: &str,
) -> Result<Option<(Vec<u8>, Digest, String)>, PatchError> {
    if !media_type::is_index(&top.media_type) {
        return Ok(platforms.iter().find_map(|p| match &p.outcome {
            PlatformOutcome::Patched(patched) => Some((
                patched.image.manifest.clone(),
                patched.image.manifest_digest.clone(),
                patched.image.manifest_media_type.clone(),
            )),
            PlatformOutcome::Unchanged { .. } | PlatformOutcome::Failed { .. } => None,
        }));
    }
    let entries: Vec<PlatformEntry> = platforms
        .iter()
        .map(|p| PlatformEntry {
            original: p.original.manifest.digest.clone(),
            outcome: match &p.outcome {
                PlatformOutcome::Patched(patched) => EntryOutcome::Patched {
                    digest: patched.image.manifest_digest.clone(),
                    size: patched.image.manifest.len() as u64,
                    media_type: patched.image.manifest_media_type.clone(),
                },
                PlatformOutcome::Unchanged { reason } => EntryOutcome::Kept {
                    reason: reason.clone(),
                },
                PlatformOutcome::Failed { cause, .. } => EntryOutcome::Kept {
                    reason: format!("patch failed: {cause}"),
                },
            },
        })
        .collect();
    let (bytes, digest) = assemble::assemble_index(
        &top.bytes,
        &top.media_type,
        &top.digest,
        base_name,
        &entries,
    )?;
    Ok(Some((bytes, digest, top.media_type.clone())))
}

/// `error` as one line for the index and the job's view: this run's scratch directory (a
/// random name) left out, so that the same failure gives the same index bytes, and
/// bounded.
pub(super) fn failure_text(error: &PatchError, scratch: &Path) -> String {
    one_bounded_line(
        &error
            .to_string()
            .replace(&scratch.display().to_string(), "<scratch>"),
    )
}

/// `text`'s non-empty lines joined by spaces, cut at [`MAX_FAILURE_TEXT`] bytes.
pub(super) fn one_bounded_line(text: &str) -> String {
    let mut text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if text.len() > MAX_FAILURE_TEXT {
        let mut end = MAX_FAILURE_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_texts_are_one_bounded_line_without_the_scratch_directory() {
        let scratch = Path::new("/data/patch-tmp/run-x1y2z3");
        let error = PatchError::Io {
            path: "/data/patch-tmp/run-x1y2z3/p1/layer.tar".into(),
            reason: "No space left on device".into(),
        };
        assert_eq!(
            failure_text(&error, scratch),
            "<scratch>/p1/layer.tar: No space left on device"
        );
        let error = PatchError::Report("\n  - the report is for alpine\n  - and arm64\n".into());
        assert_eq!(
            failure_text(&error, scratch),
            "the report does not match the image: - the report is for alpine - and arm64"
        );
        let error = PatchError::Internal("é".repeat(MAX_FAILURE_TEXT));
        let text = failure_text(&error, scratch);
        assert!(
            text.len() <= MAX_FAILURE_TEXT + 3 && text.ends_with("..."),
            "{text}"
        );
    }

    #[test]
    fn the_served_cause_has_no_host_path_and_no_script_output() {
        let script = PatchError::Native(crate::patch::native::NativeError::ScriptFailed {
            script: "tzdata postinst configure 2024a-0+deb12u1".into(),
            status: "exit status 1".into(),
            stderr: "/tmp/patchpull-x1y2/root: 12:03:44 no space".into(),
        });
        assert_eq!(
            script.cause(),
            "maintainer script tzdata postinst configure 2024a-0+deb12u1 failed"
        );
        let io = PatchError::Io {
            path: "/var/lib/patchpull/patch-tmp/run-1/p0/layer.tar".into(),
            reason: "No space left on device".into(),
        };
        assert_eq!(io.cause(), "an I/O error");
        let native = PatchError::Native(crate::patch::native::NativeError::Io {
            path: "/var/lib/patchpull/unpacked/abc".into(),
            reason: "Permission denied".into(),
        });
        assert!(!native.cause().contains('/'), "{}", native.cause());
        // What the image says stays whole: the operator needs it and it never varies.
        let report = PatchError::Report("the report is for alpine".into());
        assert_eq!(report.cause(), report.to_string());
    }
}
