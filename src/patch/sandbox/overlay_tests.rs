//! Overlay roots against the plain ones: the same script over a copy of the tree and over
//! an overlay of it must report the same changes (so the same layer), and the lower tree
//! must come out untouched. Needs busybox and user namespaces like the other sandbox tests.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::tests::{base_layer, busybox, materialize_layers, require_tools, upper_layer, workdir};
use super::*;

const EXCLUDED: &[&str] = &["proc", "dev", "tmp"];

fn sh_over(upper: &Path, lower: &Path, script: &str) -> SandboxOutput {
    let argv = ["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let env = [("PATH".to_owned(), "/bin".to_owned())];
    run(&SandboxCommand {
        lower: Some(lower),
        root: upper,
        argv: &argv,
        env: &env,
        stdin: None,
        timeout: Duration::from_secs(30),
    })
    .unwrap()
}

fn sh_plain(root: &Path, script: &str) -> SandboxOutput {
    super::tests::sh(root, script, Duration::from_secs(30))
}

/// A busybox tree materialized at `work/<name>`.
fn tree(busybox: &[u8], work: &Path, name: &str) -> std::path::PathBuf {
    let outside = tempfile::tempdir().unwrap();
    let root = work.join(name);
    fs::create_dir(&root).unwrap();
    materialize_layers(
        vec![base_layer(busybox, outside.path()), upper_layer()],
        &root,
    )
    .unwrap();
    root
}

/// Overlay support on top of the sandbox; skipped (or failed with REQUIRE_TEST_TOOLS=1)
/// where the kernel refuses unprivileged overlay mounts.
fn overlay_here(dir: &Path) -> bool {
    match overlay_available(dir) {
        Ok(()) => true,
        Err(why) => {
            assert!(!require_tools(), "REQUIRE_TEST_TOOLS=1: {why}");
            eprintln!("skipped: {why}");
            false
        }
    }
}

#[test]
fn overlay_changes_equal_the_snapshot_diff_and_leave_the_lower_tree_alone() {
    let Some(busybox) = busybox() else { return };
    let work = workdir();
    if !overlay_here(work.path()) {
        return;
    }
    let plain = tree(&busybox, work.path(), "plain");
    let lower = tree(&busybox, work.path(), "lower");
    let mut script = String::from(
        "set -e
         echo new > /etc/new
         echo keep > /etc/keep
         rm /etc/gone
         rm -r /opt/cache && mkdir /opt/cache && echo new > /opt/cache/new && echo more > /opt/cache/more
         mkdir -p /var/x/y && echo z > /var/x/y/z
         rm -r /usr/lib && echo now-a-file > /usr/lib
         ln /data/a /data/c
         chmod 700 /data/b
         ln -s elsewhere /etc/link
         echo scratch > /tmp/t",
    );
    if effective_uid().unwrap() == 0 {
        script.push_str("\nchown 5:6 /etc/keep");
    }
    // As the native engine prepares a plain root: hard links separated as an overlay's
    // copy-up separates them.
    assert_eq!(separate_hard_links(&plain).unwrap(), 1);
    let before = snapshot(&plain, EXCLUDED).unwrap();
    let out = sh_plain(&plain, &script);
    assert_eq!(
        out.status,
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = diff(&before, &snapshot(&plain, EXCLUDED).unwrap());

    let lower_before = snapshot(&lower, &[]).unwrap();
    let overlay = OverlayRoot::create(&lower, &work.path().join("upper")).unwrap();
    let out = sh_over(overlay.upper(), &lower, &script);
    assert_eq!(
        out.status,
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = overlay.changes(EXCLUDED).unwrap();
    assert_eq!(got, want);
    for expected in [
        Change::Added("etc/new".into()),
        Change::Removed("etc/gone".into()),
        Change::Modified("opt/cache".into()),
        Change::Added("opt/cache/more".into()),
        Change::Modified("usr/lib".into()),
        Change::Removed("usr/lib/libfoo.so".into()),
        Change::Added("var/x/y/z".into()),
        Change::Added("data/c".into()),
        Change::Modified("data/b".into()),
    ] {
        assert!(got.contains(&expected), "{expected:?} missing from {got:?}");
    }
    // `data/a` shared its inode with `data/b` in the image: only the name changed changes.
    assert!(!got.iter().any(|c| c.path() == "data/a"), "{got:?}");
    // Rewritten with the same bytes: not a change (unless its owner changed).
    let keep_changed = got.contains(&Change::Modified("etc/keep".into()));
    assert_eq!(keep_changed, effective_uid().unwrap() == 0, "{got:?}");
    assert!(!got.iter().any(|c| c.path().starts_with("tmp")), "{got:?}");
    // The shared tree is exactly as it was: every write went to the upper directory.
    assert_eq!(snapshot(&lower, &[]).unwrap(), lower_before);
    // Records of changed paths come from the upper directory, ids as the image sees them.
    let new = record_at(overlay.upper(), "etc/new").unwrap();
    assert_eq!((new.uid, new.gid, new.size), (0, 0, 4));
}

#[test]
fn host_writes_into_the_upper_directory_are_what_the_next_mount_shows() {
    let Some(busybox) = busybox() else { return };
    let work = workdir();
    if !overlay_here(work.path()) {
        return;
    }
    let lower = tree(&busybox, work.path(), "lower");
    let lower_before = snapshot(&lower, &[]).unwrap();
    let overlay = OverlayRoot::create(&lower, &work.path().join("upper")).unwrap();
    // A file below lower directories, a whiteout, an emptied directory, a hard link to a
    // lower file (copied up first), a new directory.
    let at = overlay.prepare_entry("etc/added").unwrap();
    fs::write(&at, "added\n").unwrap();
    overlay.remove("etc/gone").unwrap();
    overlay.remove("etc/never-there").unwrap();
    overlay.clear_dir("opt/cache").unwrap();
    let source = overlay.copy_up("data/a").unwrap();
    let link = overlay.prepare_entry("data/hard").unwrap();
    fs::hard_link(source, link).unwrap();
    overlay.ensure_dir("srv/new").unwrap();
    // A symbolic link on the way is refused: writes never leave the root.
    assert!(overlay.prepare_entry("usr/lib/libfoo.so/x").is_err());
    assert!(overlay.ensure_dir("bin/sh/x").is_err());

    let out = sh_over(
        overlay.upper(),
        &lower,
        "cat /etc/added; ls /etc; echo cache:; ls -A /opt/cache; echo end; cat /data/hard; ls -d /srv/new",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status,
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("added\n"), "{stdout}");
    assert!(
        stdout.contains("keep\n") && !stdout.contains("gone"),
        "{stdout}"
    );
    assert!(
        stdout.contains("linked\n") && stdout.contains("/srv/new"),
        "{stdout}"
    );
    assert!(stdout.contains("cache:\nend\n"), "{stdout}");
    let changes = overlay.changes(EXCLUDED).unwrap();
    for expected in [
        Change::Added("etc/added".into()),
        Change::Removed("etc/gone".into()),
        Change::Removed("opt/cache/new".into()),
        Change::Added("data/hard".into()),
        Change::Added("srv/new".into()),
    ] {
        assert!(
            changes.contains(&expected),
            "{expected:?} missing from {changes:?}"
        );
    }
    assert!(!changes.iter().any(|c| c.path() == "etc/never-there"));
    assert!(!changes.iter().any(|c| c.path() == "data/a"), "{changes:?}");
    assert_eq!(snapshot(&lower, &[]).unwrap(), lower_before);
}

#[test]
fn paths_an_overlay_mount_cannot_name_are_refused() {
    let work = workdir();
    let lower = work.path().join("lower");
    fs::create_dir(&lower).unwrap();
    for bad in ["up,per", "up:per", "up\\per"] {
        let err = OverlayRoot::create(&lower, &work.path().join(bad)).unwrap_err();
        assert!(err.to_string().contains("overlay mount"), "{err}");
        assert!(!work.path().join(bad).exists());
    }
}
