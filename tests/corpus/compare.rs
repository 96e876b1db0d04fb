//! Whole-tree comparison of apt's root with patchpull's: every path, its kind, mode, owner,
//! size, contents and link target, every difference reported at once, with the short list
//! of what is left out and why ([`EXCLUDED`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Paths left out of the comparison, as (pattern, reason). A pattern `dir/*` is everything
/// below `dir` (not `dir` itself), `*suffix` any path ending in `suffix`, `prefix*` any path
/// starting with `prefix`, anything else the path itself.
pub const EXCLUDED: &[(&str, &str)] = &[
    (
        "dev/*",
        "the chroot's /dev mount point (in_root binds the host's)",
    ),
    ("proc/*", "the chroot's /proc mount point"),
    ("sys/*", "the chroot's /sys mount point"),
    ("var/log/dpkg.log", "dpkg's log of the run, with its times"),
    (
        "var/log/alternatives.log",
        "update-alternatives' log, with its times",
    ),
    (
        "var/log/apt/*",
        "apt's logs (history, term.log, eipp.log.xz): only apt ran",
    ),
    (
        "var/cache/apt/*",
        "apt's caches (pkgcache.bin, downloaded packages): only apt ran",
    ),
    (
        "var/lib/apt/lists/*",
        "apt's copies of the indexes: only apt fetched them",
    ),
    (
        "var/lib/apt/extended_states",
        "apt's marks of automatically installed packages, (re)written by every apt run that \
         installs; `apt-get upgrade` installs no new package, so it has no mark to add",
    ),
    (
        "var/lib/dpkg/status-old",
        "dpkg's backup of its status file before its last write",
    ),
    (
        "var/cache/debconf/config.dat-old",
        "debconf's backup of its database before its last write",
    ),
    (
        "var/cache/debconf/templates.dat-old",
        "debconf's backup of its templates before its last write",
    ),
    (
        "var/cache/debconf/passwords.dat-old",
        "debconf's backup of its passwords before its last write",
    ),
    (
        "var/cache/ldconfig/aux-cache",
        "ldconfig's cache of inodes and mtimes, unique to each tree",
    ),
    (
        "var/lib/dpkg/lock*",
        "dpkg's lock files, made by whoever ran dpkg last",
    ),
    ("var/lib/dpkg/triggers/Lock", "dpkg's triggers lock file"),
];

/// Why `path` is left out, if it is.
pub fn excluded(path: &str) -> Option<&'static str> {
    EXCLUDED.iter().find_map(|(pattern, reason)| {
        let hit = if let Some(dir) = pattern.strip_suffix("/*") {
            path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            path.ends_with(suffix)
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            path.starts_with(prefix)
        } else {
            path == *pattern
        };
        hit.then_some(*reason)
    })
}

/// What is compared of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `d`, `f`, `l` or `o` (device, fifo, socket).
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Files only.
    pub size: u64,
    /// Symbolic links only.
    pub target: String,
}

/// Every path under `root` that is not [`excluded`], root-relative.
pub fn walk(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if excluded(&rel).is_some() {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let file_type = meta.file_type();
            let (kind, size, target) = if file_type.is_symlink() {
                let target = std::fs::read_link(&path).unwrap_or_default();
                ('l', 0, target.to_string_lossy().into_owned())
            } else if file_type.is_dir() {
                stack.push(path.clone());
                ('d', 0, String::new())
            } else if file_type.is_file() {
                ('f', meta.len(), String::new())
            } else {
                ('o', 0, String::new())
            };
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: meta.permissions().mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size,
                    target,
                },
            );
        }
    }
    out
}

/// Whether two files have the same bytes, read in chunks.
fn same_contents(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let (mut ra, mut rb) = (
        std::io::BufReader::with_capacity(1 << 20, fa),
        std::io::BufReader::with_capacity(1 << 20, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = read_full(&mut ra, &mut ba);
        let nb = read_full(&mut rb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// A `.pyc` header: what the byte-code was checked against.
fn pyc_header(path: &Path) -> Option<String> {
    let mut head = [0u8; 16];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    let word = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().unwrap());
    Some(if word(4) & 1 == 1 {
        format!("hash-based {:08x}{:08x}", word(8), word(12))
    } else {
        format!("source mtime {} size {}", word(8), word(12))
    })
}

/// A few lines of `diff -u` of two small text files, indented.
fn text_diff(a: &Path, b: &Path) -> Option<String> {
    const SMALL: u64 = 256 * 1024;
    const LINES: usize = 40;
    let small = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() <= SMALL);
    if !small(a) || !small(b) {
        return None;
    }
    let (ta, tb) = (std::fs::read(a).ok()?, std::fs::read(b).ok()?);
    if std::str::from_utf8(&ta).is_err() || std::str::from_utf8(&tb).is_err() {
        return None;
    }
    let out = std::process::Command::new("diff")
        .args(["-u", "--label", "apt", "--label", "patchpull"])
        .arg(a)
        .arg(b)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<String> = lines
        .iter()
        .take(LINES)
        .map(|l| format!("      {l}"))
        .collect();
    if lines.len() > LINES {
        shown.push(format!("      ... {} more diff lines", lines.len() - LINES));
    }
    Some(shown.join("\n"))
}

/// Every difference between apt's tree (`apt`) and patchpull's (`patched`), one entry per
/// path (`path: what differs`), with the start of a diff for small text files and the
/// headers of `.pyc` files.
pub fn differences(apt: &Path, patched: &Path) -> Vec<String> {
    let (want, got) = (walk(apt), walk(patched));
    let paths: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let mut out = Vec::new();
    // A directory on one side only is one difference, not one per entry below it.
    let mut lone_dirs: BTreeSet<&str> = BTreeSet::new();
    let below = |tree: &BTreeMap<String, Entry>, dir: &str| {
        let prefix = format!("{dir}/");
        tree.keys().filter(|p| p.starts_with(&prefix)).count()
    };
    for path in paths {
        let mut ancestor = path.as_str();
        let mut under_lone_dir = false;
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            if lone_dirs.contains(parent) {
                under_lone_dir = true;
                break;
            }
            ancestor = parent;
        }
        if under_lone_dir {
            continue;
        }
        let line = match (want.get(path), got.get(path)) {
            (Some(w), None) => {
                if w.kind == 'd' {
                    lone_dirs.insert(path);
                    format!(
                        "{path}: only in apt's tree (directory, {} entries below)",
                        below(&want, path)
                    )
                } else {
                    format!("{path}: only in apt's tree ({})", describe(w))
                }
            }
            (None, Some(g)) => {
                if g.kind == 'd' {
                    lone_dirs.insert(path);
                    format!(
                        "{path}: only in patchpull's tree (directory, {} entries below)",
                        below(&got, path)
                    )
                } else {
                    format!("{path}: only in patchpull's tree ({})", describe(g))
                }
            }
            (Some(w), Some(g)) => {
                let mut what = Vec::new();
                if w.kind != g.kind {
                    what.push(format!("kind {} (apt) vs {} (patchpull)", w.kind, g.kind));
                }
                if w.mode != g.mode {
                    what.push(format!("mode {:04o} vs {:04o}", w.mode, g.mode));
                }
                if (w.uid, w.gid) != (g.uid, g.gid) {
                    what.push(format!("owner {}:{} vs {}:{}", w.uid, w.gid, g.uid, g.gid));
                }
                if w.target != g.target {
                    what.push(format!("link target {:?} vs {:?}", w.target, g.target));
                }
                let mut detail = None;
                if w.kind == 'f' && g.kind == 'f' {
                    let (a, b) = (apt.join(path), patched.join(path));
                    if w.size != g.size {
                        what.push(format!("size {} vs {}", w.size, g.size));
                    }
                    if w.size != g.size || !same_contents(&a, &b) {
                        what.push("contents differ".to_string());
                        if path.ends_with(".pyc") {
                            if let (Some(ha), Some(hb)) = (pyc_header(&a), pyc_header(&b)) {
                                what.push(format!("pyc header {ha} vs {hb}"));
                            }
                        } else {
                            detail = text_diff(&a, &b);
                        }
                    }
                }
                if what.is_empty() {
                    continue;
                }
                match detail {
                    Some(d) => format!("{path}: {}\n{d}", what.join(", ")),
                    None => format!("{path}: {}", what.join(", ")),
                }
            }
            (None, None) => continue,
        };
        out.push(line);
    }
    out
}

fn describe(e: &Entry) -> String {
    match e.kind {
        'f' => format!("file, {} bytes, mode {:04o}", e.size, e.mode),
        'l' => format!("link to {}", e.target),
        'd' => "directory".to_string(),
        _ => "special file".to_string(),
    }
}
