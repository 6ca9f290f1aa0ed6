//! The async Kafka client on tokio, and (in later layers) the event bus built on it.
//!
//! Layers, each calling only the one below (see `DESIGN.md`): `connection` moves frames over
//! one socket and matches responses to requests; everything protocol-shaped comes from the
//! sans-IO `kafka-proto` crate.

pub mod admin;
pub mod connection;
pub mod error;

pub use connection::{Connection, ConnectionConfig};
pub use error::RequestError;
