//! apk (Alpine, Wolfi): version order ([`version`], written here after apk-tools since no
//! maintained crate exists) and the installed-package database ([`db`]). Must not fetch
//! anything: `APKINDEX` and the secdb are the scanner's business.

pub mod db;
pub mod package;
pub mod version;
