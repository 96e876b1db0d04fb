//! BuildKit's protobuf messages, declared by hand with `prost` from the field numbers of
//! BuildKit's `.proto` files (v0.8 wire format, which newer daemons still accept): only the
//! messages and fields patchpull sends or reads. Maps are `BTreeMap`s so that a message
//! marshals to the same bytes every time; LLB op digests are hashes of those bytes.

pub mod control;
pub mod ops;
