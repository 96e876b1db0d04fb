//! Keyrings in GnuPG's own keyring format, as Ubuntu ships `ubuntu-archive-keyring.gpg`: a
//! trust packet (tag 12) after keys, user ids and signatures, in any packet header format.

use std::path::PathBuf;
use std::time::SystemTime;

use base64::Engine;

use super::repo::{tools_available, Signer};
use crate::scan::builtin::keyring::{Keyring, KeyringError};

const TEXT: &str = "Suite: jammy-security\nDate: Sat, 10 Aug 2024 09:18:42 UTC\n";

/// `(tag, body)` of each packet of a binary keyring that uses short old-format headers, as
/// `gpg --export` writes them for small keys.
fn packets(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes[at];
        assert_eq!(header & 0xc0, 0x80, "old-format header at {at}");
        let (len, body) = match header & 0x03 {
            0 => (usize::from(bytes[at + 1]), at + 2),
            1 => (
                usize::from(bytes[at + 1]) << 8 | usize::from(bytes[at + 2]),
                at + 3,
            ),
            other => panic!("length type {other} at {at}"),
        };
        out.push(((header >> 2) & 0x0f, bytes[body..body + len].to_vec()));
        at = body + len;
    }
    out
}

/// One packet with an old-format header of length type `kind` (0, 1, 2 or 3).
fn old_format(tag: u8, body: &[u8], kind: u8) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap();
    let mut out = vec![0x80 | (tag << 2) | kind];
    match kind {
        0 => out.push(u8::try_from(len).unwrap()),
        1 => out.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes()),
        2 => out.extend_from_slice(&len.to_be_bytes()),
        _ => {}
    }
    out.extend_from_slice(body);
    out
}

/// One packet with a new-format header: a one-, two- or five-byte length (`kind` 0, 1, 2),
/// or (`kind` 3) a partial body length of one byte and then the rest.
fn new_format(tag: u8, body: &[u8], kind: u8) -> Vec<u8> {
    let mut out = vec![0xc0 | tag];
    let length = |out: &mut Vec<u8>, len: usize, kind: u8| match kind {
        0 => out.push(u8::try_from(len).unwrap()),
        1 => {
            let len = len - 192;
            out.push(u8::try_from(len / 256 + 192).unwrap());
            out.push(u8::try_from(len % 256).unwrap());
        }
        _ => {
            out.push(255);
            out.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        }
    };
    let mut rest = body;
    if kind == 3 {
        out.push(0xe0);
        out.push(rest[0]);
        rest = &rest[1..];
        length(&mut out, rest.len(), if rest.len() < 192 { 0 } else { 1 });
    } else {
        length(&mut out, rest.len(), kind);
    }
    out.extend_from_slice(rest);
    out
}

fn armored(binary: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(binary);
    let mut out = String::from("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END PGP PUBLIC KEY BLOCK-----\n");
    out.into_bytes()
}

/// A signing key, its `gpg --export` in `exported.gpg` and `TEXT` clearsigned by it.
struct Setup {
    dir: tempfile::TempDir,
    signer: Signer,
    exported: PathBuf,
    message: String,
}

impl Setup {
    fn new() -> Option<Setup> {
        if !tools_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::new("archive <a@example.invalid>", &[], "never");
        let exported = dir.path().join("exported.gpg");
        signer.export(&exported, false);
        let (input, output) = (dir.path().join("Release"), dir.path().join("InRelease"));
        std::fs::write(&input, TEXT).unwrap();
        signer.clearsign(&input, &output, &[]);
        let message = std::fs::read_to_string(output).unwrap();
        Some(Setup {
            dir,
            signer,
            exported,
            message,
        })
    }

    /// Writes `contents` to the file `name` and asserts that it loads and verifies the
    /// message; `what` says which variant failed.
    fn assert_verifies(&self, name: &str, what: &str, contents: &[u8]) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        let keyring = Keyring::load(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let verified = keyring
            .verify_cleartext(&self.message, SystemTime::now())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(verified.text, TEXT.trim_end());
        assert_eq!(verified.signer, self.signer.fingerprint);
    }
}

/// gpg itself writes trust packets into a `gnupg-ring:` keyring file, the format of
/// GnuPG 1's `pubring.gpg` and of Ubuntu's archive keyring.
#[test]
fn a_keyring_file_written_by_gpg_verifies() {
    let Some(setup) = Setup::new() else { return };
    let ring = setup.dir.path().join("ring.gpg");
    setup.signer.gpg(&[
        "--batch",
        "--no-default-keyring",
        "--keyring",
        &format!("gnupg-ring:{}", ring.display()),
        "--import",
        setup.exported.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&ring).unwrap();
    let tags: Vec<u8> = packets(&bytes).into_iter().map(|(tag, _)| tag).collect();
    assert!(tags.contains(&12), "gpg wrote no trust packet: {tags:?}");
    setup.assert_verifies("ring.gpg", "gpg's keyring file", &bytes);
    setup.assert_verifies("ring.asc", "gpg's keyring file, armored", &armored(&bytes));
}

/// Trust packets after every packet, the packets re-encoded in each header format and
/// length encoding, binary and armored: the keys parse and verify as exported.
#[test]
fn trust_packets_in_every_header_format_are_skipped() {
    let Some(setup) = Setup::new() else { return };
    let packets = packets(&std::fs::read(&setup.exported).unwrap());
    // Trust packets with a body of 2 (the `0xb0 0x02 0x05 0x00` of GnuPG 1) or 200 bytes,
    // the latter so that two-byte lengths have a body to describe.
    let trust = |i: usize| {
        if i.is_multiple_of(2) {
            vec![5, 0]
        } else {
            vec![0; 200]
        }
    };
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for kind in 0..3u8 {
        let mut old = Vec::new();
        for (i, (tag, body)) in packets.iter().enumerate() {
            let kind = if kind == 0 && body.len() > 255 {
                1
            } else {
                kind
            };
            old.extend(old_format(*tag, body, kind));
            old.extend(old_format(12, &trust(i), if kind == 0 { 0 } else { kind }));
        }
        // An indeterminate length runs to the end, so it can only be the last packet's.
        let mut last = old.clone();
        last.extend(old_format(12, &[5, 0], 3));
        variants.push((format!("old format, length type {kind}"), old));
        variants.push((format!("old format {kind}, indeterminate last"), last));
    }
    for kind in 0..4u8 {
        let mut new = Vec::new();
        for (i, (tag, body)) in packets.iter().enumerate() {
            let body_kind = match kind {
                0 if body.len() > 191 => 2,
                1 if body.len() < 192 => 0,
                3 => 2,
                other => other,
            };
            new.extend(new_format(*tag, body, body_kind));
            let trust = trust(i);
            let trust_kind = match kind {
                0 if trust.len() > 191 => 1,
                1 if trust.len() < 192 => 0,
                other => other,
            };
            new.extend(new_format(12, &trust, trust_kind));
        }
        variants.push((format!("new format, length kind {kind}"), new));
    }
    for (i, (what, bytes)) in variants.iter().enumerate() {
        setup.assert_verifies(&format!("{i}.gpg"), what, bytes);
        let armored_what = format!("{what}, armored");
        setup.assert_verifies(&format!("{i}.asc"), &armored_what, &armored(bytes));
    }
}

#[test]
fn cut_short_packets_are_named_by_offset() {
    let dir = tempfile::tempdir().unwrap();
    for (bytes, reason) in [
        (
            &b"\xb0\x02\x05\x00\x99\x01\x02garbage"[..],
            "byte 4 is cut short",
        ),
        (&b"\xb0\x02\x05\x00\xcc\xe3ab"[..], "byte 4 is cut short"),
        (&b"\xb0\x02\x05\x00\x05"[..], "byte 4 (0x05) does not start"),
    ] {
        let path = dir.path().join("cut.gpg");
        std::fs::write(&path, bytes).unwrap();
        match Keyring::load(&path) {
            Err(KeyringError::Parse { reason: got }) => {
                assert!(got.contains(reason), "{got:?} should say {reason:?}")
            }
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}
