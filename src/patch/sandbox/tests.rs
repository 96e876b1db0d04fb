//! Materializing synthetic layers (tar built in memory, hostile names written raw) and
//! running busybox in the sandbox. The sandbox tests need a static `/bin/busybox` and user
//! namespaces; without them they are skipped, unless `REQUIRE_TEST_TOOLS=1`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use flate2::write::GzEncoder;

use super::*;
use crate::image::{ImageError, LayerDescriptor, Limits, MEDIA_TYPE_OCI_LAYER_GZIP};

/// One layer's tar, entries in call order.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn entry(
        mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        link: &str,
        data: &[u8],
    ) -> Layer {
        let mut header = tar::Header::new_gnu();
        let name = name.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        if !link.is_empty() {
            header.set_link_name_literal(link).unwrap();
        }
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Layer {
        self.entry(name, tar::EntryType::Regular, 0o644, "", data)
    }

    fn exe(self, name: &str, data: &[u8]) -> Layer {
        self.entry(name, tar::EntryType::Regular, 0o755, "", data)
    }

    fn dir(self, name: &str, mode: u32) -> Layer {
        self.entry(name, tar::EntryType::Directory, mode, "", b"")
    }

    fn symlink(self, name: &str, target: &str) -> Layer {
        self.entry(name, tar::EntryType::Symlink, 0o777, target, b"")
    }

    fn hardlink(self, name: &str, target: &str) -> Layer {
        self.entry(name, tar::EntryType::Link, 0o644, target, b"")
    }

    fn gzip(self) -> Vec<u8> {
        let tar = self.0.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }
}

fn descriptors(n: usize) -> Vec<LayerDescriptor> {
    (0..n)
        .map(|i| LayerDescriptor::new(format!("sha256:{i:064}"), MEDIA_TYPE_OCI_LAYER_GZIP))
        .collect()
}

pub(super) fn materialize_layers(
    blobs: Vec<Vec<u8>>,
    root: &Path,
) -> Result<Materialized, SandboxError> {
    materialize(&blobs, &descriptors(blobs.len()), root, &Limits::default())
}

/// A work directory the sandbox's user can reach (a root caller runs it as another user).
pub(super) fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

pub(super) fn require_tools() -> bool {
    std::env::var("REQUIRE_TEST_TOOLS").is_ok_and(|v| v == "1")
}

/// `/bin/busybox` when it is a static binary and the sandbox works here.
pub(crate) fn busybox() -> Option<Vec<u8>> {
    let skip = |why: String| {
        assert!(!require_tools(), "REQUIRE_TEST_TOOLS=1: {why}");
        eprintln!("skipped: {why}");
        None
    };
    let Ok(bytes) = fs::read("/bin/busybox") else {
        return skip("no /bin/busybox".into());
    };
    // A static ELF has no PT_INTERP program header, so no interpreter path in it.
    if bytes
        .windows(10)
        .any(|w| w == b"/lib64/ld-" || w == b"/lib/ld-li")
    {
        return skip("/bin/busybox is not statically linked".into());
    }
    if let Err(why) = available() {
        return skip(why);
    }
    Some(bytes)
}

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "id", "grep", "ls", "rm", "sleep", "env", "chown", "chmod", "yes", "head",
    "ln", "mkdir", "touch",
];

/// Layer 1: busybox and its applets, files to delete, a directory made opaque later, a
/// symbolic link, a hard link, a device node and a link `evil` to `outside`.
pub(super) fn base_layer(busybox: &[u8], outside: &Path) -> Vec<u8> {
    let mut layer = Layer::new().dir("bin", 0o755).exe("bin/busybox", busybox);
    for applet in APPLETS {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer
        .dir("etc", 0o755)
        .file("etc/gone", b"remove me\n")
        .file("etc/keep", b"keep\n")
        .file("etc/whited-out", b"lower\n")
        .dir("opt/cache", 0o700)
        .file("opt/cache/old", b"old\n")
        .file("usr/lib/libfoo.so.1", b"\x7fELF")
        .symlink("usr/lib/libfoo.so", "libfoo.so.1")
        .exe("data/a", b"linked\n")
        .hardlink("data/b", "data/a")
        .entry("dev/null", tar::EntryType::Char, 0o666, "", b"")
        .dir("tmp", 0o1777)
        .symlink("evil", outside.to_str().unwrap())
        .gzip()
}

/// Layer 2: a whiteout, an opaque directory, and `evil/x` below layer 1's link.
pub(super) fn upper_layer() -> Vec<u8> {
    Layer::new()
        .file("etc/.wh.whited-out", b"")
        .file("opt/cache/new", b"new\n")
        .file("opt/cache/.wh..wh..opq", b"")
        .file("evil/x", b"stays inside\n")
        .gzip()
}

#[test]
fn materialize_applies_layers_and_whiteouts() {
    let outside = tempfile::tempdir().unwrap();
    let work = workdir();
    let root = work.path();
    let done = materialize_layers(
        vec![base_layer(b"#!fake busybox", outside.path()), upper_layer()],
        root,
    )
    .unwrap();
    assert_eq!(done.skipped_devices, 1);
    assert!(done.entries > 20);
    assert_eq!(fs::read(root.join("etc/keep")).unwrap(), b"keep\n");
    assert!(!root.join("etc/whited-out").exists(), "whiteout applied");
    assert!(!root.join("dev/null").exists(), "devices are skipped");
    // The opaque marker came after `new` in its layer and still hid only `old`.
    assert_eq!(fs::read(root.join("opt/cache/new")).unwrap(), b"new\n");
    assert!(!root.join("opt/cache/old").exists());
    let cache = fs::metadata(root.join("opt/cache")).unwrap();
    assert_eq!(cache.mode() & 0o7777, 0o700);
    assert_eq!(
        fs::read_link(root.join("usr/lib/libfoo.so")).unwrap(),
        Path::new("libfoo.so.1")
    );
    assert_eq!(
        fs::metadata(root.join("bin/busybox")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    let (a, b) = (
        fs::metadata(root.join("data/a")).unwrap(),
        fs::metadata(root.join("data/b")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "hard link kept");
    // Layer 2's entry below layer 1's link made `evil` a directory, as overlayfs does.
    assert!(fs::symlink_metadata(root.join("evil")).unwrap().is_dir());
    assert_eq!(fs::read(root.join("evil/x")).unwrap(), b"stays inside\n");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    if effective_uid().unwrap() == 0 {
        assert_eq!(root.metadata().unwrap().uid(), ROOT_ID_BASE);
        assert_eq!(a.uid(), ROOT_ID_BASE);
    }
    // Not into a non-empty directory.
    assert!(matches!(
        materialize_layers(vec![upper_layer()], root),
        Err(SandboxError::NotEmpty(_))
    ));
}

#[test]
fn materialize_refuses_hostile_layers() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"host file\n").unwrap();
    let target = outside.path().to_str().unwrap();

    let escape = Layer::new().file("../escape", b"x").gzip();
    let work = workdir();
    let err = materialize_layers(vec![escape], work.path()).unwrap_err();
    assert!(
        matches!(err, SandboxError::Image(ImageError::UnsafePath { .. })),
        "{err}"
    );

    let through_link = Layer::new()
        .symlink("evil", target)
        .file("evil/x", b"x")
        .gzip();
    let work = workdir();
    let err = materialize_layers(vec![through_link], work.path()).unwrap_err();
    assert!(matches!(err, SandboxError::UnsafeEntry { .. }), "{err}");

    let link_out = Layer::new()
        .symlink("evil", target)
        .hardlink("stolen", "evil/secret")
        .gzip();
    let work = workdir();
    let err = materialize_layers(vec![link_out], work.path()).unwrap_err();
    assert!(matches!(err, SandboxError::UnsafeEntry { .. }), "{err}");
    assert!(!work.path().join("stolen").exists());

    let names: Vec<_> = fs::read_dir(outside.path()).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "nothing written outside the root");
    assert_eq!(
        fs::metadata(outside.path().join("secret")).unwrap().nlink(),
        1
    );
}

#[test]
fn diff_sees_content_mode_owner_and_links_but_not_times() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("proc/1")).unwrap();
    fs::create_dir_all(root.join("var/lib/dpkg/tmp.ci")).unwrap();
    for name in ["touched", "edited", "chmodded", "gone", "retyped"] {
        fs::write(root.join("etc").join(name), b"same\n").unwrap();
    }
    std::os::unix::fs::symlink("a", root.join("etc/link")).unwrap();
    let exclude = ["proc", "var/lib/dpkg/tmp.ci"];
    let before = snapshot(root, &exclude).unwrap();
    assert!(before.get("proc").is_none() && before.get("proc/1").is_none());
    assert!(before.get("var/lib/dpkg").is_some());
    assert!(before.get("var/lib/dpkg/tmp.ci").is_none());
    let record = before.get("etc/touched").unwrap();
    assert_eq!(record.kind, FileKind::File);
    assert_eq!(record.size, 5);
    assert!(record.sha256.is_some());

    let later = SystemTime::now() + Duration::from_secs(3600);
    let file = fs::File::options()
        .write(true)
        .open(root.join("etc/touched"))
        .unwrap();
    file.set_modified(later).unwrap();
    fs::write(root.join("etc/touched"), b"same\n").unwrap();
    fs::write(root.join("etc/edited"), b"diff\n").unwrap();
    fs::set_permissions(root.join("etc/chmodded"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(root.join("etc/gone")).unwrap();
    fs::remove_file(root.join("etc/retyped")).unwrap();
    fs::create_dir(root.join("etc/retyped")).unwrap();
    fs::remove_file(root.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("b", root.join("etc/link")).unwrap();
    fs::write(root.join("etc/new"), b"").unwrap();
    fs::write(root.join("proc/1/status"), b"ignored").unwrap();
    fs::write(root.join("var/lib/dpkg/tmp.ci/postinst"), b"ignored").unwrap();

    let after = snapshot(root, &exclude).unwrap();
    assert_eq!(
        diff(&before, &after),
        vec![
            Change::Modified("etc/chmodded".into()),
            Change::Modified("etc/edited".into()),
            Change::Removed("etc/gone".into()),
            Change::Modified("etc/link".into()),
            Change::Added("etc/new".into()),
            Change::Modified("etc/retyped".into()),
        ]
    );
}

/// A materialized busybox image in a fresh work directory.
pub(crate) fn busybox_root(busybox: &[u8]) -> (tempfile::TempDir, tempfile::TempDir) {
    let outside = tempfile::tempdir().unwrap();
    let work = workdir();
    fs::create_dir(work.path().join("root")).unwrap();
    materialize_layers(
        vec![base_layer(busybox, outside.path()), upper_layer()],
        &work.path().join("root"),
    )
    .unwrap();
    (work, outside)
}

pub(super) fn sh(root: &Path, script: &str, timeout: Duration) -> SandboxOutput {
    let argv = ["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let env = [("PATH".to_owned(), "/bin".to_owned())];
    run(&SandboxCommand {
        lower: None,
        root,
        argv: &argv,
        env: &env,
        stdin: None,
        timeout,
    })
    .unwrap()
}

#[test]
fn run_changes_the_root_as_root_and_leaves_no_trace_in_dev() {
    let Some(busybox) = busybox() else { return };
    let (work, _outside) = busybox_root(&busybox);
    let root = work.path().join("root");
    let before = snapshot(&root, &[]).unwrap();
    let root_caller = effective_uid().unwrap() == 0;
    let mut script = "echo hi > /etc/new; rm /etc/gone; id -u; \
                      cat /proc/self/status | grep -c NSpid; ls /dev/null"
        .to_owned();
    if root_caller {
        // Only a root caller's sandbox maps ids other than 0.
        script.push_str("; chown 5:6 /etc/keep");
    }
    let out = sh(&root, &script, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status, Some(0), "{stderr}");
    assert!(!out.timed_out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0\n1\n/dev/null\n",
        "{stderr}"
    );
    let after = snapshot(&root, &[]).unwrap();
    let mut want = vec![Change::Removed("etc/gone".into())];
    if root_caller {
        want.push(Change::Modified("etc/keep".into()));
    }
    want.push(Change::Added("etc/new".into()));
    assert_eq!(diff(&before, &after), want, "{stderr}");
    let new = after.get("etc/new").unwrap();
    assert_eq!((new.uid, new.gid, new.size), (0, 0, 3));
    if root_caller {
        let keep = after.get("etc/keep").unwrap();
        assert_eq!((keep.uid, keep.gid), (5, 6));
    }
    // `dev` itself came with the layer's (skipped) device node; what run made is gone.
    assert!(!root.join("proc").exists());
    assert_eq!(fs::read_dir(root.join("dev")).unwrap().count(), 0);
}

#[test]
fn run_has_no_network_and_only_the_given_environment() {
    let Some(busybox) = busybox() else { return };
    let (work, _outside) = busybox_root(&busybox);
    let root = work.path().join("root");
    let out = sh(&root, "cat /proc/net/dev", Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    let interfaces: Vec<&str> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "{text}");

    // What the image sees mounted: itself, a fresh /proc and the four host devices.
    let out = sh(&root, "cat /proc/self/mountinfo", Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut points: Vec<&str> = text.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    points.sort_unstable();
    assert_eq!(
        points,
        [
            "/",
            "/dev/null",
            "/dev/random",
            "/dev/urandom",
            "/dev/zero",
            "/proc"
        ],
        "{text}"
    );

    let argv = ["env".to_owned()];
    let env = [
        ("PATH".to_owned(), "/bin".to_owned()),
        ("ODD".to_owned(), "a b'c\"$HOME".to_owned()),
    ];
    let out = run(&SandboxCommand {
        lower: None,
        root: &root,
        argv: &argv,
        env: &env,
        stdin: None,
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    let mut lines: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines, ["ODD=a b'c\"$HOME", "PATH=/bin"]);

    let bad = [("A=B".to_owned(), String::new())];
    let err = run(&SandboxCommand {
        lower: None,
        root: &root,
        argv: &argv,
        env: &bad,
        stdin: None,
        timeout: Duration::from_secs(30),
    })
    .unwrap_err();
    assert!(matches!(err, SandboxError::InvalidCommand(_)), "{err}");
}

#[test]
fn run_feeds_stdin_bounds_output_and_kills_on_timeout() {
    let Some(busybox) = busybox() else { return };
    let (work, _outside) = busybox_root(&busybox);
    let root = work.path().join("root");
    let argv = ["cat".to_owned()];
    let env = [("PATH".to_owned(), "/bin".to_owned())];
    let out = run(&SandboxCommand {
        lower: None,
        root: &root,
        argv: &argv,
        env: &env,
        stdin: Some(b"from stdin\n"),
        timeout: Duration::from_secs(30),
    })
    .unwrap();
    assert_eq!(out.stdout, b"from stdin\n");

    let out = sh(&root, "yes | head -c 3000000", Duration::from_secs(30));
    assert_eq!(out.stdout.len(), OUTPUT_LIMIT);

    let started = Instant::now();
    let out = sh(&root, "sleep 100 & sleep 100", Duration::from_millis(500));
    assert!(out.timed_out);
    assert_eq!(out.status, None);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The kernel tears a killed pid namespace down after the run returns: on a loaded
    // machine its processes can linger a moment, so look again for a bounded while.
    let sleepers = || {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|p| fs::read(p.path().join("cmdline")).ok())
            .filter(|c| c == b"sleep\x00100\x00")
            .count()
    };
    let mut left = sleepers();
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = sleepers();
    }
    assert_eq!(left, 0, "every process of the sandbox is gone");
}
