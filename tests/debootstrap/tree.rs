//! Reading roots and layers: dpkg's lists as paths in the tree, layer paths, and a tree's
//! kinds, modes and owners.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Paths of a gzip'd layer tar, without `./` and trailing `/`.
pub fn layer_paths(gz: &[u8]) -> Vec<String> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    tar.entries()
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path().unwrap().to_string_lossy().into_owned();
            let path = path.strip_prefix("./").unwrap_or(&path);
            path.trim_end_matches('/').to_string()
        })
        .collect()
}

/// The `info/` file names that belong to `package` (`pkg.*` or `pkg:arch.*`).
pub fn info_files(root: &Path, package: &str) -> BTreeSet<String> {
    std::fs::read_dir(root.join("var/lib/dpkg/info"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_prefix(package)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with(':'))
        })
        .collect()
}

/// The paths `package`'s `.list` names, as they lie in the tree: on merged /usr a listed
/// `/lib/x` is `usr/lib/x`, because `lib` is a symlink to `usr/lib`.
pub fn listed_paths(root: &Path, package: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for name in info_files(root, package) {
        if !name.ends_with(".list") {
            continue;
        }
        let text = std::fs::read_to_string(root.join("var/lib/dpkg/info").join(&name)).unwrap();
        for line in text.lines() {
            let path = line.trim_start_matches('/');
            if path.is_empty() || path == "." {
                continue;
            }
            let (first, rest) = path.split_once('/').unwrap_or((path, ""));
            let merged = std::fs::read_link(root.join(first))
                .is_ok_and(|target| target == Path::new("usr").join(first));
            paths.insert(match (merged, rest.is_empty()) {
                (true, false) => format!("usr/{first}/{rest}"),
                (true, true) => format!("usr/{first}"),
                (false, _) => path.to_string(),
            });
        }
    }
    paths
}

/// Kind (`d`, `f`, `l` or `o`), mode, uid, gid and link target.
pub type Metadata = (char, u32, u32, u32, String);

/// The metadata of every path under `root`.
pub fn tree_metadata(root: &Path) -> BTreeMap<String, Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let (kind, target) = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ('l', target.to_string_lossy().into_owned())
            } else if meta.is_dir() {
                stack.push(path.clone());
                ('d', String::new())
            } else if meta.is_file() {
                ('f', String::new())
            } else {
                ('o', String::new())
            };
            let mode = meta.permissions().mode() & 0o7777;
            out.insert(rel, (kind, mode, meta.uid(), meta.gid(), target));
        }
    }
    out
}

/// The root-relative paths `diff -r -q` reports between `left` and `right`, or the whole
/// line when it names no path under them.
pub fn diff_paths(left: &Path, right: &Path, diff_output: &str) -> Vec<String> {
    let prefixes = [
        format!("{}/", left.display()),
        format!("{}/", right.display()),
    ];
    let roots = [left.display().to_string(), right.display().to_string()];
    diff_output
        .lines()
        .map(|line| {
            // "Only in DIR: NAME"
            if let Some((dir, name)) = line
                .strip_prefix("Only in ")
                .and_then(|rest| rest.split_once(": "))
            {
                if roots.iter().any(|r| r == dir) {
                    return name.to_string();
                }
                if let Some(dir) = prefixes.iter().find_map(|p| dir.strip_prefix(p.as_str())) {
                    return format!("{dir}/{name}");
                }
            }
            // "Files A and B differ", "File A is a ... while file B is a ..."
            line.split_whitespace()
                .find_map(|word| prefixes.iter().find_map(|p| word.strip_prefix(p.as_str())))
                .map_or_else(|| line.to_string(), str::to_string)
        })
        .collect()
}
