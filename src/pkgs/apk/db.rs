//! apk's database of installed packages, `/lib/apk/db/installed` (Alpine, Wolfi).
//!
//! Records are separated by blank lines; each line is one letter, a colon and a value
//! (`P:` name, `V:` version, `A:` architecture, `o:` origin, i.e. the source package,
//! and many more that are skipped here: files `F:`/`R:`, checksums `C:`/`Z:`, ...).
//! The same syntax is used by `APKINDEX`. Versions are kept verbatim, not validated: the
//! database is the truth about what is installed.

use crate::pkgs::error::LineError;
use crate::pkgs::{InstalledPackage, InventoryError};

/// apk's installed-package database.
pub const INSTALLED_PATH: &str = "/lib/apk/db/installed";

/// Reads an installed-package database. `path` only names the file in errors.
///
/// Errors with [`InventoryError::Malformed`] (path and line) on a line that is not
/// `X:value`, on a record without `P:` or `V:`, on one of the fields read here being
/// empty, given twice, or not UTF-8.
pub fn parse_installed(path: &str, data: &[u8]) -> Result<Vec<InstalledPackage>, InventoryError> {
    let records = records(data).map_err(|e| e.in_file(path))?;
    records
        .iter()
        .map(|record| package_from(record).map_err(|e| e.in_file(path)))
        .collect()
}

/// One record: `(letter, value, line)` in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// 1-based line of the record's first field.
    pub line: usize,
    pub fields: Vec<(u8, &'a [u8], usize)>,
}

impl<'a> Record<'a> {
    /// The single field `letter` as UTF-8 text: `None` when absent, an error when empty,
    /// repeated or not UTF-8.
    pub fn text(&self, letter: u8) -> Result<Option<&'a str>, LineError> {
        let mut found = self.fields.iter().filter(|(l, _, _)| *l == letter);
        let Some(&(_, value, line)) = found.next() else {
            return Ok(None);
        };
        let name = char::from(letter);
        if let Some(&(_, _, again)) = found.next() {
            return Err(LineError::new(
                again,
                format!("field {name}: given twice in one record"),
            ));
        }
        let text = std::str::from_utf8(value)
            .map_err(|_| LineError::new(line, format!("field {name}: is not valid UTF-8")))?;
        if text.is_empty() {
            return Err(LineError::new(line, format!("field {name}: is empty")));
        }
        Ok(Some(text))
    }
}

/// Splits `data` into records. Errors on a line that is neither blank nor `X:value` with
/// `X` an ASCII letter or digit.
pub(crate) fn records(data: &[u8]) -> Result<Vec<Record<'_>>, LineError> {
    let mut records = Vec::new();
    let mut current: Option<Record<'_>> = None;
    for (index, line) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            records.extend(current.take());
            continue;
        }
        match line {
            [letter, b':', value @ ..] if letter.is_ascii_alphanumeric() => {
                current
                    .get_or_insert_with(|| Record {
                        line: line_no,
                        fields: Vec::new(),
                    })
                    .fields
                    .push((*letter, value, line_no));
            }
            _ => return Err(LineError::new(line_no, "expected `X:value`")),
        }
    }
    records.extend(current);
    Ok(records)
}

fn package_from(record: &Record<'_>) -> Result<InstalledPackage, LineError> {
    let name = record
        .text(b'P')?
        .ok_or_else(|| LineError::new(record.line, "record has no P: (package name)"))?;
    let version = record.text(b'V')?.ok_or_else(|| {
        LineError::new(record.line, format!("package {name} has no V: (version)"))
    })?;
    // apk writes `o:` for every package built from an APKBUILD; without it the package
    // is its own origin.
    let origin = record.text(b'o')?.unwrap_or(name);
    Ok(InstalledPackage {
        name: name.to_owned(),
        version: version.to_owned(),
        architecture: record.text(b'A')?.map(str::to_owned),
        source_name: Some(origin.to_owned()),
        source_version: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALLED: &[u8] = include_bytes!("../testdata/apk/installed");

    fn pkg(name: &str, version: &str, origin: &str) -> InstalledPackage {
        InstalledPackage {
            name: name.into(),
            version: version.into(),
            architecture: Some("x86_64".into()),
            source_name: Some(origin.into()),
            source_version: None,
        }
    }

    #[test]
    fn alpine_installed_database() {
        let packages = parse_installed(INSTALLED_PATH, INSTALLED).unwrap();
        assert_eq!(
            packages,
            [
                pkg("alpine-baselayout-data", "3.6.5-r0", "alpine-baselayout"),
                pkg("musl", "1.2.5-r0", "musl"),
                pkg("busybox", "1.36.1-r29", "busybox"),
                pkg("libcrypto3", "3.3.2-r0", "openssl"),
                pkg("libssl3", "3.3.2-r0", "openssl"),
                pkg("ca-certificates-bundle", "20240705-r0", "ca-certificates"),
                pkg("zlib", "1.3.1-r1", "zlib"),
                pkg("apk-tools", "2.14.4-r0", "apk-tools"),
                pkg("scanelf", "1.3.7-r2", "pax-utils"),
                pkg("libc-utils", "0.7.2-r5", "libc-dev"),
            ]
        );
    }

    #[test]
    fn every_version_in_the_fixture_is_valid() {
        for p in parse_installed(INSTALLED_PATH, INSTALLED).unwrap() {
            crate::pkgs::apk::version::validate(&p.version).unwrap();
        }
    }

    #[test]
    fn empty_database_and_crlf() {
        assert!(parse_installed("i", b"").unwrap().is_empty());
        assert!(parse_installed("i", b"\n\n").unwrap().is_empty());
        let packages = parse_installed("i", b"P:a\r\nV:1.0-r0\r\n\r\nP:b\r\nV:2\r\n").unwrap();
        assert_eq!(packages.len(), 2);
        assert_eq!(packages[1].version, "2");
        assert_eq!(packages[1].source_name.as_deref(), Some("b"));
        assert_eq!(packages[1].architecture, None);
    }

    #[test]
    fn malformed_databases_name_the_line() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"P:a\nV:1\nbad line\n", 3, "expected `X:value`"),
            (b"P:a\nV:1\n:x\n", 3, "expected `X:value`"),
            (b"P:a\nV:1\n\xff:x\n", 3, "expected `X:value`"),
            (b"P:a\nV:1\nX\n", 3, "expected `X:value`"),
            (b"V:1\nA:x86_64\n", 1, "record has no P: (package name)"),
            (b"P:a\nA:x86_64\n", 1, "package a has no V: (version)"),
            (b"P:a\nV:\n", 2, "field V: is empty"),
            (b"P:a\nV:1\nP:b\n", 3, "field P: given twice in one record"),
            (b"P:a\nV:1\xff\n", 2, "field V: is not valid UTF-8"),
            (b"\n\nP:a\nV:1\n\nP:b\n", 6, "package b has no V: (version)"),
        ];
        for (data, line, reason) in cases {
            match parse_installed("/lib/apk/db/installed", data).unwrap_err() {
                InventoryError::Malformed {
                    path,
                    line: l,
                    reason: r,
                } => {
                    assert_eq!(path, "/lib/apk/db/installed");
                    assert_eq!((l, r.as_str()), (*line, *reason), "{data:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut data = INSTALLED.to_vec();
        for cut in (0..data.len()).step_by(31) {
            let _ = parse_installed("i", &data[..cut]);
        }
        for i in (0..data.len()).step_by(41) {
            data[i] = data[i].wrapping_add(0x21);
            let _ = parse_installed("i", &data);
        }
    }
}
