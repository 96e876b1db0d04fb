//! The compressions dpkg writes members with, decompressed as streams into a size-capped
//! writer. xz and the legacy `.lzma` go through liblzma (xz's own library, built from
//! source into the binary): it streams, checks every integrity field of the format, and
//! refuses a stream whose decoder would need more than [`MAX_XZ_MEMORY`] (the dictionary
//! is the hostile part: a header may ask for 4 GiB), so memory stays bounded whatever the
//! input, and output reaches the size cap as it is decoded.

use std::io::{self, BufRead, Read, Write};

use liblzma::stream::{Error as LzmaError, Stream, CONCATENATED};

use super::DebError;

/// The most memory one xz or `.lzma` decoder may use; `xz -9` needs 65 MiB, and dpkg
/// and xz(1) never write a dictionary above 64 MiB by default.
pub const MAX_XZ_MEMORY: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
    /// The legacy `.lzma` container some old `data.tar` members use.
    Lzma,
}

impl Compression {
    /// Reads the compression from a member named `<base>[.<ext>]`.
    pub fn from_member(name: &str, base: &str) -> Result<Compression, DebError> {
        let unsupported = |what: String| DebError::Unsupported {
            member: name.to_owned(),
            what,
        };
        match name.strip_prefix(base) {
            Some("") => Ok(Compression::None),
            Some(".gz") => Ok(Compression::Gzip),
            Some(".xz") => Ok(Compression::Xz),
            Some(".zst") => Ok(Compression::Zstd),
            Some(".lzma") => Ok(Compression::Lzma),
            Some(".bz2") => Err(unsupported("bzip2 compression".to_owned())),
            _ => Err(unsupported(format!("the member name {name:?}"))),
        }
    }

    /// Decompresses all of `input` into `out`.
    pub fn decompress<R: BufRead, W: Write>(self, mut input: R, out: &mut W) -> io::Result<()> {
        match self {
            Compression::None => copy(&mut input, out),
            Compression::Gzip => copy(&mut flate2::bufread::MultiGzDecoder::new(input), out),
            Compression::Xz => {
                // Concatenated streams and stream padding, as `cat a.xz b.xz` gives.
                let stream =
                    Stream::new_stream_decoder(MAX_XZ_MEMORY, CONCATENATED).map_err(lzma_error)?;
                let mut decoder = liblzma::bufread::XzDecoder::new_stream(input, stream);
                copy(&mut decoder, out).map_err(xz_error)
            }
            Compression::Lzma => {
                let stream = Stream::new_lzma_decoder(MAX_XZ_MEMORY).map_err(lzma_error)?;
                let mut decoder = liblzma::bufread::XzDecoder::new_stream(input, stream);
                copy(&mut decoder, out).map_err(xz_error)
            }
            Compression::Zstd => zstd_frames(input, out),
        }
    }
}

fn lzma_error(e: LzmaError) -> io::Error {
    let kind = match e {
        LzmaError::Options | LzmaError::Program => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, describe(e))
}

/// liblzma's errors reach here wrapped in `io::Error`s; they are said again in words,
/// with the memory bound named.
fn xz_error(e: io::Error) -> io::Error {
    let Some(lzma) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<LzmaError>())
    else {
        return e;
    };
    lzma_error(*lzma)
}

fn describe(e: LzmaError) -> String {
    match e {
        LzmaError::MemLimit => format!(
            "xz: decoding needs more than {} MiB of memory (the dictionary is too big)",
            MAX_XZ_MEMORY >> 20
        ),
        LzmaError::Options => "xz: unsupported options or filter".to_owned(),
        LzmaError::Format => "xz: not an xz stream".to_owned(),
        LzmaError::Data => "xz: corrupt data".to_owned(),
        LzmaError::NoCheck | LzmaError::UnsupportedCheck => {
            "xz: unsupported integrity check".to_owned()
        }
        other => format!("xz: {other}"),
    }
}

/// `io::copy` with a chunk size that suits decompressors (its own is 8 KiB).
fn copy<R: Read, W: Write>(input: &mut R, out: &mut W) -> io::Result<()> {
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A zstd stream may hold several frames, and skippable frames between them.
fn zstd_frames<R: BufRead, W: Write>(mut input: R, out: &mut W) -> io::Result<()> {
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    let mut frames = 0u64;
    while frames == 0 || !input.fill_buf()?.is_empty() {
        frames += 1;
        match ruzstd::decoding::StreamingDecoder::new(&mut input) {
            Ok(mut decoder) => copy(&mut decoder, out)?,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                let skipped = io::copy(&mut (&mut input).take(u64::from(length)), &mut io::sink())?;
                if skipped != u64::from(length) {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated skippable zstd frame",
                    ));
                }
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
    Ok(())
}

/// Counts what passes through and fails once more than `limit` bytes were written.
pub(super) struct LimitWriter<W> {
    inner: W,
    written: u64,
    limit: u64,
    exceeded: bool,
    failed: bool,
}

impl<W: Write> LimitWriter<W> {
    pub fn new(inner: W, limit: u64) -> LimitWriter<W> {
        LimitWriter {
            inner,
            written: 0,
            limit,
            exceeded: false,
            failed: false,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether a write was refused for the limit (the decompressor's error then says
    /// little, and may have been rewrapped).
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Whether the inner writer failed (the scratch disk, not the package, is at fault).
    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for LimitWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.limit - self.written {
            self.exceeded = true;
            return Err(io::Error::other(format!(
                "more than {} bytes decompressed",
                self.limit
            )));
        }
        let n = self.inner.write(buf).inspect_err(|_| self.failed = true)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}
