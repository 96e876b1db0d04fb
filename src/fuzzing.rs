//! Entry points for the fuzz targets in `fuzz/`: each feeds untrusted bytes to one parser
//! family exactly as the server, scanner or patcher does, and ignores the result. Not an
//! API; it exists so the parsers stay private to the crate. A panic here is a bug.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::admission::{Admission, PatchedDigests};
use crate::config::Config;
use crate::distribution::{range, reference, Digest, DistributionRequest, Reference};

/// The path grammar (`/v2/<name>/manifests/<ref>?...`), names, tags, digests and the
/// image references the admission webhook and admin API read. Input: `path[?query]`.
pub fn distribution(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let _ = DistributionRequest::parse(path, query);
    let _ = reference::is_valid_name(text);
    let _ = reference::is_valid_tag(text);
    if let Ok(digest) = text.parse::<Digest>() {
        // A parsed digest prints back as itself: it is used as a store key.
        assert_eq!(digest.to_string(), text);
    }
    let _ = text.parse::<Reference>();
    let _ = crate::admission::reference::ImageReference::parse(text).map(|r| r.to_string());
}

/// The `Range` header against a representation length. Input: 8 bytes of length, then the
/// header value.
pub fn range(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (len, header) = data.split_at(8);
    let total = u64::from_le_bytes(len.try_into().unwrap_or([0; 8])) >> (len[0] % 64);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    if let range::RangeRequest::Partial(r) = range::resolve(Some(header), total) {
        assert!(r.start <= r.end && r.end < total, "{r:?} of {total}");
        let _ = (r.len(), r.content_range(total));
    }
}

/// Manifests and indexes as upstream sends them: the JSON check before storing, the media
/// type sniff, the platform walk and the referrers filter.
pub fn manifest(data: &[u8]) {
    let _ = crate::upstream::response::check_manifest_json(data);
    let _ = crate::upstream::response::sniff_media_type(data);
    let _ = crate::mirror::image::parse_manifest_doc(data);
    let _ = crate::mirror::filter_referrers(data, "application/vnd.example+json");
}

/// Trivy and copa reports (the format is detected, as for `--report`).
pub fn scan_report(data: &[u8]) {
    let _ = crate::scan::report::parse(data);
}

struct NonePatched;

impl PatchedDigests for NonePatched {
    fn patched<'a>(
        &'a self,
        _upstream: &'a str,
        digest: &'a Digest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Digest>> + Send + 'a>> {
        // Some digests have a patch, some not, so both branches run.
        let found = digest
            .hex()
            .starts_with('a')
            .then(|| Digest::sha256_of(b"patched"));
        Box::pin(std::future::ready(found))
    }

    fn signed<'a>(
        &'a self,
        _upstream: &'a str,
        _repository: &'a str,
        _patched: &'a Digest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::ready(true))
    }
}

/// An AdmissionReview body, answered as the webhook does; the answer must be JSON.
pub fn admission_review(data: &[u8]) {
    static STATE: OnceLock<Option<(Admission, tokio::runtime::Runtime)>> = OnceLock::new();
    let Some((admission, runtime)) = STATE
        .get_or_init(|| {
            let config = Config::from_toml_str(
                r#"
                [admission]
                enabled = true
                registry = "pp.example:5000"
                rewrite_digests = true
                [[upstream]]
                name = "docker.io"
                url = "https://registry-1.docker.io"
                default = true
                [[upstream]]
                name = "ghcr.io"
                url = "https://ghcr.io"
                "#,
            )
            .or_else(|_| Config::from_toml_str("[admission]\nregistry = \"pp.example:5000\"\n"))
            .ok()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            Some((Admission::new(&config), runtime))
        })
        .as_ref()
        .map(|(a, r)| (a, r))
    else {
        return;
    };
    let answer = runtime.block_on(admission.review(&NonePatched, data));
    assert!(serde_json::from_slice::<serde_json::Value>(&answer).is_ok());
}

/// deb822 as dpkg's status file, status.d files, the patcher's database stanzas, Debian
/// `Packages` indexes and `Release` files.
pub fn deb822(data: &[u8]) {
    let _ = crate::pkgs::dpkg::deb822::parse(data);
    let _ = crate::pkgs::dpkg::db::parse_status(crate::pkgs::dpkg::db::STATUS_PATH, data);
    let files: Vec<(String, &[u8])> = data
        .split(|&b| b == 0)
        .enumerate()
        .map(|(i, part)| (format!("{}/p{i}", crate::pkgs::dpkg::db::STATUS_DIR), part))
        .collect();
    let _ = crate::pkgs::dpkg::db::parse_status_dir(files.iter().map(|(p, d)| (p.as_str(), *d)));
    let _ = crate::scan::builtin::index::parse_text(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::patch::dpkg::database::Stanza::parse(text);
        let status = crate::patch::dpkg::database::StatusFile::parse(text);
        // The patcher rewrites the status file from its paragraphs: nothing but blank lines
        // before the first paragraph and after the last may be lost.
        assert_eq!(status.to_text().trim(), text.trim());
        let _ = status.find("libc6", None);
        let _ = crate::scan::builtin::release::Release::parse(text);
        let _ = crate::scan::builtin::release::parse_date(text);
    }
}

/// `InRelease`: the cleartext-signed framing, checked against a test keyring (the
/// signature cannot verify; the framing and the Release inside are what is exercised).
/// True when the message verifies.
pub fn inrelease(data: &[u8], keyring: &crate::scan::builtin::keyring::Keyring) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    match keyring.verify_cleartext(text, now) {
        Ok(verified) => {
            let _ = crate::scan::builtin::release::Release::parse(&verified.text);
            true
        }
        Err(_) => false,
    }
}

/// A keyring for [`inrelease`] from armored or binary key bytes.
pub fn keyring(bytes: &[u8]) -> Option<crate::scan::builtin::keyring::Keyring> {
    crate::scan::builtin::keyring::Keyring::from_bytes(Path::new("fuzz.asc"), bytes).ok()
}

/// APKINDEX and the installed database (`lib/apk/db/installed`).
pub fn apk_text(data: &[u8]) {
    let _ = crate::pkgs::apk::db::parse_installed("lib/apk/db/installed", data);
    let _ = crate::scan::builtin::apk::index::ApkIndex::parse(data);
}

/// The rpm header blob of an rpmdb row, and the container-manifest rpm list.
pub fn rpm(data: &[u8]) {
    use crate::pkgs::rpm::header::{tag, Header};
    if let Ok(header) = Header::parse(data) {
        for t in [
            tag::NAME,
            tag::VERSION,
            tag::RELEASE,
            tag::ARCH,
            tag::SOURCERPM,
        ] {
            let _ = header.string(t);
        }
        let _ = header.int32(tag::EPOCH);
    }
    let _ = crate::pkgs::rpm::db::parse_container_manifest("container-manifest-2", data);
}

/// A scratch directory for the file-based targets, one per process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("patchpull-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

fn write_input(data: &[u8]) -> Option<std::path::PathBuf> {
    let path = scratch().join("input");
    std::fs::write(&path, data).ok()?;
    Some(path)
}

/// A `.deb`: the ar framing, both tars through the project's path and type checks, every
/// compression dpkg writes; then each regular file read back. True when it opens.
pub fn deb(data: &[u8]) -> bool {
    use crate::pkgs::dpkg::debfile::{DebLimits, DebPackage};
    let Some(path) = write_input(data) else {
        return false;
    };
    let limits = DebLimits {
        max_control_bytes: 1 << 20,
        max_data_bytes: 4 << 20,
        max_entries: 10_000,
    };
    let Ok(package) = DebPackage::open(&path, scratch(), &limits) else {
        return false;
    };
    let _ = crate::pkgs::dpkg::db::parse_status("control", package.control());
    for entry in package.entries() {
        if let Ok(mut reader) = package.open_file(entry) {
            let _ = io::copy(&mut reader, &mut io::sink());
        }
    }
    true
}

/// An `.apk`: concatenated gzip streams, the signature, `.PKGINFO` and the data tar.
/// True when it opens.
pub fn apk_package(data: &[u8]) -> bool {
    use crate::pkgs::apk::package::{ApkLimits, ApkPackage};
    let Some(path) = write_input(data) else {
        return false;
    };
    let limits = ApkLimits {
        max_package_bytes: 4 << 20,
        max_control_bytes: 1 << 20,
        max_data_bytes: 4 << 20,
        max_entries: 10_000,
    };
    match ApkPackage::open(&path, scratch(), &limits) {
        Ok(package) => {
            let _ = (package.identity(), package.entries().len());
            true
        }
        Err(_) => false,
    }
}

/// An image layer: compression sniffed (tar, gzip, zstd), tar entries through the
/// project's checks, small files read. True when one of the media types reads it whole.
pub fn layer(data: &[u8]) -> bool {
    use crate::image::{read_layer, LayerRef, Limits, Usage};
    let limits = Limits {
        max_entries: 10_000,
        max_decompressed_bytes: 8 << 20,
        max_file_bytes: 1 << 20,
        max_symlinks: 40,
    };
    let layer = LayerRef {
        index: 0,
        digest: "sha256:fuzz".into(),
    };
    let mut read = false;
    for media_type in [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
    ] {
        let mut usage = Usage::default();
        read |= read_layer(data, &layer, media_type, &limits, &mut usage, |entry| {
            let _ = (entry.path().len(), entry.kind(), entry.link_target());
            if entry.size() < 4096 {
                let _ = entry.read_contents();
            }
            Ok(())
        })
        .is_ok();
    }
    read
}

/// Writes at most `limit` bytes, then fails, as the real readers cap output.
struct Capped {
    written: usize,
    limit: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() > self.limit {
            return Err(io::Error::other("over the cap"));
        }
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The xz (the project's own streaming decoder), lzma, gzip and zstd readers. The first
/// byte picks the format.
pub fn decompress(data: &[u8]) {
    use crate::pkgs::dpkg::debfile::Compression;
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let compression = match which % 4 {
        0 => Compression::Xz,
        1 => Compression::Lzma,
        2 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let mut out = Capped {
        written: 0,
        limit: 8 << 20,
    };
    let _ = compression.decompress(input, &mut out);
    if let Ok(mut reader) = crate::image::layer::decompressed(input, 8 << 20) {
        let _ = io::copy(&mut reader.by_ref().take(8 << 20), &mut io::sink());
    }
}

/// The configuration file (TOML, then validation).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_toml_str(text) {
            let _ = config.to_display_toml();
        }
    }
}
