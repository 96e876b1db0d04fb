//! `Packages` indexes: one deb822 paragraph per binary package. Read as a stream (the
//! decompressor writes into [`PackagesSink`]), keeping only what the scan needs, because
//! Debian's main index is about 45 MiB of text and the process has a small memory budget.

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;

use crate::pkgs::dpkg::debfile::Compression as MemberCompression;

/// A `.deb` in the pool, as an index names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebFile {
    /// `Filename:`, relative to the archive's base URL.
    pub filename: Box<str>,
    pub size: u64,
    pub sha256: [u8; 32],
}

impl DebFile {
    /// The SHA256 in lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// One binary package of an index. Compact (boxed strings, shared architecture names,
/// binary hashes) because Debian's main index has over 60,000 of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: Box<str>,
    pub version: Box<str>,
    pub architecture: Arc<str>,
    /// `Source:` name, when it differs from the package name.
    pub source: Option<Box<str>>,
    /// `Source: name (version)`: the source version when it differs from `version`.
    pub source_version: Option<Box<str>>,
    /// `None` when the paragraph lacks `Filename`, `Size` or `SHA256`: the package can
    /// still be an update, but its changelog cannot be fetched safely.
    pub deb: Option<DebFile>,
}

impl IndexEntry {
    /// The source package name.
    pub fn source_name(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }

    /// The source version, which the changelog's entries are numbered by.
    pub fn source_version(&self) -> &str {
        self.source_version.as_deref().unwrap_or(&self.version)
    }
}

/// The first line of [`PackageIndex::to_compact`]'s format; a new format gets a new one.
const COMPACT_HEADER: &[u8] = b"patchpull-index-v1\n";

/// The packages of one index file, sorted by name for lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageIndex {
    entries: Vec<IndexEntry>,
}

impl PackageIndex {
    /// An index of `entries`, in any order.
    pub fn new(mut entries: Vec<IndexEntry>) -> PackageIndex {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.shrink_to_fit();
        PackageIndex { entries }
    }

    /// Every entry called `name` (several versions or architectures may coexist).
    pub fn lookup(&self, name: &str) -> &[IndexEntry] {
        let start = self.entries.partition_point(|e| &*e.name < name);
        let end = start + self.entries[start..].partition_point(|e| &*e.name == name);
        &self.entries[start..end]
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The index in a compact line format (one entry per line, tab-separated), written
    /// beside a verified index so a new process reads it in a fraction of the time that
    /// decompressing and parsing the original takes.
    pub fn to_compact(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 160);
        out.extend_from_slice(COMPACT_HEADER);
        for e in &self.entries {
            let fields: [&str; 5] = [
                &e.name,
                &e.version,
                &e.architecture,
                e.source.as_deref().unwrap_or("-"),
                e.source_version.as_deref().unwrap_or("-"),
            ];
            out.extend_from_slice(fields.join("\t").as_bytes());
            match &e.deb {
                Some(deb) => out.extend_from_slice(
                    format!("\t{}\t{}\t{}\n", deb.filename, deb.size, deb.sha256_hex()).as_bytes(),
                ),
                None => out.extend_from_slice(b"\t-\t-\t-\n"),
            }
        }
        out
    }

    /// Reads [`PackageIndex::to_compact`]'s output.
    ///
    /// # Errors
    /// A reason when the text is not that format (the caller then parses the original).
    pub fn from_compact(text: &[u8]) -> Result<PackageIndex, String> {
        let body = text
            .strip_prefix(COMPACT_HEADER)
            .ok_or("not a compact index (header)")?;
        let text = std::str::from_utf8(body).map_err(|_| "not UTF-8")?;
        let mut architectures: Vec<Arc<str>> = Vec::new();
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split('\t').collect();
            let [name, version, architecture, source, source_version, filename, size, sha] = f[..]
            else {
                return Err(format!("line {}: {} fields", n + 2, f.len()));
            };
            let architecture = match architectures.iter().find(|a| ***a == *architecture) {
                Some(a) => a.clone(),
                None => {
                    let a: Arc<str> = Arc::from(architecture);
                    architectures.push(a.clone());
                    a
                }
            };
            let optional = |v: &str| (v != "-").then(|| Box::<str>::from(v));
            let deb = if filename == "-" {
                None
            } else {
                let mut sha256 = [0u8; 32];
                hex::decode_to_slice(sha, &mut sha256)
                    .map_err(|_| format!("line {}: bad SHA256", n + 2))?;
                Some(DebFile {
                    filename: filename.into(),
                    size: size
                        .parse()
                        .map_err(|_| format!("line {}: bad size", n + 2))?,
                    sha256,
                })
            };
            entries.push(IndexEntry {
                name: name.into(),
                version: version.into(),
                architecture,
                source: optional(source),
                source_version: optional(source_version),
                deb,
            });
        }
        Ok(PackageIndex::new(entries))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How an index file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gzip,
    None,
}

impl Compression {
    pub fn of_path(path: &str) -> Compression {
        if path.ends_with(".xz") {
            Compression::Xz
        } else if path.ends_with(".gz") {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// Decompresses and parses an index; at most `max_unpacked` bytes of text are read.
///
/// # Errors
/// A reason: corrupt compression, more text than `max_unpacked`, or a paragraph without
/// `Package`, `Version` or `Architecture` (with its line).
pub fn read_index(
    input: impl Read,
    compression: Compression,
    max_unpacked: u64,
) -> Result<PackageIndex, String> {
    let mut sink = PackagesSink::new(max_unpacked);
    let input = BufReader::with_capacity(64 * 1024, input);
    let copied = match compression {
        // The streaming decoder of `.deb` members: bounded memory, and faster than lzma-rs.
        Compression::Xz => MemberCompression::Xz.decompress(input, &mut sink),
        Compression::Gzip => MemberCompression::Gzip.decompress(input, &mut sink),
        Compression::None => MemberCompression::None.decompress(input, &mut sink),
    };
    copied.map_err(|e| {
        sink.error
            .take()
            .unwrap_or_else(|| format!("decompressing: {e}"))
    })?;
    sink.finish()
}

/// Reads plain index text that is already in memory (tests, small indexes).
pub fn parse_text(text: &[u8]) -> Result<PackageIndex, String> {
    read_index(text, Compression::None, u64::MAX)
}

/// Parses index text as it is written to it, line by line.
pub struct PackagesSink {
    max_unpacked: u64,
    written: u64,
    line: Vec<u8>,
    line_no: usize,
    paragraph: Paragraph,
    entries: Vec<IndexEntry>,
    /// Architecture names seen, shared by every entry (there are only a handful).
    architectures: Vec<Arc<str>>,
    /// The parse error that made a write fail; the decompressor only sees an io::Error.
    error: Option<String>,
}

#[derive(Default)]
struct Paragraph {
    first_line: usize,
    package: Option<String>,
    version: Option<String>,
    architecture: Option<String>,
    source: Option<String>,
    filename: Option<String>,
    size: Option<String>,
    sha256: Option<String>,
}

/// A single line longer than this is not an index (Debian's longest, in `Description`
/// continuation lines, stay under a few KiB; this bounds memory on hostile input).
const MAX_LINE: usize = 1024 * 1024;

impl PackagesSink {
    fn new(max_unpacked: u64) -> PackagesSink {
        PackagesSink {
            max_unpacked,
            written: 0,
            line: Vec::new(),
            line_no: 0,
            paragraph: Paragraph::default(),
            entries: Vec::new(),
            architectures: Vec::new(),
            error: None,
        }
    }

    fn fail(&mut self, reason: String) -> io::Error {
        self.error = Some(reason.clone());
        io::Error::new(io::ErrorKind::InvalidData, reason)
    }

    fn line(&mut self) -> Result<(), String> {
        self.line_no += 1;
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let result = self.field(&line);
        line.clear();
        self.line = line;
        result
    }

    fn field(&mut self, line: &[u8]) -> Result<(), String> {
        if line.iter().all(|b| *b == b' ' || *b == b'\t') {
            return self.end_paragraph();
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Ok(()); // continuation of a field this scan does not read
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(format!("line {}: expected `Field: value`", self.line_no));
        };
        let name = &line[..colon];
        let slot = match name {
            n if n.eq_ignore_ascii_case(b"Package") => &mut self.paragraph.package,
            n if n.eq_ignore_ascii_case(b"Version") => &mut self.paragraph.version,
            n if n.eq_ignore_ascii_case(b"Architecture") => &mut self.paragraph.architecture,
            n if n.eq_ignore_ascii_case(b"Source") => &mut self.paragraph.source,
            n if n.eq_ignore_ascii_case(b"Filename") => &mut self.paragraph.filename,
            n if n.eq_ignore_ascii_case(b"Size") => &mut self.paragraph.size,
            n if n.eq_ignore_ascii_case(b"SHA256") => &mut self.paragraph.sha256,
            _ => {
                if self.paragraph.first_line == 0 {
                    self.paragraph.first_line = self.line_no;
                }
                return Ok(());
            }
        };
        let value = std::str::from_utf8(&line[colon + 1..])
            .map_err(|_| format!("line {}: field is not UTF-8", self.line_no))?;
        *slot = Some(value.trim().to_owned());
        if self.paragraph.first_line == 0 {
            self.paragraph.first_line = self.line_no;
        }
        Ok(())
    }

    fn end_paragraph(&mut self) -> Result<(), String> {
        let p = std::mem::take(&mut self.paragraph);
        if p.first_line == 0 {
            return Ok(());
        }
        let missing = |field: &str| format!("paragraph at line {}: no {field} field", p.first_line);
        let name = p.package.ok_or_else(|| missing("Package"))?;
        let version = p.version.ok_or_else(|| missing("Version"))?;
        let architecture = p.architecture.ok_or_else(|| missing("Architecture"))?;
        let (source, source_version) = match p.source.as_deref() {
            Some(source) => {
                let (source_name, source_version) = parse_source(source).ok_or_else(|| {
                    format!(
                        "paragraph at line {}: Source {source:?} is malformed",
                        p.first_line
                    )
                })?;
                (
                    (source_name != name).then(|| source_name.into()),
                    source_version.filter(|v| *v != version).map(Into::into),
                )
            }
            None => (None, None),
        };
        let sha256 = p.sha256.as_deref().and_then(|hex| {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hex, &mut bytes).ok().map(|()| bytes)
        });
        let deb = match (p.filename, p.size.and_then(|s| s.parse().ok()), sha256) {
            (Some(filename), Some(size), Some(sha256)) => Some(DebFile {
                filename: filename.into(),
                size,
                sha256,
            }),
            _ => None,
        };
        let architecture = match self.architectures.iter().find(|a| ***a == *architecture) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = architecture.into();
                self.architectures.push(shared.clone());
                shared
            }
        };
        self.entries.push(IndexEntry {
            name: name.into(),
            version: version.into(),
            architecture,
            source,
            source_version,
            deb,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<PackageIndex, String> {
        if !self.line.is_empty() {
            self.line()?;
        }
        self.end_paragraph()?;
        Ok(PackageIndex::new(self.entries))
    }
}

impl Write for PackagesSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.max_unpacked {
            let reason = format!("more than {} bytes once decompressed", self.max_unpacked);
            return Err(self.fail(reason));
        }
        let mut rest = buf;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&rest[..=newline]);
            rest = &rest[newline + 1..];
            if let Err(reason) = self.line() {
                return Err(self.fail(reason));
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > MAX_LINE {
            let reason = format!("line {} is longer than {MAX_LINE} bytes", self.line_no + 1);
            return Err(self.fail(reason));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `name` or `name (version)`.
fn parse_source(source: &str) -> Option<(&str, Option<&str>)> {
    match source.split_once('(') {
        None if !source.contains(char::is_whitespace) && !source.is_empty() => Some((source, None)),
        None => None,
        Some((name, rest)) => {
            let version = rest.trim().strip_suffix(')')?.trim();
            let name = name.trim();
            (!name.is_empty() && !version.is_empty()).then_some((name, Some(version)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "\
Package: libssl3
Source: openssl
Version: 3.0.15-1~deb12u1
Architecture: amd64
Description: Secure Sockets Layer toolkit
 continuation: with a colon
Filename: pool/updates/main/o/openssl/libssl3_3.0.15-1~deb12u1_amd64.deb
Size: 2025432
SHA256: 0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F9

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Filename: pool/updates/main/t/tzdata/tzdata_2024a-0+deb12u1_all.deb
Size: 255388

Package: libpcre2-8-0
Source: pcre2 (10.42-1)
Version: 10.42-1+b1
Architecture: amd64
Filename: pool/main/p/pcre2/libpcre2-8-0_10.42-1+b1_amd64.deb
Size: 1
SHA256: 1111111111111111111111111111111111111111111111111111111111111111
";

    #[test]
    fn entries_keep_what_the_scan_needs() {
        let index = parse_text(INDEX.as_bytes()).unwrap();
        assert_eq!(index.len(), 3);
        let ssl = &index.lookup("libssl3")[0];
        assert_eq!(ssl.source_name(), "openssl");
        assert_eq!(ssl.source_version(), "3.0.15-1~deb12u1");
        let deb = ssl.deb.as_ref().unwrap();
        assert_eq!(deb.size, 2_025_432);
        assert!(deb.sha256_hex().starts_with("0a1b2c"));
        // No SHA256: an update, but no verifiable .deb.
        assert_eq!(index.lookup("tzdata")[0].deb, None);
        let pcre = &index.lookup("libpcre2-8-0")[0];
        assert_eq!(pcre.source_name(), "pcre2");
        assert_eq!(pcre.source_version(), "10.42-1");
        assert!(index.lookup("nothing").is_empty());
        assert!(index.lookup("a").is_empty());
    }

    #[test]
    fn compressed_indexes_give_the_same_entries() {
        let plain = parse_text(INDEX.as_bytes()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(INDEX.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            read_index(gz.as_slice(), Compression::Gzip, 1 << 20).unwrap(),
            plain
        );
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(INDEX.as_bytes()).unwrap();
        let xz = xz.finish().unwrap();
        assert_eq!(
            read_index(xz.as_slice(), Compression::Xz, 1 << 20).unwrap(),
            plain
        );
        let err = read_index(xz.as_slice(), Compression::Xz, 100).unwrap_err();
        assert_eq!(err, "more than 100 bytes once decompressed");
        let err = read_index(&xz[..xz.len() / 2], Compression::Xz, 1 << 20).unwrap_err();
        assert!(err.starts_with("decompressing"), "{err}");
    }

    #[test]
    fn malformed_paragraphs_name_their_line() {
        let cases = [
            (
                "Package: a\nArchitecture: all\n",
                "paragraph at line 1: no Version field",
            ),
            (
                "Package: a\nVersion: 1\nArchitecture: all\n\nVersion: 2\nArchitecture: all\n",
                "paragraph at line 5: no Package field",
            ),
            ("Package: a\nno colon\n", "line 2: expected `Field: value`"),
            (
                "Package: a\nVersion: 1\nArchitecture: all\nSource: b (\n",
                "Source \"b (\" is malformed",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_text(text.as_bytes()).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn compact_copies_round_trip() {
        let text = b"Package: a\nVersion: 1:2.0-1\nArchitecture: amd64\nSource: src (2.0-0)\nFilename: pool/a.deb\nSize: 10\nSHA256: 0101010101010101010101010101010101010101010101010101010101010101\n\nPackage: b\nVersion: 1\nArchitecture: all\n";
        let index = super::parse_text(text).unwrap();
        let compact = index.to_compact();
        assert_eq!(super::PackageIndex::from_compact(&compact).unwrap(), index);
        assert!(super::PackageIndex::from_compact(b"garbage").is_err());
        assert!(super::PackageIndex::from_compact(b"patchpull-index-v1\nx\ty\n").is_err());
    }
}
