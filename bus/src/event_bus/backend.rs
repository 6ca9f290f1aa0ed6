//! The seam between the bus's runtime and a transport. The runtime (ordering, retries, dead
//! letters, de-duplication, commit tracking) is written once against these traits; the
//! memory and Kafka backends only move records and keep group offsets.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use super::envelope::InRecord;
use super::handler::BoxFuture;

/// Everything the event bus can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    #[error(transparent)]
    Envelope(#[from] super::envelope::EnvelopeError),
    #[error(transparent)]
    Partition(#[from] partitioner::PartitionError),
    /// A domain or handler group that cannot be part of a topic name.
    #[error("invalid {what}: {reason}")]
    InvalidName { what: &'static str, reason: String },
    /// The Kafka client failed (producer, admin, group).
    #[error(transparent)]
    Kafka(#[from] crate::Error),
    #[error(transparent)]
    Produce(#[from] crate::producer::ProduceError),
    /// The backend cannot do this (yet).
    #[error("{0}")]
    Unsupported(String),
    /// The bus or subscription was shut down.
    #[error("event bus closed")]
    Closed,
}

/// A partition of a topic: the consumer group's own type, so the Kafka backend hands
/// partitions between the group and the runtime as they are.
pub type PartitionId = crate::group::TopicPartition;

/// A record to write to an explicit partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub key: Bytes,
    pub value: Bytes,
    /// Names are `Cow` so the bus's constant header names are not allocated per event.
    pub headers: Vec<(Cow<'static, str>, Bytes)>,
}

/// How to create a missing topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// `retention.ms`; -1 keeps forever.
    pub retention_ms: i64,
}

/// Called by a subscription when it loses partitions (a rebalance, or leaving the group).
/// The runtime stops taking new records for them, waits for their in-flight handler, and
/// answers the offsets (next offset to read) to commit before the partitions move on. A
/// backend must let this finish, and commit its answer, before any other member can take
/// those partitions: that is what keeps a partition from being handled by two members.
pub trait RevokeHook: Send + Sync + 'static {
    fn revoked(&self, partitions: Vec<PartitionId>) -> BoxFuture<'_, Vec<(PartitionId, i64)>>;
}

/// One record's confirmation: its partition and, when the transport knows it, its offset.
pub type SendResult = Result<(i32, Option<i64>), BusError>;

/// A transport.
pub trait Backend: Send + Sync + 'static {
    /// Creates the topic when it is missing; answers its partition count.
    fn ensure_topic(&self, spec: TopicSpec) -> BoxFuture<'_, Result<i32, BusError>>;
    /// Writes records and waits until each is confirmed; one answer per record, in order:
    /// (partition, offset if known).
    fn send(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Vec<SendResult>>;
    /// Joins `group_id` for `topics` (which exist). Records start at the group's committed
    /// offset, or per `earliest` when there is none.
    fn subscribe(
        &self,
        group_id: String,
        topics: Vec<String>,
        earliest: bool,
        hook: Arc<dyn RevokeHook>,
    ) -> BoxFuture<'_, Result<Box<dyn Subscription>, BusError>>;
    /// Flushes and releases the transport.
    fn close(&self) -> BoxFuture<'_, Result<(), BusError>>;
}

/// One member of one consumer group.
pub trait Subscription: Send + 'static {
    /// The next records of the assigned partitions (empty after the poll timeout). Revoke
    /// callbacks run inside it, and a poll that has started one returns only after it has
    /// finished, however long the poll timeout.
    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<InRecord>, BusError>>;
    /// Commits next-to-read offsets. Refused (`CommitFailed`, as Kafka's ILLEGAL_GENERATION)
    /// when this member no longer holds one of the partitions.
    fn commit(&mut self, offsets: Vec<(PartitionId, i64)>) -> BoxFuture<'_, Result<(), BusError>>;
    /// Stops returning records of `partition` until [`resume`](Self::resume); it stays
    /// assigned. Records already returned are not returned again. A revoked partition
    /// forgets its pause.
    fn pause(&mut self, partition: &PartitionId);
    fn resume(&mut self, partition: &PartitionId);
    /// Records not yet committed per assigned partition: log end (Kafka: the high
    /// watermark) minus the group's committed offset, or, before the group's first commit of
    /// the partition, minus where this member started reading it.
    fn lag(&mut self) -> BoxFuture<'_, Vec<(PartitionId, i64)>>;
    /// Commits `offsets` and leaves the group.
    fn close(
        self: Box<Self>,
        offsets: Vec<(PartitionId, i64)>,
    ) -> BoxFuture<'static, Result<(), BusError>>;
}
