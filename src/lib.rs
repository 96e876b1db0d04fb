//! patchpull: a registry-side proxy that patches container images on pull.
//!
//! A pull-through mirror (`mirror` over `upstream` and `store`, speaking `distribution`'s
//! grammar) served by `server`; patch on pull in `pipeline` (jobs, policy, and `patcher`,
//! which turns one image into its patched image), with the engines in `patch` (native dpkg
//! and apk, BuildKit through `buildkit`), plans from `scan`, package formats in `pkgs`,
//! the admission webhook in `admission`, and the command line in `cli`. Imports point
//! down: `cli` -> `server` -> `pipeline` -> (`mirror`, `patch`, `scan`, `store`,
//! `upstream`) -> (`pkgs`, `image`) -> `distribution`; see `docs/architecture.md`.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admission;
pub mod buildkit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod coordination;
pub mod distribution;
pub mod durable;
pub mod error;
#[cfg(feature = "failpoints")]
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod glob;
pub mod image;
pub mod metrics;
pub mod mirror;
pub mod parallel;
pub mod patch;
pub mod pipeline;
pub mod pkgs;
pub mod scan;
pub mod server;
pub mod sign;
pub mod store;
pub mod upstream;
