//! [`run`]: one command in the sandbox, through host binaries (util-linux `unshare`,
//! `mount`, `pivot_root`, `setpriv`; coreutils `env`, `chroot`).
//!
//! Inside new user, mount, pid, network, IPC and UTS namespaces, a shell script (fixed
//! text; paths and arguments only ever arrive as positional parameters) mounts a tmpfs
//! holding read-only binds of the host's `/usr` and `/lib*` (for the host tools) and the
//! image at `/root`, with a fresh `/proc` and the host's `/dev/{null,zero,random,urandom}`
//! bound over placeholder files; it then `pivot_root`s into the tmpfs and unmounts the
//! host's root, and runs `env -i <env> chroot /root <argv>`. Nothing of the host's file
//! system is left to escape to: a chroot escape lands in the tmpfs.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use super::overlay::{self, OverlayRoot, OverlayWork};
use super::process::supervise;
use super::{effective_uid, SandboxError, ROOT_ID_BASE};

/// A command to run in the sandbox over `root` (a tree from [`super::materialize`]).
#[derive(Debug, Clone)]
pub struct SandboxCommand<'a> {
    /// The root; with `lower`, the upper directory of an [`super::OverlayRoot`].
    pub root: &'a Path,
    /// Mount `root` as the upper directory of an overlay over this tree.
    pub lower: Option<&'a Path>,
    /// The program (looked up in the image, with the given `PATH` when it has no `/`) and
    /// its arguments.
    pub argv: &'a [String],
    /// The whole environment: nothing of the caller's is passed on. Names must be
    /// `[A-Za-z_][A-Za-z0-9_]*`.
    pub env: &'a [(String, String)],
    /// Bytes for standard input; `None` gives `/dev/null`.
    pub stdin: Option<&'a [u8]>,
    /// Then everything in the sandbox is killed.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOutput {
    /// The exit status; `None` when killed by a signal (or on timeout).
    pub status: Option<i32>,
    /// At most [`OUTPUT_LIMIT`] bytes of each stream; the rest is read and dropped.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

/// Bytes kept of each output stream.
pub const OUTPUT_LIMIT: usize = 1 << 20;

/// Where host tools are looked for; the sandbox's mount namespace has the same paths.
pub(super) const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How the setup script reports its own failures (exit status 125, like `chroot`).
const SETUP_FAILED: &str = "patchpull-sandbox: setup failed";

/// Runs as the sandbox's root, in its namespaces: `$1` the tmpfs mount point, `$2` the
/// image root (an overlay's upper directory when `$3` names its lower tree, `$4` its work
/// directory), `$5` the host `env`; the rest is `env`'s arguments.
const SETUP: &str = r#"
fail() { echo "patchpull-sandbox: setup failed: $1" >&2; exit 125; }
t=$1 r=$2 l=$3 w=$4 envbin=$5
shift 5
mount -t tmpfs -o mode=0755 sandbox "$t" || fail "tmpfs"
for d in usr bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$d" ]; then
        ln -s "$(readlink "/$d")" "$t/$d" || fail "link /$d"
    elif [ -d "/$d" ]; then
        mkdir "$t/$d" && mount --rbind "/$d" "$t/$d" || fail "bind /$d"
        mount -o remount,bind,ro "$t/$d" 2>/dev/null
    fi
done
mkdir "$t/root" "$t/old" "$t/proc" || fail "mkdir"
if [ -n "$l" ]; then
    mount -t overlay overlay -o "userxattr,lowerdir=$l,upperdir=$r,workdir=$w" "$t/root" || fail "overlay root"
else
    mount --rbind "$r" "$t/root" || fail "bind the root"
fi
mount -t proc proc "$t/root/proc" || fail "proc"
for d in null zero random urandom; do
    mount --bind "/dev/$d" "$t/root/dev/$d" || fail "/dev/$d"
done
# umount reads /proc/self/mountinfo: the tmpfs needs a /proc until the old root is gone.
mount -t proc proc "$t/proc" || fail "proc"
cd "$t" && pivot_root . old && umount -l /old && umount -l /proc && cd / || fail "pivot_root"
exec "$envbin" -i "$@"
"#;

/// A root caller's first stage, in the new user namespace before it has an id map: waits
/// for the map that [`run`] writes, then execs the rest (the map makes it root there).
const WAIT_FOR_MAP: &str = r#"
i=0
until [ -n "$(cat /proc/self/uid_map 2>/dev/null)" ]; do
    i=$((i + 1))
    if [ "$i" -gt 2000 ]; then echo "patchpull-sandbox: setup failed: no id map" >&2; exit 125; fi
    sleep 0.005
done
exec "$@"
"#;

/// Whether this host can run the sandbox: the tools exist, and user namespaces (with
/// mount, pid and network namespaces, `/proc` and tmpfs mounts in them) are allowed. Probed
/// once per process. `Err` says why not.
pub fn available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    let root = effective_uid().map_err(|e| e.to_string())? == 0;
    for tool in [
        "unshare",
        "mount",
        "umount",
        "pivot_root",
        "env",
        "chroot",
        "sh",
    ] {
        find_tool(tool)?;
    }
    let mut command = if root {
        let mut c = Command::new(find_tool("setpriv")?);
        c.args(drop_to(ROOT_ID_BASE, ROOT_ID_BASE))
            .arg(find_tool("unshare")?);
        c
    } else {
        Command::new(find_tool("unshare")?)
    };
    command
        .args(["--user", "--map-root-user"])
        .args(NAMESPACES)
        .args(["--", "sh", "-c"])
        .arg("mount -t proc proc /proc && mount -t tmpfs sandbox /tmp");
    let output = supervise(command, None, Duration::from_secs(10), None)
        .map_err(|e| format!("cannot start unshare: {e}"))?;
    if output.status == Some(0) {
        return Ok(());
    }
    Err(format!(
        "unshare cannot make the sandbox's namespaces{}: {}",
        if root { " as an unprivileged user" } else { "" },
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

/// The namespaces besides the user one, for `unshare`.
const NAMESPACES: [&str; 9] = [
    "--mount",
    "--propagation",
    "private",
    "--pid",
    "--fork",
    "--kill-child",
    "--net",
    "--ipc",
    "--uts",
];

pub(super) fn drop_to(uid: u32, gid: u32) -> [String; 4] {
    [
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".to_owned(),
        "--".to_owned(),
    ]
}

pub(super) fn find_tool(name: &str) -> Result<PathBuf, String> {
    HOST_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("`{name}` not found in {HOST_PATH}"))
}

/// Runs `cmd` in the sandbox and returns its status and output. A non-zero status is an
/// `Ok`: it is the command's.
///
/// Errors: [`SandboxError::Unavailable`] (see [`available`]),
/// [`SandboxError::InvalidCommand`], [`SandboxError::UnsafeRoot`] (a mount point in the
/// root is a link; for a root caller, a root not made by `materialize` or whose ancestors
/// the sandbox user cannot search), [`SandboxError::Setup`], I/O errors.
pub fn run(cmd: &SandboxCommand<'_>) -> Result<SandboxOutput, SandboxError> {
    available().map_err(SandboxError::Unavailable)?;
    validate(cmd)?;
    let root = fs::canonicalize(cmd.root).map_err(|e| SandboxError::io("resolve", cmd.root, e))?;
    let lower = match cmd.lower {
        Some(lower) => {
            let lower =
                fs::canonicalize(lower).map_err(|e| SandboxError::io("resolve", lower, e))?;
            overlay::mount_safe(&lower)?;
            overlay::mount_safe(&root)?;
            Some(lower)
        }
        None => None,
    };
    let meta = fs::metadata(&root).map_err(|e| SandboxError::io("stat", &root, e))?;
    let unsafe_root = |reason: String| SandboxError::UnsafeRoot {
        root: root.clone(),
        reason,
    };
    let host_root = effective_uid()? == 0;
    if host_root {
        if meta.uid() == 0 || meta.gid() == 0 {
            return Err(unsafe_root(
                "owned by host root: a root caller's tree must come from materialize".into(),
            ));
        }
        searchable(&root, meta.uid(), meta.gid()).map_err(unsafe_root)?;
        if let Some(lower) = &lower {
            searchable(lower, meta.uid(), meta.gid()).map_err(unsafe_root)?;
        }
        adopt(&root, meta.uid(), meta.gid())?;
    }
    let overlay = lower.as_ref().map(|lower| OverlayRoot::open(lower, &root));
    let overlay_work = match &overlay {
        Some(_) => Some(OverlayWork::make(&root)?),
        None => None,
    };
    let placeholders = Placeholders::make(&root, overlay.as_ref())?;
    let work = WorkDir::make(&root)?;
    let tool = |name: &str| find_tool(name).map_err(SandboxError::Unavailable);

    let mut command = if host_root {
        let mut c = Command::new(tool("setpriv")?);
        c.args(drop_to(meta.uid(), meta.gid()))
            .arg(tool("unshare")?)
            .args(["--user", "--", "sh", "-c", WAIT_FOR_MAP, "sh"])
            .arg(tool("unshare")?);
        c
    } else {
        let mut c = Command::new(tool("unshare")?);
        c.args(["--user", "--map-root-user"]);
        c
    };
    command
        .args(NAMESPACES)
        .args(["--", "sh", "-c", SETUP, "sh"])
        .arg(&work.0)
        .arg(&root)
        .arg(lower.as_deref().unwrap_or(Path::new("")))
        .arg(overlay_work.as_ref().map_or(Path::new(""), |w| w.path()))
        .arg(tool("env")?)
        .args(cmd.env.iter().map(|(k, v)| format!("{k}={v}")))
        .arg(tool("chroot")?)
        .args(["--", "/root"])
        .args(cmd.argv);
    let map = host_root.then(|| (meta.uid(), meta.gid()));
    let output = supervise(command, cmd.stdin, cmd.timeout, map)
        .map_err(|e| SandboxError::io("run unshare for", &root, e))?;
    drop(placeholders);
    drop(work);
    drop(overlay_work);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let setup_failed = (output.status == Some(125) && stderr.contains(SETUP_FAILED))
        || (output.status == Some(1)
            && (stderr.starts_with("unshare: ") || stderr.starts_with("setpriv: ")));
    if setup_failed {
        return Err(SandboxError::Setup {
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(output)
}

fn validate(cmd: &SandboxCommand<'_>) -> Result<(), SandboxError> {
    let invalid = |what: String| Err(SandboxError::InvalidCommand(what));
    if cmd.argv.is_empty() {
        return invalid("empty argv".into());
    }
    if let Some(arg) = cmd.argv.iter().find(|a| a.contains('\0')) {
        return invalid(format!("argument {arg:?} holds a NUL byte"));
    }
    for (name, value) in cmd.env {
        let mut chars = name.chars();
        let good_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !good_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return invalid(format!("environment name {name:?}"));
        }
        if value.contains('\0') {
            return invalid(format!("environment value of {name} holds a NUL byte"));
        }
    }
    Ok(())
}

/// Checks that user `uid` (group `gid`) can reach `root`: a root caller's sandbox runs as
/// that user and mounts the root by path.
pub(super) fn searchable(root: &Path, uid: u32, gid: u32) -> Result<(), String> {
    for dir in root.ancestors().skip(1) {
        let meta = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mode = meta.mode();
        let ok = mode & 0o001 != 0
            || (meta.uid() == uid && mode & 0o100 != 0)
            || (meta.gid() == gid && mode & 0o010 != 0);
        if !ok {
            return Err(format!(
                "{} (mode {:o}) is not searchable by the sandbox's user {uid}; \
                 use a work directory with mode 0711 or wider",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// Hands paths a root caller wrote into the tree (host id 0) to the sandbox's root, so
/// that scripts can change them as they could under dpkg.
fn adopt(root: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let listing = fs::read_dir(&dir).map_err(|e| SandboxError::io("read", &dir, e))?;
        for child in listing {
            let child = child.map_err(|e| SandboxError::io("read", &dir, e))?;
            let meta = child
                .metadata()
                .map_err(|e| SandboxError::io("stat", child.path(), e))?;
            let path = child.path();
            if meta.uid() == 0 || meta.gid() == 0 {
                let new_uid = (meta.uid() == 0).then_some(uid);
                let new_gid = (meta.gid() == 0).then_some(gid);
                std::os::unix::fs::lchown(&path, new_uid, new_gid)
                    .map_err(|e| SandboxError::io("chown", &path, e))?;
                // chown clears set-id bits; give them back.
                if !meta.file_type().is_symlink() && meta.mode() & 0o6000 != 0 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode() & 0o7777))
                        .map_err(|e| SandboxError::io("chmod", &path, e))?;
                }
            }
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    Ok(())
}

/// Mount points and `/dev` entries that [`run`] made in the root, removed again when
/// dropped so that they never show in a diff.
struct Placeholders<'a> {
    root: PathBuf,
    /// Set when `root` is an overlay's upper directory: what exists is the merged view's.
    overlay: Option<&'a OverlayRoot>,
    made: Vec<PathBuf>,
}

impl<'a> Placeholders<'a> {
    fn make(
        root: &Path,
        overlay: Option<&'a OverlayRoot>,
    ) -> Result<Placeholders<'a>, SandboxError> {
        let mut made = Placeholders {
            root: root.to_path_buf(),
            overlay,
            made: Vec::new(),
        };
        made.dir("proc", 0o555)?;
        made.dir("dev", 0o755)?;
        for device in ["null", "zero", "random", "urandom"] {
            made.file(&format!("dev/{device}"))?;
        }
        for (name, target) in [
            ("dev/fd", "/proc/self/fd"),
            ("dev/stdin", "/proc/self/fd/0"),
            ("dev/stdout", "/proc/self/fd/1"),
            ("dev/stderr", "/proc/self/fd/2"),
        ] {
            made.link(name, target)?;
        }
        made.dir("dev/shm", 0o1777)?;
        Ok(made)
    }

    /// `Ok(true)` when nothing is at `name`; an error when a link is (mounting on it
    /// would follow it out of the root).
    fn absent(&self, name: &str, want_dir: bool) -> Result<bool, SandboxError> {
        let path = self.root.join(name);
        let found = match self.overlay {
            Some(overlay) => overlay
                .merged_metadata(name)?
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
            None => fs::symlink_metadata(&path),
        };
        match found {
            Ok(m) if m.file_type().is_symlink() || m.is_dir() != want_dir => {
                Err(SandboxError::UnsafeRoot {
                    root: self.root.clone(),
                    reason: format!(
                        "/{name} must be a {}",
                        if want_dir { "directory" } else { "file" }
                    ),
                })
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(SandboxError::io("stat", path, e)),
        }
    }

    fn dir(&mut self, name: &str, mode: u32) -> Result<(), SandboxError> {
        if self.absent(name, true)? {
            self.parent_in_upper(name)?;
            let path = self.root.join(name);
            fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
                .map_err(|e| SandboxError::io("mkdir", &path, e))?;
            self.made.push(path);
        }
        Ok(())
    }

    fn file(&mut self, name: &str) -> Result<(), SandboxError> {
        if self.absent(name, false)? {
            self.parent_in_upper(name)?;
            let path = self.root.join(name);
            File::create_new(&path).map_err(|e| SandboxError::io("create", &path, e))?;
            self.made.push(path);
        }
        Ok(())
    }

    /// An overlay's upper directory gets the directories above a placeholder.
    fn parent_in_upper(&self, name: &str) -> Result<(), SandboxError> {
        match (self.overlay, name.rsplit_once('/')) {
            (Some(overlay), Some((parent, _))) => overlay.ensure_dir(parent).map(drop),
            _ => Ok(()),
        }
    }

    fn link(&mut self, name: &str, target: &str) -> Result<(), SandboxError> {
        let path = self.root.join(name);
        let exists = match self.overlay {
            Some(overlay) => overlay.merged_metadata(name)?.is_some(),
            None => fs::symlink_metadata(&path).is_ok(),
        };
        if !exists {
            self.parent_in_upper(name)?;
            symlink(target, &path).map_err(|e| SandboxError::io("symlink", &path, e))?;
            self.made.push(path);
        }
        Ok(())
    }
}

impl Drop for Placeholders<'_> {
    fn drop(&mut self) {
        for path in self.made.iter().rev() {
            let _ = match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => fs::remove_dir(path),
                _ => fs::remove_file(path),
            };
        }
    }
}

/// The tmpfs mount point, an empty host directory outside the root (the mount exists
/// only in the sandbox's mount namespace). Beside the root rather than in `/tmp`: the
/// root's directory is patchpull's own scratch space, writable and (checked above)
/// searchable by the sandbox's user wherever the store is, while `/tmp` may be missing or
/// read-only in a container.
struct WorkDir(PathBuf);

impl WorkDir {
    fn make(root: &Path) -> Result<WorkDir, SandboxError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = root.parent().unwrap_or(Path::new("/"));
        let path = parent.join(format!(
            ".patchpull-sandbox-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of a crashed process with the same pid is empty: replace it.
        let _ = fs::remove_dir(&path);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(|e| SandboxError::io("mkdir", &path, e))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}
