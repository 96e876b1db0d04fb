//! A signed Debian-like package archive on loopback, made with the real tools: a test
//! OpenPGP key from `gpg` in a temp `GNUPGHOME`, `.deb`s from `dpkg-deb --build`,
//! `Packages` and `Release` from `apt-ftparchive`, `InRelease` from `gpg --clearsign`,
//! served by `busybox httpd` at `http://127.0.0.1:PORT/debian-security`.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};
use tempfile::TempDir;

/// Tools an archive needs; tests skip without them.
pub const TOOLS: &[&str] = &[
    "gpg",
    "gpgconf",
    "dpkg-deb",
    "apt-ftparchive",
    "xz",
    "busybox",
];
/// The suite every archive publishes.
pub const SUITE: &str = "bookworm-security";

/// `md5sum`-style hex digest.
pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// A GnuPG home with one ed25519 signing key; its agent is stopped on drop.
pub struct Signer {
    home: TempDir,
    pub fingerprint: String,
}

impl Signer {
    pub fn new() -> Signer {
        let home = tempfile::Builder::new()
            .prefix("pp-gpg-")
            .tempdir()
            .expect("gpg home");
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod gpg home");
        let user = "patchpull test archive <archive@example.invalid>";
        gpg_in(
            home.path(),
            &[
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                user,
                "ed25519",
                "sign",
                "never",
            ],
        );
        let listing = gpg_in(home.path(), &["--with-colons", "--list-keys", user]);
        let fingerprint = String::from_utf8_lossy(&listing)
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint of the new key")
            .to_owned();
        Signer { home, fingerprint }
    }

    /// The binary public key, as an apt keyring file.
    pub fn export(&self, path: &Path) {
        let key = gpg_in(self.home.path(), &["--export", &self.fingerprint]);
        std::fs::write(path, key).expect("write keyring");
    }

    pub fn clearsign(&self, input: &Path, output: &Path) {
        gpg_in(
            self.home.path(),
            &[
                "--batch",
                "--yes",
                "--local-user",
                &self.fingerprint,
                "--clearsign",
                "--output",
                output.to_str().expect("utf-8 path"),
                input.to_str().expect("utf-8 path"),
            ],
        );
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn gpg_in(home: &Path, args: &[&str]) -> Vec<u8> {
    output(
        Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--quiet", "--no-tty", "--pinentry-mode", "loopback"])
            .args(args),
    )
}

fn output(command: &mut Command) -> Vec<u8> {
    let out = bounded(command, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `command` to completion, killing it (and panicking) after `patience`. Output goes
/// through temp files, so a chatty child cannot block on a full pipe.
pub fn bounded(command: &mut Command, patience: Duration) -> std::process::Output {
    let dir = tempfile::tempdir().expect("output dir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let deadline = Instant::now() + patience;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} still running after {patience:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out_path).expect("read stdout"),
        stderr: std::fs::read(&err_path).expect("read stderr"),
    }
}

/// One entry of a package's data: a file (contents, mode), a symlink or a directory.
#[derive(Clone, Debug)]
pub enum DebEntry {
    File(String, Vec<u8>, u32),
    Symlink(String, String),
    Dir(String),
}

impl DebEntry {
    pub fn file(path: &str, contents: &[u8], mode: u32) -> DebEntry {
        DebEntry::File(
            path.trim_start_matches('/').to_owned(),
            contents.to_vec(),
            mode,
        )
    }
    pub fn symlink(path: &str, target: &str) -> DebEntry {
        DebEntry::Symlink(path.trim_start_matches('/').to_owned(), target.to_owned())
    }
}

/// A package to build (and, with [`Installed`], to pretend an image has).
#[derive(Clone, Debug)]
pub struct DebSpec {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub entries: Vec<DebEntry>,
    /// Absolute paths of entries that are conffiles.
    pub conffiles: Vec<String>,
    /// (`postinst`, body): maintainer scripts.
    pub scripts: Vec<(String, String)>,
    /// Extra control fields, `Field: value` lines.
    pub control: Vec<String>,
    /// Text of `usr/share/doc/<name>/changelog.Debian.gz`.
    pub changelog: Option<String>,
}

impl DebSpec {
    pub fn new(name: &str, version: &str, architecture: &str) -> DebSpec {
        DebSpec {
            name: name.into(),
            version: version.into(),
            architecture: architecture.into(),
            entries: Vec::new(),
            conffiles: Vec::new(),
            scripts: Vec::new(),
            control: Vec::new(),
            changelog: None,
        }
    }

    pub fn file(mut self, path: &str, contents: &[u8], mode: u32) -> DebSpec {
        self.entries.push(DebEntry::file(path, contents, mode));
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> DebSpec {
        self.entries.push(DebEntry::symlink(path, target));
        self
    }

    pub fn conffile(mut self, path: &str, contents: &[u8]) -> DebSpec {
        self.entries.push(DebEntry::file(path, contents, 0o644));
        self.conffiles
            .push(format!("/{}", path.trim_start_matches('/')));
        self
    }

    pub fn script(mut self, name: &str, body: &str) -> DebSpec {
        self.scripts.push((name.into(), body.into()));
        self
    }

    pub fn changelog(mut self, text: &str) -> DebSpec {
        self.changelog = Some(text.into());
        self
    }

    /// Every entry, with the changelog as a file and the parent directories it implies,
    /// sorted: what `data.tar` holds (without `./`).
    pub fn all_entries(&self) -> Vec<DebEntry> {
        let mut entries = self.entries.clone();
        if let Some(text) = &self.changelog {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(text.as_bytes()).expect("gzip changelog");
            let path = format!("usr/share/doc/{}/changelog.Debian.gz", self.name);
            entries.push(DebEntry::File(path, gz.finish().expect("gzip"), 0o644));
        }
        let mut dirs = std::collections::BTreeSet::new();
        for entry in &entries {
            let path = match entry {
                DebEntry::File(p, ..) | DebEntry::Symlink(p, _) | DebEntry::Dir(p) => p,
            };
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_string_lossy().into_owned());
                parent = dir.parent();
            }
        }
        entries.retain(|e| !matches!(e, DebEntry::Dir(_)));
        entries.extend(dirs.into_iter().map(DebEntry::Dir));
        entries.sort_by(|a, b| entry_path(a).cmp(entry_path(b)));
        entries
    }

    /// `md5sums` as `dh_md5sums` writes it: regular files that are not conffiles.
    pub fn md5sums(&self) -> String {
        let mut out = String::new();
        for entry in self.all_entries() {
            if let DebEntry::File(path, data, _) = entry {
                if !self.conffiles.contains(&format!("/{path}")) {
                    out.push_str(&format!("{}  {path}\n", md5_hex(&data)));
                }
            }
        }
        out
    }

    /// The `.deb`'s file name in the pool.
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }

    fn control_text(&self) -> String {
        let mut control = format!(
            "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Test <t@example.invalid>\n",
            self.name, self.version, self.architecture
        );
        for line in &self.control {
            control.push_str(line);
            control.push('\n');
        }
        control.push_str("Description: test package\n made by the patchpull tests\n");
        control
    }

    /// Builds the package with `dpkg-deb --root-owner-group --build` into `dir`.
    pub fn build(&self, dir: &Path) -> PathBuf {
        let work = tempfile::tempdir().expect("deb work dir");
        let root = work.path().join("root");
        std::fs::create_dir_all(root.join("DEBIAN")).expect("DEBIAN dir");
        for entry in self.all_entries() {
            match entry {
                DebEntry::Dir(path) => std::fs::create_dir_all(root.join(path)).expect("dir"),
                DebEntry::File(path, data, mode) => {
                    let at = root.join(path);
                    std::fs::write(&at, data).expect("file");
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode))
                        .expect("chmod");
                }
                DebEntry::Symlink(path, target) => {
                    std::os::unix::fs::symlink(target, root.join(path)).expect("symlink")
                }
            }
        }
        // Directories 0755 whatever the umask said.
        for entry in self.all_entries() {
            if let DebEntry::Dir(path) = entry {
                std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(0o755))
                    .expect("chmod dir");
            }
        }
        let debian = root.join("DEBIAN");
        std::fs::set_permissions(&debian, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(debian.join("control"), self.control_text()).expect("control");
        std::fs::write(debian.join("md5sums"), self.md5sums()).expect("md5sums");
        if !self.conffiles.is_empty() {
            let list: String = self.conffiles.iter().map(|c| format!("{c}\n")).collect();
            std::fs::write(debian.join("conffiles"), list).expect("conffiles");
        }
        for (name, body) in &self.scripts {
            let path = debian.join(name);
            std::fs::write(&path, body).expect("script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod script");
        }
        std::fs::create_dir_all(dir).expect("pool dir");
        let deb = dir.join(self.file_name());
        output(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zxz", "--build"])
                .arg(&root)
                .arg(&deb),
        );
        deb
    }
}

/// The entry's path, without a leading `/`.
pub fn entry_path(entry: &DebEntry) -> &str {
    match entry {
        DebEntry::File(p, ..) | DebEntry::Symlink(p, _) | DebEntry::Dir(p) => p,
    }
}

/// A `.deb` whose `data.tar.gz` holds one file at `evil_path` (e.g. `../../etc/passwd`),
/// written by hand because neither `dpkg-deb` nor the `tar` crate make such names.
pub fn hostile_deb(spec: &DebSpec, evil_path: &str, dir: &Path) -> PathBuf {
    let control = tar_gz(&[(
        "./control".to_owned(),
        spec.control_text().into_bytes(),
        0o644,
    )]);
    let data = tar_gz(&[
        ("./".to_owned(), Vec::new(), 0o755),
        (
            evil_path.to_owned(),
            b"root::0:0:owned:/root:/bin/sh\n".to_vec(),
            0o644,
        ),
    ]);
    let mut ar = b"!<arch>\n".to_vec();
    for (name, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", control),
        ("data.tar.gz", data),
    ] {
        ar.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                body.len()
            )
            .as_bytes(),
        );
        ar.extend_from_slice(&body);
        if body.len() % 2 == 1 {
            ar.push(b'\n');
        }
    }
    std::fs::create_dir_all(dir).expect("pool dir");
    let deb = dir.join(spec.file_name());
    std::fs::write(&deb, ar).expect("write hostile deb");
    deb
}

/// A gzip'd ustar with the names written into the header verbatim; a name ending in `/`
/// is a directory.
fn tar_gz(entries: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, mode) in entries {
        let mut header = tar::Header::new_ustar();
        let raw = &mut header.as_old_mut().name;
        assert!(name.len() < raw.len(), "tar name too long: {name}");
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        header.set_entry_type(if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_cksum();
        builder.append(&header, data.as_slice()).expect("tar entry");
    }
    let tar = builder.into_inner().expect("finish tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// A static file server: `busybox httpd -f` on 127.0.0.1; killed on drop.
pub struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    pub fn start(root: &Path) -> HttpServer {
        for _attempt in 0..5 {
            let port = super::registry::free_port();
            let mut child = Command::new("busybox")
                .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
                .arg(root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start busybox httpd: {e}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                    if matches!(child.try_wait(), Ok(None)) {
                        return HttpServer { child, port };
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("busybox httpd did not come up after 5 attempts");
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed archive with one suite ([`SUITE`], component `main`) served over HTTP.
pub struct AptRepo {
    signer: Signer,
    server: HttpServer,
    architectures: Vec<String>,
    dir: TempDir,
    /// The mtime of the last publish's files: each publish's are a second later at least,
    /// since HTTP validators (Last-Modified, busybox's ETag) have one-second resolution
    /// and a republish within the second would look unchanged.
    published_at: std::sync::Mutex<Option<std::time::SystemTime>>,
}

impl AptRepo {
    /// An empty archive publishing `binary-<arch>` for each of `architectures`.
    pub fn new(architectures: &[&str]) -> AptRepo {
        let dir = tempfile::Builder::new()
            .prefix("pp-apt-")
            .tempdir()
            .expect("apt dir");
        let signer = Signer::new();
        std::fs::create_dir_all(dir.path().join("debian-security/pool/main")).expect("archive dir");
        signer.export(&dir.path().join("keyring.gpg"));
        let server = HttpServer::start(dir.path());
        let repo = AptRepo {
            signer,
            server,
            architectures: architectures.iter().map(|a| a.to_string()).collect(),
            dir,
            published_at: std::sync::Mutex::new(None),
        };
        repo.publish();
        repo
    }

    /// The archive's root directory (`dists/`, `pool/`).
    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("debian-security")
    }

    /// `http://127.0.0.1:PORT/debian-security`
    pub fn url(&self) -> String {
        format!("{}/debian-security", self.server.url())
    }

    /// `http://127.0.0.1:PORT`, for a proxy in front of it.
    pub fn server_url(&self) -> String {
        self.server.url()
    }

    /// The signing key, exported; what `scan.debian_keyring` names.
    pub fn keyring(&self) -> PathBuf {
        self.dir.path().join("keyring.gpg")
    }

    /// Where `spec`'s package lies, relative to [`AptRepo::archive`].
    pub fn pool_path(spec: &DebSpec) -> String {
        let first = spec.name.chars().next().unwrap_or('x');
        format!("pool/main/{first}/{}/{}", spec.name, spec.file_name())
    }

    /// The URL path (from the server's root) of `spec`'s package.
    pub fn url_path(spec: &DebSpec) -> String {
        format!("/debian-security/{}", Self::pool_path(spec))
    }

    fn pool_dir(&self, spec: &DebSpec) -> PathBuf {
        let first = spec.name.chars().next().unwrap_or('x');
        self.archive()
            .join(format!("pool/main/{first}/{}", spec.name))
    }

    /// Builds `spec` into the pool; call [`AptRepo::publish`] afterwards.
    pub fn add(&self, spec: &DebSpec) -> PathBuf {
        spec.build(&self.pool_dir(spec))
    }

    /// Puts a hand-made package with `evil_path` in its data into the pool.
    pub fn add_hostile(&self, spec: &DebSpec, evil_path: &str) -> PathBuf {
        hostile_deb(spec, evil_path, &self.pool_dir(spec))
    }

    /// (Re)writes `Packages{,.xz}` per architecture, `Release` and `InRelease`.
    pub fn publish(&self) {
        let archive = self.archive();
        let dists = archive.join("dists").join(SUITE);
        for arch in &self.architectures {
            let binary = dists.join(format!("main/binary-{arch}"));
            std::fs::create_dir_all(&binary).expect("binary dir");
            let packages = output(
                Command::new("apt-ftparchive")
                    .current_dir(&archive)
                    .args(["--arch", arch, "packages", "pool"]),
            );
            std::fs::write(binary.join("Packages"), packages).expect("Packages");
            output(
                Command::new("xz")
                    .args(["-k", "-f"])
                    .arg(binary.join("Packages")),
            );
        }
        let _ = std::fs::remove_file(dists.join("Release"));
        let _ = std::fs::remove_file(dists.join("InRelease"));
        let release = output(
            Command::new("apt-ftparchive")
                .current_dir(&archive)
                .arg("-o")
                .arg(format!("APT::FTPArchive::Release::Suite={SUITE}"))
                .arg("-o")
                .arg(format!("APT::FTPArchive::Release::Codename={SUITE}"))
                .arg("-o")
                .arg(format!(
                    "APT::FTPArchive::Release::Architectures={}",
                    self.architectures.join(" ")
                ))
                .args(["-o", "APT::FTPArchive::Release::Components=main"])
                .arg("release")
                .arg(format!("dists/{SUITE}")),
        );
        std::fs::write(dists.join("Release"), release).expect("Release");
        self.signer
            .clearsign(&dists.join("Release"), &dists.join("InRelease"));
        let mut published_at = self.published_at.lock().unwrap();
        let now = std::time::SystemTime::now();
        let at = published_at
            .map(|last| now.max(last + std::time::Duration::from_secs(1)))
            .unwrap_or(now);
        *published_at = Some(at);
        let mut files = vec![dists.join("Release"), dists.join("InRelease")];
        for arch in &self.architectures {
            let binary = dists.join(format!("main/binary-{arch}"));
            files.extend([binary.join("Packages"), binary.join("Packages.xz")]);
        }
        for file in files {
            std::fs::File::options()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_modified(at))
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}
