//! Connection limits and timeouts (issue 19, defect 5): slow-loris clients that never finish
//! their headers are disconnected after `server.header_read_timeout`, no more than
//! `server.max_connections` are served at once, and a real client still gets its answer.
//! Timeouts are configured short (a second), so the test is bounded without long sleeps.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOW_CLIENTS: usize = 50;
const MAX_CONNECTIONS: usize = 20;

/// Opens a connection and sends half a request head, never the blank line.
async fn slow_loris(authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(authority).await.unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    s
}

/// True when the server closed `s` (EOF or reset) within `patience`.
async fn closed_within(s: &mut TcpStream, patience: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before closing is fine; keep reading until EOF.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_dropped_and_the_limit_holds_while_others_are_served() {
    let proxy = Proxy::start(&[("local", "http://127.0.0.1:9", true)], |c| {
        c.server_extra.push("header_read_timeout = \"1s\"".into());
        c.server_extra.push("idle_timeout = \"30s\"".into());
        c.server_extra
            .push(format!("max_connections = {MAX_CONNECTIONS}"));
    })
    .await;
    let mut loris = Vec::new();
    for _ in 0..SLOW_CLIENTS {
        loris.push(slow_loris(&proxy.authority()).await);
    }
    // The limit holds: the server has accepted at most MAX_CONNECTIONS of them; the rest
    // wait in the kernel's backlog.
    let mut peak = 0;
    let watch_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < watch_until {
        peak = peak.max(proxy.open_connections());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        peak <= MAX_CONNECTIONS && peak > 0,
        "{peak} connections served at once, limit {MAX_CONNECTIONS}"
    );

    // A real client is served, although slow clients keep arriving ahead of it.
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(20), proxy.get("/v2/"))
        .await
        .expect("a real client was not served within 20 s");
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(20));

    // Every slow client is disconnected: each after about the header timeout once accepted.
    // One deadline for all of them, so a server that never closes fails in 15 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut closed = 0;
    for s in &mut loris {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if closed_within(s, left).await {
            closed += 1;
        }
    }
    assert_eq!(closed, SLOW_CLIENTS, "slow-loris connections left open");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let proxy = Proxy::start(&[("local", "http://127.0.0.1:9", true)], |c| {
        c.server_extra.push("header_read_timeout = \"5s\"".into());
        c.server_extra.push("idle_timeout = \"1s\"".into());
    })
    .await;
    // A silent connection (not a single byte): the idle clock closes it.
    let mut silent = TcpStream::connect(proxy.authority()).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(4)).await,
        "an idle connection was kept open past idle_timeout"
    );
    proxy.shutdown().await;
}

const H2_CLIENTS: usize = 300;

/// 1,000 HTTP/2 clients connecting at once had about one in ten reset (benches/limits.sh):
/// the listen backlog was 128, the kernel fell back to SYN cookies, and a client whose
/// handshake ACK had been dropped got a reset for its next segment. Here the server sits at
/// its connection limit (one slow client, let go by the header timeout) while 300 real
/// HTTP/2 clients connect: every one must be queued by the kernel at once (a 1 s connect
/// timeout is shorter than the first SYN retransmission), then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_beyond_the_connection_limit_wait_in_the_backlog_and_are_served() {
    let proxy = Proxy::start(&[("local", "http://127.0.0.1:9", true)], |c| {
        c.server_extra.push("header_read_timeout = \"2s\"".into());
        c.server_extra.push("idle_timeout = \"30s\"".into());
        c.server_extra.push("max_connections = 1".into());
    })
    .await;
    let mut blocker = slow_loris(&proxy.authority()).await;
    assert!(
        common::eventually(Duration::from_secs(5), || proxy.open_connections() == 1).await,
        "the slow client was not accepted"
    );
    let url = format!("{}/v2/", proxy.url());
    let clients: Vec<_> = (0..H2_CLIENTS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                // One client each: one connection each.
                let client = reqwest::Client::builder()
                    .http2_prior_knowledge()
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                match client.get(&url).send().await {
                    Ok(resp) if resp.version() == reqwest::Version::HTTP_2 => {
                        Ok(resp.status().as_u16())
                    }
                    Ok(resp) => Err(format!("answered over {:?}", resp.version())),
                    Err(e) => Err(format!("{e:?}")),
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for c in clients {
        match c.await.unwrap() {
            Ok(200) => {}
            Ok(status) => failures.push(format!("status {status}")),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {H2_CLIENTS} HTTP/2 clients failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(closed_within(&mut blocker, Duration::from_secs(10)).await);
    proxy.shutdown().await;
}

/// Streams over the server's HTTP/2 stream limit wait for a free stream (the client learns
/// the limit from SETTINGS): 300 requests at once on one connection limited to 10
/// streams all get their answer, none a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_beyond_the_stream_limit_wait_and_are_served() {
    let proxy = Proxy::start(&[("local", "http://127.0.0.1:9", true)], |c| {
        c.server_extra
            .push("http2_max_concurrent_streams = 10".into());
    })
    .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = format!("{}/v2/", proxy.url());
    // The connection first, so that every request shares it.
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    let connections = proxy.open_connections();
    let requests: Vec<_> = (0..H2_CLIENTS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(&url).send().await.map(|r| r.status()) })
        })
        .collect();
    let mut failures = Vec::new();
    for r in requests {
        match r.await.unwrap() {
            Ok(s) if s == 200 => {}
            other => failures.push(format!("{other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {H2_CLIENTS} streams failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(
        proxy.open_connections(),
        connections,
        "the requests did not share one connection"
    );
    proxy.shutdown().await;
}
