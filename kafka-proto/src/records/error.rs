//! Errors of the record-batch codec (protocol guide, "Record Batch" and "Message Sets").
//!
//! Decode errors name the batch's base offset (for legacy messages, the message's offset) so a
//! consumer can log exactly which part of a partition is corrupt and skip past it.

use thiserror::Error;

use crate::compression::CompressionError;
use crate::error::DecodeError;

/// Why a `records` blob could not be decoded. A batch cut short at the very end of the blob is
/// not an error (the broker cuts Fetch responses at `max_bytes`); it is reported through
/// [`DecodedRecords::truncated`](super::DecodedRecords::truncated) instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// The stored checksum (CRC32C over attributes..end for magic 2, CRC32 over magic..end for
    /// magic 0 and 1) does not match the bytes.
    #[error(
        "CRC mismatch in batch at base offset {base_offset}: stored {expected:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        base_offset: i64,
        expected: u32,
        computed: u32,
    },
    /// The magic byte is not 0, 1 or 2.
    #[error("batch at base offset {base_offset} has unsupported magic {magic}")]
    UnsupportedMagic { base_offset: i64, magic: i8 },
    /// The batch (or message) length field is negative or smaller than the fixed header of its
    /// magic, so the batch cannot be parsed.
    #[error(
        "batch at base offset {base_offset} declares length {length}, below the minimum of {min}"
    )]
    InvalidBatchLength {
        base_offset: i64,
        length: i32,
        min: usize,
    },
    /// The record count is negative or larger than the record bytes could possibly hold.
    #[error("batch at base offset {base_offset} declares {count} records in {available} bytes")]
    InvalidRecordCount {
        base_offset: i64,
        count: i32,
        available: usize,
    },
    /// The attributes name a compression codec Kafka never assigned, or one not valid for the
    /// magic (zstd before magic 2).
    #[error(
        "batch at base offset {base_offset} uses unknown compression codec {codec} for magic {magic}"
    )]
    UnknownCompression {
        base_offset: i64,
        codec: u8,
        magic: i8,
    },
    /// The compressed records could not be decompressed, or exceed the configured cap.
    #[error("batch at base offset {base_offset}: {source}")]
    Decompression {
        base_offset: i64,
        #[source]
        source: CompressionError,
    },
    /// A field inside the batch header could not be read although the batch length fit.
    #[error("batch at base offset {base_offset} is malformed: {source}")]
    Malformed {
        base_offset: i64,
        #[source]
        source: DecodeError,
    },
    /// Record `index` of the batch overruns the batch, has a bad length or an invalid field.
    #[error("record {index} of batch at base offset {base_offset} is malformed: {source}")]
    InvalidRecord {
        base_offset: i64,
        index: usize,
        #[source]
        source: DecodeError,
    },
    /// Record `index` declares a length that does not match the fields it contains.
    #[error(
        "record {index} of batch at base offset {base_offset} declares {declared} bytes but its fields span {actual}"
    )]
    RecordLengthMismatch {
        base_offset: i64,
        index: usize,
        declared: usize,
        actual: usize,
    },
    /// Bytes are left in the batch after its declared number of records.
    #[error("batch at base offset {base_offset} has {remaining} bytes after its last record")]
    TrailingRecordBytes { base_offset: i64, remaining: usize },
    /// A legacy compressed wrapper contains another compressed message, which Kafka forbids.
    #[error("compressed message at offset {offset} wraps another compressed message")]
    NestedCompression { offset: i64 },
    /// A legacy compressed wrapper message carries a null value or an empty inner message set.
    #[error("compressed message at offset {offset} wraps no messages")]
    EmptyWrapper { offset: i64 },
    /// A control record's key or value is shorter than its fixed fields.
    #[error("invalid control record: {reason}")]
    InvalidControlRecord { reason: &'static str },
    /// [`RecordBatch::decode`](super::RecordBatch::decode) was given fewer bytes than the
    /// batch declares (the multi-batch decoder reports this as truncation instead).
    #[error("batch needs {needed} bytes but only {remaining} remain")]
    Truncated { needed: usize, remaining: usize },
}

/// Why records could not be appended to, or a batch finished by, a
/// [`BatchEncoder`](super::BatchEncoder).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordsEncodeError {
    /// A key, value, header or the whole record is longer than its varint length can express.
    #[error("{field} has length {len}, longer than the record format allows")]
    TooLong { field: &'static str, len: usize },
    /// The batch would be longer than the i32 `batchLength` field allows.
    #[error("batch of {len} bytes exceeds the largest expressible batch")]
    BatchTooLarge { len: usize },
    /// The i32 offset delta of the next record would overflow.
    #[error("batch already holds the largest possible number of records")]
    TooManyRecords,
    /// Bytes given to [`restamp_producer`](super::restamp_producer) are not a v2 batch.
    #[error("not a record batch v2 (too short or wrong magic)")]
    NotABatch,
    /// The records section could not be compressed.
    #[error(transparent)]
    Compression(#[from] CompressionError),
}
