//! Paths inside an image, as raw bytes: no leading `/`, components joined by one `/`, the
//! root is the empty path. Tar entry names are normalised strictly (a `..` that climbs above
//! the root is rejected, because an extractor that trusted it would write outside the root);
//! paths met while resolving symbolic links are resolved the way a chroot does (`..` at the
//! root stays at the root, an absolute target starts again at the image root).

use crate::image::node::{EntryKind, Node};

/// Why a tar entry name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// A `..` component climbs above the image root.
    EscapesRoot,
}

/// Normalises a tar entry name: strips leading `./` and `/`, drops empty and `.` components,
/// applies `..` lexically. Returns the empty path for the root itself (`./`).
pub(crate) fn normalize_entry_path(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

/// Normalises a path a caller asks for, such as `/etc/os-release`: like a path opened inside
/// a chroot, so `..` never leaves the root.
pub(crate) fn normalize_request_path(raw: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

/// The directory holding `path` (the root for a top-level name).
pub(crate) fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// The last component of `path`.
pub(crate) fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `dir/name`, or `name` when `dir` is the root.
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut joined = Vec::with_capacity(dir.len() + 1 + name.len());
    joined.extend_from_slice(dir);
    joined.push(b'/');
    joined.extend_from_slice(name);
    joined
}

/// The proper ancestors of `path`, outermost first (`a`, `a/b` for `a/b/c`).
pub(crate) fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

/// What every path below `dir` starts with: `dir/`, or nothing for the root. Range scans
/// over sorted paths must use this, not `dir`: `usr-x` sorts between `usr` and `usr/bin`.
pub(crate) fn dir_prefix(dir: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        Vec::new()
    } else {
        [dir, b"/"].concat()
    }
}

/// Whether `path` lies strictly below `dir` (`dir` the root holds everything but itself).
pub(crate) fn is_below(path: &[u8], dir: &[u8]) -> bool {
    if dir.is_empty() {
        return !path.is_empty();
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// For display and error messages: paths are bytes, and may not be UTF-8.
pub(crate) fn display(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// What a lookup of one already-resolved path says.
pub(crate) enum Lookup<'n> {
    /// The entry that is visible at this path and the layer that holds it.
    Found { layer: usize, node: &'n Node },
    /// Nothing is visible at this path.
    Absent,
    /// The layers seen so far do not decide; lower layers must be read.
    Pending,
}

/// The outcome of resolving a path through symbolic links.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolved<'n> {
    /// A non-directory or directory entry, at its real path (all links followed).
    Found {
        path: Vec<u8>,
        layer: usize,
        node: &'n Node,
    },
    Absent,
    /// Undecided: the lexical path that lower layers must be searched for.
    Pending {
        path: Vec<u8>,
    },
    /// More than the allowed number of symbolic links were followed.
    TooManyLinks,
}

/// Resolves `path` component by component, following symbolic links (also in the middle of
/// the path) with at most `max_links` substitutions. Absolute targets restart at the image
/// root; `..` at the root stays there, so resolution can never leave the image.
pub(crate) fn resolve<'n, E>(
    path: &[u8],
    max_links: u32,
    mut lookup: impl FnMut(&[u8]) -> Result<Lookup<'n>, E>,
) -> Result<Resolved<'n>, E> {
    let mut pending: Vec<Vec<u8>> = split_reversed(path);
    let mut current: Vec<u8> = Vec::new();
    let mut links = 0u32;
    let mut last: Option<(usize, &'n Node)> = None;
    while let Some(component) = pending.pop() {
        match component.as_slice() {
            b"" | b"." => continue,
            b".." => {
                current.truncate(parent(&current).len());
                last = None;
                continue;
            }
            _ => {}
        }
        let next = join(&current, &component);
        match lookup(&next)? {
            Lookup::Absent => return Ok(Resolved::Absent),
            Lookup::Pending => {
                let mut lexical = next;
                for rest in pending.iter().rev() {
                    lexical = join(&lexical, rest);
                }
                return Ok(Resolved::Pending {
                    path: normalize_request_path(&lexical),
                });
            }
            Lookup::Found { layer, node } => match node.kind {
                EntryKind::Dir => {
                    current = next;
                    last = Some((layer, node));
                }
                EntryKind::Symlink => {
                    links += 1;
                    if links > max_links {
                        return Ok(Resolved::TooManyLinks);
                    }
                    let target = node.link_target.as_deref().unwrap_or_default();
                    if target.is_empty() {
                        return Ok(Resolved::Absent);
                    }
                    if target.first() == Some(&b'/') {
                        current.clear();
                    }
                    pending.extend(split_reversed(target));
                    last = None;
                }
                EntryKind::File | EntryKind::Hardlink | EntryKind::Other => {
                    if pending.iter().any(|c| !c.is_empty() && c != b".") {
                        // A file used as a directory: ENOTDIR, nothing there.
                        return Ok(Resolved::Absent);
                    }
                    return Ok(Resolved::Found {
                        path: next,
                        layer,
                        node,
                    });
                }
            },
        }
    }
    match last {
        Some((layer, node)) => Ok(Resolved::Found {
            path: current,
            layer,
            node,
        }),
        // The root, or a path that ended on `..`: look the directory up once more.
        None if current.is_empty() => Ok(Resolved::Absent),
        None => match lookup(&current)? {
            Lookup::Found { layer, node } if node.kind == EntryKind::Dir => Ok(Resolved::Found {
                path: current,
                layer,
                node,
            }),
            Lookup::Pending => Ok(Resolved::Pending { path: current }),
            _ => Ok(Resolved::Absent),
        },
    }
}

/// Components in reverse order, so that `pop` yields them first to last.
fn split_reversed(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_normalised_or_rejected() {
        type Case<'a> = (&'a [u8], Result<&'a [u8], PathError>);
        let cases: &[Case] = &[
            (b"./etc/os-release", Ok(b"etc/os-release")),
            (b"/etc//passwd", Ok(b"etc/passwd")),
            (b"usr/lib/", Ok(b"usr/lib")),
            (b"./", Ok(b"")),
            (b"a/./b/../c", Ok(b"a/c")),
            (b"../etc/passwd", Err(PathError::EscapesRoot)),
            (b"a/../../b", Err(PathError::EscapesRoot)),
            (b"/..", Err(PathError::EscapesRoot)),
            (b"caf\xe9", Ok(b"caf\xe9")),
        ];
        for (raw, want) in cases {
            let got = normalize_entry_path(raw);
            assert_eq!(got.as_deref(), want.as_ref().map(|p| *p), "{raw:?}");
        }
    }

    #[test]
    fn request_paths_stay_inside_the_root() {
        assert_eq!(
            normalize_request_path(b"/../../etc/os-release"),
            b"etc/os-release"
        );
        assert_eq!(
            normalize_request_path(b"/var/lib/dpkg/status.d/"),
            b"var/lib/dpkg/status.d"
        );
    }

    #[test]
    fn path_pieces() {
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"a"), b"");
        assert_eq!(file_name(b"a/b/c"), b"c");
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(
            ancestors(b"a/b/c").collect::<Vec<_>>(),
            vec![&b"a"[..], b"a/b"]
        );
        assert!(is_below(b"a/b", b"a"));
        assert!(!is_below(b"ab", b"a"));
        assert!(!is_below(b"a", b"a"));
        assert!(is_below(b"a", b""));
    }
}
