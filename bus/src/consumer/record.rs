//! The record as the application receives it, and where to start reading.

use std::sync::Arc;

use bytes::Bytes;
use kafka_proto::records::{RecordHeader, TimestampType};

/// One record of one partition. Key, value and header values are zero-copy slices of the
/// fetch response (or of the decompressed batch), so holding a record keeps that buffer alive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerRecord {
    /// Shared by every record of the topic: cloning it is a reference-count increment.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch; -1 for magic 0 messages, which carry none.
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Empty (and unallocated) for records without headers.
    pub headers: Vec<RecordHeader>,
}

/// Where to start (or restart) reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offset {
    /// The oldest record still kept (the log start offset).
    Earliest,
    /// The end of the log: only records produced from now on (the high watermark, or the last
    /// stable offset under `ReadCommitted`).
    Latest,
    /// Exactly this offset. Past the end or before the start, the fetch answers
    /// OFFSET_OUT_OF_RANGE and the reset policy decides.
    At(i64),
    /// The first record whose timestamp is at or after this many milliseconds since the
    /// epoch; the end of the log when every record is older.
    Timestamp(i64),
}
