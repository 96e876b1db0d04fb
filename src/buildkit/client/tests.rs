//! The client against a small fake BuildKit (hyper's HTTP/2 server answering gRPC frames by
//! hand) reached over each transport: unix socket, TCP with mutual TLS, and a fake Docker
//! Engine that upgrades `/grpc` and sends its first HTTP/2 frames with the 101 answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::*;
use crate::buildkit::proto::control::{
    BuildkitVersion, InfoResponse, ListWorkersResponse, SolveResponse, StatusResponse, Timestamp,
    Vertex, VertexLog, WorkerRecord,
};
use crate::buildkit::proto::ops::Platform;

#[derive(Default)]
struct Fake {
    version: Option<String>,
    fail_solve: bool,
    solve_ref: Mutex<Option<String>>,
    status_ref: Mutex<Option<String>>,
}

type Body =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn grpc_frame(message: &impl Message) -> Bytes {
    let bytes = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(bytes.len() + 5);
    out.put_u8(0);
    out.put_u32(bytes.len() as u32);
    out.put_slice(&bytes);
    out.freeze()
}

fn grpc_response(messages: Vec<Bytes>, status: u32, message: &str) -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", status.into());
    if !message.is_empty() {
        trailers.insert(
            "grpc-message",
            http::HeaderValue::from_str(&message.replace(' ', "%20").replace(':', "%3A"))
                .expect("header"),
        );
    }
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
        messages.into_iter().map(|m| Ok(Frame::data(m))).collect();
    frames.push(Ok(Frame::trailers(trailers)));
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .expect("response")
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn vertex(digest: &str, name: &str, started: bool, completed: bool, error: &str) -> Vertex {
    Vertex {
        digest: digest.into(),
        name: name.into(),
        started: started.then(|| ts(1)).flatten(),
        completed: completed.then(|| ts(2)).flatten(),
        error: error.into(),
        ..Default::default()
    }
}

fn log(digest: &str, msg: &str) -> VertexLog {
    VertexLog {
        vertex: digest.into(),
        stream: 1,
        msg: msg.as_bytes().to_vec(),
        ..Default::default()
    }
}

async fn handle(
    fake: Arc<Fake>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let payload = body.get(5..).unwrap_or_default();
    Ok(match path.as_str() {
        "/moby.buildkit.v1.Control/Info" => match &fake.version {
            Some(v) => grpc_response(
                vec![grpc_frame(&InfoResponse {
                    buildkit_version: Some(BuildkitVersion {
                        package: "github.com/moby/buildkit".into(),
                        version: v.clone(),
                        revision: "abc".into(),
                    }),
                })],
                0,
                "",
            ),
            None => grpc_response(vec![], 12, "unknown method Info"),
        },
        "/moby.buildkit.v1.Control/ListWorkers" => {
            let platform = |arch: &str, variant: &str| Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.into(),
            };
            let record = vec![
                WorkerRecord {
                    id: "w1".into(),
                    platforms: vec![platform("amd64", ""), platform("arm", "v7")],
                    ..Default::default()
                },
                WorkerRecord {
                    id: "w2".into(),
                    platforms: vec![platform("amd64", "")],
                    ..Default::default()
                },
            ];
            grpc_response(vec![grpc_frame(&ListWorkersResponse { record })], 0, "")
        }
        "/moby.buildkit.v1.Control/Status" => {
            let req = StatusRequest::decode(payload).unwrap_or_default();
            *fake.status_ref.lock().expect("lock") = Some(req.r#ref);
            let (a, b) = ("sha256:aaa", "sha256:bbb");
            let mut updates = vec![
                StatusResponse {
                    vertexes: vec![vertex(a, "docker-image://x", true, false, "")],
                    ..Default::default()
                },
                StatusResponse {
                    vertexes: vec![
                        vertex(a, "docker-image://x", true, true, ""),
                        vertex(b, "/bin/sh -c run", true, false, ""),
                    ],
                    logs: vec![log(b, "hel")],
                    ..Default::default()
                },
                StatusResponse {
                    logs: vec![log(b, "lo\r\nwor"), log(b, "ld\nno newline")],
                    ..Default::default()
                },
            ];
            let end = if fake.fail_solve {
                vertex(b, "/bin/sh -c run", true, true, "exit code: 3")
            } else {
                vertex(b, "/bin/sh -c run", true, true, "")
            };
            updates.push(StatusResponse {
                vertexes: vec![end],
                ..Default::default()
            });
            grpc_response(updates.iter().map(grpc_frame).collect(), 0, "")
        }
        "/moby.buildkit.v1.Control/Solve" => {
            let req = SolveRequest::decode(payload).unwrap_or_default();
            *fake.solve_ref.lock().expect("lock") = Some(req.r#ref);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if fake.fail_solve {
                grpc_response(vec![], 2, "process /bin/sh -c run: exit code: 3")
            } else {
                let mut exporter_response = BTreeMap::new();
                exporter_response.insert("containerimage.digest".into(), "sha256:ccc".into());
                grpc_response(
                    vec![grpc_frame(&SolveResponse { exporter_response })],
                    0,
                    "",
                )
            }
        }
        _ => grpc_response(vec![], 12, "unknown method"),
    })
}

async fn serve_h2<IO>(io: IO, fake: Arc<Fake>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(fake.clone(), req));
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A fake dockerd: answers the upgrade, then the first bytes of HTTP/2 go out in the same
/// write as the 101 headers, as a real server may do.
async fn serve_docker(mut socket: tokio::net::UnixStream, fake: Arc<Fake>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    assert!(request.starts_with(b"POST /grpc HTTP/1.1\r\n"));
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve_h2(theirs, fake));
    let (mut from_server, mut to_server) = tokio::io::split(ours);
    let (mut from_client, mut to_client) = socket.into_split();
    tokio::spawn(async move {
        let mut first =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                .to_vec();
        let mut buf = vec![0u8; 1 << 16];
        let n = from_server.read(&mut buf).await.unwrap_or(0);
        first.extend_from_slice(&buf[..n]);
        if to_client.write_all(&first).await.is_ok() {
            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        }
    });
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
    });
}

fn listen_unix(fake: Arc<Fake>, docker: bool) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bk.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            if docker {
                tokio::spawn(serve_docker(socket, fake.clone()));
            } else {
                tokio::spawn(serve_h2(socket, fake.clone()));
            }
        }
    });
    (dir, path)
}

fn collect_events() -> (Arc<Mutex<Vec<StatusEvent>>>, impl FnMut(StatusEvent) + Send) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |e| sink.lock().expect("lock").push(e))
}

fn log_lines(events: &[StatusEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            StatusEvent::Log { vertex_name, line } => Some(format!("{vertex_name}: {line}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn unix_socket_capabilities_and_solve_with_status() {
    let fake = Arc::new(Fake {
        version: Some("v0.12.5".into()),
        ..Default::default()
    });
    let (_dir, path) = listen_unix(fake.clone(), false);
    let address = BuildkitAddress::Unix(path);
    let client = Client::connect(&address, &TlsFiles::default(), Duration::from_secs(5))
        .await
        .expect("connect");
    let caps = client.detected_capabilities();
    assert_eq!(caps.version.as_deref(), Some("v0.12.5"));
    assert_eq!(caps.platforms, vec!["linux/amd64", "linux/arm/v7"]);
    assert!(caps.diff_merge);

    let (events, sink) = collect_events();
    let response = client
        .solve(SolveRequest::default(), sink)
        .await
        .expect("solve");
    assert_eq!(
        response
            .exporter_response
            .get("containerimage.digest")
            .map(String::as_str),
        Some("sha256:ccc")
    );
    let solve_ref = fake
        .solve_ref
        .lock()
        .expect("lock")
        .clone()
        .unwrap_or_default();
    assert!(solve_ref.starts_with("patchpull-"), "{solve_ref}");
    assert_eq!(
        fake.status_ref.lock().expect("lock").as_deref(),
        Some(solve_ref.as_str())
    );

    let events = events.lock().expect("lock").clone();
    assert_eq!(
        log_lines(&events),
        vec![
            "/bin/sh -c run: hello",
            "/bin/sh -c run: world",
            "/bin/sh -c run: no newline"
        ]
    );
    let vertex_states: Vec<(String, bool, bool)> = events
        .iter()
        .filter_map(|e| match e {
            StatusEvent::Vertex {
                name,
                started,
                completed,
                ..
            } => Some((name.clone(), *started, *completed)),
            _ => None,
        })
        .collect();
    assert_eq!(
        vertex_states,
        vec![
            ("docker-image://x".to_string(), true, false),
            ("docker-image://x".to_string(), true, true),
            ("/bin/sh -c run".to_string(), true, false),
            ("/bin/sh -c run".to_string(), true, true),
        ]
    );
    // Lines come between their step's start and its end.
    let first_log = events
        .iter()
        .position(|e| matches!(e, StatusEvent::Log { .. }));
    let exec_done = events.iter().position(|e| {
        matches!(e, StatusEvent::Vertex { name, completed: true, .. } if name == "/bin/sh -c run")
    });
    assert!(first_log < exec_done, "{events:?}");
}

#[tokio::test]
async fn failed_solve_names_step_and_output() {
    let fake = Arc::new(Fake {
        fail_solve: true,
        ..Default::default()
    });
    let (_dir, path) = listen_unix(fake, false);
    let client = Client::connect(
        &BuildkitAddress::Unix(path),
        &TlsFiles::default(),
        Duration::from_secs(5),
    )
    .await
    .expect("connect");
    assert_eq!(client.detected_capabilities().version, None);
    assert!(!client.detected_capabilities().diff_merge);
    let (_events, sink) = collect_events();
    let err = client.solve(SolveRequest::default(), sink).await.err();
    match &err {
        Some(BuildkitError::SolveFailed {
            message,
            vertex,
            log_tail,
        }) => {
            // grpc-message arrives percent-decoded.
            assert_eq!(message, "process /bin/sh -c run: exit code: 3");
            assert_eq!(vertex.as_deref(), Some("/bin/sh -c run"));
            assert_eq!(log_tail, &["hello", "world", "no newline"]);
        }
        other => panic!("expected SolveFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn docker_upgrade_with_early_frames() {
    let fake = Arc::new(Fake::default());
    let (_dir, path) = listen_unix(fake, true);
    let address = BuildkitAddress::DockerUnix(path);
    let client = Client::connect(&address, &TlsFiles::default(), Duration::from_secs(5))
        .await
        .expect("connect");
    assert_eq!(
        client.detected_capabilities().platforms,
        vec!["linux/amd64", "linux/arm/v7"]
    );
    let (_events, sink) = collect_events();
    client
        .solve(SolveRequest::default(), sink)
        .await
        .expect("solve");
}

struct Pki {
    dir: tempfile::TempDir,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let client_cert = CertificateParams::new(vec!["patchpull".to_string()])
        .expect("params")
        .signed_by(&client_key, &ca, &ca_key)
        .expect("client cert");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.path().join("cert.pem"), client_cert.pem()).expect("write");
    std::fs::write(dir.path().join("key.pem"), client_key.serialize_pem()).expect("write");
    let other_ca = rcgen::generate_simple_self_signed(vec!["other".to_string()]).expect("other");
    std::fs::write(dir.path().join("other-ca.pem"), other_ca.cert.pem()).expect("write");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec()];
    Pki {
        dir,
        server: Arc::new(server),
    }
}

#[tokio::test]
async fn tcp_with_mutual_tls() {
    let pki = pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
    let fake = Arc::new(Fake::default());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let fake = fake.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(socket).await {
                    serve_h2(tls, fake).await;
                }
            });
        }
    });
    let address: BuildkitAddress = format!("tcp://127.0.0.1:{port}").parse().expect("address");
    let files = |ca: &str| TlsFiles {
        ca: Some(pki.dir.path().join(ca)),
        cert: Some(pki.dir.path().join("cert.pem")),
        key: Some(pki.dir.path().join("key.pem")),
    };
    let client = Client::connect(&address, &files("ca.pem"), Duration::from_secs(5))
        .await
        .expect("connect with TLS");
    assert_eq!(client.detected_capabilities().platforms.len(), 2);

    let err = Client::connect(&address, &files("other-ca.pem"), Duration::from_secs(5))
        .await
        .err();
    match err {
        Some(e @ BuildkitError::Connect { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("TLS handshake") && text.contains(&port.to_string()),
                "{text}"
            );
        }
        other => panic!("expected a TLS Connect error, got {other:?}"),
    }
}

#[test]
fn diff_merge_needs_buildkit_0_10() {
    for (version, expected) in [
        ("v0.10.0", true),
        ("v0.12.5", true),
        ("0.13.0-rc1", true),
        ("v1.0.0", true),
        ("v0.9.3", false),
        ("v0.8.3", false),
        ("3fab3f2", false),
        ("", false),
    ] {
        assert_eq!(has_diff_merge(version), expected, "{version}");
    }
}
