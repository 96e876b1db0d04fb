//! Tests of the built-in scanner against real signed apt repositories on loopback, and
//! (with `DEBIAN_ARCHIVE_TESTS=1`) against Debian's archive.

mod changelogs;
mod fixture;
mod keyring;
mod network;
mod repo;
mod scan;
mod server;
mod severities;
mod trust;
