//! One patch job across replicas, through Redis (`coordination.redis_url`). The job for an
//! original image behind an upstream, under one plan (`<plan>`: 16 hex digits of what
//! decides it, `PatchOptions::plan_key`), is claimed with a lease:
//!
//! ```text
//! INCR  patchpull:fence:<upstream>:<digest>:<plan>              -> token (fencing, monotonic)
//! SET   patchpull:lease:<upstream>:<digest>:<plan> <token> NX PX <lease_ttl>
//! ```
//!
//! Replicas whose policies plan an image differently (a config change rolling out) hold
//! separate leases instead of waiting for a result that is not theirs.
//!
//! The holder renews the lease every third of `lease_ttl` (only while it still holds that
//! token) and deletes it when done; a replica that dies stops renewing and loses it after
//! `lease_ttl`, so another takes the job over. Before it records a result the holder checks
//! that its token still holds the lease: a holder that was paused past its lease (and
//! replaced) does not overwrite the newer holder's entry.
//!
//! Replicas that find the lease held wait for the result through the shared store (the
//! backing registry), polling every `coordination.poll_interval`, within the job's
//! `patch.job_timeout`; what they answer meanwhile follows `patch.mode` as for a local job.
//!
//! Redis is an optimisation, not a dependency: when it does not answer, a job runs without
//! a lease (`patchpull_coordinated_jobs_total{how="uncoordinated"}`, a warning in the log).
//! Patches are deterministic, so two replicas patching the same image make the same digest
//! and the second write is a no-op; the cost is the duplicated work.

pub mod metrics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::config::CoordinationConfig;
use crate::distribution::Digest;
use crate::metrics::Metrics;

/// The longest a Redis request (or connecting) may take before the job goes on without it.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Renews the lease if `KEYS[1]` still holds `ARGV[1]`.
const RENEW: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;
/// Deletes the lease if `KEYS[1]` still holds `ARGV[1]`.
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

/// What a claim found.
pub enum Claim {
    /// No Redis configured: every replica patches for itself.
    Off,
    /// This replica holds the job.
    Leased(Lease),
    /// Another replica holds it.
    Held,
    /// Redis did not answer; the job runs uncoordinated.
    Unavailable(String),
}

pub struct Coordinator {
    client: Option<redis::Client>,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    metrics: Arc<Metrics>,
}

fn lease_key(upstream: &str, original: &Digest, plan: &str) -> String {
    format!("patchpull:lease:{upstream}:{original}:{plan}")
}

fn fence_key(upstream: &str, original: &Digest, plan: &str) -> String {
    format!("patchpull:fence:{upstream}:{original}:{plan}")
}

impl Coordinator {
    /// A coordinator for `config`; nothing is connected yet (Redis may come up later).
    ///
    /// # Errors
    /// `redis_url` is not a Redis URL.
    pub fn new(config: &CoordinationConfig, metrics: Arc<Metrics>) -> Result<Coordinator, String> {
        let client = match &config.redis_url {
            Some(url) => Some(
                redis::Client::open(url.expose())
                    .map_err(|e| format!("`coordination.redis_url`: {e}"))?,
            ),
            None => None,
        };
        Ok(Coordinator {
            client,
            connection: tokio::sync::Mutex::new(None),
            lease_ttl: config.lease_ttl,
            poll_interval: config.poll_interval,
            metrics,
        })
    }

    /// True when a Redis URL is configured.
    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let Some(client) = &self.client else {
            return Err("no Redis configured".into());
        };
        let mut cached = self.connection.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let c = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Notes a Redis failure: the cached connection is dropped (the next request
    /// reconnects) and the gauge says Redis is down.
    async fn failed(&self, error: &redis::RedisError) -> String {
        *self.connection.lock().await = None;
        self.metrics.fleet.redis_up.set(0);
        error.to_string()
    }

    /// Claims the job of `original` behind `upstream` under `plan` (a plan key).
    pub async fn claim(self: &Arc<Self>, upstream: &str, original: &Digest, plan: &str) -> Claim {
        if self.client.is_none() {
            return Claim::Off;
        }
        let mut c = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.fleet.redis_up.set(0);
                return Claim::Unavailable(e);
            }
        };
        let key = lease_key(upstream, original, plan);
        let token: u64 = match redis::cmd("INCR")
            .arg(fence_key(upstream, original, plan))
            .query_async(&mut c)
            .await
        {
            Ok(t) => t,
            Err(e) => return Claim::Unavailable(self.failed(&e).await),
        };
        let ttl_ms = self.lease_ttl.as_millis() as u64;
        let set: Option<String> = match redis::cmd("SET")
            .arg(&key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut c)
            .await
        {
            Ok(r) => r,
            Err(e) => return Claim::Unavailable(self.failed(&e).await),
        };
        self.metrics.fleet.redis_up.set(1);
        if set.is_none() {
            return Claim::Held;
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = {
            let coordinator = self.clone();
            let key = key.clone();
            let lost = lost.clone();
            tokio::spawn(async move { coordinator.renew(key, token, lost).await })
        };
        Claim::Leased(Lease {
            coordinator: self.clone(),
            key,
            token,
            lost,
            renewal,
        })
    }

    /// Renews the lease every third of its time until it is lost; a Redis that does not
    /// answer is retried (the lease may expire meanwhile, then another replica takes over
    /// and [`Lease::still_held`] says so).
    async fn renew(&self, key: String, token: u64, lost: Arc<AtomicBool>) {
        let every = self.lease_ttl / 3;
        let ttl_ms = self.lease_ttl.as_millis() as u64;
        let script = redis::Script::new(RENEW);
        loop {
            tokio::time::sleep(every).await;
            let mut c = match self.connection().await {
                Ok(c) => c,
                Err(_) => continue,
            };
            let renewed: Result<i64, _> = script
                .key(&key)
                .arg(token)
                .arg(ttl_ms)
                .invoke_async(&mut c)
                .await;
            match renewed {
                Ok(1) => {
                    self.metrics.fleet.redis_up.set(1);
                }
                Ok(_) => {
                    tracing::warn!(lease = %key, "the patch job's lease was lost to another replica");
                    lost.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    let error = self.failed(&e).await;
                    tracing::warn!(lease = %key, %error, "cannot renew the patch job's lease");
                }
            }
        }
    }
}

/// The job's lease, renewed while it lives; dropping it releases the lease (if still this
/// replica's), so the waiting replicas look at the store at once instead of after expiry.
pub struct Lease {
    coordinator: Arc<Coordinator>,
    key: String,
    token: u64,
    lost: Arc<AtomicBool>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// The fencing token of this lease.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// True while Redis says this lease (its token) is still the job's. A Redis that does
    /// not answer counts as held: the result is deterministic, so writing it is harmless.
    pub async fn still_held(&self) -> bool {
        if self.lost.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut c) = self.coordinator.connection().await else {
            return true;
        };
        let holder: Result<Option<u64>, _> =
            redis::cmd("GET").arg(&self.key).query_async(&mut c).await;
        match holder {
            Ok(holder) => holder == Some(self.token),
            Err(_) => true,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewal.abort();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let coordinator = self.coordinator.clone();
        let key = std::mem::take(&mut self.key);
        let token = self.token;
        runtime.spawn(async move {
            let Ok(mut c) = coordinator.connection().await else {
                return;
            };
            let released: Result<i64, _> = redis::Script::new(RELEASE)
                .key(&key)
                .arg(token)
                .invoke_async(&mut c)
                .await;
            if let Err(e) = released {
                let error = coordinator.failed(&e).await;
                tracing::warn!(lease = %key, %error, "cannot release the patch job's lease; it expires by itself");
            }
        });
    }
}

#[cfg(test)]
mod tests;
