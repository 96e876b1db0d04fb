//! rpm (Azure Linux, CBL-Mariner, RHEL and relatives): EVR order ([`version`]) and the
//! installed-package records: the distroless `container-manifest-2` ([`db`]) and the sqlite
//! rpmdb ([`sqlite`], whose records are rpm header blobs read by [`header`]). BerkeleyDB
//! and NDB rpmdbs answer "not supported yet". Must not fetch anything.

pub mod db;
pub mod header;
pub mod sqlite;
pub mod version;
