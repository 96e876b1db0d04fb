//! Walking the decompressed data tar: every entry is read, normalized, checked against the
//! entries before it and, for regular files, hashed against its `APK-TOOLS.checksum.SHA1`.

use crate::pkgs::archive::{
    climbs_above_root, normal_components, pax_time, shown, tar_type_name as type_name,
};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tar::EntryType;

use super::sha1::Sha1;
use super::{ApkEntry, ApkEntryKind, ApkFileError, ApkLimits};

const SEGMENT: &str = "data";
/// No path, link or pax record set needs more.
const MAX_META: u64 = 1 << 20;

pub(super) struct Walked {
    pub entries: Vec<ApkEntry>,
    pub index: HashMap<String, usize>,
    pub offsets: Vec<u64>,
}

fn corrupt(reason: String) -> ApkFileError {
    ApkFileError::Corrupt {
        segment: SEGMENT,
        reason,
    }
}

pub(super) fn walk(file: &Arc<File>, len: u64, limits: &ApkLimits) -> Result<Walked, ApkFileError> {
    check_metadata_sizes(file, len)?;
    let mut handle: &File = file;
    handle
        .seek(SeekFrom::Start(0))
        .map_err(|e| corrupt(e.to_string()))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(256 * 1024, handle));
    let mut walked = Walked {
        entries: Vec::new(),
        index: HashMap::new(),
        offsets: Vec::new(),
    };
    let mut kinds: HashMap<String, ApkEntryKind> = HashMap::new();
    let mut implied_dirs: HashSet<String> = HashSet::new();
    let mut count = 0u64;
    for entry in archive.entries().map_err(|e| corrupt(e.to_string()))? {
        let mut entry = entry.map_err(|e| {
            let after = walked
                .entries
                .last()
                .map_or(String::new(), |last| format!(" after {:?}", last.path));
            corrupt(format!("reading the archive{after}: {e}"))
        })?;
        count += 1;
        if count > limits.max_entries {
            return Err(ApkFileError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        if entry.header().entry_type() == EntryType::XGlobalHeader {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let (apk_entry, offset) = read_entry(&mut entry, &raw)?;
        let hostile = |reason: String| ApkFileError::Hostile {
            path: shown(&raw),
            reason,
        };
        if apk_entry.path.is_empty() {
            if apk_entry.kind != ApkEntryKind::Dir {
                return Err(hostile("the archive root must be a directory".to_owned()));
            }
            continue;
        }
        admit(&kinds, &mut implied_dirs, &apk_entry).map_err(hostile)?;
        kinds.insert(apk_entry.path.clone(), apk_entry.kind);
        // apk skips names that begin with a dot, and `.keep_*` placeholder files.
        let name = apk_entry.path.rsplit('/').next().unwrap_or_default();
        let keep =
            apk_entry.kind != ApkEntryKind::Dir && name.len() > 6 && name.starts_with(".keep_");
        if raw.first() == Some(&b'.') || keep {
            continue;
        }
        walked
            .index
            .insert(apk_entry.path.clone(), walked.entries.len());
        walked.entries.push(apk_entry);
        walked.offsets.push(offset);
    }
    Ok(walked)
}

fn read_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw: &[u8],
) -> Result<(ApkEntry, u64), ApkFileError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        corrupt(format!("{:?}: bad {what}: {e}", shown(raw)))
    };
    let hostile = |reason: String| ApkFileError::Hostile {
        path: shown(raw),
        reason,
    };
    let utf8 = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|_| ApkFileError::NotUtf8 {
            segment: SEGMENT,
            path: shown(bytes),
        })
    };
    let path = utf8(raw)?;
    let kind = match entry.header().entry_type() {
        EntryType::Regular | EntryType::Continuous => ApkEntryKind::File,
        EntryType::Directory => ApkEntryKind::Dir,
        EntryType::Symlink => ApkEntryKind::Symlink,
        EntryType::Link => ApkEntryKind::Hardlink,
        other => {
            return Err(hostile(format!(
                "{} entries are not allowed",
                type_name(other)
            )))
        }
    };
    let normalized = normalize(&path).map_err(|r| hostile(r.to_owned()))?;
    if kind != ApkEntryKind::Dir && path.ends_with('/') {
        return Err(hostile("a non-directory path ends with \"/\"".to_owned()));
    }
    let header = entry.header();
    let mode = header.mode().map_err(|e| bad("mode", &e))? & 0o7777;
    let uid = header.uid().map_err(|e| bad("uid", &e))?;
    let gid = header.gid().map_err(|e| bad("gid", &e))?;
    let mut mtime = header.mtime().map_err(|e| bad("mtime", &e))?;
    let mut uname = utf8(header.username_bytes().unwrap_or_default())?;
    let mut gname = utf8(header.groupname_bytes().unwrap_or_default())?;
    let link = entry.link_name_bytes().map(|l| l.into_owned());
    let mut checksum = None;
    if let Some(pax) = entry.pax_extensions().map_err(|e| bad("pax header", &e))? {
        for record in pax {
            let record = record.map_err(|e| bad("pax header", &e))?;
            let value = record.value_bytes();
            match record.key_bytes() {
                b"mtime" => {
                    mtime = pax_time(value).ok_or_else(|| bad("pax mtime", &shown(value)))?
                }
                b"uname" => uname = utf8(value)?,
                b"gname" => gname = utf8(value)?,
                b"APK-TOOLS.checksum.SHA1" => {
                    let mut sum = [0u8; 20];
                    hex::decode_to_slice(value, &mut sum)
                        .map_err(|e| bad("APK-TOOLS.checksum.SHA1", &e))?;
                    checksum = Some(sum);
                }
                key if key.starts_with(b"GNU.sparse.") => {
                    return Err(ApkFileError::Unsupported {
                        segment: SEGMENT,
                        what: format!("the sparse file {path:?}"),
                    })
                }
                key if key.starts_with(b"SCHILY.xattr.") => {
                    return Err(ApkFileError::Unsupported {
                        segment: SEGMENT,
                        what: format!("extended attributes on {path:?}"),
                    })
                }
                _ => {}
            }
        }
    }
    let size = if kind == ApkEntryKind::File {
        entry.size()
    } else {
        0
    };
    let offset = entry.raw_file_position();
    let link_target = match kind {
        ApkEntryKind::Symlink => {
            let target = utf8(link.as_deref().unwrap_or_default())?;
            if target.is_empty() || target.contains(|c: char| c.is_control()) {
                return Err(hostile(format!(
                    "symlink target {target:?} is empty or has control characters"
                )));
            }
            if climbs_above_root(&normalized, &target) {
                return Err(hostile(format!(
                    "symlink target {target:?} points above the root"
                )));
            }
            Some(target)
        }
        ApkEntryKind::Hardlink => {
            let target = utf8(link.as_deref().unwrap_or_default())?;
            Some(
                normalize(&target)
                    .map_err(|r| hostile(format!("hard link target {target:?}: {r}")))?,
            )
        }
        ApkEntryKind::Dir | ApkEntryKind::File => None,
    };
    if kind == ApkEntryKind::File {
        let expected = checksum.ok_or_else(|| ApkFileError::Unsupported {
            segment: SEGMENT,
            what: format!("the regular file {path:?} without an APK-TOOLS.checksum.SHA1 record"),
        })?;
        let mut hasher = Sha1::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0u64;
        loop {
            match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    read += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(corrupt(format!("{path:?}: {e}"))),
            }
        }
        if read != size {
            return Err(corrupt(format!(
                "{path:?}: truncated ({size} bytes declared)"
            )));
        }
        if hasher.finish() != expected {
            return Err(corrupt(format!(
                "{path:?}: contents do not match APK-TOOLS.checksum.SHA1 {}",
                hex::encode(expected)
            )));
        }
    }
    let apk_entry = ApkEntry {
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
        checksum,
    };
    Ok((
        apk_entry,
        if kind == ApkEntryKind::File {
            offset
        } else {
            0
        },
    ))
}

/// No duplicates, nothing below a non-directory, no non-directory where earlier entries
/// implied a directory, hard links only to earlier regular files.
fn admit(
    kinds: &HashMap<String, ApkEntryKind>,
    implied_dirs: &mut HashSet<String>,
    entry: &ApkEntry,
) -> Result<(), String> {
    let path = entry.path.as_str();
    if kinds.contains_key(path) {
        return Err("duplicate path".to_owned());
    }
    for (i, _) in path.match_indices('/') {
        let parent = &path[..i];
        match kinds.get(parent) {
            None | Some(ApkEntryKind::Dir) => {}
            Some(kind) => {
                return Err(format!(
                    "its parent {parent:?} is a {} earlier in the archive",
                    kind_name(*kind)
                ))
            }
        }
    }
    if entry.kind != ApkEntryKind::Dir && implied_dirs.contains(path) {
        return Err(format!(
            "a {} where earlier entries implied a directory",
            kind_name(entry.kind)
        ));
    }
    if entry.kind == ApkEntryKind::Hardlink {
        let target = entry.link_target.as_deref().unwrap_or_default();
        if kinds.get(target) != Some(&ApkEntryKind::File) {
            return Err(format!(
                "hard link to {target:?}, which is not an earlier regular file"
            ));
        }
    }
    for (i, _) in path.rmatch_indices('/') {
        if !implied_dirs.insert(path[..i].to_owned()) {
            break;
        }
    }
    Ok(())
}

/// `./usr//bin/./x/` -> `usr/bin/x`; the root is `""`.
fn normalize(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains(|c: char| c.is_control()) {
        return Err("a control character in the path (apk refuses it)");
    }
    normal_components(path)
}

fn kind_name(kind: ApkEntryKind) -> &'static str {
    match kind {
        ApkEntryKind::Dir => "directory",
        ApkEntryKind::File => "regular file",
        ApkEntryKind::Symlink => "symlink",
        ApkEntryKind::Hardlink => "hard link",
    }
}

/// The `tar` crate reads long-name and pax headers whole into memory: refuse huge ones
/// before it sees them, reading only headers.
fn check_metadata_sizes(file: &File, len: u64) -> Result<(), ApkFileError> {
    let block_at = |at: u64| -> Option<[u8; 512]> {
        if at.saturating_add(512) > len {
            return None;
        }
        let mut block = [0u8; 512];
        file.read_exact_at(&mut block, at).ok()?;
        Some(block)
    };
    let mut pos = 0u64;
    let mut pax_size: Option<u64> = None;
    while let Some(block) = block_at(pos) {
        if block.iter().all(|b| *b == 0) {
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&block);
        let Ok(mut size) = header.entry_size() else {
            return Ok(()); // the crate's walk reports it
        };
        let data = pos + 512;
        match header.entry_type().as_byte() {
            b'L' | b'K' | b'x' | b'g' if size > MAX_META => {
                return Err(ApkFileError::Unsupported {
                    segment: SEGMENT,
                    what: format!("a tar metadata header of {size} bytes (at offset {pos})"),
                })
            }
            b'x' => {
                let mut bytes = vec![0u8; size as usize];
                if data.saturating_add(size) <= len && file.read_exact_at(&mut bytes, data).is_ok()
                {
                    pax_size = tar::PaxExtensions::new(&bytes)
                        .filter_map(Result::ok)
                        .find(|r| r.key_bytes() == b"size")
                        .and_then(|r| r.value().ok()?.parse().ok());
                }
            }
            b'L' | b'K' | b'g' => {}
            _ => size = pax_size.take().unwrap_or(size),
        }
        let Some(next) = size
            .checked_next_multiple_of(512)
            .and_then(|s| data.checked_add(s))
        else {
            return Ok(());
        };
        pos = next;
    }
    Ok(())
}
