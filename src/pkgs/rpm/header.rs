//! rpm header "blobs": the form rpm stores each installed package's header in, in every
//! rpmdb backend (sqlite `Packages.blob`, BerkeleyDB and NDB records). A blob is the header
//! without its 8-byte magic: big-endian `il` (index entries) and `dl` (data bytes), `il`
//! 16-byte index entries `{tag: i32, type: u32, offset: i32, count: u32}`, then `dl` bytes of
//! data the entries point into.
//!
//! The blob comes from an image, so nothing in it is trusted: sizes are checked against
//! rpm's own limits and the blob's length, every entry must point inside the data, and a
//! string must end inside it. Only what inventory needs is read: strings and 32-bit
//! integers.

/// Tags inventory reads (rpm's `rpmTag` numbers).
pub mod tag {
    pub const NAME: i32 = 1000;
    pub const VERSION: i32 = 1001;
    pub const RELEASE: i32 = 1002;
    pub const EPOCH: i32 = 1003;
    pub const ARCH: i32 = 1022;
    pub const SOURCERPM: i32 = 1044;
}

/// Most index entries a header may have (rpm's `HEADER_TAGS_MAX`).
pub const MAX_ENTRIES: u32 = 0xffff;
/// Most data bytes a header may have (rpm's `HEADER_DATA_MAX`, 256 MiB).
pub const MAX_DATA: u32 = 0x0fff_ffff;

const ENTRY_LEN: usize = 16;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;
/// rpm's types run from NULL (0) to I18NSTRING (9).
const TYPE_MAX: u32 = 9;

/// A header blob that cannot be read. Tags are named by number and, for the ones
/// inventory reads, by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header blob is {len} bytes, shorter than its 8-byte il/dl prefix")]
    TooShort { len: usize },
    #[error("header has {il} index entries, more than rpm allows ({MAX_ENTRIES})")]
    TooManyEntries { il: u32 },
    #[error("header has {dl} data bytes, more than rpm allows ({MAX_DATA})")]
    TooMuchData { dl: u32 },
    #[error("header blob is {actual} bytes but its il/dl say {expected}")]
    LengthMismatch { expected: u64, actual: usize },
    #[error("index entry {index} (tag {}) has unknown type {kind}", TagName(*.tag))]
    UnknownType { index: u32, tag: i32, kind: u32 },
    #[error(
        "index entry {index} (tag {}) points outside the {dl} data bytes (offset {offset}, count {count})",
        TagName(*.tag)
    )]
    OutOfRange {
        index: u32,
        tag: i32,
        offset: i32,
        count: u32,
        dl: u32,
    },
    #[error("tag {} has type {kind}, expected {expected}", TagName(*.tag))]
    WrongType { tag: i32, kind: u32, expected: u32 },
    #[error("tag {} has an unexpected count {count}", TagName(*.tag))]
    WrongCount { tag: i32, count: u32 },
    #[error("tag {} is a string with no terminating NUL", TagName(*.tag))]
    Unterminated { tag: i32 },
    #[error("tag {} is not valid UTF-8", TagName(*.tag))]
    NotUtf8 { tag: i32 },
    #[error("tag {} is missing", TagName(*.tag))]
    Missing { tag: i32 },
}

/// Displays a tag as `NAME (1000)` when inventory knows it, else as its number.
struct TagName(i32);

impl std::fmt::Display for TagName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            tag::NAME => "NAME",
            tag::VERSION => "VERSION",
            tag::RELEASE => "RELEASE",
            tag::EPOCH => "EPOCH",
            tag::ARCH => "ARCH",
            tag::SOURCERPM => "SOURCERPM",
            n => return write!(f, "{n}"),
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// One index entry, as stored.
#[derive(Debug, Clone, Copy)]
struct Entry {
    index: u32,
    kind: u32,
    /// Checked to be inside the data when the header is parsed.
    offset: usize,
    count: u32,
}

/// A checked header blob, borrowing it.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    index: &'a [u8],
    data: &'a [u8],
}

impl<'a> Header<'a> {
    /// Checks `blob`'s framing: the prefix, the limits, the exact length, and that every
    /// index entry has a known type, an offset within the data (its end included, as rpm
    /// allows) and a count that fits in what follows (every element takes a byte at least).
    pub fn parse(blob: &'a [u8]) -> Result<Header<'a>, HeaderError> {
        let (Some(il), Some(dl)) = (be_u32(blob, 0), be_u32(blob, 4)) else {
            return Err(HeaderError::TooShort { len: blob.len() });
        };
        if il > MAX_ENTRIES {
            return Err(HeaderError::TooManyEntries { il });
        }
        if dl > MAX_DATA {
            return Err(HeaderError::TooMuchData { dl });
        }
        let index_len = il as usize * ENTRY_LEN;
        let expected = 8 + index_len as u64 + u64::from(dl);
        if blob.len() as u64 != expected {
            return Err(HeaderError::LengthMismatch {
                expected,
                actual: blob.len(),
            });
        }
        let header = Header {
            index: &blob[8..8 + index_len],
            data: &blob[8 + index_len..],
        };
        for (index, raw) in header.index.chunks_exact(ENTRY_LEN).enumerate() {
            header.check(index as u32, raw, dl)?;
        }
        Ok(header)
    }

    fn check(&self, index: u32, raw: &[u8], dl: u32) -> Result<(), HeaderError> {
        let (tag, kind, offset, count) = raw_entry(raw);
        if kind > TYPE_MAX {
            return Err(HeaderError::UnknownType { index, tag, kind });
        }
        let fits = u32::try_from(offset)
            .ok()
            .filter(|&o| o <= dl)
            .is_some_and(|o| count <= dl - o);
        if !fits {
            return Err(HeaderError::OutOfRange {
                index,
                tag,
                offset,
                count,
                dl,
            });
        }
        Ok(())
    }

    /// The entry for `tag`; the last one when there are several, as rpm lets entries
    /// added after the immutable region replace the region's.
    fn entry(&self, tag: i32) -> Option<Entry> {
        self.index
            .chunks_exact(ENTRY_LEN)
            .map(raw_entry)
            .enumerate()
            .rev()
            .find(|&(_, (t, ..))| t == tag)
            .map(|(index, (_, kind, offset, count))| Entry {
                index: index as u32,
                kind,
                // Non-negative: checked in `parse`.
                offset: usize::try_from(offset).unwrap_or(usize::MAX),
                count,
            })
    }

    /// The string value of `tag` (type STRING, or I18NSTRING whose first, untranslated
    /// value is taken); `None` when the header has no such tag.
    pub fn string(&self, tag: i32) -> Result<Option<&'a str>, HeaderError> {
        let Some(entry) = self.entry(tag) else {
            return Ok(None);
        };
        match entry.kind {
            TYPE_STRING if entry.count != 1 => {
                return Err(HeaderError::WrongCount {
                    tag,
                    count: entry.count,
                })
            }
            TYPE_STRING | TYPE_I18NSTRING => {}
            kind => {
                return Err(HeaderError::WrongType {
                    tag,
                    kind,
                    expected: TYPE_STRING,
                })
            }
        }
        let rest = self
            .data
            .get(entry.offset..)
            .ok_or(HeaderError::Unterminated { tag })?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(HeaderError::Unterminated { tag })?;
        std::str::from_utf8(&rest[..end])
            .map(Some)
            .map_err(|_| HeaderError::NotUtf8 { tag })
    }

    /// Like [`string`](Self::string), erroring with [`HeaderError::Missing`] when absent.
    pub fn required_string(&self, tag: i32) -> Result<&'a str, HeaderError> {
        self.string(tag)?.ok_or(HeaderError::Missing { tag })
    }

    /// The first value of `tag`, of type INT32; `None` when the header has no such tag.
    pub fn int32(&self, tag: i32) -> Result<Option<u32>, HeaderError> {
        let Some(entry) = self.entry(tag) else {
            return Ok(None);
        };
        if entry.kind != TYPE_INT32 {
            return Err(HeaderError::WrongType {
                tag,
                kind: entry.kind,
                expected: TYPE_INT32,
            });
        }
        if entry.count == 0 {
            return Err(HeaderError::WrongCount { tag, count: 0 });
        }
        let value = be_u32(self.data, entry.offset);
        let fits =
            self.data.len().saturating_sub(entry.offset) as u64 >= u64::from(entry.count) * 4;
        match value {
            Some(value) if fits => Ok(Some(value)),
            _ => Err(HeaderError::OutOfRange {
                index: entry.index,
                tag,
                offset: i32::try_from(entry.offset).unwrap_or(i32::MAX),
                count: entry.count,
                dl: self.data.len() as u32,
            }),
        }
    }
}

fn raw_entry(raw: &[u8]) -> (i32, u32, i32, u32) {
    let word = |at| be_u32(raw, at).unwrap_or(0);
    (word(0) as i32, word(4), word(8) as i32, word(12))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

#[cfg(test)]
pub(crate) mod tests;
