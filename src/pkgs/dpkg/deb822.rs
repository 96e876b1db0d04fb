//! deb822 paragraphs (`deb822(5)`): the syntax of dpkg's status file, of the control files
//! that distroless images keep in `status.d`, and of apt's `Packages` indexes.
//!
//! Works on bytes: only the fields a caller asks for as text must be UTF-8, because old
//! status files carry Latin-1 in `Maintainer` and `Description` and must still parse.

use crate::pkgs::error::LineError;

/// One paragraph: the fields between blank lines, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paragraph<'a> {
    /// 1-based line of the paragraph's first field.
    pub line: usize,
    pub fields: Vec<Field<'a>>,
}

/// One `Name: value` field, with its continuation lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub name: &'a str,
    /// 1-based line of the field's name.
    pub line: usize,
    /// Everything after the colon through the last continuation line, untrimmed.
    pub raw: &'a [u8],
}

impl<'a> Paragraph<'a> {
    /// The field called `name`, compared case-insensitively as `deb822(5)` says.
    pub fn get(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

impl<'a> Field<'a> {
    /// The value as a single trimmed line of UTF-8 text. Errors on a folded (multi-line)
    /// value or invalid UTF-8, naming the field.
    pub fn single_line(&self) -> Result<&'a str, LineError> {
        let text = std::str::from_utf8(self.raw).map_err(|_| {
            LineError::new(self.line, format!("field {} is not valid UTF-8", self.name))
        })?;
        if text.contains('\n') {
            return Err(LineError::new(
                self.line,
                format!("field {} spans several lines", self.name),
            ));
        }
        Ok(text.trim())
    }
}

/// Splits `data` into paragraphs. Errors on a line that is neither a field, a continuation
/// line, nor blank; on a continuation line with no field to continue; on a field name
/// that `deb822(5)` forbids; and on a field given twice in one paragraph.
pub(crate) fn parse(data: &[u8]) -> Result<Vec<Paragraph<'_>>, LineError> {
    let mut paragraphs = Vec::new();
    let mut current: Option<Paragraph<'_>> = None;
    let mut pos = 0;
    let mut line_no = 0;
    // Where the value of the last field started, for extending it by continuation lines.
    let mut value_start = 0;

    while pos < data.len() {
        line_no += 1;
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| pos + i);
        let line_end = if end > pos && data[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        let line = &data[pos..line_end];

        if line.iter().all(|&b| b == b' ' || b == b'\t') {
            paragraphs.extend(current.take());
        } else if line[0] == b' ' || line[0] == b'\t' {
            let field = current
                .as_mut()
                .and_then(|p| p.fields.last_mut())
                .ok_or_else(|| LineError::new(line_no, "continuation line outside a field"))?;
            field.raw = &data[value_start..line_end];
        } else {
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| LineError::new(line_no, "expected `Field: value`"))?;
            let name = field_name(&line[..colon])
                .ok_or_else(|| LineError::new(line_no, "invalid field name"))?;
            let paragraph = current.get_or_insert_with(|| Paragraph {
                line: line_no,
                fields: Vec::new(),
            });
            if paragraph.get(name).is_some() {
                return Err(LineError::new(
                    line_no,
                    format!("field {name} given twice in one paragraph"),
                ));
            }
            value_start = pos + colon + 1;
            paragraph.fields.push(Field {
                name,
                line: line_no,
                raw: &data[value_start..line_end],
            });
        }
        pos = end + 1;
    }
    paragraphs.extend(current);
    Ok(paragraphs)
}

/// `deb822(5)`: printable US-ASCII except space and colon, not starting with `#` or `-`.
fn field_name(bytes: &[u8]) -> Option<&str> {
    let ok = !bytes.is_empty()
        && bytes[0] != b'#'
        && bytes[0] != b'-'
        && bytes.iter().all(|&b| b.is_ascii_graphic() && b != b':');
    if ok {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_fields_and_continuations() {
        let data = b"Package: a\nDescription: short\n long\n .\n more\nVersion: 1\n\n\n \t\nPackage: b\r\nVersion: 2\r\n";
        let ps = parse(data).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].line, 1);
        assert_eq!(ps[0].fields.len(), 3);
        assert_eq!(
            ps[0].get("description").unwrap().raw,
            b" short\n long\n .\n more"
        );
        assert!(ps[0].get("Description").unwrap().single_line().is_err());
        assert_eq!(ps[0].get("VERSION").unwrap().single_line().unwrap(), "1");
        assert_eq!(ps[1].line, 10);
        assert_eq!(ps[1].get("Package").unwrap().single_line().unwrap(), "b");
        assert_eq!(ps[1].get("Version").unwrap().line, 11);
    }

    #[test]
    fn empty_input_has_no_paragraphs() {
        assert!(parse(b"").unwrap().is_empty());
        assert!(parse(b"\n\n  \n").unwrap().is_empty());
    }

    #[test]
    fn latin1_in_other_fields_is_fine() {
        let data = b"Package: a\nMaintainer: Ren\xe9\nVersion: 1\n";
        let ps = parse(data).unwrap();
        assert_eq!(ps[0].get("Version").unwrap().single_line().unwrap(), "1");
        let err = ps[0].get("Maintainer").unwrap().single_line().unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let cases: &[(&[u8], usize, &str)] = &[
            (
                b" leading continuation\n",
                1,
                "continuation line outside a field",
            ),
            (b"Package: a\nno colon here\n", 2, "expected `Field: value`"),
            (b"Package: a\n: empty name\n", 2, "invalid field name"),
            (b"Package: a\n#comment: x\n", 2, "invalid field name"),
            (b"Package: a\n-Name: x\n", 2, "invalid field name"),
            (b"Package: a\nBad Name: x\n", 2, "invalid field name"),
            (
                b"Package: a\nVersion: 1\npackage: b\n",
                3,
                "field package given twice in one paragraph",
            ),
            (b"\n\n\xff\xfe\n", 3, "expected `Field: value`"),
        ];
        for (data, line, reason) in cases {
            let err = parse(data).unwrap_err();
            assert_eq!(
                (err.line, err.reason.as_str()),
                (*line, *reason),
                "{data:?}"
            );
        }
    }
}
