//! What a replica says of the fleet: patch work it did itself, how its jobs were
//! coordinated, and whether Redis and the backing registry answer. Summed over replicas,
//! `patchpull_patch_runs_total` is the patch work the fleet did.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a job of this replica went with respect to the other replicas.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Coordinated {
    /// This replica took the lease and patched.
    Claimed,
    /// Another replica held the lease; its result was read from the shared store.
    Waited,
    /// The lease holder went away; this replica took the job over.
    TakenOver,
    /// Redis is configured but did not answer: patched without a lease.
    Uncoordinated,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoordinatedLabels {
    pub how: Coordinated,
}

#[derive(Default)]
pub struct FleetMetrics {
    /// Patch engine runs of this replica (not jobs answered from another's result).
    pub patch_runs: Counter,
    pub coordinated_jobs: Family<CoordinatedLabels, Counter>,
    /// 1 when Redis answered the last request; 0 when it did not or none is configured.
    pub redis_up: Gauge,
    /// 1 when the backing registry answered the last request (or none is configured).
    pub backing_registry_up: Gauge,
    pub backing_registry_errors: Counter,
}

impl FleetMetrics {
    pub fn register(registry: &mut Registry) -> FleetMetrics {
        let m = FleetMetrics::default();
        m.backing_registry_up.set(1);
        registry.register(
            "patch_runs",
            "Patch engine runs of this replica (summed over replicas: the fleet's patch work)",
            m.patch_runs.clone(),
        );
        registry.register(
            "coordinated_jobs",
            "Patch jobs by how they were coordinated with other replicas (Redis lease)",
            m.coordinated_jobs.clone(),
        );
        registry.register(
            "coordination_redis_up",
            "1 when Redis answered the last lease request, 0 when it did not (or none is configured)",
            m.redis_up.clone(),
        );
        registry.register(
            "backing_registry_up",
            "1 when the backing registry answered the last request (always 1 for the local backend)",
            m.backing_registry_up.clone(),
        );
        registry.register(
            "backing_registry_errors",
            "Requests to the backing registry that failed or returned content that did not verify",
            m.backing_registry_errors.clone(),
        );
        m
    }

    pub fn job(&self, how: Coordinated) {
        self.coordinated_jobs
            .get_or_create(&CoordinatedLabels { how })
            .inc();
    }

    /// Records whether a backing registry request succeeded.
    pub fn backing(&self, ok: bool) {
        self.backing_registry_up.set(i64::from(ok));
        if !ok {
            self.backing_registry_errors.inc();
        }
    }
}
