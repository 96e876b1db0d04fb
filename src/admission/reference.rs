//! Image references as Pods write them, read the way Docker and containerd read them
//! (`github.com/distribution/reference`'s `ParseNormalizedNamed`): `nginx` is
//! `docker.io/library/nginx:latest`, a first component is a registry only when it has a `.`
//! or a `:` or is `localhost` (or has capitals), `index.docker.io` is `docker.io`, and a
//! reference with both a tag and a digest is pulled by the digest.

use std::fmt;

use crate::distribution::reference::{is_valid_name, is_valid_tag, MAX_NAME_LEN};
use crate::distribution::Digest;

pub use crate::distribution::reference::is_valid_domain;

/// Docker Hub's canonical domain.
pub const DOCKER_HUB: &str = "docker.io";
/// Hosts that name Docker Hub too.
const DOCKER_HUB_ALIASES: &[&str] = &["index.docker.io", "registry-1.docker.io"];

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `host[:port]`, lowercase; `docker.io` when the reference names none.
    pub domain: String,
    /// The repository on that registry, `library/` added for one-component Docker Hub names.
    pub path: String,
    pub tag: Option<String>,
    /// When present, what is pulled (the tag is then only a label).
    pub digest: Option<Digest>,
}

/// Why an image string is not a reference a runtime could pull.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidImage {
    #[error("the image is empty")]
    Empty,
    #[error("the image has white space in it")]
    WhiteSpace,
    #[error("a 64-hex-digit identifier is not a repository name")]
    Identifier,
    #[error("digest {0:?} is not sha256:<64 hex> or sha512:<128 hex>")]
    Digest(String),
    #[error("tag {0:?} is not [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")]
    Tag(String),
    #[error("registry {0:?} is not host[:port]")]
    Domain(String),
    #[error("repository {0:?} must be lowercase")]
    Uppercase(String),
    #[error("repository {0:?} is not valid (lowercase components joined by '/')")]
    Name(String),
    #[error("the name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
}

impl ImageReference {
    /// Parses `text` as a container runtime would.
    ///
    /// # Errors
    /// The text is not a pullable reference; it says which part is wrong.
    pub fn parse(text: &str) -> Result<ImageReference, InvalidImage> {
        if text.is_empty() {
            return Err(InvalidImage::Empty);
        }
        if text.chars().any(char::is_whitespace) {
            return Err(InvalidImage::WhiteSpace);
        }
        if text.len() == 64 && text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidImage::Identifier);
        }
        let (named, digest) = match text.split_once('@') {
            Some((named, digest)) => (
                named,
                Some(
                    digest
                        .parse::<Digest>()
                        .map_err(|_| InvalidImage::Digest(shorten(digest)))?,
                ),
            ),
            None => (text, None),
        };
        let (name, tag) = match named.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => {
                if !is_valid_tag(tag) {
                    return Err(InvalidImage::Tag(shorten(tag)));
                }
                (name, Some(tag.to_owned()))
            }
            _ => (named, None),
        };
        let (domain, path) = split_domain(name);
        if !is_valid_domain(domain) {
            return Err(InvalidImage::Domain(shorten(domain)));
        }
        let mut domain = domain.to_ascii_lowercase();
        if DOCKER_HUB_ALIASES.contains(&domain.as_str()) {
            domain = DOCKER_HUB.to_owned();
        }
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        if path.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(InvalidImage::Uppercase(shorten(&path)));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(InvalidImage::TooLong);
        }
        if !is_valid_name(&path) {
            return Err(InvalidImage::Name(shorten(&path)));
        }
        Ok(ImageReference {
            domain,
            path,
            tag,
            digest,
        })
    }
}

/// `docker.io/library/nginx:latest` form: `:latest` when neither tag nor digest is given.
impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        match (&self.tag, &self.digest) {
            (None, None) => f.write_str(":latest"),
            (tag, digest) => {
                if let Some(tag) = tag {
                    write!(f, ":{tag}")?;
                }
                if let Some(digest) = digest {
                    write!(f, "@{digest}")?;
                }
                Ok(())
            }
        }
    }
}

/// Docker's `splitDockerDomain`: the first component is a registry when it has a `.` or a
/// `:`, is `localhost`, or has capitals (repository names cannot).
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}
