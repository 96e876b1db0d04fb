//! The BuildKit engine: the image's own package manager upgrades the planned packages in a
//! BuildKit exec, and the exec's changes become the patch layer. For what the native
//! engine refuses (scripts it cannot run, rpm and apk images).
//!
//! BuildKit pulls the original through patchpull's own registry API (or, for the one-shot
//! CLI, from the image's registry), so no registry credentials travel to it. Against a
//! Docker Engine the solved image lands in dockerd's image store (the `moby` exporter); it
//! is saved, its one new layer taken out and checked ([`export`]), and the image removed
//! again. Config, manifest, verification and VEX are the native engine's: only the layer
//! comes from BuildKit.

pub mod adapters;
pub mod export;
pub mod registry_export;

use std::path::{Path, PathBuf};

use crate::buildkit::client::{Client, StatusEvent};
use crate::buildkit::proto::control::{Exporter, SolveRequest};
use crate::buildkit::transport::{BuildkitAddress, TlsFiles};
use crate::buildkit::{engine_api, llb};
use crate::config::BuildkitConfig;
use crate::distribution::Digest;
use crate::image::Filesystem;
use crate::patch::layer::BuiltLayer;
use crate::patch::PatchError;
use crate::scan::plan::PlatformPlan;

pub use adapters::Adapter;
use registry_export::ExportRegistry;

/// How BuildKit names the original image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Through this patchpull at `host:port`: `<host:port>/<upstream>/<repository>`.
    Proxy(String),
    /// From the image's own registry: `<registry>/<repository>` (the one-shot CLI).
    Registry(String),
}

impl ImageSource {
    /// The pull reference of `repository@digest` behind `upstream`.
    pub fn reference(&self, upstream: &str, repository: &str, digest: &Digest) -> String {
        match self {
            ImageSource::Proxy(host) => format!("{host}/{upstream}/{repository}@{digest}"),
            ImageSource::Registry(registry) => format!("{registry}/{repository}@{digest}"),
        }
    }

    /// The tooling image's pull reference (`docker.io/library/debian:bookworm-slim`).
    pub fn tooling(&self, tooling: &str) -> String {
        match self {
            ImageSource::Proxy(host) => format!("{host}/{tooling}"),
            ImageSource::Registry(_) => tooling.to_owned(),
        }
    }
}

/// One platform to patch through BuildKit.
pub struct BuildkitRequest<'a> {
    /// The original's pull reference, with its digest.
    pub source: String,
    pub tooling: String,
    pub os: &'a str,
    pub architecture: &'a str,
    pub variant: Option<&'a str>,
    pub plan: &'a PlatformPlan,
    /// The original's merged tree: which package manager it has.
    pub tree: &'a Filesystem,
    /// The original's diff_ids: BuildKit's result must start with them.
    pub base_diff_ids: &'a [Digest],
    pub debian_archive_url: &'a str,
    pub debian_security_url: &'a str,
    pub work: &'a Path,
    /// Run the package manager even when BuildKit has the same step cached.
    pub no_cache: bool,
}

/// What BuildKit made of one platform.
#[derive(Debug, Clone)]
pub struct BuildkitPatch {
    pub layer: BuiltLayer,
    pub adapter: &'static str,
    /// The daemon, as the summary names it (`dockerd (BuildKit) at ...`).
    pub daemon: String,
    /// The steps BuildKit ran, in order of completion.
    pub steps: Vec<String>,
}

/// A configured BuildKit, connected on first use and reconnected after an error.
pub struct BuildkitEngine {
    address: BuildkitAddress,
    config: BuildkitConfig,
    /// Reads results back from `export_registry`.
    http: reqwest::Client,
    client: tokio::sync::Mutex<Option<Client>>,
}

/// A progress callback (the patcher's).
pub type Tell<'a> = &'a (dyn Fn(&str) + Send + Sync);

impl BuildkitEngine {
    /// `address` wins over `config.address` (the CLI's `--buildkit`).
    pub fn new(address: BuildkitAddress, config: BuildkitConfig) -> BuildkitEngine {
        BuildkitEngine {
            address,
            http: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .unwrap_or_default(),
            config,
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> &BuildkitConfig {
        &self.config
    }

    async fn client(&self) -> Result<Client, PatchError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let tls = TlsFiles {
            ca: self.config.tls_ca_file.clone(),
            cert: self.config.tls_cert_file.clone(),
            key: self.config.tls_key_file.clone(),
        };
        let client = Client::connect(&self.address, &tls, CONNECT_TIMEOUT)
            .await
            .map_err(|e| PatchError::Buildkit(e.to_string()))?;
        tracing::info!(
            address = %self.address,
            capabilities = ?client.detected_capabilities(),
            "connected to BuildKit"
        );
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn forget_client(&self) {
        *self.client.lock().await = None;
    }

    /// Builds the patch layer of one platform.
    ///
    /// # Errors
    /// [`PatchError::Buildkit`] when a package name is unsafe, the image has no package
    /// manager BuildKit can drive, the solve fails or times out, or the result is not the
    /// original plus one layer.
    pub async fn patch(
        &self,
        request: &BuildkitRequest<'_>,
        tell: Tell<'_>,
    ) -> Result<BuildkitPatch, PatchError> {
        let names = adapters::validate_names(
            request.plan.ecosystem,
            request.plan.updates.iter().map(|u| u.name.as_str()),
        )
        .map_err(|e| PatchError::Buildkit(e.to_string()))?;
        let adapter = adapters::choose(request.plan.ecosystem, request.tree)
            .map_err(|e| PatchError::Buildkit(e.to_string()))?;
        let export = self.export()?;
        let client = self.client().await?;
        let capabilities = client.detected_capabilities().clone();
        let definition = adapters::graph(
            adapter,
            &names,
            &adapters::GraphInput {
                source: &request.source,
                tooling: &request.tooling,
                platform: llb::platform(request.os, request.architecture, request.variant),
                os: &request.plan.os,
                debian_archive_url: request.debian_archive_url,
                debian_security_url: request.debian_security_url,
                diff_merge: capabilities.diff_merge,
                plan: request
                    .plan
                    .updates
                    .iter()
                    .map(|u| format!("{}={}", u.name, u.fixed_version))
                    .collect::<Vec<_>>()
                    .join(" "),
                no_cache: request.no_cache.then(random_hex),
            },
        );
        let tag = random_hex();
        let image_name = format!("patchpull.local/patch/{tag}:latest");
        let (exporter, attrs) = match &export {
            Export::Docker(_) => ("moby", [("name".to_owned(), image_name.clone())].into()),
            Export::Registry(registry) => ("image", registry.exporter_attrs(&tag)),
        };
        let solve = SolveRequest {
            definition: Some(definition),
            // Both forms: daemons before 0.13 read the first, later ones the list.
            exporter: exporter.to_owned(),
            exporter_attrs: attrs.clone(),
            exporters: vec![Exporter {
                r#type: exporter.to_owned(),
                attrs,
            }],
            entitlements: vec!["network.host".to_owned()],
            ..SolveRequest::default()
        };
        tell(&format!(
            "{}/{}: BuildKit runs {} for {} package(s)",
            request.os,
            request.architecture,
            adapter.name(),
            names.len()
        ));
        let mut steps = Vec::new();
        let mut done: Vec<String> = Vec::new();
        let on_status = |event: StatusEvent| match event {
            StatusEvent::Vertex {
                digest,
                name,
                completed: true,
                cached,
                error,
                ..
            } => {
                // A vertex reports completion again with each progress update.
                if !done.contains(&digest) {
                    tracing::info!(step = %name, cached, error = ?error, "BuildKit step done");
                    done.push(digest);
                    steps.push(name);
                }
            }
            StatusEvent::Vertex {
                name,
                started: true,
                completed: false,
                ..
            } => tell(&format!("BuildKit: {name}")),
            StatusEvent::Log { vertex_name, line } => {
                tracing::debug!(step = %vertex_name, "{line}");
            }
            StatusEvent::Warning {
                vertex_name,
                message,
            } => tracing::warn!(step = %vertex_name, "BuildKit: {message}"),
            StatusEvent::Vertex { .. } => {}
        };
        let solved =
            tokio::time::timeout(self.config.solve_timeout, client.solve(solve, on_status)).await;
        let response = match solved {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                // Reconnect next time: cheap, and a broken connection looks like any error.
                self.forget_client().await;
                return Err(PatchError::Buildkit(error.to_string()));
            }
            Err(_) => {
                return Err(PatchError::Buildkit(format!(
                    "the solve took longer than {}",
                    humantime::format_duration(self.config.solve_timeout)
                )))
            }
        };
        tracing::debug!(response = ?response.exporter_response, "BuildKit solved");
        let docker_socket = match export {
            Export::Docker(socket) => socket,
            Export::Registry(registry) => {
                let layer = registry
                    .patch_layer(&self.http, &tag, request.base_diff_ids, request.work)
                    .await
                    .map_err(|e| PatchError::Buildkit(e.to_string()))?;
                return Ok(self.report(layer, adapter, &capabilities, steps));
            }
        };
        let saved = request.work.join("buildkit-image.tar");
        let exported = async {
            engine_api::save_image(&docker_socket, &image_name, &saved)
                .await
                .map_err(|e| PatchError::Buildkit(format!("saving the solved image: {e}")))?;
            let base = request.base_diff_ids.to_vec();
            let dir = request.work.to_path_buf();
            let saved_path: PathBuf = saved.clone();
            tokio::task::spawn_blocking(move || export::patch_layer(&saved_path, &base, &dir))
                .await
                .map_err(|e| PatchError::Internal(e.to_string()))?
                .map_err(|e| PatchError::Buildkit(e.to_string()))
        }
        .await;
        if let Err(error) = engine_api::remove_image(&docker_socket, &image_name).await {
            tracing::warn!(image = %image_name, %error, "could not remove BuildKit's image from dockerd");
        }
        let _ = std::fs::remove_file(&saved);
        Ok(self.report(exported?, adapter, &capabilities, steps))
    }

    /// How the result leaves BuildKit: through a Docker Engine's image store, or pushed to
    /// `patch.buildkit.export_registry`.
    fn export(&self) -> Result<Export, PatchError> {
        if let Some(socket) = self.address.docker_socket() {
            return Ok(Export::Docker(socket.to_path_buf()));
        }
        if self.config.export_registry.is_empty() {
            return Err(PatchError::Buildkit(format!(
                "{}: a standalone buildkitd pushes its result to a registry patchpull reads \
                 back; set patch.buildkit.export_registry (or use a Docker Engine, \
                 docker-unix://...)",
                self.address
            )));
        }
        Ok(Export::Registry(ExportRegistry {
            host: self.config.export_registry.clone(),
            insecure: self.config.export_insecure,
        }))
    }

    fn report(
        &self,
        layer: BuiltLayer,
        adapter: Adapter,
        capabilities: &crate::buildkit::client::Capabilities,
        steps: Vec<String>,
    ) -> BuildkitPatch {
        BuildkitPatch {
            layer,
            adapter: adapter.name(),
            daemon: match &capabilities.version {
                Some(version) => format!("BuildKit {version} at {}", self.address),
                None => format!("BuildKit at {}", self.address),
            },
            steps,
        }
    }
}

enum Export {
    Docker(PathBuf),
    Registry(ExportRegistry),
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn random_hex() -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode(bytes)
}
