//! Test images built in Rust, byte for byte deterministic, and pushed over plain HTTP.
//!
//! Every manifest is kept as the exact bytes that were pushed, with its digest, so tests can
//! compare what the proxy serves against what the registry holds. Manifests are pretty-printed
//! on purpose: a proxy that re-serialises JSON would change the bytes and the digest.

use std::io::Write;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The Accept header of a client that understands every manifest kind.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A content-addressed blob: config, layer or arbitrary bytes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub media_type: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&data),
            media_type: media_type.to_string(),
            data,
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// A manifest as pushed: exact bytes, media type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Manifest {
    pub fn from_json(media_type: &str, value: &serde_json::Value) -> Manifest {
        let bytes = serde_json::to_vec_pretty(value).expect("serialise manifest");
        Manifest {
            media_type: media_type.to_string(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OCI image manifest / OCI image index.
    Oci,
    /// Docker schema 2 manifest / Docker manifest list.
    Docker,
}

impl Format {
    fn manifest_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_MANIFEST,
            Format::Docker => DOCKER_MANIFEST,
        }
    }
    fn index_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_INDEX,
            Format::Docker => DOCKER_LIST,
        }
    }
    fn config_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_CONFIG,
            Format::Docker => DOCKER_CONFIG,
        }
    }
    fn layer_type(self) -> &'static str {
        match self {
            Format::Oci => OCI_LAYER_GZIP,
            Format::Docker => DOCKER_LAYER_GZIP,
        }
    }
}

/// A single-platform image.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Manifest,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub os: String,
    pub architecture: String,
}

impl Image {
    /// Config first, then layers: everything a pull fetches after the manifest.
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }
}

/// An OCI index or Docker manifest list with one image per platform.
#[derive(Clone, Debug)]
pub struct MultiArch {
    pub index: Manifest,
    pub children: Vec<Image>,
}

impl MultiArch {
    /// The child for `architecture` (linux).
    pub fn child(&self, architecture: &str) -> &Image {
        self.children
            .iter()
            .find(|c| c.architecture == architecture)
            .unwrap_or_else(|| panic!("no {architecture} child"))
    }
}

/// One entry of a layer tarball.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// A gzip'd tar layer with fixed metadata (mtime 0, root owner), and its diff_id.
pub fn layer(format: Format, entries: &[Entry<'_>]) -> (Blob, String) {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .expect("tar dir");
            }
            Entry::File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, *data)
                    .expect("tar file");
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, path, target)
                    .expect("tar symlink");
            }
        }
    }
    let tar_bytes = builder.into_inner().expect("finish tar");
    let diff_id = sha256_digest(&tar_bytes);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar_bytes).expect("gzip layer");
    let gz_bytes = gz.finish().expect("finish gzip");
    (Blob::new(format.layer_type(), gz_bytes), diff_id)
}

/// Assembles config and manifest for `layers` (each with its diff_id).
pub fn assemble(
    format: Format,
    architecture: &str,
    layers: Vec<(Blob, String)>,
    cmd: &[&str],
) -> Image {
    let diff_ids: Vec<&String> = layers.iter().map(|(_, d)| d).collect();
    let config_json = json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "patchpull tests"}],
    });
    let config = Blob::new(
        format.config_type(),
        serde_json::to_vec(&config_json).expect("serialise config"),
    );
    let layers: Vec<Blob> = layers.into_iter().map(|(b, _)| b).collect();
    let manifest = Manifest::from_json(
        format.manifest_type(),
        &json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_type(),
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }),
    );
    Image {
        manifest,
        config,
        layers,
        os: "linux".into(),
        architecture: architecture.into(),
    }
}

/// A small two-layer image whose content (and so every digest) depends on `seed`.
pub fn single(format: Format, seed: &str) -> Image {
    single_for(format, seed, "amd64")
}

fn single_for(format: Format, seed: &str, architecture: &str) -> Image {
    let text = format!("seed={seed} arch={architecture}\n");
    let seed_hash = Sha256::digest(seed.as_bytes());
    let filler_seed = u64::from_le_bytes(seed_hash[..8].try_into().expect("8 bytes"));
    let filler: Vec<u8> = deterministic_bytes(4096, filler_seed);
    let first = layer(
        format,
        &[
            Entry::Dir("etc/"),
            Entry::File("etc/seed.txt", text.as_bytes(), 0o644),
        ],
    );
    let second = layer(format, &[Entry::File("filler.bin", &filler, 0o644)]);
    assemble(format, architecture, vec![first, second], &["/bin/sh"])
}

/// An index (OCI) or manifest list (Docker) for linux/amd64 and linux/arm64.
pub fn multi_arch(format: Format, seed: &str) -> MultiArch {
    let children = vec![
        single_for(format, seed, "amd64"),
        single_for(format, seed, "arm64"),
    ];
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|c| {
            json!({
                "mediaType": c.manifest.media_type,
                "digest": c.manifest.digest,
                "size": c.manifest.bytes.len(),
                "platform": {"architecture": c.architecture, "os": c.os},
            })
        })
        .collect();
    let index = Manifest::from_json(
        format.index_type(),
        &json!({
            "schemaVersion": 2,
            "mediaType": format.index_type(),
            "manifests": manifests,
        }),
    );
    MultiArch { index, children }
}

/// What [`runnable_busybox`] puts in `/hello.txt`.
pub const HELLO_TEXT: &str = "hello from patchpull tests\n";

/// A runnable OCI image: the host's static `/bin/busybox`, `/bin/sh` -> busybox and
/// `/hello.txt`. Returns `None` when the host has no static busybox.
pub fn runnable_busybox() -> Option<Image> {
    let busybox = std::fs::read("/bin/busybox").ok()?;
    let rootfs = layer(
        Format::Oci,
        &[
            Entry::Dir("bin/"),
            Entry::File("bin/busybox", &busybox, 0o755),
            Entry::Symlink("bin/sh", "busybox"),
            Entry::Symlink("bin/cat", "busybox"),
            Entry::Dir("tmp/"),
            Entry::Dir("proc/"),
            Entry::Dir("dev/"),
            Entry::Dir("sys/"),
            Entry::File("hello.txt", HELLO_TEXT.as_bytes(), 0o644),
        ],
    );
    Some(assemble(
        Format::Oci,
        "amd64",
        vec![rootfs],
        &["/bin/sh", "-c", "cat /hello.txt"],
    ))
}

/// `size` pseudo-random bytes, the same for the same `seed`.
pub fn deterministic_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A large blob for Range and streaming tests.
pub fn big_blob(size: usize, seed: u64) -> Blob {
    Blob::new(OCTET_STREAM, deterministic_bytes(size, seed))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// Monolithic upload: `POST /v2/<repo>/blobs/uploads/`, then `PUT <location>?digest=`.
pub async fn push_blob(registry_url: &str, repo: &str, blob: &Blob) {
    push_blob_with(registry_url, repo, blob, None).await
}

/// [`push_blob`], sending `authorization` (Bearer or Basic) on every request when given.
pub async fn push_blob_with(
    registry_url: &str,
    repo: &str,
    blob: &Blob,
    authorization: Option<&str>,
) {
    let client = http();
    let authorize = |req: reqwest::RequestBuilder| match authorization {
        Some(a) => req.header("authorization", a),
        None => req,
    };
    let resp = authorize(client.post(format!("{registry_url}/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("start upload");
    let status = resp.status();
    assert_eq!(
        status,
        202,
        "start upload of {} to {repo}: {}",
        blob.digest,
        resp.text().await.unwrap_or_default()
    );
    let location = resp
        .headers()
        .get("location")
        .expect("upload Location")
        .to_str()
        .expect("ascii Location")
        .to_string();
    let location = if location.starts_with('/') {
        format!("{registry_url}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = authorize(client.put(format!("{location}{sep}digest={}", blob.digest)))
        .header("content-type", OCTET_STREAM)
        .body(blob.data.clone())
        .send()
        .await
        .expect("finish upload");
    let status = resp.status();
    assert_eq!(
        status,
        201,
        "upload of {}: {}",
        blob.digest,
        resp.text().await.unwrap_or_default()
    );
}

/// `PUT /v2/<repo>/manifests/<reference>` with the manifest's own Content-Type.
pub async fn push_manifest(registry_url: &str, repo: &str, reference: &str, manifest: &Manifest) {
    push_manifest_with(registry_url, repo, reference, manifest, None).await
}

/// [`push_manifest`], sending `authorization` when given.
pub async fn push_manifest_with(
    registry_url: &str,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
    authorization: Option<&str>,
) {
    let mut req = http()
        .put(format!("{registry_url}/v2/{repo}/manifests/{reference}"))
        .header("content-type", &manifest.media_type)
        .body(manifest.bytes.clone());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("put manifest");
    let status = resp.status();
    assert_eq!(
        status,
        201,
        "put manifest {repo}:{reference}: {}",
        resp.text().await.unwrap_or_default()
    );
}

/// Pushes blobs and the manifest, tagged `tag`.
pub async fn push_image(registry_url: &str, repo: &str, tag: &str, image: &Image) {
    for blob in image.blobs() {
        push_blob(registry_url, repo, blob).await;
    }
    push_manifest(registry_url, repo, tag, &image.manifest).await;
}

/// Pushes every child by digest, then the index tagged `tag`.
pub async fn push_multi_arch(registry_url: &str, repo: &str, tag: &str, multi: &MultiArch) {
    for child in &multi.children {
        for blob in child.blobs() {
            push_blob(registry_url, repo, blob).await;
        }
        push_manifest(registry_url, repo, &child.manifest.digest, &child.manifest).await;
    }
    push_manifest(registry_url, repo, tag, &multi.index).await;
}
