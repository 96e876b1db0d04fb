//! Reading one layer blob: detect the compression from the magic bytes, decompress while
//! counting, and walk the tar entries with normalised paths and limits. Blocking I/O: callers
//! run this on a blocking thread.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use crate::image::error::{ImageError, LayerRef, Limit};
use crate::image::node::{EntryKind, Node};
use crate::image::path::{display, normalize_entry_path};
use crate::image::Limits;

/// How a layer blob is compressed, decided by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// gzip starts `1f 8b`, zstd `28 b5 2f fd`; anything else is read as a plain tar.
    pub fn sniff(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Whether a layer with this media type can be read. The magic bytes, not the media type,
/// choose the decompressor (containerd does the same: registries and old tools mislabel
/// layers); the media type only rules out what is not a tar at all, such as encrypted
/// layers. An empty media type (unknown) is sniffed.
pub fn is_readable_media_type(media_type: &str) -> bool {
    media_type.is_empty() || (media_type.contains("tar") && !media_type.contains("encrypted"))
}

/// Work done so far by one operation, checked against [`Limits`] across all its layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tar entries seen (extension headers excluded).
    pub entries: u64,
    /// Bytes produced by decompression, tar headers and padding included.
    pub decompressed_bytes: u64,
}

/// One tar entry, as [`read_layer`] hands it to its visitor.
pub struct LayerEntry<'e> {
    path: Vec<u8>,
    kind: EntryKind,
    size: u64,
    mode: u32,
    mtime: u64,
    uid: u64,
    gid: u64,
    link_target: Option<Vec<u8>>,
    reader: &'e mut dyn Read,
    layer: &'e LayerRef,
    max_file_bytes: u64,
    budget: &'e Budget,
}

impl LayerEntry<'_> {
    /// The normalised path: no leading `/` or `./`, never empty (the root entry is skipped).
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The entry type (whiteouts are ordinary files here; the index interprets them).
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// The size in the tar header (0 for links and directories).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The header's modification time, in seconds since the epoch (PAX `mtime` wins).
    pub fn mtime(&self) -> u64 {
        self.mtime
    }

    /// The header's owner ids (PAX `uid`/`gid` win).
    pub fn owner(&self) -> (u64, u64) {
        (self.uid, self.gid)
    }

    /// A symbolic link's target as stored, or a hard link's target as a normalised path.
    pub fn link_target(&self) -> Option<&[u8]> {
        self.link_target.as_deref()
    }

    /// The entry as an index node of layer `layer`.
    pub fn to_node(&self, layer: usize) -> Node {
        Node {
            kind: self.kind,
            size: self.size,
            layer,
            mode: self.mode,
            link_target: self.link_target.clone(),
            implicit: false,
        }
    }

    /// Reads a regular file's contents into memory (empty for other types).
    ///
    /// Errors: [`ImageError::LimitExceeded`] with `max_file_bytes` when the header announces
    /// more than the limit (nothing is read then); [`ImageError::Corrupt`] when the stream
    /// ends early.
    pub fn read_contents(&mut self) -> Result<Vec<u8>, ImageError> {
        if self.kind != EntryKind::File {
            return Ok(Vec::new());
        }
        if self.size > self.max_file_bytes {
            return Err(ImageError::LimitExceeded {
                layer: self.layer.clone(),
                limit: Limit::MaxFileBytes,
                max: self.max_file_bytes,
                path: Some(display(&self.path)),
            });
        }
        // The header's size is not trusted for the allocation: the data may be missing.
        let mut contents = Vec::with_capacity(self.size.min(1 << 20) as usize);
        let read = (&mut self.reader)
            .take(self.size)
            .read_to_end(&mut contents)
            .map_err(|e| self.budget.error(self.layer, Some(&self.path), e))?;
        if read as u64 != self.size {
            let short = io::Error::new(io::ErrorKind::UnexpectedEof, "file data ends early");
            return Err(self.budget.error(self.layer, Some(&self.path), short));
        }
        Ok(contents)
    }
}

/// Walks every entry of one layer blob, calling `visit` for each (the root entry, PAX global
/// headers and extension headers excepted), then reads the stream to its end so that the
/// compression trailer (gzip CRC, zstd checksum) is verified.
///
/// `usage` carries the counts of earlier layers of the same operation and is updated.
/// Errors: [`ImageError::UnsupportedMediaType`], [`ImageError::LimitExceeded`],
/// [`ImageError::Corrupt`], [`ImageError::UnsafePath`], or whatever `visit` returns.
pub fn read_layer<'r>(
    blob: impl Read + 'r,
    layer: &LayerRef,
    media_type: &str,
    limits: &Limits,
    usage: &mut Usage,
    mut visit: impl FnMut(&mut LayerEntry<'_>) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    if !is_readable_media_type(media_type) {
        return Err(ImageError::UnsupportedMediaType {
            layer: layer.clone(),
            media_type: media_type.to_string(),
        });
    }
    let budget = Rc::new(Budget {
        used: Cell::new(usage.decompressed_bytes),
        max: limits.max_decompressed_bytes,
        exceeded: Cell::new(false),
    });
    let stream = decompress(blob, Rc::clone(&budget)).map_err(|e| budget.error(layer, None, e))?;
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|e| budget.error(layer, None, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| budget.error(layer, None, e))?;
        usage.entries += 1;
        if usage.entries > limits.max_entries {
            return Err(ImageError::LimitExceeded {
                layer: layer.clone(),
                limit: Limit::MaxEntries,
                max: limits.max_entries,
                path: None,
            });
        }
        let entry_type = entry.header().entry_type();
        if entry_type.is_pax_global_extensions() {
            continue;
        }
        let raw_path = entry.path_bytes().into_owned();
        let path = normalize_entry_path(&raw_path).map_err(|_| unsafe_path(layer, &raw_path))?;
        if path.is_empty() {
            continue;
        }
        let kind = entry_kind(entry_type);
        let link_target = match kind {
            EntryKind::Symlink => Some(entry.link_name_bytes().unwrap_or_default().into_owned()),
            EntryKind::Hardlink => {
                let raw = entry.link_name_bytes().unwrap_or_default().into_owned();
                Some(normalize_entry_path(&raw).map_err(|_| unsafe_path(layer, &raw))?)
            }
            _ => None,
        };
        let mode = entry.header().mode().unwrap_or(0);
        let header = entry.header();
        let (mut mtime, mut uid, mut gid) = (
            header.mtime().unwrap_or(0),
            header.uid().unwrap_or(0),
            header.gid().unwrap_or(0),
        );
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let value = ext
                    .value()
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse().ok());
                match (ext.key(), value) {
                    (Ok("mtime"), Some(v)) => mtime = v,
                    (Ok("uid"), Some(v)) => uid = v,
                    (Ok("gid"), Some(v)) => gid = v,
                    _ => {}
                }
            }
        }
        let size = entry.size();
        let mut visited = LayerEntry {
            path,
            kind,
            size,
            mode,
            mtime,
            uid,
            gid,
            link_target,
            reader: &mut entry,
            layer,
            max_file_bytes: limits.max_file_bytes,
            budget: &budget,
        };
        visit(&mut visited)?;
    }
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|e| budget.error(layer, None, e))?;
    usage.decompressed_bytes = budget.used.get();
    Ok(())
}

fn entry_kind(entry_type: tar::EntryType) -> EntryKind {
    use tar::EntryType as T;
    match entry_type {
        T::Regular | T::Continuous | T::GNUSparse => EntryKind::File,
        T::Directory => EntryKind::Dir,
        T::Symlink => EntryKind::Symlink,
        T::Link => EntryKind::Hardlink,
        _ => EntryKind::Other,
    }
}

fn unsafe_path(layer: &LayerRef, raw: &[u8]) -> ImageError {
    ImageError::UnsafePath {
        layer: layer.clone(),
        path: String::from_utf8_lossy(raw).into_owned(),
    }
}

/// The decompressed-bytes budget, shared by the counting reader and the error mapping: an
/// I/O error raised because the budget ran out must be reported as the limit, not as
/// corruption, even when tar wraps it.
struct Budget {
    used: Cell<u64>,
    max: u64,
    exceeded: Cell<bool>,
}

impl Budget {
    fn error(&self, layer: &LayerRef, path: Option<&[u8]>, source: io::Error) -> ImageError {
        let path = path.map(display);
        if self.exceeded.get() {
            ImageError::LimitExceeded {
                layer: layer.clone(),
                limit: Limit::MaxDecompressedBytes,
                max: self.max,
                path,
            }
        } else {
            ImageError::Corrupt {
                layer: layer.clone(),
                path,
                source,
            }
        }
    }
}

struct Counted<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let used = self.budget.used.get().saturating_add(n as u64);
        self.budget.used.set(used);
        if used > self.budget.max {
            self.budget.exceeded.set(true);
            return Err(io::Error::other("decompressed size limit reached"));
        }
        Ok(n)
    }
}

/// `blob` decompressed (gzip, zstd or plain, sniffed), failing past `max` bytes.
pub fn decompressed<'r>(blob: impl Read + 'r, max: u64) -> io::Result<Box<dyn Read + 'r>> {
    decompress(
        blob,
        Rc::new(Budget {
            max,
            used: Cell::new(0),
            exceeded: Cell::new(false),
        }),
    )
}

fn decompress<'r>(mut blob: impl Read + 'r, budget: Rc<Budget>) -> io::Result<Box<dyn Read + 'r>> {
    let mut magic = [0u8; 4];
    let mut filled = 0;
    while filled < magic.len() {
        match blob.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let whole = io::Cursor::new(magic[..filled].to_vec()).chain(blob);
    let inner: Box<dyn Read + 'r> = match Compression::sniff(&magic[..filled]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(ZstdFrames::new(BufReader::new(whole))?),
        Compression::None => Box::new(whole),
    };
    Ok(Box::new(Counted { inner, budget }))
}

/// The smallest valid zstd frame (no content, no checksum).
const EMPTY_ZSTD_FRAME: [u8; 9] = [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x00, 0x01, 0x00, 0x00];

/// A zstd stream of any number of frames, skippable frames included (zstd:chunked layers
/// are many frames; ruzstd's `StreamingDecoder` reads one), with each frame's checksum
/// verified when it has one.
struct ZstdFrames<R> {
    source: R,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> io::Result<Self> {
        let mut decoder = FrameDecoder::new();
        // ruzstd checks the window size (at most 100 MiB of memory) only when a decoder is
        // reset, not on its first init; initialising with an empty frame makes every real
        // frame go through the checked path.
        decoder
            .init(&EMPTY_ZSTD_FRAME[..])
            .map_err(io::Error::other)?;
        Ok(ZstdFrames {
            source,
            decoder,
            in_frame: false,
        })
    }

    fn finish_frame(&mut self) -> io::Result<()> {
        self.in_frame = false;
        if let (Some(stored), Some(computed)) = (
            self.decoder.get_checksum_from_data(),
            self.decoder.get_calculated_checksum(),
        ) {
            if stored != computed {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "zstd frame checksum mismatch",
                ));
            }
        }
        Ok(())
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                    let wanted = buf.len() - self.decoder.can_collect();
                    self.decoder
                        .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(wanted))
                        .map_err(io::Error::other)?;
                }
                let n = self.decoder.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                self.finish_frame()?;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let length = u64::from(length);
                    let skipped = io::copy(&mut (&mut self.source).take(length), &mut io::sink())?;
                    if skipped != length {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd skippable frame ends early",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}
