//! Every problem of a configuration at once. serde stops at the first wrong key, so the
//! file is extracted again with each offending key taken out until the rest extracts;
//! then the rest is validated. Each problem is located: `FILE:LINE: `key`: message` for
//! the file (the line from the file's own spans), `PATCHPULL_X__Y: ...` for the
//! environment. figment's own wording (profile names such as `default.`, Rust type names)
//! is never shown.

use std::collections::BTreeMap;

use figment::error::{Actual, Kind};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

use super::raw::RawConfig;
use super::Config;

/// Where the TOML text came from, as problems name it.
pub(super) struct Source<'a> {
    pub label: String,
    pub text: &'a str,
    /// Merge the `PATCHPULL_*` environment over the text.
    pub environment: bool,
}

/// One problem: its line in the file (`None`: not in the file), the key, the complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    line: Option<usize>,
    env_var: Option<String>,
    key: String,
    message: String,
}

/// Loads `source` over the defaults: the checked config, or every problem, each a line.
pub(super) fn load(source: &Source<'_>) -> Result<Config, Vec<String>> {
    let spans = match toml_edit::ImDocument::parse(source.text) {
        Ok(doc) => doc,
        Err(e) => return Err(vec![syntax_problem(source, &e)]),
    };
    let mut doc: toml_edit::DocumentMut = match source.text.parse() {
        Ok(doc) => doc,
        Err(e) => return Err(vec![syntax_problem(source, &e)]),
    };
    let mut problems = Vec::new();
    let mut ignored_env: Vec<String> = vec!["scripts_extra_env".into(), "signing_password".into()];
    // Array elements taken out (a missing field cannot be taken out alone), per array,
    // so later indexes still name the file's elements.
    let mut removed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    // Each round takes out at least one key, so the file's size bounds the rounds.
    let max_rounds = source.text.len() + 8;
    for _ in 0..max_rounds {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(&doc.to_string()));
        if source.environment {
            // `PATCHPULL_SCRIPTS_EXTRA_ENV` is no configuration key: the native engine
            // reads it for the tests (`patch::native::scripts::EXTRA_ENV`).
            let ignore: Vec<&str> = ignored_env.iter().map(String::as_str).collect();
            figment = figment.merge(Env::prefixed("PATCHPULL_").ignore(&ignore).split("__"));
        }
        let error = match figment.extract::<RawConfig>() {
            Ok(raw) => {
                let checked = raw.validate();
                return match checked {
                    Ok(config) if problems.is_empty() => Ok(config),
                    Ok(_) => Err(render(source, problems)),
                    Err(invalid) => {
                        problems.extend(
                            invalid
                                .iter()
                                .map(|p| validation_problem(&spans, p, &removed)),
                        );
                        Err(render(source, problems))
                    }
                };
            }
            Err(e) => e,
        };
        let mut progressed = false;
        for e in error {
            let from_env = e
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            let path = original_path(&e.path, &removed);
            let (mut key_path, message) = describe(&e.kind, &path);
            if from_env {
                let var = key_path.join("__");
                problems.push(Problem {
                    line: None,
                    env_var: Some(format!("PATCHPULL_{}", var.to_uppercase())),
                    key: dotted(&key_path),
                    message: secret_safe(&key_path, message),
                });
                if !ignored_env.contains(&var) {
                    ignored_env.push(var);
                    progressed = true;
                }
                continue;
            }
            let missing = matches!(e.kind, Kind::MissingField(_));
            if missing {
                // The element that lacks the field goes; its line is its header's.
                key_path = path.clone();
            }
            problems.push(Problem {
                line: line_of(&spans, &key_path),
                env_var: None,
                key: dotted(&key_path),
                message: secret_safe(&key_path, message),
            });
            // figment's path (its indexes, which removals shift) names the offending key,
            // or for a missing field the element that lacks it.
            let current = &e.path;
            if remove(doc.as_table_mut(), current) {
                progressed = true;
                if let Some((index, array)) = array_element(current, &key_path) {
                    removed.entry(array).or_default().push(index);
                }
            }
        }
        if !progressed {
            break;
        }
    }
    Err(render(source, problems))
}

fn syntax_problem(source: &Source<'_>, e: &toml_edit::TomlError) -> String {
    let line = e
        .span()
        .map(|s| line_at(source.text, s.start))
        .map(|l| format!(":{l}"))
        .unwrap_or_default();
    // The error's own text quotes the source line, which may hold a password.
    let message = e.message().trim().replace('\n', " ");
    format!("{}{line}: not valid TOML: {message}", source.label)
}

/// figment's path with array indexes turned back into the file's own.
fn original_path(path: &[String], removed: &BTreeMap<String, Vec<usize>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(path.len());
    for segment in path {
        let array = out.join(".");
        match (segment.parse::<usize>(), removed.get(&array)) {
            (Ok(mut index), Some(gone)) => {
                let mut gone = gone.clone();
                gone.sort_unstable();
                for g in gone {
                    if g <= index {
                        index += 1;
                    }
                }
                out.push(index.to_string());
            }
            _ => out.push(segment.clone()),
        }
    }
    out
}

/// When `current` (figment's, shifted) names a whole array element, its original index
/// (from `original`) and the array's path.
fn array_element(current: &[String], original: &[String]) -> Option<(usize, String)> {
    current.last()?.parse::<usize>().ok()?;
    let index = original.last()?.parse::<usize>().ok()?;
    Some((index, original[..original.len() - 1].join(".")))
}

/// The key the problem is about and the complaint, in the file's words.
fn describe(kind: &Kind, path: &[String]) -> (Vec<String>, String) {
    let mut key = path.to_vec();
    let message = match kind {
        Kind::UnknownField(field, expected) => {
            // figment's path ends with the unknown key already.
            if key.last() != Some(field) {
                key.push(field.clone());
            }
            format!("unknown key; the keys here are {}", expected.join(", "))
        }
        Kind::MissingField(field) => format!("`{field}` is required here"),
        Kind::InvalidType(actual, expected) => {
            format!(
                "expected {}, found {}",
                expected_words(expected),
                actual_words(actual)
            )
        }
        Kind::InvalidValue(actual, expected) => {
            format!(
                "expected {}, found {}",
                expected_words(expected),
                actual_words(actual)
            )
        }
        Kind::InvalidLength(length, expected) => {
            format!(
                "expected {}, found {length} elements",
                expected_words(expected)
            )
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value {found:?}; expected one of {}",
                expected.join(", ")
            )
        }
        Kind::DuplicateField(field) => format!("`{field}` is set twice"),
        Kind::ISizeOutOfRange(v) => format!("{v} is out of range"),
        Kind::USizeOutOfRange(v) => format!("{v} is out of range"),
        Kind::Unsupported(actual) => format!("{} is not supported here", actual_words(actual)),
        Kind::UnsupportedKey(actual, _) => format!("{} cannot be a key", actual_words(actual)),
        Kind::Message(message) => message.clone(),
    };
    (key, message)
}

/// serde's expectations in TOML's words: no Rust type names.
fn expected_words(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)".into(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "a whole number".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.to_owned(),
    }
}

fn actual_words(actual: &Actual) -> String {
    match actual {
        Actual::Seq => "an array".into(),
        Actual::Map => "a table".into(),
        Actual::Bool(b) => format!("{b}"),
        other => other.to_string(),
    }
}

/// A value under a secret key is never repeated back, not even a wrong one.
fn secret_safe(key: &[String], message: String) -> String {
    if key.iter().any(|k| k == "password") {
        "expected a string".into()
    } else {
        message
    }
}

/// `upstream[0].url` from `["upstream", "0", "url"]`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// `["upstream", "0", "url"]` from `upstream[0].url` (validation problems' spelling).
fn undotted(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(rest[..open].to_owned());
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                out.push(rest[1..close].to_owned());
                rest = &rest[close + 1..];
            }
        } else {
            out.push(rest.to_owned());
        }
    }
    out
}

/// A place in the parsed file while walking a key's path.
enum Node<'a> {
    Table(&'a toml_edit::Table),
    Tables(&'a toml_edit::ArrayOfTables),
    Value(&'a toml_edit::Value),
}

impl<'a> Node<'a> {
    fn of(item: &'a toml_edit::Item) -> Option<Node<'a>> {
        match item {
            toml_edit::Item::Table(t) => Some(Node::Table(t)),
            toml_edit::Item::ArrayOfTables(a) => Some(Node::Tables(a)),
            toml_edit::Item::Value(v) => Some(Node::Value(v)),
            toml_edit::Item::None => None,
        }
    }

    /// The child named `segment` and the span that best marks it (its key's).
    fn child(&self, segment: &str) -> Option<(Option<std::ops::Range<usize>>, Node<'a>)> {
        let index = segment.parse::<usize>().ok();
        match self {
            Node::Table(table) => {
                let (key, item) = table.get_key_value(segment)?;
                Some((key.span().or_else(|| item.span()), Node::of(item)?))
            }
            Node::Tables(array) => {
                let table = array.get(index?)?;
                Some((table.span(), Node::Table(table)))
            }
            Node::Value(toml_edit::Value::InlineTable(table)) => {
                let (key, value) = table.get_key_value(segment)?;
                Some((key.span().or_else(|| value.span()), Node::of(value)?))
            }
            Node::Value(toml_edit::Value::Array(array)) => {
                let value = array.get(index?)?;
                Some((value.span(), Node::Value(value)))
            }
            Node::Value(_) => None,
        }
    }
}

/// The line (1-based) of the deepest part of `path` the file has.
fn line_of(doc: &toml_edit::ImDocument<&str>, path: &[String]) -> Option<usize> {
    let mut node = Node::Table(doc.as_table());
    let mut span = None;
    for segment in path {
        let Some((found, next)) = node.child(segment) else {
            break;
        };
        span = found.or(span);
        node = next;
    }
    span.map(|s| line_at(doc.raw(), s.start))
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Takes the key at `path` out of the document; false when there is none.
fn remove(table: &mut toml_edit::Table, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return table.remove(first).is_some();
    }
    match table.get_mut(first) {
        Some(toml_edit::Item::Table(inner)) => remove(inner, rest),
        Some(toml_edit::Item::ArrayOfTables(array)) => {
            let Ok(index) = rest[0].parse::<usize>() else {
                return false;
            };
            if rest.len() == 1 {
                if index < array.len() {
                    array.remove(index);
                    return true;
                }
                return false;
            }
            match array.get_mut(index) {
                Some(element) => remove(element, &rest[1..]),
                None => false,
            }
        }
        Some(toml_edit::Item::Value(value)) => remove_value(value, rest),
        _ => false,
    }
}

fn remove_value(value: &mut toml_edit::Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match value {
        toml_edit::Value::InlineTable(t) if rest.is_empty() => t.remove(first).is_some(),
        toml_edit::Value::InlineTable(t) => t.get_mut(first).is_some_and(|v| remove_value(v, rest)),
        toml_edit::Value::Array(a) => match first.parse::<usize>() {
            Ok(i) if rest.is_empty() && i < a.len() => {
                a.remove(i);
                true
            }
            Ok(i) => a.get_mut(i).is_some_and(|v| remove_value(v, rest)),
            Err(_) => false,
        },
        _ => false,
    }
}

/// A validation problem (`` `key`: message ``) located by its key, whose indexes are
/// turned back into the file's own.
fn validation_problem(
    doc: &toml_edit::ImDocument<&str>,
    problem: &str,
    removed: &BTreeMap<String, Vec<usize>>,
) -> Problem {
    let key = problem
        .strip_prefix('`')
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
                .collect::<String>()
        })
        .unwrap_or_default();
    if key.is_empty() {
        return Problem {
            line: None,
            env_var: None,
            key: String::new(),
            message: problem.to_owned(),
        };
    }
    let path = original_path(&undotted(&key), removed);
    let message = format!("`{}{}", dotted(&path), &problem[1 + key.len()..]);
    Problem {
        line: line_of(doc, &path),
        env_var: None,
        key: String::new(),
        message,
    }
}

/// One line per problem, in the file's order, then the environment's.
fn render(source: &Source<'_>, mut problems: Vec<Problem>) -> Vec<String> {
    problems.sort_by_key(|p| (p.env_var.is_some(), p.line.unwrap_or(usize::MAX)));
    problems.dedup();
    problems
        .into_iter()
        .map(|p| {
            let place = match (&p.env_var, p.line) {
                (Some(var), _) => var.clone(),
                (None, Some(line)) => format!("{}:{line}", source.label),
                (None, None) => source.label.clone(),
            };
            if p.key.is_empty() {
                format!("{place}: {}", p.message)
            } else {
                format!("{place}: `{}`: {}", p.key, p.message)
            }
        })
        .collect()
}
