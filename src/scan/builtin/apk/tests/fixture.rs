//! An Alpine mirror on loopback: `APKINDEX.tar.gz` files built and signed the way
//! `abuild-sign` does (`openssl dgst -sign` over the gzipped index tar; the signature's tar,
//! end-of-archive blocks cut, gzipped in front), keys made with `openssl genrsa`, and a
//! secdb, all served by the scanner tests' static file server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::server::MirrorServer;
use crate::pkgs::apk::db::parse_installed;
use crate::pkgs::{Ecosystem, Inventory, OsRelease};
use crate::scan::builtin::BuiltinConfig;

/// The name apk gives a key: its file name in `/etc/apk/keys`.
pub const KEY_NAME: &str = "test-builder@example.invalid-6a1b2c3d.rsa.pub";

pub const MAIN_INDEX: &str = "\
C:Q1mUsLDG4uiNbrQzX2iQvl8+s6ezY=
P:musl
V:1.2.5-r1
A:x86_64
S:411331
I:653312
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Test <t@example.invalid>
t:1720000000
c:0123456789abcdef0123456789abcdef01234567
p:so:libc.musl-x86_64.so.1=1

C:Q1oldoldoldoldoldoldoldoldoldo=
P:musl
V:1.2.5-r0
A:x86_64
S:411000
o:musl

C:Q1Rp/7Xk+f0m7r6sYl3QGf1jdHz3I=
P:libcrypto3
V:3.3.2-r0
A:x86_64
S:1790000
o:openssl
D:so:libc.musl-x86_64.so.1

C:Q1sslsslsslsslsslsslsslsslssl=
P:libssl3
V:3.3.2-r0
A:x86_64
S:350000
o:openssl

C:Q1bbbbbbbbbbbbbbbbbbbbbbbbbbb=
P:busybox
V:1.36.1-r29
A:x86_64
S:500000
o:busybox

C:Q1zzzzzzzzzzzzzzzzzzzzzzzzzzz=
P:zlib
V:1.3.1-r1
A:x86_64
S:50000
o:zlib

C:Q1cacacacacacacacacacacacacac=
P:ca-certificates-bundle
V:20240705-r0
A:noarch
S:120000
o:ca-certificates

C:Q1armarmarmarmarmarmarmarmarm=
P:zlib
V:9.9-r0
A:aarch64
S:1
o:zlib
";

pub const COMMUNITY_INDEX: &str = "\
C:Q1jqjqjqjqjqjqjqjqjqjqjqjqjqj=
P:jq
V:1.7.1-r1
A:x86_64
S:300000
o:jq
";

/// The image's `/lib/apk/db/installed`: updates for musl, libcrypto3, libssl3 (origin
/// openssl), ca-certificates-bundle (noarch) and jq (community); busybox and zlib are
/// current; `local-tool` is in no repository; `weird` has a version apk cannot order.
pub const INSTALLED: &str = "\
C:Q1aaaaaaaaaaaaaaaaaaaaaaaaaaa=
P:musl
V:1.2.5-r0
A:x86_64
o:musl

P:busybox
V:1.36.1-r29
A:x86_64
o:busybox

P:libcrypto3
V:3.3.1-r0
A:x86_64
o:openssl

P:libssl3
V:3.3.1-r0
A:x86_64
o:openssl

P:zlib
V:1.3.1-r1
A:x86_64
o:zlib

P:ca-certificates-bundle
V:20240226-r0
A:x86_64
o:ca-certificates

P:jq
V:1.7.1-r0
A:x86_64
o:jq

P:local-tool
V:0.1-r0
A:x86_64

P:weird
V:1.0-bogus
A:x86_64
";

pub const SECDB_MAIN: &str = r#"{
  "apkurl": "{{urlprefix}}/{{distroversion}}/{{reponame}}/{{arch}}/{{pkg.name}}-{{pkg.ver}}.apk",
  "archs": ["x86_64", "aarch64"],
  "reponame": "main",
  "urlprefix": "https://dl-cdn.alpinelinux.org/alpine",
  "distroversion": "v3.20",
  "packages": [
    {"pkg": {"name": "openssl", "secfixes": {
      "3.3.3-r0": ["CVE-2099-0001"],
      "3.3.2-r0": ["CVE-2024-6119"],
      "3.3.1-r1": ["CVE-2024-5535", "CVE-2024-6119"],
      "3.1.4-r1": ["CVE-2023-5678"],
      "0": ["CVE-2022-0000"]
    }}},
    {"pkg": {"name": "musl", "secfixes": {"1.2.2_pre2-r0": ["CVE-2020-28928"]}}},
    {"pkg": {"name": "busybox", "secfixes": {"1.36.1-r29": ["CVE-2023-42366"]}}}
  ]
}"#;

pub const SECDB_COMMUNITY: &str = r#"{"packages": [
  {"pkg": {"name": "jq", "secfixes": {"1.7.1-r1": ["CVE-2024-23337 CVE-2024-53427", "not an id"]}}}
]}"#;

/// Runs a tool, panicking with its stderr on failure.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A fresh RSA key pair: the private key's path, and the public key in PEM.
pub fn generate_key(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let private = dir.join(format!("{name}.key"));
    let private_text = private.to_str().unwrap();
    run(dir, "openssl", &["genrsa", "-out", private_text, "2048"]);
    let public = run(dir, "openssl", &["rsa", "-in", private_text, "-pubout"]);
    assert!(public.starts_with(b"-----BEGIN PUBLIC KEY-----"));
    (private, public)
}

/// `DESCRIPTION` and `APKINDEX` in a gzipped tar, as `apk index` writes it.
pub fn index_tar_gz(apkindex: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("DESCRIPTION"),
        "v3.20.3-100-gabcdef012345\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("APKINDEX"), apkindex).unwrap();
    run(
        dir.path(),
        "tar",
        &[
            "-c",
            "-f",
            "index.tar",
            "--format=ustar",
            "DESCRIPTION",
            "APKINDEX",
        ],
    );
    run(dir.path(), "gzip", &["-n", "-9", "index.tar"]);
    std::fs::read(dir.path().join("index.tar.gz")).unwrap()
}

/// `abuild-sign`: `index` signed with `private` (digest `sha1` for `.SIGN.RSA.`, `sha256`
/// for `.SIGN.RSA256.`) under `key_name`, the signature tar in front.
pub fn sign(index: &[u8], private: &Path, key_name: &str, digest: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.tar.gz"), index).unwrap();
    let kind = match digest {
        "sha1" => "RSA",
        "sha256" => "RSA256",
        other => panic!("no signature kind for {other}"),
    };
    let signature_name = format!(".SIGN.{kind}.{key_name}");
    run(
        dir.path(),
        "openssl",
        &[
            "dgst",
            &format!("-{digest}"),
            "-sign",
            private.to_str().unwrap(),
            "-out",
            &signature_name,
            "index.tar.gz",
        ],
    );
    let signature_tar = signature_member(dir.path(), &signature_name);
    [signature_tar, index.to_vec()].concat()
}

/// A tar of `name` with its end-of-archive blocks cut (`abuild-tar --cut`), gzipped.
pub fn signature_member(dir: &Path, name: &str) -> Vec<u8> {
    run(
        dir,
        "tar",
        &[
            "-c",
            "-f",
            "sig.tar",
            "--format=ustar",
            "--owner=0",
            "--group=0",
            name,
        ],
    );
    let size = std::fs::metadata(dir.join(name)).unwrap().len();
    let kept = 512 + size.div_ceil(512) * 512;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("sig.tar"))
        .unwrap();
    file.set_len(kept).unwrap();
    drop(file);
    run(dir, "gzip", &["-n", "-9", "sig.tar"]);
    std::fs::read(dir.join("sig.tar.gz")).unwrap()
}

/// The Alpine image's inventory.
pub fn inventory(version_id: &str) -> Inventory {
    Inventory {
        os: OsRelease {
            id: "alpine".to_owned(),
            id_like: Vec::new(),
            version_id: Some(version_id.to_owned()),
            version_codename: None,
            pretty_name: Some(format!("Alpine Linux v{version_id}")),
        },
        ecosystem: Ecosystem::Apk,
        packages: parse_installed("/lib/apk/db/installed", INSTALLED.as_bytes()).unwrap(),
    }
}

/// A served mirror (`alpine/`) and secdb (`secdb/`) with the trusted keys directory.
pub struct AlpineMirror {
    pub root: tempfile::TempDir,
    pub keys: tempfile::TempDir,
    pub private_key: PathBuf,
    pub server: MirrorServer,
}

impl AlpineMirror {
    /// `v3.20` main and community for x86_64, signed by [`KEY_NAME`] (SHA-1, as Alpine
    /// signs its indexes today), and its secdb.
    pub async fn start() -> AlpineMirror {
        let root = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let (private_key, public) = generate_key(root.path(), "builder");
        std::fs::write(keys.path().join(KEY_NAME), public).unwrap();
        let mirror = AlpineMirror {
            server: MirrorServer::start(root.path()).await,
            root,
            keys,
            private_key,
        };
        let main = sign(
            &index_tar_gz(MAIN_INDEX),
            &mirror.private_key,
            KEY_NAME,
            "sha1",
        );
        mirror.publish("v3.20/main/x86_64/APKINDEX.tar.gz", &main);
        let community = sign(
            &index_tar_gz(COMMUNITY_INDEX),
            &mirror.private_key,
            KEY_NAME,
            "sha1",
        );
        mirror.publish("v3.20/community/x86_64/APKINDEX.tar.gz", &community);
        mirror.publish_secdb("v3.20/main.json", SECDB_MAIN);
        mirror.publish_secdb("v3.20/community.json", SECDB_COMMUNITY);
        mirror
    }

    /// Writes `alpine/<path>`.
    pub fn publish(&self, path: &str, bytes: &[u8]) {
        let file = self.root.path().join("alpine").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }

    pub fn publish_secdb(&self, path: &str, text: &str) {
        let file = self.root.path().join("secdb").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    /// Scanner settings for this mirror, secdb on, caching in `cache`.
    pub fn config(&self, cache: &Path) -> BuiltinConfig {
        let mut config = BuiltinConfig::new(cache);
        config.alpine.url = self.server.url("alpine");
        config.alpine.keys_dir = self.keys.path().to_owned();
        config.alpine.secdb_url = Some(self.server.url("secdb"));
        config.retries = 0;
        config.connect_timeout = Duration::from_secs(5);
        config.timeout = Duration::from_secs(5);
        config
    }
}
