//! Whole scans against signed apt repositories served on loopback: exact plans, caching
//! by hit counts, and every kind of tampering refused.

use std::time::Duration;

use hyper::StatusCode;
use sha2::Digest;

use super::fixture::{inventory, Mirror};
use super::repo::{publish, Signer};
use crate::scan::builtin::{
    BuiltinConfig, BuiltinError, BuiltinScanner, ChangelogStatus, CveFix, SignatureError,
};
use crate::scan::plan::{
    FixedVulnerability, NotPlanned, PackageUpdate, PlanOptions, PlanSource, Platform, SkipReason,
};

fn fix(id: &str, version: &str) -> FixedVulnerability {
    FixedVulnerability {
        id: id.to_owned(),
        severity: None,
        fixed_version: version.to_owned(),
    }
}

fn update(
    name: &str,
    installed: &str,
    fixed: &str,
    fixes: Vec<FixedVulnerability>,
) -> PackageUpdate {
    PackageUpdate {
        name: name.to_owned(),
        installed_version: installed.to_owned(),
        fixed_version: fixed.to_owned(),
        fixes,
    }
}

async fn scan(config: BuiltinConfig) -> Result<crate::scan::builtin::BuiltinScan, BuiltinError> {
    let scanner = BuiltinScanner::new(config).unwrap();
    scanner
        .scan(
            &inventory(),
            &Platform::linux("amd64"),
            &PlanOptions::default(),
        )
        .await
}

#[tokio::test]
async fn scan_finds_every_update_with_its_cves() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let result = scan(mirror.config(cache.path())).await.unwrap();

    let platform = &result.plan.platforms[0];
    assert_eq!(platform.platform, Platform::linux("amd64"));
    assert_eq!(
        platform.updates,
        vec![
            update(
                "hello",
                "1.0-1",
                "1.0-2",
                vec![fix("CVE-2024-0001", "1.0-2")]
            ),
            update(
                "hello-data",
                "1.0-1",
                "1.0-2",
                vec![fix("CVE-2024-0001", "1.0-2")]
            ),
            update("libbar1", "2.0-1", "2.0-1+deb12u1", vec![]),
            update(
                "libbaz1",
                "3.0-1",
                "3.0-1+deb12u2",
                vec![
                    fix("CVE-2024-0002", "3.0-1+deb12u1"),
                    fix("CVE-2024-0003", "3.0-1+deb12u2")
                ]
            ),
            update("tzdata", "2024a-0+deb12u1", "2024b-0+deb12u1", vec![]),
        ]
    );
    assert_eq!(platform.not_planned.len(), 1);
    assert_eq!(platform.not_planned[0].name, "broken");
    assert!(matches!(
        platform.not_planned[0].reason,
        SkipReason::InvalidVersion { .. }
    ));
    let PlanSource::BuiltinScanner { index_version } = &result.plan.source else {
        panic!("{:?}", result.plan.source)
    };
    let suites: Vec<&str> = index_version
        .split(", ")
        .map(|s| s.split('@').next().unwrap())
        .collect();
    assert_eq!(
        suites,
        ["bookworm-security", "bookworm", "bookworm-updates"]
    );

    let details: Vec<(&str, &str, &ChangelogStatus)> = result
        .updates
        .iter()
        .map(|u| (u.name.as_str(), u.suite.as_str(), &u.changelog))
        .collect();
    let unavailable = ChangelogStatus::Unavailable {
        reason: "the .deb has no usr/share/doc/libbar1/changelog.Debian.gz".to_owned(),
    };
    assert_eq!(
        details,
        [
            ("hello", "bookworm-security", &ChangelogStatus::Read),
            ("hello-data", "bookworm-security", &ChangelogStatus::Read),
            ("libbar1", "bookworm-security", &unavailable),
            ("libbaz1", "bookworm", &ChangelogStatus::Read),
            ("tzdata", "bookworm-updates", &ChangelogStatus::Read),
        ]
    );
    assert_eq!(result.updates[3].source_name, "baz");
    assert_eq!(
        result.updates[0].fixes,
        [CveFix {
            id: "CVE-2024-0001".to_owned(),
            fixed_version: "1.0-2".to_owned()
        }]
    );
    // hello-data's doc directory links to hello's: both .debs were fetched once.
    assert_eq!(mirror.server.hits_ending("/hello_1.0-2_amd64.deb"), 1);
    assert_eq!(mirror.server.hits_ending("/hello-data_1.0-2_all.deb"), 1);
}

#[tokio::test]
async fn warm_caches_download_only_inrelease_and_ask_conditionally() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let first = scan(mirror.config(cache.path())).await.unwrap();
    let s = &mirror.server;
    assert_eq!(s.hits_ending("/InRelease"), 3);
    assert_eq!(s.hits_ending("/Packages.xz"), 3);
    let debs = s.hits_ending(".deb");
    assert_eq!(debs, 5);

    // The same scanner again: InRelease asked conditionally (304), nothing else fetched.
    let scanner = BuiltinScanner::new(mirror.config(cache.path())).unwrap();
    let options = PlanOptions::default();
    let again = scanner
        .scan(&inventory(), &Platform::linux("amd64"), &options)
        .await
        .unwrap();
    assert_eq!(again, first);
    let again = scanner
        .scan(&inventory(), &Platform::linux("amd64"), &options)
        .await
        .unwrap();
    assert_eq!(again, first);
    // A new scanner (a restarted process) starts from the disk cache: same answer.
    assert_eq!(
        (
            s.hits_ending("/InRelease"),
            s.conditional_ending("/InRelease")
        ),
        (9, 6)
    );
    assert_eq!(
        (s.hits_ending("/Packages.xz"), s.hits_ending(".deb")),
        (3, debs)
    );

    // Within the refresh interval InRelease is not asked for at all.
    let config = BuiltinConfig {
        refresh_interval: Duration::from_secs(3600),
        ..mirror.config(cache.path())
    };
    let scanner = BuiltinScanner::new(config).unwrap();
    scanner
        .scan(&inventory(), &Platform::linux("amd64"), &options)
        .await
        .unwrap();
    assert_eq!(s.hits_ending("/InRelease"), 12);
    scanner
        .scan(&inventory(), &Platform::linux("amd64"), &options)
        .await
        .unwrap();
    assert_eq!(s.hits_ending("/InRelease"), 12);
    assert_eq!(
        (s.hits_ending("/Packages.xz"), s.hits_ending(".deb")),
        (3, debs)
    );
}

#[tokio::test]
async fn a_tampered_inrelease_fails_the_signature_check() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    let path = mirror.www("debian-security/dists/bookworm-security/InRelease");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("Suite: bookworm-security", "Suite: bookworm-securitx", 1),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = scan(mirror.config(cache.path())).await.unwrap_err();
    assert!(
        matches!(&err, BuiltinError::Signature { suite, source: SignatureError::BadSignature { .. }, .. } if suite == "bookworm-security"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("suite bookworm-security: InRelease from http://127.0.0.1:"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_tampered_packages_index_fails_the_hash_check() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    let path = mirror.www("debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = scan(mirror.config(cache.path())).await.unwrap_err();
    assert!(
        matches!(&err, BuiltinError::IndexMismatch { suite, path, .. }
        if suite == "bookworm-security" && path == "main/binary-amd64/Packages.xz"),
        "{err}"
    );
    assert!(err.to_string().contains("the server sent"), "{err}");
    // Nothing unverified was cached: the security index's hash names no cache file (the
    // other suites' indexes, fetched concurrently, may be there).
    let release =
        std::fs::read_to_string(mirror.www("debian-security/dists/bookworm-security/Release"))
            .unwrap();
    let listed = release
        .lines()
        .skip_while(|l| *l != "SHA256:")
        .find(|l| l.ends_with(" main/binary-amd64/Packages.xz"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert!(!cache.path().join("index").join(listed).exists());
    let tampered = hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()));
    assert!(!cache.path().join("index").join(tampered).exists());
}

#[tokio::test]
async fn an_unknown_key_is_refused() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    let stranger = Signer::new("stranger <s@example.invalid>", &[], "never");
    let keyring = mirror.dir.path().join("stranger.gpg");
    stranger.export(&keyring, true);
    let cache = tempfile::tempdir().unwrap();
    let mut config = mirror.config(cache.path());
    config.debian.keyring = keyring;
    let err = scan(config).await.unwrap_err();
    let expected = format!(
        "signed only by keys that are not in the keyring: key {}",
        mirror.signer.fingerprint
    );
    assert!(
        matches!(
            &err,
            BuiltinError::Signature {
                source: SignatureError::UnknownKey { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().ends_with(&expected), "{err}");
}

#[tokio::test]
async fn expired_and_replayed_releases_are_refused() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    let security = mirror.www("debian-security");
    publish(
        &security,
        "bookworm-security",
        "pool/updates",
        &mirror.signer,
        "Valid-Until: Mon, 01 Jan 2024 00:00:00 UTC\n",
    );
    let cache = tempfile::tempdir().unwrap();
    let err = scan(mirror.config(cache.path())).await.unwrap_err();
    assert!(matches!(err, BuiltinError::Expired { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("expired at Mon, 01 Jan 2024 00:00:00 UTC"),
        "{err}"
    );

    // A validly signed Release of another suite, served in place of the security suite.
    let replayed = mirror.www("debian/dists/bookworm/InRelease");
    std::fs::copy(replayed, security.join("dists/bookworm-security/InRelease")).unwrap();
    let err = scan(mirror.config(cache.path())).await.unwrap_err();
    assert!(
        err.to_string().contains("it is for suite \"bookworm\""),
        "{err}"
    );
}

#[tokio::test]
async fn tampered_debs_and_missing_indexes_degrade_to_the_next_choice() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    // A .deb that does not match its index: the update stands, without CVE ids.
    let deb = mirror.www("debian-security/pool/updates/hello_1.0-2_amd64.deb");
    let mut bytes = std::fs::read(&deb).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&deb, bytes).unwrap();
    // Packages.xz listed but not served: Packages is used.
    std::fs::remove_file(mirror.www("debian/dists/bookworm/main/binary-amd64/Packages.xz"))
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let result = scan(mirror.config(cache.path())).await.unwrap();
    let hello = &result.updates[0];
    assert_eq!((hello.name.as_str(), hello.fixes.len()), ("hello", 0));
    assert!(
        matches!(&hello.changelog, ChangelogStatus::Unavailable { reason } if reason.contains("does not match its index")),
        "{:?}",
        hello.changelog
    );
    assert_eq!(result.updates.len(), 5);
    assert_eq!(
        mirror
            .server
            .hits("/debian/dists/bookworm/main/binary-amd64/Packages"),
        1
    );
}

#[tokio::test]
async fn server_errors_are_retryable_and_fall_back_to_a_cached_release() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let first = scan(mirror.config(cache.path())).await.unwrap();
    mirror.server.answer(
        "/debian-security/dists/bookworm-security/InRelease",
        StatusCode::SERVICE_UNAVAILABLE,
    );
    // With a verified cached copy still valid, the scan goes on.
    assert_eq!(scan(mirror.config(cache.path())).await.unwrap(), first);
    // Without one, the error names the suite and is retryable.
    let cold = tempfile::tempdir().unwrap();
    let err = scan(mirror.config(cold.path())).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("suite bookworm-security: fetching"),
        "{err}"
    );
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn plan_options_filter_updates() {
    let Some(mirror) = Mirror::start().await else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let scanner = BuiltinScanner::new(BuiltinConfig {
        changelogs: false,
        ..mirror.config(cache.path())
    })
    .unwrap();
    let options = PlanOptions {
        exclude: ["hello".to_owned()].into(),
        ..PlanOptions::default()
    };
    let result = scanner
        .scan(&inventory(), &Platform::linux("amd64"), &options)
        .await
        .unwrap();
    let names: Vec<&str> = result.plan.platforms[0]
        .updates
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(names, ["hello-data", "libbar1", "libbaz1", "tzdata"]);
    assert!(result.plan.platforms[0]
        .updates
        .iter()
        .all(|u| u.fixes.is_empty()));
    assert!(result.plan.platforms[0].not_planned.contains(&NotPlanned {
        name: "hello".to_owned(),
        installed_version: "1.0-1".to_owned(),
        vulnerability_id: String::new(),
        severity: None,
        fixed_versions: vec!["1.0-2".to_owned()],
        reason: SkipReason::Excluded,
    }));
    assert!(result
        .updates
        .iter()
        .all(|u| u.changelog == ChangelogStatus::NotRequested));
    assert_eq!(mirror.server.hits_ending(".deb"), 0);
}
