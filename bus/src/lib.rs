//! The async Kafka client on tokio, and (in later layers) the event bus built on it.
//!
//! Layers, each calling only the one below (see `DESIGN.md`): `connection` moves frames over
//! one socket around a sans-IO protocol state; `client` keeps cluster metadata and routes
//! requests to brokers; `admin`, `producer` and `consumer` build on the client. Everything
//! protocol-shaped comes from the sans-IO `kafka-proto` crate.

pub mod admin;
pub mod backoff;
pub mod client;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod event_bus;
pub mod group;
pub mod offsets;
pub mod producer;
mod routing;
pub mod security;

pub use client::{Client, ClientConfig};
pub use connection::{Connection, ConnectionConfig};
pub use error::{Error, RequestError};
pub use group::{
    AssignorKind, GroupConfig, GroupConsumer, NoopListener, RebalanceContext, RebalanceListener,
    TopicPartition, TopicPartitionOffset,
};

/// The README's Rust examples, compiled (and where they need no broker, run) as doctests so
/// they cannot rot. They live here because `bus` sees every crate the examples use.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctest;
