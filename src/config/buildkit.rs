//! `patch.engine` and `[patch.buildkit]`: which engine patches, and how patchpull reaches a
//! BuildKit for the images the native engine cannot patch.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::buildkit::transport::BuildkitAddress;

/// Which engine builds the patch layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchEngine {
    /// In-process, no daemon: dpkg images (Debian, Ubuntu, distroless).
    Native,
    /// Everything through BuildKit, with the image's own package manager.
    Buildkit,
    /// Native where the plan allows it, BuildKit for the rest when one is configured.
    Auto,
}

impl PatchEngine {
    pub fn parse(text: &str) -> Option<PatchEngine> {
        match text {
            "native" => Some(PatchEngine::Native),
            "buildkit" => Some(PatchEngine::Buildkit),
            "auto" => Some(PatchEngine::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatchEngine::Native => "native",
            PatchEngine::Buildkit => "buildkit",
            PatchEngine::Auto => "auto",
        }
    }
}

/// `[patch.buildkit]`; BuildKit is used only when `address` is set (here or by
/// `patchpull patch --buildkit`).
#[derive(Debug, Clone)]
pub struct BuildkitConfig {
    pub address: Option<BuildkitAddress>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// `host:port` at which BuildKit reaches this patchpull's registry API: it pulls the
    /// original image through patchpull, so no registry credentials travel to BuildKit.
    pub registry: String,
    /// The image whose apt and dpkg patch distroless dpkg images (mounted at `/target`).
    pub tooling_image: String,
    /// One solve's time budget.
    pub solve_timeout: Duration,
    /// `host:port` of a registry a standalone buildkitd pushes results to and patchpull
    /// reads them back from; empty: only a Docker Engine can be used.
    pub export_registry: String,
    /// Reach `export_registry` over plain HTTP (both BuildKit and patchpull).
    pub export_insecure: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBuildkit {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    pub registry: String,
    pub tooling_image: String,
    #[serde(deserialize_with = "super::raw::text_or_number")]
    pub solve_timeout: String,
    pub export_registry: String,
    pub export_insecure: bool,
}

impl RawBuildkit {
    pub(super) fn defaults() -> RawBuildkit {
        RawBuildkit {
            address: String::new(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            registry: String::new(),
            tooling_image: super::defaults::BUILDKIT_TOOLING_IMAGE.to_owned(),
            solve_timeout: super::raw::fmt_duration(super::defaults::BUILDKIT_SOLVE_TIMEOUT),
            export_registry: String::new(),
            export_insecure: false,
        }
    }

    pub(super) fn validate(
        &self,
        problems: &mut Vec<String>,
        duration: &mut dyn FnMut(&str, &str) -> Duration,
    ) -> BuildkitConfig {
        let solve_timeout = duration("patch.buildkit.solve_timeout", &self.solve_timeout);
        let address = match self.address.as_str() {
            "" => None,
            text => match text.parse::<BuildkitAddress>() {
                Ok(address) => Some(address),
                Err(e) => {
                    problems.push(format!(
                        "`patch.buildkit.address`: {e} (expected unix:///PATH, tcp://HOST:PORT or docker-unix:///PATH)"
                    ));
                    None
                }
            },
        };
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push(
                "`patch.buildkit.tls_cert_file` and `tls_key_file`: both or neither".to_owned(),
            );
        }
        if self.tooling_image.is_empty() {
            problems.push("`patch.buildkit.tooling_image`: an image reference".to_owned());
        }
        BuildkitConfig {
            address,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            registry: self.registry.clone(),
            tooling_image: self.tooling_image.clone(),
            solve_timeout,
            export_registry: self.export_registry.clone(),
            export_insecure: self.export_insecure,
        }
    }

    pub(super) fn from_checked(c: &BuildkitConfig) -> RawBuildkit {
        RawBuildkit {
            address: c
                .address
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            tls_ca_file: c.tls_ca_file.clone(),
            tls_cert_file: c.tls_cert_file.clone(),
            tls_key_file: c.tls_key_file.clone(),
            registry: c.registry.clone(),
            tooling_image: c.tooling_image.clone(),
            solve_timeout: super::raw::fmt_duration(c.solve_timeout),
            export_registry: c.export_registry.clone(),
            export_insecure: c.export_insecure,
        }
    }
}
