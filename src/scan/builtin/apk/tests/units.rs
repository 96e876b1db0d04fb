//! The parts on their own: branches and architectures, gzip member boundaries, keys,
//! `APKINDEX` parsing, secdb ranges.

use super::fixture::{generate_key, index_tar_gz, sign, signature_member, KEY_NAME, MAIN_INDEX};
use crate::pkgs::OsRelease;
use crate::scan::builtin::apk::repos::{alpine_architecture, branch, select};
use crate::scan::builtin::apk::signed::{first_member, load_key, verify_and_extract};
use crate::scan::builtin::apk::{AlpineConfig, ApkError, ApkIndex, IndexError, SecDb};
use crate::scan::builtin::CveFix;
use crate::scan::plan::Platform;

fn alpine(version_id: Option<&str>, pretty: Option<&str>) -> OsRelease {
    OsRelease {
        id: "alpine".to_owned(),
        version_id: version_id.map(str::to_owned),
        pretty_name: pretty.map(str::to_owned),
        ..OsRelease::default()
    }
}

#[test]
fn branches_come_from_version_id_and_edge_is_recognised() {
    assert_eq!(branch(&alpine(Some("3.20.3"), None)).unwrap(), "v3.20");
    assert_eq!(branch(&alpine(Some("3.18"), None)).unwrap(), "v3.18");
    assert_eq!(branch(&alpine(Some("edge"), None)).unwrap(), "edge");
    let edge = alpine(Some("3.21_alpha20240807"), Some("Alpine Linux edge"));
    assert_eq!(branch(&edge).unwrap(), "edge");
    for bad in [None, Some(""), Some("three"), Some("3"), Some("3.x.1")] {
        let error = branch(&alpine(bad, None)).unwrap_err();
        assert!(matches!(error, ApkError::UnknownRelease { .. }), "{bad:?}");
    }
    let mut wolfi = alpine(Some("20230201"), None);
    wolfi.id = "wolfi".to_owned();
    assert!(matches!(
        branch(&wolfi).unwrap_err(),
        ApkError::UnsupportedDistribution { .. }
    ));
}

#[test]
fn platforms_map_to_alpine_architectures_and_repository_urls() {
    let arm = |variant: &str| Platform {
        variant: Some(variant.to_owned()),
        ..Platform::linux("arm")
    };
    let cases = [
        (Platform::linux("amd64"), Some("x86_64")),
        (Platform::linux("arm64"), Some("aarch64")),
        (arm("v7"), Some("armv7")),
        (arm("v6"), Some("armhf")),
        (Platform::linux("386"), Some("x86")),
        (Platform::linux("ppc64le"), Some("ppc64le")),
        (Platform::linux("s390x"), Some("s390x")),
        (Platform::linux("riscv64"), Some("riscv64")),
        (Platform::linux("mips"), None),
    ];
    for (platform, expected) in cases {
        assert_eq!(alpine_architecture(&platform).ok(), expected, "{platform}");
    }
    let config = AlpineConfig {
        url: "https://mirror.example/alpine/".to_owned(),
        ..AlpineConfig::default()
    };
    let repos = select(
        &alpine(Some("3.20.3"), None),
        &Platform::linux("arm64"),
        &config,
    )
    .unwrap();
    let urls: Vec<String> = repos.iter().map(|r| r.index_url()).collect();
    assert_eq!(
        urls,
        [
            "https://mirror.example/alpine/v3.20/main/aarch64/APKINDEX.tar.gz",
            "https://mirror.example/alpine/v3.20/community/aarch64/APKINDEX.tar.gz"
        ]
    );
    assert_eq!(repos[1].label(), "v3.20/community");
    assert_eq!(
        repos[0].package_url("musl", "1.2.5-r1"),
        "https://mirror.example/alpine/v3.20/main/aarch64/musl-1.2.5-r1.apk"
    );
}

#[test]
fn the_first_gzip_member_ends_where_gzip_says() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".SIGN.RSA.k"), [7u8; 256]).unwrap();
    let signature = signature_member(dir.path(), ".SIGN.RSA.k");
    let index = index_tar_gz(MAIN_INDEX);
    let joined = [signature.clone(), index].concat();
    let (tar, boundary) = first_member(&joined).unwrap();
    assert_eq!(boundary, signature.len());
    assert_eq!(tar.len(), 1024, "header and one data block, end blocks cut");
}

#[test]
fn verification_reads_description_and_index_and_needs_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = generate_key(dir.path(), "k");
    let signed = sign(&index_tar_gz(MAIN_INDEX), &private, KEY_NAME, "sha1");

    let unknown = verify_and_extract(&signed, keys.path(), 1 << 20).unwrap_err();
    assert!(matches!(unknown, IndexError::UnknownKey { ref keys, .. } if keys == &[KEY_NAME]));

    std::fs::write(keys.path().join(KEY_NAME), &public).unwrap();
    let verified = verify_and_extract(&signed, keys.path(), 1 << 20).unwrap();
    assert_eq!(verified.key, KEY_NAME);
    assert_eq!(
        verified.description.as_deref(),
        Some("v3.20.3-100-gabcdef012345")
    );
    assert_eq!(verified.apkindex, MAIN_INDEX.as_bytes());

    // The unpacked limit holds.
    let error = verify_and_extract(&signed, keys.path(), 1000).unwrap_err();
    assert!(error.to_string().contains("limit"), "{error}");

    // A key file that is not a key is this host's problem, and says which file.
    std::fs::write(keys.path().join(KEY_NAME), "not a key").unwrap();
    let error = verify_and_extract(&signed, keys.path(), 1 << 20).unwrap_err();
    assert!(matches!(error, IndexError::Key { .. }), "{error}");
    let error = crate::scan::builtin::apk::ApkError::Index {
        repository: "v3.20/main".into(),
        url: "u".into(),
        source: error,
    };
    assert_eq!(error.origin(), crate::error::Origin::Internal);
}

#[test]
fn pkcs1_keys_load_too() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = generate_key(dir.path(), "k");
    let spki = dir.path().join("spki.pem");
    std::fs::write(&spki, &public).unwrap();
    let pkcs1 = super::fixture::run(
        dir.path(),
        "openssl",
        &["rsa", "-in", private.to_str().unwrap(), "-RSAPublicKey_out"],
    );
    assert!(pkcs1.starts_with(b"-----BEGIN RSA PUBLIC KEY-----"));
    let pkcs1_path = dir.path().join("pkcs1.pem");
    std::fs::write(&pkcs1_path, pkcs1).unwrap();
    assert_eq!(load_key(&spki).unwrap(), load_key(&pkcs1_path).unwrap());
}

#[test]
fn apkindex_records_parse_and_malformed_ones_are_named() {
    let index = ApkIndex::parse(MAIN_INDEX.as_bytes()).unwrap();
    assert_eq!(index.len(), 8);
    assert_eq!(index.lookup("musl").len(), 2);
    let crypto = &index.lookup("libcrypto3")[0];
    assert_eq!(crypto.origin(), "openssl");
    assert_eq!(crypto.size, Some(1790000));
    assert_eq!(crypto.architecture.as_deref(), Some("x86_64"));
    assert!(index.lookup("nope").is_empty());

    let no_version = ApkIndex::parse(b"P:a\nV:1-r0\n\nP:b\nA:x86_64\n").unwrap_err();
    assert!(
        no_version.contains("line 4") && no_version.contains("V:"),
        "{no_version}"
    );
    let garbage = ApkIndex::parse(b"P:a\nthis is not a field\n").unwrap_err();
    assert!(garbage.contains("line 2"), "{garbage}");
    let bad_size = ApkIndex::parse(b"P:a\nV:1-r0\nS:big\n").unwrap_err();
    assert!(bad_size.contains("big"), "{bad_size}");
}

#[test]
fn secdb_fixes_are_the_versions_after_installed_up_to_new() {
    let db = SecDb::parse(super::fixture::SECDB_MAIN.as_bytes()).unwrap();
    let cve = |id: &str, v: &str| CveFix {
        id: id.to_owned(),
        fixed_version: v.to_owned(),
    };
    assert_eq!(
        db.fixes("openssl", "libcrypto3", "3.3.1-r0", "3.3.2-r0"),
        [
            cve("CVE-2024-5535", "3.3.1-r1"),
            cve("CVE-2024-6119", "3.3.1-r1")
        ]
    );
    // Installed at a first fix: only what came after, and an id listed again later (an
    // incomplete first fix) counts at that later version.
    assert_eq!(
        db.fixes("openssl", "libcrypto3", "3.3.1-r1", "3.3.3-r0"),
        [
            cve("CVE-2024-6119", "3.3.2-r0"),
            cve("CVE-2099-0001", "3.3.3-r0")
        ]
    );
    // The name is the fallback when the origin is not listed.
    assert_eq!(
        db.fixes("unknown", "openssl", "3.3.2-r0", "3.3.3-r0").len(),
        1
    );
    assert!(db.fixes("zlib", "zlib", "1.0-r0", "2.0-r0").is_empty());
    // An installed version apk cannot order matches nothing.
    assert!(db
        .fixes("openssl", "openssl", "bogus", "3.3.3-r0")
        .is_empty());

    let mut merged = db.clone();
    merged.extend(&SecDb::parse(super::fixture::SECDB_COMMUNITY.as_bytes()).unwrap());
    assert_eq!(merged.len(), db.len() + 1);
    assert!(SecDb::parse(b"{\"packages\": 3}").is_err());
    assert!(SecDb::parse(b"{}").unwrap().is_empty());
}
