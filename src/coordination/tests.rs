//! The lease of a job is the job of an original under one plan: against a real
//! `redis-server` on loopback (skipped when it is not installed).
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::{fence_key, lease_key, Claim, Coordinator};
use crate::config::{CoordinationConfig, Secret};
use crate::distribution::Digest;
use crate::metrics::Metrics;

#[test]
fn lease_and_fence_keys_name_the_plan() {
    let d = Digest::sha256_of(b"original");
    assert_ne!(lease_key("hub", &d, "aaaa"), lease_key("hub", &d, "bbbb"));
    assert_ne!(fence_key("hub", &d, "aaaa"), fence_key("hub", &d, "bbbb"));
    assert_eq!(
        lease_key("hub", &d, "aaaa"),
        format!("patchpull:lease:hub:{d}:aaaa")
    );
}

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis(child, port);
        // Bounded: 100 connection attempts, 50 ms apart.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn one_lease_per_original_and_plan() {
    let Some(redis) = Redis::start() else {
        eprintln!("skipped: no redis-server");
        return;
    };
    let config = CoordinationConfig {
        redis_url: Some(Secret::new(format!("redis://127.0.0.1:{}/0", redis.1))),
        lease_ttl: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
    };
    let coordinator = Arc::new(Coordinator::new(&config, Arc::new(Metrics::new())).unwrap());
    let original = Digest::sha256_of(b"original");
    let Claim::Leased(first) = coordinator.claim("hub", &original, "plan-a").await else {
        panic!("the first claim takes the lease");
    };
    assert!(matches!(
        coordinator.claim("hub", &original, "plan-a").await,
        Claim::Held
    ));
    // Another plan of the same original is another job, with its own lease and fence.
    let Claim::Leased(other) = coordinator.claim("hub", &original, "plan-b").await else {
        panic!("another plan is another job");
    };
    assert!(first.still_held().await && other.still_held().await);
    assert!(matches!(
        coordinator.claim("hub", &original, "plan-b").await,
        Claim::Held
    ));
}
