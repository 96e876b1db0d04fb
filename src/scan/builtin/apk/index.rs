//! `APKINDEX`: blank-line separated records of `X:value` lines, the syntax of apk's
//! installed database. Read here: `P:` name, `V:` version, `A:` architecture, `C:`
//! checksum (`Q1` + base64 of the SHA-1 of the package's control member, the package's
//! identity), `S:` size, `o:` origin (the source package, which the secdb is keyed by).

use std::collections::HashMap;

use crate::pkgs::apk::db::records;

/// One package of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkIndexEntry {
    pub name: String,
    pub version: String,
    pub architecture: Option<String>,
    /// `C:`, e.g. `Q1abc...=`: what the downloaded package's control member must hash to.
    pub checksum: Option<String>,
    /// `S:`, the `.apk`'s size in bytes.
    pub size: Option<u64>,
    /// `o:`; the package itself when absent.
    pub origin: Option<String>,
}

impl ApkIndexEntry {
    /// The source package: `o:`, or the name.
    pub fn origin(&self) -> &str {
        self.origin.as_deref().unwrap_or(&self.name)
    }
}

/// A parsed index, looked up by package name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApkIndex {
    by_name: HashMap<String, Vec<ApkIndexEntry>>,
    len: usize,
}

impl ApkIndex {
    /// Parses an `APKINDEX`.
    ///
    /// # Errors
    /// The line and reason of a line that is not `X:value`, a record without `P:` or `V:`,
    /// a field read here that is empty, repeated or not UTF-8, or an `S:` that is not a
    /// number.
    pub fn parse(text: &[u8]) -> Result<ApkIndex, String> {
        let records =
            records(text).map_err(|e| format!("APKINDEX line {}: {}", e.line, e.reason))?;
        let mut index = ApkIndex::default();
        for record in &records {
            let field = |letter: u8| -> Result<Option<&str>, String> {
                let mut found = record.fields.iter().filter(|(l, _, _)| *l == letter);
                let Some(&(_, value, line)) = found.next() else {
                    return Ok(None);
                };
                let name = char::from(letter);
                if found.next().is_some() {
                    return Err(format!("APKINDEX line {line}: {name}: given twice"));
                }
                match std::str::from_utf8(value) {
                    Ok("") => Err(format!("APKINDEX line {line}: {name}: is empty")),
                    Ok(text) => Ok(Some(text)),
                    Err(_) => Err(format!("APKINDEX line {line}: {name}: is not UTF-8")),
                }
            };
            let missing =
                |what: &str| format!("APKINDEX record at line {} has no {what}", record.line);
            let name = field(b'P')?.ok_or_else(|| missing("P: (name)"))?;
            let version = field(b'V')?.ok_or_else(|| missing("V: (version)"))?;
            let size = field(b'S')?
                .map(|s| {
                    s.parse::<u64>().map_err(|_| {
                        format!(
                            "APKINDEX record at line {}: S: {s:?} is not a size",
                            record.line
                        )
                    })
                })
                .transpose()?;
            let entry = ApkIndexEntry {
                name: name.to_owned(),
                version: version.to_owned(),
                architecture: field(b'A')?.map(str::to_owned),
                checksum: field(b'C')?.map(str::to_owned),
                size,
                origin: field(b'o')?.map(str::to_owned),
            };
            index
                .by_name
                .entry(entry.name.clone())
                .or_default()
                .push(entry);
            index.len += 1;
        }
        Ok(index)
    }

    /// The entries named `name` (several when the index lists several versions).
    pub fn lookup(&self, name: &str) -> &[ApkIndexEntry] {
        self.by_name
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// How many records the index has.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
