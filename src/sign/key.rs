//! The operator's signing key and the public keys originals are checked with.
//!
//! A private key is a PEM file: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) EC P-256, or
//! cosign's encrypted format (`ENCRYPTED SIGSTORE PRIVATE KEY`, formerly `ENCRYPTED COSIGN
//! PRIVATE KEY`): JSON whose `kdf` is scrypt (`N`, `r`, `p`, `salt`) and whose `cipher` is
//! NaCl secretbox (`nonce`), sealing the PKCS#8 DER of the key (go-securesystemslib's
//! `encrypted` package, which cosign and sigstore-rs both use). The key material never
//! leaves this file: `Debug` shows only the public key's fingerprint, errors name the file
//! and what is wrong with it, never a byte of it.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use xsalsa20poly1305::aead::{Aead as _, KeyInit as _};
use zeroize::Zeroizing;

use crate::config::Secret;

/// The PEM labels of cosign's encrypted private keys, new and old.
pub const SIGSTORE_ENCRYPTED_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
pub const COSIGN_ENCRYPTED_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// cosign's scrypt parameters; larger ones are refused (a key file must not be able to make
/// the process allocate gigabytes at start).
const SCRYPT_LOG_N: u8 = 15;
const MAX_SCRYPT_LOG_N: u8 = 20;

/// Why a key cannot be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the key is encrypted and no password is configured (`signing.password_env` or `signing.password_file`)")]
    NoPassword,
    #[error("the password does not open the encrypted key")]
    WrongPassword,
}

/// The private key patched images are signed with.
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field has to decide how it is shown.
        let SigningKey { key: _, public } = self;
        f.debug_struct("SigningKey")
            .field("key", &"[REDACTED]")
            .field("public", public)
            .finish()
    }
}

impl SigningKey {
    /// Reads the key at `path`; `password` opens an encrypted one.
    ///
    /// # Errors
    /// The file cannot be read, is no P-256 key, or the password does not open it.
    pub fn load(path: &Path, password: Option<&Secret>) -> Result<SigningKey, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.to_owned(),
                    source,
                })?,
            );
        SigningKey::from_pem(&text, password)
    }

    /// # Errors
    /// As [`SigningKey::load`].
    pub fn from_pem(text: &str, password: Option<&Secret>) -> Result<SigningKey, KeyError> {
        let block = pem::parse(text)
            .map_err(|e| KeyError::Invalid(format!("not a PEM private key ({e})")))?;
        let secret = match block.tag() {
            "PRIVATE KEY" => p256::SecretKey::from_pkcs8_der(block.contents()).map_err(|e| {
                KeyError::Invalid(format!("not a PKCS#8 EC P-256 private key ({e})"))
            })?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(block.contents())
                .map_err(|e| KeyError::Invalid(format!("not a SEC1 EC P-256 private key ({e})")))?,
            SIGSTORE_ENCRYPTED_LABEL | COSIGN_ENCRYPTED_LABEL => {
                let password = password.ok_or(KeyError::NoPassword)?;
                let der = decrypt_cosign(block.contents(), password.expose().as_bytes())?;
                p256::SecretKey::from_pkcs8_der(&der).map_err(|e| {
                    KeyError::Invalid(format!(
                        "the encrypted key is not a PKCS#8 EC P-256 key ({e}); only ECDSA P-256 keys are supported"
                    ))
                })?
            }
            other => {
                return Err(KeyError::Invalid(format!(
                    "PEM block {other:?} is not a private key (expected PRIVATE KEY, EC PRIVATE KEY or {SIGSTORE_ENCRYPTED_LABEL})"
                )))
            }
        };
        let key = p256::ecdsa::SigningKey::from(secret);
        let public = VerifyingKey(*key.verifying_key());
        Ok(SigningKey { key, public })
    }

    /// ECDSA P-256 over SHA-256 of `message`, DER-encoded. RFC 6979 nonces: the same
    /// message gives the same signature on every replica.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.key.sign(message);
        signature.to_der().as_bytes().to_vec()
    }

    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }
}

/// A public key signatures are checked with (cosign's `cosign.pub`: a PEM `PUBLIC KEY`).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey(p256::ecdsa::VerifyingKey);

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.fingerprint())
    }
}

impl VerifyingKey {
    /// # Errors
    /// The file cannot be read or holds no P-256 public key.
    pub fn load(path: &Path) -> Result<VerifyingKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        VerifyingKey::from_pem(&text)
    }

    /// # Errors
    /// `text` holds no P-256 public key.
    pub fn from_pem(text: &str) -> Result<VerifyingKey, KeyError> {
        p256::ecdsa::VerifyingKey::from_public_key_pem(text.trim())
            .map(VerifyingKey)
            .map_err(|e| KeyError::Invalid(format!("not a PEM EC P-256 public key ({e})")))
    }

    /// The SPKI PEM, as `cosign public-key` prints it.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap_or_default()
    }

    /// `sha256:<hex>` of the SPKI DER: names the key in logs and the admin API.
    pub fn fingerprint(&self) -> String {
        let der = self
            .0
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(der)))
    }

    /// Whether `signature` (DER) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        p256::ecdsa::Signature::from_der(signature)
            .is_ok_and(|sig| self.0.verify(message, &sig).is_ok())
    }
}

#[derive(Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn decrypt_cosign(json: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let invalid = |what: String| KeyError::Invalid(format!("encrypted key: {what}"));
    let data: EncryptedKey =
        serde_json::from_slice(json).map_err(|e| invalid(format!("not cosign's JSON ({e})")))?;
    if data.kdf.name != "scrypt" || data.cipher.name != "nacl/secretbox" {
        return Err(invalid(format!(
            "kdf {:?} and cipher {:?}; only scrypt and nacl/secretbox are known",
            data.kdf.name, data.cipher.name
        )));
    }
    let n = data.kdf.params.n;
    let log_n = n.checked_ilog2().unwrap_or(0);
    if !n.is_power_of_two() || log_n == 0 || log_n > u32::from(MAX_SCRYPT_LOG_N) {
        return Err(invalid(format!(
            "scrypt N = {n} is not a power of two up to 2^{MAX_SCRYPT_LOG_N}"
        )));
    }
    let decode = |field: &str, text: &str| {
        BASE64
            .decode(text)
            .map_err(|e| invalid(format!("{field} is not base64 ({e})")))
    };
    let salt = decode("salt", &data.kdf.salt)?;
    let nonce = decode("nonce", &data.cipher.nonce)?;
    let sealed = decode("ciphertext", &data.ciphertext)?;
    if nonce.len() != 24 {
        return Err(invalid(format!(
            "the nonce has {} bytes, not 24",
            nonce.len()
        )));
    }
    let box_key = scrypt_key(
        password,
        &salt,
        log_n as u8,
        data.kdf.params.r,
        data.kdf.params.p,
    )?;
    let cipher = xsalsa20poly1305::XSalsa20Poly1305::new_from_slice(box_key.as_slice())
        .map_err(|_| invalid("secretbox key length".into()))?;
    cipher
        .decrypt(
            xsalsa20poly1305::Nonce::from_slice(&nonce),
            sealed.as_slice(),
        )
        .map(Zeroizing::new)
        .map_err(|_| KeyError::WrongPassword)
}

fn scrypt_key(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let params = scrypt::Params::new(log_n, r, p, 32)
        .map_err(|e| KeyError::Invalid(format!("encrypted key: scrypt parameters ({e})")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut_slice())
        .map_err(|e| KeyError::Invalid(format!("encrypted key: scrypt ({e})")))?;
    Ok(key)
}

/// Seals the PKCS#8 DER `key` with `password` in cosign's encrypted format (random salt and
/// nonce, cosign's scrypt parameters): what `cosign generate-key-pair` writes. For tests
/// and for operators without cosign.
///
/// # Errors
/// Only if the crypto crates refuse their own parameters.
pub fn encrypt_cosign(key_der: &[u8], password: &[u8]) -> Result<String, KeyError> {
    use rand::RngCore as _;
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut nonce);
    let box_key = scrypt_key(password, &salt, SCRYPT_LOG_N, 8, 1)?;
    let cipher = xsalsa20poly1305::XSalsa20Poly1305::new_from_slice(box_key.as_slice())
        .map_err(|_| KeyError::Invalid("secretbox key length".into()))?;
    let sealed = cipher
        .encrypt(xsalsa20poly1305::Nonce::from_slice(&nonce), key_der)
        .map_err(|_| KeyError::Invalid("secretbox refused to seal".into()))?;
    let json = serde_json::json!({
        "kdf": {
            "name": "scrypt",
            "params": {"N": 1u64 << SCRYPT_LOG_N, "r": 8, "p": 1},
            "salt": BASE64.encode(salt),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": BASE64.encode(nonce)},
        "ciphertext": BASE64.encode(sealed),
    });
    let block = pem::Pem::new(
        SIGSTORE_ENCRYPTED_LABEL,
        serde_json::to_vec(&json).unwrap_or_default(),
    );
    Ok(pem::encode(&block))
}
