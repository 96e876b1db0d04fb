//! Manifest media types and Accept negotiation.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// What the proxy asks upstream for: every manifest type, so one cached answer per tag
/// serves every client (narrower clients are served from it by [`Accept::allows`]).
pub const UPSTREAM_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.5";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// The media types a client accepts, from all of its `Accept` headers.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    types: Vec<String>,
    any: bool,
}

impl Accept {
    /// Parses every `Accept` header value; `q=0` entries are refusals and are dropped.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Accept {
        let mut accept = Accept::default();
        let mut seen_any_header = false;
        for value in values {
            seen_any_header = true;
            for item in value.split(',') {
                let mut parts = item.split(';');
                let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                let refused = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                if media.is_empty() || refused {
                    continue;
                }
                if media == "*/*" || media == "application/*" {
                    accept.any = true;
                } else {
                    accept.types.push(media);
                }
            }
        }
        // A client that sends no Accept at all takes what the registry has.
        if !seen_any_header {
            accept.any = true;
        }
        accept
    }

    pub fn allows(&self, media_type: &str) -> bool {
        self.any
            || self
                .types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(media_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_accept_takes_everything() {
        let a = Accept::parse([
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*",
        ]);
        assert!(a.allows(OCI_INDEX));
        assert!(a.allows("application/x-anything"));
    }

    #[test]
    fn narrow_accept_refuses_indexes() {
        let a = Accept::parse([
            DOCKER_MANIFEST,
            "application/vnd.oci.image.manifest.v1+json;q=0.9",
        ]);
        assert!(a.allows(DOCKER_MANIFEST));
        assert!(a.allows(OCI_MANIFEST));
        assert!(!a.allows(OCI_INDEX));
        assert!(!a.allows(DOCKER_MANIFEST_LIST));
    }

    #[test]
    fn zero_quality_is_a_refusal_and_missing_header_accepts_all() {
        let a = Accept::parse([&format!("{OCI_INDEX};q=0, {OCI_MANIFEST}") as &str]);
        assert!(!a.allows(OCI_INDEX));
        assert!(Accept::parse([]).allows(OCI_INDEX));
    }
}
