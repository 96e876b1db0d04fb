//! Knowing what to fix: turning a scan source (a Trivy or copa report today; the built-in
//! scanner and scanner commands later) into a [`plan::Plan`] checked against the image's own
//! package inventory.
//!
//! This module decides *what* to update. It does not read images (callers hand it a
//! [`crate::pkgs::Inventory`]), does not fetch anything, and does not patch.

pub mod builtin;
pub mod cache;
pub mod command;
pub mod plan;
pub mod report;
pub mod severity;
