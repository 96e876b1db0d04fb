//! Synthetic Debian images for the `patch` tests: layers from file lists, packages as an
//! image has them installed (files plus a dpkg database that says so: `status`,
//! `info/<pkg>.list`, `.md5sums`, `.conffiles`, scripts; or distroless `status.d`), and
//! the `libfoo` package whose versions the tests upgrade between.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::apt::{entry_path, md5_hex, DebEntry, DebSpec};
use crate::common::images::{self, Entry, Format, Image};

pub const OS_RELEASE: &[u8] = b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
pub const OLD: &str = "1.0-1";
pub const NEW: &str = "1.0-1+deb12u1";
pub const NEWER: &str = "1.0-1+deb12u2";
pub const EDITED: &[u8] = b"# edited by the image's builder\nlisten = 0.0.0.0\n";

/// Files of a layer: (path, contents, mode); a path ending in `/` is a directory and
/// contents `->target` make a symlink.
pub type Files = Vec<(String, Vec<u8>, u32)>;

pub fn file(path: &str, contents: &[u8], mode: u32) -> (String, Vec<u8>, u32) {
    (path.to_owned(), contents.to_vec(), mode)
}

/// A gzip'd layer of `files`, parents added, sorted.
pub fn layer(format: Format, files: &Files) -> (images::Blob, String) {
    let mut all: Files = files.clone();
    let mut dirs = BTreeSet::new();
    for (path, ..) in files {
        let mut parent = Path::new(path.trim_end_matches('/')).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(format!("{}/", dir.display()));
            parent = dir.parent();
        }
    }
    for dir in dirs {
        if !all.iter().any(|(p, ..)| *p == dir) {
            all.push((dir, Vec::new(), 0o755));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let entries: Vec<Entry<'_>> = all
        .iter()
        .map(|(path, data, mode)| {
            if path.ends_with('/') {
                Entry::Dir(path)
            } else if let Some(target) = data.strip_prefix(b"->") {
                Entry::Symlink(path, std::str::from_utf8(target).unwrap())
            } else {
                Entry::File(path, data, *mode)
            }
        })
        .collect();
    images::layer(format, &entries)
}

/// `/etc/os-release`, plus a static busybox as `/bin/sh` when `shell`.
pub fn base_files(shell: bool) -> Files {
    let mut files = vec![file("etc/os-release", OS_RELEASE, 0o644)];
    if shell {
        let busybox = std::fs::read("/bin/busybox").expect("a static /bin/busybox");
        files.push(file("bin/busybox", &busybox, 0o755));
        files.push(file("bin/sh", b"->busybox", 0o777));
        for dir in ["tmp/", "proc/", "dev/", "sys/", "root/"] {
            files.push(file(dir, b"", 0o755));
        }
    }
    files
}

/// A package as an image has it installed: its dpkg database entries.
pub struct Installed<'a> {
    pub spec: &'a DebSpec,
    /// Conffiles whose installed contents differ from the package's (path -> contents on
    /// the image); the database still records the package's md5, as dpkg does.
    pub modified_conffiles: Vec<(String, Vec<u8>)>,
}

impl Installed<'_> {
    /// The `status` paragraph (`Status: install ok installed`), ending in a blank line.
    pub fn status_paragraph(&self) -> String {
        let spec = self.spec;
        let classification = |l: &&String| l.starts_with("Priority:") || l.starts_with("Section:");
        let mut out = format!("Package: {}\nStatus: install ok installed\n", spec.name);
        for line in spec.control.iter().filter(classification) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!(
            "Maintainer: Test <t@example.invalid>\nArchitecture: {}\nVersion: {}\n",
            spec.architecture, spec.version
        ));
        for line in spec.control.iter().filter(|l| !classification(l)) {
            out.push_str(line);
            out.push('\n');
        }
        if !spec.conffiles.is_empty() {
            out.push_str("Conffiles:\n");
            for path in &spec.conffiles {
                out.push_str(&format!(" {path} {}\n", md5_hex(&self.package_file(path))));
            }
        }
        out.push_str("Description: test package\n made by the patchpull tests\n\n");
        out
    }

    fn package_file(&self, path: &str) -> Vec<u8> {
        self.spec
            .all_entries()
            .into_iter()
            .find_map(|e| match e {
                DebEntry::File(p, data, _) if format!("/{p}") == path => Some(data),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{path} is not a file of {}", self.spec.name))
    }

    /// `info/<name>.list`: `/.` and every path, as dpkg writes it.
    pub fn list(&self) -> String {
        let mut out = String::from("/.\n");
        for entry in self.spec.all_entries() {
            out.push_str(&format!("/{}\n", entry_path(&entry)));
        }
        out
    }

    /// (path in the image, contents, mode) of the package's files as the image has them,
    /// directories as `(path/, empty, 0o755)` and symlinks as `(path, "->target", 0o777)`.
    pub fn image_entries(&self) -> Vec<(String, Vec<u8>, u32)> {
        let mut out = Vec::new();
        for entry in self.spec.all_entries() {
            out.push(match entry {
                DebEntry::Dir(p) => (format!("{p}/"), Vec::new(), 0o755),
                DebEntry::Symlink(p, t) => (p, format!("->{t}").into_bytes(), 0o777),
                DebEntry::File(p, data, mode) => {
                    let modified = self
                        .modified_conffiles
                        .iter()
                        .find(|(m, _)| m.trim_start_matches('/') == p);
                    match modified {
                        Some((_, contents)) => (p, contents.clone(), mode),
                        None => (p, data, mode),
                    }
                }
            });
        }
        out
    }

    /// `info/` files: `(var/lib/dpkg/info/<name>.<ext>, contents)`.
    pub fn info_files(&self) -> Vec<(String, Vec<u8>)> {
        let spec = self.spec;
        // dpkg names the files of a `Multi-Arch: same` package `<name>:<arch>.<ext>`.
        let base = if spec.control.iter().any(|l| l == "Multi-Arch: same") {
            format!("{}:{}", spec.name, spec.architecture)
        } else {
            spec.name.clone()
        };
        let info = |ext: &str| format!("var/lib/dpkg/info/{base}.{ext}");
        let mut out = vec![
            (info("list"), self.list().into_bytes()),
            (info("md5sums"), spec.md5sums().into_bytes()),
        ];
        if !spec.conffiles.is_empty() {
            let list: String = spec.conffiles.iter().map(|c| format!("{c}\n")).collect();
            out.push((info("conffiles"), list.into_bytes()));
        }
        for (name, body) in &spec.scripts {
            out.push((info(name), body.clone().into_bytes()));
        }
        out
    }
}

/// The packages' files as installed and a dpkg database (`status`, `info/*`) that says so.
pub fn dpkg_files(installed: &[Installed<'_>]) -> Files {
    let mut files = Files::new();
    let mut status = String::new();
    for package in installed {
        files.extend(package.image_entries());
        status.push_str(&package.status_paragraph());
        for (path, data) in package.info_files() {
            files.push((path, data, 0o644));
        }
    }
    files.push(file("var/lib/dpkg/status", status.as_bytes(), 0o644));
    files.push(file("var/lib/dpkg/updates/", b"", 0o755));
    files.push(file("var/lib/dpkg/triggers/", b"", 0o755));
    // Drop duplicate directories shared by several packages.
    let mut seen = BTreeSet::new();
    files.retain(|(p, ..)| seen.insert(p.clone()));
    files
}

/// An image of `layers` whose config has one history entry per layer, as builders write.
pub fn image(format: Format, architecture: &str, layers: &[Files]) -> Image {
    let (config_type, manifest_type) = match format {
        Format::Oci => (images::OCI_CONFIG, images::OCI_MANIFEST),
        Format::Docker => (images::DOCKER_CONFIG, images::DOCKER_MANIFEST),
    };
    let layers: Vec<(images::Blob, String)> =
        layers.iter().map(|files| layer(format, files)).collect();
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| d).collect::<Vec<_>>()},
        "history": (0..layers.len())
            .map(|i| serde_json::json!({"created_by": format!("patchpull tests: layer {i}")}))
            .collect::<Vec<_>>(),
    });
    let config = images::Blob::new(config_type, serde_json::to_vec(&config).unwrap());
    let descriptor = |b: &images::Blob| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.data.len()});
    let layers: Vec<images::Blob> = layers.into_iter().map(|(b, _)| b).collect();
    let bytes = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor(&config),
        "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
    }))
    .unwrap();
    Image {
        manifest: images::Manifest {
            media_type: manifest_type.to_owned(),
            digest: images::sha256_digest(&bytes),
            bytes,
        },
        config,
        layers,
        os: "linux".into(),
        architecture: architecture.into(),
    }
}

/// The changelog of `name` up to `version`, newest first; the security uploads name CVEs.
pub fn changelog(name: &str, version: &str) -> String {
    let history = [
        (OLD, "Initial release."),
        (NEW, "Fix CVE-2024-0001: buffer overflow in the parser."),
        (NEWER, "Fix CVE-2024-0002: use after free."),
    ];
    let upto = history
        .iter()
        .position(|(v, _)| *v == version)
        .unwrap_or_else(|| panic!("no changelog for {version}"));
    let mut text = String::new();
    for (v, change) in history[..=upto].iter().rev() {
        text.push_str(&format!(
            "{name} ({v}) bookworm-security; urgency=high\n\n  * {change}\n\n -- Test <t@example.invalid>  Mon, 01 Jan 2024 00:00:00 +0000\n\n"
        ));
    }
    text
}

pub fn multiarch_triplet(architecture: &str) -> &'static str {
    match architecture {
        "arm64" => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    }
}

/// `libfoo` at `version`: a library, a file only 1.0-1 has, a file only later versions
/// have, a file that never changes, two conffiles and the changelog.
pub fn libfoo(version: &str, architecture: &str) -> DebSpec {
    let lib = format!("usr/lib/{}/libfoo.so.1", multiarch_triplet(architecture));
    let mut spec = DebSpec::new("libfoo", version, architecture)
        .file(&lib, format!("libfoo {version}\n").as_bytes(), 0o644)
        .file("usr/share/libfoo/same.txt", b"never changes\n", 0o644)
        .conffile(
            "etc/libfoo/plain.conf",
            format!("plain {version}\n").as_bytes(),
        )
        .conffile(
            "etc/libfoo/edited.conf",
            format!("edited {version}\n").as_bytes(),
        )
        .changelog(&changelog("libfoo", version));
    spec.control.push("Priority: optional".into());
    spec.control.push("Section: libs".into());
    spec.control.push("Multi-Arch: same".into());
    if version == OLD {
        spec = spec.file("usr/share/libfoo/removed.txt", b"only in 1.0-1\n", 0o644);
    } else {
        spec = spec.file("usr/share/libfoo/added.txt", b"new in the fix\n", 0o644);
    }
    spec
}

/// The standard image: os-release in one layer, libfoo 1.0-1 (edited.conf changed by
/// the image) and its database in a second.
pub fn libfoo_image(format: Format, shell: bool) -> Image {
    let old = libfoo(OLD, "amd64");
    let installed = Installed {
        spec: &old,
        modified_conffiles: vec![("/etc/libfoo/edited.conf".into(), EDITED.to_vec())],
    };
    image(
        format,
        "amd64",
        &[base_files(shell), dpkg_files(&[installed])],
    )
}

/// A distroless-style image (`status.d`, no shell, no `status`) with `spec` installed.
pub fn distroless_image(spec: &DebSpec) -> Image {
    let os_release: &[u8] = b"PRETTY_NAME=\"Distroless\"\nNAME=\"Debian GNU/Linux\"\nID=\"debian\"\nVERSION_ID=\"12\"\nVERSION=\"Debian GNU/Linux 12 (bookworm)\"\nHOME_URL=\"https://github.com/GoogleContainerTools/distroless\"\n";
    let installed = Installed {
        spec,
        modified_conffiles: Vec::new(),
    };
    let mut files = installed.image_entries();
    // What distroless writes: the control file and md5sums, nothing else.
    let control = installed
        .status_paragraph()
        .replace("Status: install ok installed\n", "");
    files.push(file(
        &format!("var/lib/dpkg/status.d/{}", spec.name),
        control.trim_end_matches('\n').as_bytes(),
        0o644,
    ));
    files.push(file(
        &format!("var/lib/dpkg/status.d/{}.md5sums", spec.name),
        spec.md5sums().as_bytes(),
        0o644,
    ));
    image(
        Format::Oci,
        spec.architecture.as_str(),
        &[vec![file("etc/os-release", os_release, 0o644)], files],
    )
}
