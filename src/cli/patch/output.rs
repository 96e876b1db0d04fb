//! Where a patched image goes: the registry (`--push`), an OCI layout (`--oci-dir`), and
//! its OpenVEX document.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use super::super::image_ref::ImageRef;
use crate::distribution::{Digest, Reference};
use crate::mirror::Mirror;
use crate::patch::referrer::Artifact;
use crate::pipeline::patcher::{PatchedImage, PlatformOutcome};
use crate::sign::cosign::attachment_tag;
use crate::sign::Attachment;
use crate::upstream::push::BlobSource;
use crate::upstream::Route;

pub(super) fn vex_of(image: &ImageRef, patched: &PatchedImage) -> anyhow::Result<Vec<u8>> {
    let timestamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    patched
        .vex_document(&image.name(), &timestamp)?
        .context("nothing was patched")
}

/// Every blob of the patched image: (digest, size, where it is).
enum Blob {
    Local(PathBuf),
    Bytes(Vec<u8>),
    Mirror,
}

fn blobs(patched: &PatchedImage) -> Vec<(Digest, u64, Blob)> {
    let mut blobs = Vec::new();
    for platform in &patched.platforms {
        match &platform.outcome {
            PlatformOutcome::Patched(p) => {
                for layer in &platform.original.layers {
                    if let Ok(digest) = layer.digest.parse::<Digest>() {
                        if digest != p.layer.digest {
                            blobs.push((digest, 0, Blob::Mirror));
                        }
                    }
                }
                blobs.push((
                    p.layer.digest.clone(),
                    p.layer.size,
                    Blob::Local(p.layer.path.clone()),
                ));
                blobs.push((
                    p.image.config_digest.clone(),
                    p.image.config.len() as u64,
                    Blob::Bytes(p.image.config.clone()),
                ));
            }
            PlatformOutcome::Unchanged { .. } | PlatformOutcome::Failed { .. } => {
                for layer in &platform.original.layers {
                    if let Ok(digest) = layer.digest.parse::<Digest>() {
                        blobs.push((digest, 0, Blob::Mirror));
                    }
                }
                blobs.push((platform.original.config_digest.clone(), 0, Blob::Mirror));
            }
        }
    }
    for (_, referenced) in &patched.others {
        blobs.extend(referenced.iter().map(|d| (d.clone(), 0, Blob::Mirror)));
    }
    blobs
}

/// Platform manifests: (digest, media type, bytes).
fn manifests(patched: &PatchedImage) -> Vec<(Digest, String, Vec<u8>)> {
    patched
        .platforms
        .iter()
        .map(|platform| match &platform.outcome {
            PlatformOutcome::Patched(p) => (
                p.image.manifest_digest.clone(),
                p.image.manifest_media_type.clone(),
                p.image.manifest.clone(),
            ),
            PlatformOutcome::Unchanged { .. } | PlatformOutcome::Failed { .. } => (
                platform.original.manifest.digest.clone(),
                platform.original.manifest.media_type.clone(),
                platform.original.manifest.bytes.to_vec(),
            ),
        })
        .chain(
            patched
                .others
                .iter()
                .map(|(m, _)| (m.digest.clone(), m.media_type.clone(), m.bytes.to_vec())),
        )
        .collect()
}

pub(super) async fn push(
    mirror: &Arc<Mirror>,
    route: &Route,
    patched: &PatchedImage,
    repository: &str,
    reference: &Reference,
) -> anyhow::Result<()> {
    let upstream = &route.upstream;
    let mount_from = (repository != route.repository).then_some(route.repository.as_str());
    for (digest, size, blob) in blobs(patched) {
        match blob {
            Blob::Mirror => {
                if upstream.has_blob(repository, &digest).await? {
                    continue;
                }
                // The registry has it under the original repository: mount it.
                let bytes = read_mirror_blob(mirror, route, &digest).await?;
                let size = bytes.len() as u64;
                upstream
                    .push_blob(
                        repository,
                        &digest,
                        size,
                        BlobSource::Bytes(bytes.into()),
                        mount_from,
                    )
                    .await?;
            }
            Blob::Local(path) => {
                upstream
                    .push_blob(repository, &digest, size, BlobSource::File(path), None)
                    .await?
            }
            Blob::Bytes(bytes) => {
                upstream
                    .push_blob(
                        repository,
                        &digest,
                        size,
                        BlobSource::Bytes(bytes.into()),
                        None,
                    )
                    .await?
            }
        }
    }
    let Some((top, top_digest, top_type)) = &patched.top else {
        return Ok(());
    };
    for (digest, media_type, bytes) in manifests(patched) {
        if digest != *top_digest {
            upstream
                .push_manifest(
                    repository,
                    &Reference::Digest(digest),
                    &media_type,
                    bytes.into(),
                )
                .await?;
        }
    }
    let pushed = upstream
        .push_manifest(repository, reference, top_type, top.clone().into())
        .await?;
    if pushed != *top_digest {
        bail!("the registry stored {pushed}, expected {top_digest}");
    }
    Ok(())
}

/// Pushes each attachment (its blobs, then its manifest under cosign's
/// `sha256-<hex>.sig`/`.att` tag of its subject) to `repository`; the tags pushed.
pub(super) async fn push_attachments(
    route: &Route,
    repository: &str,
    attachments: Vec<(Digest, Attachment, Artifact)>,
) -> anyhow::Result<Vec<String>> {
    let upstream = &route.upstream;
    let mut tags = Vec::new();
    for (subject, kind, artifact) in attachments {
        for (digest, bytes) in artifact.blobs {
            if upstream.has_blob(repository, &digest).await? {
                continue;
            }
            let size = bytes.len() as u64;
            upstream
                .push_blob(
                    repository,
                    &digest,
                    size,
                    BlobSource::Bytes(bytes.into()),
                    None,
                )
                .await?;
        }
        let tag = attachment_tag(&subject, kind);
        let reference: Reference = tag.parse().context("the attachment tag")?;
        let pushed = upstream
            .push_manifest(
                repository,
                &reference,
                crate::distribution::media_type::OCI_MANIFEST,
                artifact.manifest.into(),
            )
            .await?;
        if pushed != artifact.digest {
            bail!("the registry stored {pushed}, expected {}", artifact.digest);
        }
        tags.push(tag);
    }
    Ok(tags)
}

async fn read_mirror_blob(
    mirror: &Arc<Mirror>,
    route: &Route,
    digest: &Digest,
) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = mirror
        .blob_file(route, digest)
        .await
        .map_err(|e| anyhow::anyhow!("{digest}: {}", e.message))?;
    let mut bytes = Vec::new();
    (&*file).read_to_end(&mut bytes)?;
    Ok(bytes)
}

pub(super) async fn write_oci_layout(
    mirror: &Arc<Mirror>,
    route: &Route,
    patched: &PatchedImage,
    dir: &Path,
    reference: &Reference,
) -> anyhow::Result<()> {
    let blob_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir)
        .with_context(|| format!("creating {}", blob_dir.display()))?;
    let write = |digest: &Digest, bytes: &[u8]| -> anyhow::Result<()> {
        let path = blob_dir.join(digest.hex());
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    for (digest, _, blob) in blobs(patched) {
        match blob {
            Blob::Mirror => {
                let file = mirror
                    .blob_file(route, &digest)
                    .await
                    .map_err(|e| anyhow::anyhow!("{digest}: {}", e.message))?;
                let path = blob_dir.join(digest.hex());
                let mut out = std::fs::File::create(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                std::io::copy(&mut &*file, &mut out)?;
            }
            Blob::Local(path) => {
                std::fs::copy(&path, blob_dir.join(digest.hex()))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
            Blob::Bytes(bytes) => write(&digest, &bytes)?,
        }
    }
    for (digest, _, bytes) in manifests(patched) {
        write(&digest, &bytes)?;
    }
    let Some((top, top_digest, top_type)) = &patched.top else {
        return Ok(());
    };
    write(top_digest, top)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::distribution::media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": top_type,
            "digest": top_digest.to_string(),
            "size": top.len(),
            "annotations": {"org.opencontainers.image.ref.name": reference.to_string()},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    Ok(())
}
