//! What `scan` and `patch` share: an image reference from the command line, reached as a
//! configured upstream or as an ad-hoc one, and the built-in scanner's settings.

use anyhow::{bail, Context};

use crate::config::{Config, ScanConfig};
use crate::distribution::reference::is_valid_name;
use crate::distribution::Reference;
use crate::scan::builtin::BuiltinConfig;

/// `registry/repo:tag` split into its parts; Docker Hub rules for names without a registry.
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub reference: Reference,
}

impl ImageRef {
    pub fn parse(text: &str) -> anyhow::Result<ImageRef> {
        let (rest, reference) = match text.rsplit_once('@') {
            Some((rest, digest)) => (rest, Reference::Digest(digest.parse()?)),
            None => match text.rsplit_once(':') {
                Some((rest, tag)) if !tag.contains('/') => (rest, tag.parse()?),
                _ => (text, Reference::Tag("latest".into())),
            },
        };
        let (registry, repository) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        if !is_valid_name(&repository) {
            bail!("{repository:?} is not a valid repository name");
        }
        Ok(ImageRef {
            registry,
            repository,
            reference,
        })
    }

    /// Makes the registry reachable: a configured upstream when one matches, else an
    /// ad-hoc upstream `cli` (plain HTTP with `insecure`). Returns the `ns` to route with.
    pub fn reach(&self, config: &mut Config, insecure: bool) -> anyhow::Result<String> {
        let known = config.upstream.iter().any(|u| {
            u.name == self.registry
                || u.aliases.contains(&self.registry)
                || u.authority() == self.registry
        });
        if known {
            return Ok(self.registry.clone());
        }
        // The user named this registry on the command line; reach it like any upstream.
        let scheme = if insecure { "http" } else { "https" };
        let mut adhoc = config
            .upstream
            .first()
            .cloned()
            .context("the configuration has no upstream to copy settings from")?;
        adhoc.name = "cli".into();
        adhoc.aliases = vec![];
        adhoc.default = false;
        adhoc.username = None;
        adhoc.password = None;
        adhoc.library_prefix = self.registry == "docker.io";
        adhoc.url = format!("{scheme}://{}", self.registry).parse()?;
        config.upstream.push(adhoc);
        Ok("cli".to_owned())
    }

    /// `registry/repository` as people write it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// The built-in scanner's settings from the `[scan]` section.
pub fn builtin_config(scan: &ScanConfig) -> BuiltinConfig {
    BuiltinConfig::from_scan(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distribution::Reference;

    #[test]
    fn image_references_follow_docker_rules() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "nginx")
        );
        assert_eq!(r.reference, Reference::Tag("latest".into()));
        let r = ImageRef::parse("127.0.0.1:5000/a/b:1.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.reference, Reference::Tag("1.2".into()));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/x/y@{d}")).unwrap();
        assert_eq!(r.reference, Reference::Digest(d.parse().unwrap()));
        let r = ImageRef::parse("localhost/x").unwrap();
        assert_eq!(r.registry, "localhost");
        assert!(ImageRef::parse("Bad/Name").is_err());
        assert!(ImageRef::parse("x@sha256:nope").is_err());
    }
}
