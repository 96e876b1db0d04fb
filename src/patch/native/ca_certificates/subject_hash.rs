//! What `openssl rehash` reads from one file: how many certificates and CRLs its PEM blocks
//! hold (OpenSSL's `PEM_X509_INFO_read_bio` rule) and, when it is exactly one certificate,
//! its subject-name hash (`X509_NAME_hash_ex`) and SHA-1 fingerprint.
//!
//! The hash is the first four bytes, little-endian, of the SHA-1 of the subject's canonical
//! encoding (OpenSSL `crypto/x509/x_name.c`, `x509_name_canon`): every RDN's SET
//! re-encoded (no outer SEQUENCE), each string value of a text type converted to UTF-8,
//! leading and trailing ASCII white space removed, inner runs collapsed to one space,
//! ASCII upper case lowered, and tagged UTF8String. The DER is walked by hand: the `der`
//! crate rejects string tags OpenSSL accepts (UniversalString), and nothing else of the
//! certificate is read.

use sha1::{Digest, Sha1};

/// One certificate as `openssl rehash` keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateKey {
    /// `X509_NAME_hash_ex` of the subject: the `<hash>` of `<hash>.0`.
    pub subject_hash: u32,
    /// SHA-1 of the certificate's DER: how rehash tells duplicates apart.
    pub fingerprint: [u8; 20],
}

/// What rehash makes of one file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RehashInput {
    /// Exactly one certificate: linked by its subject hash.
    Certificate(CertificateKey),
    /// Exactly one CRL: rehash links it as `<hash>.r0`, which this emulation does not do.
    Crl,
    /// No block, several, or one that does not parse: rehash skips the file.
    Skipped,
}

/// Reads `contents` as OpenSSL's PEM reader does for rehash.
pub fn rehash_input(contents: &[u8]) -> RehashInput {
    let Ok(blocks) = pem::parse_many(contents) else {
        return RehashInput::Skipped;
    };
    // PEM_X509_INFO_read_bio: a certificate or CRL starts a new entry when the current one
    // holds either; a key starts one when the current holds a key. Other labels are skipped.
    let mut infos = 0usize;
    let (mut has_object, mut has_key) = (false, false);
    let mut only: Option<(bool, Vec<u8>)> = None;
    for block in &blocks {
        let label = block.tag();
        let certificate = matches!(
            label,
            "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE"
        );
        let crl = label == "X509 CRL";
        let key = label.ends_with("PRIVATE KEY");
        if certificate || crl {
            if has_object {
                infos += 1;
                has_key = false;
            }
            has_object = true;
            only = Some((certificate, block.contents().to_vec()));
        } else if key {
            if has_key {
                infos += 1;
                has_object = false;
            }
            has_key = true;
        }
    }
    if has_object || has_key {
        infos += 1;
    }
    match only {
        Some((true, der)) if infos == 1 => match certificate_key(&der) {
            Some(key) => RehashInput::Certificate(key),
            None => RehashInput::Skipped,
        },
        Some((false, _)) if infos == 1 => RehashInput::Crl,
        _ => RehashInput::Skipped,
    }
}

/// The key of one DER certificate (a `TRUSTED CERTIFICATE`'s trailing aux data ignored).
pub fn certificate_key(der: &[u8]) -> Option<CertificateKey> {
    let (certificate, _) = tlv(der)?;
    let subject = subject(certificate.value)?;
    let canonical = canonical_name(subject)?;
    let digest = Sha1::digest(&canonical);
    let subject_hash = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    Some(CertificateKey {
        subject_hash,
        fingerprint: Sha1::digest(certificate.whole).into(),
    })
}

/// One DER element: its tag octet, contents and whole encoding.
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    whole: &'a [u8],
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const UTF8_STRING: u8 = 0x0c;
/// `[0]` constructed: the TBSCertificate's version.
const VERSION: u8 = 0xa0;

/// The first element of `input` and what follows it (single-octet tags only, as in every
/// certificate name; definite lengths only, as DER has).
fn tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((
        Tlv {
            tag,
            value: &rest[..len],
            whole: &input[..header + len],
        },
        &rest[len..],
    ))
}

/// The elements of a constructed value, in order.
fn elements(mut value: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (element, rest) = tlv(value)?;
        out.push(element);
        value = rest;
    }
    Some(out)
}

/// The subject Name's contents: TBSCertificate is version?, serial, signature, issuer,
/// validity, subject.
fn subject(certificate: &[u8]) -> Option<&[u8]> {
    let (tbs, _) = tlv(certificate)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let fields = elements(tbs.value)?;
    let skip = usize::from(fields.first()?.tag == VERSION);
    let subject = fields.get(skip + 4)?;
    (subject.tag == SEQUENCE).then_some(subject.value)
}

/// The canonical encoding of a Name's RDN sequence: each RDN's SET, concatenated.
fn canonical_name(rdns: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for rdn in elements(rdns)? {
        if rdn.tag != SET {
            return None;
        }
        let mut entries = Vec::new();
        for attribute in elements(rdn.value)? {
            let parts = elements(attribute.value)?;
            let [oid, value] = parts.as_slice() else {
                return None;
            };
            let mut body = oid.whole.to_vec();
            match canonical_text(value.tag, value.value) {
                Some(text) => push_tlv(&mut body, UTF8_STRING, &text),
                None => body.extend_from_slice(value.whole),
            }
            let mut entry = Vec::new();
            push_tlv(&mut entry, SEQUENCE, &body);
            entries.push(entry);
        }
        // DER orders a SET OF by its elements' encodings (OpenSSL's der_cmp).
        entries.sort_by(|a, b| {
            let n = a.len().min(b.len());
            a[..n].cmp(&b[..n]).then(a.len().cmp(&b.len()))
        });
        push_tlv(&mut out, SET, &entries.concat());
    }
    Some(out)
}

fn push_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

/// `asn1_string_canon` for the string types OpenSSL canonicalises (`ASN1_MASK_CANON`);
/// `None` for any other type, which is copied as it is.
fn canonical_text(tag: u8, value: &[u8]) -> Option<Vec<u8>> {
    let utf8: Vec<u8> = match tag {
        // UTF8String, PrintableString, IA5String, VisibleString: bytes as they are.
        0x0c | 0x13 | 0x16 | 0x1a => value.to_vec(),
        // T61String: OpenSSL reads one byte per character, as Latin-1.
        0x14 => value
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .into_bytes(),
        // BMPString (UCS-2) and UniversalString (UCS-4), big-endian.
        0x1e => utf8_from_units(value, 2)?,
        0x1c => utf8_from_units(value, 4)?,
        _ => return None,
    };
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = utf8.iter().position(|b| !space(b)).unwrap_or(utf8.len());
    let end = utf8
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    let mut out = Vec::with_capacity(end - start);
    let mut in_space = false;
    for b in &utf8[start..end] {
        if space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b.to_ascii_lowercase());
            in_space = false;
        }
    }
    Some(out)
}

/// UTF-8 of big-endian code units of `width` bytes; `None` when one is not a character
/// (OpenSSL then fails the whole hash, and rehash skips the file).
fn utf8_from_units(value: &[u8], width: usize) -> Option<Vec<u8>> {
    if !value.len().is_multiple_of(width) {
        return None;
    }
    let mut out = String::new();
    for unit in value.chunks(width) {
        let code = unit.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b));
        out.push(char::from_u32(code)?);
    }
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_collapsed_and_lowered() {
        assert_eq!(
            canonical_text(0x13, b"  Foo \t\n BAR  ").unwrap(),
            b"foo bar".to_vec()
        );
        // Non-ASCII bytes are copied, not lowered.
        assert_eq!(
            canonical_text(0x0c, "Ä Ö".as_bytes()).unwrap(),
            "Ä Ö".as_bytes().to_vec()
        );
        assert_eq!(
            canonical_text(0x1e, &[0, b'A', 0, b' ', 0, b'B']).unwrap(),
            b"a b".to_vec()
        );
        assert_eq!(canonical_text(0x12, b"123"), None);
    }

    #[test]
    fn files_with_no_or_several_certificates_are_skipped() {
        assert_eq!(rehash_input(b"not pem"), RehashInput::Skipped);
        let block = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        // One block that is not a certificate parses to nothing rehash can link.
        assert_eq!(rehash_input(block.as_bytes()), RehashInput::Skipped);
        assert_eq!(
            rehash_input(format!("{block}{block}").as_bytes()),
            RehashInput::Skipped
        );
    }
}
