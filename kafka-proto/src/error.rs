//! Codec errors. Every way a byte string can fail to be a Kafka message has its own variant so
//! callers (and fuzzers) can tell truncation from corruption from a version mismatch.

use thiserror::Error;

/// Why bytes could not be decoded. Decoding never panics and never allocates from an unchecked
/// wire length; every rejection lands here.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before a fixed-size value or a length-prefixed value was complete.
    #[error("unexpected end of input: needed {needed} bytes, {remaining} remain")]
    UnexpectedEof { needed: usize, remaining: usize },
    /// A length or element count on the wire is negative (other than -1 for null) or larger
    /// than the bytes that remain, so it cannot be honest.
    #[error("invalid length {length} for {what}: {remaining} bytes remain")]
    InvalidLength {
        what: &'static str,
        length: i64,
        remaining: usize,
    },
    /// A varint ran past its maximum width.
    #[error("varint longer than {max_bytes} bytes")]
    VarintTooLong { max_bytes: usize },
    /// A string field was not UTF-8.
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    /// Null arrived for a field that cannot be null at this version.
    #[error("field {field} is null but not nullable at version {version}")]
    NullNotAllowed { field: &'static str, version: i16 },
    /// The same tag appeared twice in one tagged-field section.
    #[error("duplicate tagged field {tag} in {message}")]
    DuplicateTag { message: &'static str, tag: u32 },
    /// A known tagged field's payload was not consumed exactly by its decoder.
    #[error("tagged field {tag} of {message} has {extra} trailing bytes")]
    TaggedFieldSize {
        message: &'static str,
        tag: u32,
        extra: usize,
    },
    /// Bytes were left after a complete message was decoded.
    #[error("{remaining} trailing bytes after {message}")]
    TrailingBytes {
        message: &'static str,
        remaining: usize,
    },
    /// The message has no such version.
    #[error("{message} has no version {version}")]
    UnsupportedVersion { message: &'static str, version: i16 },
    /// An API key that the spec this crate was generated from does not define.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// A frame's size prefix is larger than the configured cap (or negative).
    #[error("frame of {size} bytes exceeds the cap of {max} bytes")]
    FrameTooLarge { size: i64, max: usize },
}

/// Why a value could not be encoded at the requested version. Encoding refuses to lose meaning:
/// it never silently drops a non-default value that the version cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The field is not part of this version, is not marked ignorable in the spec, and holds a
    /// value other than its default, so sending this version would change the request's meaning.
    #[error("{field} holds a non-default value but version {version} cannot carry it")]
    NonIgnorableField { field: &'static str, version: i16 },
    /// The field is null but this version cannot encode null for it.
    #[error("{field} is null but not nullable at version {version}")]
    NullNotAllowed { field: &'static str, version: i16 },
    /// The message has no such version.
    #[error("{message} has no version {version}")]
    UnsupportedVersion { message: &'static str, version: i16 },
    /// A string, byte string or array is longer than its length prefix can express.
    #[error("{field} has length {len}, longer than the wire format allows")]
    TooLong { field: &'static str, len: usize },
    /// An unknown tagged field reuses a tag the message itself defines at this version.
    #[error("unknown tagged field {tag} collides with a known field of {message}")]
    TagCollision { message: &'static str, tag: u32 },
}
