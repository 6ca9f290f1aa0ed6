//! Sans-IO Apache Kafka protocol.
//!
//! Everything here is a pure function of bytes and a version number: no sockets, no tokio, no
//! clock. The message structs under [`messages`] are generated from Apache Kafka's JSON message
//! definitions by `cargo xtask codegen` (see `DESIGN.md`); the wire primitives, frame
//! splitting, error codes and version negotiation beside them are hand-written.

pub mod error;
pub mod wire;

pub use error::{DecodeError, EncodeError};
pub use wire::{Decode, Encode, UnknownTaggedFields, Uuid};
