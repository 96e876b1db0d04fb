//! What a job signs: a cosign signature of every new manifest (the index and each patched
//! platform's) and an attestation of the patch on the top one, named by the upstream
//! name of the image (`docker.io/library/nginx`), whatever path a client pulls it by. The
//! same attachments are pushed beside the image by `patchpull patch --push --sign-key`.

use crate::distribution::Digest;
use crate::patch::referrer::Artifact;
use crate::pipeline::patcher::{EngineReport, PatchedImage, PlatformOutcome};
use crate::sign::attest::{
    OriginalImage, PackageChange, PatchPredicate, PlatformPatch, RepositoryUsed, Tool,
    VerifiedSignature,
};
use crate::sign::{Attachment, Signer, Subject};

/// The signature and attestation artifacts of `patched` (of `original`, named
/// `docker_reference`), each with the digest of the manifest it is about and its kind
/// (which `sha256-<hex>.sig`/`.att` tag it goes under).
pub fn attachments(
    signer: &Signer,
    docker_reference: &str,
    original: &Digest,
    original_signature: Option<VerifiedSignature>,
    patched: &PatchedImage,
) -> Vec<(Digest, Attachment, Artifact)> {
    let Some((top_bytes, top_digest, top_media_type)) = &patched.top else {
        return Vec::new();
    };
    let top = Subject {
        digest: top_digest,
        media_type: top_media_type,
        size: top_bytes.len() as u64,
    };
    let mut made = vec![(
        top_digest.clone(),
        Attachment::Signature,
        signer.signature(docker_reference, top),
    )];
    for platform in patched.patched() {
        let image = &platform.image;
        if image.manifest_digest == *top_digest {
            continue;
        }
        let subject = Subject {
            digest: &image.manifest_digest,
            media_type: &image.manifest_media_type,
            size: image.manifest.len() as u64,
        };
        made.push((
            image.manifest_digest.clone(),
            Attachment::Signature,
            signer.signature(docker_reference, subject),
        ));
    }
    let mut predicate = predicate(docker_reference, original, patched);
    predicate.original.signature = original_signature;
    made.push((
        top_digest.clone(),
        Attachment::Attestation,
        signer.attestation(docker_reference, top, &predicate),
    ));
    made
}

fn predicate(docker_reference: &str, original: &Digest, patched: &PatchedImage) -> PatchPredicate {
    let mut platforms = Vec::new();
    let mut repositories = Vec::new();
    for platform in &patched.platforms {
        let (PlatformOutcome::Patched(p), Some(plan)) = (&platform.outcome, &platform.plan) else {
            continue;
        };
        repositories.extend(plan.repositories.iter().map(|r| RepositoryUsed {
            url: r.url.clone(),
            index: r.index.clone(),
        }));
        let arch = &platform.original.platform.architecture;
        let packages = plan
            .updates
            .iter()
            .map(|u| {
                let to = p
                    .verified
                    .iter()
                    .find(|v| v.name == u.name)
                    .and_then(|v| v.installed.clone())
                    .unwrap_or_else(|| u.fixed_version.clone());
                let purl = |version: &str| {
                    crate::patch::vex::package_purl(
                        plan.ecosystem,
                        &plan.os,
                        &u.name,
                        version,
                        arch,
                    )
                };
                PackageChange {
                    name: u.name.clone(),
                    purl_from: purl(&u.installed_version),
                    purl_to: purl(&to),
                    from: u.installed_version.clone(),
                    to,
                }
            })
            .collect();
        platforms.push(PlatformPatch {
            platform: platform.original.platform.to_string(),
            original: platform.original.manifest.digest.to_string(),
            patched: p.image.manifest_digest.to_string(),
            engine: match p.engine {
                EngineReport::Native(_) => "native",
                EngineReport::Apk(_) => "apk",
                EngineReport::Buildkit(_) => "buildkit",
            }
            .to_owned(),
            packages,
        });
    }
    repositories.sort();
    repositories.dedup();
    PatchPredicate {
        original: OriginalImage {
            name: docker_reference.to_owned(),
            digest: original.to_string(),
            signature: None,
        },
        platforms,
        repositories,
        patchpull: Tool::patchpull(),
    }
}
