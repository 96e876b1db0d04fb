//! Reading the documentation a `.deb` ships, without unpacking it: the `ar` archive's
//! `data.tar.{xz,gz,zst}` member is decompressed as a stream into a tar reader that keeps
//! only `usr/share/doc/<dir>/changelog.Debian.gz` files, the `changelog.gz` of directories
//! without one (a native package's, Debian policy 12.7) and the symlinks of `usr/share/doc`
//! (many packages link their doc directory to another package of the same source).
//!
//! The tar reader is a [`Write`] sink: every member compression decompresses into a writer
//! ([`Compression::decompress`]). Memory stays bounded by the changelog limit.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use base64::Engine;

use crate::pkgs::dpkg::debfile::Compression;

/// Changelogs and doc links of one `.deb`, by path below `usr/share/doc/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DebDocs {
    /// `<dir>` -> gzip bytes of `usr/share/doc/<dir>/changelog.Debian.gz`, base64 in JSON.
    #[serde(with = "base64_map")]
    pub changelogs: BTreeMap<String, Vec<u8>>,
    /// `<dir>` -> gzip bytes of `usr/share/doc/<dir>/changelog.gz`, for directories without
    /// a `changelog.Debian.gz`: a native package's Debian changelog, or an upstream one.
    /// Required in JSON, so that docs cached before it existed are read again.
    #[serde(with = "base64_map")]
    pub native_changelogs: BTreeMap<String, Vec<u8>>,
    /// `<dir>`, `<dir>/changelog.Debian.gz` or `<dir>/changelog.gz` -> symlink target, as
    /// stored.
    pub links: BTreeMap<String, String>,
}

/// Limits on one `.deb`.
#[derive(Debug, Clone, Copy)]
pub struct DebLimits {
    /// Bytes of tar read from `data.tar.*` before giving up.
    pub max_unpacked: u64,
    /// Size of one `changelog.Debian.gz` kept.
    pub max_changelog: u64,
}

const DOC_PREFIX: &str = "usr/share/doc/";
const CHANGELOG: &str = "changelog.Debian.gz";
const NATIVE_CHANGELOG: &str = "changelog.gz";

/// Reads the docs of the `.deb` in `file`.
///
/// # Errors
/// A reason: not an `ar` archive, no `data.tar.*` member, an unknown compression, corrupt
/// data, or more than `limits.max_unpacked` bytes of tar.
pub fn read_docs(file: &mut File, limits: DebLimits) -> Result<DebDocs, String> {
    let (member, size) = find_data_member(file)?;
    let mut sink = TarSink::new(limits);
    let data = BufReader::new(file.take(size));
    let compression = Compression::from_member(&member, "data.tar").map_err(|e| e.to_string())?;
    compression.decompress(data, &mut sink).map_err(|e| {
        let reason = sink.error.take().unwrap_or_else(|| e.to_string());
        format!("{member}: {reason}")
    })?;
    let mut docs = sink.docs;
    let debian = &docs.changelogs;
    docs.native_changelogs
        .retain(|dir, _| !debian.contains_key(dir));
    Ok(docs)
}

/// Finds `data.tar*` in the `ar` archive and leaves `file` at its first byte.
fn find_data_member(file: &mut File) -> Result<(String, u64), String> {
    let io_err = |e: io::Error| format!("reading the ar archive: {e}");
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic).map_err(io_err)?;
    if &magic != b"!<arch>\n" {
        return Err("not an ar archive (no !<arch> magic)".to_owned());
    }
    loop {
        let mut header = [0u8; 60];
        match file.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err("no data.tar member".to_owned())
            }
            Err(e) => return Err(io_err(e)),
        }
        if &header[58..60] != b"`\n" {
            return Err("corrupt ar member header".to_owned());
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size: u64 = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("ar member {name:?} has a bad size"))?;
        if name.starts_with("data.tar") {
            return Ok((name, size));
        }
        let skip = i64::try_from(size + size % 2).map_err(|_| "ar member too large".to_owned())?;
        file.seek(SeekFrom::Current(skip)).map_err(io_err)?;
    }
}

// === impl TarSink ===

struct TarSink {
    limits: DebLimits,
    written: u64,
    header: Vec<u8>,
    state: State,
    long_name: Option<String>,
    long_link: Option<String>,
    docs: DebDocs,
    error: Option<String>,
}

enum State {
    Header,
    Data {
        remaining: u64,
        padding: u64,
        target: Target,
    },
    Padding(u64),
    End,
}

enum Target {
    Skip,
    Changelog {
        dir: String,
        native: bool,
        bytes: Vec<u8>,
    },
    LongName(Vec<u8>),
    LongLink(Vec<u8>),
    Pax(Vec<u8>),
}

/// GNU long names and pax headers larger than this are not a `.deb` anyone built.
const MAX_META: u64 = 64 * 1024;

impl TarSink {
    fn new(limits: DebLimits) -> TarSink {
        TarSink {
            limits,
            written: 0,
            header: Vec::with_capacity(512),
            state: State::Header,
            long_name: None,
            long_link: None,
            docs: DebDocs::default(),
            error: None,
        }
    }

    fn fail(&mut self, reason: String) -> io::Error {
        self.error = Some(reason.clone());
        io::Error::new(io::ErrorKind::InvalidData, reason)
    }

    /// Consumes from `buf`; returns how much.
    fn step(&mut self, buf: &[u8]) -> Result<usize, String> {
        match &mut self.state {
            State::End => Ok(buf.len()),
            State::Padding(left) => {
                let n = (*left).min(buf.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Header;
                }
                Ok(n)
            }
            State::Header => {
                let n = (512 - self.header.len()).min(buf.len());
                self.header.extend_from_slice(&buf[..n]);
                if self.header.len() == 512 {
                    let header = std::mem::take(&mut self.header);
                    self.state = self.start_entry(&header)?;
                    self.header = header;
                    self.header.clear();
                }
                Ok(n)
            }
            State::Data {
                remaining,
                padding,
                target,
            } => {
                let n = (*remaining).min(buf.len() as u64) as usize;
                match target {
                    Target::Skip => {}
                    Target::Changelog { bytes, .. }
                    | Target::LongName(bytes)
                    | Target::LongLink(bytes)
                    | Target::Pax(bytes) => bytes.extend_from_slice(&buf[..n]),
                }
                *remaining -= n as u64;
                if *remaining == 0 {
                    let padding = *padding;
                    let target = std::mem::replace(target, Target::Skip);
                    self.finish_entry(target);
                    self.state = if padding == 0 {
                        State::Header
                    } else {
                        State::Padding(padding)
                    };
                }
                Ok(n)
            }
        }
    }

    fn start_entry(&mut self, header: &[u8]) -> Result<State, String> {
        if header.iter().all(|b| *b == 0) {
            return Ok(State::End);
        }
        let stored = octal(&header[148..156]).ok_or("corrupt tar header checksum field")?;
        let computed: u64 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if stored != computed {
            return Err("corrupt tar header (checksum mismatch)".to_owned());
        }
        let size = if header[124] & 0x80 != 0 {
            header[125..136].iter().fold(0u64, |acc, b| {
                acc.saturating_mul(256).saturating_add(u64::from(*b))
            })
        } else {
            octal(&header[124..136]).ok_or("corrupt tar header size")?
        };
        let typeflag = header[156];
        let ustar_name = || {
            let name = cstr(&header[..100]);
            let prefix = if &header[257..262] == b"ustar" {
                cstr(&header[345..500])
            } else {
                String::new()
            };
            if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            }
        };
        let path = self.long_name.take().unwrap_or_else(ustar_name);
        let link = self
            .long_link
            .take()
            .unwrap_or_else(|| cstr(&header[157..257]));
        let target = match typeflag {
            b'L' | b'K' | b'x' if size > MAX_META => {
                return Err(format!("tar metadata entry of {size} bytes"))
            }
            b'L' => Target::LongName(Vec::new()),
            b'K' => Target::LongLink(Vec::new()),
            b'x' => Target::Pax(Vec::new()),
            _ => self.classify(&path, typeflag, &link, size),
        };
        if size == 0 {
            self.finish_entry(target);
            return Ok(State::Header);
        }
        Ok(State::Data {
            remaining: size,
            padding: (512 - size % 512) % 512,
            target,
        })
    }

    /// Where an ordinary entry's bytes go.
    fn classify(&mut self, path: &str, typeflag: u8, link: &str, size: u64) -> Target {
        let path = path.trim_start_matches("./").trim_start_matches('/');
        let Some(below_doc) = path.strip_prefix(DOC_PREFIX) else {
            return Target::Skip;
        };
        let below_doc = below_doc.trim_end_matches('/');
        let is_dir_itself = !below_doc.is_empty() && !below_doc.contains('/');
        // `<dir>/changelog.Debian.gz` or `<dir>/changelog.gz`: the directory and whether the
        // file is the latter.
        let changelog = below_doc.split_once('/').and_then(|(dir, file)| {
            let native = match file {
                CHANGELOG => false,
                NATIVE_CHANGELOG => true,
                _ => return None,
            };
            (!dir.is_empty()).then_some((dir, native))
        });
        match (typeflag, changelog) {
            (b'2', _) if is_dir_itself || changelog.is_some() => {
                self.docs
                    .links
                    .insert(below_doc.to_owned(), link.to_owned());
                Target::Skip
            }
            (b'0' | b'\0' | b'7', Some((dir, native))) if size <= self.limits.max_changelog => {
                Target::Changelog {
                    dir: dir.to_owned(),
                    native,
                    bytes: Vec::new(),
                }
            }
            _ => Target::Skip,
        }
    }

    fn finish_entry(&mut self, target: Target) {
        match target {
            Target::Skip => {}
            Target::Changelog { dir, native, bytes } => {
                let map = if native {
                    &mut self.docs.native_changelogs
                } else {
                    &mut self.docs.changelogs
                };
                map.insert(dir, bytes);
            }
            Target::LongName(bytes) => self.long_name = Some(cstr(&bytes)),
            Target::LongLink(bytes) => self.long_link = Some(cstr(&bytes)),
            Target::Pax(bytes) => {
                for (key, value) in pax_records(&bytes) {
                    match key {
                        "path" => self.long_name = Some(value.to_owned()),
                        "linkpath" => self.long_link = Some(value.to_owned()),
                        _ => {}
                    }
                }
            }
        }
    }
}

impl Write for TarSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.limits.max_unpacked {
            let reason = format!("more than {} bytes of tar", self.limits.max_unpacked);
            return Err(self.fail(reason));
        }
        let mut rest = buf;
        while !rest.is_empty() {
            match self.step(rest) {
                Ok(n) => rest = &rest[n..],
                Err(reason) => return Err(self.fail(reason)),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// `<len> <key>=<value>\n` records (POSIX pax extended header).
fn pax_records(bytes: &[u8]) -> Vec<(&str, &str)> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while let Some(space) = rest.iter().position(|b| *b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > space + 1 && *l <= rest.len())
        else {
            break;
        };
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Ok(record) = std::str::from_utf8(record) {
            if let Some((key, value)) = record.split_once('=') {
                records.push((key, value));
            }
        }
        rest = &rest[len..];
    }
    records
}

mod base64_map {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let encoded: BTreeMap<&String, String> = map
            .iter()
            .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
            .collect();
        serde::Serialize::serialize(&encoded, serializer)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let encoded: BTreeMap<String, String> = serde::Deserialize::deserialize(deserializer)?;
        encoded
            .into_iter()
            .map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(|v| (k, v))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DebLimits = DebLimits {
        max_unpacked: 1 << 20,
        max_changelog: 1 << 16,
    };

    /// An `ar` archive with `debian-binary`, an odd-sized member, and `data.tar.gz`.
    fn deb_with(tar: &[u8]) -> tempfile::NamedTempFile {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).unwrap();
        let data = gz.finish().unwrap();
        let mut ar = b"!<arch>\n".to_vec();
        for (name, body) in [
            ("debian-binary", &b"2.0\n"[..]),
            ("control.tar.xz", &b"odd"[..]),
            ("data.tar.gz", &data[..]),
        ] {
            let header = format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                100644,
                body.len()
            );
            ar.extend_from_slice(header.as_bytes());
            ar.extend_from_slice(body);
            if body.len() % 2 == 1 {
                ar.push(b'\n');
            }
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&ar).unwrap();
        file
    }

    fn read(file: &tempfile::NamedTempFile, limits: DebLimits) -> Result<DebDocs, String> {
        read_docs(&mut File::open(file.path()).unwrap(), limits)
    }

    #[test]
    fn changelogs_and_doc_links_with_long_names() {
        let long_dir = format!("lib{}", "x".repeat(120));
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, body: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, path, body).unwrap();
        };
        add("./usr/share/doc/hello/changelog.Debian.gz", b"gz-bytes");
        add(
            &format!("./usr/share/doc/{long_dir}/changelog.Debian.gz"),
            b"long",
        );
        add("./usr/share/doc/hello/copyright", b"not kept");
        // A native package's changelog is kept; an upstream one beside a Debian one is not.
        add("./usr/share/doc/apt/changelog.gz", b"native");
        add("./usr/share/doc/hello/changelog.gz", b"upstream");
        add(
            "./usr/share/doc/hello/deeper/changelog.Debian.gz",
            b"not a doc dir",
        );
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "./usr/share/doc/hello-data", "hello")
            .unwrap();
        tar.append_link(
            &mut link,
            "./usr/share/doc/other/changelog.Debian.gz",
            "../hello/changelog.Debian.gz",
        )
        .unwrap();
        tar.append_link(
            &mut link,
            "./usr/share/doc/apt-utils/changelog.gz",
            "../apt/changelog.gz",
        )
        .unwrap();
        let tar = tar.into_inner().unwrap();

        let docs = read(&deb_with(&tar), LIMITS).unwrap();
        let dirs: Vec<&str> = docs.changelogs.keys().map(String::as_str).collect();
        assert_eq!(dirs, ["hello", long_dir.as_str()]);
        assert_eq!(docs.changelogs["hello"], b"gz-bytes");
        let native: Vec<(&str, &[u8])> = docs
            .native_changelogs
            .iter()
            .map(|(dir, bytes)| (dir.as_str(), bytes.as_slice()))
            .collect();
        assert_eq!(native, [("apt", &b"native"[..])]);
        assert_eq!(docs.links["apt-utils/changelog.gz"], "../apt/changelog.gz");
        assert_eq!(docs.links["hello-data"], "hello");
        assert_eq!(
            docs.links["other/changelog.Debian.gz"],
            "../hello/changelog.Debian.gz"
        );

        // The JSON cache form round-trips.
        let json = serde_json::to_vec(&docs).unwrap();
        assert_eq!(serde_json::from_slice::<DebDocs>(&json).unwrap(), docs);

        let small = DebLimits {
            max_changelog: 3,
            ..LIMITS
        };
        assert_eq!(read(&deb_with(&tar), small).unwrap().changelogs.len(), 0);
        let tiny = DebLimits {
            max_unpacked: 1024,
            ..LIMITS
        };
        assert!(read(&deb_with(&tar), tiny)
            .unwrap_err()
            .contains("more than 1024 bytes of tar"));
    }

    #[test]
    fn broken_archives_say_what_is_wrong() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        tar.append_data(
            &mut header,
            "usr/share/doc/a/changelog.Debian.gz",
            &b"x"[..],
        )
        .unwrap();
        let mut tar = tar.into_inner().unwrap();
        tar[10] ^= 0x01;
        let err = read(&deb_with(&tar), LIMITS).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");

        let mut not_ar = tempfile::NamedTempFile::new().unwrap();
        not_ar.write_all(b"PK\x03\x04 a zip").unwrap();
        assert!(read(&not_ar, LIMITS)
            .unwrap_err()
            .contains("not an ar archive"));
        let mut no_data = tempfile::NamedTempFile::new().unwrap();
        no_data.write_all(b"!<arch>\n").unwrap();
        assert_eq!(read(&no_data, LIMITS).unwrap_err(), "no data.tar member");
    }

    #[test]
    fn pax_records_parse() {
        let records = b"31 path=usr/share/doc/a/b/c.gz\n19 linkpath=../x/y\n";
        assert_eq!(
            pax_records(records),
            [("path", "usr/share/doc/a/b/c.gz"), ("linkpath", "../x/y")]
        );
        assert!(pax_records(b"99 path=short\n").is_empty());
    }
}
