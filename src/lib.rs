//! patchpull: a registry-side proxy that patches container images on pull.
//!
//! Today the crate is the pull-through mirror that everything else stands on: the OCI pull
//! API (`distribution`), the upstream client (`upstream`), the content-addressed store
//! (`store`), the HTTP server (`server`) and the command line (`cli`). Imports point down:
//! `cli` -> `server` -> `mirror` -> (`upstream`, `store`) -> `distribution`.
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
