//! Whole Alpine scans against signed indexes on loopback: the exact plan, CVE ids from the
//! secdb by origin, caching by hit counts, and every kind of bad index refused.

use std::time::Duration;

use hyper::StatusCode;

use super::fixture::{index_tar_gz, inventory, sign, AlpineMirror, KEY_NAME, MAIN_INDEX};
use crate::pkgs::Ecosystem;
use crate::scan::builtin::apk::{ApkError, ApkScan, IndexError};
use crate::scan::builtin::{BuiltinConfig, BuiltinError, BuiltinScanner, ChangelogStatus};
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

async fn scan_apk(config: BuiltinConfig, version_id: &str) -> Result<ApkScan, BuiltinError> {
    let scanner = BuiltinScanner::new(config).unwrap();
    scanner
        .apk()
        .scan(
            &inventory(version_id),
            &Platform::linux("amd64"),
            &PlanOptions::default(),
        )
        .await
}

fn index_error(error: BuiltinError) -> (String, IndexError) {
    match error {
        BuiltinError::Apk(ApkError::Index {
            repository, source, ..
        }) => (repository, source),
        other => panic!("expected an index error, got {other}"),
    }
}

#[tokio::test]
async fn scan_plans_every_newer_package_with_secdb_cves_by_origin() {
    let mirror = AlpineMirror::start().await;
    let cache = tempfile::tempdir().unwrap();
    let scanner = BuiltinScanner::new(mirror.config(cache.path())).unwrap();
    // Through the same entry point as dpkg images.
    let result = scanner
        .scan(
            &inventory("3.20.3"),
            &Platform::linux("amd64"),
            &PlanOptions::default(),
        )
        .await
        .unwrap();

    let platform = &result.plan.platforms[0];
    assert_eq!(platform.ecosystem, Ecosystem::Apk);
    assert_eq!(platform.os.id, "alpine");
    let openssl_fixes = || {
        vec![
            fix("CVE-2024-5535", "3.3.1-r1"),
            fix("CVE-2024-6119", "3.3.1-r1"),
        ]
    };
    assert_eq!(
        platform.updates,
        vec![
            update(
                "ca-certificates-bundle",
                "20240226-r0",
                "20240705-r0",
                vec![]
            ),
            update(
                "jq",
                "1.7.1-r0",
                "1.7.1-r1",
                vec![
                    fix("CVE-2024-23337", "1.7.1-r1"),
                    fix("CVE-2024-53427", "1.7.1-r1")
                ]
            ),
            update("libcrypto3", "3.3.1-r0", "3.3.2-r0", openssl_fixes()),
            update("libssl3", "3.3.1-r0", "3.3.2-r0", openssl_fixes()),
            update("musl", "1.2.5-r0", "1.2.5-r1", vec![]),
        ]
    );
    assert_eq!(platform.not_planned.len(), 1, "{:?}", platform.not_planned);
    let weird = &platform.not_planned[0];
    assert_eq!(weird.name, "weird");
    assert!(matches!(weird.reason, SkipReason::InvalidVersion { .. }));

    let PlanSource::BuiltinScanner { index_version } = &result.plan.source else {
        panic!("{:?}", result.plan.source);
    };
    assert!(
        index_version.starts_with("v3.20/main@v3.20.3-100-gabcdef012345#")
            && index_version.contains(", v3.20/community@"),
        "{index_version}"
    );
    let jq = result.updates.iter().find(|u| u.name == "jq").unwrap();
    assert_eq!(jq.suite, "v3.20/community");
    assert_eq!(jq.changelog, ChangelogStatus::Read);
    let libssl = result.updates.iter().find(|u| u.name == "libssl3").unwrap();
    assert_eq!(libssl.source_name, "openssl");

    // What fetching the packages needs.
    let apk = scanner
        .apk()
        .scan(
            &inventory("3.20.3"),
            &Platform::linux("amd64"),
            &PlanOptions::default(),
        )
        .await
        .unwrap();
    let musl = apk.updates.iter().find(|u| u.name == "musl").unwrap();
    assert_eq!(
        musl.url,
        format!(
            "{}/v3.20/main/x86_64/musl-1.2.5-r1.apk",
            mirror.server.url("alpine")
        )
    );
    assert_eq!(
        musl.checksum.as_deref(),
        Some("Q1mUsLDG4uiNbrQzX2iQvl8+s6ezY=")
    );
    assert_eq!(musl.size, Some(411331));
    assert_eq!(musl.repository, "v3.20/main");
    let bundle = apk
        .updates
        .iter()
        .find(|u| u.name == "ca-certificates-bundle")
        .unwrap();
    assert_eq!(bundle.architecture, "noarch");
}

#[tokio::test]
async fn filters_and_missing_secdb_keep_the_updates() {
    let mirror = AlpineMirror::start().await;
    let cache = tempfile::tempdir().unwrap();
    let mut config = mirror.config(cache.path());
    config.alpine.secdb_url = None;
    let scanner = BuiltinScanner::new(config).unwrap();
    let options = PlanOptions {
        exclude: ["musl".to_owned()].into(),
        ..PlanOptions::default()
    };
    let result = scanner
        .apk()
        .scan(&inventory("3.20.3"), &Platform::linux("amd64"), &options)
        .await
        .unwrap();
    assert_eq!(result.cves, ChangelogStatus::NotRequested);
    let names: Vec<&str> = result.plan.platforms[0]
        .updates
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["ca-certificates-bundle", "jq", "libcrypto3", "libssl3"]
    );
    assert!(result.plan.platforms[0]
        .updates
        .iter()
        .all(|u| u.fixes.is_empty()));
    assert!(result.plan.platforms[0].not_planned.contains(&NotPlanned {
        name: "musl".to_owned(),
        installed_version: "1.2.5-r0".to_owned(),
        vulnerability_id: String::new(),
        severity: None,
        fixed_versions: vec!["1.2.5-r1".to_owned()],
        reason: SkipReason::Excluded,
    }));

    // A secdb that cannot be fetched costs the ids, not the scan.
    let mut config = mirror.config(cache.path());
    config.alpine.secdb_url = Some(mirror.server.url("no-secdb-here"));
    let result = scan_apk(config, "3.20.3").await.unwrap();
    assert_eq!(result.plan.platforms[0].updates.len(), 5);
    match &result.cves {
        ChangelogStatus::Unavailable { reason } => {
            assert!(reason.contains("404"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sha256_signatures_verify_too() {
    let mirror = AlpineMirror::start().await;
    let signed = sign(
        &index_tar_gz(MAIN_INDEX),
        &mirror.private_key,
        KEY_NAME,
        "sha256",
    );
    mirror.publish("v3.20/main/x86_64/APKINDEX.tar.gz", &signed);
    let cache = tempfile::tempdir().unwrap();
    let result = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap();
    assert_eq!(result.plan.platforms[0].updates.len(), 5);
}

#[tokio::test]
async fn a_tampered_index_is_refused() {
    let mirror = AlpineMirror::start().await;
    let genuine = sign(
        &index_tar_gz(MAIN_INDEX),
        &mirror.private_key,
        KEY_NAME,
        "sha1",
    );
    // The genuine signature member in front of an index that offers a newer musl.
    let (_, boundary) = crate::scan::builtin::apk::signed::first_member(&genuine).unwrap();
    let forged_index = index_tar_gz(&MAIN_INDEX.replace("V:1.2.5-r1", "V:1.2.6-r0"));
    let forged = [&genuine[..boundary], &forged_index[..]].concat();
    mirror.publish("v3.20/main/x86_64/APKINDEX.tar.gz", &forged);

    let cache = tempfile::tempdir().unwrap();
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert_eq!(error.origin(), crate::error::Origin::Upstream);
    assert!(!error.is_retryable());
    let (repository, source) = index_error(error);
    assert_eq!(repository, "v3.20/main");
    assert_eq!(
        source,
        IndexError::BadSignature {
            key: KEY_NAME.to_owned()
        }
    );
    assert!(
        message.contains("v3.20/main") && message.contains("does not verify"),
        "{message}"
    );

    // One flipped byte in the compressed index is caught the same way.
    let mut flipped = genuine.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x01;
    mirror.publish("v3.20/main/x86_64/APKINDEX.tar.gz", &flipped);
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    assert!(matches!(
        index_error(error).1,
        IndexError::BadSignature { .. }
    ));
}

#[tokio::test]
async fn an_index_signed_by_an_unknown_key_is_refused() {
    let mirror = AlpineMirror::start().await;
    let other_name = "someone-else-00000000.rsa.pub";
    let signed = sign(
        &index_tar_gz(MAIN_INDEX),
        &mirror.private_key,
        other_name,
        "sha1",
    );
    mirror.publish("v3.20/community/x86_64/APKINDEX.tar.gz", &signed);
    let cache = tempfile::tempdir().unwrap();
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(other_name)
            && message.contains(&mirror.keys.path().display().to_string())
            && message.contains("v3.20/community"),
        "{message}"
    );
    let (_, source) = index_error(error);
    assert!(matches!(source, IndexError::UnknownKey { .. }), "{source}");

    // A key name that tries to leave the keys directory is just unknown.
    let signed = sign(&index_tar_gz(MAIN_INDEX), &mirror.private_key, "..", "sha1");
    mirror.publish("v3.20/community/x86_64/APKINDEX.tar.gz", &signed);
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    assert!(matches!(
        index_error(error).1,
        IndexError::UnknownKey { .. }
    ));
}

#[tokio::test]
async fn a_signature_by_another_key_under_a_trusted_name_is_refused() {
    let mirror = AlpineMirror::start().await;
    let (impostor, _) = super::fixture::generate_key(mirror.root.path(), "impostor");
    let signed = sign(&index_tar_gz(MAIN_INDEX), &impostor, KEY_NAME, "sha1");
    mirror.publish("v3.20/main/x86_64/APKINDEX.tar.gz", &signed);
    let cache = tempfile::tempdir().unwrap();
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    assert!(matches!(
        index_error(error).1,
        IndexError::BadSignature { .. }
    ));
}

#[tokio::test]
async fn an_unsigned_index_is_refused() {
    let mirror = AlpineMirror::start().await;
    mirror.publish(
        "v3.20/main/x86_64/APKINDEX.tar.gz",
        &index_tar_gz(MAIN_INDEX),
    );
    let cache = tempfile::tempdir().unwrap();
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("not signed"), "{message}");
    assert!(matches!(index_error(error).1, IndexError::NotSigned { .. }));

    // Two index members and no signature among them: still unsigned.
    let twice = [index_tar_gz(MAIN_INDEX), index_tar_gz(MAIN_INDEX)].concat();
    mirror.publish("v3.20/main/x86_64/APKINDEX.tar.gz", &twice);
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    let (_, source) = index_error(error);
    assert!(
        source.to_string().contains("DESCRIPTION"),
        "names what it found: {source}"
    );

    // Not gzip at all.
    mirror.publish("v3.20/main/x86_64/APKINDEX.tar.gz", b"<html>hello</html>");
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    assert!(matches!(index_error(error).1, IndexError::Malformed { .. }));
}

#[tokio::test]
async fn a_branch_the_mirror_does_not_carry_is_a_404_naming_it() {
    let mirror = AlpineMirror::start().await;
    let cache = tempfile::tempdir().unwrap();
    let error = scan_apk(mirror.config(cache.path()), "3.99.1")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("v3.99/main")
            && message.contains("404")
            && message.contains("is v3.99 a branch"),
        "{message}"
    );
    assert!(!error.is_retryable());

    // The mirror failing is retryable.
    mirror.server.answer(
        "/alpine/v3.20/main/x86_64/APKINDEX.tar.gz",
        StatusCode::BAD_GATEWAY,
    );
    let error = scan_apk(mirror.config(cache.path()), "3.20.3")
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
}

#[tokio::test]
async fn warm_scans_ask_conditionally_and_a_new_process_reverifies_the_disk_copy() {
    let mirror = AlpineMirror::start().await;
    let cache = tempfile::tempdir().unwrap();
    let main = "/alpine/v3.20/main/x86_64/APKINDEX.tar.gz";

    // Within the refresh interval: nothing is asked again.
    let scanner = BuiltinScanner::new(mirror.config(cache.path())).unwrap();
    let platform = Platform::linux("amd64");
    let options = PlanOptions::default();
    let first = scanner
        .apk()
        .scan(&inventory("3.20.3"), &platform, &options)
        .await
        .unwrap();
    let second = scanner
        .apk()
        .scan(&inventory("3.20.3"), &platform, &options)
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(mirror.server.hits(main), 1);
    assert_eq!(mirror.server.hits("/secdb/v3.20/main.json"), 1);

    // Refresh interval zero: a conditional request, answered 304.
    let mut config = mirror.config(cache.path());
    config.refresh_interval = Duration::ZERO;
    let scanner = BuiltinScanner::new(config).unwrap();
    let third = scanner
        .apk()
        .scan(&inventory("3.20.3"), &platform, &options)
        .await
        .unwrap();
    assert_eq!(third, first);
    assert_eq!(mirror.server.hits(main), 2);
    assert_eq!(
        mirror
            .server
            .conditional_ending("/main/x86_64/APKINDEX.tar.gz"),
        1,
        "the new process found the verified copy on disk"
    );

    // A disk copy altered behind our back is not trusted: the scan fetches afresh.
    let apk_dir = cache.path().join("apk");
    for entry in std::fs::read_dir(&apk_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gz") {
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 10;
            bytes[last] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let scanner = BuiltinScanner::new(mirror.config(cache.path())).unwrap();
    let fourth = scanner
        .apk()
        .scan(&inventory("3.20.3"), &platform, &options)
        .await
        .unwrap();
    assert_eq!(fourth, first);
    assert_eq!(mirror.server.hits(main), 3);
    assert_eq!(
        mirror
            .server
            .conditional_ending("/main/x86_64/APKINDEX.tar.gz"),
        1,
        "the damaged copy was dropped, the request was unconditional"
    );
}

#[tokio::test]
async fn other_apk_distributions_and_architectures_are_refused_before_any_request() {
    let mirror = AlpineMirror::start().await;
    let cache = tempfile::tempdir().unwrap();
    let scanner = BuiltinScanner::new(mirror.config(cache.path())).unwrap();
    let mut wolfi = inventory("3.20.3");
    wolfi.os.id = "wolfi".to_owned();
    let error = scanner
        .scan(&wolfi, &Platform::linux("amd64"), &PlanOptions::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("\"wolfi\""), "{error}");
    assert_eq!(error.origin(), crate::error::Origin::Client);
    let error = scanner
        .scan(
            &inventory("3.20.3"),
            &Platform::linux("mips"),
            &PlanOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("linux/mips"), "{error}");
    assert_eq!(mirror.server.hits_ending(".tar.gz"), 0);
}
