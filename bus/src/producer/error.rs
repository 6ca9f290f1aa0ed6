//! Why a record was refused at `send` or failed after it. Each variant says what the caller
//! can do about it: fix the record or the configuration, slow down, or accept that a record
//! may or may not have been written.

use std::sync::Arc;
use std::time::Duration;

use kafka_proto::ErrorCode;
use kafka_proto::records::RecordsEncodeError;
use partitioner::PartitionError;
use thiserror::Error;

use crate::error::{Error, RequestError};

/// A producer failure, for one record, one batch or the whole producer.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The configuration cannot work; nothing was sent.
    #[error("invalid producer configuration: {0}")]
    Config(String),
    /// The record cannot fit in a request, so it was refused before being buffered.
    #[error("record of up to {size} bytes exceeds max_request_size ({max} bytes)")]
    RecordTooLarge { size: usize, max: usize },
    /// `buffer_memory` stayed full for `max_block`; the record was not accepted.
    #[error("buffer memory full: no room for the record within max_block ({0:?})")]
    BufferFull(Duration),
    /// The topic's metadata did not arrive within `max_block`; the record was not accepted.
    #[error("no metadata for topic {topic:?} within max_block ({waited:?})")]
    MetadataTimeout { topic: Arc<str>, waited: Duration },
    /// The record's explicit partition does not exist, or the topic has none.
    #[error("cannot place record in {topic:?}: {source}")]
    Partition {
        topic: Arc<str>,
        #[source]
        source: PartitionError,
    },
    /// The record could not be encoded (a field longer than the format allows).
    #[error("cannot encode record: {0}")]
    Encode(#[from] RecordsEncodeError),
    /// The broker rejected the batch with a code that retrying cannot fix.
    #[error("{topic}-{partition}: broker answered {}{}", code.name(),
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        topic: Arc<str>,
        partition: i32,
        code: ErrorCode,
        message: Option<String>,
    },
    /// The request carrying the batch failed (connection lost, no answer in time).
    #[error("request failed: {0}")]
    Request(#[from] RequestError),
    /// Looking up the cluster failed (metadata, no reachable broker).
    #[error(transparent)]
    Client(Box<Error>),
    /// `delivery_timeout` passed before the batch was acknowledged. `maybe_written` is set
    /// when an attempt ended without an answer, so the records may be in the log.
    #[error("not delivered within delivery_timeout ({timeout:?}) after {attempts} attempt(s){}{}",
        if *maybe_written { " (may have been written)" } else { "" },
        last.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    DeliveryTimeout {
        timeout: Duration,
        attempts: u32,
        maybe_written: bool,
        last: Option<Box<ProduceError>>,
    },
    /// A retriable error persisted through `retries` retries. `maybe_written` as for
    /// [`DeliveryTimeout`](Self::DeliveryTimeout).
    #[error("gave up after {attempts} attempt(s){}: {last}",
        if *maybe_written { " (may have been written)" } else { "" })]
    RetriesExhausted {
        attempts: u32,
        maybe_written: bool,
        last: Box<ProduceError>,
    },
    /// An attempt of this batch ended without an answer, and the producer then had to restart
    /// the partition's sequence numbers (the broker lost or fenced its producer state).
    /// Sending it again could write it twice, so it is reported instead: it may or may not
    /// have been written.
    #[error(
        "{topic}-{partition}: delivery uncertain: an earlier attempt may have been written, \
             and the broker's producer state was reset ({reason})"
    )]
    Uncertain {
        topic: Arc<str>,
        partition: i32,
        reason: ErrorCode,
    },
    /// The producer cannot continue (for instance, the broker refused to give it a producer
    /// id); every record is failed with this.
    #[error("producer failed: {0}")]
    Fatal(Box<ProduceError>),
    /// `send` after `close`, or the producer's task is gone.
    #[error("producer is closed")]
    Closed,
    /// A `flush` or `close` summary: some records accepted since the previous summary failed.
    /// Each one's own error went to its delivery future; this is the first of them.
    #[error("{failed} record(s) failed; first error: {first}")]
    Undelivered {
        failed: u64,
        first: Box<ProduceError>,
    },
}

impl ProduceError {
    /// The Kafka error code behind this failure, if a broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ProduceError::Broker { code, .. } => Some(*code),
            ProduceError::Uncertain { reason, .. } => Some(*reason),
            ProduceError::Client(e) => e.code(),
            ProduceError::DeliveryTimeout { last, .. } => last.as_deref().and_then(Self::code),
            ProduceError::RetriesExhausted { last, .. }
            | ProduceError::Fatal(last)
            | ProduceError::Undelivered { first: last, .. } => last.code(),
            _ => None,
        }
    }

    /// Whether the records may have been written although this error was reported (the
    /// answer never came). Callers that must not lose data resend these and accept possible
    /// duplicates; callers that must not duplicate do not.
    pub fn maybe_written(&self) -> bool {
        match self {
            ProduceError::Uncertain { .. } | ProduceError::Request(_) => true,
            ProduceError::DeliveryTimeout { maybe_written, .. }
            | ProduceError::RetriesExhausted { maybe_written, .. } => *maybe_written,
            _ => false,
        }
    }
}

impl From<Error> for ProduceError {
    fn from(e: Error) -> Self {
        ProduceError::Client(Box::new(e))
    }
}
