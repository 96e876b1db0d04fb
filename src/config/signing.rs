//! `[signing]`: the key patched images are signed with (absent: nothing is signed) and
//! where an encrypted key's password comes from. The password itself is never in the file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// The checked `[signing]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SigningConfig {
    /// A PEM private key: PKCS#8 EC P-256, or cosign's encrypted key; `None`: no signing.
    pub key: Option<PathBuf>,
    /// The environment variable holding an encrypted key's password.
    pub password_env: String,
    /// A file holding the password (its trailing newline dropped); wins over the variable.
    pub password_file: Option<PathBuf>,
}

impl SigningConfig {
    /// The password for an encrypted key, if one is configured and set.
    ///
    /// # Errors
    /// The password file cannot be read.
    pub fn password(&self) -> Result<Option<Secret>, crate::sign::KeyError> {
        if let Some(path) = &self.password_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| crate::sign::KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            return Ok(Some(Secret::new(text)));
        }
        if self.password_env.is_empty() {
            return Ok(None);
        }
        Ok(std::env::var(&self.password_env).ok().map(Secret::new))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSigning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    pub password_env: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl Default for RawSigning {
    fn default() -> Self {
        RawSigning {
            key: None,
            password_env: super::defaults::SIGNING_PASSWORD_ENV.to_owned(),
            password_file: None,
        }
    }
}

impl RawSigning {
    /// Checks the section, loading the key so that a wrong password or a key of another
    /// kind is said at start; problems are appended to `problems`, each naming its key.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> SigningConfig {
        let checked = SigningConfig {
            key: self.key.clone().filter(|k| !k.as_os_str().is_empty()),
            password_env: self.password_env.trim().to_owned(),
            password_file: self.password_file.clone(),
        };
        if let Some(path) = &checked.key {
            let loaded = checked.password().and_then(|password| {
                crate::sign::SigningKey::load(path, password.as_ref()).map(|_| ())
            });
            if let Err(e) = loaded {
                let key = match e {
                    crate::sign::KeyError::Read { path: ref p, .. }
                        if Some(p) == checked.password_file.as_ref() =>
                    {
                        "password_file"
                    }
                    crate::sign::KeyError::NoPassword | crate::sign::KeyError::WrongPassword => {
                        if checked.password_file.is_some() {
                            "password_file"
                        } else {
                            "password_env"
                        }
                    }
                    _ => "key",
                };
                problems.push(format!("`signing.{key}`: {e}"));
            }
        } else if checked.password_file.is_some() {
            problems.push("`signing.password_file`: set, but `signing.key` is not".to_owned());
        }
        checked
    }

    pub(super) fn from_checked(c: &SigningConfig) -> RawSigning {
        RawSigning {
            key: c.key.clone(),
            password_env: c.password_env.clone(),
            password_file: c.password_file.clone(),
        }
    }
}

/// What a tag pull gets when its original's signature does not verify (or is missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnverifiedAnswer {
    /// The untouched original, unpatched and unsigned by patchpull (fail-open).
    #[default]
    Original,
    /// `403 DENIED`.
    Deny,
    /// `503`, as `patch.mode = "fail_closed"` answers (containerd tries its next host).
    FailClosed,
}

impl UnverifiedAnswer {
    pub fn parse(text: &str) -> Option<UnverifiedAnswer> {
        match text {
            "original" => Some(UnverifiedAnswer::Original),
            "deny" => Some(UnverifiedAnswer::Deny),
            "fail_closed" => Some(UnverifiedAnswer::FailClosed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnverifiedAnswer::Original => "original",
            UnverifiedAnswer::Deny => "deny",
            UnverifiedAnswer::FailClosed => "fail_closed",
        }
    }
}

/// `require_signature` of an `[[upstream]]` or a `[[patch.policy]]`: an original is
/// patched only when its cosign signature (`sha256-<hex>.sig` upstream) verifies with
/// `key` and names its digest and repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequireSignature {
    /// A PEM `PUBLIC KEY` (EC P-256), as `cosign public-key` prints it.
    pub key: PathBuf,
    pub unverified: UnverifiedAnswer,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequireSignature {
    pub key: PathBuf,
    /// `original`, `deny` or `fail_closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
}

impl RawRequireSignature {
    /// Checks the table at `field` (`upstream[0].require_signature`), loading the key so a
    /// missing file or another kind of key is said at start.
    pub(super) fn validate(&self, field: &str, problems: &mut Vec<String>) -> RequireSignature {
        if self.key.as_os_str().is_empty() {
            problems.push(format!("`{field}.key`: the publisher's PEM public key"));
        } else if let Err(e) = crate::sign::VerifyingKey::load(&self.key) {
            problems.push(format!("`{field}.key`: {e}"));
        }
        let unverified = match self.unverified.as_deref() {
            None => UnverifiedAnswer::default(),
            Some(text) => UnverifiedAnswer::parse(text).unwrap_or_else(|| {
                problems.push(format!(
                    "`{field}.unverified`: expected \"original\", \"deny\" or \"fail_closed\", found {text:?}"
                ));
                UnverifiedAnswer::default()
            }),
        };
        RequireSignature {
            key: self.key.clone(),
            unverified,
        }
    }

    pub(super) fn from_checked(c: &RequireSignature) -> RawRequireSignature {
        RawRequireSignature {
            key: c.key.clone(),
            unverified: Some(c.unverified.as_str().to_owned()),
        }
    }
}
