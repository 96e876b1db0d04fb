//! `APKINDEX.tar.gz` as `abuild-sign` writes it: gzip members concatenated. The first
//! holds a tar (end-of-archive blocks cut) whose entries are signatures,
//! `.SIGN.RSA.<key>` (PKCS#1 v1.5 over SHA-1), `.SIGN.RSA256.<key>` (SHA-256) or
//! `.SIGN.RSA512.<key>` (SHA-512); the rest is the gzipped index tar (`DESCRIPTION`,
//! `APKINDEX`), and the signatures cover those compressed bytes as served.
//!
//! One signature by a trusted key must verify before the index is decompressed: the keys
//! are PEM files in a directory, each named as the `<key>` its signature names (as in
//! `/etc/apk/keys`). The signature member is read (bounded) to find the signatures;
//! nothing else is read before the check.

use std::io::{self, Read};
use std::path::Path;

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use super::error::IndexError;

/// The signature member's decompressed size; real ones are one entry of ~1 KiB.
const MAX_SIGNATURE_TAR_BYTES: u64 = 64 * 1024;
/// One signature; RSA-8192 gives 1 KiB.
const MAX_SIGNATURE_BYTES: u64 = 4096;
/// A key file; a PEM RSA-8192 public key is under 2 KiB.
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// `DESCRIPTION`: one line such as `v3.20.3-123-gabcdef0123`.
const MAX_DESCRIPTION_BYTES: u64 = 4096;

/// What a verified index holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIndex {
    /// The key file name whose signature verified.
    pub key: String,
    /// `DESCRIPTION`, trimmed, when present.
    pub description: Option<String>,
    /// The `APKINDEX` text.
    pub apkindex: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug)]
struct Signature {
    algorithm: Algorithm,
    key: String,
    bytes: Vec<u8>,
}

/// Verifies `bytes` (a whole `APKINDEX.tar.gz`) against the keys in `keys_dir`, then
/// extracts the index, reading at most `max_unpacked` bytes of tar.
///
/// # Errors
/// [`IndexError::NotSigned`] when there is no signature member or it holds no usable
/// signature; [`IndexError::UnknownKey`] when no signature names a key in `keys_dir`;
/// [`IndexError::BadSignature`] when the signatures by known keys all fail;
/// [`IndexError::Key`] for an unreadable key file; [`IndexError::Malformed`] for anything
/// that is not gzip/tar as described, or over the limits.
pub fn verify_and_extract(
    bytes: &[u8],
    keys_dir: &Path,
    max_unpacked: u64,
) -> Result<VerifiedIndex, IndexError> {
    let (signature_tar, boundary) = first_member(bytes)?;
    let signed = &bytes[boundary..];
    if signed.is_empty() {
        return Err(IndexError::NotSigned {
            reason: "the file is a single gzip member, with no signature before the index"
                .to_owned(),
        });
    }
    let signatures = read_signatures(&signature_tar)?;
    let key = verify(&signatures, signed, keys_dir)?;
    let (description, apkindex) = extract(signed, max_unpacked)?;
    Ok(VerifiedIndex {
        key,
        description,
        apkindex,
    })
}

/// The first gzip member decompressed, and its length in `bytes`.
pub(crate) fn first_member(bytes: &[u8]) -> Result<(Vec<u8>, usize), IndexError> {
    let mut decoder = flate2::bufread::GzDecoder::new(bytes);
    let mut out = Vec::new();
    (&mut decoder)
        .take(MAX_SIGNATURE_TAR_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| malformed(format!("the first gzip member cannot be read: {e}")))?;
    if out.len() as u64 > MAX_SIGNATURE_TAR_BYTES {
        return Err(IndexError::NotSigned {
            reason: format!(
                "the first gzip member is over {MAX_SIGNATURE_TAR_BYTES} bytes, too large for \
                 a signature"
            ),
        });
    }
    let rest = decoder.into_inner();
    Ok((out, bytes.len() - rest.len()))
}

fn read_signatures(tar_bytes: &[u8]) -> Result<Vec<Signature>, IndexError> {
    let mut archive = tar::Archive::new(tar_bytes);
    let entries = archive
        .entries()
        .map_err(|e| malformed(format!("the signature member is not a tar: {e}")))?;
    let mut signatures = Vec::new();
    let mut names = Vec::new();
    for entry in entries {
        let mut entry =
            entry.map_err(|e| malformed(format!("the signature member is not a tar: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parsed = [
            (".SIGN.RSA.", Algorithm::Sha1),
            (".SIGN.RSA256.", Algorithm::Sha256),
            (".SIGN.RSA512.", Algorithm::Sha512),
        ]
        .into_iter()
        .find_map(|(prefix, algorithm)| Some((name.strip_prefix(prefix)?, algorithm)));
        names.push(name.clone());
        let Some((key, algorithm)) = parsed else {
            continue;
        };
        if entry.size() > MAX_SIGNATURE_BYTES {
            return Err(malformed(format!(
                "signature {name} is {} bytes, over {MAX_SIGNATURE_BYTES}",
                entry.size()
            )));
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| malformed(format!("reading {name}: {e}")))?;
        signatures.push(Signature {
            algorithm,
            key: key.to_owned(),
            bytes,
        });
    }
    if signatures.is_empty() {
        let found = if names.is_empty() {
            "no entries".to_owned()
        } else {
            names.join(", ")
        };
        return Err(IndexError::NotSigned {
            reason: format!("no .SIGN.RSA* entry in the first gzip member (found {found})"),
        });
    }
    Ok(signatures)
}

/// The key of the first signature that verifies.
fn verify(signatures: &[Signature], signed: &[u8], keys_dir: &Path) -> Result<String, IndexError> {
    let mut unknown = Vec::new();
    let mut failed = None;
    for signature in signatures {
        if !plain_file_name(&signature.key) {
            unknown.push(signature.key.clone());
            continue;
        }
        let path = keys_dir.join(&signature.key);
        if !path.is_file() {
            unknown.push(signature.key.clone());
            continue;
        }
        let key = load_key(&path)?;
        let (scheme, digest) = match signature.algorithm {
            Algorithm::Sha1 => (Pkcs1v15Sign::new::<Sha1>(), Sha1::digest(signed).to_vec()),
            Algorithm::Sha256 => (
                Pkcs1v15Sign::new::<Sha256>(),
                Sha256::digest(signed).to_vec(),
            ),
            Algorithm::Sha512 => (
                Pkcs1v15Sign::new::<Sha512>(),
                Sha512::digest(signed).to_vec(),
            ),
        };
        match key.verify(scheme, &digest, &signature.bytes) {
            Ok(()) => return Ok(signature.key.clone()),
            Err(_) => failed = Some(signature.key.clone()),
        }
    }
    match failed {
        Some(key) => Err(IndexError::BadSignature { key }),
        None => Err(IndexError::UnknownKey {
            keys: unknown,
            keys_dir: keys_dir.to_owned(),
        }),
    }
}

/// A name that stays inside the keys directory.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

/// An RSA public key from PEM: `PUBLIC KEY` (SubjectPublicKeyInfo, as Alpine ships them)
/// or `RSA PUBLIC KEY` (PKCS#1).
pub(crate) fn load_key(path: &Path) -> Result<RsaPublicKey, IndexError> {
    let key_error = |reason: String| IndexError::Key {
        path: path.to_owned(),
        reason,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_BYTES).read_to_string(&mut text))
        .map_err(|e| key_error(format!("reading: {e}")))?;
    let (label, der) = pem_block(&text).ok_or_else(|| {
        key_error("no PEM block (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)".into())
    })?;
    match label {
        "PUBLIC KEY" => RsaPublicKey::from_public_key_der(&der).map_err(|e| e.to_string()),
        "RSA PUBLIC KEY" => RsaPublicKey::from_pkcs1_der(&der).map_err(|e| e.to_string()),
        other => Err(format!("a PEM {other:?} block is not an RSA public key")),
    }
    .map_err(|e| key_error(format!("not an RSA public key: {e}")))
}

/// The label and decoded body of the first PEM block.
fn pem_block(text: &str) -> Option<(&str, Vec<u8>)> {
    use base64::Engine as _;
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))?
        .trim();
    let mut body = String::new();
    for line in lines {
        if let Some(end) = line.strip_prefix("-----END ") {
            return (end.strip_suffix("-----")?.trim() == label)
                .then(|| base64::engine::general_purpose::STANDARD.decode(&body).ok())
                .flatten()
                .map(|der| (label, der));
        }
        body.push_str(line);
    }
    None
}

/// `DESCRIPTION` and `APKINDEX` from the verified index members.
fn extract(signed: &[u8], max_unpacked: u64) -> Result<(Option<String>, Vec<u8>), IndexError> {
    let limited = Limited {
        inner: flate2::read::MultiGzDecoder::new(signed),
        left: max_unpacked,
    };
    let mut archive = tar::Archive::new(limited);
    let unreadable = |e: io::Error| malformed(format!("the index tar cannot be read: {e}"));
    let mut description = None;
    let mut apkindex = None;
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let path = entry.path_bytes().into_owned();
        match path.as_slice() {
            b"APKINDEX" => {
                let mut text = Vec::new();
                entry.read_to_end(&mut text).map_err(unreadable)?;
                apkindex = Some(text);
            }
            b"DESCRIPTION" => {
                let mut text = Vec::new();
                (&mut entry)
                    .take(MAX_DESCRIPTION_BYTES)
                    .read_to_end(&mut text)
                    .map_err(unreadable)?;
                description = Some(String::from_utf8_lossy(&text).trim().to_owned());
            }
            _ => {}
        }
    }
    let apkindex = apkindex.ok_or_else(|| malformed("the index tar has no APKINDEX entry"))?;
    Ok((description.filter(|d| !d.is_empty()), apkindex))
}

/// A reader that fails once more than `left` bytes have been asked of it.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::other("the index decompresses to more than the configured limit")
        })?;
        Ok(n)
    }
}

fn malformed(reason: impl Into<String>) -> IndexError {
    IndexError::Malformed {
        reason: reason.into(),
    }
}
