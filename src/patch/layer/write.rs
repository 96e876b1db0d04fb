//! Streaming the records into `tar -> gzip -> file`, hashing both streams on the way.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tar::{EntryType, Header};

use super::pgzip::{self, ParallelGz};
use super::{BuiltLayer, EntryKind, FileData, LayerError, Part, Record};
use crate::distribution::reference::{DigestAlgorithm, Hasher};
use crate::durable::TempFile;

/// zlib's default level, the one `gzip` and most image builders use: a good size/speed
/// balance for layers that are mostly binaries. It is part of the digest, so it is a
/// constant, never a setting (and so are the blocks of [`ParallelGz`]).
const GZIP_LEVEL: u32 = 6;
/// The compressor is always fed whole chunks of this size (the last one shorter), so its
/// output cannot depend on how reads and writes happened to be split upstream.
const CHUNK: usize = 64 * 1024;
const READ_BUFFER: usize = 128 * 1024;

pub(super) fn write_gzip(records: &[Record<'_>], dir: &Path) -> Result<BuiltLayer, LayerError> {
    // Removed on any error; kept under its temporary name for the caller otherwise.
    let temp = TempFile::with_suffix(dir, ".tar.gz").map_err(|source| LayerError::Write {
        file: dir.to_owned(),
        source,
    })?;
    let path = temp.path().to_owned();
    let write_err = |source| LayerError::Write {
        file: path.clone(),
        source,
    };
    let gz_sink = Counted::new(BufWriter::with_capacity(CHUNK, temp.file()));
    let gz = ParallelGz::new(gz_sink, GZIP_LEVEL, pgzip::default_threads());
    let mut tar = tar::Builder::new(Chunked::new(Counted::new(gz)));
    for record in records {
        append(&mut tar, record, &path)?;
    }
    let chunked = tar.into_inner().map_err(write_err)?;
    let tar_sink = chunked.finish().map_err(write_err)?;
    let (gz, diff_id, uncompressed_size) = tar_sink.finish();
    let gz_sink = gz.finish().map_err(write_err)?;
    let (buffered, digest, size) = gz_sink.finish();
    buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    temp.keep().map_err(write_err)?;
    Ok(BuiltLayer {
        path,
        digest,
        diff_id,
        size,
        uncompressed_size,
    })
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    record: &Record<'_>,
    layer_file: &Path,
) -> Result<(), LayerError> {
    let entry = record.entry;
    let header_err = |source| LayerError::Header {
        path: entry.path.clone(),
        source,
    };
    let mut header = Header::new_gnu();
    let mode = match record.part {
        // The marker is a plain file: it takes the directory's permissions, not its
        // setgid or sticky bits.
        Part::OpaqueMarker => entry.mode & 0o777,
        Part::Main | Part::Whiteout => entry.mode & 0o7777,
    };
    header.set_mode(mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    header.set_username(&entry.uname).map_err(header_err)?;
    header.set_groupname(&entry.gname).map_err(header_err)?;
    header.set_size(0);
    let write_err = |source| LayerError::Write {
        file: layer_file.to_path_buf(),
        source,
    };

    let (kind, link) = match (record.part, &entry.kind) {
        (Part::Whiteout | Part::OpaqueMarker, _) => (EntryType::Regular, None),
        (Part::Main, EntryKind::Dir | EntryKind::OpaqueDir) => (EntryType::Directory, None),
        (Part::Main, EntryKind::Symlink(target)) => (EntryType::Symlink, Some(target)),
        (Part::Main, EntryKind::Hardlink(target)) => (EntryType::Link, Some(target)),
        (Part::Main, EntryKind::Whiteout) => (EntryType::Regular, None),
        (Part::Main, EntryKind::File(data)) => {
            header.set_entry_type(EntryType::Regular);
            return append_file(tar, header, record, data, layer_file);
        }
    };
    header.set_entry_type(kind);
    if let Some(target) = link {
        set_link(tar, &mut header, target).map_err(write_err)?;
    }
    let name = match kind {
        EntryType::Directory => format!("{}/", record.name),
        _ => record.name.clone(),
    };
    tar.append_data(&mut header, &name, io::empty())
        .map_err(|e| classify(e, record, "", layer_file))
}

/// Link targets are written byte for byte (the tar crate would normalise `a/./b`); one
/// longer than the header's field goes into a GNU `K` record first, as GNU tar does.
fn set_link<W: Write>(
    tar: &mut tar::Builder<W>,
    header: &mut Header,
    target: &str,
) -> io::Result<()> {
    let bytes = target.as_bytes();
    let field = header.as_old().linkname.len();
    if bytes.len() <= field {
        return header.set_link_name_literal(bytes);
    }
    let mut long = Header::new_gnu();
    let gnu_long_name = b"././@LongLink";
    long.as_old_mut().name[..gnu_long_name.len()].copy_from_slice(gnu_long_name);
    long.set_mode(0o644);
    long.set_uid(0);
    long.set_gid(0);
    long.set_mtime(0);
    long.set_size(bytes.len() as u64 + 1);
    long.set_entry_type(EntryType::GNULongLink);
    long.set_cksum();
    tar.append(&long, bytes.chain(&[0u8][..]))?;
    // Readers take the name from the `K` record; the field holds its start, like GNU tar.
    header.set_link_name_literal(&bytes[..field])
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    mut header: Header,
    record: &Record<'_>,
    data: &FileData,
    layer_file: &Path,
) -> Result<(), LayerError> {
    let path = &record.entry.path;
    let read_err = |source_name: String, source| LayerError::Read {
        path: path.clone(),
        source_name,
        source,
    };
    match data {
        FileData::Bytes(bytes) => {
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, &record.name, bytes.as_slice())
                .map_err(|e| classify(e, record, "memory", layer_file))
        }
        FileData::Slice { file, offset, len } => {
            let on_disk = file
                .metadata()
                .map_err(|e| read_err("a file slice".into(), e))?
                .len();
            let end = offset.checked_add(*len).unwrap_or(u64::MAX);
            if end > on_disk {
                return Err(LayerError::LengthMismatch {
                    path: path.clone(),
                    expected: *len,
                    actual: on_disk.saturating_sub(*offset),
                });
            }
            header.set_size(*len);
            let reader = Exact {
                inner: SliceReader {
                    file,
                    offset: *offset,
                },
                expected: *len,
                read: 0,
                check_end: false,
            };
            tar.append_data(
                &mut header,
                &record.name,
                BufReader::with_capacity(READ_BUFFER, reader),
            )
            .map_err(|e| classify(e, record, "a file slice", layer_file))
        }
        FileData::Path(source) => {
            let name = source.display().to_string();
            let file = File::open(source).map_err(|e| read_err(name.clone(), e))?;
            let meta = file.metadata().map_err(|e| read_err(name.clone(), e))?;
            if !meta.is_file() {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
                return Err(read_err(name, e));
            }
            header.set_size(meta.len());
            let reader = Exact {
                inner: file,
                expected: meta.len(),
                read: 0,
                check_end: true,
            };
            tar.append_data(
                &mut header,
                &record.name,
                BufReader::with_capacity(READ_BUFFER, reader),
            )
            .map_err(|e| classify(e, record, &name, layer_file))
        }
    }
}

/// Sorts an error out of the tar builder: the data source's, or the layer file's.
fn classify(e: io::Error, record: &Record<'_>, source_name: &str, layer_file: &Path) -> LayerError {
    let path = record.entry.path.clone();
    let from_source = e
        .get_ref()
        .is_some_and(|inner| inner.is::<Mismatch>() || inner.is::<SourceFailed>());
    if !from_source {
        return LayerError::Write {
            file: layer_file.to_path_buf(),
            source: e,
        };
    }
    let kind = e.kind();
    let mut source = io::Error::from(kind);
    if let Some(inner) = e.into_inner() {
        match inner.downcast::<Mismatch>() {
            Ok(m) => {
                return LayerError::LengthMismatch {
                    path,
                    expected: m.expected,
                    actual: m.actual,
                }
            }
            Err(inner) => {
                if let Ok(failed) = inner.downcast::<SourceFailed>() {
                    source = failed.0;
                }
            }
        }
    }
    LayerError::Read {
        path,
        source_name: source_name.to_owned(),
        source,
    }
}

/// A source that ended early or went on too long; carried through the tar builder inside
/// an `io::Error`.
#[derive(Debug)]
struct Mismatch {
    expected: u64,
    actual: u64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes instead of {}", self.actual, self.expected)
    }
}

impl std::error::Error for Mismatch {}

/// A read error of the source, told apart from errors writing the layer.
#[derive(Debug)]
struct SourceFailed(io::Error);

impl fmt::Display for SourceFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceFailed {}

/// Yields exactly `expected` bytes of `inner` or fails: a short source would otherwise
/// silently corrupt the archive (the tar builder pads whatever it got).
struct Exact<R> {
    inner: R,
    expected: u64,
    read: u64,
    /// Whether bytes after `expected` are an error too (a whole file that grew).
    check_end: bool,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.expected - self.read;
        if remaining == 0 {
            if self.check_end {
                let mut probe = [0u8; 1];
                if read_source(&mut self.inner, &mut probe)? != 0 {
                    return Err(self.mismatch(self.expected.saturating_add(1)));
                }
            }
            return Ok(0);
        }
        let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = read_source(&mut self.inner, &mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(self.mismatch(self.read));
        }
        self.read += n as u64;
        Ok(n)
    }
}

impl<R> Exact<R> {
    fn mismatch(&self, actual: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            Mismatch {
                expected: self.expected,
                actual,
            },
        )
    }
}

fn read_source<R: Read>(inner: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match inner.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io::Error::new(e.kind(), SourceFailed(e))),
            Ok(n) => return Ok(n),
        }
    }
}

/// Positional reads of a shared file, from `offset` on.
struct SliceReader<'f> {
    file: &'f File,
    offset: u64,
}

impl Read for SliceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Hashes and counts what passes through.
struct Counted<W> {
    inner: W,
    hasher: Hasher,
    bytes: u64,
}

impl<W> Counted<W> {
    fn new(inner: W) -> Self {
        Counted {
            inner,
            hasher: Hasher::new(DigestAlgorithm::Sha256),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, crate::distribution::reference::Digest, u64) {
        (self.inner, self.hasher.finish(), self.bytes)
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Forwards writes in fixed-size chunks only (see [`CHUNK`]).
struct Chunked<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Chunked<W> {
    fn new(inner: W) -> Self {
        Chunked {
            inner,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(self.inner)
    }
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == CHUNK {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(n)
    }

    /// Does not pass a partial chunk on: that would change the compressed bytes.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests_support {
    use std::io::Read;

    /// The length-checking reader, for tests of sources that change while being read.
    pub fn exact<R: Read>(inner: R, expected: u64, check_end: bool) -> impl Read {
        super::Exact {
            inner,
            expected,
            read: 0,
            check_end,
        }
    }
}
