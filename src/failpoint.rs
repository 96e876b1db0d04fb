//! Failure injection for tests, compiled only with the `failpoints` feature (which the
//! crate's own tests turn on through its dev-dependency on itself; a release build has
//! none of it). A test arms a named point for one key (an image digest, so that tests
//! running side by side do not trip each other's: the image must be the test's own), and
//! the code at that point panics
//! when it passes with that key.

use std::sync::Mutex;

/// The start of a patch job, keyed by the original image's digest.
pub const PATCH_JOB: &str = "patch_job";

static ARMED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Makes the next passes of `point` with `key` panic.
pub fn arm_panic(point: &str, key: &str) {
    let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
    armed.push((point.to_owned(), key.to_owned()));
}

/// Stops `point` panicking for `key`.
pub fn disarm(point: &str, key: &str) {
    let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
    armed.retain(|(p, k)| !(p == point && k == key));
}

/// Panics when `point` is armed for `key`.
pub(crate) fn hit(point: &str, key: &str) {
    let tripped = ARMED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|(p, k)| p == point && k == key);
    if tripped {
        panic!("failpoint {point} tripped for {key}");
    }
}
