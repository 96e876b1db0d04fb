//! The smaller databases and rules an upgrade touches: `scripts.tar` (every installed
//! package's scripts, named `<name>-<version>.<identity>.<script>`), `triggers` (one line
//! per package: identity, then directory globs), protected paths (`/etc` and
//! `etc/apk/protected_paths.d/*.list`, matched with [`crate::glob::glob_pathname`]) and owner names from `/etc/passwd`.

use std::collections::HashMap;

use crate::glob::glob_pathname;

/// One entry of `scripts.tar`: its exact bytes (headers, data, padding) and the package
/// identity and script named in it.
#[derive(Debug, Clone)]
pub(super) struct ScriptEntry {
    pub raw: Vec<u8>,
    pub identity: String,
    pub script: String,
    pub contents: Vec<u8>,
}

/// Walks `scripts.tar` block by block (GNU long names included). Entries whose name is not
/// `<pkg>-<ver>.<identity>.<script>` are dropped, as apk drops them when it rewrites.
pub(super) fn parse_scripts_tar(data: &[u8]) -> Result<Vec<ScriptEntry>, String> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    let mut start = 0usize;
    let mut long_name: Option<Vec<u8>> = None;
    while pos + 512 <= data.len() {
        let block = &data[pos..pos + 512];
        if block.iter().all(|b| *b == 0) {
            return Ok(entries);
        }
        let header = tar::Header::from_byte_slice(block);
        let size = header
            .entry_size()
            .map_err(|e| format!("byte {pos}: bad header: {e}"))?;
        let body = pos + 512;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| body.checked_add(s))
            .filter(|end| *end <= data.len())
            .ok_or_else(|| format!("byte {pos}: entry runs past the end"))?;
        let next = end.next_multiple_of(512);
        if next > data.len() {
            return Err(format!("byte {pos}: entry runs past the end"));
        }
        match header.entry_type().as_byte() {
            b'L' => {
                let mut name = data[body..end].to_vec();
                while name.last() == Some(&0) {
                    name.pop();
                }
                long_name = Some(name);
            }
            b'0' | 0 => {
                let name = long_name
                    .take()
                    .unwrap_or_else(|| header.path_bytes().into_owned());
                let name = String::from_utf8_lossy(&name).into_owned();
                if let Some((identity, script)) = split_script_name(&name) {
                    entries.push(ScriptEntry {
                        raw: data[start..next].to_vec(),
                        identity,
                        script,
                        contents: data[body..end].to_vec(),
                    });
                }
            }
            _ => long_name = None,
        }
        pos = next;
        if long_name.is_none() {
            start = pos;
        }
    }
    if pos == data.len() {
        Ok(entries)
    } else {
        Err("truncated".to_owned())
    }
}

/// `busybox-1.36.1-r29.Q1abc=.post-install` -> (`Q1abc=`, `post-install`).
fn split_script_name(name: &str) -> Option<(String, String)> {
    let (rest, script) = name.rsplit_once('.')?;
    let (_, identity) = rest.rsplit_once('.')?;
    Some((identity.to_owned(), script.to_owned()))
}

/// A `scripts.tar` entry as apk-tools writes it: GNU header, root-owned, mode 0755.
pub(super) fn script_entry(name: &str, contents: &[u8], mtime: u64) -> Result<Vec<u8>, String> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(contents.len() as u64);
    header
        .set_username("root")
        .and_then(|()| header.set_groupname("root"))
        .map_err(|e| e.to_string())?;
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, name, contents)
        .map_err(|e| format!("{name}: {e}"))?;
    builder
        .into_inner()
        .map_err(|e| e.to_string())
        .map(|mut v| {
            v.truncate(v.len().saturating_sub(1024)); // the builder's end-of-archive
            v
        })
}

/// One line of `triggers`: its exact text and what it says.
#[derive(Debug, Clone)]
pub(super) struct TriggerLine {
    pub raw: String,
    pub identity: String,
    pub globs: Vec<String>,
}

pub(super) fn parse_triggers(data: &[u8]) -> Vec<TriggerLine> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|line| {
            let mut words = line.split(' ').filter(|w| !w.is_empty());
            let identity = words.next()?.to_owned();
            Some(TriggerLine {
                raw: format!("{line}\n"),
                identity,
                globs: words.map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// How apk treats an existing file in a directory when installing over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protect {
    None,
    /// Locally changed files are kept and the package's version written as `.apk-new`.
    Changed,
}

/// Protected path patterns in apk's order: built-in first, then the `.list` files.
#[derive(Debug, Clone)]
pub(super) struct ProtectedPaths(Vec<(String, Protect)>);

impl ProtectedPaths {
    /// `lists`: `etc/apk/protected_paths.d/*.list` contents by file name.
    pub fn new<'a>(lists: impl Iterator<Item = (&'a str, &'a [u8])>) -> ProtectedPaths {
        let mut patterns = Vec::new();
        let mut add = |line: &str| {
            let (mode, pattern) = match line.as_bytes().first() {
                None | Some(b'#') => return,
                Some(b'-') => (Protect::None, &line[1..]),
                Some(b'+' | b'@' | b'!') => (Protect::Changed, &line[1..]),
                Some(_) => (Protect::Changed, line),
            };
            let pattern = pattern.trim_matches('/');
            patterns.push((pattern.to_owned(), mode));
        };
        for line in ["+etc", "@etc/init.d", "!etc/apk"] {
            add(line);
        }
        let mut lists: Vec<(&str, &[u8])> = lists.filter(|(n, _)| n.ends_with(".list")).collect();
        lists.sort();
        for (_, data) in lists {
            for line in String::from_utf8_lossy(data).lines() {
                add(line);
            }
        }
        ProtectedPaths(patterns)
    }

    /// A directory's mode: inherited from its parent, then set by every pattern that
    /// matches it, in order (apk matches patterns component by component).
    pub fn of_dir(&self, dir: &str) -> Protect {
        let mut mode = Protect::None;
        if dir.is_empty() {
            return mode;
        }
        let mut prefix_end = 0;
        for component in dir.split('/') {
            prefix_end += component.len();
            let prefix = &dir[..prefix_end];
            for (pattern, m) in &self.0 {
                if glob_pathname(pattern.as_bytes(), prefix.as_bytes()) {
                    mode = *m;
                }
            }
            prefix_end += 1;
        }
        mode
    }
}

/// User and group names to ids, from the image's `/etc/passwd` and `/etc/group`: apk
/// gives a file the id its owner's name has in the target root, else the archive's id.
#[derive(Debug, Default)]
pub(super) struct Ids {
    users: HashMap<String, u64>,
    groups: HashMap<String, u64>,
}

impl Ids {
    pub fn new(passwd: Option<&[u8]>, group: Option<&[u8]>) -> Ids {
        let table = |data: Option<&[u8]>| -> HashMap<String, u64> {
            let mut out = HashMap::new();
            for line in String::from_utf8_lossy(data.unwrap_or_default()).lines() {
                let mut fields = line.split(':');
                if let (Some(name), _, Some(Ok(id))) =
                    (fields.next(), fields.next(), fields.next().map(str::parse))
                {
                    out.entry(name.to_owned()).or_insert(id);
                }
            }
            out
        };
        Ids {
            users: table(passwd),
            groups: table(group),
        }
    }

    pub fn uid(&self, name: &str, fallback: u64) -> u64 {
        self.users.get(name).copied().unwrap_or(fallback)
    }

    pub fn gid(&self, name: &str, fallback: u64) -> u64 {
        self.groups.get(name).copied().unwrap_or(fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_paths_follow_apk_defaults_and_lists() {
        let lists = [("ca.list", &b"-etc/ssl/certs/ca-cert-*.pem\n+opt/app\n"[..])];
        let p = ProtectedPaths::new(lists.iter().map(|(n, d)| (*n, *d)));
        assert_eq!(p.of_dir("etc"), Protect::Changed);
        assert_eq!(p.of_dir("etc/ssl/certs"), Protect::Changed);
        assert_eq!(p.of_dir("etc/apk"), Protect::Changed);
        assert_eq!(p.of_dir("usr/bin"), Protect::None);
        assert_eq!(p.of_dir("opt/app/conf"), Protect::Changed);
        assert_eq!(p.of_dir(""), Protect::None);
    }

    #[test]
    fn scripts_tar_round_trip() {
        let mut tar = script_entry("a-1-r0.Q1abc/de+=.post-install", b"#!/bin/sh\n", 5).unwrap();
        let long = format!("{}-1-r0.Q1xyz=.trigger", "b".repeat(120));
        tar.extend(script_entry(&long, b"echo\n", 5).unwrap());
        tar.extend([0u8; 1024]);
        let entries = parse_scripts_tar(&tar).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].identity, "Q1abc/de+=");
        assert_eq!(entries[0].script, "post-install");
        assert_eq!(entries[1].identity, "Q1xyz=");
        assert_eq!(entries[1].contents, b"echo\n");
        let joined: Vec<u8> = entries.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(joined, tar[..tar.len() - 1024]);
        assert!(parse_scripts_tar(&tar[..700]).is_err());
    }
}
