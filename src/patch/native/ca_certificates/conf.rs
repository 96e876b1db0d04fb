//! `/etc/ca-certificates.conf` as ca-certificates' `config` and `postinst configure` leave
//! it, for an image without a debconf database (distroless images have none, and a fresh
//! database answers `trust_new_crts` with its template's default, `yes`, which is also
//! what a noninteractive install has stored): every certificate the package ships that the
//! file does not disable is enabled, new ones appended, removed ones marked `!`.
//!
//! The scripts compare names with `grep` regular expressions; in those, `.` matches any
//! character and every other character of the names Debian ships stands for itself. A
//! name with another special character is refused rather than guessed.

use super::tree::{CaTree, Node};

pub const CONF: &str = "etc/ca-certificates.conf";
pub const CERTS_DIR: &str = "usr/share/ca-certificates";
pub const LOCAL_CERTS_DIR: &str = "usr/local/share/ca-certificates";

/// What `config` stores in debconf: `enable_crts`'s choices and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub available: Vec<String>,
    pub enabled: Vec<String>,
}

/// The conffile-like rewrite the postinst makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfChange {
    pub new: Vec<u8>,
    /// The file before, kept as `ca-certificates.conf.dpkg-old` (`None`: there was none).
    pub old: Option<Vec<u8>>,
}

/// The `CERTS_LIST="..."` value of the package's `config` script.
pub fn certs_list(config_script: &str) -> Option<Vec<String>> {
    let start = config_script.find("\nCERTS_LIST=\"")? + "\nCERTS_LIST=\"".len();
    let end = config_script[start..].find('"')? + start;
    Some(each_value(&config_script[start..end]))
}

/// `each_value`: split at commas, leading white space removed.
fn each_value(list: &str) -> Vec<String> {
    list.split(',')
        .map(|v| v.trim_start_matches([' ', '\t', '\n']).to_owned())
        .collect()
}

/// The lines of a file as `sed` reads them (a last line without newline included).
fn sed_lines(text: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    lines
}

/// The `config` script's selection (`trust_new_crts` = `yes`).
pub fn config(tree: &CaTree, certs_list: &[String]) -> Selection {
    let conf = if tree.is_file(CONF) {
        tree.read(CONF).unwrap_or_default().to_vec()
    } else {
        Vec::new()
    };
    let lines = sed_lines(&conf);
    let disabled: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix('!')).collect();
    if !tree.is_dir(CERTS_DIR) {
        return Selection {
            available: certs_list.to_vec(),
            enabled: certs_list.to_vec(),
        };
    }
    // `find . -type f -name '*.crt'`: regular files only, links not followed.
    let prefix = format!("{CERTS_DIR}/");
    let mut crts: Vec<String> = tree
        .below(CERTS_DIR)
        .filter(|(p, n)| matches!(n, Node::File { .. }) && p.ends_with(".crt"))
        .filter_map(|(p, _)| p.strip_prefix(prefix.as_str()).map(str::to_owned))
        .chain(certs_list.iter().cloned())
        .collect();
    crts.sort();
    crts.dedup();
    // `for crt in $crts`: split at white space.
    let crts: Vec<String> = crts
        .iter()
        .flat_map(|c| c.split_whitespace().map(str::to_owned))
        .collect();
    // Already trusted and new certificates alike are enabled when trust_new is yes.
    let enabled = crts
        .iter()
        .filter(|c| !disabled.contains(&c.as_str()))
        .cloned()
        .collect();
    Selection {
        available: crts,
        enabled,
    }
}

/// Why a name cannot be matched as the scripts' `grep` does.
fn check_name(name: &str) -> Result<(), String> {
    match name.chars().find(|c| "*[]\\^$".contains(*c)) {
        Some(c) => Err(format!(
            "certificate name {name:?} has {c:?}, special in the postinst's grep patterns"
        )),
        None => Ok(()),
    }
}

/// `grep -q "^pattern"` (or `"^pattern$"` when `whole`) on one line, `.` matching any
/// character.
fn matches(pattern: &str, line: &str, whole: bool) -> bool {
    let mut text = line.chars();
    for p in pattern.chars() {
        match text.next() {
            Some(c) if p == '.' || p == c => {}
            _ => return false,
        }
    }
    !whole || text.next().is_none()
}

/// `memberp`: `name` is one of `list`'s values.
fn member(name: &str, list: &[String]) -> bool {
    let values: Vec<String> = if list.is_empty() {
        vec![String::new()]
    } else {
        list.to_vec()
    };
    values.iter().any(|v| matches(name, v, true))
}

/// `read line` without `-r`: backslashes removed (a backslash before the newline joins the
/// next line), white space at both ends dropped; a last line without newline is not read.
fn shell_read_lines(text: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(next) => line.push(next),
            },
            '\n' => {
                lines.push(line.trim_matches([' ', '\t']).to_owned());
                line.clear();
            }
            other => line.push(other),
        }
    }
    lines
}

/// The file the postinst writes before a fresh install's first `update-ca-certificates`.
const HEADER: &str = "\
# This file lists certificates that you wish to use or to ignore to be
# installed in /etc/ssl/certs.
# update-ca-certificates(8) will update /etc/ssl/certs by reading this file.
#
# This is autogenerated by dpkg-reconfigure ca-certificates.
# Certificates should be installed under /usr/share/ca-certificates
# and files with extension '.crt' is recognized as available certs.
#
# line begins with # is comment.
# line begins with ! is certificate filename to be deselected.
#
";

/// The postinst's rewrite of the configuration; `None` when it leaves the file as it is.
///
/// # Errors
/// A name the emulation cannot match as the script does.
pub fn postinst(tree: &CaTree, selection: &Selection) -> Result<Option<ConfChange>, String> {
    for name in selection.available.iter().chain(&selection.enabled) {
        check_name(name)?;
    }
    let (available, enabled) = (&selection.available, &selection.enabled);
    if !tree.is_file(CONF) {
        // `(echo $CERTS_ENABLED | tr ',' '\n'; echo $CERTS_AVAILABLE | tr ',' '\n') |
        // sed 's/^[[:space:]]*//' | sort | uniq -c`, twice seen enabled, once disabled.
        let mut all: Vec<String> = enabled.iter().chain(available).cloned().collect();
        if enabled.is_empty() {
            all.push(String::new());
        }
        if available.is_empty() {
            all.push(String::new());
        }
        all.sort();
        let mut out = HEADER.to_owned();
        let mut i = 0;
        while i < all.len() {
            let count = all[i..].iter().take_while(|v| **v == all[i]).count();
            // The two `sed` expressions apply one after the other to each line.
            let strip = |line: &str, digit: char| {
                line.trim_start_matches([' ', '\t'])
                    .strip_prefix(digit)
                    .map(|r| r.trim_start_matches([' ', '\t']).to_owned())
            };
            let mut line = format!("{count:>7} {}", all[i]);
            if let Some(rest) = strip(&line, '2') {
                line = rest;
            }
            if let Some(rest) = strip(&line, '1') {
                line = format!("!{rest}");
            }
            out.push_str(&line);
            out.push('\n');
            i += count;
        }
        return Ok(Some(ConfChange {
            new: out.into_bytes(),
            old: None,
        }));
    }
    let current = tree.read(CONF).unwrap_or_default().to_vec();
    let mut lines: Vec<String> = Vec::new();
    for line in shell_read_lines(&current) {
        if line.starts_with('#') {
            lines.push(line);
            continue;
        }
        let ca = line.strip_prefix('!').unwrap_or(&line).to_owned();
        check_name(&ca)?;
        let shipped = |dir: &str| tree.is_file(&format!("{dir}/{ca}"));
        lines.push(if member(&ca, enabled) {
            ca
        } else if member(&ca, available) || line.starts_with('!') {
            format!("!{ca}")
        } else if shipped(CERTS_DIR) || shipped(LOCAL_CERTS_DIR) {
            ca
        } else {
            format!("!{ca}")
        });
    }
    let blank = enabled
        .iter()
        .all(|v| v.chars().all(|c| c.is_ascii_whitespace()));
    if !blank {
        for ca in enabled.iter().map(|v| v.trim_matches([' ', '\t'])) {
            if !lines.iter().any(|l| matches(ca, l, false)) {
                lines.push(ca.to_owned());
            }
        }
    }
    for ca in available.iter().map(|v| v.trim_matches([' ', '\t'])) {
        let disabled = format!("!{ca}");
        if !member(ca, enabled) && !lines.iter().any(|l| matches(&disabled, l, false)) {
            lines.push(disabled);
        }
    }
    let new: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    Ok((new != current).then_some(ConfChange {
        new,
        old: Some(current),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(conf: &str, shipped: &[&str]) -> CaTree {
        let mut tree = CaTree::default();
        tree.insert(
            CONF,
            Node::File {
                data: conf.as_bytes().to_vec(),
                mode: 0o644,
            },
        );
        tree.insert(CERTS_DIR, Node::Dir { mode: 0o755 });
        for name in shipped {
            tree.insert(
                &format!("{CERTS_DIR}/{name}"),
                Node::File {
                    data: Vec::new(),
                    mode: 0o644,
                },
            );
        }
        tree
    }

    #[test]
    fn new_certificates_are_enabled_and_removed_ones_disabled() {
        let tree = tree_with(
            "# comment\nmozilla/Old.crt\nmozilla/Kept.crt\n!mozilla/Off.crt\n",
            &["mozilla/Kept.crt", "mozilla/New.crt", "mozilla/Off.crt"],
        );
        let list: Vec<String> = ["mozilla/Kept.crt", "mozilla/New.crt", "mozilla/Off.crt"]
            .map(String::from)
            .to_vec();
        let selection = config(&tree, &list);
        assert_eq!(selection.enabled, ["mozilla/Kept.crt", "mozilla/New.crt"]);
        let change = postinst(&tree, &selection).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(change.new).unwrap(),
            "# comment\n!mozilla/Old.crt\nmozilla/Kept.crt\n!mozilla/Off.crt\nmozilla/New.crt\n"
        );
        assert!(change.old.is_some());
    }

    #[test]
    fn an_unchanged_file_is_left_alone() {
        let tree = tree_with("mozilla/A.crt\n", &["mozilla/A.crt"]);
        let selection = config(&tree, &["mozilla/A.crt".to_owned()]);
        assert_eq!(postinst(&tree, &selection).unwrap(), None);
    }

    #[test]
    fn a_missing_file_is_written_from_the_selection() {
        let mut tree = tree_with("", &["mozilla/B.crt", "mozilla/A.crt"]);
        tree.remove(CONF);
        let selection = config(&tree, &[]);
        let change = postinst(&tree, &selection).unwrap().unwrap();
        let text = String::from_utf8(change.new).unwrap();
        assert!(text.starts_with(HEADER));
        assert_eq!(&text[HEADER.len()..], "mozilla/A.crt\nmozilla/B.crt\n");
    }
}
