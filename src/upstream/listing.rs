//! Listings from an upstream: tags (following `Link` pagination, staying on the upstream)
//! and referrers.

use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use super::client::Upstream;
use super::error::UpstreamError;
use super::response::{header_str, read_limited};
use super::Referrers;
use crate::distribution::media_type;
use crate::distribution::reference::Digest;
use crate::metrics::UpstreamOp;

/// Tags are paginated upstream; stop following `Link` after this many pages.
const MAX_TAG_PAGES: usize = 100;
/// Bounds a tags list or referrers index read from upstream.
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

impl Upstream {
    /// Every tag of a repository, following `Link` pagination (bounded).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let mut url = format!("{}/v2/{repository}/tags/list", self.base);
        let mut all = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let response = self
                .send(
                    UpstreamOp::Tags,
                    Method::GET,
                    &url,
                    repository,
                    HeaderMap::new(),
                    Some(self.config().timeout),
                )
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(self.not_found(format!("repository {repository}")));
            }
            if !response.status().is_success() {
                return Err(self.protocol(format!("tags list answered HTTP {}", response.status())));
            }
            let next = header_str(response.headers(), "link").and_then(|l| next_link(&l));
            let body = read_limited(response, MAX_LISTING_BYTES)
                .await
                .map_err(|e| self.protocol(format!("tags list: {e}")))?;
            let page: TagList = serde_json::from_slice(&body)
                .map_err(|e| self.protocol(format!("tags list is not JSON: {e}")))?;
            all.extend(page.tags.unwrap_or_default());
            match next {
                // Only follow links that stay on this upstream.
                Some(next) if next.starts_with('/') => {
                    url = format!("{}{next}", origin_of(&self.base))
                }
                Some(next) if next.starts_with(&self.base) => url = next,
                _ => break,
            }
        }
        Ok(all)
    }

    /// Upstream's referrers index for `subject`; `None` when upstream has none (404).
    pub async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Referrers>, UpstreamError> {
        let mut url = format!("{}/v2/{repository}/referrers/{subject}", self.base);
        if let Some(t) = artifact_type {
            url.push_str("?artifactType=");
            url.extend(form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(media_type::OCI_INDEX),
        );
        let response = self
            .send(
                UpstreamOp::Referrers,
                Method::GET,
                &url,
                repository,
                headers,
                Some(self.config().timeout),
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.protocol(format!("referrers answered HTTP {}", response.status())));
        }
        let filters_applied = header_str(response.headers(), "oci-filters-applied")
            .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
        let bytes = read_limited(response, MAX_LISTING_BYTES)
            .await
            .map_err(|e| self.protocol(format!("referrers: {e}")))?;
        Ok(Some(Referrers {
            bytes,
            filters_applied,
        }))
    }
}

fn origin_of(base: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => base.to_string(),
    }
}

/// `<url>; rel="next"` from a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(next_link("</x>; rel=\"prev\""), None);
    }
}
