//! The part of the patched tree that ca-certificates' scripts read and write, in memory:
//! `/etc/ssl/certs`, `/etc/ca-certificates.conf`, the certificate directories and what
//! their links lead to. Paths are relative to the root (`etc/ssl/certs/X.pem`); symbolic
//! links are followed as the kernel does, absolute targets from the root. A path whose
//! parents the model does not hold is taken as being below plain directories: the
//! builder puts every link's final file under the path the link names.

use std::collections::BTreeMap;

/// One path of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink(String),
    Dir {
        mode: u32,
    },
    /// Devices, FIFOs: neither a file nor a directory to the scripts.
    Other,
}

/// The scripts' view of the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaTree {
    nodes: BTreeMap<String, Node>,
}

/// Symbolic links followed before a lookup gives up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// `path` without empty and `.` components, `..` applied; no leading `/`.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

impl CaTree {
    /// Sets `path` (normalised) to `node`.
    pub fn insert(&mut self, path: &str, node: Node) {
        self.nodes.insert(normalize(path), node);
    }

    /// Removes `path` and everything below it.
    pub fn remove(&mut self, path: &str) {
        let path = normalize(path);
        let below = format!("{path}/");
        self.nodes
            .retain(|p, _| p != &path && !p.starts_with(below.as_str()));
    }

    /// The node at `path` itself, a link not followed (`lstat`).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normalize(path))
    }

    /// Every path below `dir` with its node, sorted bytewise (`find` then `sort` in the C
    /// locale).
    pub fn below<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let prefix = format!("{}/", normalize(dir));
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(prefix.as_str()))
            .map(|(p, n)| (p.as_str(), n))
    }

    /// The names directly in `dir`, sorted bytewise (`strcmp`, as rehash sorts them).
    pub fn names_in(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{}/", normalize(dir));
        self.below(dir)
            .filter_map(|(p, _)| p.strip_prefix(prefix.as_str()))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect()
    }

    /// The link's target as stored (`readlink`).
    pub fn readlink(&self, path: &str) -> Option<&str> {
        match self.get(path) {
            Some(Node::Symlink(target)) => Some(target),
            _ => None,
        }
    }

    /// What `path` leads to, links followed (`stat`); `None` when nothing is there or
    /// the links loop.
    pub fn resolve(&self, path: &str) -> Option<&Node> {
        let mut pending: Vec<String> = normalize(path)
            .split('/')
            .rev()
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let mut at: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                at.pop();
                continue;
            }
            at.push(part);
            let here = at.join("/");
            match self.nodes.get(&here) {
                Some(Node::Symlink(target)) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    at.pop();
                    if target.starts_with('/') {
                        at.clear();
                    }
                    pending.extend(
                        target
                            .split('/')
                            .rev()
                            .filter(|p| !p.is_empty() && *p != ".")
                            .map(str::to_owned),
                    );
                }
                Some(Node::File { .. } | Node::Other) if !pending.is_empty() => return None,
                _ => {}
            }
        }
        self.nodes.get(&at.join("/"))
    }

    /// `test -e`.
    pub fn exists(&self, path: &str) -> bool {
        self.resolve(path).is_some()
    }

    /// `test -f`: a regular file, links followed.
    pub fn is_file(&self, path: &str) -> bool {
        matches!(self.resolve(path), Some(Node::File { .. }))
    }

    /// `test -d`, links followed.
    pub fn is_dir(&self, path: &str) -> bool {
        matches!(self.resolve(path), Some(Node::Dir { .. }))
    }

    /// The contents of the regular file `path` leads to.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        match self.resolve(path) {
            Some(Node::File { data, .. }) => Some(data),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_relative_and_absolute() {
        let mut tree = CaTree::default();
        let file = Node::File {
            data: b"x".to_vec(),
            mode: 0o644,
        };
        tree.insert("usr/share/ca-certificates/mozilla/A.crt", file);
        tree.insert(
            "etc/ssl/certs/A.pem",
            Node::Symlink("/usr/share/ca-certificates/mozilla/A.crt".into()),
        );
        tree.insert("etc/ssl/certs/1234abcd.0", Node::Symlink("A.pem".into()));
        tree.insert("etc/ssl/certs/loop", Node::Symlink("loop".into()));
        tree.insert("etc/ssl/certs/gone.pem", Node::Symlink("/nowhere".into()));
        assert_eq!(tree.read("etc/ssl/certs/1234abcd.0"), Some(&b"x"[..]));
        assert!(tree.is_file("/etc/ssl/certs/A.pem"));
        assert!(!tree.exists("etc/ssl/certs/loop"));
        assert!(!tree.exists("etc/ssl/certs/gone.pem"));
        assert_eq!(
            tree.names_in("etc/ssl/certs"),
            ["1234abcd.0", "A.pem", "gone.pem", "loop"]
        );
    }
}
