//! BuildKit over its gRPC Control API (`moby.buildkit.v1.Control`): the message
//! definitions ([`proto`], written here from BuildKit's wire format), the connection
//! ([`transport`]: a buildkitd unix socket or TCP address, or a Docker Engine's `/grpc`
//! endpoint), the client ([`client`]: capabilities, solve with streamed status), the LLB
//! graph builder ([`llb`]) and the few Docker Engine calls that take a solved image out of
//! dockerd's image store ([`engine_api`]).

pub mod client;
pub mod engine_api;
pub mod error;
pub mod llb;
pub mod proto;
pub mod transport;

pub use client::{Capabilities, Client, StatusEvent};
pub use error::BuildkitError;
pub use transport::{BuildkitAddress, TlsFiles};
