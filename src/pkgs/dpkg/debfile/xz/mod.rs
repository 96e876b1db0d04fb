//! A streaming `.xz` decoder with bounded memory. lzma-rs buffers each xz block's whole
//! output before writing it (one block is the whole file when xz ran single-threaded), so
//! an xz bomb would exhaust memory before any size limit saw a byte. Here memory is the
//! block's dictionary (at most [`MAX_DICT`], touched only as output grows) and output
//! is written as each chunk is decoded. Every integrity field of the format is checked:
//! header and index CRC32s, the block checks (CRC32, CRC64, SHA-256), sizes, padding.
//! Only the LZMA2 filter is supported, which is what dpkg and xz(1) write.

mod lzma;

use std::io::{self, BufRead, Write};

use sha2::Digest;

use lzma::{Dict, Lzma};

/// Largest dictionary accepted; `xz -9` uses 64 MiB.
pub(super) const MAX_DICT: usize = 256 << 20;

const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0];
const FOOTER_MAGIC: [u8; 2] = *b"YZ";
const LZMA2_FILTER: u64 = 0x21;

pub(super) fn corrupt(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("xz: {reason}"))
}

fn unsupported(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("xz: {reason}"))
}

/// Decompresses every xz stream in `input` (concatenated streams and stream padding
/// are allowed) into `out`.
pub(super) fn decompress<R: BufRead, W: Write>(input: R, out: &mut W) -> io::Result<()> {
    let mut input = Input {
        inner: input,
        pos: 0,
        crc: None,
    };
    let mut decoder = Decoder {
        dict: None,
        lzma: Lzma::new(),
        buf: Vec::new(),
    };
    let mut first = [0u8; 4];
    input.exact(&mut first)?;
    loop {
        decoder.stream(&mut input, first, out)?;
        // Stream padding (zeros, in fours), then the end or another stream.
        loop {
            if input.inner.fill_buf()?.is_empty() {
                return Ok(());
            }
            input.exact(&mut first)?;
            if first != [0; 4] {
                break;
            }
        }
    }
}

/// Where uncompressed bytes go: the output, and the block's check.
pub(super) struct Sink<'a, W> {
    out: &'a mut W,
    check: Check,
    written: u64,
}

impl<W: Write> Sink<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check.update(bytes);
        self.written += bytes.len() as u64;
        self.out.write_all(bytes)
    }
}

enum Check {
    None,
    Crc32(flate2::Crc),
    Crc64(u64),
    Sha256(Box<sha2::Sha256>),
}

impl Check {
    fn new(id: u8) -> io::Result<Check> {
        Ok(match id {
            0 => Check::None,
            1 => Check::Crc32(flate2::Crc::new()),
            4 => Check::Crc64(!0),
            10 => Check::Sha256(Box::default()),
            other => return Err(unsupported(format!("check type {other}"))),
        })
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Check::None => {}
            Check::Crc32(crc) => crc.update(bytes),
            Check::Crc64(crc) => *crc = crc64_update(*crc, bytes),
            Check::Sha256(sha) => sha.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Check::None => Vec::new(),
            Check::Crc32(crc) => crc.sum().to_le_bytes().to_vec(),
            Check::Crc64(crc) => (!crc).to_le_bytes().to_vec(),
            Check::Sha256(sha) => sha.finalize().to_vec(),
        }
    }
}

/// CRC-64/XZ (ECMA-182, reflected), slicing by 8.
fn crc64_update(mut crc: u64, bytes: &[u8]) -> u64 {
    static TABLES: std::sync::OnceLock<Box<[[u64; 256]; 8]>> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let mut t = Box::new([[0u64; 256]; 8]);
        for i in 0..256 {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xC96C_5795_D787_0F42
                } else {
                    c >> 1
                };
            }
            t[0][i] = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                t[k][i] = (t[k - 1][i] >> 8) ^ t[0][(t[k - 1][i] & 0xFF) as usize];
            }
        }
        t
    });
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = crc ^ u64::from_le_bytes(word);
        crc = (0..8).fold(0, |acc, k| {
            acc ^ tables[7 - k][((v >> (8 * k)) & 0xFF) as usize]
        });
    }
    for b in chunks.remainder() {
        crc = tables[0][((crc ^ u64::from(*b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The compressed stream, with its position and an optional running CRC32 of what is read.
struct Input<R> {
    inner: R,
    pos: u64,
    crc: Option<flate2::Crc>,
}

impl<R: BufRead> Input<R> {
    fn exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => corrupt("truncated"),
            _ => e,
        })?;
        self.pos += buf.len() as u64;
        if let Some(crc) = &mut self.crc {
            crc.update(buf);
        }
        Ok(())
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    /// The format's variable-length integer: 7 bits a byte, at most 9 bytes.
    fn varint(&mut self) -> io::Result<u64> {
        varint(&mut || self.byte())
    }

    fn zero_padding(&mut self, from: u64) -> io::Result<()> {
        while !(self.pos - from).is_multiple_of(4) {
            if self.byte()? != 0 {
                return Err(corrupt("non-zero padding"));
            }
        }
        Ok(())
    }
}

fn varint(next: &mut dyn FnMut() -> io::Result<u8>) -> io::Result<u64> {
    let mut value = 0u64;
    for i in 0..9 {
        let b = next()?;
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(corrupt("bad variable-length integer"));
            }
            return Ok(value);
        }
    }
    Err(corrupt("variable-length integer too long"))
}

/// What the index must agree with: the count, sizes and a CRC32 of the blocks' records.
#[derive(Default, PartialEq, Eq)]
struct Records {
    count: u64,
    unpadded: u64,
    uncompressed: u64,
    crc: u32,
}

impl Records {
    fn add(&mut self, crc: &mut flate2::Crc, unpadded: u64, uncompressed: u64) {
        self.count += 1;
        self.unpadded = self.unpadded.wrapping_add(unpadded);
        self.uncompressed = self.uncompressed.wrapping_add(uncompressed);
        crc.update(&unpadded.to_le_bytes());
        crc.update(&uncompressed.to_le_bytes());
        self.crc = crc.sum();
    }
}

struct Decoder {
    dict: Option<Dict>,
    lzma: Lzma,
    buf: Vec<u8>,
}

impl Decoder {
    fn stream<R: BufRead, W: Write>(
        &mut self,
        input: &mut Input<R>,
        first: [u8; 4],
        out: &mut W,
    ) -> io::Result<()> {
        let mut header = [0u8; 12];
        header[..4].copy_from_slice(&first);
        input.exact(&mut header[4..])?;
        if header[..6] != HEADER_MAGIC {
            return Err(corrupt("not an xz stream (bad magic)"));
        }
        let flags = [header[6], header[7]];
        if crc32(&flags) != le32(&header[8..12]) {
            return Err(corrupt("stream header CRC32 mismatch"));
        }
        if flags[0] != 0 || flags[1] & 0xF0 != 0 {
            return Err(unsupported(format!("stream flags {flags:02x?}")));
        }
        Check::new(flags[1])?;
        let mut blocks = Records::default();
        let mut blocks_crc = flate2::Crc::new();
        loop {
            let start = input.pos;
            let size_byte = input.byte()?;
            if size_byte == 0 {
                return self.index_and_footer(input, start, &blocks, flags);
            }
            let (unpadded, uncompressed) = self.block(input, size_byte, flags[1], out)?;
            blocks.add(&mut blocks_crc, unpadded, uncompressed);
        }
    }

    /// One block; returns its unpadded and uncompressed sizes.
    fn block<R: BufRead, W: Write>(
        &mut self,
        input: &mut Input<R>,
        size_byte: u8,
        check_id: u8,
        out: &mut W,
    ) -> io::Result<(u64, u64)> {
        let start = input.pos - 1;
        let header_len = (usize::from(size_byte) + 1) * 4;
        let mut header = vec![0u8; header_len];
        header[0] = size_byte;
        input.exact(&mut header[1..])?;
        let (body, crc) = header.split_at(header_len - 4);
        if crc32(body) != le32(crc) {
            return Err(corrupt("block header CRC32 mismatch"));
        }
        let flags = body[1];
        if flags & 0x3C != 0 {
            return Err(unsupported(format!("block flags {flags:#04x}")));
        }
        let mut fields = body[2..].iter().copied();
        let mut next = || {
            fields
                .next()
                .ok_or_else(|| corrupt("block header too short"))
        };
        let compressed_size = if flags & 0x40 != 0 {
            Some(varint(&mut next)?)
        } else {
            None
        };
        let uncompressed_size = if flags & 0x80 != 0 {
            Some(varint(&mut next)?)
        } else {
            None
        };
        let filters = (flags & 3) + 1;
        let filter = varint(&mut next)?;
        let props_len = varint(&mut next)?;
        if filters != 1 || filter != LZMA2_FILTER || props_len != 1 {
            return Err(unsupported(format!(
                "a filter chain other than LZMA2 alone (first filter {filter:#x}, {filters} filters)"
            )));
        }
        let dict_byte = next()?;
        if fields.any(|b| b != 0) {
            return Err(corrupt("non-zero block header padding"));
        }
        let dict_size = match dict_byte {
            0..=39 => (2u64 | u64::from(dict_byte & 1)) << (dict_byte / 2 + 11),
            40 => u64::from(u32::MAX),
            _ => return Err(corrupt("bad LZMA2 dictionary size")),
        };
        if dict_size > MAX_DICT as u64 {
            return Err(unsupported(format!(
                "an LZMA2 dictionary of {} MiB (more than {} MiB)",
                dict_size >> 20,
                MAX_DICT >> 20
            )));
        }
        let dict_size = dict_size as usize;
        let dict = match &mut self.dict {
            Some(dict) if dict.size() >= dict_size => dict,
            slot => slot.insert(Dict::new(dict_size)),
        };
        dict.reset();

        let data_start = input.pos;
        let mut sink = Sink {
            out,
            check: Check::new(check_id)?,
            written: 0,
        };
        lzma2(input, dict, &mut self.lzma, &mut self.buf, &mut sink)?;
        let compressed = input.pos - data_start;
        let uncompressed = sink.written;
        if compressed_size.is_some_and(|s| s != compressed)
            || uncompressed_size.is_some_and(|s| s != uncompressed)
        {
            return Err(corrupt("block sizes differ from its header"));
        }
        input.zero_padding(start)?;
        let expected = sink.check.finish();
        let mut stored = vec![0u8; expected.len()];
        input.exact(&mut stored)?;
        if stored != expected {
            return Err(corrupt("block check mismatch (corrupt data)"));
        }
        Ok((
            header_len as u64 + compressed + expected.len() as u64,
            uncompressed,
        ))
    }

    fn index_and_footer<R: BufRead>(
        &mut self,
        input: &mut Input<R>,
        start: u64,
        blocks: &Records,
        flags: [u8; 2],
    ) -> io::Result<()> {
        let mut crc = flate2::Crc::new();
        crc.update(&[0]);
        input.crc = Some(crc);
        let mut records = Records::default();
        let mut records_crc = flate2::Crc::new();
        let count = input.varint()?;
        for _ in 0..count {
            let unpadded = input.varint()?;
            let uncompressed = input.varint()?;
            records.add(&mut records_crc, unpadded, uncompressed);
            if records.count > blocks.count {
                break;
            }
        }
        input.zero_padding(start)?;
        let index_crc = input.crc.take().map_or(0, |c| c.sum());
        if records != *blocks {
            return Err(corrupt("index does not match the blocks"));
        }
        let mut stored = [0u8; 4];
        input.exact(&mut stored)?;
        if u32::from_le_bytes(stored) != index_crc {
            return Err(corrupt("index CRC32 mismatch"));
        }
        let index_len = input.pos - start;
        let mut footer = [0u8; 12];
        input.exact(&mut footer)?;
        if footer[10..] != FOOTER_MAGIC || crc32(&footer[4..10]) != le32(&footer[..4]) {
            return Err(corrupt("bad stream footer"));
        }
        if (u64::from(le32(&footer[4..8])) + 1) * 4 != index_len || footer[8..10] != flags {
            return Err(corrupt("stream footer does not match the stream"));
        }
        Ok(())
    }
}

/// The chunks of one block's LZMA2 data, up to its end marker.
fn lzma2<R: BufRead, W: Write>(
    input: &mut Input<R>,
    dict: &mut Dict,
    lzma: &mut Lzma,
    buf: &mut Vec<u8>,
    out: &mut Sink<'_, W>,
) -> io::Result<()> {
    let mut need_dict_reset = true;
    let mut need_props = true;
    loop {
        let control = input.byte()?;
        if control == 0 {
            return dict.flush(out);
        }
        if control == 1 || control >= 0xE0 {
            dict.flush(out)?;
            dict.reset();
            need_dict_reset = false;
            need_props = true;
        } else if need_dict_reset {
            return Err(corrupt("LZMA2 data does not start with a dictionary reset"));
        }
        let mut size = [0u8; 2];
        if control < 0x80 {
            if control > 2 {
                return Err(corrupt("bad LZMA2 control byte"));
            }
            input.exact(&mut size)?;
            buf.resize(usize::from(u16::from_be_bytes(size)) + 1, 0);
            input.exact(buf)?;
            dict.put_slice(buf, out)?;
        } else {
            input.exact(&mut size)?;
            let unpacked =
                (usize::from(control & 0x1F) << 16) + usize::from(u16::from_be_bytes(size)) + 1;
            input.exact(&mut size)?;
            let packed = usize::from(u16::from_be_bytes(size)) + 1;
            if control >= 0xC0 {
                lzma.set_props(input.byte()?)?;
                need_props = false;
                lzma.reset_state();
            } else if need_props {
                return Err(corrupt("LZMA2 chunk without properties"));
            } else if control >= 0xA0 {
                lzma.reset_state();
            }
            buf.resize(packed, 0);
            input.exact(buf)?;
            lzma.decode_chunk(buf, unpacked, dict, out)?;
        }
        dict.flush(out)?;
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn le32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests;
