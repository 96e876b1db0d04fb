//! Builds real signed apt repositories with the real tools: a test OpenPGP key made by
//! `gpg` in a temp `GNUPGHOME`, `.deb`s made by `dpkg-deb --build`, `Packages` and
//! `Release` made by `apt-ftparchive`, `InRelease` made by `gpg --clearsign`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Tools the hermetic tests drive, and the Debian packages that have them.
pub const TOOLS: [(&str, &str); 4] = [
    ("gpg", "gnupg"),
    ("dpkg-deb", "dpkg"),
    ("apt-ftparchive", "apt-utils"),
    ("xz", "xz-utils"),
];

/// Whether the tools are here. Missing tools skip the test, unless
/// `REQUIRE_TEST_TOOLS=1` (scripts/test.sh) makes that a failure.
pub fn tools_available() -> bool {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| {
            !std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file())
            })
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("REQUIRE_TEST_TOOLS").as_deref() == Ok("1") {
        panic!("packages missing: {missing:?} (REQUIRE_TEST_TOOLS=1)");
    }
    eprintln!("SKIP: install {missing:?} to run the apt repository tests");
    false
}

/// A GnuPG home with one signing key.
pub struct Signer {
    home: tempfile::TempDir,
    pub fingerprint: String,
}

impl Signer {
    /// A fresh ed25519 key; `extra` goes before `--quick-gen-key` (e.g. a faked time).
    pub fn new(user: &str, extra: &[&str], expire: &str) -> Signer {
        let home = tempfile::tempdir().unwrap();
        let mut args: Vec<&str> = vec!["--batch", "--passphrase", ""];
        args.extend_from_slice(extra);
        args.extend(["--quick-gen-key", user, "ed25519", "sign", expire]);
        gpg_in(home.path(), &args);
        let listing = gpg_in(home.path(), &["--with-colons", "--list-keys", user]);
        let fingerprint = String::from_utf8_lossy(&listing)
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned();
        Signer { home, fingerprint }
    }

    /// Runs gpg in this home; panics with its stderr on failure.
    pub fn gpg(&self, args: &[&str]) -> Vec<u8> {
        gpg_in(self.home.path(), args)
    }

    /// The home directory, for files gpg keeps there (revocation certificates).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The public key, binary (`armor` false) or armored, written to `path`.
    pub fn export(&self, path: &Path, armor: bool) {
        let mut args = vec!["--export"];
        if armor {
            args.push("--armor");
        }
        args.push(&self.fingerprint);
        std::fs::write(path, self.gpg(&args)).unwrap();
    }

    /// `gpg --clearsign` of `input` into `output`.
    pub fn clearsign(&self, input: &Path, output: &Path, extra: &[&str]) {
        let (input, output) = (input.to_str().unwrap(), output.to_str().unwrap());
        let mut args = vec!["--batch", "--yes", "--local-user", &self.fingerprint];
        args.extend_from_slice(extra);
        args.extend(["--clearsign", "--output", output, input]);
        self.gpg(&args);
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        // gpg started an agent for this home; stop it so no process outlives the test.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// One `.deb` to build.
pub struct DebSpec<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub architecture: &'a str,
    /// `Source:` when it differs from the name.
    pub source: Option<&'a str>,
    /// `changelog.Debian.gz` text for `usr/share/doc/<name>/`.
    pub changelog: Option<&'a str>,
    /// Makes `usr/share/doc/<name>` a symlink to this directory instead.
    pub doc_link: Option<&'a str>,
    /// `dpkg-deb -Z`: `xz`, `gzip`, `zstd`, `none`.
    pub compression: &'a str,
}

/// Builds `spec` into `<archive>/<pool>/` and returns the `.deb`'s path.
pub fn build_deb(archive: &Path, pool: &str, spec: &DebSpec<'_>) -> PathBuf {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Test <t@example.invalid>\n",
        spec.name, spec.version, spec.architecture
    );
    if let Some(source) = spec.source {
        control.push_str(&format!("Source: {source}\n"));
    }
    control.push_str("Description: test package\n");
    std::fs::write(root.join("DEBIAN/control"), control).unwrap();
    let doc = root.join("usr/share/doc");
    std::fs::create_dir_all(&doc).unwrap();
    if let Some(target) = spec.doc_link {
        std::os::unix::fs::symlink(target, doc.join(spec.name)).unwrap();
    } else {
        std::fs::create_dir_all(doc.join(spec.name)).unwrap();
        std::fs::write(doc.join(spec.name).join("copyright"), "test\n").unwrap();
    }
    if let Some(text) = spec.changelog {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(text.as_bytes()).unwrap();
        let path = doc.join(spec.name).join("changelog.Debian.gz");
        std::fs::write(path, gz.finish().unwrap()).unwrap();
    }
    let dir = archive.join(pool);
    std::fs::create_dir_all(&dir).unwrap();
    let deb = dir.join(format!(
        "{}_{}_{}.deb",
        spec.name,
        spec.version.replace(':', "%3a"),
        spec.architecture
    ));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Z", spec.compression, "--build"])
        .arg(&root)
        .arg(&deb));
    deb
}

/// Publishes `dists/<suite>` in `archive` from the `.deb`s under `<archive>/<pool>`:
/// `main/binary-amd64/Packages{,.xz}`, `Release` (with `extra_fields` added, e.g. a
/// `Valid-Until`), and `InRelease` signed by `signer`.
pub fn publish(archive: &Path, suite: &str, pool: &str, signer: &Signer, extra_fields: &str) {
    let dists = archive.join("dists").join(suite);
    let binary = dists.join("main/binary-amd64");
    std::fs::create_dir_all(&binary).unwrap();
    let packages = output(
        Command::new("apt-ftparchive")
            .current_dir(archive)
            .args(["packages", pool]),
    );
    std::fs::write(binary.join("Packages"), packages).unwrap();
    run(Command::new("xz")
        .args(["-k", "-f"])
        .arg(binary.join("Packages")));
    let mut release = output(
        Command::new("apt-ftparchive")
            .current_dir(archive)
            .arg("-o")
            .arg(format!("APT::FTPArchive::Release::Suite={suite}"))
            .arg("-o")
            .arg(format!("APT::FTPArchive::Release::Codename={suite}"))
            .args(["-o", "APT::FTPArchive::Release::Architectures=amd64"])
            .args(["-o", "APT::FTPArchive::Release::Components=main"])
            .arg("release")
            .arg(format!("dists/{suite}")),
    );
    release.splice(0..0, extra_fields.bytes());
    std::fs::write(dists.join("Release"), release).unwrap();
    signer.clearsign(&dists.join("Release"), &dists.join("InRelease"), &[]);
}

fn gpg_in(home: &Path, args: &[&str]) -> Vec<u8> {
    output(
        Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--quiet", "--no-tty", "--pinentry-mode", "loopback"])
            .args(args),
    )
}

fn run(command: &mut Command) {
    output(command);
}

fn output(command: &mut Command) -> Vec<u8> {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
