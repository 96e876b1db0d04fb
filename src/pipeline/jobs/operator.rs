//! The operator's view of jobs: one job by digest, and the records (image name, plan,
//! engine, stage timings) kept beside their outcomes and written to the store.

use super::*;

impl Jobs {
    /// The job of the image whose original (or patched) digest is `digest`, for the admin
    /// API; the most recent one's when several upstreams have it.
    pub fn get(&self, digest: &Digest) -> Option<JobView> {
        let digest = digest.to_string();
        self.list()
            .into_iter()
            .filter(|v| v.original == digest || v.patched.as_deref() == Some(digest.as_str()))
            .max_by(|a, b| a.record.started.cmp(&b.record.started))
    }

    /// Changes the record of `key` (creating it).
    pub(super) fn note(&self, key: &Key, change: impl FnOnce(&mut JobRecord)) {
        let mut records = self.job_records.lock().unwrap_or_else(|p| p.into_inner());
        change(records.entry(key.clone()).or_default());
    }

    /// Completes the record of a finished job and writes it to the store; returns the
    /// image's name for the log (the digest when the job had none).
    pub(super) async fn finish_record(&self, key: &Key, outcome: &JobOutcome) -> String {
        self.note(key, |r| r.finished = Some(record::now()));
        let record = self
            .job_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
            .unwrap_or_default();
        let image = record.image.clone().unwrap_or_else(|| key.1.to_string());
        let (status, patched, detail) = match outcome {
            JobOutcome::Patched {
                digest, platforms, ..
            } => (
                "patched",
                Some(digest.to_string()),
                platforms
                    .failures()
                    .map(|failures| format!("the originals are kept for {failures}")),
            ),
            JobOutcome::Unchanged { reason } => ("unchanged", None, Some(reason.clone())),
            JobOutcome::Failed { error, .. } => ("failed", None, Some(error.clone())),
        };
        let saved = SavedJob {
            upstream: key.0.clone(),
            original: key.1.to_string(),
            status: status.to_owned(),
            patched,
            detail,
            record,
        };
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), saved.clone());
        record::save(&self.records.store, &key.1, saved).await;
        image
    }

    /// Forgets the records of `digest` (under every upstream), on disk too.
    pub(super) fn forget_records(&self, digest: &Digest) -> bool {
        let mut dropped = false;
        self.job_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, d), _| d != digest);
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, d), _| {
                let keep = d != digest;
                dropped |= !keep;
                keep
            });
        record::remove(&self.records.store, digest);
        dropped
    }
}
