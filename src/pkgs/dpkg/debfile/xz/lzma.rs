//! The LZMA2 decoder of an xz block: LZMA chunks and stored chunks over one circular
//! dictionary, so memory is the dictionary size (touched lazily), never the output size.
//! Follows the LZMA specification (range coder with normalization after each bit, so a
//! chunk's range coder ends exactly at its packed size with `code == 0`).

use std::io;

use super::{corrupt, Sink};

const STATES: usize = 12;
const POS_STATES: usize = 16;
const MATCH_MIN: usize = 2;
const END_POS_MODEL: u32 = 14;
const FULL_DISTANCES: usize = 128;
const PROB_INIT: u16 = 1024;

/// Bytes of output the LZMA2 decoder has produced and may refer back to.
pub(super) struct Dict {
    buf: Vec<u8>,
    /// Next write index in `buf`.
    pos: usize,
    /// Valid bytes in `buf` (at most its length).
    full: usize,
    /// `buf[flushed..pos]` is not yet written out.
    flushed: usize,
    /// Bytes since the last dictionary reset: the position LZMA contexts use.
    total: u64,
}

impl Dict {
    /// `size` bytes, zeroed by the allocator: pages are only touched as output grows.
    pub fn new(size: usize) -> Dict {
        Dict {
            buf: vec![0; size],
            pos: 0,
            full: 0,
            flushed: 0,
            total: 0,
        }
    }

    pub fn size(&self) -> usize {
        self.buf.len()
    }

    pub fn reset(&mut self) {
        self.pos = 0;
        self.full = 0;
        self.flushed = 0;
        self.total = 0;
    }

    pub fn flush<W: io::Write>(&mut self, out: &mut Sink<W>) -> io::Result<()> {
        if self.pos > self.flushed {
            out.write(&self.buf[self.flushed..self.pos])?;
        }
        if self.pos == self.buf.len() {
            self.pos = 0;
        }
        self.flushed = self.pos;
        Ok(())
    }

    /// The byte `dist + 1` positions back; `dist < self.full` is the caller's check.
    fn get(&self, dist: usize) -> u8 {
        let i = if self.pos > dist {
            self.pos - dist - 1
        } else {
            self.pos + self.buf.len() - dist - 1
        };
        self.buf[i]
    }

    fn put<W: io::Write>(&mut self, byte: u8, out: &mut Sink<W>) -> io::Result<()> {
        if self.pos == self.buf.len() {
            self.flush(out)?;
        }
        self.buf[self.pos] = byte;
        self.pos += 1;
        self.full = self.full.max(self.pos);
        self.total += 1;
        Ok(())
    }

    pub fn put_slice<W: io::Write>(
        &mut self,
        mut bytes: &[u8],
        out: &mut Sink<W>,
    ) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.pos == self.buf.len() {
                self.flush(out)?;
            }
            let n = bytes.len().min(self.buf.len() - self.pos);
            self.buf[self.pos..self.pos + n].copy_from_slice(&bytes[..n]);
            self.pos += n;
            self.full = self.full.max(self.pos);
            self.total += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Repeats `len` bytes from `dist + 1` back (they may overlap what is written).
    fn copy_match<W: io::Write>(
        &mut self,
        dist: usize,
        len: usize,
        out: &mut Sink<W>,
    ) -> io::Result<()> {
        let size = self.buf.len();
        let mut src = if self.pos > dist {
            self.pos - dist - 1
        } else {
            self.pos + size - dist - 1
        };
        if self.pos + len <= size && src + len <= size && (src > self.pos || src + len <= self.pos)
        {
            // A forward copy equals a memmove here.
            self.buf.copy_within(src..src + len, self.pos);
            self.pos += len;
        } else {
            for _ in 0..len {
                if self.pos == size {
                    self.flush(out)?;
                }
                if src == size {
                    src = 0;
                }
                self.buf[self.pos] = self.buf[src];
                self.pos += 1;
                src += 1;
            }
        }
        self.full = (self.full + len).min(size).max(self.pos);
        self.total += len as u64;
        Ok(())
    }
}

/// The range decoder over one chunk's packed bytes. Reading past them sets `overrun`
/// (checked once per chunk) instead of branching to an error in the hot path.
struct RangeDecoder<'a> {
    data: &'a [u8],
    next: usize,
    range: u32,
    code: u32,
    overrun: bool,
}

impl<'a> RangeDecoder<'a> {
    fn new(data: &'a [u8]) -> io::Result<RangeDecoder<'a>> {
        if data.len() < 5 || data[0] != 0 {
            return Err(corrupt("bad LZMA range coder start"));
        }
        let code = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        Ok(RangeDecoder {
            data,
            next: 5,
            range: u32::MAX,
            code,
            overrun: false,
        })
    }

    #[inline(always)]
    fn normalize(&mut self) {
        if self.range < 1 << 24 {
            self.range <<= 8;
            let byte = match self.data.get(self.next) {
                Some(b) => *b,
                None => {
                    self.overrun = true;
                    0
                }
            };
            self.next += 1;
            self.code = (self.code << 8) | u32::from(byte);
        }
    }

    #[inline(always)]
    fn bit(&mut self, prob: &mut u16) -> u32 {
        let bound = (self.range >> 11) * u32::from(*prob);
        let bit = if self.code < bound {
            self.range = bound;
            *prob += (2048 - *prob) >> 5;
            0
        } else {
            self.range -= bound;
            self.code -= bound;
            *prob -= *prob >> 5;
            1
        };
        self.normalize();
        bit
    }

    fn direct_bits(&mut self, count: u32) -> u32 {
        let mut result = 0u32;
        for _ in 0..count {
            self.range >>= 1;
            let bit = u32::from(self.code >= self.range);
            if bit == 1 {
                self.code -= self.range;
            }
            self.normalize();
            result = (result << 1) | bit;
        }
        result
    }

    #[inline(always)]
    fn tree(&mut self, probs: &mut [u16], bits: u32) -> u32 {
        let mut m = 1usize;
        for _ in 0..bits {
            m = (m << 1) | self.bit(&mut probs[m]) as usize;
        }
        (m - (1 << bits)) as u32
    }

    fn reverse_tree(&mut self, probs: &mut [u16], bits: u32) -> u32 {
        let mut m = 1usize;
        let mut symbol = 0u32;
        for i in 0..bits {
            let bit = self.bit(&mut probs[m]);
            m = (m << 1) | bit as usize;
            symbol |= bit << i;
        }
        symbol
    }
}

struct LenProbs {
    choice: u16,
    choice2: u16,
    low: [[u16; 8]; POS_STATES],
    mid: [[u16; 8]; POS_STATES],
    high: [u16; 256],
}

impl LenProbs {
    fn new() -> LenProbs {
        LenProbs {
            choice: PROB_INIT,
            choice2: PROB_INIT,
            low: [[PROB_INIT; 8]; POS_STATES],
            mid: [[PROB_INIT; 8]; POS_STATES],
            high: [PROB_INIT; 256],
        }
    }

    fn decode(&mut self, rc: &mut RangeDecoder<'_>, pos_state: usize) -> usize {
        let len = if rc.bit(&mut self.choice) == 0 {
            rc.tree(&mut self.low[pos_state], 3)
        } else if rc.bit(&mut self.choice2) == 0 {
            8 + rc.tree(&mut self.mid[pos_state], 3)
        } else {
            16 + rc.tree(&mut self.high, 8)
        };
        len as usize + MATCH_MIN
    }
}

/// LZMA state that persists across the chunks of one LZMA2 stream.
pub(super) struct Lzma {
    lc: u32,
    lp_mask: u64,
    pb_mask: u64,
    state: usize,
    reps: [usize; 4],
    literal: Vec<u16>,
    is_match: [u16; STATES * POS_STATES],
    is_rep: [u16; STATES],
    is_rep0: [u16; STATES],
    is_rep1: [u16; STATES],
    is_rep2: [u16; STATES],
    is_rep0_long: [u16; STATES * POS_STATES],
    pos_slot: [[u16; 64]; 4],
    pos_special: [u16; 1 + FULL_DISTANCES - END_POS_MODEL as usize],
    align: [u16; 16],
    len: LenProbs,
    rep_len: LenProbs,
}

impl Lzma {
    pub fn new() -> Lzma {
        Lzma {
            lc: 0,
            lp_mask: 0,
            pb_mask: 0,
            state: 0,
            reps: [0; 4],
            literal: vec![PROB_INIT; 0x300 << 4],
            is_match: [PROB_INIT; STATES * POS_STATES],
            is_rep: [PROB_INIT; STATES],
            is_rep0: [PROB_INIT; STATES],
            is_rep1: [PROB_INIT; STATES],
            is_rep2: [PROB_INIT; STATES],
            is_rep0_long: [PROB_INIT; STATES * POS_STATES],
            pos_slot: [[PROB_INIT; 64]; 4],
            pos_special: [PROB_INIT; 1 + FULL_DISTANCES - END_POS_MODEL as usize],
            align: [PROB_INIT; 16],
            len: LenProbs::new(),
            rep_len: LenProbs::new(),
        }
    }

    /// Applies an LZMA2 properties byte (`(pb * 5 + lp) * 9 + lc`, with `lc + lp <= 4`).
    pub fn set_props(&mut self, props: u8) -> io::Result<()> {
        let props = u32::from(props);
        let (lc, lp, pb) = (props % 9, props / 9 % 5, props / 45);
        if pb > 4 || lc + lp > 4 {
            return Err(corrupt("bad LZMA2 properties"));
        }
        self.lc = lc;
        self.lp_mask = (1 << lp) - 1;
        self.pb_mask = (1 << pb) - 1;
        Ok(())
    }

    pub fn reset_state(&mut self) {
        let mut fresh = Lzma::new();
        fresh.lc = self.lc;
        fresh.lp_mask = self.lp_mask;
        fresh.pb_mask = self.pb_mask;
        std::mem::swap(&mut fresh.literal, &mut self.literal);
        fresh.literal.fill(PROB_INIT);
        *self = fresh;
    }

    /// Decodes one LZMA chunk: exactly `unpacked` bytes from exactly `packed`.
    pub fn decode_chunk<W: io::Write>(
        &mut self,
        packed: &[u8],
        unpacked: usize,
        dict: &mut Dict,
        out: &mut Sink<W>,
    ) -> io::Result<()> {
        let mut rc = RangeDecoder::new(packed)?;
        let end = dict.total + unpacked as u64;
        while dict.total < end {
            let pos_state = (dict.total & self.pb_mask) as usize;
            let ctx = self.state * POS_STATES + pos_state;
            if rc.bit(&mut self.is_match[ctx]) == 0 {
                let byte = self.literal(&mut rc, dict);
                dict.put(byte, out)?;
                self.state = match self.state {
                    0..=3 => 0,
                    4..=9 => self.state - 3,
                    _ => self.state - 6,
                };
                continue;
            }
            let len = if rc.bit(&mut self.is_rep[self.state]) == 0 {
                let len = self.len.decode(&mut rc, pos_state);
                self.state = if self.state < 7 { 7 } else { 10 };
                let dist = self.distance(&mut rc, len);
                if dist == u32::MAX as usize {
                    return Err(corrupt("LZMA end marker inside an LZMA2 chunk"));
                }
                self.reps = [dist, self.reps[0], self.reps[1], self.reps[2]];
                len
            } else {
                if dict.full == 0 {
                    return Err(corrupt("LZMA repeated match before any data"));
                }
                if rc.bit(&mut self.is_rep0[self.state]) == 0 {
                    if rc.bit(&mut self.is_rep0_long[ctx]) == 0 {
                        self.state = if self.state < 7 { 9 } else { 11 };
                        let byte = dict.get(self.reps[0]);
                        dict.put(byte, out)?;
                        continue;
                    }
                } else {
                    let dist = if rc.bit(&mut self.is_rep1[self.state]) == 0 {
                        self.reps[1]
                    } else if rc.bit(&mut self.is_rep2[self.state]) == 0 {
                        let d = self.reps[2];
                        self.reps[2] = self.reps[1];
                        d
                    } else {
                        let d = self.reps[3];
                        self.reps[3] = self.reps[2];
                        self.reps[2] = self.reps[1];
                        d
                    };
                    self.reps[1] = self.reps[0];
                    self.reps[0] = dist;
                }
                self.state = if self.state < 7 { 8 } else { 11 };
                self.rep_len.decode(&mut rc, pos_state)
            };
            let dist = self.reps[0];
            if dist >= dict.full || len as u64 > end - dict.total {
                return Err(corrupt("LZMA match outside the dictionary or the chunk"));
            }
            dict.copy_match(dist, len, out)?;
        }
        if rc.overrun || rc.next != packed.len() || rc.code != 0 {
            return Err(corrupt("LZMA chunk does not end where its size says"));
        }
        Ok(())
    }

    fn literal(&mut self, rc: &mut RangeDecoder<'_>, dict: &Dict) -> u8 {
        let prev = if dict.full > 0 { dict.get(0) } else { 0 };
        let lit_state = (((dict.total & self.lp_mask) as usize) << self.lc)
            + (usize::from(prev) >> (8 - self.lc));
        let probs = &mut self.literal[0x300 * lit_state..0x300 * (lit_state + 1)];
        let mut symbol = 1usize;
        if self.state >= 7 {
            let mut match_byte = usize::from(dict.get(self.reps[0]));
            while symbol < 0x100 {
                let match_bit = (match_byte >> 7) & 1;
                match_byte <<= 1;
                let bit = rc.bit(&mut probs[((1 + match_bit) << 8) + symbol]) as usize;
                symbol = (symbol << 1) | bit;
                if match_bit != bit {
                    break;
                }
            }
        }
        while symbol < 0x100 {
            symbol = (symbol << 1) | rc.bit(&mut probs[symbol]) as usize;
        }
        (symbol & 0xFF) as u8
    }

    fn distance(&mut self, rc: &mut RangeDecoder<'_>, len: usize) -> usize {
        let len_state = (len - MATCH_MIN).min(3);
        let slot = rc.tree(&mut self.pos_slot[len_state], 6);
        if slot < 4 {
            return slot as usize;
        }
        let direct = (slot >> 1) - 1;
        let mut dist = (2 | (slot & 1)) << direct;
        if slot < END_POS_MODEL {
            let base = (dist - slot) as usize;
            dist += rc.reverse_tree(&mut self.pos_special[base..], direct);
        } else {
            dist += rc.direct_bits(direct - 4) << 4;
            dist += rc.reverse_tree(&mut self.align, 4);
        }
        dist as usize
    }
}
