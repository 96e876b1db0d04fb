//! Turns a `/v2/...` path and query into a typed [`DistributionRequest`]. Names may hold
//! any number of `/`-separated components, so the path is split from the right: the last
//! one or two segments say what is asked for, everything before them is the name.

use super::reference::{is_valid_name, Digest, InvalidDigest, InvalidReference, Reference};

/// What a `/v2/` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v2/`: the API version check.
    Base,
    Manifest(Reference),
    Blob(Digest),
    /// `/blobs/uploads/...`: part of the push API, which a mirror does not offer.
    Upload,
    Tags {
        n: Option<usize>,
        last: Option<String>,
    },
    Referrers {
        subject: Digest,
        artifact_type: Option<String>,
    },
}

/// A parsed distribution API request: the name as the client wrote it (upstream prefix
/// included, if any), what it asks for, and containerd's `ns=` hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributionRequest {
    pub name: String,
    pub endpoint: Endpoint,
    pub ns: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("not a distribution API path")]
    NotFound,
    #[error("invalid repository name {0:?}")]
    Name(String),
    #[error(transparent)]
    Reference(#[from] InvalidReference),
    #[error(transparent)]
    Digest(#[from] InvalidDigest),
    #[error("invalid pagination parameter n={0:?}")]
    Pagination(String),
}

impl DistributionRequest {
    /// Parses `path` (already percent-decoded by nobody: registry paths never need it) and
    /// the raw `query`.
    pub fn parse(path: &str, query: Option<&str>) -> Result<DistributionRequest, PathError> {
        let params: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let ns = param("ns").filter(|v| !v.is_empty());

        let rest = match path.strip_prefix("/v2") {
            Some("") | Some("/") => {
                return Ok(DistributionRequest {
                    name: String::new(),
                    endpoint: Endpoint::Base,
                    ns,
                })
            }
            Some(rest) => rest.strip_prefix('/').ok_or(PathError::NotFound)?,
            None => return Err(PathError::NotFound),
        };
        let segments: Vec<&str> = rest.split('/').collect();
        if let Some(dot) = segments.iter().position(|s| *s == "." || *s == "..") {
            return Err(dot_segment(&segments, dot));
        }
        let n = segments.len();
        if n < 3 {
            return Err(PathError::NotFound);
        }
        let (name_segments, endpoint) = match (segments[n - 3], segments[n - 2], segments[n - 1]) {
            (_, "manifests", reference) => (n - 2, Endpoint::Manifest(reference.parse()?)),
            (_, "tags", "list") => {
                let n_param = match param("n") {
                    Some(v) => Some(v.parse::<usize>().map_err(|_| PathError::Pagination(v))?),
                    None => None,
                };
                (
                    n - 2,
                    Endpoint::Tags {
                        n: n_param,
                        last: param("last").filter(|v| !v.is_empty()),
                    },
                )
            }
            (_, "referrers", digest) => (
                n - 2,
                Endpoint::Referrers {
                    subject: digest.parse()?,
                    artifact_type: param("artifactType").filter(|v| !v.is_empty()),
                },
            ),
            ("blobs", "uploads", _) => (n - 3, Endpoint::Upload),
            (_, "blobs", "uploads") => (n - 2, Endpoint::Upload),
            (_, "blobs", digest) => (n - 2, Endpoint::Blob(digest.parse()?)),
            _ => return Err(PathError::NotFound),
        };
        if name_segments == 0 {
            return Err(PathError::NotFound);
        }
        let name = segments[..name_segments].join("/");
        if !is_valid_name(&name) {
            return Err(PathError::Name(name.chars().take(300).collect()));
        }
        Ok(DistributionRequest { name, endpoint, ns })
    }
}

/// A `.` or `..` segment is never valid (names, tags and digests cannot be one) and would
/// walk the path if anything passed it on. The error names what it stands in for: the
/// nearest endpoint word before it says whether that is a digest, a reference or the name.
fn dot_segment(segments: &[&str], dot: usize) -> PathError {
    let shown: String = segments[dot].to_owned();
    let endpoint = segments[..dot]
        .iter()
        .rev()
        .find(|s| matches!(**s, "blobs" | "referrers" | "manifests"));
    match endpoint {
        Some(&"manifests") => PathError::Reference(InvalidReference::Tag(shown)),
        Some(_) => PathError::Digest(InvalidDigest(shown)),
        None => PathError::Name(segments.join("/").chars().take(300).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> String {
        format!("sha256:{}", "c".repeat(64))
    }

    #[test]
    fn parses_every_endpoint() {
        let r = DistributionRequest::parse("/v2/", None).unwrap();
        assert_eq!(r.endpoint, Endpoint::Base);
        let r =
            DistributionRequest::parse("/v2/library/nginx/manifests/1.25", Some("ns=docker.io"))
                .unwrap();
        assert_eq!(r.name, "library/nginx");
        assert_eq!(
            r.endpoint,
            Endpoint::Manifest(Reference::Tag("1.25".into()))
        );
        assert_eq!(r.ns.as_deref(), Some("docker.io"));
        let r =
            DistributionRequest::parse(&format!("/v2/docker.io/a/b/c/blobs/{}", digest()), None)
                .unwrap();
        assert_eq!(r.name, "docker.io/a/b/c");
        assert!(matches!(r.endpoint, Endpoint::Blob(_)));
        let r = DistributionRequest::parse("/v2/a/tags/list", Some("n=2&last=b")).unwrap();
        assert_eq!(
            r.endpoint,
            Endpoint::Tags {
                n: Some(2),
                last: Some("b".into())
            }
        );
        let r = DistributionRequest::parse(
            &format!("/v2/a/referrers/{}", digest()),
            Some("artifactType=application%2Fvnd.example"),
        )
        .unwrap();
        assert_eq!(
            r.endpoint,
            Endpoint::Referrers {
                subject: digest().parse().unwrap(),
                artifact_type: Some("application/vnd.example".into())
            }
        );
        for upload in ["/v2/a/b/blobs/uploads/", "/v2/a/b/blobs/uploads/some-uuid"] {
            let r = DistributionRequest::parse(upload, None).unwrap();
            assert_eq!(r.endpoint, Endpoint::Upload);
            assert_eq!(r.name, "a/b");
        }
    }

    #[test]
    fn a_repository_may_be_named_like_an_endpoint() {
        let r = DistributionRequest::parse("/v2/x/manifests/manifests/latest", None).unwrap();
        assert_eq!(r.name, "x/manifests");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            DistributionRequest::parse("/v2/manifests/latest", None),
            Err(PathError::NotFound)
        );
        assert!(matches!(
            DistributionRequest::parse("/v2/UPPER/manifests/latest", None),
            Err(PathError::Name(_))
        ));
        assert!(matches!(
            DistributionRequest::parse("/v2/a/../b/manifests/latest", None),
            Err(PathError::Name(_))
        ));
        assert!(matches!(
            DistributionRequest::parse("/v2/a/manifests/sha256:totallywrong", None),
            Err(PathError::Reference(_))
        ));
        assert!(matches!(
            DistributionRequest::parse("/v2/a/blobs/sha256:short", None),
            Err(PathError::Digest(_))
        ));
        for traversal in [
            "/v2/a/blobs/..",
            "/v2/a/blobs/../../../etc/passwd",
            "/v2/a/blobs/sha256:../..",
            "/v2/a/referrers/../x",
        ] {
            assert!(
                matches!(
                    DistributionRequest::parse(traversal, None),
                    Err(PathError::Digest(_))
                ),
                "{traversal}"
            );
        }
        assert!(matches!(
            DistributionRequest::parse("/v2/a/manifests/../latest", None),
            Err(PathError::Reference(_))
        ));
        assert!(matches!(
            DistributionRequest::parse("/v2/../a/manifests/latest", None),
            Err(PathError::Name(_))
        ));
        assert!(matches!(
            DistributionRequest::parse("/v2/a/tags/list", Some("n=-1")),
            Err(PathError::Pagination(_))
        ));
        assert_eq!(
            DistributionRequest::parse("/v3/", None),
            Err(PathError::NotFound)
        );
        assert_eq!(
            DistributionRequest::parse("/v2/a/nope/x", None),
            Err(PathError::NotFound)
        );
    }
}
