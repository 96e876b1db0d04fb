//! Reading an apk v2 package (`.apk`) for installation, every entry checked before anything
//! is written anywhere.
//!
//! An `.apk` is concatenated gzip members whose tars apk reads as one stream: an optional
//! signature member (`.SIGN.RSA.<key>.rsa.pub`, ...), the control member (`.PKGINFO` and
//! the `.pre-install`/`.post-install`/`.pre-upgrade`/`.post-upgrade`/`.pre-deinstall`/
//! `.post-deinstall`/`.trigger` scripts; abuild cuts its end-of-archive blocks), then the
//! data member(s), whose regular files carry a pax record `APK-TOOLS.checksum.SHA1` (hex).
//!
//! - The identity ([`ApkPackage::identity`], the database's `C:` and the `C:` of
//!   `APKINDEX`) is `Q1` + base64 of the SHA-1 of the control member's compressed bytes, as
//!   apk-tools computes it (`apk_sign_ctx_mpart_cb`): callers compare it with the index.
//! - `datahash` in `.PKGINFO` (SHA-256 of the data members' compressed bytes) is required
//!   and checked, and so is every file's SHA-1 against its pax record.
//! - Signatures are not verified here: the verified index's `C:` is the package's trust.
//!
//! The data tar is decompressed once into an unlinked file in the caller's scratch
//! directory, and each regular file's byte range is recorded for the layer writer.
//! Entries apk does not install are left out of [`ApkPackage::entries`]: names that begin
//! with `.` (apk skips them) and `.keep_*` files. Rejected as hostile: absolute paths, `..`,
//! control characters, symlinks whose relative target climbs above the root, hard links to
//! anything but an earlier regular file, devices and FIFOs, duplicates, entries below a
//! symlink or file.

mod data;
mod pkginfo;
pub(crate) mod sha1;
mod stream;

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;

pub use pkginfo::PkgInfo;
use stream::{anonymous_file, gunzip_member, Hashing, LimitWriter};

/// Bounds on what one package may hold; a package over any of them is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApkLimits {
    /// Size of the `.apk` file itself.
    pub max_package_bytes: u64,
    /// Decompressed size of the signature and control members, each held in memory.
    pub max_control_bytes: u64,
    /// Decompressed size of the data tar, held in the scratch directory.
    pub max_data_bytes: u64,
    /// Entries in the data tar.
    pub max_entries: u64,
}

impl Default for ApkLimits {
    fn default() -> Self {
        ApkLimits {
            max_package_bytes: 2 << 30,
            max_control_bytes: 16 << 20,
            max_data_bytes: 4 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// The kinds of data entries apk installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApkEntryKind {
    Dir,
    File,
    Symlink,
    Hardlink,
}

/// One validated entry of the data tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkEntry {
    /// Normalized: no leading `./` or `/`, no trailing `/`, no `.` or empty components.
    pub path: String,
    pub kind: ApkEntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: u64,
    /// Bytes of a regular file; 0 for every other kind.
    pub size: u64,
    /// A symlink's target exactly as stored; a hard link's target normalized like `path`.
    pub link_target: Option<String>,
    /// The `APK-TOOLS.checksum.SHA1` record (regular files always have one; abuild gives
    /// symlinks one too, over the target).
    pub checksum: Option<[u8; 20]>,
}

/// Why a package could not be opened. Every variant names the segment or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ApkFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A member does not decompress or parse, or a checksum does not match.
    #[error("{segment} segment: {reason}")]
    Corrupt {
        segment: &'static str,
        reason: String,
    },
    #[error("{segment} segment: {what} is not supported")]
    Unsupported { segment: &'static str, what: String },
    #[error("{segment} segment: more than {limit} bytes")]
    TooLarge { segment: &'static str, limit: u64 },
    #[error("data segment: more than {limit} entries")]
    TooManyEntries { limit: u64 },
    /// An entry that would write outside the image root, through a link, or something apk
    /// would not install. `path` is the entry's path as stored (non-UTF-8 escaped).
    #[error("hostile package entry {path:?}: {reason}")]
    Hostile { path: String, reason: String },
    #[error("{segment} segment: {path:?} is not UTF-8, which is not supported")]
    NotUtf8 { segment: &'static str, path: String },
    #[error(".PKGINFO line {line}: {reason}")]
    PkgInfo { line: usize, reason: String },
}

/// An opened, fully validated `.apk`.
pub struct ApkPackage {
    info: PkgInfo,
    identity: [u8; 20],
    file_size: u64,
    signatures: Vec<String>,
    scripts: BTreeMap<String, Vec<u8>>,
    entries: Vec<ApkEntry>,
    index: HashMap<String, usize>,
    offsets: Vec<u64>,
    data: Arc<File>,
}

impl fmt::Debug for ApkPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApkPackage")
            .field("pkgname", &self.info.pkgname)
            .field("pkgver", &self.info.pkgver)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

const READ_BUFFER: usize = 256 * 1024;

/// The script names apk knows (`.<name>` in the control segment).
pub const SCRIPT_NAMES: [&str; 7] = [
    "pre-install",
    "post-install",
    "pre-deinstall",
    "post-deinstall",
    "pre-upgrade",
    "post-upgrade",
    "trigger",
];

impl ApkPackage {
    /// Opens and fully validates the package at `path`, keeping its decompressed data tar
    /// in an unlinked file inside `scratch_dir`.
    ///
    /// # Errors
    /// See [`ApkFileError`]; nothing is left in `scratch_dir` either way.
    pub fn open(
        path: &Path,
        scratch_dir: &Path,
        limits: &ApkLimits,
    ) -> Result<ApkPackage, ApkFileError> {
        let io_err = |source| ApkFileError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_size = file.metadata().map_err(io_err)?.len();
        if file_size > limits.max_package_bytes {
            return Err(ApkFileError::TooLarge {
                segment: "whole package",
                limit: limits.max_package_bytes,
            });
        }
        let mut input = Hashing::new(READ_BUFFER, &file);

        input.start_sha1();
        let first = small_member(&mut input, "control", limits, path)?;
        let first_identity = input.take_sha1();
        let first_names = control_names(&first, "control")?;
        let is_signature = first_names.first().is_some_and(|n| n.starts_with(".SIGN."));
        let (control, identity, signatures) = if is_signature {
            if let Some(other) = first_names.iter().find(|n| !n.starts_with(".SIGN.")) {
                return Err(ApkFileError::Corrupt {
                    segment: "signature",
                    reason: format!("{other:?} in the signature segment"),
                });
            }
            input.start_sha1();
            let control = small_member(&mut input, "control", limits, path)?;
            (control, input.take_sha1(), first_names)
        } else {
            (first, first_identity, Vec::new())
        };
        let (info, scripts) = parse_control(&control)?;

        if input.at_end().map_err(io_err)? {
            return Err(ApkFileError::Corrupt {
                segment: "data",
                reason: "missing: the package ends after its control segment".to_owned(),
            });
        }
        let scratch_err = |source| ApkFileError::Io {
            path: scratch_dir.to_owned(),
            source,
        };
        let data_file = anonymous_file(scratch_dir).map_err(scratch_err)?;
        let mut data_tar = LimitWriter::new(
            BufWriter::with_capacity(READ_BUFFER, &data_file),
            limits.max_data_bytes,
        );
        input.start_sha256();
        while !input.at_end().map_err(io_err)? {
            let result = gunzip_member(&mut input, &mut data_tar).and_then(|()| data_tar.flush());
            member_result(
                result,
                &data_tar,
                "data",
                scratch_dir,
                limits.max_data_bytes,
            )?;
        }
        let datahash = input.take_sha256();
        let data_len = data_tar.written;
        data_tar
            .into_inner()
            .into_inner()
            .map_err(|e| scratch_err(e.into_error()))?;
        match &info.datahash {
            None => {
                return Err(ApkFileError::Unsupported {
                    segment: "control",
                    what: "a package without datahash (apk v1 format)".to_owned(),
                })
            }
            Some(expected) if *expected != hex::encode(datahash) => {
                return Err(ApkFileError::Corrupt {
                    segment: "data",
                    reason: format!(
                        "SHA-256 {} does not match datahash {expected}",
                        hex::encode(datahash)
                    ),
                })
            }
            Some(_) => {}
        }

        let data = Arc::new(data_file);
        let walked = data::walk(&data, data_len, limits)?;
        Ok(ApkPackage {
            info,
            identity,
            file_size,
            signatures,
            scripts,
            entries: walked.entries,
            index: walked.index,
            offsets: walked.offsets,
            data,
        })
    }

    /// `.PKGINFO`.
    pub fn info(&self) -> &PkgInfo {
        &self.info
    }

    /// The package identity as the database and `APKINDEX` write it (`Q1...=`).
    pub fn identity(&self) -> String {
        q1(&self.identity)
    }

    /// Size of the `.apk` file: the database's `S:`.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Names of the signature files (`.SIGN.RSA.<key>`), unverified.
    pub fn signatures(&self) -> &[String] {
        &self.signatures
    }

    /// Scripts by name without the dot (`post-upgrade`, `trigger`, ...); see
    /// [`SCRIPT_NAMES`].
    pub fn scripts(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.scripts
    }

    /// The entries apk installs, in archive order.
    pub fn entries(&self) -> &[ApkEntry] {
        &self.entries
    }

    /// Where a regular file's bytes lie in the decompressed data tar: (file, offset,
    /// length), for positional reads from any thread. `None` for other kinds.
    pub fn file_slice(&self, entry: &ApkEntry) -> Option<(Arc<File>, u64, u64)> {
        if entry.kind != ApkEntryKind::File {
            return None;
        }
        let i = *self.index.get(&entry.path)?;
        let offset = *self.offsets.get(i)?;
        (self.entries.get(i)? == entry).then(|| (Arc::clone(&self.data), offset, entry.size))
    }
}

/// `Q1` + base64 of a SHA-1: how apk writes `C:` and `Z:` values.
pub fn q1(sha1: &[u8; 20]) -> String {
    format!(
        "Q1{}",
        base64::engine::general_purpose::STANDARD.encode(sha1)
    )
}

/// Reads one gzip member (signature or control) into memory.
fn small_member(
    input: &mut Hashing<&File>,
    segment: &'static str,
    limits: &ApkLimits,
    path: &Path,
) -> Result<Vec<u8>, ApkFileError> {
    let mut out = LimitWriter::new(Vec::new(), limits.max_control_bytes);
    let result = gunzip_member(input, &mut out);
    member_result(result, &out, segment, path, limits.max_control_bytes)?;
    Ok(out.into_inner())
}

/// Tells a limit and a failing sink apart from corruption.
fn member_result<W>(
    result: io::Result<()>,
    out: &LimitWriter<W>,
    segment: &'static str,
    sink: &Path,
    limit: u64,
) -> Result<(), ApkFileError> {
    if out.exceeded {
        return Err(ApkFileError::TooLarge { segment, limit });
    }
    result.map_err(|e| {
        if out.failed {
            ApkFileError::Io {
                path: sink.to_owned(),
                source: e,
            }
        } else {
            ApkFileError::Corrupt {
                segment,
                reason: format!("decompressing: {e}"),
            }
        }
    })
}

/// The names of a signature or control tar, which must hold only top-level dot files.
fn control_names(tar_bytes: &[u8], segment: &'static str) -> Result<Vec<String>, ApkFileError> {
    Ok(control_files(tar_bytes, segment, false)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

fn control_files(
    tar_bytes: &[u8],
    segment: &'static str,
    with_data: bool,
) -> Result<Vec<(String, Vec<u8>)>, ApkFileError> {
    use std::io::Read as _;
    let corrupt = |reason: String| ApkFileError::Corrupt { segment, reason };
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().map_err(|e| corrupt(e.to_string()))? {
        let mut entry = entry.map_err(|e| corrupt(format!("reading the archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw.clone()).map_err(|_| ApkFileError::NotUtf8 {
            segment,
            path: raw.escape_ascii().to_string(),
        })?;
        if !name.starts_with('.') || name.contains('/') {
            return Err(ApkFileError::Unsupported {
                segment,
                what: format!("{name:?} (data files before the data segment: apk v1 format)"),
            });
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt(format!("{name:?} is not a regular file")));
        }
        let mut data = Vec::new();
        if with_data {
            entry
                .read_to_end(&mut data)
                .map_err(|e| corrupt(format!("{name:?}: {e}")))?;
        }
        files.push((name, data));
    }
    Ok(files)
}

fn parse_control(tar_bytes: &[u8]) -> Result<(PkgInfo, BTreeMap<String, Vec<u8>>), ApkFileError> {
    let mut info = None;
    let mut scripts = BTreeMap::new();
    for (name, data) in control_files(tar_bytes, "control", true)? {
        match name.as_str() {
            ".PKGINFO" => {
                if data.len() > pkginfo::MAX_PKGINFO {
                    return Err(ApkFileError::TooLarge {
                        segment: "control",
                        limit: pkginfo::MAX_PKGINFO as u64,
                    });
                }
                info = Some(pkginfo::parse(&data)?);
            }
            ".INSTALL" => {
                return Err(ApkFileError::Unsupported {
                    segment: "control",
                    what: ".INSTALL (apk v1 format)".to_owned(),
                })
            }
            other => {
                let script = &other[1..];
                if SCRIPT_NAMES.contains(&script) {
                    scripts.insert(script.to_owned(), data);
                }
            }
        }
    }
    let info = info.ok_or_else(|| ApkFileError::Corrupt {
        segment: "control",
        reason: "no .PKGINFO".to_owned(),
    })?;
    Ok((info, scripts))
}
