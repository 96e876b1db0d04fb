//! ca-certificates' scripts as the native engine reproduces them for distroless images,
//! against the real ones: the subject hash of every Mozilla root (and of names that test
//! OpenSSL's canonical form) against `openssl x509 -hash`, and a whole upgrade (a root
//! removed, one added, one disabled, local roots with one hash and a duplicate) against the
//! real `update-ca-certificates` and `openssl rehash`, run over the same tree in a private
//! mount namespace where the tree is bind-mounted over the host's paths.
//! Needs root, `openssl`, `unshare` and the host's ca-certificates (scripts/test.sh).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use patchpull::patch::native::ca_certificates::subject_hash::{rehash_input, RehashInput};
use patchpull::patch::native::ca_certificates::tree::{CaTree, Node};
use patchpull::patch::native::ca_certificates::{conf, configure};

const HOST_CERTS: &str = "/usr/share/ca-certificates";
/// Everything the scripts write, and what they read besides.
const ROOTS: &[&str] = &[
    "etc/ssl/certs",
    "etc/ca-certificates.conf",
    "usr/share/ca-certificates",
    "usr/local/share/ca-certificates",
];

fn tools_present() -> bool {
    // The real script runs over bind mounts in a mount namespace of its own.
    if !run(Command::new("id").arg("-u")).trim().eq("0") {
        eprintln!("skipped: the comparison with update-ca-certificates needs root");
        return false;
    }
    common::require_tools(&["openssl", "unshare", "mount", "update-ca-certificates"])
        && Path::new(HOST_CERTS).join("mozilla").is_dir()
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A self-signed certificate for `subject` (openssl `-subj` syntax) in `out`.
fn make_certificate(subject: &str, out: &Path) {
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-days",
            "30",
            "-utf8",
            "-multivalue-rdn",
            "-subj",
            subject,
            "-out",
        ])
        .arg(out));
}

/// `openssl x509 -hash` and the SHA-1 fingerprint of `file`, as the emulation prints them.
fn openssl_key(file: &Path) -> (String, String) {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-hash", "-fingerprint", "-sha1", "-in"])
        .arg(file));
    let mut lines = out.lines();
    let hash = lines.next().unwrap().to_owned();
    let fingerprint = lines.next().unwrap().split_once('=').unwrap().1;
    (hash, fingerprint.replace(':', "").to_lowercase())
}

fn emulated_key(file: &Path) -> (String, String) {
    match rehash_input(&fs::read(file).unwrap()) {
        RehashInput::Certificate(key) => (
            format!("{:08x}", key.subject_hash),
            hex::encode(key.fingerprint),
        ),
        other => panic!("{}: {other:?}", file.display()),
    }
}

#[test]
fn subject_hashes_are_openssls_for_every_mozilla_root() {
    if !tools_present() {
        return;
    }
    let mut files: Vec<PathBuf> = fs::read_dir(Path::new(HOST_CERTS).join("mozilla"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 100, "only {} Mozilla roots", files.len());
    // Names that exercise the canonical form: case, inner and outer white space, a
    // multi-valued RDN (sorted as DER sorts a SET), UTF-8 left as it is.
    let dir = tempfile::tempdir().unwrap();
    let subjects = [
        "/C=DE/O=  Mixed   CASE\tOrg  /CN=Root",
        "/CN=b+OU=A+O=c/L=Straße Ünïcode",
        "/emailAddress=Admin@Example.ORG/CN=mail",
    ];
    for (i, subject) in subjects.iter().enumerate() {
        let file = dir.path().join(format!("made-{i}.crt"));
        make_certificate(subject, &file);
        files.push(file);
    }
    let mismatched: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let (ours, theirs) = (emulated_key(f), openssl_key(f));
            (ours != theirs).then(|| format!("{}: ours {ours:?}, openssl {theirs:?}", f.display()))
        })
        .collect();
    assert!(mismatched.is_empty(), "{}", mismatched.join("\n"));
    // The bundle holds many certificates: rehash skips it.
    let bundle = fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap();
    assert_eq!(rehash_input(&bundle), RehashInput::Skipped);
}

/// The model of `root`'s [`ROOTS`], read from disk.
fn load(root: &Path) -> CaTree {
    fn walk(tree: &mut CaTree, root: &Path, rel: &str) {
        let path = root.join(rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap();
            tree.insert(rel, Node::Symlink(target.to_str().unwrap().to_owned()));
        } else if meta.is_dir() {
            tree.insert(rel, Node::Dir { mode });
            for entry in fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name();
                walk(tree, root, &format!("{rel}/{}", name.to_str().unwrap()));
            }
        } else {
            let data = fs::read(&path).unwrap();
            tree.insert(rel, Node::File { data, mode });
        }
    }
    let mut tree = CaTree::default();
    for rel in ROOTS {
        walk(&mut tree, root, rel);
    }
    tree
}

/// What the scripts wrote: `/etc/ssl/certs` and the configuration, path by path.
fn written(tree: &CaTree) -> BTreeMap<String, Node> {
    let own = tree
        .get(conf::CONF)
        .map(|n| (conf::CONF.to_owned(), n.clone()));
    tree.below("etc/ssl/certs")
        .map(|(p, n)| (p.to_owned(), n.clone()))
        .chain(own)
        .collect()
}

/// Runs the real `update-ca-certificates ARGS` over `root`: its paths bind-mounted over
/// the host's in a mount namespace that dies with the command, hooks from the root's own
/// (empty) directory.
fn real_update(root: &Path, args: &[&str]) -> String {
    const SCRIPT: &str = r#"set -e; r=$1; shift
for p in etc/ssl/certs etc/ca-certificates.conf usr/share/ca-certificates usr/local/share/ca-certificates; do
  mount --bind "$r/$p" "/$p"
done
exec update-ca-certificates --hooksdir "$r/etc/ca-certificates/update.d" "$@""#;
    run(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            SCRIPT,
            "sh",
        ])
        .arg(root)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

fn describe_differences(ours: &BTreeMap<String, Node>, real: &BTreeMap<String, Node>) -> String {
    let show = |n: Option<&Node>| match n {
        None => "absent".to_owned(),
        Some(Node::File { data, mode }) => format!("file {mode:o}, {} bytes", data.len()),
        Some(other) => format!("{other:?}"),
    };
    ours.keys()
        .chain(real.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| ours.get(*p) != real.get(*p))
        .map(|p| {
            format!(
                "{p}: ours {}, real {}",
                show(ours.get(p)),
                show(real.get(p))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_upgrade_leaves_what_the_real_update_ca_certificates_leaves() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let share = root.join("usr/share/ca-certificates");
    fs::create_dir_all(root.join("usr/share")).unwrap();
    run(Command::new("cp").args(["-a", HOST_CERTS]).arg(&share));
    for dir in [
        "etc/ssl/certs",
        "etc/ca-certificates/update.d",
        "usr/local/share",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    let local = root.join("usr/local/share/ca-certificates");
    fs::create_dir_all(local.join("team")).unwrap();

    let mut mozilla: Vec<String> = fs::read_dir(share.join("mozilla"))
        .unwrap()
        .map(|e| format!("mozilla/{}", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    mozilla.sort();
    // The old package: without `added`, with `removed`; the administrator disabled one.
    let (added, disabled) = (mozilla[3].clone(), mozilla[7].clone());
    let held = work.path().join("added.crt");
    fs::rename(share.join(&added), &held).unwrap();
    let removed = "mozilla/Removed_Test_Root.crt";
    make_certificate("/CN=Removed Test Root", &share.join(removed));
    // Two local roots with one subject (one hash, two links) and a copy of a Mozilla root
    // (a duplicate rehash skips), one reached through a link.
    make_certificate("/CN=Local Test Root", &local.join("local-a.crt"));
    make_certificate("/CN=Local Test Root", &local.join("team/local-b.crt"));
    fs::copy(share.join(&mozilla[0]), work.path().join("dup.crt")).unwrap();
    symlink(work.path().join("dup.crt"), local.join("dup.crt")).unwrap();
    let mut old_conf = String::from("# the old package's selection\n");
    for name in mozilla
        .iter()
        .filter(|n| **n != added)
        .chain([&removed.to_owned()])
    {
        let bang = if *name == disabled { "!" } else { "" };
        old_conf.push_str(&format!("{bang}{name}\n"));
    }
    fs::write(root.join(conf::CONF), &old_conf).unwrap();
    real_update(&root, &["--fresh"]);
    // (The link leads into the tree mounted in the namespace: not followed here.)
    assert!(fs::symlink_metadata(root.join("etc/ssl/certs/Removed_Test_Root.pem")).is_ok());

    // The upgrade unpacks the new package: `added` is back, `removed` is gone.
    fs::rename(&held, share.join(&added)).unwrap();
    fs::remove_file(share.join(removed)).unwrap();
    let mut model = load(&root);
    // The dup link's target lies outside the model's roots; the engine puts it in.
    model.insert(
        work.path().join("dup.crt").to_str().unwrap(),
        Node::File {
            data: fs::read(work.path().join("dup.crt")).unwrap(),
            mode: 0o644,
        },
    );
    let hooks = configure(&mut model, "20230311+deb12u1", &mozilla, None).unwrap();
    assert!(hooks.is_empty());

    // The postinst's rewrite: the removed root disabled, the new one appended.
    let Some(Node::File { data, .. }) = model.get(conf::CONF) else {
        panic!("no configuration");
    };
    let new_conf = String::from_utf8(data.clone()).unwrap();
    assert!(new_conf.contains(&format!("\n!{removed}\n")), "{new_conf}");
    assert!(new_conf.ends_with(&format!("\n{added}\n")), "{new_conf}");
    assert!(new_conf.contains(&format!("\n!{disabled}\n")), "{new_conf}");
    assert_eq!(
        model
            .get("etc/ca-certificates.conf.dpkg-old")
            .map(|n| matches!(n, Node::File { data, .. } if *data == old_conf.as_bytes())),
        Some(true)
    );

    // The real scripts over the same tree, with the same configuration.
    fs::write(root.join(conf::CONF), &new_conf).unwrap();
    let first = real_update(&root, &[]);
    assert!(first.contains("1 added, 1 removed"), "{first}");
    real_update(&root, &[]);
    let (ours, real) = (written(&model), written(&load(&root)));
    assert!(
        ours == real,
        "the emulation differs from update-ca-certificates:\n{}",
        describe_differences(&ours, &real)
    );
    let bundle = fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    // Every enabled Mozilla root, the two local ones and the duplicate.
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        mozilla.len() - 1 + 3
    );
}
