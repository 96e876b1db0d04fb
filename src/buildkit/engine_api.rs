//! The few Docker Engine API calls that go with dockerd's built-in BuildKit: its `moby`
//! exporter leaves the image in dockerd's image store, so patchpull exports it from there
//! and removes it afterwards. HTTP/1.1 over the Engine's unix socket.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::transport::engine_message;
use super::BuildkitError;

/// The API version of Docker 20.10, the oldest Engine patchpull drives.
const API: &str = "/v1.41";

/// Writes `docker save`'s tar of `image` (a name or an ID) to `dest`.
pub async fn save_image(socket: &Path, image: &str, dest: &Path) -> Result<(), BuildkitError> {
    let path = format!("{API}/images/{}/get", encode_path(image));
    let response = request(socket, http::Method::GET, &path).await?;
    let mut body = response.into_body();
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| BuildkitError::io(format!("creating {}", dest.display()), e))?;
    let copied = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BuildkitError::Io {
                context: format!("reading GET {path} from {}", socket.display()),
                source: std::io::Error::other(e),
            })?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data)
                    .await
                    .map_err(|e| BuildkitError::io(format!("writing {}", dest.display()), e))?;
            }
        }
        file.flush()
            .await
            .map_err(|e| BuildkitError::io(format!("writing {}", dest.display()), e))
    }
    .await;
    if copied.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    copied
}

/// Deletes `image` from dockerd's store, with its now unused parent layers.
pub async fn remove_image(socket: &Path, image: &str) -> Result<(), BuildkitError> {
    let path = format!("{API}/images/{}?force=1&noprune=0", encode_path(image));
    let response = request(socket, http::Method::DELETE, &path).await?;
    // The body lists what was untagged and deleted; reading it lets dockerd finish cleanly.
    let _ = response.into_body().collect().await;
    Ok(())
}

/// Sends one request and returns the response if it is a success; an error status becomes
/// [`BuildkitError::EngineApi`] with the Engine's `message`.
async fn request(
    socket: &Path,
    method: http::Method,
    path: &str,
) -> Result<http::Response<hyper::body::Incoming>, BuildkitError> {
    let method_name: &'static str = match method {
        http::Method::GET => "GET",
        http::Method::DELETE => "DELETE",
        _ => "request",
    };
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        BuildkitError::io(
            format!("connecting to the Docker Engine at {}", socket.display()),
            e,
        )
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| BuildkitError::Io {
            context: format!("HTTP handshake with {}", socket.display()),
            source: std::io::Error::other(e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Docker Engine API connection ended");
        }
    });
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| BuildkitError::InvalidResponse {
            peer: socket.display().to_string(),
            reason: format!("cannot build request {path}: {e}"),
        })?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| BuildkitError::Io {
            context: format!("{method_name} {path} on {}", socket.display()),
            source: std::io::Error::other(e),
        })?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Err(BuildkitError::EngineApi {
        method: method_name,
        path: path.to_string(),
        status,
        message: engine_message(&body),
    })
}

/// Percent-encodes an image reference for a URL path, keeping the characters a reference
/// is made of (`/`, `:`, `@`) readable; dockerd's router matches the decoded path.
fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_reference_syntax_and_escape_the_rest() {
        assert_eq!(
            encode_path("127.0.0.1:5000/team/app:1@sha256:ab"),
            "127.0.0.1:5000/team/app:1@sha256:ab"
        );
        assert_eq!(encode_path("a b?c#d%"), "a%20b%3Fc%23d%25");
    }
}
