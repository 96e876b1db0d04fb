//! The loopback mirror the scan tests run against: a Debian-like archive with
//! `bookworm-security`, `bookworm` and `bookworm-updates`, built from real `.deb`s and
//! signed by a test key, and the image inventory scanned against it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::repo::{build_deb, publish, tools_available, DebSpec, Signer};
use super::server::MirrorServer;
use crate::pkgs::dpkg::db::parse_status;
use crate::pkgs::{Ecosystem, Inventory, OsRelease};
use crate::scan::builtin::BuiltinConfig;

const HELLO_CHANGELOG: &str = "\
hello (1.0-2) bookworm-security; urgency=high

  * Fix CVE-2024-0001: buffer overflow in the greeting.
  * Harden the fix for CVE-2024-0001 further.

 -- Test <t@example.invalid>  Mon, 01 Jan 2024 00:00:00 +0000

hello (1.0-1) bookworm; urgency=medium

  * Fix CVE-2023-1111.

 -- Test <t@example.invalid>  Sun, 01 Jan 2023 00:00:00 +0000
";

const BAZ_CHANGELOG: &str = "\
baz (3.0-1+deb12u2) bookworm; urgency=medium

  * Fix CVE-2024-0003.

 -- Test <t@example.invalid>  Mon, 01 Apr 2024 00:00:00 +0000

baz (3.0-1+deb12u1) bookworm-security; urgency=medium

  * Fix CVE-2024-0002.

 -- Test <t@example.invalid>  Mon, 01 Mar 2024 00:00:00 +0000

baz (3.0-1) unstable; urgency=medium

  * Initial release, closes CVE-2020-0001.

 -- Test <t@example.invalid>  Mon, 01 Jan 2024 00:00:00 +0000
";

const TZDATA_CHANGELOG: &str = "\
tzdata (2024b-0+deb12u1) bookworm-updates; urgency=medium

  * New upstream release.

 -- Test <t@example.invalid>  Mon, 01 Jul 2024 00:00:00 +0000
";

const STATUS: &str = "\
Package: hello
Status: install ok installed
Architecture: amd64
Version: 1.0-1

Package: hello-data
Status: install ok installed
Architecture: all
Source: hello
Version: 1.0-1

Package: libbar1
Status: install ok installed
Architecture: amd64
Source: bar
Version: 2.0-1

Package: libbaz1
Status: install ok installed
Architecture: amd64
Source: baz
Version: 3.0-1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: uptodate
Status: install ok installed
Architecture: amd64
Version: 1.0-1

Package: notinrepo
Status: install ok installed
Architecture: amd64
Version: 5.0-1

Package: hello
Status: install ok installed
Architecture: i386
Version: 0.1-1

Package: broken
Status: install ok installed
Architecture: amd64
Version: _1.0
";

fn deb<'a>(name: &'a str, version: &'a str, architecture: &'a str) -> DebSpec<'a> {
    DebSpec {
        name,
        version,
        architecture,
        source: None,
        changelog: None,
        doc_link: None,
        compression: "xz",
    }
}

/// A Debian-like mirror on loopback: `debian-security` with `bookworm-security`, `debian`
/// with `bookworm` and `bookworm-updates`, all signed by one test key.
pub struct Mirror {
    pub dir: tempfile::TempDir,
    pub signer: Signer,
    pub server: MirrorServer,
}

impl Mirror {
    pub async fn start() -> Option<Mirror> {
        if !tools_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::new("patchpull test archive <t@example.invalid>", &[], "never");
        let security = dir.path().join("www/debian-security");
        let debian = dir.path().join("www/debian");
        let updates_pool = "pool/updates";
        for spec in [
            DebSpec {
                changelog: Some(HELLO_CHANGELOG),
                ..deb("hello", "1.0-2", "amd64")
            },
            DebSpec {
                source: Some("hello"),
                doc_link: Some("hello"),
                compression: "none",
                ..deb("hello-data", "1.0-2", "all")
            },
            DebSpec {
                source: Some("bar"),
                compression: "gzip",
                ..deb("libbar1", "2.0-1+deb12u1", "amd64")
            },
            DebSpec {
                source: Some("baz"),
                changelog: Some(BAZ_CHANGELOG),
                ..deb("libbaz1", "3.0-1+deb12u1", "amd64")
            },
        ] {
            build_deb(&security, updates_pool, &spec);
        }
        for spec in [
            deb("hello", "1.0-1", "amd64"),
            DebSpec {
                source: Some("baz"),
                changelog: Some(BAZ_CHANGELOG),
                ..deb("libbaz1", "3.0-1+deb12u2", "amd64")
            },
            deb("uptodate", "1.0-1", "amd64"),
            deb("tzdata", "2024a-0+deb12u1", "all"),
        ] {
            build_deb(&debian, "pool/bookworm", &spec);
        }
        let tzdata = DebSpec {
            changelog: Some(TZDATA_CHANGELOG),
            compression: "zstd",
            ..deb("tzdata", "2024b-0+deb12u1", "all")
        };
        build_deb(&debian, "pool/bookworm-updates", &tzdata);
        publish(&security, "bookworm-security", updates_pool, &signer, "");
        publish(&debian, "bookworm", "pool/bookworm", &signer, "");
        publish(
            &debian,
            "bookworm-updates",
            "pool/bookworm-updates",
            &signer,
            "",
        );
        signer.export(&dir.path().join("keyring.gpg"), false);
        let server = MirrorServer::start(&dir.path().join("www")).await;
        Some(Mirror {
            dir,
            signer,
            server,
        })
    }

    pub fn www(&self, path: &str) -> PathBuf {
        self.dir.path().join("www").join(path)
    }

    /// Defaults pointed at this mirror, caching in `cache`, asking for InRelease every scan.
    pub fn config(&self, cache: &Path) -> BuiltinConfig {
        let mut config = BuiltinConfig::new(cache);
        config.debian.archive_url = self.server.url("debian");
        config.debian.security_url = self.server.url("debian-security");
        config.debian.keyring = self.dir.path().join("keyring.gpg");
        config.refresh_interval = Duration::ZERO;
        config.retries = 0;
        config
    }
}

pub fn inventory() -> Inventory {
    Inventory {
        os: OsRelease {
            id: "debian".to_owned(),
            version_id: Some("12".to_owned()),
            version_codename: Some("bookworm".to_owned()),
            ..OsRelease::default()
        },
        ecosystem: Ecosystem::Dpkg,
        packages: parse_status("/var/lib/dpkg/status", STATUS.as_bytes()).unwrap(),
    }
}
