//! The OCI distribution pull API's vocabulary: request paths, names, references and
//! digests, media types and Accept negotiation, byte ranges and the spec's error codes.
//! Pure parsing and types; nothing here does I/O.

pub mod codes;
pub mod media_type;
pub mod path;
pub mod range;
pub mod reference;

pub use codes::ErrorCode;
pub use path::{DistributionRequest, Endpoint, PathError};
pub use reference::{Digest, DigestAlgorithm, Reference};
