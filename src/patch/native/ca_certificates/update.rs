//! `update-ca-certificates` (ca-certificates' `/usr/sbin` script) and the `openssl rehash .`
//! it runs, step by step over the [`CaTree`]: the `!` lines' `.pem` links removed, every
//! enabled certificate linked as `<name>.pem` and appended to the bundle (a newline added
//! where a file lacks its last one), the local administrator's certificates after them,
//! then, only when a link was added or removed, orphan links dropped and the hash links
//! made with rehash's own numbering (`apps/rehash.c`: existing links kept, duplicates by
//! SHA-1 skipped, new links at the lowest free number).

use std::collections::BTreeMap;

use super::conf::{CERTS_DIR, CONF, LOCAL_CERTS_DIR};
use super::subject_hash::{rehash_input, RehashInput};
use super::tree::{CaTree, Node};

pub const ETC_CERTS_DIR: &str = "etc/ssl/certs";
pub const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
pub const HOOKS_DIR: &str = "etc/ca-certificates/update.d";

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Update {
    pub added: usize,
    pub removed: usize,
    /// Hooks `run-parts --test` lists in the hooks directory, when hooks run.
    pub hooks: Vec<String>,
}

/// Runs `update-ca-certificates [--fresh] [--hooksdir ""]` over `tree`.
///
/// # Errors
/// What rehash would do that this emulation does not: a CRL, more than 256 certificates
/// with one hash.
pub fn update_ca_certificates(
    tree: &mut CaTree,
    fresh: bool,
    run_hooks: bool,
) -> Result<Update, String> {
    let conf = tree.read(CONF).unwrap_or_default().to_vec();
    let fresh = fresh || conf.is_empty();
    let mut run = Update::default();
    if fresh {
        clear_links(tree);
    }
    // `sed ... "$CERTSCONF" | while read -r crt`: sed drops empty lines, `read` the white
    // space at both ends, and the loop never sees a last line that has no newline.
    let text = String::from_utf8_lossy(&conf);
    let mut lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    if !text.ends_with('\n') {
        lines.pop();
    }
    let read = |l: &str| l.trim_matches([' ', '\t']).to_owned();
    for crt in lines.iter().filter_map(|l| l.strip_prefix('!')).map(read) {
        let pem = format!("{ETC_CERTS_DIR}/{}.pem", basename(&crt));
        if matches!(tree.get(&pem), Some(Node::Symlink(_))) {
            tree.remove(&pem);
            run.removed += 1;
        }
    }
    let mut bundle: Option<Vec<u8>> = None;
    for crt in lines
        .iter()
        .filter(|l| !l.starts_with('#') && !l.starts_with('!'))
        .map(|l| read(l))
    {
        let cert = format!("/{CERTS_DIR}/{crt}");
        if tree.is_file(&cert) {
            add(tree, &cert, &mut bundle, &mut run);
        }
    }
    if tree.is_dir(LOCAL_CERTS_DIR) {
        let local: Vec<String> = tree
            .below(LOCAL_CERTS_DIR)
            .map(|(p, _)| p.to_owned())
            .filter(|p| p.ends_with(".crt") && tree.is_file(p))
            .collect();
        for path in local {
            add(tree, &format!("/{path}"), &mut bundle, &mut run);
        }
    }
    if run.added > 0 || run.removed > 0 {
        let orphans: Vec<String> = tree
            .below(ETC_CERTS_DIR)
            .filter(|(_, n)| matches!(n, Node::Symlink(_)))
            .map(|(p, _)| p.to_owned())
            .filter(|p| !tree.exists(p))
            .collect();
        for orphan in orphans {
            tree.remove(&orphan);
        }
        rehash(tree, ETC_CERTS_DIR)?;
    }
    if let Some(data) = bundle {
        tree.insert(BUNDLE, Node::File { data, mode: 0o644 });
    }
    if run_hooks && tree.is_dir(HOOKS_DIR) {
        let prefix = format!("{HOOKS_DIR}/");
        run.hooks = tree
            .names_in(HOOKS_DIR)
            .into_iter()
            .filter(|name| {
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .filter(|name| {
                matches!(tree.resolve(&format!("{prefix}{name}")),
                    Some(Node::File { mode, .. }) if mode & 0o111 != 0)
            })
            .collect();
    }
    Ok(run)
}

/// `basename "$CERT" .crt`.
fn basename(cert: &str) -> &str {
    let name = cert.rsplit('/').next().unwrap_or(cert);
    match name.strip_suffix(".crt") {
        Some(stem) if !stem.is_empty() => stem,
        _ => name,
    }
}

/// `add`: the `.pem` link (spaces and commas made `_`, parentheses `=`) and the bundle.
fn add(tree: &mut CaTree, cert: &str, bundle: &mut Option<Vec<u8>>, run: &mut Update) {
    let name: String = basename(cert)
        .chars()
        .map(|c| match c {
            ' ' | ',' => '_',
            '(' | ')' => '=',
            other => other,
        })
        .collect();
    let pem = format!("{ETC_CERTS_DIR}/{name}.pem");
    if !tree.exists(&pem) || tree.readlink(&pem) != Some(cert) {
        tree.remove(&pem);
        tree.insert(&pem, Node::Symlink(cert.to_owned()));
        run.added += 1;
    }
    let data = tree.read(cert).unwrap_or_default();
    let out = bundle.get_or_insert_with(Vec::new);
    out.extend_from_slice(data);
    // `sed -e '$a\'`: a newline after a last line that lacks one.
    if !data.is_empty() && !data.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// `--fresh`: the links into the certificate directories removed, then every link that
/// does not lead to a regular file.
fn clear_links(tree: &mut CaTree) {
    let links = |tree: &CaTree| -> Vec<(String, String)> {
        tree.below(ETC_CERTS_DIR)
            .filter_map(|(p, n)| match n {
                Node::Symlink(t) => Some((p.to_owned(), t.clone())),
                _ => None,
            })
            .collect()
    };
    for (path, target) in links(tree) {
        if target.starts_with(&format!("/{CERTS_DIR}"))
            || target.starts_with(&format!("/{LOCAL_CERTS_DIR}"))
        {
            tree.remove(&path);
        }
    }
    for (path, _) in links(tree) {
        if !tree.is_file(&path) {
            tree.remove(&path);
        }
    }
}

/// rehash's per-hash bookkeeping: the files with that subject hash and the links found.
#[derive(Default)]
struct Bucket {
    entries: Vec<HashEntry>,
    needed: usize,
}

struct HashEntry {
    filename: String,
    old_id: u16,
    need_symlink: bool,
    fingerprint: [u8; 20],
}

const MAX_COLLISIONS: usize = 256;
const NO_ID: u16 = u16::MAX;

impl Bucket {
    /// `add_entry`: a certificate (`fingerprint` given) or an existing link to `filename`.
    fn add(&mut self, filename: &str, fingerprint: Option<[u8; 20]>, old_id: u16) -> bool {
        let mut found = None;
        for (i, entry) in self.entries.iter().enumerate() {
            if fingerprint.is_some_and(|f| f == entry.fingerprint) {
                return true; // a duplicate certificate: skipped
            }
            if entry.filename == filename {
                found = Some(i);
                if fingerprint.is_none() {
                    break;
                }
            }
        }
        let index = match found {
            Some(i) => i,
            None => {
                if self.needed >= MAX_COLLISIONS {
                    return false;
                }
                self.entries.push(HashEntry {
                    filename: filename.to_owned(),
                    old_id: NO_ID,
                    need_symlink: false,
                    fingerprint: [0; 20],
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        entry.old_id = entry.old_id.min(old_id);
        if let Some(fingerprint) = fingerprint {
            if !entry.need_symlink {
                entry.need_symlink = true;
                entry.fingerprint = fingerprint;
                self.needed += 1;
            }
        }
        true
    }
}

/// A hash link's name, `<8 hex digits>.<n>` (`.r<n>` for CRLs): `(crl, hash, n)`, parsed
/// as rehash's `handle_symlink` does (`strtoul`: an empty number is 0).
fn hash_link_name(name: &str) -> Option<(bool, u32, u16)> {
    let bytes = name.as_bytes();
    if bytes.len() < 9 || !bytes[..8].iter().all(u8::is_ascii_hexdigit) || bytes[8] != b'.' {
        return None;
    }
    let hash = u32::from_str_radix(&name[..8], 16).ok()?;
    let rest = &name[9..];
    let (crl, number) = match rest.strip_prefix(['r', 'R']) {
        Some(n) => (true, n),
        None => (false, rest),
    };
    let id = if number.is_empty() {
        0
    } else {
        // strtoul's sign and leading white space are accepted by rehash; no real link
        // has them, and such a name is refused by being left to do_file.
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        number.parse::<u64>().map_or(u16::MAX, |n| n as u16)
    };
    Some((crl, hash, id))
}

/// `openssl rehash dir` (new-style hashes, links removed where stale).
fn rehash(tree: &mut CaTree, dir: &str) -> Result<(), String> {
    let mut buckets: BTreeMap<(bool, u32), Bucket> = BTreeMap::new();
    let overflow = |name: &str| {
        format!("openssl rehash: more than {MAX_COLLISIONS} certificates share the hash of {name}")
    };
    for name in tree.names_in(dir) {
        let path = format!("{dir}/{name}");
        if let Some(Node::Symlink(target)) = tree.get(&path) {
            if let Some((crl, hash, id)) = hash_link_name(&name) {
                let target = target.clone();
                if !buckets
                    .entry((crl, hash))
                    .or_default()
                    .add(&target, None, id)
                {
                    return Err(overflow(&name));
                }
                continue;
            }
        }
        let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        if !matches!(extension.as_deref(), Some("pem" | "crt" | "cer" | "crl")) {
            continue;
        }
        let Some(contents) = tree.read(&path) else {
            continue;
        };
        match rehash_input(contents) {
            RehashInput::Certificate(key) => {
                let bucket = buckets.entry((false, key.subject_hash)).or_default();
                if !bucket.add(&name, Some(key.fingerprint), NO_ID) {
                    return Err(overflow(&name));
                }
            }
            RehashInput::Crl => {
                return Err(format!(
                    "/{path} is a CRL: its rehash link is not reproduced"
                ))
            }
            RehashInput::Skipped => {}
        }
    }
    for ((crl, hash), bucket) in buckets {
        let suffix = if crl { "r" } else { "" };
        let link = |id: u16| format!("{dir}/{hash:08x}.{suffix}{id}");
        let needed = bucket.needed;
        let mut taken = vec![false; needed.max(1)];
        for entry in &bucket.entries {
            if usize::from(entry.old_id) < needed {
                taken[usize::from(entry.old_id)] = true;
            }
        }
        let mut next = 0usize;
        for entry in &bucket.entries {
            if usize::from(entry.old_id) < needed {
                continue; // the link exists and is used as it is
            }
            if entry.need_symlink {
                while taken.get(next).copied().unwrap_or(false) {
                    next += 1;
                }
                let id = u16::try_from(next).unwrap_or(NO_ID);
                tree.remove(&link(id));
                tree.insert(&link(id), Node::Symlink(entry.filename.clone()));
                if next >= taken.len() {
                    taken.resize(next + 1, false);
                }
                taken[next] = true;
            } else {
                tree.remove(&link(entry.old_id));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_link_names_parse_as_rehash_reads_them() {
        assert_eq!(hash_link_name("1234abcd.0"), Some((false, 0x1234abcd, 0)));
        assert_eq!(hash_link_name("1234ABCD.r2"), Some((true, 0x1234abcd, 2)));
        assert_eq!(hash_link_name("1234abcd."), Some((false, 0x1234abcd, 0)));
        assert_eq!(hash_link_name("ACCVRAIZ1.pem"), None);
        assert_eq!(hash_link_name("1234abcd.pem"), None);
    }

    #[test]
    fn names_are_made_as_the_script_makes_them() {
        assert_eq!(
            basename("/usr/share/ca-certificates/mozilla/A b.crt"),
            "A b"
        );
        assert_eq!(basename("/x/.crt"), ".crt");
    }
}
