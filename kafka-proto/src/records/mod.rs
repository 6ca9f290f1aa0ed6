//! Kafka's on-disk and on-wire record formats: the `records` field of Produce requests and
//! Fetch responses.
//!
//! - Record batch v2 (magic 2) and its records, transactional batches and control records:
//!   KIP-98, protocol guide "Record Batch" / "Record" / "Control Batches"; the delete horizon
//!   attribute is KIP-534; zstd batches are KIP-110. Encoded by [`BatchEncoder`], decoded by
//!   [`decode_records`] / [`RecordBatches`].
//! - Legacy message sets v0 and v1 (magic 0 and 1), decode only: protocol guide "Message Sets",
//!   KIP-32 (timestamps) and KIP-31 (relative offsets in compressed wrappers).
//!
//! Decoding is zero-copy: keys, values and header values are [`Bytes`] slices of the input, or
//! of the decompressed buffer for compressed batches. Every magic decodes into the same
//! [`RecordBatch`] / [`Record`] view. A fetch response's `records` usually ends in a batch the
//! broker cut at `max_bytes`; that is reported as [`DecodedRecords::truncated`], not an error.
//! Checksums are verified unless [`DecodeOptions::verify_crc`] is off, and decompression is
//! capped by [`DecodeOptions::max_decompressed_size`].

mod batch;
mod control;
mod encoder;
mod error;
mod legacy;
mod record;

use bytes::Bytes;

pub use crate::compression::{Compression, DEFAULT_MAX_DECOMPRESSED_SIZE};
pub use batch::{LOG_OVERHEAD, RecordBatch, V2_HEADER_SIZE, V2_MIN_BATCH_LENGTH};
pub use control::ControlRecord;
pub use encoder::{
    BatchBuilder, BatchEncoder, BatchParams, HeaderRef, NO_HEADERS, restamp_producer,
};
pub use error::{RecordsEncodeError, RecordsError};
pub use record::{Record, RecordHeader};

/// Which clock a batch's timestamps come from (attributes bit 3, KIP-32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// Set by the producer. Also reported for magic 0 messages, which carry no timestamp
    /// (their records have timestamp -1).
    #[default]
    CreateTime,
    /// Set by the broker when appending; every record's timestamp is the batch's
    /// `max_timestamp`.
    LogAppendTime,
}

/// How to decode. The defaults (`verify_crc: true`, `max_decompressed_size:`
/// [`DEFAULT_MAX_DECOMPRESSED_SIZE`] = 256 MiB) are what a consumer should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Check each batch's CRC (CRC32C for v2, CRC32 for v0/v1) before parsing it. Turning it
    /// off is for fuzzing (to reach the record parser with arbitrary bytes) and for callers
    /// that have verified the data already.
    pub verify_crc: bool,
    /// Cap on the decompressed size of one compressed batch or legacy wrapper.
    pub max_decompressed_size: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            verify_crc: true,
            max_decompressed_size: DEFAULT_MAX_DECOMPRESSED_SIZE,
        }
    }
}

impl DecodeOptions {
    pub fn with_verify_crc(mut self, verify_crc: bool) -> Self {
        self.verify_crc = verify_crc;
        self
    }

    pub fn with_max_decompressed_size(mut self, max: usize) -> Self {
        self.max_decompressed_size = max;
        self
    }
}

/// Every complete batch of a `records` blob, and whether the blob ended inside a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodedRecords {
    pub batches: Vec<RecordBatch>,
    /// The blob ended partway through a batch. Normal at the end of a Fetch response (the
    /// broker cuts at `max_bytes`); the consumer refetches from the next offset. If it happens
    /// with no complete batch at all, the batch is larger than the fetch size.
    pub truncated: bool,
    /// Bytes of the incomplete batch at the end (0 unless `truncated`).
    pub trailing_bytes: usize,
}

impl DecodedRecords {
    /// All records of all batches, in order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.batches.iter().flat_map(|b| b.records.iter())
    }
}

/// Decodes every batch of a `records` blob (any mix of magic 0, 1 and 2). Fails on the first
/// corrupt batch; [`RecordBatches`] yields the batches before it too.
pub fn decode_records(
    records: Bytes,
    options: &DecodeOptions,
) -> Result<DecodedRecords, RecordsError> {
    let mut iter = RecordBatches::new(records, *options);
    let mut batches = Vec::new();
    for batch in &mut iter {
        batches.push(batch?);
    }
    Ok(DecodedRecords {
        batches,
        truncated: iter.truncated(),
        trailing_bytes: iter.trailing_bytes(),
    })
}

/// Decodes the batches of a `records` blob one at a time, for consumers that hand records on
/// as they go instead of collecting them. Stops after the first error.
#[derive(Debug, Clone)]
pub struct RecordBatches {
    rest: Bytes,
    options: DecodeOptions,
    done: bool,
    trailing: usize,
}

impl RecordBatches {
    pub fn new(records: Bytes, options: DecodeOptions) -> Self {
        RecordBatches {
            rest: records,
            options,
            done: false,
            trailing: 0,
        }
    }

    /// Whether the blob ended inside a batch; meaningful once iteration has returned `None`.
    pub fn truncated(&self) -> bool {
        self.trailing > 0
    }

    /// Bytes of the incomplete final batch; meaningful once iteration has returned `None`.
    pub fn trailing_bytes(&self) -> usize {
        self.trailing
    }
}

impl Iterator for RecordBatches {
    type Item = Result<RecordBatch, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = match batch::split_batch(&mut self.rest) {
            Ok(batch::Split::Batch { magic, bytes }) => {
                batch::decode_entry(magic, bytes, &self.options)
            }
            Ok(batch::Split::Truncated { .. }) => {
                self.trailing = self.rest.len();
                self.done = true;
                return None;
            }
            Ok(batch::Split::End) => {
                self.done = true;
                return None;
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}
