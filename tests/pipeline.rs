//! Patch on pull, as users of the proxy see it: a real registry upstream, a signed package
//! archive on loopback, patchpull in-process with `[patch]` on, and real clients (skopeo,
//! containerd, reqwest) resolving tags through it. A tag gives the patched image, built by
//! the same engine as `patchpull patch`; `-original` and digests give upstream's bytes;
//! the policies (wait, background, fail_closed) and job bookkeeping show in what pulls get
//! and in `/metrics`.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

mod common;
// The synthetic Debian images of the `patch` tests; not all of it is used here.
#[path = "pipeline/clients.rs"]
mod clients;
#[allow(dead_code)]
#[path = "patch/image.rs"]
mod image;
#[path = "pipeline/index.rs"]
mod index;
#[path = "pipeline/policy.rs"]
mod policy;
#[path = "pipeline/scope.rs"]
mod scope;
#[path = "pipeline/support.rs"]
mod support;
