//! Sans-IO Apache Kafka protocol.
//!
//! Everything here is a pure function of bytes and a version number: no sockets, no tokio, no
//! clock. The message structs under [`messages`] are generated from Apache Kafka's JSON message
//! definitions by `cargo xtask codegen` (see `DESIGN.md`); the wire primitives, frame
//! splitting, error codes and version negotiation beside them are hand-written.

#[cfg(feature = "arbitrary")]
pub mod arbitrary_support;
pub mod envelope;
pub mod error;
pub mod error_code;
pub mod frame;
pub mod message;
// Generated code: straight-line per version, so some bindings go unused at some versions.
pub mod compression;
#[allow(unused_mut, unused_variables, dead_code, clippy::all)]
pub mod messages;
pub mod records;
pub mod version;
pub mod wire;

pub use error::{DecodeError, EncodeError};
pub use error_code::ErrorCode;
pub use frame::FrameSplitter;
pub use message::{ApiInfo, Message, Request, Response, VersionRange};
pub use messages::ApiKey;
pub use version::{VersionError, negotiate_version};
pub use wire::{Decode, Encode, TaggedDefaults, UnknownTaggedFields, Uuid};
