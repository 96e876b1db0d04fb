//! Where BuildKit listens and how to reach it: a buildkitd unix socket, a TCP address
//! (plain HTTP/2 or TLS), or a Docker Engine whose `/grpc` endpoint is upgraded to HTTP/2.
//! The connector runs again on every reconnect, so a dockerd restart costs one upgrade.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tonic::transport::{Channel, Endpoint};

use super::BuildkitError;

/// HTTP/2 flow-control windows: status streams and large responses should not stall on
/// the 64 KiB default.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// dockerd's upgrade answer is a few hundred bytes; anything this large is not it.
const MAX_UPGRADE_HEADERS: usize = 64 << 10;

/// A BuildKit daemon's address, as written in the config:
/// `unix:///run/buildkit/buildkitd.sock`, `tcp://host:1234`, or
/// `docker-unix:///var/run/docker.sock` for the BuildKit built into a Docker Engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildkitAddress {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    DockerUnix(PathBuf),
}

impl BuildkitAddress {
    /// The Docker Engine socket, for the Engine API calls that go with a `docker-unix` address.
    pub fn docker_socket(&self) -> Option<&Path> {
        match self {
            BuildkitAddress::DockerUnix(path) => Some(path),
            _ => None,
        }
    }
}

impl FromStr for BuildkitAddress {
    type Err = BuildkitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| BuildkitError::InvalidAddress {
            address: s.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| invalid("expected unix://, tcp:// or docker-unix://"))?;
        match scheme {
            "unix" | "docker-unix" => {
                if rest.is_empty() {
                    return Err(invalid("the socket path is empty"));
                }
                let path = PathBuf::from(rest);
                Ok(if scheme == "unix" {
                    BuildkitAddress::Unix(path)
                } else {
                    BuildkitAddress::DockerUnix(path)
                })
            }
            "tcp" => {
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| invalid("expected tcp://host:port"))?;
                let host = match host.strip_prefix('[') {
                    Some(inner) => inner
                        .strip_suffix(']')
                        .ok_or_else(|| invalid("unclosed [ in the host"))?,
                    None if host.contains(':') => {
                        return Err(invalid(
                            "an IPv6 host must be in brackets: tcp://[::1]:1234",
                        ))
                    }
                    None => host,
                };
                if host.is_empty() || host.contains('/') {
                    return Err(invalid("expected tcp://host:port"));
                }
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))?;
                Ok(BuildkitAddress::Tcp {
                    host: host.to_string(),
                    port,
                })
            }
            _ => Err(invalid(
                "unknown scheme: use unix://, tcp:// or docker-unix://",
            )),
        }
    }
}

impl fmt::Display for BuildkitAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildkitAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            BuildkitAddress::DockerUnix(path) => write!(f, "docker-unix://{}", path.display()),
            BuildkitAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            BuildkitAddress::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// PEM files for a `tcp://` address: with `ca` the connection uses TLS and trusts only that
/// CA; `cert` and `key` (both or neither) authenticate the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// Opens an HTTP/2 channel to BuildKit at `address`, failing within `timeout`.
pub async fn connect(
    address: &BuildkitAddress,
    tls: &TlsFiles,
    timeout: Duration,
) -> Result<Channel, BuildkitError> {
    let tls_config = match address {
        BuildkitAddress::Tcp { .. } if !tls.is_empty() => Some(Arc::new(client_tls(tls)?)),
        _ if !tls.is_empty() => {
            return Err(BuildkitError::Tls {
                path: None,
                reason: format!("TLS files are only used with tcp:// addresses, not {address}"),
            })
        }
        _ => None,
    };
    // The typed error from the last connector attempt: tonic only hands back a boxed one.
    let failure: Arc<Mutex<Option<BuildkitError>>> = Arc::default();
    let connector = {
        let address = address.clone();
        let failure = failure.clone();
        tower::service_fn(move |_: http::Uri| {
            let address = address.clone();
            let tls_config = tls_config.clone();
            let failure = failure.clone();
            async move {
                match open(&address, tls_config).await {
                    Ok(stream) => Ok(TokioIo::new(stream)),
                    Err(e) => {
                        let text = e.to_string();
                        if let Ok(mut slot) = failure.lock() {
                            *slot = Some(e);
                        }
                        Err(std::io::Error::other(text))
                    }
                }
            }
        })
    };
    let endpoint = Endpoint::from_static("http://buildkit")
        .connect_timeout(timeout)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let connected = tokio::time::timeout(timeout, endpoint.connect_with_connector(connector)).await;
    let cause = match connected {
        Ok(Ok(channel)) => return Ok(channel),
        Ok(Err(e)) => error_chain(&e),
        Err(_) => format!("no answer within {}", humantime::format_duration(timeout)),
    };
    let typed = failure.lock().ok().and_then(|mut slot| slot.take());
    Err(typed.unwrap_or(BuildkitError::Connect {
        address: address.to_string(),
        cause,
    }))
}

/// `e` and its sources joined with ": ", since tonic's own message is only "transport error".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

async fn open(
    address: &BuildkitAddress,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Stream, BuildkitError> {
    let connect_err = |e: std::io::Error| BuildkitError::Connect {
        address: address.to_string(),
        cause: e.to_string(),
    };
    match address {
        BuildkitAddress::Unix(path) => Ok(Stream::Unix(
            UnixStream::connect(path).await.map_err(connect_err)?,
        )),
        BuildkitAddress::Tcp { host, port } => {
            let tcp = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_err)?;
            let _ = tcp.set_nodelay(true);
            let Some(config) = tls else {
                return Ok(Stream::Tcp(tcp));
            };
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                BuildkitError::Tls {
                    path: None,
                    reason: format!("{host} is not a valid TLS server name: {e}"),
                }
            })?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| BuildkitError::Connect {
                    address: address.to_string(),
                    cause: format!("TLS handshake: {e}"),
                })?;
            Ok(Stream::Tls(Box::new(tls)))
        }
        BuildkitAddress::DockerUnix(path) => {
            let socket = UnixStream::connect(path).await.map_err(connect_err)?;
            let (socket, early) = upgrade_docker(socket, &address.to_string()).await?;
            Ok(Stream::Upgraded(Prefixed::new(early, socket)))
        }
    }
}

/// Asks dockerd to hand the connection to its BuildKit (`POST /grpc`, `Upgrade: h2c`).
/// Returns the socket and the bytes read past the 101 headers: those are already the
/// server's first HTTP/2 frames.
async fn upgrade_docker<S>(mut socket: S, address: &str) -> Result<(S, Bytes), BuildkitError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    const REQUEST: &[u8] = b"POST /grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n\
Upgrade: h2c\r\nContent-Length: 0\r\n\r\n";
    let io_err = |what: &str, e: std::io::Error| BuildkitError::Connect {
        address: address.to_string(),
        cause: format!("{what}: {e}"),
    };
    socket
        .write_all(REQUEST)
        .await
        .map_err(|e| io_err("sending the /grpc upgrade", e))?;
    let mut buf = Vec::with_capacity(1024);
    let header_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_UPGRADE_HEADERS {
            return Err(BuildkitError::InvalidResponse {
                peer: address.to_string(),
                reason: "the answer to POST /grpc has no end of headers".into(),
            });
        }
        let n = socket
            .read_buf(&mut buf)
            .await
            .map_err(|e| io_err("reading the /grpc upgrade answer", e))?;
        if n == 0 {
            return Err(BuildkitError::Connect {
                address: address.to_string(),
                cause: "the daemon closed the connection during the /grpc upgrade".into(),
            });
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let status_line = head.lines().next().unwrap_or_default().trim().to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "101" {
        let mut body = buf[header_end..].to_vec();
        if let Some(len) = content_length(&head) {
            let want = len.min(4096);
            let more = tokio::time::timeout(Duration::from_secs(2), async {
                while body.len() < want {
                    match socket.read_buf(&mut body).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            });
            let _ = more.await;
            body.truncate(want);
        }
        return Err(BuildkitError::UpgradeRefused {
            address: address.to_string(),
            status_line,
            body: engine_message(&body),
        });
    }
    let early = Bytes::copy_from_slice(&buf[header_end..]);
    Ok((socket, early))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// The `message` of a Docker Engine JSON error body, else the body as text.
pub(crate) fn engine_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct EngineError {
        message: String,
    }
    match serde_json::from_slice::<EngineError>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

fn client_tls(files: &TlsFiles) -> Result<rustls::ClientConfig, BuildkitError> {
    let Some(ca) = &files.ca else {
        return Err(BuildkitError::Tls {
            path: None,
            reason: "a client certificate needs the BuildKit CA file too (ca)".into(),
        });
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert).map_err(|e| BuildkitError::Tls {
            path: Some(ca.clone()),
            reason: format!("unusable CA certificate: {e}"),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildkitError::Tls {
            path: None,
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key_der = read_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| BuildkitError::Tls {
                    path: Some(key.clone()),
                    reason: format!("client certificate and key do not fit: {e}"),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(path), None) | (None, Some(path)) => {
            return Err(BuildkitError::Tls {
                path: Some(path.clone()),
                reason: "a client certificate needs both cert and key".into(),
            })
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read_pem(path: &Path) -> Result<Vec<u8>, BuildkitError> {
    std::fs::read(path).map_err(|e| BuildkitError::Tls {
        path: Some(path.to_path_buf()),
        reason: e.to_string(),
    })
}

fn read_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, BuildkitError> {
    let pem = read_pem(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BuildkitError::Tls {
            path: Some(path.to_path_buf()),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(BuildkitError::Tls {
            path: Some(path.to_path_buf()),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, BuildkitError> {
    let pem = read_pem(path)?;
    let bad = |reason: String| BuildkitError::Tls {
        path: Some(path.to_path_buf()),
        reason,
    };
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| bad(format!("bad PEM: {e}")))?
        .ok_or_else(|| bad("no PRIVATE KEY block".into()))
}

/// The connection under the HTTP/2 client, whichever way it was opened.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Upgraded(Prefixed<UnixStream>),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Unix($s) => $call,
            Stream::Tcp($s) => $call,
            Stream::Tls($s) => $call,
            Stream::Upgraded($s) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A stream that yields `prefix` before reading from `inner`: the bytes that arrived
/// together with the upgrade answer.
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
