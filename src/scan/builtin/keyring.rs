//! OpenPGP checks of `InRelease` files, as apt's `gpgv` makes them, with rPGP.
//!
//! A keyring is a file of public keys, binary (`debian-archive-keyring.gpg`, several keys
//! concatenated; or a GnuPG keyring file with trust packets, as `ubuntu-archive-keyring.gpg`)
//! or ASCII-armored. An `InRelease` passes when at least one of its signatures
//! is a good signature by a key of the keyring that is valid now: a signing-capable primary
//! key or subkey with a good self-signature or binding, not expired, not revoked, over a
//! hash stronger than SHA-1. A signature that claims a keyring key as issuer and does not
//! verify fails the whole file, even beside a good one, as in apt (`BADSIG` is fatal): the
//! text was altered. Signatures by keys outside the keyring are ignored when another is good
//! (Debian signs with this and last release's keys).
//!
//! Only the signed text is returned; the caller must parse nothing else.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{KeyFlags, Signature, SignatureType};
use pgp::types::{KeyDetails, Tag, Timestamp};

/// A keyring file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "cannot read it: {reason} (Debian's keyring is in the debian-archive-keyring package)"
    )]
    Read { reason: String },
    #[error("not an OpenPGP keyring: {reason}")]
    Parse { reason: String },
    #[error("holds no public key")]
    Empty,
}

/// An `InRelease` that does not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not an OpenPGP cleartext-signed message: {reason}")]
    NotSigned { reason: String },
    #[error(
        "bad signature by key {key} ({user}): the signed text was altered or the signature \
         is corrupt"
    )]
    BadSignature { key: String, user: String },
    #[error("signed only by keys that are not in the keyring: {}", issuers.join(", "))]
    UnknownKey { issuers: Vec<String> },
    #[error("no acceptable signature: {}", problems.join("; "))]
    NoAcceptableSignature { problems: Vec<String> },
}

/// The public keys of one keyring file.
#[derive(Debug, Clone)]
pub struct Keyring {
    path: PathBuf,
    keys: Vec<SignedPublicKey>,
}

/// An `InRelease` whose signature passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedText {
    /// The signed text, with `\n` line ends and dash-escaping undone.
    pub text: String,
    /// Fingerprint (upper-case hex) of the key or subkey whose signature passed.
    pub signer: String,
}

impl Keyring {
    /// Reads a keyring file, binary or armored.
    ///
    /// # Errors
    /// [`KeyringError`] when the file cannot be read, is not OpenPGP, or has no public key.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let bytes = std::fs::read(path).map_err(|e| KeyringError::Read {
            reason: e.to_string(),
        })?;
        Keyring::from_bytes(path, &bytes)
    }

    /// Parses keyring bytes; `path` only names the keyring in messages.
    ///
    /// # Errors
    /// As [`Keyring::load`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Keyring, KeyringError> {
        let parse = |e: pgp::errors::Error| KeyringError::Parse {
            reason: e.to_string(),
        };
        let armored = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .is_some_and(|start| bytes[start..].starts_with(b"-----BEGIN PGP"));
        let dearmored;
        let binary = if armored {
            let mut dearmor = pgp::armor::Dearmor::new(bytes);
            let mut decoded = Vec::new();
            dearmor
                .read_to_end(&mut decoded)
                .map_err(|e| KeyringError::Parse {
                    reason: format!("ASCII armor: {e}"),
                })?;
            dearmored = decoded;
            &dearmored[..]
        } else {
            bytes
        };
        let packets =
            without_trust_packets(binary).map_err(|reason| KeyringError::Parse { reason })?;
        let keys: Vec<SignedPublicKey> = SignedPublicKey::from_bytes_many(&packets[..])
            .map_err(parse)?
            .collect::<Result<_, _>>()
            .map_err(parse)?;
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring {
            path: path.to_owned(),
            keys,
        })
    }

    /// The file the keys came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a cleartext-signed message (an `InRelease`) as of `now` and returns its signed
    /// text.
    ///
    /// # Errors
    /// [`SignatureError::NotSigned`] for anything but one cleartext-signed message;
    /// [`SignatureError::BadSignature`] when a keyring key's signature does not verify;
    /// [`SignatureError::UnknownKey`] when no signer is in the keyring;
    /// [`SignatureError::NoAcceptableSignature`] when the keyring's signers are expired,
    /// revoked, not allowed to sign, or used a weak hash.
    pub fn verify_cleartext(
        &self,
        message: &str,
        now: SystemTime,
    ) -> Result<VerifiedText, SignatureError> {
        let (message, _headers) = CleartextSignedMessage::from_string(message).map_err(|e| {
            SignatureError::NotSigned {
                reason: e.to_string(),
            }
        })?;
        if message.signatures().is_empty() {
            return Err(SignatureError::NotSigned {
                reason: "no signature".to_owned(),
            });
        }
        let signed = message.signed_text();
        let mut unknown = Vec::new();
        let mut problems = Vec::new();
        for signature in message.signatures() {
            let issuer = issuer_name(signature);
            if let Some(problem) = signature_problem(signature, now) {
                problems.push(format!("signature by {issuer}: {problem}"));
                continue;
            }
            let candidates = self.candidates(signature);
            if candidates.is_empty() {
                unknown.push(issuer);
                continue;
            }
            for candidate in candidates {
                let user = candidate.user();
                let key = candidate.fingerprint();
                let verified = match candidate.component {
                    Component::Primary => {
                        signature.verify(&candidate.key.primary_key, signed.as_bytes())
                    }
                    Component::Subkey(subkey) => signature.verify(&subkey.key, signed.as_bytes()),
                };
                if verified.is_err() {
                    return Err(SignatureError::BadSignature { key, user });
                }
                match candidate.validity(now) {
                    Ok(()) => {
                        return Ok(VerifiedText {
                            text: signed.replace("\r\n", "\n"),
                            signer: key,
                        })
                    }
                    Err(reason) => problems.push(format!("key {key} ({user}): {reason}")),
                }
            }
        }
        if problems.is_empty() {
            Err(SignatureError::UnknownKey { issuers: unknown })
        } else {
            problems.extend(
                unknown
                    .into_iter()
                    .map(|i| format!("{i}: not in the keyring")),
            );
            Err(SignatureError::NoAcceptableSignature { problems })
        }
    }

    /// The keys and subkeys a signature names as its issuer; every one of them when it
    /// names none (RFC 9580 allows that; the signature then decides).
    fn candidates<'k>(&'k self, signature: &Signature) -> Vec<Candidate<'k>> {
        let fingerprints = signature.issuer_fingerprint();
        let key_ids = signature.issuer_key_id();
        let named = |details: &dyn KeyDetails| {
            (fingerprints.is_empty() && key_ids.is_empty())
                || fingerprints.iter().any(|f| **f == details.fingerprint())
                || key_ids.iter().any(|id| **id == details.legacy_key_id())
        };
        let mut found = Vec::new();
        for key in &self.keys {
            if named(&key.primary_key) {
                found.push(Candidate {
                    key,
                    component: Component::Primary,
                });
            }
            for subkey in &key.public_subkeys {
                if named(&subkey.key) {
                    found.push(Candidate {
                        key,
                        component: Component::Subkey(subkey),
                    });
                }
            }
        }
        found
    }
}

/// The packet tag of GnuPG's trust packets (RFC 9580 section 5.10).
const TRUST_TAG: u8 = 12;

/// `packets` without their trust packets. GnuPG 1 and `gnupg-ring:` keyring files (Ubuntu's
/// `ubuntu-archive-keyring.gpg`) keep one after keys, user ids and signatures; they are
/// local bookkeeping, never signed, and pgp's key parser loses the user ids and
/// self-signatures that follow one. Borrowed when there is none.
fn without_trust_packets(packets: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let mut kept: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < packets.len() {
        let (tag, end) = packet_extent(packets, at)?;
        if tag == TRUST_TAG {
            kept.get_or_insert_with(|| packets[..at].to_vec());
        } else if let Some(kept) = &mut kept {
            kept.extend_from_slice(&packets[at..end]);
        }
        at = end;
    }
    Ok(kept.map_or(Cow::Borrowed(packets), Cow::Owned))
}

/// The tag of the packet starting at `at` and the offset just past it, for old- and
/// new-format headers with every length encoding (partial body lengths included).
fn packet_extent(packets: &[u8], at: usize) -> Result<(u8, usize), String> {
    let byte = |i: usize| {
        packets
            .get(i)
            .copied()
            .ok_or_else(|| format!("the packet at byte {at} is cut short"))
    };
    let number = |from: usize, len: usize| -> Result<usize, String> {
        (from..from + len).try_fold(0usize, |acc, i| Ok((acc << 8) | usize::from(byte(i)?)))
    };
    let header = byte(at)?;
    if header & 0x80 == 0 {
        return Err(format!(
            "byte {at} ({header:#04x}) does not start an OpenPGP packet"
        ));
    }
    let (tag, end) = if header & 0x40 == 0 {
        // Old format: tag in bits 5-2, length type in bits 1-0.
        let tag = (header >> 2) & 0x0f;
        let len_bytes = match header & 0x03 {
            0 => 1,
            1 => 2,
            2 => 4,
            // Indeterminate: the packet runs to the end of the input.
            _ => return Ok((tag, packets.len())),
        };
        let len = number(at + 1, len_bytes)?;
        (tag, (at + 1 + len_bytes).checked_add(len))
    } else {
        let tag = header & 0x3f;
        let mut pos = at + 1;
        loop {
            let first = byte(pos)?;
            match first {
                0..=191 => break (tag, (pos + 1).checked_add(usize::from(first))),
                192..=223 => {
                    let len = ((usize::from(first) - 192) << 8) + usize::from(byte(pos + 1)?) + 192;
                    break (tag, (pos + 2).checked_add(len));
                }
                255 => {
                    let len = number(pos + 1, 4)?;
                    break (tag, (pos + 5).checked_add(len));
                }
                // A partial body length: this many bytes, then another length.
                224..=254 => {
                    pos = (pos + 1)
                        .checked_add(1usize << (first & 0x1f))
                        .filter(|next| *next <= packets.len())
                        .ok_or_else(|| format!("the packet at byte {at} is cut short"))?;
                }
            }
        }
    };
    end.filter(|end| *end <= packets.len())
        .map(|end| (tag, end))
        .ok_or_else(|| format!("the packet at byte {at} is cut short"))
}

/// What is wrong with a signature before any key is tried.
fn signature_problem(signature: &Signature, now: SystemTime) -> Option<String> {
    match signature.hash_alg() {
        // apt has refused SHA-1 signatures on repositories since 2.x.
        Some(HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160) | None => {
            let name = signature
                .hash_alg()
                .map_or("unknown".to_owned(), |h| h.to_string());
            return Some(format!("weak hash algorithm {name}"));
        }
        Some(_) => {}
    }
    if !matches!(
        signature.typ(),
        Some(SignatureType::Text | SignatureType::Binary)
    ) {
        return Some(format!("not a document signature ({:?})", signature.typ()));
    }
    if let (Some(created), Some(lifetime)) =
        (signature.created(), signature.signature_expiration_time())
    {
        if lifetime.as_secs() != 0 && expiry(created, lifetime.as_secs()) <= now {
            return Some("signature expired".to_owned());
        }
    }
    None
}

fn issuer_name(signature: &Signature) -> String {
    if let Some(fingerprint) = signature.issuer_fingerprint().first() {
        format!("key {fingerprint:X}")
    } else if let Some(key_id) = signature.issuer_key_id().first() {
        format!("key id {}", hex::encode_upper(key_id.as_ref()))
    } else {
        "an unnamed key".to_owned()
    }
}

fn expiry(created: Timestamp, lifetime_secs: u32) -> SystemTime {
    SystemTime::from(created) + Duration::from_secs(u64::from(lifetime_secs))
}

// === impl Candidate ===

enum Component<'k> {
    Primary,
    Subkey(&'k SignedPublicSubKey),
}

struct Candidate<'k> {
    key: &'k SignedPublicKey,
    component: Component<'k>,
}

impl Candidate<'_> {
    fn fingerprint(&self) -> String {
        match self.component {
            Component::Primary => format!("{:X}", self.key.primary_key.fingerprint()),
            Component::Subkey(subkey) => format!("{:X}", subkey.key.fingerprint()),
        }
    }

    fn user(&self) -> String {
        self.key
            .details
            .users
            .first()
            .and_then(|u| u.id.as_str().map(str::to_owned))
            .unwrap_or_else(|| "no user id".to_owned())
    }

    /// Whether this key may sign now: the primary key must be valid in any case; a subkey
    /// also needs a good binding with the signing flag.
    fn validity(&self, now: SystemTime) -> Result<(), String> {
        let primary_sig = primary_self_signature(self.key, now)?;
        match self.component {
            Component::Primary => may_sign(primary_sig, "primary key"),
            Component::Subkey(subkey) => {
                let binding = subkey_binding(self.key, subkey, now)?;
                may_sign(binding, "subkey")
            }
        }
    }
}

fn may_sign(signature: &Signature, what: &str) -> Result<(), String> {
    let flags = signature.key_flags();
    // A self-signature without key flags predates them; gpg lets such keys sign.
    if flags == KeyFlags::default() || flags.sign() {
        Ok(())
    } else {
        Err(format!("{what} is not allowed to sign"))
    }
}

/// The newest good self-signature of the primary key, after the revocation and expiry checks.
fn primary_self_signature(key: &SignedPublicKey, now: SystemTime) -> Result<&Signature, String> {
    let primary = &key.primary_key;
    if key
        .details
        .revocation_signatures
        .iter()
        .any(|sig| sig.verify_key(primary).is_ok())
    {
        return Err("primary key is revoked".to_owned());
    }
    let certifications = key.details.users.iter().flat_map(|user| {
        user.signatures.iter().filter(|sig| {
            sig.verify_certification(primary, Tag::UserId, &user.id)
                .is_ok()
        })
    });
    let direct = key
        .details
        .direct_signatures
        .iter()
        .filter(|sig| sig.verify_key(primary).is_ok());
    let newest = certifications
        .chain(direct)
        .max_by_key(|sig| sig.created().map(Timestamp::as_secs))
        .ok_or_else(|| "primary key has no good self-signature".to_owned())?;
    check_expiry(primary.created_at(), newest, now)?;
    Ok(newest)
}

/// The newest good binding of a subkey, after the revocation and expiry checks.
fn subkey_binding<'k>(
    key: &'k SignedPublicKey,
    subkey: &'k SignedPublicSubKey,
    now: SystemTime,
) -> Result<&'k Signature, String> {
    let primary = &key.primary_key;
    let good = |sig: &&Signature| sig.verify_subkey_binding(primary, &subkey.key).is_ok();
    if subkey
        .signatures
        .iter()
        .filter(|sig| sig.typ() == Some(SignatureType::SubkeyRevocation))
        .any(|sig| good(&sig))
    {
        return Err("subkey is revoked".to_owned());
    }
    let newest = subkey
        .signatures
        .iter()
        .filter(|sig| sig.typ() == Some(SignatureType::SubkeyBinding))
        .filter(good)
        .filter(|sig| {
            // A signing subkey must cross-certify its primary, or anyone could bind
            // someone else's signing key to their certificate.
            !sig.key_flags().sign()
                || sig.embedded_signature().is_some_and(|back| {
                    back.verify_primary_key_binding(&subkey.key, primary)
                        .is_ok()
                })
        })
        .max_by_key(|sig| sig.created().map(Timestamp::as_secs))
        .ok_or_else(|| "subkey has no good binding signature".to_owned())?;
    check_expiry(subkey.key.created_at(), newest, now)?;
    Ok(newest)
}

fn check_expiry(created: Timestamp, signature: &Signature, now: SystemTime) -> Result<(), String> {
    match signature.key_expiration_time() {
        Some(lifetime) if lifetime.as_secs() != 0 => {
            let expires = expiry(created, lifetime.as_secs());
            if expires <= now {
                return Err(format!(
                    "expired on {}",
                    super::release::format_date(expires)
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
