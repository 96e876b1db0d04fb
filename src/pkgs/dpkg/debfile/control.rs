//! `control.tar`: a flat directory of small files (`control`, `md5sums`, maintainer
//! scripts, ...), held in memory.

use std::collections::BTreeMap;
use std::io::Read;

use super::data::normalize;
use super::{ControlMember, DebError, DebLimits};
use crate::pkgs::archive::shown;

/// Splits the decompressed control archive into `control` and the other members.
pub(super) fn parse(
    tar_bytes: &[u8],
    member: &str,
    limits: &DebLimits,
) -> Result<(Vec<u8>, BTreeMap<String, ControlMember>), DebError> {
    let corrupt = |reason: String| DebError::Corrupt {
        member: member.to_owned(),
        reason,
    };
    super::metascan::check_metadata_sizes(tar_bytes, member)?;
    let mut archive = tar::Archive::new(tar_bytes);
    let mut members = BTreeMap::new();
    let mut control = None;
    let mut count = 0u64;
    let mut end = 0u64;
    for entry in archive.entries().map_err(|e| corrupt(e.to_string()))? {
        let mut entry = entry.map_err(|e| corrupt(format!("reading the archive: {e}")))?;
        count += 1;
        if count > limits.max_entries {
            return Err(DebError::TooManyEntries {
                member: member.to_owned(),
                limit: limits.max_entries,
            });
        }
        end = super::data::entry_end(&entry, member)?;
        let raw = entry.path_bytes().into_owned();
        let hostile = |reason: &str| DebError::Hostile {
            path: shown(&raw),
            reason: format!("in {member}: {reason}"),
        };
        let path = std::str::from_utf8(&raw).map_err(|_| DebError::NotUtf8 {
            member: member.to_owned(),
            path: shown(&raw),
        })?;
        let name = normalize(path).map_err(hostile)?;
        let entry_type = entry.header().entry_type();
        if name.is_empty() && entry_type.is_dir() {
            continue;
        }
        if !(entry_type.is_file() || entry_type == tar::EntryType::Continuous) {
            return Err(hostile("only regular files belong in the control archive"));
        }
        if name.contains('/') {
            return Err(hostile("control files must be at the top level"));
        }
        if name == "control" && control.is_some() || members.contains_key(&name) {
            return Err(hostile("duplicate path"));
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| corrupt(format!("{path:?}: {e}")))?
            & 0o7777;
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| corrupt(format!("{path:?}: {e}")))?;
        if name == "control" {
            control = Some(data);
        } else {
            members.insert(name, ControlMember { data, mode });
        }
    }
    super::data::check_end_marker(tar_bytes, end, member)?;
    let control = control.ok_or_else(|| DebError::MissingControl {
        member: member.to_owned(),
    })?;
    Ok((control, members))
}
