//! Signatures and attestations of patched images, and verification of originals.
//!
//! Every patched manifest and index gets a cosign signature (the simple-signing payload,
//! ECDSA P-256) and the top one an in-toto attestation of the patch, both as cosign stores
//! them (the `sha256-<hex>.sig` and `.att` tags) and as OCI 1.1 referrers; an original can
//! be required to carry a cosign signature by a given key before it is patched. This module
//! only makes and checks bytes: storing and serving them is the pipeline's. Key material
//! stays inside [`key`]: it is never logged, served or stored.

pub mod attest;
pub mod cosign;
pub mod key;
pub mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use cosign::{Attachment, Subject};
pub use key::{KeyError, SigningKey, VerifyingKey};

use crate::patch::referrer::Artifact;

/// Signs patched images with the operator's key.
#[derive(Debug, Clone)]
pub struct Signer {
    key: Arc<SigningKey>,
}

impl Signer {
    pub fn new(key: SigningKey) -> Signer {
        Signer { key: Arc::new(key) }
    }

    /// Reads `[signing]`'s key; `None` when no key is configured.
    ///
    /// # Errors
    /// The key or its password cannot be read, or the key cannot be used.
    pub fn from_config(config: &crate::config::SigningConfig) -> Result<Option<Signer>, KeyError> {
        let Some(path) = &config.key else {
            return Ok(None);
        };
        let password = config.password()?;
        SigningKey::load(path, password.as_ref()).map(|k| Some(Signer::new(k)))
    }

    pub fn public(&self) -> &VerifyingKey {
        self.key.public()
    }

    /// The signature artifact of `subject` under the name `docker_reference`.
    pub fn signature(&self, docker_reference: &str, subject: Subject) -> Artifact {
        cosign::signature_artifact(&self.key, docker_reference, subject)
    }

    /// The attestation artifact of `subject` with `predicate`.
    pub fn attestation(
        &self,
        docker_reference: &str,
        subject: Subject,
        predicate: &attest::PatchPredicate,
    ) -> Artifact {
        let statement = attest::statement(docker_reference, subject.digest, predicate);
        let envelope = attest::envelope(&self.key, &statement);
        cosign::attestation_artifact(envelope, attest::PATCH_PREDICATE_TYPE, subject)
    }
}
