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
