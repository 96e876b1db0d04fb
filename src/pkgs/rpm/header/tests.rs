//! Header blobs built by hand, the hostile ones included.

use super::*;

const INT32: u32 = 4;
const STRING: u32 = 6;
const BIN: u32 = 7;

/// A blob with these `(tag, type, offset, count)` entries and data.
pub(crate) fn blob(entries: &[(i32, u32, i32, u32)], data: &[u8]) -> Vec<u8> {
    blob_with_counts(entries.len() as u32, data.len() as u32, entries, data)
}

/// Like [`blob`] with `il` and `dl` as given, whatever follows.
fn blob_with_counts(il: u32, dl: u32, entries: &[(i32, u32, i32, u32)], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(il.to_be_bytes());
    out.extend(dl.to_be_bytes());
    for &(tag, kind, offset, count) in entries {
        out.extend(tag.to_be_bytes());
        out.extend(kind.to_be_bytes());
        out.extend(offset.to_be_bytes());
        out.extend(count.to_be_bytes());
    }
    out.extend(data);
    out
}

/// NAME `zlib`, VERSION `1.3.1`, RELEASE `1.azl3`, EPOCH 2, ARCH `x86_64`.
fn package() -> Vec<u8> {
    let data = b"\0\0\0\x02zlib\x001.3.1\x001.azl3\x00x86_64\x00";
    blob(
        &[
            (tag::EPOCH, INT32, 0, 1),
            (tag::NAME, STRING, 4, 1),
            (tag::VERSION, STRING, 9, 1),
            (tag::RELEASE, STRING, 15, 1),
            (tag::ARCH, STRING, 22, 1),
        ],
        data,
    )
}

#[test]
fn reads_strings_and_integers() {
    let blob = package();
    let header = Header::parse(&blob).unwrap();
    assert_eq!(header.required_string(tag::NAME).unwrap(), "zlib");
    assert_eq!(header.string(tag::VERSION).unwrap(), Some("1.3.1"));
    assert_eq!(header.string(tag::RELEASE).unwrap(), Some("1.azl3"));
    assert_eq!(header.string(tag::ARCH).unwrap(), Some("x86_64"));
    assert_eq!(header.int32(tag::EPOCH).unwrap(), Some(2));
    assert_eq!(header.string(tag::SOURCERPM).unwrap(), None);
    assert_eq!(
        header.required_string(tag::SOURCERPM).unwrap_err(),
        HeaderError::Missing {
            tag: tag::SOURCERPM
        }
    );
}

#[test]
fn a_later_entry_replaces_an_earlier_one() {
    let blob = blob(
        &[(tag::NAME, STRING, 0, 1), (tag::NAME, STRING, 4, 1)],
        b"old\0new\0",
    );
    let header = Header::parse(&blob).unwrap();
    assert_eq!(header.string(tag::NAME).unwrap(), Some("new"));
}

#[test]
fn framing_errors() {
    let good = package();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            Vec::new(),
            "header blob is 0 bytes, shorter than its 8-byte il/dl prefix",
        ),
        (
            good[..7].to_vec(),
            "header blob is 7 bytes, shorter than its 8-byte il/dl prefix",
        ),
        (
            blob_with_counts(0x10000, 0, &[], &[]),
            "header has 65536 index entries, more than rpm allows (65535)",
        ),
        (
            blob_with_counts(u32::MAX, u32::MAX, &[], &[]),
            "header has 4294967295 index entries, more than rpm allows (65535)",
        ),
        (
            blob_with_counts(1, 0x1000_0000, &[], &[]),
            "header has 268435456 data bytes, more than rpm allows (268435455)",
        ),
        (
            good[..good.len() - 1].to_vec(),
            "header blob is 116 bytes but its il/dl say 117",
        ),
        (
            [good.as_slice(), b"x"].concat(),
            "header blob is 118 bytes but its il/dl say 117",
        ),
        (
            blob_with_counts(1000, 10, &[], b"0123456789"),
            "header blob is 18 bytes but its il/dl say 16018",
        ),
    ];
    for (blob, message) in cases {
        assert_eq!(Header::parse(&blob).unwrap_err().to_string(), message);
    }
}

#[test]
fn entries_must_point_inside_the_data() {
    let data = b"name\0";
    let cases = [
        ((tag::NAME, STRING, 5, 1), "index entry 0 (tag NAME (1000)) points outside the 5 data bytes (offset 5, count 1)"),
        ((tag::NAME, STRING, -1, 1), "index entry 0 (tag NAME (1000)) points outside the 5 data bytes (offset -1, count 1)"),
        ((tag::NAME, STRING, i32::MIN, 1), "index entry 0 (tag NAME (1000)) points outside the 5 data bytes (offset -2147483648, count 1)"),
        ((63, BIN, 0, 6), "index entry 0 (tag 63) points outside the 5 data bytes (offset 0, count 6)"),
        ((63, BIN, 2, u32::MAX), "index entry 0 (tag 63) points outside the 5 data bytes (offset 2, count 4294967295)"),
        ((tag::ARCH, 10, 0, 1), "index entry 0 (tag ARCH (1022)) has unknown type 10"),
        ((tag::ARCH, u32::MAX, 0, 1), "index entry 0 (tag ARCH (1022)) has unknown type 4294967295"),
    ];
    for (entry, message) in cases {
        let blob = blob(&[(tag::NAME, STRING, 0, 1), entry], data);
        let message = message.replace("index entry 0", "index entry 1");
        assert_eq!(Header::parse(&blob).unwrap_err().to_string(), message);
    }
    // No data at all: an entry with values is outside; one without is not, but is no
    // string either.
    let blob = blob_with_counts(1, 0, &[(tag::NAME, STRING, 0, 1)], &[]);
    assert!(matches!(
        Header::parse(&blob).unwrap_err(),
        HeaderError::OutOfRange { dl: 0, .. }
    ));
    let blob = blob_with_counts(1, 0, &[(tag::NAME, STRING, 0, 0)], &[]);
    let header = Header::parse(&blob).unwrap();
    assert_eq!(
        header.string(tag::NAME).unwrap_err().to_string(),
        "tag NAME (1000) has an unexpected count 0"
    );
    let blob = blob_with_counts(1, 4, &[(tag::EPOCH, INT32, 4, 0)], &[0; 4]);
    let header = Header::parse(&blob).unwrap();
    assert!(header.int32(tag::EPOCH).is_err());
}

#[test]
fn values_that_do_not_read_as_their_type() {
    let check = |entries: &[(i32, u32, i32, u32)], data: &[u8], message: &str| {
        let blob = blob(entries, data);
        let header = Header::parse(&blob).unwrap();
        let err = match header.string(tag::NAME) {
            Err(e) => e,
            Ok(_) => header.int32(tag::EPOCH).unwrap_err(),
        };
        assert_eq!(err.to_string(), message);
    };
    check(
        &[(tag::NAME, STRING, 0, 1)],
        b"zlib",
        "tag NAME (1000) is a string with no terminating NUL",
    );
    check(
        &[(tag::NAME, STRING, 0, 1)],
        b"z\xffb\0",
        "tag NAME (1000) is not valid UTF-8",
    );
    check(
        &[(tag::NAME, INT32, 0, 1)],
        b"abcd",
        "tag NAME (1000) has type 4, expected 6",
    );
    check(
        &[(tag::NAME, STRING, 0, 2)],
        b"a\0b\0",
        "tag NAME (1000) has an unexpected count 2",
    );
    check(
        &[(tag::EPOCH, STRING, 0, 1)],
        b"1\0",
        "tag EPOCH (1003) has type 6, expected 4",
    );
    check(
        &[(tag::EPOCH, INT32, 2, 1)],
        b"\0\0\0\x01",
        "index entry 0 (tag EPOCH (1003)) points outside the 4 data bytes (offset 2, count 1)",
    );
    check(
        &[(tag::EPOCH, INT32, 0, 0)],
        b"\0\0\0\x01",
        "tag EPOCH (1003) has an unexpected count 0",
    );
    check(
        &[(tag::EPOCH, INT32, 0, 2)],
        b"\0\0\0\x01\0\0",
        "index entry 0 (tag EPOCH (1003)) points outside the 6 data bytes (offset 0, count 2)",
    );
}

#[test]
fn garbage_never_panics() {
    let good = package();
    for cut in 0..good.len() {
        let _ = Header::parse(&good[..cut]);
    }
    for i in 0..good.len() {
        for byte in [0x00, 0x7f, 0x80, 0xff] {
            let mut blob = good.clone();
            blob[i] = byte;
            if let Ok(header) = Header::parse(&blob) {
                for t in [tag::NAME, tag::VERSION, tag::ARCH, tag::SOURCERPM] {
                    let _ = header.string(t);
                }
                let _ = header.int32(tag::EPOCH);
            }
        }
    }
}
