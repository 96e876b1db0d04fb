//! Ubuntu's CVE OVAL XML, read as a stream (the real files are tens of MiB).

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::scan::plan::Severity;

type Releases = HashMap<String, HashMap<String, Option<Severity>>>;

/// One `<definition>` being read.
#[derive(Default)]
struct Definition {
    codename: Option<String>,
    cves: Vec<String>,
    severity: Option<String>,
}

pub(super) fn read(bytes: &[u8], into: &mut Releases) -> Result<(), String> {
    let mut reader = Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut current: Option<Definition> = None;
    let mut in_severity = false;
    let mut definitions = 0usize;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not valid XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) | Event::Empty(e) if local(&e) == b"definition" => {
                current = Some(Definition {
                    codename: attribute(&e, b"id").as_deref().and_then(codename_of),
                    ..Definition::default()
                });
            }
            Event::Start(e) | Event::Empty(e) if local(&e) == b"reference" => {
                if let Some(definition) = current.as_mut() {
                    if attribute(&e, b"source").as_deref() == Some("CVE") {
                        if let Some(id) = attribute(&e, b"ref_id") {
                            definition.cves.push(id);
                        }
                    }
                }
            }
            Event::Start(e) if local(&e) == b"severity" => in_severity = true,
            Event::Text(text) if in_severity => {
                if let Some(definition) = current.as_mut() {
                    let text = text.unescape().map_err(|e| e.to_string())?;
                    definition.severity = Some(text.trim().to_owned());
                }
            }
            Event::End(e) if e.local_name().as_ref() == b"severity" => in_severity = false,
            Event::End(e) if e.local_name().as_ref() == b"definition" => {
                if let Some(definition) = current.take() {
                    definitions += 1;
                    let (Some(codename), Some(severity)) =
                        (definition.codename, definition.severity)
                    else {
                        continue;
                    };
                    let severity = super::ubuntu_priority(&severity);
                    let release = into.entry(codename).or_default();
                    for cve in definition.cves {
                        release.insert(cve, severity);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if definitions == 0 {
        return Err("no OVAL <definition> in it".into());
    }
    Ok(())
}

fn local<'a>(e: &'a BytesStart<'a>) -> &'a [u8] {
    e.local_name().into_inner()
}

fn attribute(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// `jammy` from `oval:com.ubuntu.jammy:def:202233330000000`.
fn codename_of(id: &str) -> Option<String> {
    let rest = id.strip_prefix("oval:com.ubuntu.")?;
    let codename = rest.split(':').next()?;
    (!codename.is_empty()).then(|| codename.to_owned())
}
