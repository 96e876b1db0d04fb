//! `/lib/apk/db/installed` as stanzas: each kept as its exact bytes (so untouched packages
//! are written back byte for byte) and parsed for what the engine needs: identity, version,
//! origin, replaces and the file list (`F:` directories with `M:` owner/mode, each followed
//! by `R:` files with `a:` owner/mode and `Z:` checksum).

use std::fmt::Write as _;

use crate::pkgs::apk::package::{q1, ApkPackage};

/// Owner and permissions as apk records them (`uid:gid:mode`, mode in octal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Acl {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
}

pub(super) const DEFAULT_DIR_ACL: Acl = Acl {
    uid: 0,
    gid: 0,
    mode: 0o755,
};
pub(super) const DEFAULT_FILE_ACL: Acl = Acl {
    uid: 0,
    gid: 0,
    mode: 0o644,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DbFile {
    pub name: String,
    pub acl: Acl,
    /// `Z:` verbatim (`Q1...`).
    pub checksum: Option<String>,
    /// Byte range of the `R:` line and its `a:`/`Z:` lines in the stanza.
    pub span: (usize, usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DbDir {
    pub name: String,
    pub acl: Acl,
    pub files: Vec<DbFile>,
}

impl DbDir {
    pub fn path_of(&self, file: &str) -> String {
        if self.name.is_empty() {
            file.to_owned()
        } else {
            format!("{}/{file}", self.name)
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Stanza {
    /// The stanza's lines, each with its line end, without the blank separator line.
    pub raw: Vec<u8>,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    pub identity: Option<String>,
    pub origin: Option<String>,
    /// `s:`: the repository tag the user pinned, kept across upgrades.
    pub repository_tag: Option<String>,
    pub replaces: Vec<String>,
    pub replaces_priority: Option<u64>,
    pub dirs: Vec<DbDir>,
}

impl Stanza {
    pub fn files(&self) -> impl Iterator<Item = (String, &DbFile)> {
        self.dirs
            .iter()
            .flat_map(|d| d.files.iter().map(move |f| (d.path_of(&f.name), f)))
    }
}

/// Splits and parses the database. Errors name the line.
pub(super) fn parse(data: &[u8]) -> Result<Vec<Stanza>, String> {
    let mut stanzas = Vec::new();
    let mut current: Option<(usize, Vec<Field>)> = None;
    let mut pos = 0usize;
    for (index, line) in data.split_inclusive(|b| *b == b'\n').enumerate() {
        let start = pos;
        pos += line.len();
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            if let Some((begin, fields)) = current.take() {
                stanzas.push(stanza(&data[begin..start], begin, fields)?);
            }
            continue;
        }
        let line_no = index + 1;
        let (letter, value) = match text {
            [letter, b':', value @ ..] if letter.is_ascii_alphanumeric() => (*letter, value),
            _ => return Err(format!("line {line_no}: expected `X:value`")),
        };
        let value =
            String::from_utf8(value.to_vec()).map_err(|_| format!("line {line_no}: not UTF-8"))?;
        current
            .get_or_insert_with(|| (start, Vec::new()))
            .1
            .push((letter, value, start, pos, line_no));
    }
    if let Some((begin, fields)) = current.take() {
        stanzas.push(stanza(&data[begin..], begin, fields)?);
    }
    Ok(stanzas)
}

fn parse_acl(value: &str) -> Option<Acl> {
    let mut parts = value.split(':');
    Some(Acl {
        uid: parts.next()?.parse().ok()?,
        gid: parts.next()?.parse().ok()?,
        mode: u32::from_str_radix(parts.next()?, 8).ok()?,
    })
}

/// Letter, value, byte range in the file, line number.
type Field = (u8, String, usize, usize, usize);

fn stanza(raw: &[u8], offset: usize, fields: Vec<Field>) -> Result<Stanza, String> {
    let mut s = Stanza {
        raw: raw.to_vec(),
        name: String::new(),
        version: String::new(),
        arch: None,
        identity: None,
        origin: None,
        repository_tag: None,
        replaces: Vec::new(),
        replaces_priority: None,
        dirs: Vec::new(),
    };
    for (letter, value, start, end, line) in fields {
        let (start, end) = (start - offset, end - offset);
        let bad = |what: &str| format!("line {line}: bad {what} {value:?}");
        match letter {
            b'P' => s.name = value.clone(),
            b'V' => s.version = value.clone(),
            b'A' => s.arch = Some(value.clone()),
            b'C' => s.identity = Some(value.clone()),
            b'o' => s.origin = Some(value.clone()),
            b's' => s.repository_tag = Some(value.clone()),
            b'r' => s.replaces = value.split_whitespace().map(str::to_owned).collect(),
            b'q' => s.replaces_priority = Some(value.parse().map_err(|_| bad("q:"))?),
            b'F' => s.dirs.push(DbDir {
                name: value.clone(),
                acl: DEFAULT_DIR_ACL,
                files: Vec::new(),
            }),
            b'M' => {
                let acl = parse_acl(&value).ok_or_else(|| bad("M:"))?;
                s.dirs
                    .last_mut()
                    .ok_or_else(|| bad("M: before any F:"))?
                    .acl = acl;
            }
            b'R' => {
                let dir = s.dirs.last_mut().ok_or_else(|| bad("R: before any F:"))?;
                dir.files.push(DbFile {
                    name: value.clone(),
                    acl: DEFAULT_FILE_ACL,
                    checksum: None,
                    span: (start, end),
                });
            }
            b'a' | b'Z' => {
                let acl = if letter == b'a' {
                    Some(parse_acl(&value).ok_or_else(|| bad("a:"))?)
                } else {
                    None
                };
                let file = s
                    .dirs
                    .last_mut()
                    .and_then(|d| d.files.last_mut())
                    .ok_or_else(|| bad("a:/Z: before any R:"))?;
                match acl {
                    Some(acl) => file.acl = acl,
                    None => file.checksum = Some(value.clone()),
                }
                file.span.1 = end;
            }
            _ => {}
        }
    }
    if s.name.is_empty() || s.version.is_empty() {
        return Err(format!(
            "the record at byte {offset} lacks P: (name) or V: (version)"
        ));
    }
    Ok(s)
}

/// A directory of the new version's file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewDir {
    pub name: String,
    pub acl: Acl,
    /// (name, acl, `Z:` value).
    pub files: Vec<(String, Acl, Option<String>)>,
}

/// The stanza apk-tools writes for an installed package (`apk_pkg_write_index_header`
/// then `apk_db_fdb_write`): `C: P: V: A: S: I: T: U: L: o: m: t: c: k: D: p: i: r: q: s:`
/// then each `F:` (with `M:` unless root:root 0755) followed by its `R:` files (with `a:`
/// unless root:root 0644, and `Z:`). Broken-package flags (`f:`) are never written: a
/// package this engine cannot install whole is refused instead.
pub(super) fn render(apk: &ApkPackage, repository_tag: Option<&str>, dirs: &[NewDir]) -> Vec<u8> {
    let info = apk.info();
    let mut out = String::new();
    let mut field = |letter: char, value: &str| {
        let _ = writeln!(out, "{letter}:{value}");
    };
    field('C', &apk.identity());
    field('P', &info.pkgname);
    field('V', &info.pkgver);
    if let Some(arch) = &info.arch {
        field('A', arch);
    }
    field('S', &apk.file_size().to_string());
    field('I', &info.size.to_string());
    field('T', &info.pkgdesc);
    field('U', &info.url);
    field('L', &info.license);
    for (letter, value) in [('o', &info.origin), ('m', &info.maintainer)] {
        if let Some(value) = value {
            field(letter, value);
        }
    }
    if info.builddate != 0 {
        field('t', &info.builddate.to_string());
    }
    if let Some(commit) = &info.commit {
        field('c', commit);
    }
    if info.provider_priority != 0 {
        field('k', &info.provider_priority.to_string());
    }
    for (letter, list) in [
        ('D', &info.depends),
        ('p', &info.provides),
        ('i', &info.install_if),
        ('r', &info.replaces),
    ] {
        if !list.is_empty() {
            field(letter, &list.join(" "));
        }
    }
    if info.replaces_priority != 0 {
        field('q', &info.replaces_priority.to_string());
    }
    if let Some(tag) = repository_tag {
        field('s', tag);
    }
    let acl = |a: &Acl| format!("{}:{}:{:o}", a.uid, a.gid, a.mode);
    for dir in dirs {
        field('F', &dir.name);
        if dir.acl != DEFAULT_DIR_ACL {
            field('M', &acl(&dir.acl));
        }
        for (name, file_acl, checksum) in &dir.files {
            field('R', name);
            if *file_acl != DEFAULT_FILE_ACL {
                field('a', &acl(file_acl));
            }
            if let Some(sum) = checksum {
                field('Z', sum);
            }
        }
    }
    out.into_bytes()
}

/// `Z:` for a SHA-1.
pub(super) fn z(sum: &[u8; 20]) -> String {
    q1(sum)
}

/// The stanza without the `R:` records at `spans` (files another package took over).
pub(super) fn without_files(stanza: &Stanza, spans: &[(usize, usize)]) -> Vec<u8> {
    let mut spans = spans.to_vec();
    spans.sort_unstable();
    let mut out = Vec::with_capacity(stanza.raw.len());
    let mut at = 0;
    for (start, end) in spans {
        if start >= at {
            out.extend_from_slice(&stanza.raw[at..start]);
            at = end;
        }
    }
    out.extend_from_slice(&stanza.raw[at..]);
    out
}

/// The database text: every stanza ends with a line end and a blank line, as apk writes.
pub(super) fn join(stanzas: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for raw in stanzas {
        out.extend_from_slice(raw);
        if !raw.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}
