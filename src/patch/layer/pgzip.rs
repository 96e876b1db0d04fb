//! Gzip compressed on several threads with bytes that do not depend on how many.
//!
//! The input is cut into blocks of [`BLOCK`] bytes. Each block is deflated on its own, primed
//! with the last 32 KiB of the block before it (so matches still reach back as far as one
//! stream's would), and ends with a sync flush, the way pigz does it; the last block ends the
//! deflate stream. Block boundaries, the level and the dictionaries depend only on the input,
//! so one input gives one output on any machine, whatever its core count: the layer digest
//! stays a function of the layer's contents. The result is one ordinary gzip member.

use std::io::{self, Write};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Input bytes per block. Part of the output's bytes, so a constant.
pub(super) const BLOCK: usize = 256 * 1024;
/// Deflate's window: the dictionary a block is primed with.
const WINDOW: usize = 32 * 1024;
/// Blocks handed to each thread per round: enough work to be worth a thread.
const BLOCKS_PER_THREAD: usize = 4;
/// "Unknown OS" in the gzip header, so the bytes do not say where they were made.
const OS_UNKNOWN: u8 = 255;

/// A gzip writer; [`ParallelGz::finish`] writes the trailer and returns the inner writer.
pub(super) struct ParallelGz<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    /// Whole blocks waiting to be compressed, and the block being filled (last).
    blocks: Vec<Vec<u8>>,
    /// The tail of the last block already compressed: the next block's dictionary.
    window: Vec<u8>,
    crc: Crc,
    header_written: bool,
}

impl<W: Write> ParallelGz<W> {
    /// `threads` changes only the speed, never the bytes.
    pub(super) fn new(out: W, level: u32, threads: usize) -> Self {
        ParallelGz {
            out,
            level,
            threads: threads.max(1),
            blocks: vec![Vec::with_capacity(BLOCK)],
            window: Vec::new(),
            crc: Crc::new(),
            header_written: false,
        }
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // magic, deflate, no flags, mtime 0, no extra flags, OS unknown
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, OS_UNKNOWN])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Compresses every whole block held, in parallel, and writes them in order.
    fn flush_blocks(&mut self) -> io::Result<()> {
        let current = self.blocks.pop().unwrap_or_default();
        let whole = std::mem::take(&mut self.blocks);
        self.blocks.push(current);
        if whole.is_empty() {
            return Ok(());
        }
        self.write_header()?;
        let mut jobs = Vec::with_capacity(whole.len());
        let mut dictionary = std::mem::take(&mut self.window);
        for block in &whole {
            jobs.push((dictionary, block.as_slice()));
            dictionary = tail(block);
        }
        self.window = dictionary;
        let level = self.level;
        let compressed = crate::parallel::map(&jobs, self.threads, |(dict, block)| {
            deflate_block(level, dict, block, false)
        });
        for block in compressed {
            self.out.write_all(&block?)?;
        }
        Ok(())
    }

    /// Ends the stream: the last (possibly empty) block, then CRC-32 and size.
    pub(super) fn finish(mut self) -> io::Result<W> {
        self.flush_blocks()?;
        self.write_header()?;
        let last = self.blocks.pop().unwrap_or_default();
        let dictionary = std::mem::take(&mut self.window);
        self.out
            .write_all(&deflate_block(self.level, &dictionary, &last, true)?)?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let current = self
            .blocks
            .last_mut()
            .ok_or_else(|| io::Error::other("no block"))?;
        let n = buf.len().min(BLOCK - current.len());
        current.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        if current.len() == BLOCK {
            self.blocks.push(Vec::with_capacity(BLOCK));
            if self.blocks.len() > self.threads * BLOCKS_PER_THREAD {
                self.flush_blocks()?;
            }
        }
        Ok(n)
    }

    /// Blocks are compressed when a round is full or at `finish`: flushing early would
    /// change the block boundaries, and with them the bytes. (After an error from the
    /// inner writer the stream is broken and is dropped, not resumed.)
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Threads worth using: the cores, at most 8.
pub(super) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

fn tail(block: &[u8]) -> Vec<u8> {
    block[block.len().saturating_sub(WINDOW)..].to_vec()
}

/// One block as raw deflate: primed with `dictionary`, ended by a sync flush, or by the
/// stream's final block when `last`.
fn deflate_block(level: u32, dictionary: &[u8], block: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Above deflate's worst case (stored blocks) plus the flush marker, so one call
    // finishes. The output's size is set here, not by an allocator: when zlib runs out of
    // room during a sync flush it can repeat the marker, which would make the bytes depend
    // on the buffer.
    let mut out = vec![0u8; block.len() + block.len() / 1000 + 1024];
    let mut written = 0;
    loop {
        if out.len() - written < 1024 {
            out.resize(out.len() * 2, 0);
        }
        let consumed = usize::try_from(deflate.total_in()).map_err(io::Error::other)?;
        let before = deflate.total_out();
        let status = deflate
            .compress(&block[consumed..], &mut out[written..], flush)
            .map_err(io::Error::other)?;
        written += usize::try_from(deflate.total_out() - before).map_err(io::Error::other)?;
        let all_in = usize::try_from(deflate.total_in()).map_err(io::Error::other)? == block.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is in and zlib left room unused.
            Status::Ok | Status::BufError if !last && all_in && written < out.len() => break,
            Status::Ok | Status::BufError => {}
        }
    }
    out.truncate(written);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Text-like bytes with repeats near and far, so dictionaries matter.
    fn sample(len: usize) -> Vec<u8> {
        let words = [
            "usr/lib/",
            "x86_64-linux-gnu/",
            "libfoo.so.",
            "perl5/",
            "\0\0\0\0",
            "zoneinfo/",
        ];
        let mut state = 0x2545_f491_u32;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            out.extend_from_slice(words[(state % 6) as usize].as_bytes());
            out.extend_from_slice(format!("{}", state % 1000).as_bytes());
        }
        out.truncate(len);
        out
    }

    fn compress(input: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let mut gz = ParallelGz::new(Vec::new(), 6, threads);
        for piece in input.chunks(write_size.max(1)) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn round_trips_at_every_block_edge() {
        for len in [
            0,
            1,
            WINDOW,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK,
            11 * BLOCK + 77,
        ] {
            let input = sample(len);
            let gz = compress(&input, 3, 10_000);
            assert_eq!(gunzip(&gz), input, "length {len}");
        }
    }

    #[test]
    fn bytes_do_not_depend_on_threads_or_write_sizes() {
        let input = sample(18 * BLOCK + 12_345);
        let one = compress(&input, 1, 64 * 1024);
        for (threads, write_size) in [(2, 1_000), (3, 7), (8, BLOCK), (16, 3 * BLOCK)] {
            assert_eq!(
                compress(&input, threads, write_size),
                one,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn is_one_plain_gzip_member() {
        let input = sample(5 * BLOCK);
        let gz = compress(&input, 2, 4096);
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let size = u32::try_from(input.len()).unwrap().to_le_bytes();
        assert_eq!(&gz[gz.len() - 4..], &size);
        // A single-member decoder reads it all: nothing follows the member.
        let mut decoder = flate2::read::GzDecoder::new(&gz[..]);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        assert_eq!(out, input);
        assert!(decoder.into_inner().is_empty());
    }

    /// The bytes are part of every patched image's digest: a change here changes them all.
    #[test]
    fn the_bytes_are_pinned() {
        use sha2::Digest;
        let gz = compress(&sample(3 * BLOCK + 5), 2, 4096);
        let digest = hex::encode(sha2::Sha256::digest(&gz));
        assert_eq!(
            digest,
            "275c3209056107f7a170c921601d73b822dff756eed02467bcc8883b6ed24743"
        );
    }

    #[test]
    fn blocks_are_primed_with_the_bytes_before_them() {
        // Incompressible bytes, then the same again: only the dictionary finds the repeat
        // (half a window, as deflate cannot reach back a whole window).
        let mut state = 0x9e37_79b9_u32;
        let noise: Vec<u8> = (0..WINDOW / 2)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_le_bytes()[0]
            })
            .collect();
        let primed = deflate_block(6, &noise, &noise, false).unwrap();
        let cold = deflate_block(6, &[], &noise, false).unwrap();
        assert!(
            primed.len() < cold.len() / 10,
            "{} against {}",
            primed.len(),
            cold.len()
        );
    }

    #[test]
    fn compresses_about_as_well_as_one_stream() {
        let input = sample(12 * BLOCK);
        let parallel = compress(&input, 2, 64 * 1024).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&input).unwrap();
        let single = single.finish().unwrap().len();
        assert!(
            parallel <= single + single / 50,
            "parallel {parallel} bytes against one stream's {single}"
        );
    }
}
