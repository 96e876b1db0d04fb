//! Reading a verified `.deb` for installation: the `ar` container, the control archive and
//! the data archive, with every entry checked before anything is written anywhere.
//!
//! The data archive is decompressed once into an anonymous file in the caller's scratch
//! directory (unlinked as soon as it is created, so nothing is ever left behind), then
//! walked with the `tar` crate to record entries and where each file's bytes lie. Layer
//! writers copy those byte ranges with positional reads, from several threads at once.
//! xz has its own decoder ([`xz`]) because lzma-rs holds a whole xz block in memory.
//!
//! Rejected as hostile: paths that are absolute or contain `..`; symlinks whose relative
//! target climbs above the root; hard links to anything but an earlier regular file;
//! devices, FIFOs and other types; duplicate paths; entries below a symlink or file; paths
//! that dpkg's file lists cannot hold (a newline).

mod ar;
mod control;
mod data;
mod decompress;
mod metascan;
mod reader;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod xz_tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::durable::TempFile;

pub use reader::DataReader;

use decompress::LimitWriter;
/// How a member of a `.deb` (or a Debian index) is compressed; decompresses with bounded
/// memory.
pub use decompress::{Compression, MAX_XZ_MEMORY};

/// Bounds on what one package may unpack to; a package over any of them is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebLimits {
    /// Decompressed size of `control.tar`, held in memory.
    pub max_control_bytes: u64,
    /// Decompressed size of `data.tar`, held in the scratch directory.
    pub max_data_bytes: u64,
    /// Entries in each of the two archives.
    pub max_entries: u64,
}

impl Default for DebLimits {
    fn default() -> Self {
        DebLimits {
            max_control_bytes: 64 << 20,
            max_data_bytes: 4 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// A file of `control.tar` other than the root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMember {
    pub data: Vec<u8>,
    /// Permission bits (`0o7777` mask): maintainer scripts are executable.
    pub mode: u32,
}

/// The kinds of data entries a package may install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    Dir,
    File,
    Symlink,
    Hardlink,
}

/// One validated entry of `data.tar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataEntry {
    /// Normalized: no leading `./` or `/`, no trailing `/`, no `.` or empty components.
    /// The archive root (`./`) is `""`.
    pub path: String,
    pub kind: DataKind,
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
}

/// Why a package could not be opened. Every variant names the member or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Reading the package or using the scratch directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The `ar` container or its first member is not what a `.deb` has.
    #[error("not a Debian binary package: {reason}")]
    NotDeb { reason: String },
    /// A member does not decompress or parse (truncated, corrupt, misplaced).
    #[error("{member}: {reason}")]
    Corrupt { member: String, reason: String },
    /// A well-formed feature this reader does not implement (bzip2, sparse files, ...).
    #[error("{member}: {what} is not supported")]
    Unsupported { member: String, what: String },
    /// A member decompresses to more than its limit.
    #[error("{member}: more than {limit} bytes decompressed")]
    TooLarge { member: String, limit: u64 },
    /// An archive holds more entries than the limit.
    #[error("{member}: more than {limit} entries")]
    TooManyEntries { member: String, limit: u64 },
    /// An entry that would write outside the image root, through a link, or something
    /// dpkg would not install. `path` is the entry's path as stored (non-UTF-8 escaped).
    #[error("hostile package entry {path:?}: {reason}")]
    Hostile { path: String, reason: String },
    /// A path or name that is not UTF-8; `path` shows it with bytes escaped.
    #[error("{member}: {path:?} is not UTF-8, which is not supported")]
    NotUtf8 { member: String, path: String },
    /// `control.tar` has no `control` file.
    #[error("{member}: no control file")]
    MissingControl { member: String },
}

/// An opened, fully validated `.deb`.
pub struct DebPackage {
    control: Vec<u8>,
    control_members: BTreeMap<String, ControlMember>,
    entries: Vec<DataEntry>,
    /// Path -> position in `entries` and `offsets`.
    index: HashMap<String, usize>,
    /// A regular file's offset in `data`.
    offsets: Vec<u64>,
    /// The decompressed data tar, already unlinked from the scratch directory.
    data: Arc<File>,
}

impl fmt::Debug for DebPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DebPackage")
            .field("control_members", &self.control_members.keys())
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Read buffer for the compressed members; large enough that syscalls do not matter.
const READ_BUFFER: usize = 256 * 1024;

/// Decompresses the data member into `out`; returns the bytes written.
fn decompress_data(
    deb: &Arc<File>,
    member: &ar::Member,
    compression: Compression,
    out: &File,
    limits: &DebLimits,
    scratch_dir: &Path,
) -> Result<u64, DebError> {
    let mut data_tar = LimitWriter::new(
        BufWriter::with_capacity(READ_BUFFER, out),
        limits.max_data_bytes,
    );
    decompress_member(deb, member, compression, &mut data_tar, scratch_dir)?;
    let data_len = data_tar.written();
    data_tar
        .into_inner()
        .into_inner()
        .map_err(|e| DebError::Io {
            path: scratch_dir.to_owned(),
            source: e.into_error(),
        })?;
    Ok(data_len)
}

impl DebPackage {
    /// Opens and fully validates the package at `path`, keeping its decompressed data
    /// archive in an unlinked file inside `scratch_dir`.
    ///
    /// # Errors
    /// See [`DebError`]; nothing is left in `scratch_dir` either way.
    pub fn open(
        path: &Path,
        scratch_dir: &Path,
        limits: &DebLimits,
    ) -> Result<DebPackage, DebError> {
        DebPackage::open_keeping_data(path, scratch_dir, limits, None)
    }

    /// [`DebPackage::open`], with the decompressed data archive kept at `keep` (written
    /// under a temporary name, renamed when complete) and taken from there when a
    /// previous open left it. `keep` must name the package's content (its verified hash):
    /// what is there is trusted as this package's data.
    ///
    /// # Errors
    /// See [`DebError`].
    pub fn open_keeping_data(
        path: &Path,
        scratch_dir: &Path,
        limits: &DebLimits,
        keep: Option<&Path>,
    ) -> Result<DebPackage, DebError> {
        let io_err = |source| DebError::Io {
            path: path.to_owned(),
            source,
        };
        let deb = Arc::new(File::open(path).map_err(io_err)?);
        let deb_len = deb.metadata().map_err(io_err)?.len();
        let mut members = ar::Members::new(&deb, deb_len, path)?;

        let first = members.next_member()?.ok_or_else(|| DebError::NotDeb {
            reason: "empty ar archive".to_owned(),
        })?;
        if first.name != "debian-binary" {
            return Err(DebError::NotDeb {
                reason: format!("first member is {:?}, not debian-binary", first.name),
            });
        }
        check_format_version(&ar::read_small(&deb, path, &first, 1024)?)?;

        let control_member = members.next_required("control.tar")?;
        let control_compression = Compression::from_member(&control_member.name, "control.tar")?;
        let mut control_tar = LimitWriter::new(Vec::new(), limits.max_control_bytes);
        decompress_member(
            &deb,
            &control_member,
            control_compression,
            &mut control_tar,
            path,
        )?;
        let (control, control_members) =
            control::parse(&control_tar.into_inner(), &control_member.name, limits)?;

        let data_member = members.next_required("data.tar")?;
        let data_compression = Compression::from_member(&data_member.name, "data.tar")?;
        let scratch_err = |source| DebError::Io {
            path: scratch_dir.to_owned(),
            source,
        };
        let kept = keep.and_then(|kept| File::open(kept).ok());
        // Set while the data is in a temporary file that becomes `keep` once it checks out;
        // dropped on any error, which removes it.
        let mut pending: Option<TempFile> = None;
        let (data_file, data_len) = match kept {
            Some(file) => {
                let len = file.metadata().map_err(scratch_err)?.len();
                let _ = file.set_modified(std::time::SystemTime::now());
                (file, len)
            }
            None => {
                let data_file = match keep.and_then(Path::parent) {
                    Some(dir) => {
                        let temp = TempFile::with_mode(dir, 0o600).map_err(scratch_err)?;
                        let file = temp.file().try_clone().map_err(scratch_err)?;
                        pending = Some(temp);
                        file
                    }
                    None => reader::anonymous_file(scratch_dir).map_err(scratch_err)?,
                };
                let len = decompress_data(
                    &deb,
                    &data_member,
                    data_compression,
                    &data_file,
                    limits,
                    scratch_dir,
                )?;
                (data_file, len)
            }
        };
        let data = Arc::new(data_file);
        let walked = data::walk(&data, data_len, &data_member.name, limits)?;
        if let (Some(temp), Some(keep)) = (pending, keep) {
            // On disk before it is found by name: a crash must not leave a kept archive
            // whose blocks were never written.
            temp.commit(keep).map_err(scratch_err)?;
        }

        Ok(DebPackage {
            control,
            control_members,
            entries: walked.entries,
            index: walked.index,
            offsets: walked.offsets,
            data,
        })
    }

    /// The `control` file: one deb822 paragraph.
    pub fn control(&self) -> &[u8] {
        &self.control
    }

    /// Every other file of `control.tar` (`conffiles`, `md5sums`, maintainer scripts,
    /// `triggers`, `shlibs`, `symbols`, ...), by name.
    pub fn control_members(&self) -> &BTreeMap<String, ControlMember> {
        &self.control_members
    }

    /// The data entries in archive order.
    pub fn entries(&self) -> &[DataEntry] {
        &self.entries
    }

    /// The contents of a regular-file entry of this package, readable from any thread.
    ///
    /// # Errors
    /// `InvalidInput` if `entry` is not a regular file of this package.
    pub fn open_file(&self, entry: &DataEntry) -> io::Result<DataReader> {
        let (file, offset, len) = self.file_slice(entry).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{:?} is not a regular file of this package", entry.path),
            )
        })?;
        Ok(DataReader::new(file, offset, len))
    }

    /// Where a regular file's bytes lie in the decompressed data tar: (file, offset,
    /// length), so that a layer writer can copy them without buffering. `None` for other
    /// kinds (a hard link's bytes are its target's).
    pub fn file_slice(&self, entry: &DataEntry) -> Option<(Arc<File>, u64, u64)> {
        if entry.kind != DataKind::File {
            return None;
        }
        let i = *self.index.get(&entry.path)?;
        let offset = *self.offsets.get(i)?;
        (self.entries.get(i)? == entry).then(|| (Arc::clone(&self.data), offset, entry.size))
    }
}

/// `debian-binary` holds `2.<minor>\n`; dpkg accepts any minor and ignores what follows.
fn check_format_version(bytes: &[u8]) -> Result<(), DebError> {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let valid = bytes.contains(&b'\n')
        && line
            .strip_prefix(b"2.")
            .is_some_and(|minor| !minor.is_empty() && minor.iter().all(u8::is_ascii_digit));
    if valid {
        Ok(())
    } else {
        Err(DebError::NotDeb {
            reason: format!(
                "debian-binary is \"{}\", not format 2.x",
                bytes.escape_ascii()
            ),
        })
    }
}

/// Decompresses one member into `out` (which writes to `sink`), telling a limit and a
/// failing sink apart from corruption.
fn decompress_member<W: Write>(
    deb: &Arc<File>,
    member: &ar::Member,
    compression: Compression,
    out: &mut LimitWriter<W>,
    sink: &Path,
) -> Result<(), DebError> {
    let input = BufReader::with_capacity(
        READ_BUFFER,
        DataReader::new(Arc::clone(deb), member.offset, member.size),
    );
    let result = compression
        .decompress(input, out)
        .and_then(|()| out.flush());
    if out.exceeded() {
        return Err(DebError::TooLarge {
            member: member.name.clone(),
            limit: out.limit(),
        });
    }
    result.map_err(|e| match e.kind() {
        _ if out.failed() => DebError::Io {
            path: sink.to_owned(),
            source: e,
        },
        io::ErrorKind::Unsupported => DebError::Unsupported {
            member: member.name.clone(),
            what: e.to_string(),
        },
        _ => DebError::Corrupt {
            member: member.name.clone(),
            reason: format!("decompressing: {e}"),
        },
    })
}
