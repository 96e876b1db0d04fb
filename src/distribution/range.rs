//! Single byte ranges (RFC 9110 §14). Multi-range requests are answered with the whole
//! representation, which the RFC allows and every registry client handles.

/// An inclusive byte range resolved against a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, total)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No Range header, an unparsable one, or several ranges: serve everything (200).
    Full,
    /// Serve this part (206).
    Partial(ByteRange),
    /// The range lies outside the content (416).
    Unsatisfiable,
}

/// Resolves a `Range` header value against a representation of `total` bytes.
pub fn resolve(header: Option<&str>, total: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if total > 0 => RangeRequest::Partial(ByteRange {
                start: total.saturating_sub(n),
                end: total - 1,
            }),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // bytes=A-
        (false, true) => match parse(first) {
            Some(a) if a < total => RangeRequest::Partial(ByteRange {
                start: a,
                end: total - 1,
            }),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // bytes=A-B
        (false, false) => match (parse(first), parse(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= total {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial(ByteRange {
                        start: a,
                        end: b.min(total - 1),
                    })
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn ranges_resolve_like_rfc_9110() {
        assert_eq!(resolve(None, 10), RangeRequest::Full);
        assert_eq!(resolve(Some("bytes=0-3"), 10), part(0, 3));
        assert_eq!(resolve(Some("bytes=5-"), 10), part(5, 9));
        assert_eq!(resolve(Some("bytes=-3"), 10), part(7, 9));
        assert_eq!(resolve(Some("bytes=-30"), 10), part(0, 9));
        assert_eq!(resolve(Some("bytes=8-100"), 10), part(8, 9));
        assert_eq!(resolve(Some("bytes=10-"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(
            resolve(Some("bytes=10-12"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(resolve(Some("bytes=-0"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-1,3-4"), 10), RangeRequest::Full);
        assert_eq!(resolve(Some("bytes=5-2"), 10), RangeRequest::Full);
        assert_eq!(resolve(Some("items=0-1"), 10), RangeRequest::Full);
        assert_eq!(resolve(Some("bytes=x-1"), 10), RangeRequest::Full);
        assert_eq!(ByteRange { start: 2, end: 5 }.len(), 4);
    }
}
