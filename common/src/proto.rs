//! Generated `flotilla.v1` protocol types and gRPC stubs.
//!
//! Generated code stays at the edge: the rest of Flotilla converts these into
//! validated domain types before using them.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("flotilla.v1");

/// Protocol version spoken by this build (see `HelloRequest.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 6;

/// Metadata key of the session credential on `StreamTrajectories` (see the
/// proto's header and `RunSpec.session`).
pub const SESSION_METADATA: &str = "x-flotilla-session";
