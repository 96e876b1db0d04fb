use serde_json::{json, Value};

use super::*;
use crate::scan::plan::{FixedVulnerability, PackageUpdate, Platform};

fn debian() -> OsRelease {
    OsRelease {
        id: "debian".into(),
        id_like: vec![],
        version_id: Some("12".into()),
        version_codename: Some("bookworm".into()),
        pretty_name: None,
    }
}

fn update(name: &str, from: &str, to: &str, ids: &[&str]) -> PackageUpdate {
    PackageUpdate {
        name: name.into(),
        installed_version: from.into(),
        fixed_version: to.into(),
        fixes: ids
            .iter()
            .map(|id| FixedVulnerability {
                id: (*id).into(),
                severity: None,
                fixed_version: to.into(),
            })
            .collect(),
    }
}

fn plan(arch: &str, updates: Vec<PackageUpdate>) -> PlatformPlan {
    PlatformPlan {
        platform: Platform::linux(arch),
        os: debian(),
        ecosystem: Ecosystem::Dpkg,
        updates,
        not_planned: vec![],
        unknown_severity: None,
        repositories: vec![],
    }
}

fn digest() -> Digest {
    format!("sha256:{}", "ab".repeat(32)).parse().unwrap()
}

#[test]
fn package_urls_follow_the_purl_spec() {
    assert_eq!(
        package_purl(
            Ecosystem::Dpkg,
            &debian(),
            "perl-base",
            "5.36.0-7+deb12u2",
            "amd64"
        ),
        "pkg:deb/debian/perl-base@5.36.0-7%2Bdeb12u2?arch=amd64&distro=debian-12"
    );
    assert_eq!(
        package_purl(
            Ecosystem::Dpkg,
            &debian(),
            "libstdc++6",
            "1:2.3~rc1+dfsg",
            "arm64"
        ),
        "pkg:deb/debian/libstdc%2B%2B6@1%3A2.3~rc1%2Bdfsg?arch=arm64&distro=debian-12"
    );
    let alpine = OsRelease {
        id: "alpine".into(),
        version_id: Some("3.19.1".into()),
        ..OsRelease::default()
    };
    assert_eq!(
        package_purl(Ecosystem::Apk, &alpine, "musl", "1.2.4-r3", "x86_64"),
        "pkg:apk/alpine/musl@1.2.4-r3?arch=x86_64&distro=alpine-3.19.1"
    );
    let sid = OsRelease {
        version_id: None,
        version_codename: Some("trixie".into()),
        ..debian()
    };
    assert_eq!(
        package_purl(Ecosystem::Dpkg, &sid, "tzdata", "2024a-1", ""),
        "pkg:deb/debian/tzdata@2024a-1?distro=debian-trixie"
    );
    let mariner = OsRelease {
        id: "azurelinux".into(),
        version_id: Some("3.0".into()),
        ..OsRelease::default()
    };
    assert_eq!(
        package_purl(
            Ecosystem::Rpm,
            &mariner,
            "openssl",
            "1:3.3.0-2.azl3",
            "x86_64"
        ),
        "pkg:rpm/azurelinux/openssl@1%3A3.3.0-2.azl3?arch=x86_64&distro=azurelinux-3.0"
    );
}

#[test]
fn image_urls_name_the_digest_and_repository() {
    assert_eq!(
        image_purl("docker.io/library/debian", &digest()),
        format!(
            "pkg:oci/debian@sha256%3A{}?repository_url=docker.io/library/debian",
            "ab".repeat(32)
        )
    );
    assert_eq!(
        image_purl("localhost:5000/team/App", &digest()),
        format!(
            "pkg:oci/app@sha256%3A{}?repository_url=localhost%3A5000/team/App",
            "ab".repeat(32)
        )
    );
}

fn input<'a>(platforms: &'a [PlatformFixes<'a>], patched: &'a Digest) -> VexInput<'a> {
    VexInput {
        repository: "docker.io/library/debian",
        patched_digest: patched,
        platforms,
        timestamp: "2024-08-01T12:00:00Z",
        author: "patchpull@registry.example",
    }
}

#[test]
fn one_fixed_statement_per_vulnerability_with_sorted_packages() {
    let amd64 = plan(
        "amd64",
        vec![
            update(
                "libpcre2-8-0",
                "10.42-1",
                "10.42-1+deb12u1",
                &["CVE-2022-41409"],
            ),
            update(
                "perl-base",
                "5.36.0-7+deb12u1",
                "5.36.0-7+deb12u2",
                &["CVE-2023-31484", "CVE-2023-47038"],
            ),
            update(
                "tzdata",
                "2024a-0+deb12u1",
                "2025b-0+deb12u1",
                &["CVE-2099-0001"],
            ),
        ],
    );
    let arm64 = plan(
        "arm64",
        vec![update(
            "perl-base",
            "5.36.0-7+deb12u1",
            "5.36.0-7+deb12u2",
            &["CVE-2023-47038"],
        )],
    );
    // tzdata was planned but the image does not have the fixed version: left out.
    let fixed_amd64 = ["perl-base".to_owned(), "libpcre2-8-0".to_owned()];
    let fixed_arm64 = ["perl-base".to_owned()];
    let platforms = [
        PlatformFixes {
            plan: &amd64,
            architecture: "amd64",
            fixed: &fixed_amd64,
        },
        PlatformFixes {
            plan: &arm64,
            architecture: "arm64",
            fixed: &fixed_arm64,
        },
    ];
    let patched = digest();
    let bytes = document(&input(&platforms, &patched)).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("\n  \"@context\""), "pretty-printed: {text}");
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let image = image_purl("docker.io/library/debian", &patched);
    let perl = |arch: &str| {
        format!("pkg:deb/debian/perl-base@5.36.0-7%2Bdeb12u2?arch={arch}&distro=debian-12")
    };
    let id = doc["@id"].as_str().unwrap().to_owned();
    assert_eq!(
        doc,
        json!({
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": id,
            "author": "patchpull@registry.example",
            "timestamp": "2024-08-01T12:00:00Z",
            "version": 1,
            "tooling": "patchpull",
            "statements": [
                {
                    "vulnerability": {"name": "CVE-2022-41409"},
                    "products": [{"@id": image, "subcomponents": [
                        {"@id": "pkg:deb/debian/libpcre2-8-0@10.42-1%2Bdeb12u1?arch=amd64&distro=debian-12"}
                    ]}],
                    "status": "fixed",
                },
                {
                    "vulnerability": {"name": "CVE-2023-31484"},
                    "products": [{"@id": image, "subcomponents": [{"@id": perl("amd64")}]}],
                    "status": "fixed",
                },
                {
                    "vulnerability": {"name": "CVE-2023-47038"},
                    "products": [{"@id": image, "subcomponents": [
                        {"@id": perl("amd64")}, {"@id": perl("arm64")}
                    ]}],
                    "status": "fixed",
                },
            ],
        })
    );

    // The id is the sha256 of the compact, key-sorted document without it.
    let mut without = doc.clone();
    without.as_object_mut().unwrap().remove("@id");
    let canonical = serde_json::to_vec(&sort_keys(&without)).unwrap();
    assert_eq!(
        id,
        format!(
            "https://openvex.dev/docs/public/vex-{}",
            Digest::sha256_of(&canonical).hex()
        )
    );

    // Same input, same bytes; the fixed list's order does not matter.
    let reordered = ["libpcre2-8-0".to_owned(), "perl-base".to_owned()];
    let platforms2 = [
        PlatformFixes {
            plan: &amd64,
            architecture: "amd64",
            fixed: &reordered,
        },
        PlatformFixes {
            plan: &arm64,
            architecture: "arm64",
            fixed: &fixed_arm64,
        },
    ];
    assert_eq!(document(&input(&platforms2, &patched)).unwrap(), bytes);
    // A different timestamp is a different document, with a different id.
    let mut later = input(&platforms, &patched);
    later.timestamp = "2024-08-02T12:00:00+02:00";
    let later: Value = serde_json::from_slice(&document(&later).unwrap()).unwrap();
    assert_ne!(later["@id"], doc["@id"]);
}

#[test]
fn an_empty_plan_has_no_statements() {
    let empty = plan("amd64", vec![]);
    let platforms = [PlatformFixes {
        plan: &empty,
        architecture: "amd64",
        fixed: &[],
    }];
    let patched = digest();
    let doc: Value =
        serde_json::from_slice(&document(&input(&platforms, &patched)).unwrap()).unwrap();
    assert_eq!(doc["statements"], json!([]));
    let doc: Value = serde_json::from_slice(&document(&input(&[], &patched)).unwrap()).unwrap();
    assert_eq!(doc["statements"], json!([]));
}

#[test]
fn bad_input_is_refused() {
    let p = plan(
        "amd64",
        vec![update("apt", "2.6.1", "2.6.1+deb12u1", &["CVE-1"])],
    );
    let unknown = ["bash".to_owned()];
    let platforms = [PlatformFixes {
        plan: &p,
        architecture: "amd64",
        fixed: &unknown,
    }];
    let patched = digest();
    assert!(matches!(
        document(&input(&platforms, &patched)),
        Err(VexError::UnknownPackage { ref name, .. }) if name == "bash"
    ));
    for bad in [
        "",
        "yesterday",
        "2024-08-01 12:00:00Z",
        "2024-08-01T12:00:00",
        "2024-08-01T12:00:00.Z",
    ] {
        let mut i = input(&[], &patched);
        i.timestamp = bad;
        assert!(document(&i).is_err(), "{bad:?}");
    }
    let mut i = input(&[], &patched);
    i.author = " ";
    assert!(matches!(document(&i), Err(VexError::Missing("author"))));
}
