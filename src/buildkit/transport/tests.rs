use super::*;

#[test]
fn addresses_parse_and_print_back() {
    for text in [
        "unix:///run/buildkit/buildkitd.sock",
        "docker-unix:///var/run/docker.sock",
        "tcp://buildkitd.internal:1234",
        "tcp://10.0.0.5:1234",
        "tcp://[::1]:1234",
    ] {
        let address: BuildkitAddress = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(address.to_string(), text);
    }
    assert_eq!(
        "docker-unix:///var/run/docker.sock"
            .parse::<BuildkitAddress>()
            .ok(),
        Some(BuildkitAddress::DockerUnix("/var/run/docker.sock".into()))
    );
    assert_eq!(
        "tcp://[::1]:1234".parse::<BuildkitAddress>().ok(),
        Some(BuildkitAddress::Tcp {
            host: "::1".into(),
            port: 1234
        })
    );
    assert_eq!(
        "tcp://h:80/"
            .parse::<BuildkitAddress>()
            .ok()
            .map(|a| a.to_string()),
        Some("tcp://h:80".into())
    );
}

#[test]
fn bad_addresses_say_why() {
    for (text, why) in [
        ("/run/buildkit/buildkitd.sock", "expected unix://"),
        ("http://host:1234", "unknown scheme"),
        ("unix://", "empty"),
        ("tcp://host", "host:port"),
        ("tcp://host:0", "port"),
        ("tcp://host:http", "port"),
        ("tcp://::1:1234", "brackets"),
        ("tcp://:1234", "host:port"),
    ] {
        match text.parse::<BuildkitAddress>() {
            Err(e @ BuildkitError::InvalidAddress { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(why) && msg.contains(text), "{text}: {msg}");
            }
            other => panic!("{text}: expected InvalidAddress, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn prefixed_yields_buffered_bytes_first() {
    let (mut server, client) = tokio::io::duplex(64);
    let mut stream = Prefixed::new(Bytes::from_static(b"early-frames|"), client);
    server.write_all(b"later").await.expect("write");
    drop(server);
    // A tiny read buffer: the prefix must survive partial reads.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got, b"early-frames|later");
}

#[tokio::test]
async fn docker_upgrade_keeps_bytes_after_the_101_headers() {
    let (mut server, client) = tokio::io::duplex(4096);
    let serve = tokio::spawn(async move {
        let mut request = vec![0u8; 512];
        let mut len = 0;
        while find(&request[..len], b"\r\n\r\n").is_none() {
            len += server
                .read(&mut request[len..])
                .await
                .expect("read request");
        }
        server
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            )
            .await
            .expect("write answer");
        server.write_all(b"more").await.expect("write");
        String::from_utf8_lossy(&request[..len]).into_owned()
    });
    let (socket, early) = upgrade_docker(client, "docker-unix:///x")
        .await
        .expect("upgrade");
    assert!(early.starts_with(b"\x00\x00\x00\x04"), "{early:?}");
    let request = serve.await.expect("server");
    assert!(request.starts_with("POST /grpc HTTP/1.1\r\n"), "{request}");
    assert!(request.contains("Upgrade: h2c\r\n"), "{request}");
    let mut stream = Prefixed::new(early, socket);
    let mut rest = Vec::new();
    let mut buf = [0u8; 64];
    while rest.len() < 13 {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "eof after {rest:?}");
        rest.extend_from_slice(&buf[..n]);
    }
    assert_eq!(rest, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00more");
}

#[tokio::test]
async fn docker_without_buildkit_is_a_clear_refusal() {
    let (mut server, client) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let _ = server.read(&mut buf).await;
        let body = "{\"message\":\"page not found\"}\n";
        let answer = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        server
            .write_all(answer.as_bytes())
            .await
            .expect("write head");
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.write_all(body.as_bytes()).await.expect("write body");
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    match upgrade_docker(client, "docker-unix:///x").await {
        Err(BuildkitError::UpgradeRefused {
            status_line, body, ..
        }) => {
            assert_eq!(status_line, "HTTP/1.1 404 Not Found");
            assert_eq!(body, "page not found");
        }
        other => panic!("expected UpgradeRefused, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn tls_files_without_tcp_or_ca_are_rejected() {
    let unix = BuildkitAddress::Unix("/nonexistent.sock".into());
    let tls = TlsFiles {
        ca: Some("/ca.pem".into()),
        ..Default::default()
    };
    let err = connect(&unix, &tls, Duration::from_secs(1)).await.err();
    assert!(matches!(err, Some(BuildkitError::Tls { .. })), "{err:?}");

    let tcp = BuildkitAddress::Tcp {
        host: "127.0.0.1".into(),
        port: 1,
    };
    let cert_only = TlsFiles {
        cert: Some("/c.pem".into()),
        key: Some("/k.pem".into()),
        ..Default::default()
    };
    let err = connect(&tcp, &cert_only, Duration::from_secs(1))
        .await
        .err();
    assert!(
        matches!(&err, Some(BuildkitError::Tls { reason, .. }) if reason.contains("CA")),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_socket_names_the_address() {
    let address: BuildkitAddress = "docker-unix:///nonexistent/docker.sock"
        .parse()
        .expect("parse");
    let err = connect(&address, &TlsFiles::default(), Duration::from_secs(2))
        .await
        .err();
    match err {
        Some(e @ BuildkitError::Connect { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("docker-unix:///nonexistent/docker.sock"),
                "{text}"
            );
            assert!(text.contains("No such file"), "{text}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}
