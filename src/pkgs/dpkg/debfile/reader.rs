//! Positional reads over a shared file, and the anonymous scratch file itself.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A byte range of a shared file, read with `pread` so that any number of readers (on any
/// threads) can share one file handle. Seeks are relative to the start of the range.
#[derive(Debug, Clone)]
pub struct DataReader {
    file: Arc<File>,
    start: u64,
    pos: u64,
    end: u64,
}

impl DataReader {
    pub(super) fn new(file: Arc<File>, offset: u64, len: u64) -> DataReader {
        DataReader {
            file,
            start: offset,
            pos: offset,
            end: offset.saturating_add(len),
        }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining()).map_or(buf.len(), |r| r.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than the range being read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for DataReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.end - self.start;
        let rel = self.pos - self.start;
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => rel.checked_add_signed(d),
            SeekFrom::End(d) => len.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        // Past the end is allowed (as for files); reads there return 0.
        self.pos = self.start.saturating_add(target);
        Ok(target)
    }
}

/// A buffered reader whose relative seeks keep the buffer when they land inside it: the
/// tar walk skips every file's bytes, and most files are small.
pub(super) struct SeekBuf<R> {
    inner: BufReader<R>,
    pos: u64,
}

impl<R: Read + Seek> SeekBuf<R> {
    pub fn new(capacity: usize, inner: R) -> SeekBuf<R> {
        SeekBuf {
            inner: BufReader::with_capacity(capacity, inner),
            pos: 0,
        }
    }
}

impl<R: Read> Read for SeekBuf<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read> BufRead for SeekBuf<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.pos += amt as u64;
    }
}

impl<R: Read + Seek> Seek for SeekBuf<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match to {
            SeekFrom::Current(d) => {
                let target = self.pos.checked_add_signed(d).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "seek before the start")
                })?;
                self.inner.seek_relative(d)?;
                self.pos = target;
            }
            other => self.pos = self.inner.seek(other)?,
        }
        Ok(self.pos)
    }
}

/// A file in `dir` unlinked at once (see [`crate::pkgs::scratch::anonymous_file`]).
pub(super) fn anonymous_file(dir: &Path) -> io::Result<File> {
    crate::pkgs::scratch::anonymous_file(dir, ".debfile")
}
