//! `[admission]`: the Kubernetes mutating webhook that points Pods at the patched name space.
//! Which images it rewrites (upstreams, namespaces, repositories, as globs) and to which
//! registry host.

use serde::{Deserialize, Serialize};

/// The checked `[admission]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Off: the webhook answers every review with "allowed, unchanged".
    pub enabled: bool,
    /// `host[:port]` Pods pull the patched name space from; empty: nothing is rewritten
    /// (the webhook says so in a warning), since there is nowhere to point Pods at.
    pub registry: String,
    /// Globs over upstream names whose images are rewritten.
    pub upstreams: Vec<String>,
    /// Globs over namespaces; empty means every namespace.
    pub namespaces_include: Vec<String>,
    /// Globs over namespaces that are never touched; wins over the include list.
    pub namespaces_exclude: Vec<String>,
    /// Globs over repositories as their upstream names them (`library/nginx`); empty: all.
    pub repositories_include: Vec<String>,
    pub repositories_exclude: Vec<String>,
    /// Rewrite a digest-pinned image to its patched digest when that patch already exists.
    pub rewrite_digests: bool,
    /// With `rewrite_digests`: only to a patched digest patchpull's signature of which
    /// exists (`[signing]`), so a signature-enforcing cluster never gets an unsigned pin.
    pub signed_digests_only: bool,
}

impl AdmissionConfig {
    /// Whether Pods in `namespace` are rewritten.
    pub fn namespace_matches(&self, namespace: &str) -> bool {
        included(
            &self.namespaces_include,
            &self.namespaces_exclude,
            namespace,
        )
    }

    /// Whether images of `repository` behind upstream `upstream` are rewritten.
    pub fn image_matches(&self, upstream: &str, repository: &str) -> bool {
        any_glob(&self.upstreams, upstream)
            && included(
                &self.repositories_include,
                &self.repositories_exclude,
                repository,
            )
    }
}

fn any_glob(globs: &[String], text: &str) -> bool {
    globs
        .iter()
        .any(|g| crate::glob::glob(g.as_bytes(), text.as_bytes()))
}

/// An empty include list includes everything; the exclude list always wins.
fn included(include: &[String], exclude: &[String], text: &str) -> bool {
    (include.is_empty() || any_glob(include, text)) && !any_glob(exclude, text)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmission {
    pub enabled: bool,
    pub registry: String,
    pub upstreams: Vec<String>,
    pub namespaces_include: Vec<String>,
    pub namespaces_exclude: Vec<String>,
    pub repositories_include: Vec<String>,
    pub repositories_exclude: Vec<String>,
    pub rewrite_digests: bool,
    pub signed_digests_only: bool,
}

impl Default for RawAdmission {
    fn default() -> Self {
        RawAdmission {
            enabled: true,
            registry: String::new(),
            upstreams: vec!["*".to_owned()],
            namespaces_include: vec!["*".to_owned()],
            namespaces_exclude: vec!["kube-system".to_owned()],
            repositories_include: vec!["*".to_owned()],
            repositories_exclude: Vec::new(),
            rewrite_digests: true,
            signed_digests_only: false,
        }
    }
}

impl RawAdmission {
    /// Checks the section; problems are appended to `problems`, each naming its key.
    pub(super) fn validate(&self, problems: &mut Vec<String>) -> AdmissionConfig {
        let registry = self.registry.trim().to_owned();
        if let Some(problem) = registry_problem(&registry) {
            problems.push(format!(
                "`admission.registry`: {problem}, found {:?}",
                self.registry
            ));
        }
        for (key, globs) in [
            ("upstreams", &self.upstreams),
            ("namespaces_include", &self.namespaces_include),
            ("namespaces_exclude", &self.namespaces_exclude),
            ("repositories_include", &self.repositories_include),
            ("repositories_exclude", &self.repositories_exclude),
        ] {
            for (i, glob) in globs.iter().enumerate() {
                if glob.trim().is_empty() {
                    problems.push(format!(
                        "`admission.{key}[{i}]`: an empty pattern matches nothing; use \"*\" for all"
                    ));
                }
            }
        }
        AdmissionConfig {
            enabled: self.enabled,
            registry,
            upstreams: self.upstreams.clone(),
            namespaces_include: self.namespaces_include.clone(),
            namespaces_exclude: self.namespaces_exclude.clone(),
            repositories_include: self.repositories_include.clone(),
            repositories_exclude: self.repositories_exclude.clone(),
            rewrite_digests: self.rewrite_digests,
            signed_digests_only: self.signed_digests_only,
        }
    }

    pub(super) fn from_checked(c: &AdmissionConfig) -> RawAdmission {
        RawAdmission {
            enabled: c.enabled,
            registry: c.registry.clone(),
            upstreams: c.upstreams.clone(),
            namespaces_include: c.namespaces_include.clone(),
            namespaces_exclude: c.namespaces_exclude.clone(),
            repositories_include: c.repositories_include.clone(),
            repositories_exclude: c.repositories_exclude.clone(),
            rewrite_digests: c.rewrite_digests,
            signed_digests_only: c.signed_digests_only,
        }
    }
}

/// Why `registry` cannot be the domain of an image reference, if it cannot. Docker reads
/// the first component of `a/b` as a registry only when it has a `.` or a `:` or is
/// `localhost`; any other host would be taken for a Docker Hub user.
fn registry_problem(registry: &str) -> Option<&'static str> {
    if registry.is_empty() {
        return None;
    }
    if registry.contains("://") {
        return Some(
            "expected host[:port] without a scheme, such as \"patchpull.example.internal:5000\"",
        );
    }
    if registry.contains('/') {
        return Some("expected host[:port] without a path (registries serve /v2/ at their root)");
    }
    if !crate::distribution::reference::is_valid_domain(registry) {
        return Some("expected host[:port], such as \"patchpull.example.internal:5000\"");
    }
    if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
        return Some(
            "a registry host needs a '.' or a ':port' (or must be localhost), else container \
             runtimes read it as a Docker Hub user name",
        );
    }
    None
}
