//! The native engine: one platform image and its planned updates in, one deterministic
//! layer out, with no daemon. Package files and database changes are computed from the
//! verified `.deb`s ([`crate::patch::dpkg`]); maintainer scripts run in the sandbox when
//! the image has a shell and the host can run the image's architecture ([`scripts`]);
//! distroless images get files and database only, as their builders do, except for the
//! effect of ca-certificates' scripts, reproduced natively ([`ca_certificates`]). Whatever
//! can be neither run nor reproduced is refused with the reason.

pub mod apk_layer;
mod apply;
mod apt_order;
pub mod ca_certificates;
mod changes;
pub mod deb_layer;
mod failure;
mod preconfigure;
pub mod scripts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::image::{Filesystem, ImageError, LayerDescriptor, LayerSource, Limits};
use crate::patch::dpkg::{self, DpkgChanges, DpkgError, ImageFiles, NewPackage, PackageOutcome};
use crate::patch::layer::{BuiltLayer, EntryKind, LayerError};
use crate::patch::sandbox::{self, SandboxError};
use crate::patch::unpack_cache::{CachedRoot, UnpackCache};
use crate::pkgs::dpkg::debfile::DebError;

pub use apk_layer::{build_apk_layer, ApkPatch};
pub use deb_layer::{build_deb_layer, DebLayerInput};
pub use preconfigure::Archive;
pub use scripts::ScriptsReport;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error(transparent)]
    Dpkg(#[from] DpkgError),
    #[error("reading a package: {0}")]
    Deb(DebError),
    #[error("reading the image: {0}")]
    Image(ImageError),
    #[error("writing the layer: {0}")]
    Layer(LayerError),
    #[error("sandbox: {0}")]
    Sandbox(SandboxError),
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("maintainer script {script} failed ({status}): {stderr}")]
    ScriptFailed {
        script: String,
        status: String,
        stderr: String,
    },
    /// Scripts that must run and cannot run here, each with the reason.
    #[error("cannot patch natively: {}", reasons.join("; "))]
    ScriptsCannotRun { reasons: Vec<String> },
}

/// An I/O failure at `path`, as a [`NativeError`].
fn io_error(path: &Path, error: std::io::Error) -> NativeError {
    NativeError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

// By hand rather than `#[from]`: each message carries its cause already, and a `source`
// would print it twice in an error chain.
macro_rules! from_cause {
    ($($cause:ty => $variant:ident),*) => {
        $(impl From<$cause> for NativeError {
            fn from(error: $cause) -> NativeError {
                NativeError::$variant(error)
            }
        })*
    };
}
from_cause!(DebError => Deb, ImageError => Image, LayerError => Layer, SandboxError => Sandbox);

/// The image being patched, read through its layer blobs.
pub struct LayerImage<'a> {
    pub source: &'a dyn LayerSource,
    pub layers: &'a [LayerDescriptor],
    pub tree: Filesystem,
    pub limits: Limits,
}

impl<'a> LayerImage<'a> {
    /// Reads the merged tree (metadata only) of `layers`.
    ///
    /// # Errors
    /// Any [`ImageError`] reading the layers.
    pub fn open(
        source: &'a dyn LayerSource,
        layers: &'a [LayerDescriptor],
    ) -> Result<LayerImage<'a>, ImageError> {
        let limits = Limits::default();
        let tree = Filesystem::from_layers(source, layers, &limits)?;
        Ok(LayerImage {
            source,
            layers,
            tree,
            limits,
        })
    }
}

impl ImageFiles for LayerImage<'_> {
    fn tree(&self) -> &Filesystem {
        &self.tree
    }

    fn read(&self, paths: &[&str]) -> Result<HashMap<String, Vec<u8>>, ImageError> {
        if paths.is_empty() {
            return Ok(HashMap::new());
        }
        crate::image::read_files(self.source, self.layers, paths, &self.limits)
    }
}

/// Where the image runs, as far as running its scripts is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runnable {
    /// The image's architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// The new packages' `.deb` files, in the order given, for apt's `Pre-Install-Pkgs`
    /// hook (debconf's preconfiguration) when the image configures one.
    pub archives: Vec<Archive>,
}

/// What the native engine made of one platform.
#[derive(Debug)]
pub struct NativePatch {
    pub layer: BuiltLayer,
    pub outcomes: Vec<PackageOutcome>,
    pub scripts: Option<ScriptsReport>,
    /// Scripts not run, each with why that is what dpkg's result needs (distroless images,
    /// effects reproduced natively).
    pub not_run: Vec<String>,
}

/// Patches one platform: `packages` over `image`, the layer written into `scratch`.
///
/// # Errors
/// [`NativeError`]: a database or package problem, a script that fails, or scripts that
/// must run and cannot.
pub fn patch(
    image: &LayerImage<'_>,
    packages: &[NewPackage<'_>],
    runnable: &Runnable,
    scratch: &Path,
    cache: Option<&UnpackCache>,
) -> Result<NativePatch, NativeError> {
    let started = std::time::Instant::now();
    let mut changes = dpkg::build(image, packages)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dpkg changes computed"
    );
    let mut report = None;
    let mut not_run = Vec::new();
    if changes.distroless {
        not_run.push(
            "distroless image (status.d): files and database only, as its builder installs them"
                .to_owned(),
        );
        not_run.extend(ca_certificates::reproduce_for_distroless(
            image,
            packages,
            &mut changes,
        )?);
    } else if !changes.scripts.is_empty() {
        match can_run_scripts(image, runnable) {
            Ok(()) => {
                let dpkg_version = installed_dpkg_version(image);
                let cached = cached_root(image, cache);
                // The image's own dpkg configures the packages when it has one.
                let configure = changes
                    .configure
                    .as_ref()
                    .filter(|_| has_program(&image.tree, "usr/bin/dpkg"));
                if configure.is_none() {
                    tracing::info!(
                        "the image has no dpkg: its postinst scripts and triggers run as planned"
                    );
                }
                // apt runs its hooks only where apt is, so where dpkg configures.
                let pre_install = match configure {
                    Some(_) => debconf_pre_install_hooks(image)?,
                    None => Vec::new(),
                };
                // apt's order is asked only of an image that has apt (and dpkg configures).
                let dependencies = (configure.is_some()
                    && has_program(&image.tree, "usr/bin/apt-get"))
                .then(|| {
                    dpkg::planned_dependencies(
                        &packages
                            .iter()
                            .map(|p| (p.name.to_owned(), p.deb.control().to_vec()))
                            .collect(),
                    )
                });
                let job = scripts::ScriptsJob {
                    plan: &changes.scripts,
                    configure,
                    new_info: changes
                        .configure
                        .as_ref()
                        .map_or(&[], |c| c.new_info.as_slice()),
                    source: image.source,
                    layers: image.layers,
                    epoch: changes.epoch,
                    scratch,
                    dpkg_version: &dpkg_version,
                    pre_install: &pre_install,
                    archives: &runnable.archives,
                    apt_order: dependencies.as_ref(),
                };
                let layer = &mut changes.layer;
                let mut run = |root| scripts::run(&job, layer, root);
                let ran = match &cached {
                    Some(cached) => match run(scripts::ScriptRoot::Overlay(cached.0.as_path())) {
                        // The probe passed in the cache's directory but this scratch space
                        // cannot hold an overlay's upper directory: a plain tree, then.
                        // Nothing of the layer changed before the mount failed.
                        Err(NativeError::Sandbox(e)) if overlay_refused(&e) => {
                            tracing::info!(error = %e, "scripts run over a copy of the image");
                            scripts::discard_overlay(scratch);
                            run(scripts::ScriptRoot::Scratch)
                        }
                        other => other,
                    },
                    None => run(scripts::ScriptRoot::Scratch),
                };
                report = Some(ran?);
                drop(cached);
            }
            Err(why) => not_run = reproduce_natively(&changes, &image.tree, &why)?,
        }
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "scripts done"
    );
    let layer = changes.layer.write_gzip(scratch)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "layer written"
    );
    Ok(NativePatch {
        layer,
        outcomes: changes.outcomes,
        scripts: report,
        not_run,
    })
}

/// The image's unpacked tree from `cache`, when the host can run scripts over it through
/// an overlay; `None` (the scripts then get a tree of their own) otherwise.
fn cached_root(
    image: &LayerImage<'_>,
    cache: Option<&UnpackCache>,
) -> Option<(PathBuf, CachedRoot)> {
    let cache = cache?;
    if let Err(why) = sandbox::overlay_available(&cache.roots_dir()) {
        tracing::info!(reason = %why, "scripts run over a copy of the image (no overlay)");
        return None;
    }
    match cache.root(image.source, image.layers) {
        Ok(root) => Some((root.tree(), root)),
        Err(e) => {
            tracing::warn!(error = %e, "the unpack cache failed; the scripts get a copy of the image");
            None
        }
    }
}

/// Whether `error` is the overlay mount itself failing (before any script ran).
fn overlay_refused(error: &SandboxError) -> bool {
    match error {
        SandboxError::Setup { stderr } => stderr.contains("overlay root"),
        SandboxError::UnsafeRoot { reason, .. } => reason.contains("overlay mount"),
        _ => false,
    }
}

/// Why the scripts cannot run here, if they cannot.
fn can_run_scripts(image: &LayerImage<'_>, runnable: &Runnable) -> Result<(), String> {
    let host = host_architecture();
    if runnable.architecture != host {
        return Err(format!(
            "the image is {} and this host runs {host} (no emulation)",
            runnable.architecture
        ));
    }
    if !has_program(&image.tree, "bin/sh") {
        return Err("the image has no /bin/sh".to_owned());
    }
    sandbox::available()
}

/// Whether the image has a non-directory at `path` (through its symbolic links).
fn has_program(tree: &Filesystem, path: &str) -> bool {
    matches!(tree.resolve(path, 40), Ok(Some((_, node))) if !node.is_dir())
}

/// The Debian name of this host's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// debconf's `Pre-Install-Pkgs` hook, when the image's apt configures it and the image
/// has `dpkg-preconfigure`; other hooks are not run (logged).
fn debconf_pre_install_hooks(image: &LayerImage<'_>) -> Result<Vec<String>, NativeError> {
    if !has_program(&image.tree, "usr/sbin/dpkg-preconfigure") {
        return Ok(Vec::new());
    }
    let files: std::collections::BTreeMap<String, Vec<u8>> = image
        .read(&preconfigure::APT_CONFIG_PATHS)?
        .into_iter()
        .collect();
    let (debconf, other) = preconfigure::pre_install_hooks(&files);
    for hook in other {
        tracing::warn!(%hook, "apt's DPkg::Pre-Install-Pkgs hook not run: only debconf's is");
    }
    Ok(debconf)
}

fn installed_dpkg_version(image: &LayerImage<'_>) -> String {
    let Ok(files) = image.read(&["/var/lib/dpkg/status"]) else {
        return String::new();
    };
    let Some(status) = files.get("/var/lib/dpkg/status") else {
        return String::new();
    };
    let text = String::from_utf8_lossy(status);
    text.split("\n\n")
        .find(|p| p.starts_with("Package: dpkg\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("Version: ")))
        .unwrap_or_default()
        .to_owned()
}

/// Scripts that cannot run: accepted only where their effect is known to be nothing for
/// this upgrade. The one case handled is the `ldconfig` trigger when no shared library
/// name appears or disappears (the cache maps names to paths; same names, same cache).
fn reproduce_natively(
    changes: &DpkgChanges,
    tree: &Filesystem,
    why: &str,
) -> Result<Vec<String>, NativeError> {
    let mut must_run = Vec::new();
    let mut reproduced = Vec::new();
    for step in changes.scripts.all() {
        let ldconfig_only = step.script == "postinst"
            && step.args.first().map(String::as_str) == Some("triggered")
            && step.args.get(1).map(String::as_str) == Some("ldconfig");
        if ldconfig_only && !library_names_changed(changes, tree) {
            reproduced.push(format!(
                "{} postinst triggered ldconfig: not run ({why}); no shared library name was added or removed, so /etc/ld.so.cache stays valid",
                step.package
            ));
        } else {
            must_run.push(format!(
                "{} {} {}",
                step.package,
                step.script,
                step.args.join(" ")
            ));
        }
    }
    if must_run.is_empty() {
        Ok(reproduced)
    } else {
        // The reason once, then the scripts: it is the host's or the image's, not theirs.
        Err(NativeError::ScriptsCannotRun {
            reasons: vec![format!(
                "{why}; maintainer scripts that must run: {}",
                must_run.join(", ")
            )],
        })
    }
}

/// True when the layer adds a shared-library name (a `lib*.so*` path the image does not
/// have) or removes one.
fn library_names_changed(changes: &DpkgChanges, tree: &Filesystem) -> bool {
    changes.layer.iter().any(|entry| {
        let name = entry.path.rsplit('/').next().unwrap_or_default();
        let library = name.starts_with("lib") && name.contains(".so");
        library && (matches!(entry.kind, EntryKind::Whiteout) || tree.get(&entry.path).is_none())
    })
}
