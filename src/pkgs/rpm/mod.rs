//! rpm (Azure Linux, CBL-Mariner, RHEL and relatives): EVR order ([`version`]) and the
//! installed-package records ([`db`]): the distroless `container-manifest-2` today; rpm
//! databases themselves answer "not supported yet". Must not fetch anything.

pub mod db;
pub mod version;
