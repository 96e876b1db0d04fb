//! What can go wrong talking to an upstream, each variant naming the upstream and the value.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} has no {what}")]
    NotFound { upstream: String, what: String },
    #[error("upstream {upstream} requires credentials for {repository} that were not accepted ({detail})")]
    Unauthorized {
        upstream: String,
        repository: String,
        detail: String,
    },
    #[error("upstream {upstream} denied access to {repository}")]
    Denied {
        upstream: String,
        repository: String,
    },
    #[error("upstream {upstream} is rate limiting requests{}", retry_hint(.retry_after))]
    RateLimited {
        upstream: String,
        retry_after: Option<Duration>,
    },
    #[error("upstream {upstream} is unavailable: {reason}")]
    Unavailable { upstream: String, reason: String },
    #[error("upstream {upstream} sent an invalid response: {reason}")]
    Protocol { upstream: String, reason: String },
    #[error("cannot set up the client for upstream {upstream}: {reason}")]
    Setup { upstream: String, reason: String },
}

fn retry_hint(after: &Option<Duration>) -> String {
    after
        .map(|d| format!("; retry after {}s", d.as_secs()))
        .unwrap_or_default()
}
