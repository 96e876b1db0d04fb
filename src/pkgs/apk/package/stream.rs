//! The `.apk` container: gzip members read one at a time from a buffered file, with the
//! compressed bytes of each member hashed as they are consumed (apk's identity is the SHA-1
//! of the control member, its `datahash` the SHA-256 of the data members).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::sha1::Sha1;

/// A buffered reader that hashes exactly the bytes its consumers take.
pub(super) struct Hashing<R> {
    inner: BufReader<R>,
    pub consumed: u64,
    sha1: Option<Sha1>,
    sha256: Option<Sha256>,
}

impl<R: Read> Hashing<R> {
    pub fn new(capacity: usize, inner: R) -> Hashing<R> {
        Hashing {
            inner: BufReader::with_capacity(capacity, inner),
            consumed: 0,
            sha1: None,
            sha256: None,
        }
    }

    pub fn start_sha1(&mut self) {
        self.sha1 = Some(Sha1::default());
    }

    pub fn take_sha1(&mut self) -> [u8; 20] {
        self.sha1.take().unwrap_or_default().finish()
    }

    pub fn start_sha256(&mut self) {
        self.sha256 = Some(Sha256::new());
    }

    pub fn take_sha256(&mut self) -> [u8; 32] {
        self.sha256.take().unwrap_or_default().finalize().into()
    }

    /// True when every byte has been consumed.
    pub fn at_end(&mut self) -> io::Result<bool> {
        Ok(self.fill_buf()?.is_empty())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Hashing<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        let buffered = self.inner.buffer();
        let amt = amt.min(buffered.len());
        if let Some(h) = &mut self.sha1 {
            h.update(&buffered[..amt]);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(&buffered[..amt]);
        }
        self.consumed += amt as u64;
        self.inner.consume(amt);
    }
}

/// Decompresses one gzip member from `input` into `out`, leaving `input` right after it.
pub(super) fn gunzip_member<R: BufRead, W: Write>(input: &mut R, out: &mut W) -> io::Result<()> {
    let mut decoder = flate2::bufread::GzDecoder::new(input);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Counts what passes through and refuses more than `limit` bytes.
pub(super) struct LimitWriter<W> {
    inner: W,
    pub written: u64,
    limit: u64,
    pub exceeded: bool,
    pub failed: bool,
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

/// A file in `dir` unlinked at once (see [`crate::pkgs::scratch::anonymous_file`]).
pub(super) fn anonymous_file(dir: &Path) -> io::Result<File> {
    crate::pkgs::scratch::anonymous_file(dir, ".apkfile")
}
