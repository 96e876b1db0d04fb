//! Reading a patched root's dpkg database, and comparing a patched root with what real
//! `dpkg -i` leaves when it installs the same packages over the original image.

use std::path::{Path, PathBuf};

use crate::support::{skopeo_pull, tool, unpack, Setup};

/// `Package Version` lines as dpkg-query reads the root's database.
pub fn dpkg_query(root: &Path) -> String {
    let admindir = format!("--admindir={}", root.join("var/lib/dpkg").display());
    tool(
        "dpkg-query",
        &[&admindir, "-W", "-f", "${Package} ${Version} ${Status}\n"],
    )
}

/// The `status` paragraph of `package` under `root`.
pub fn status_paragraph(root: &Path, package: &str) -> String {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    status
        .split("\n\n")
        .find(|p| p.starts_with(&format!("Package: {package}\n")))
        .unwrap_or_else(|| panic!("no {package} in status:\n{status}"))
        .to_owned()
}

/// True when this process runs as root (`/proc/self` belongs to its effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// What real dpkg makes of the same upgrade: the original image `repo_tag` pulled and
/// unpacked, then `dpkg --root=ROOT --force-confold -i DEBS` (maintainer scripts chrooted
/// into ROOT, as dpkg runs them). `None`, with a note, when not root: dpkg needs it.
pub fn dpkg_reference(setup: &Setup, repo_tag: &str, debs: &[PathBuf]) -> Option<PathBuf> {
    if !is_root() {
        eprintln!("note: not root, so no comparison with real dpkg");
        return None;
    }
    let layout = setup.path("dpkg-reference");
    skopeo_pull(setup, repo_tag, &layout, false);
    let tag = repo_tag.rsplit(':').next().unwrap();
    let root = unpack(&layout, tag, &setup.path("dpkg-reference-bundle"));
    let mut args = vec![
        format!("--root={}", root.display()),
        "--force-confold".to_owned(),
        "-i".to_owned(),
    ];
    args.extend(debs.iter().map(|d| d.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("dpkg", &args);
    Some(root)
}

/// dpkg's own run-time files, which an image build leaves behind but a patch need not.
const DPKG_RUNTIME: &[&str] = &[
    "var/lib/dpkg/lock",
    "var/lib/dpkg/lock-frontend",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/info/format",
    "var/lib/dpkg/triggers/Lock",
    "var/lib/dpkg/triggers/Unincorp",
    "var/lib/dpkg/tmp.ci",
    "var/log/dpkg.log",
    "var/log",
];

/// Path -> (kind, mode, owner, contents or link target) of every entry under `root`.
type Tree = std::collections::BTreeMap<String, (char, u32, (u32, u32), Vec<u8>)>;

fn tree(root: &Path) -> Tree {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if DPKG_RUNTIME.contains(&rel.as_str()) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let owner = (meta.uid(), meta.gid());
            let value = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                (
                    'l',
                    0,
                    owner,
                    target.to_string_lossy().into_owned().into_bytes(),
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                ('d', mode, owner, Vec::new())
            } else {
                ('f', mode, owner, std::fs::read(&path).unwrap())
            };
            out.insert(rel, value);
        }
    }
    out
}

/// Both trees have the same paths, kinds, modes and contents (times aside).
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (expected, actual) = (tree(expected), tree(actual));
    let mut differences = Vec::new();
    for (path, want) in &expected {
        match actual.get(path) {
            None => differences.push(format!("missing {path}")),
            Some(got) if got != want => {
                let show = |v: &(char, u32, (u32, u32), Vec<u8>)| {
                    let (kind, mode, (uid, gid), data) = v;
                    format!(
                        "{kind} {mode:o} {uid}:{gid} {:?}",
                        String::from_utf8_lossy(data)
                    )
                };
                differences.push(format!(
                    "{path}: dpkg {} / patched {}",
                    show(want),
                    show(got)
                ))
            }
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        differences.push(format!("extra {path}"));
    }
    assert!(
        differences.is_empty(),
        "the patched image differs from what dpkg -i leaves:\n{}",
        differences.join("\n")
    );
}
