//! Tests of the Alpine scanner: unit tests of its parts, and whole scans against signed
//! indexes served on loopback by the apt tests' file server.

mod fixture;
mod scan;
// The apt tests' static file server, compiled here too: its module is private to them.
#[allow(clippy::duplicate_mod)]
#[path = "../../tests/server.rs"]
mod server;
mod units;
