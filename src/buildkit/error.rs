//! Errors of the BuildKit client, its transports and the Docker Engine API calls. Each
//! variant names the daemon address or the method, so a log line says where it failed.

use std::path::PathBuf;

/// What went wrong talking to BuildKit or to the Docker Engine that hosts it.
#[derive(Debug, thiserror::Error)]
pub enum BuildkitError {
    #[error("invalid BuildKit address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },

    #[error("BuildKit TLS setup ({}): {reason}", .path.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string()))]
    Tls {
        path: Option<PathBuf>,
        reason: String,
    },

    #[error("cannot connect to BuildKit at {address}: {cause}")]
    Connect { address: String, cause: String },

    /// dockerd answered `POST /grpc` with something other than `101 Switching Protocols`:
    /// typically 404 from a daemon built without BuildKit or a socket that is not dockerd.
    #[error(
        "the Docker Engine at {address} refused the BuildKit upgrade (POST /grpc): {status_line}{}",
        body_suffix(.body)
    )]
    UpgradeRefused {
        address: String,
        status_line: String,
        body: String,
    },

    /// A Control API call ended with a gRPC status; `message` is already percent-decoded.
    #[error("BuildKit {method}: {code:?}: {message}")]
    Grpc {
        method: &'static str,
        code: tonic::Code,
        message: String,
    },

    /// The build itself failed: `message` is BuildKit's, `vertex` the step that failed and
    /// `log_tail` that step's last output lines (why `apt-get` gave up, for example).
    #[error("BuildKit solve failed: {message}{}", tail_suffix(.vertex.as_deref(), .log_tail))]
    SolveFailed {
        message: String,
        vertex: Option<String>,
        log_tail: Vec<String>,
    },

    #[error("Docker Engine API {method} {path}: HTTP {status}: {message}")]
    EngineApi {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid response from {peer}: {reason}")]
    InvalidResponse { peer: String, reason: String },
}

impl BuildkitError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> BuildkitError {
        BuildkitError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn grpc(method: &'static str, status: &tonic::Status) -> BuildkitError {
        BuildkitError::Grpc {
            method,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

fn body_suffix(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        String::new()
    } else {
        format!(" ({body})")
    }
}

fn tail_suffix(vertex: Option<&str>, log_tail: &[String]) -> String {
    let mut out = String::new();
    if let Some(vertex) = vertex {
        out.push_str("\n  failing step: ");
        out.push_str(vertex);
    }
    if !log_tail.is_empty() {
        out.push_str("\n  last output:");
        for line in log_tail {
            out.push_str("\n    | ");
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_failure_shows_step_and_output() {
        let err = BuildkitError::SolveFailed {
            message: "exit code: 100".into(),
            vertex: Some("/bin/sh -c apt-get install".into()),
            log_tail: vec!["E: Unable to locate package foo".into()],
        };
        let text = err.to_string();
        assert!(text.contains("exit code: 100"), "{text}");
        assert!(
            text.contains("failing step: /bin/sh -c apt-get install"),
            "{text}"
        );
        assert!(text.contains("| E: Unable to locate package foo"), "{text}");
    }

    #[test]
    fn upgrade_refusal_names_status() {
        let err = BuildkitError::UpgradeRefused {
            address: "docker-unix:///var/run/docker.sock".into(),
            status_line: "HTTP/1.1 404 Not Found".into(),
            body: "{\"message\":\"page not found\"}\n".into(),
        };
        let text = err.to_string();
        assert!(text.contains("404 Not Found"), "{text}");
        assert!(text.contains("page not found"), "{text}");
    }
}
