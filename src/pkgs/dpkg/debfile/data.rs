//! Walking the decompressed `data.tar`: every entry is read, normalized and checked
//! against the tree built so far, and each regular file's byte range is recorded.

use crate::pkgs::archive::{
    climbs_above_root, normal_components, pax_time, shown, tar_type_name as type_name,
};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tar::EntryType;

use super::reader::{DataReader, SeekBuf};
use super::{DataEntry, DataKind, DebError, DebLimits, READ_BUFFER};

/// The validated entries; `index` maps a path to its position in `entries` and `offsets`
/// holds each regular file's offset in the data tar (0 for other kinds).
pub(super) struct Walked {
    pub entries: Vec<DataEntry>,
    pub index: HashMap<String, usize>,
    pub offsets: Vec<u64>,
}

pub(super) fn walk(
    file: &Arc<File>,
    len: u64,
    member: &str,
    limits: &DebLimits,
) -> Result<Walked, DebError> {
    let corrupt = |reason: String| DebError::Corrupt {
        member: member.to_owned(),
        reason,
    };
    super::metascan::check_metadata_sizes(&FileBlocks(file, len), member)?;
    let reader = SeekBuf::new(READ_BUFFER, DataReader::new(Arc::clone(file), 0, len));
    let mut archive = tar::Archive::new(reader);
    let mut walked = Walked {
        entries: Vec::new(),
        index: HashMap::new(),
        offsets: Vec::new(),
    };
    let mut implied_dirs = HashSet::new();
    let mut end = 0u64;
    let entries = archive
        .entries_with_seek()
        .map_err(|e| corrupt(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            let after = walked
                .entries
                .last()
                .map_or(String::new(), |last| format!(" after {:?}", last.path));
            corrupt(format!("reading the archive{after}: {e}"))
        })?;
        if walked.entries.len() as u64 >= limits.max_entries {
            return Err(DebError::TooManyEntries {
                member: member.to_owned(),
                limit: limits.max_entries,
            });
        }
        end = entry_end(&entry, member)?;
        if entry.header().entry_type() == EntryType::XGlobalHeader {
            // Comments from `git archive` and the like; nothing is installed from them.
            continue;
        }
        let (data_entry, offset) = read_entry(&mut entry, member)?;
        if data_entry.kind == DataKind::File && offset.saturating_add(data_entry.size) > len {
            return Err(corrupt(format!(
                "{:?}: truncated ({} bytes declared)",
                data_entry.path, data_entry.size
            )));
        }
        let raw = entry.path_bytes();
        admit(&walked, &mut implied_dirs, &data_entry).map_err(|reason| DebError::Hostile {
            path: shown(&raw),
            reason,
        })?;
        walked
            .index
            .insert(data_entry.path.clone(), walked.entries.len());
        walked.entries.push(data_entry);
        walked.offsets.push(offset);
    }
    check_end_marker(&FileBlocks(file, len), end, member)?;
    Ok(walked)
}

/// The entry as a [`DataEntry`] with its data offset, or why it may not be installed.
fn read_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    member: &str,
) -> Result<(DataEntry, u64), DebError> {
    let raw = entry.path_bytes().into_owned();
    let corrupt = |what: &str, e: &dyn std::fmt::Display| DebError::Corrupt {
        member: member.to_owned(),
        reason: format!("{:?}: bad {what}: {e}", shown(&raw)),
    };
    let hostile = |reason: String| DebError::Hostile {
        path: shown(&raw),
        reason,
    };
    let utf8 = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|_| DebError::NotUtf8 {
            member: member.to_owned(),
            path: shown(bytes),
        })
    };
    let path = utf8(&raw)?;
    let entry_type = entry.header().entry_type();
    let kind = match entry_type {
        EntryType::Regular | EntryType::Continuous => DataKind::File,
        EntryType::Directory => DataKind::Dir,
        EntryType::Symlink => DataKind::Symlink,
        EntryType::Link => DataKind::Hardlink,
        other => {
            return Err(hostile(format!(
                "{} entries are not allowed",
                type_name(other)
            )))
        }
    };
    let normalized = normalize(&path).map_err(|r| hostile(r.to_owned()))?;
    if kind != DataKind::Dir && path.ends_with('/') {
        return Err(hostile("a non-directory path ends with \"/\"".to_owned()));
    }
    let header = entry.header();
    let mode = header.mode().map_err(|e| corrupt("mode", &e))? & 0o7777;
    let uid = header.uid().map_err(|e| corrupt("uid", &e))?;
    let gid = header.gid().map_err(|e| corrupt("gid", &e))?;
    let mut mtime = header.mtime().map_err(|e| corrupt("mtime", &e))?;
    let mut uname = utf8(header.username_bytes().unwrap_or_default())?;
    let mut gname = utf8(header.groupname_bytes().unwrap_or_default())?;
    let link = entry.link_name_bytes().map(|l| l.into_owned());
    let size = if kind == DataKind::File {
        entry.size()
    } else {
        0
    };
    let offset = entry.raw_file_position();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| corrupt("pax header", &e))?
    {
        for record in pax {
            let record = record.map_err(|e| corrupt("pax header", &e))?;
            let value = record.value_bytes();
            match record.key_bytes() {
                b"mtime" => {
                    mtime = pax_time(value).ok_or_else(|| corrupt("pax mtime", &shown(value)))?
                }
                b"uname" => uname = utf8(value)?,
                b"gname" => gname = utf8(value)?,
                key if key.starts_with(b"GNU.sparse.") => {
                    return Err(DebError::Unsupported {
                        member: member.to_owned(),
                        what: format!("the sparse file {path:?}"),
                    })
                }
                _ => {}
            }
        }
    }
    let link_target = match kind {
        DataKind::Symlink => {
            let target = utf8(link.as_deref().unwrap_or_default())?;
            if target.is_empty() {
                return Err(hostile("a symlink without a target".to_owned()));
            }
            if climbs_above_root(&normalized, &target) {
                return Err(hostile(format!(
                    "symlink target {target:?} points above the root"
                )));
            }
            Some(target)
        }
        DataKind::Hardlink => {
            let target = utf8(link.as_deref().unwrap_or_default())?;
            let target = normalize(&target)
                .map_err(|r| hostile(format!("hard link target {target:?}: {r}")))?;
            Some(target)
        }
        DataKind::Dir | DataKind::File => None,
    };
    let data_entry = DataEntry {
        path: normalized,
        kind,
        mode,
        uid,
        gid,
        uname,
        gname,
        mtime,
        size,
        link_target,
    };
    Ok((data_entry, if kind == DataKind::File { offset } else { 0 }))
}

/// Checks `entry` against the entries before it: no duplicates, nothing below a
/// non-directory, no non-directory where earlier entries implied a directory, hard links
/// only to earlier regular files.
fn admit(
    walked: &Walked,
    implied_dirs: &mut HashSet<String>,
    entry: &DataEntry,
) -> Result<(), String> {
    let path = entry.path.as_str();
    let kind_of = |p: &str| walked.index.get(p).map(|i| walked.entries[*i].kind);
    if kind_of(path).is_some() {
        return Err("duplicate path".to_owned());
    }
    if path.is_empty() && entry.kind != DataKind::Dir {
        return Err("the archive root must be a directory".to_owned());
    }
    for (i, _) in path.match_indices('/') {
        let parent = &path[..i];
        match kind_of(parent) {
            None | Some(DataKind::Dir) => {}
            Some(kind) => {
                return Err(format!(
                    "its parent {parent:?} is a {} earlier in the archive",
                    kind_name(kind)
                ))
            }
        }
    }
    if entry.kind != DataKind::Dir && implied_dirs.contains(path) {
        return Err(format!(
            "a {} where earlier entries implied a directory",
            kind_name(entry.kind)
        ));
    }
    if entry.kind == DataKind::Hardlink {
        let target = entry.link_target.as_deref().unwrap_or_default();
        if kind_of(target) != Some(DataKind::File) {
            return Err(format!(
                "hard link to {target:?}, which is not an earlier regular file"
            ));
        }
    }
    // Longest prefix first: once one is known, all shorter ones are too.
    for (i, _) in path.rmatch_indices('/') {
        if !implied_dirs.insert(path[..i].to_owned()) {
            break;
        }
    }
    if !path.is_empty() {
        implied_dirs.insert(String::new());
    }
    Ok(())
}

/// `./usr//bin/./x/` -> `usr/bin/x`; the root is `""`.
pub(super) fn normalize(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains('\n') {
        return Err("a newline in the path (dpkg's file lists cannot hold it)");
    }
    normal_components(path)
}

fn kind_name(kind: DataKind) -> &'static str {
    match kind {
        DataKind::Dir => "directory",
        DataKind::File => "regular file",
        DataKind::Symlink => "symlink",
        DataKind::Hardlink => "hard link",
    }
}

/// Where the next header after `entry` starts.
pub(super) fn entry_end<R: Read>(entry: &tar::Entry<'_, R>, member: &str) -> Result<u64, DebError> {
    entry
        .raw_file_position()
        .checked_add(entry.size())
        .and_then(|end| end.checked_next_multiple_of(512))
        .ok_or_else(|| DebError::Corrupt {
            member: member.to_owned(),
            reason: "entry size overflows".to_owned(),
        })
}

/// Random access to 512-byte blocks of a decompressed archive.
pub(super) trait Blocks {
    fn block(&self, at: u64) -> io::Result<Option<[u8; 512]>>;
}

impl Blocks for [u8] {
    fn block(&self, at: u64) -> io::Result<Option<[u8; 512]>> {
        let start = usize::try_from(at).unwrap_or(usize::MAX);
        Ok(self
            .get(start..start.saturating_add(512))
            .and_then(|b| b.try_into().ok()))
    }
}

struct FileBlocks<'a>(&'a File, u64);

impl Blocks for FileBlocks<'_> {
    fn block(&self, at: u64) -> io::Result<Option<[u8; 512]>> {
        if at.saturating_add(512) > self.1 {
            return Ok(None);
        }
        let mut block = [0u8; 512];
        self.0.read_exact_at(&mut block, at)?;
        Ok(Some(block))
    }
}

/// The `tar` crate also ends quietly at end of file; a zero block proves the archive was
/// not cut at an entry boundary.
pub(super) fn check_end_marker<B: Blocks + ?Sized>(
    blocks: &B,
    end: u64,
    member: &str,
) -> Result<(), DebError> {
    let block = blocks.block(end).map_err(|e| DebError::Corrupt {
        member: member.to_owned(),
        reason: format!("reading the end of the archive: {e}"),
    })?;
    match block {
        Some(block) if block.iter().all(|b| *b == 0) => Ok(()),
        _ => Err(DebError::Corrupt {
            member: member.to_owned(),
            reason: "truncated: no end-of-archive marker".to_owned(),
        }),
    }
}
