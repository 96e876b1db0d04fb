//! dpkg (Debian, Ubuntu, Google distroless): version order ([`version`]), the installed
//! package database ([`db`]) and the deb822 syntax both the database and apt's indexes
//! use, and the release a database belongs to when os-release is missing ([`release`]).
//! Must not fetch anything: apt repositories are the scanner's business.

pub mod db;
pub(crate) mod deb822;
pub mod debfile;
pub mod relation;
pub mod release;
pub mod version;
