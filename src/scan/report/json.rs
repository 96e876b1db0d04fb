//! Reading report JSON field by field, so that every error names the JSON path at fault
//! (`Results[2].Vulnerabilities[0].PkgName`) instead of serde's line and column, which mean
//! little to someone holding a 40 MB report.

use serde_json::{Map, Value};

use super::{ReportError, MAX_REPORT_BYTES};

/// Checks the size and parses the whole document. serde_json's recursion limit (128) bounds
/// nesting, and the size check bounds everything else.
pub(super) fn parse_document(bytes: &[u8]) -> Result<Value, ReportError> {
    if bytes.len() > MAX_REPORT_BYTES {
        return Err(ReportError::TooLarge {
            size: bytes.len(),
            limit: MAX_REPORT_BYTES,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ReportError::Empty);
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Eof => ReportError::Truncated {
            line: e.line(),
            column: e.column(),
        },
        _ => ReportError::NotJson {
            detail: e.to_string(),
        },
    })
}

/// An object and its path, with typed field accessors. A field that is `null` counts as
/// absent: Go encoders write `null` for empty slices, and Trivy and copa are Go programs.
pub(super) struct Object<'a> {
    fields: &'a Map<String, Value>,
    path: String,
}

/// The top level of the document, which must be an object.
pub(super) fn root_object(value: &Value) -> Result<Object<'_>, ReportError> {
    match value {
        Value::Object(fields) => Ok(Object {
            fields,
            path: String::new(),
        }),
        other => Err(wrong_type("", "an object", other)),
    }
}

impl<'a> Object<'a> {
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str) -> ReportError {
        ReportError::MissingField {
            path: self.child_path(key),
        }
    }

    /// True when the field is present and not `null`.
    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ReportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(&self.child_path(key), "a string", other)),
        }
    }

    pub(super) fn req_str(&self, key: &str) -> Result<&'a str, ReportError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// A string that must also not be empty.
    pub(super) fn req_nonempty_str(&self, key: &str) -> Result<&'a str, ReportError> {
        let value = self.req_str(key)?;
        if value.trim().is_empty() {
            return Err(ReportError::InvalidValue {
                path: self.child_path(key),
                value: value.to_owned(),
                reason: "must not be empty".to_owned(),
            });
        }
        Ok(value)
    }

    /// The raw value of a field, for fields whose type decides what they mean.
    pub(super) fn req_value(&self, key: &str) -> Result<(&'a Value, String), ReportError> {
        let value = self.get(key).ok_or_else(|| self.missing(key))?;
        Ok((value, self.child_path(key)))
    }

    pub(super) fn opt_object(&self, key: &str) -> Result<Option<Object<'a>>, ReportError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(fields)) => Ok(Some(Object {
                fields,
                path: self.child_path(key),
            })),
            Some(other) => Err(wrong_type(&self.child_path(key), "an object", other)),
        }
    }

    pub(super) fn req_object(&self, key: &str) -> Result<Object<'a>, ReportError> {
        self.opt_object(key)?.ok_or_else(|| self.missing(key))
    }

    /// The elements of an array field as objects; an absent field is an empty array.
    pub(super) fn opt_object_array(&self, key: &str) -> Result<Vec<Object<'a>>, ReportError> {
        let path = self.child_path(key);
        let items = match self.get(key) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong_type(&path, "an array", other)),
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let item_path = format!("{path}[{index}]");
                match item {
                    Value::Object(fields) => Ok(Object {
                        fields,
                        path: item_path,
                    }),
                    other => Err(wrong_type(&item_path, "an object", other)),
                }
            })
            .collect()
    }
}

pub(super) fn wrong_type(path: &str, expected: &'static str, found: &Value) -> ReportError {
    ReportError::WrongType {
        path: if path.is_empty() {
            "(top level)".to_owned()
        } else {
            path.to_owned()
        },
        expected,
        found: type_name(found),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
