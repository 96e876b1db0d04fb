//! InRelease signature checks against keys and signatures made by real gpg.

use std::path::Path;
use std::time::SystemTime;

use super::repo::{tools_available, Signer};
use crate::scan::builtin::keyring::{Keyring, KeyringError, SignatureError};

const TEXT: &str =
    "Suite: test\nDate: Sat, 10 Aug 2024 09:18:42 UTC\n- a line that needs dash-escaping\n";

/// `TEXT` clearsigned by `signer`, with `extra` gpg options.
fn signed(signer: &Signer, dir: &Path, extra: &[&str]) -> String {
    let (input, output) = (dir.join("Release"), dir.join("InRelease"));
    std::fs::write(&input, TEXT).unwrap();
    signer.clearsign(&input, &output, extra);
    std::fs::read_to_string(output).unwrap()
}

fn keyring_of(signer: &Signer, dir: &Path, armor: bool) -> Keyring {
    let path = dir.join(if armor { "key.asc" } else { "key.gpg" });
    signer.export(&path, armor);
    Keyring::load(&path).unwrap()
}

#[test]
fn good_signatures_pass_with_binary_and_armored_keyrings() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new("test <t@example.invalid>", &[], "never");
    let message = signed(&signer, dir.path(), &[]);
    for armor in [false, true] {
        let keyring = keyring_of(&signer, dir.path(), armor);
        let verified = keyring
            .verify_cleartext(&message, SystemTime::now())
            .unwrap();
        assert_eq!(verified.text, TEXT.trim_end());
        assert_eq!(verified.signer, signer.fingerprint);
    }
}

#[test]
fn altered_text_is_a_bad_signature() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new("test <t@example.invalid>", &[], "never");
    let keyring = keyring_of(&signer, dir.path(), false);
    let message = signed(&signer, dir.path(), &[]).replace("Suite: test", "Suite: evil");
    let err = keyring
        .verify_cleartext(&message, SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(&err, SignatureError::BadSignature { key, .. } if *key == signer.fingerprint),
        "{err}"
    );
    assert!(err.to_string().contains("altered"), "{err}");
}

#[test]
fn unknown_keys_and_unsigned_text_are_refused() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new("test <t@example.invalid>", &[], "never");
    let stranger = Signer::new("stranger <s@example.invalid>", &[], "never");
    let keyring = keyring_of(&signer, dir.path(), false);
    let message = signed(&stranger, dir.path(), &[]);
    let err = keyring
        .verify_cleartext(&message, SystemTime::now())
        .unwrap_err();
    assert_eq!(
        err,
        SignatureError::UnknownKey {
            issuers: vec![format!("key {}", stranger.fingerprint)]
        }
    );
    let err = keyring
        .verify_cleartext(TEXT, SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, SignatureError::NotSigned { .. }), "{err}");
}

#[test]
fn one_good_signature_among_unknown_ones_passes() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new("test <t@example.invalid>", &[], "never");
    // A second key in the same home; the keyring only has the first, as when Debian signs
    // with this and the previous release's keys.
    signer.gpg(&[
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "old <o@example.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let message = signed(
        &signer,
        dir.path(),
        &["--local-user", "old <o@example.invalid>"],
    );
    assert_eq!(message.matches("BEGIN PGP SIGNATURE").count(), 1);
    let keyring = keyring_of(&signer, dir.path(), false);
    let verified = keyring
        .verify_cleartext(&message, SystemTime::now())
        .unwrap();
    assert_eq!(verified.signer, signer.fingerprint);
}

#[test]
fn weak_hashes_expired_and_revoked_keys_are_refused() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();

    let signer = Signer::new("test <t@example.invalid>", &[], "never");
    let keyring = keyring_of(&signer, dir.path(), false);
    let message = signed(&signer, dir.path(), &["--digest-algo", "SHA1"]);
    let err = keyring.verify_cleartext(&message, now).unwrap_err();
    assert!(
        err.to_string().contains("weak hash algorithm SHA1"),
        "{err}"
    );

    // Made in 2020 with a lifetime of one day.
    let past = ["--faked-system-time", "20200101T000000!"];
    let expired = Signer::new("expired <e@example.invalid>", &past, "1d");
    let keyring = keyring_of(&expired, dir.path(), false);
    let message = signed(&expired, dir.path(), &past);
    let err = keyring.verify_cleartext(&message, now).unwrap_err();
    assert!(
        err.to_string().contains("expired on Thu, 02 Jan 2020"),
        "{err}"
    );

    let revoked = Signer::new("revoked <r@example.invalid>", &[], "never");
    let message = signed(&revoked, dir.path(), &[]);
    let certificate = revoked
        .home()
        .join("openpgp-revocs.d")
        .join(format!("{}.rev", revoked.fingerprint));
    // gpg guards the stored certificate with a leading ':' against accidental import.
    let certificate = std::fs::read_to_string(certificate).unwrap().replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    );
    let certificate_path = dir.path().join("revocation.asc");
    std::fs::write(&certificate_path, certificate).unwrap();
    revoked.gpg(&["--batch", "--import", certificate_path.to_str().unwrap()]);
    let keyring = keyring_of(&revoked, dir.path(), false);
    let err = keyring.verify_cleartext(&message, now).unwrap_err();
    assert!(err.to_string().contains("primary key is revoked"), "{err}");
}

#[test]
fn keyring_files_that_are_not_keyrings() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gpg");
    let err = Keyring::load(&missing).unwrap_err();
    assert!(err.to_string().contains("debian-archive-keyring"), "{err}");
    let garbage = dir.path().join("garbage.gpg");
    std::fs::write(&garbage, b"\x99\x01\x02garbage").unwrap();
    assert!(matches!(
        Keyring::load(&garbage),
        Err(KeyringError::Parse { .. })
    ));
    let empty = dir.path().join("empty.gpg");
    std::fs::write(&empty, b"").unwrap();
    assert!(Keyring::load(&empty).is_err());
}
