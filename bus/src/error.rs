//! Errors of the client layers. A request fails for one of a few reasons, and callers need to
//! tell them apart: retry on a new connection (`ConnectionClosed`, `Io`), give up
//! (`Version`, `Encode`), or report a broken peer (`Decode`).

use std::sync::Arc;

use kafka_proto::{DecodeError, EncodeError, ErrorCode, VersionError};
use thiserror::Error;

/// Why one request on one connection failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The connection failed; every request in flight on it fails with this same cause.
    #[error("connection to {addr} is closed: {cause}")]
    ConnectionClosed {
        addr: String,
        cause: Arc<ConnectionFailure>,
    },
    /// No version of the API is usable with this broker.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The request could not be encoded at the negotiated version.
    #[error("cannot encode request: {0}")]
    Encode(#[from] EncodeError),
    /// The response could not be decoded; the connection is poisoned because framing or the
    /// peer can no longer be trusted.
    #[error("cannot decode response: {0}")]
    Decode(#[from] DecodeError),
    /// No response arrived within the request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Opening the connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// TLS or SASL failed (an untrusted certificate, a wrong password). Never retriable:
    /// dialing again would fail the same way, and a wrong password must not turn into a
    /// reconnect storm against the broker.
    #[error("cannot secure the connection to {addr}: {source}")]
    Security {
        addr: String,
        #[source]
        source: Arc<crate::security::SecurityError>,
    },
}

/// What broke a connection. Shared (behind an `Arc`) by every request that was in flight.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectionFailure {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection")]
    Eof,
    #[error("bad frame from the broker: {0}")]
    Frame(DecodeError),
    #[error("response with unknown correlation id {0}")]
    UnknownCorrelationId(i32),
    #[error("the connection was dropped")]
    Dropped,
    /// Re-authentication (KIP-368) failed, so the session could not be extended.
    #[error("re-authentication failed: {0}")]
    Reauthentication(RequestError),
}

/// What a client operation (metadata, admin, produce, fetch) can fail with. The broker variant
/// carries the Kafka error code, the broker's message and where it applied, so a caller can
/// act on the code and a person can read the rest.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The broker answered with an error code.
    #[error("{}{}{}", code.name(), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), .context.as_deref().map(|c| format!(" [{c}]")).unwrap_or_default())]
    Broker {
        code: ErrorCode,
        message: Option<String>,
        /// Topic, partition or resource the error applies to, e.g. `orders-3`.
        context: Option<String>,
    },
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    /// A group's offsets cannot be changed from outside while it has members: one of them
    /// would overwrite the change with its next commit (and Kafka refuses it).
    #[error("group {group:?} is {state} with {members} member(s); stop its consumers first")]
    GroupNotEmpty {
        group: String,
        state: String,
        members: usize,
    },
    /// None of the bootstrap brokers could be reached.
    #[error("no broker reachable (tried {tried}): {last}")]
    NoBrokerReachable { tried: String, last: RequestError },
    /// Metadata names a broker the client does not know.
    #[error("broker {0} is not in the cluster metadata")]
    UnknownBroker(i32),
    /// A partition currently has no leader.
    #[error("no leader for {topic}-{partition}")]
    NoLeader { topic: String, partition: i32 },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An operation did not finish within its time budget.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The client, producer or consumer was closed.
    #[error("closed")]
    Closed,
    /// The broker's answer made no sense (a partition we did not ask about, a missing entry).
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// A producer operation failed (boxed: the producer's error can carry a client error).
    #[error(transparent)]
    Produce(Box<crate::producer::ProduceError>),
    /// Fetched records failed to decode (CRC mismatch, bad length, corrupt compression). The
    /// consumer stops that partition at `offset` rather than skip data silently; seeking past
    /// the batch resumes it.
    #[error("corrupt records in {topic}-{partition} at offset {offset}: {source}")]
    CorruptRecords {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: kafka_proto::records::RecordsError,
    },
    /// A record batch is larger than any response this client accepts (the connection's
    /// `max_frame_size`), so the partition cannot advance past it.
    #[error(
        "batch of {size} bytes in {topic}-{partition} at offset {offset} exceeds the {limit}-byte limit"
    )]
    RecordTooLarge {
        topic: String,
        partition: i32,
        offset: i64,
        size: usize,
        limit: usize,
    },
    /// The broker does not offer what the operation needs (an API, or an API version that
    /// carries a field).
    #[error("not supported by the broker: {0}")]
    Unsupported(String),
    /// The caller passed an argument the operation cannot accept (a negative offset, a
    /// partition that is not assigned).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An offset commit was refused because this member no longer owns the generation it
    /// committed under (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, or the
    /// member was never in a group): its partitions may already belong to another member, so
    /// retrying the same commit would be wrong. Rejoin (the next `poll`) and process again.
    #[error("commit failed, the group rebalanced: {}{}", code.name(), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    CommitFailed {
        code: ErrorCode,
        message: Option<String>,
    },
    /// Another consumer joined with the same `group_instance_id` (KIP-345); this one is
    /// fenced for good.
    #[error("fenced: another consumer uses group instance id {instance_id:?}")]
    FencedInstanceId { instance_id: String },
    /// A partition has no committed offset and the reset policy is `None`: the application
    /// must seek it.
    #[error("no committed offset for {topic}-{partition} and auto_offset_reset is none")]
    NoCommittedOffset { topic: String, partition: i32 },
    /// The consumer group failed in a way retrying cannot fix (an unsupported protocol, an
    /// invalid session timeout, an authorization failure), with the broker's code.
    #[error("group {group}: {}{}", code.name(), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Group {
        group: String,
        code: ErrorCode,
        message: Option<String>,
    },
}

impl Error {
    /// A broker error with an optional message and context.
    pub fn broker(code: ErrorCode, message: Option<String>, context: impl Into<String>) -> Self {
        Error::Broker {
            code,
            message,
            context: Some(context.into()),
        }
    }

    /// Whether trying again (after a metadata refresh or a backoff) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Request(r) => r.is_retriable(),
            Error::Broker { code, .. } => code.is_retriable(),
            Error::NoBrokerReachable { .. }
            | Error::NoLeader { .. }
            | Error::UnknownBroker(_)
            | Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// The Kafka error code, when the broker sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. }
            | Error::CommitFailed { code, .. }
            | Error::Group { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl RequestError {
    /// The TLS or SASL failure, when that is what this is.
    pub fn security(&self) -> Option<&crate::security::SecurityError> {
        match self {
            RequestError::Security { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Connection-level failures are worth a retry on a new connection; codec and version
    /// errors are not.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            RequestError::ConnectionClosed { .. }
                | RequestError::Timeout(_)
                | RequestError::Connect { .. }
        )
    }
}
