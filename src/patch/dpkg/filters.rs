//! dpkg's path filters (`path-exclude` / `path-include` in `/etc/dpkg/dpkg.cfg.d/*`), as
//! slim images use them to drop documentation: a filtered file is still listed in the
//! package's `.list` but not written, and an older copy of it is removed.
//!
//! Semantics follow `dpkg(1)`: patterns are shell globs where `*` also matches `/`, the last
//! matching pattern decides, and a directory is excluded only when no include pattern can
//! match something inside it. An excluded directory is not part of the new version, so
//! the upgrade removes the old one when it is empty and no other package owns it.

use std::collections::BTreeMap;

use crate::glob::glob;

/// The filters in the order dpkg reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathFilters {
    /// (include, pattern).
    rules: Vec<(bool, String)>,
}

impl PathFilters {
    /// From `dpkg.cfg.d` fragments (by file name; dpkg reads them in name order) and then
    /// `dpkg.cfg`.
    pub fn parse(fragments: &BTreeMap<String, Vec<u8>>, main: Option<&[u8]>) -> PathFilters {
        let mut rules = Vec::new();
        let texts = fragments
            .iter()
            .filter(|(name, _)| is_config_fragment(name))
            .map(|(_, data)| data.as_slice())
            .chain(main);
        for text in texts {
            for line in String::from_utf8_lossy(text).lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (option, value) = match line.split_once(['=', ' ', '\t']) {
                    Some((option, value)) => (option.trim(), value.trim()),
                    None => (line, ""),
                };
                let option = option.trim_start_matches("--");
                match option {
                    "path-exclude" if !value.is_empty() => rules.push((false, value.to_owned())),
                    "path-include" if !value.is_empty() => rules.push((true, value.to_owned())),
                    _ => {}
                }
            }
        }
        PathFilters { rules }
    }

    /// True when dpkg would not write `path` (a package path without the leading `/`), as
    /// dpkg's `filter_should_skip`: the last matching pattern decides, and an excluded
    /// directory or symbolic link is kept when its path starts with the literal part of an
    /// include pattern (up to the first wildcard, trailing `/` dropped).
    pub fn skips(&self, path: &str, dir_or_symlink: bool) -> bool {
        let absolute = format!("/{path}");
        let mut included = true;
        for (include, pattern) in &self.rules {
            if glob(pattern.as_bytes(), absolute.as_bytes()) {
                included = *include;
            }
        }
        if included {
            return false;
        }
        if dir_or_symlink {
            let reincluded = self.rules.iter().any(|(include, pattern)| {
                let literal = pattern
                    .find(['*', '?', '[', '\\'])
                    .map_or(pattern.as_str(), |at| &pattern[..at]);
                *include && absolute.starts_with(literal.trim_end_matches('/'))
            });
            return !reincluded;
        }
        true
    }
}

/// dpkg skips editor backups and package-manager leftovers in `dpkg.cfg.d`.
fn is_config_fragment(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !name.ends_with(".dpkg-old")
        && !name.ends_with(".dpkg-new")
        && !name.ends_with(".dpkg-dist")
        && !name.ends_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_matching_rule_wins_and_directories_stay_for_includes() {
        let mut fragments = BTreeMap::new();
        fragments.insert(
            "docker".to_owned(),
            b"# slim\npath-exclude /usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\npath-exclude=/usr/share/man/*\n".to_vec(),
        );
        fragments.insert(
            "docker.dpkg-old".to_owned(),
            b"path-exclude=/usr/*\n".to_vec(),
        );
        let filters = PathFilters::parse(&fragments, None);
        assert!(filters.skips("usr/share/doc/liblzma5/NEWS.gz", false));
        assert!(!filters.skips("usr/share/doc/liblzma5/copyright", false));
        assert!(
            !filters.skips("usr/share/doc/liblzma5", true),
            "an include reaches below it"
        );
        assert!(filters.skips("usr/share/man/man1", true));
        assert!(!filters.skips("usr/bin/xz", false));
        assert!(!PathFilters::parse(&BTreeMap::new(), None).skips("usr/share/doc/x", false));
    }

    #[test]
    fn reinclusion_is_dpkgs_prefix_rule_for_directories_and_symlinks() {
        let mut fragments = BTreeMap::new();
        fragments.insert(
            "x".to_owned(),
            b"path-exclude=/usr/share/*\npath-include=/usr/share/man/de/man7/apt.7.gz\npath-include=/usr/share/doc/*\n".to_vec(),
        );
        let filters = PathFilters::parse(&fragments, None);
        // A symbolic link under an include's literal part is kept, as a directory is.
        assert!(!filters.skips("usr/share/doc-base", true));
        // dpkg compares the path with the pattern's prefix, never the other way round: the
        // parents of an include without wildcards are not kept.
        assert!(filters.skips("usr/share/man/de", true));
        assert!(!filters.skips("usr/share/man/de/man7/apt.7.gz", false));
        assert!(filters.skips("usr/share/info", true));
    }
}
