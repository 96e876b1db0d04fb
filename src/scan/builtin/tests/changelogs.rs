//! Where the CVE ids of an update come from when its own `.deb` has no
//! `changelog.Debian.gz`: doc directory links chained through several packages (as
//! Ubuntu's mount -> libmount1 -> libblkid1) and native packages' `changelog.gz`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use super::fixture::inventory;
use super::repo::{build_deb, publish, tools_available, DebSpec, Signer};
use super::server::MirrorServer;
use crate::pkgs::dpkg::db::parse_status;
use crate::pkgs::Inventory;
use crate::scan::builtin::{BuiltinConfig, BuiltinScanner, ChangelogStatus, CveFix};
use crate::scan::plan::{PlanOptions, Platform};

const POOL: &str = "pool/updates";

const BLKID_CHANGELOG: &str = "\
util-linux (2.37.2-4ubuntu3.4) bookworm-security; urgency=medium

  * SECURITY UPDATE: CVE-2024-28085 (wall escape sequences).

 -- Test <t@example.invalid>  Mon, 01 Apr 2024 00:00:00 +0000

util-linux (2.37.2-4ubuntu3) bookworm; urgency=medium

  * CVE-2021-0001, before the installed version.

 -- Test <t@example.invalid>  Mon, 01 Jan 2024 00:00:00 +0000
";

const APT_CHANGELOG: &str = "\
apt (2.4.15) bookworm-security; urgency=medium

  * SECURITY UPDATE: CVE-2025-0001.

 -- Test <t@example.invalid>  Mon, 01 Apr 2025 00:00:00 +0000

apt (2.4.14) bookworm; urgency=medium

  * Older.

 -- Test <t@example.invalid>  Mon, 01 Jan 2025 00:00:00 +0000
";

/// A GNU ChangeLog, as upstream projects ship it under the same name.
const UPSTREAM_CHANGELOG: &str = "\
2025-04-01  Dev <d@example.invalid>

\t* src/main.c: Fix CVE-2025-9999.
";

fn status(packages: &[(&str, &str, &str)]) -> String {
    packages
        .iter()
        .map(|(name, source, version)| {
            format!(
                "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\n\
                 Source: {source}\nVersion: {version}\n\n"
            )
        })
        .collect()
}

/// A `.deb` of a native package: `usr/share/doc/<name>/changelog.gz` with `changelog`.
fn native_deb(archive: &Path, name: &str, version: &str, changelog: &str) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\n\
             Maintainer: Test <t@example.invalid>\nDescription: native test package\n"
        ),
    )
    .unwrap();
    let doc = root.join("usr/share/doc").join(name);
    std::fs::create_dir_all(&doc).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(changelog.as_bytes()).unwrap();
    std::fs::write(doc.join("changelog.gz"), gz.finish().unwrap()).unwrap();
    let pool = archive.join(POOL);
    std::fs::create_dir_all(&pool).unwrap();
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(root)
        .arg(pool.join(format!("{name}_{version}_amd64.deb")))
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
}

/// `name` of `source`, its doc directory a link to `link`'s (or holding `changelog`).
fn linked<'a>(name: &'a str, source: &'a str, link: Option<&'a str>) -> DebSpec<'a> {
    DebSpec {
        name,
        version: "2.37.2-4ubuntu3.4",
        architecture: "amd64",
        source: Some(source),
        changelog: None,
        doc_link: link,
        compression: "xz",
    }
}

#[tokio::test]
async fn changelogs_behind_chained_links_and_of_native_packages() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new("changelog test archive <t@example.invalid>", &[], "never");
    let archive = dir.path().join("www/debian-security");
    // mount -> libmount1 -> libblkid1, each link into another package.
    build_deb(
        &archive,
        POOL,
        &linked("mount", "util-linux", Some("libmount1")),
    );
    build_deb(
        &archive,
        POOL,
        &linked("libmount1", "util-linux", Some("libblkid1")),
    );
    build_deb(
        &archive,
        POOL,
        &DebSpec {
            changelog: Some(BLKID_CHANGELOG),
            ..linked("libblkid1", "util-linux", None)
        },
    );
    // loopa -> loopb -> loopa.
    build_deb(&archive, POOL, &linked("loopa", "loop", Some("loopb")));
    build_deb(&archive, POOL, &linked("loopb", "loop", Some("loopa")));
    // l0 -> l1 -> ... -> l9, which has the changelog: one link more than is followed.
    let names: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let spec = match names.get(i + 1) {
            Some(next) => linked(name, "long", Some(next)),
            None => DebSpec {
                changelog: Some(BLKID_CHANGELOG),
                ..linked(name, "long", None)
            },
        };
        build_deb(&archive, POOL, &spec);
    }
    native_deb(&archive, "apt", "2.4.15", APT_CHANGELOG);
    native_deb(&archive, "upstreamy", "1.1", UPSTREAM_CHANGELOG);
    publish(&archive, "bookworm-security", POOL, &signer, "");
    signer.export(&dir.path().join("keyring.gpg"), false);
    let server = MirrorServer::start(&dir.path().join("www")).await;

    let cache = tempfile::tempdir().unwrap();
    let mut config = BuiltinConfig::new(cache.path());
    config.debian.security_url = server.url("debian-security");
    config.debian.keyring = dir.path().join("keyring.gpg");
    config.point_releases = false;
    config.retries = 0;
    let old = "2.37.2-4ubuntu3";
    // The fixture's bookworm with other packages.
    let inventory = Inventory {
        packages: parse_status(
            "/var/lib/dpkg/status",
            status(&[
                ("mount", "util-linux", old),
                ("loopa", "loop", old),
                ("l0", "long", old),
                ("apt", "apt", "2.4.14"),
                ("upstreamy", "upstreamy", "1.0"),
            ])
            .as_bytes(),
        )
        .unwrap(),
        ..inventory()
    };
    let scanner = BuiltinScanner::new(config).unwrap();
    let result = scanner
        .scan(
            &inventory,
            &Platform::linux("amd64"),
            &PlanOptions::default(),
        )
        .await
        .unwrap();
    let by_name = |name: &str| {
        result
            .updates
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no update of {name}: {:?}", result.updates))
    };
    let fix = |id: &str, version: &str| CveFix {
        id: id.to_owned(),
        fixed_version: version.to_owned(),
    };

    let mount = by_name("mount");
    assert_eq!(mount.changelog, ChangelogStatus::Read);
    assert_eq!(mount.fixes, [fix("CVE-2024-28085", "2.37.2-4ubuntu3.4")]);
    for deb in ["mount", "libmount1", "libblkid1"] {
        let suffix = format!("/{deb}_2.37.2-4ubuntu3.4_amd64.deb");
        assert_eq!(server.hits_ending(&suffix), 1, "{deb}");
    }

    let apt = by_name("apt");
    assert_eq!(apt.changelog, ChangelogStatus::Read);
    assert_eq!(apt.fixes, [fix("CVE-2025-0001", "2.4.15")]);

    let unavailable = |name: &str| match &by_name(name).changelog {
        ChangelogStatus::Unavailable { reason } => {
            assert!(by_name(name).fixes.is_empty(), "{name}");
            reason.clone()
        }
        other => panic!("{name}: {other:?}"),
    };
    let reason = unavailable("upstreamy");
    assert!(
        reason.contains("usr/share/doc/upstreamy/changelog.gz")
            && reason.contains("not a Debian changelog of upstreamy"),
        "{reason}"
    );
    let reason = unavailable("loopa");
    assert!(
        reason.contains("circle: loopa -> loopb -> loopa"),
        "{reason}"
    );
    let reason = unavailable("l0");
    assert!(
        reason.contains("more than 8 usr/share/doc links: l0 -> l1"),
        "{reason}"
    );
    assert_eq!(server.hits_ending("/l9_2.37.2-4ubuntu3.4_amd64.deb"), 0);
}
