//! Errors of the client layers. A request fails for one of a few reasons, and callers need to
//! tell them apart: retry on a new connection (`ConnectionClosed`, `Io`), give up
//! (`Version`, `Encode`), or report a broken peer (`Decode`).

use std::sync::Arc;

use kafka_proto::{DecodeError, EncodeError, VersionError};
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
}
