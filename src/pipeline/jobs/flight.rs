//! One patch job per key at a time: [`Flights::claim`] answers with the outcome already
//! known, a [`Waiter`] on the running job, or a [`JobPermit`] that makes its holder the
//! job's owner. The permit is a drop guard: however the owner ends (a result, a panic, a
//! cancelled task), the entry is finished, the waiters are woken and the active count is
//! given back, so a dead job never keeps later pulls waiting or uses up the capacity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::JobOutcome;
use crate::clock::Clock;
use crate::distribution::Digest;
use crate::metrics::{FallbackReason, JobLabels, JobOutcomeLabel, Metrics};

/// (upstream name, original digest).
pub(super) type Key = (String, Digest);

/// What the owner's guard records when the owner ends without a result.
pub(super) const ENDED_WITHOUT_RESULT: &str =
    "the patch job ended without a result (it panicked or was cancelled)";

pub(super) enum Entry {
    /// With the step it is at.
    Running(watch::Receiver<Option<Arc<JobOutcome>>>, Arc<Mutex<String>>),
    Done(Arc<JobOutcome>, Instant),
}

/// Waits for a running job.
pub struct Waiter(watch::Receiver<Option<Arc<JobOutcome>>>);

impl Waiter {
    pub async fn finished(&mut self) -> Arc<JobOutcome> {
        loop {
            if let Some(outcome) = self.0.borrow().clone() {
                return outcome;
            }
            if self.0.changed().await.is_err() {
                return Arc::new(JobOutcome::Failed {
                    error: ENDED_WITHOUT_RESULT.to_owned(),
                    reason: FallbackReason::PatchFailed,
                });
            }
        }
    }
}

/// Counters of what jobs did, for metrics and tests.
#[derive(Debug, Default)]
pub struct JobCounts {
    pub started: AtomicUsize,
    pub patched: AtomicUsize,
    /// Patched, as a partial index (also counted in `patched`).
    pub partial: AtomicUsize,
    pub unchanged: AtomicUsize,
    pub failed: AtomicUsize,
}

/// How long an outcome is fresh, and whether it is served while a new job runs.
pub(super) struct Freshness {
    pub retry_failed_after: Duration,
    pub result_ttl: Duration,
}

impl Freshness {
    fn of(&self, outcome: &JobOutcome) -> (Duration, bool) {
        match outcome {
            JobOutcome::Failed { .. } => (self.retry_failed_after, false),
            // The platforms that failed may patch next time.
            JobOutcome::Patched { platforms, .. } if platforms.partial => {
                (self.retry_failed_after, true)
            }
            _ => (self.result_ttl, true),
        }
    }
}

/// The answer of [`Flights::claim`].
pub(super) enum Claim {
    /// A fresh outcome.
    Done(Arc<JobOutcome>),
    /// Someone else's job is running.
    Waiter(Waiter),
    /// The caller owns the new job; with the stale outcome to serve meanwhile, if any.
    Owner(JobPermit, Option<Arc<JobOutcome>>),
    /// No job could be started (the capacity is used up).
    Rejected(String),
}

/// The jobs' entries and the count of those running or queued.
pub(super) struct Flights {
    state: Mutex<HashMap<Key, Entry>>,
    /// Jobs started and not finished (running or waiting for a worker).
    active: AtomicUsize,
    capacity: usize,
    freshness: Freshness,
    pub counts: JobCounts,
    metrics: Arc<Metrics>,
    /// What the outcomes' freshness goes by.
    pub clock: Clock,
}

impl Flights {
    pub fn new(
        capacity: usize,
        freshness: Freshness,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Flights {
        Flights {
            state: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            capacity,
            freshness,
            counts: JobCounts::default(),
            metrics,
            clock,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs running or waiting for a worker.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The outcome for `key`, a waiter on its running job, or the permit of a new job
    /// (when there is none, or the last outcome is stale).
    pub fn claim(self: &Arc<Self>, key: &Key) -> Claim {
        let mut state = self.lock();
        let stale = match state.get(key) {
            Some(Entry::Running(rx, _)) => return Claim::Waiter(Waiter(rx.clone())),
            Some(Entry::Done(outcome, at)) => {
                let (fresh_for, serve_meanwhile) = self.freshness.of(outcome);
                if self.clock.since(*at) < fresh_for {
                    return Claim::Done(outcome.clone());
                }
                serve_meanwhile.then(|| outcome.clone())
            }
            None => None,
        };
        if self.active.load(Ordering::Relaxed) >= self.capacity {
            return match stale {
                Some(old) => Claim::Done(old),
                None => Claim::Rejected(format!(
                    "{} patch jobs are running or queued, the limit",
                    self.capacity
                )),
            };
        }
        let (tx, rx) = watch::channel(None);
        let step = Arc::new(Mutex::new("queued".to_owned()));
        state.insert(key.clone(), Entry::Running(rx, step.clone()));
        drop(state);
        self.active.fetch_add(1, Ordering::Relaxed);
        self.metrics.patch_jobs_active.inc();
        self.counts.started.fetch_add(1, Ordering::Relaxed);
        let permit = JobPermit {
            flights: self.clone(),
            key: key.clone(),
            step,
            tx,
            started: Instant::now(),
            finished: false,
        };
        Claim::Owner(permit, stale)
    }

    /// Records `outcome` for `key` (a result from an earlier run, read back from disk),
    /// unless something is known already.
    pub fn remember(&self, key: &Key, outcome: JobOutcome) {
        self.lock()
            .entry(key.clone())
            .or_insert(Entry::Done(Arc::new(outcome), self.clock.now()));
    }
}

/// The owner of one running job. [`JobPermit::finish`] records its outcome; dropped
/// unfinished, it records [`ENDED_WITHOUT_RESULT`] as a failure (so the pulls fail open
/// and the next one after `patch.retry_failed_after` tries again).
pub(super) struct JobPermit {
    flights: Arc<Flights>,
    key: Key,
    step: Arc<Mutex<String>>,
    tx: watch::Sender<Option<Arc<JobOutcome>>>,
    started: Instant,
    finished: bool,
}

impl JobPermit {
    /// The step the job is at, as the admin API shows it.
    pub fn step(&self) -> Arc<Mutex<String>> {
        self.step.clone()
    }

    /// A waiter on this job.
    pub fn waiter(&self) -> Waiter {
        Waiter(self.tx.subscribe())
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Records the outcome, wakes the waiters and gives the active count back.
    pub fn finish(mut self, outcome: JobOutcome) -> Arc<JobOutcome> {
        self.finished = true;
        self.record(Arc::new(outcome))
    }

    fn record(&self, outcome: Arc<JobOutcome>) -> Arc<JobOutcome> {
        let flights = &self.flights;
        let label = match outcome.as_ref() {
            JobOutcome::Patched { platforms, .. } if platforms.partial => JobOutcomeLabel::Partial,
            JobOutcome::Patched { .. } => JobOutcomeLabel::Patched,
            JobOutcome::Unchanged { .. } => JobOutcomeLabel::Unchanged,
            JobOutcome::Failed { .. } => JobOutcomeLabel::Failed,
        };
        flights
            .metrics
            .patch_jobs
            .get_or_create(&JobLabels { outcome: label })
            .inc();
        flights
            .metrics
            .patch_duration
            .observe(self.started.elapsed().as_secs_f64());
        let counter = match outcome.as_ref() {
            JobOutcome::Patched { platforms, .. } => {
                if platforms.partial {
                    flights.counts.partial.fetch_add(1, Ordering::Relaxed);
                }
                &flights.counts.patched
            }
            JobOutcome::Unchanged { .. } => &flights.counts.unchanged,
            JobOutcome::Failed { .. } => &flights.counts.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        flights.lock().insert(
            self.key.clone(),
            Entry::Done(outcome.clone(), flights.clock.now()),
        );
        flights.active.fetch_sub(1, Ordering::Relaxed);
        flights.metrics.patch_jobs_active.dec();
        self.tx.send_replace(Some(outcome.clone()));
        outcome
    }
}

impl Drop for JobPermit {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        tracing::warn!(upstream = %self.key.0, digest = %self.key.1, "{ENDED_WITHOUT_RESULT}; serving the original");
        self.record(Arc::new(JobOutcome::Failed {
            error: ENDED_WITHOUT_RESULT.to_owned(),
            reason: FallbackReason::PatchFailed,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flights() -> Arc<Flights> {
        let freshness = Freshness {
            retry_failed_after: Duration::from_secs(300),
            result_ttl: Duration::from_secs(300),
        };
        Arc::new(Flights::new(
            1,
            freshness,
            Arc::new(Metrics::new()),
            Clock::new(),
        ))
    }

    fn key() -> Key {
        let digest = format!("sha256:{}", "a".repeat(64))
            .parse()
            .expect("digest");
        ("local".to_owned(), digest)
    }

    #[tokio::test]
    async fn an_owner_that_panics_fails_the_job_and_gives_back_its_place() {
        let flights = flights();
        let Claim::Owner(permit, None) = flights.claim(&key()) else {
            panic!("the first claim owns the job");
        };
        let Claim::Waiter(mut waiter) = flights.claim(&key()) else {
            panic!("the second claim waits");
        };
        let owner = tokio::spawn(async move {
            let _permit = permit;
            panic!("a bug in the patch job");
        });
        assert!(owner.await.is_err(), "the owner panicked");
        assert_eq!(
            *waiter.finished().await,
            JobOutcome::Failed {
                error: ENDED_WITHOUT_RESULT.to_owned(),
                reason: FallbackReason::PatchFailed,
            }
        );
        assert_eq!(flights.active(), 0, "the place is given back");
        assert!(matches!(
            flights.claim(&key()),
            Claim::Done(outcome) if matches!(*outcome, JobOutcome::Failed { .. })
        ));
    }

    #[tokio::test]
    async fn a_cancelled_owner_fails_the_job() {
        let flights = flights();
        let Claim::Owner(permit, None) = flights.claim(&key()) else {
            panic!("the first claim owns the job");
        };
        let owner = tokio::spawn(async move {
            let _permit = permit;
            std::future::pending::<()>().await;
        });
        owner.abort();
        assert!(owner.await.is_err());
        assert_eq!(flights.active(), 0);
        assert!(matches!(flights.claim(&key()), Claim::Done(_)));
    }
}
