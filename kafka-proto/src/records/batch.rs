//! Record batch v2 (magic 2), introduced by KIP-98 and laid out in the protocol guide's "Record
//! Batch" section:
//!
//! ```text
//! baseOffset: int64
//! batchLength: int32            -- bytes after this field
//! partitionLeaderEpoch: int32
//! magic: int8                   -- 2
//! crc: uint32                   -- CRC32C of attributes..end
//! attributes: int16             -- bits 0-2 codec, 3 timestampType, 4 isTransactional,
//!                               -- 5 isControl, 6 hasDeleteHorizonMs (KIP-534)
//! lastOffsetDelta: int32
//! baseTimestamp: int64          -- the delete horizon when bit 6 is set
//! maxTimestamp: int64
//! producerId: int64
//! producerEpoch: int16
//! baseSequence: int32
//! records: [Record]             -- int32 count, then the records, compressed as one unit
//! ```

use bytes::{Buf, Bytes};

use crate::compression::{self, Compression};

use super::record::{MIN_RECORD_SIZE, RecordContext, decode_records};
use super::{DecodeOptions, Record, RecordsError, TimestampType};

/// baseOffset + batchLength: the part of every batch (and legacy message set entry) that is
/// not counted by its length field. Kafka calls it `LOG_OVERHEAD`.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 header, records count included.
pub const V2_HEADER_SIZE: usize = 61;
/// The smallest legal `batchLength`: the header after the length field.
pub const V2_MIN_BATCH_LENGTH: usize = V2_HEADER_SIZE - LOG_OVERHEAD;
/// Where the magic byte sits in every format: after baseOffset, the length and either the
/// partition leader epoch (v2) or the CRC (v0/v1).
pub(crate) const MAGIC_OFFSET: usize = 16;
pub(crate) const CRC_OFFSET: usize = 17;
/// The CRC32C covers everything from the attributes to the end of the batch.
pub(crate) const ATTRIBUTES_OFFSET: usize = 21;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub(crate) const TRANSACTIONAL_BIT: i16 = 0x10;
pub(crate) const CONTROL_BIT: i16 = 0x20;
pub(crate) const DELETE_HORIZON_BIT: i16 = 0x40;

/// A decoded batch. Legacy message sets decode into this too: one batch per top-level message
/// (a compressed wrapper's inner messages become its records), with the v2-only fields at
/// their "none" values (-1 producer id/epoch/sequence/leader epoch, not transactional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    /// The checksum as stored (CRC32C for magic 2, CRC32 for magic 0 and 1).
    pub crc: u32,
    /// The raw attributes, including any bits this crate does not interpret.
    pub attributes: i16,
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    pub is_transactional: bool,
    pub is_control: bool,
    /// KIP-534: `base_timestamp` holds the delete horizon for tombstones and markers.
    pub has_delete_horizon: bool,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<Record>,
}

impl RecordBatch {
    /// The offset of the batch's last record, even if compaction removed that record. A
    /// consumer resumes fetching at `last_offset() + 1`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The delete horizon (KIP-534), when the batch carries one.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        self.has_delete_horizon.then_some(self.base_timestamp)
    }

    /// Decodes exactly one batch (of any magic) from the front of `buf`, advancing it. Unlike
    /// [`decode_records`](super::decode_records), a batch cut short is an error here
    /// ([`RecordsError::Truncated`]) because the caller asked for a whole one.
    pub fn decode(buf: &mut Bytes, options: &DecodeOptions) -> Result<RecordBatch, RecordsError> {
        match split_batch(buf)? {
            Split::Batch { magic, bytes } => decode_entry(magic, bytes, options),
            Split::End => Err(RecordsError::Truncated {
                needed: LOG_OVERHEAD,
                remaining: 0,
            }),
            Split::Truncated { needed } => Err(RecordsError::Truncated {
                needed,
                remaining: buf.remaining(),
            }),
        }
    }
}

pub(crate) enum Split {
    /// A whole batch (or legacy message set entry), length already checked.
    Batch {
        magic: i8,
        bytes: Bytes,
    },
    /// The buffer ends inside a batch; `needed` is how many bytes the batch wants (or the
    /// fixed prefix, when not even the length field arrived).
    Truncated {
        needed: usize,
    },
    End,
}

#[inline]
fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

/// Splits the next batch off the front of `rest`. Checks the length field against the
/// smallest batch the magic allows before anything else, the way Kafka's log reader does, so
/// a nonsensical length is corruption while an honest one past the end is truncation.
pub(crate) fn split_batch(rest: &mut Bytes) -> Result<Split, RecordsError> {
    let head = match rest.get(..LOG_OVERHEAD) {
        Some(head) => head,
        None if rest.is_empty() => return Ok(Split::End),
        None => {
            return Ok(Split::Truncated {
                needed: LOG_OVERHEAD,
            });
        }
    };
    let base_offset = be_i64(head);
    let length = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let magic = rest.get(MAGIC_OFFSET).map(|&b| b as i8);
    let min = match magic {
        Some(2) => V2_MIN_BATCH_LENGTH,
        Some(1) => super::legacy::V1_MIN_MESSAGE_SIZE,
        // Magic 0, or not yet visible: the smallest entry of any format.
        Some(0) | None => super::legacy::V0_MIN_MESSAGE_SIZE,
        Some(magic) => return Err(RecordsError::UnsupportedMagic { base_offset, magic }),
    };
    let length_ok = usize::try_from(length).ok().filter(|&n| n >= min);
    let Some(length) = length_ok else {
        return Err(RecordsError::InvalidBatchLength {
            base_offset,
            length,
            min,
        });
    };
    let total = LOG_OVERHEAD + length;
    if total > rest.len() {
        return Ok(Split::Truncated { needed: total });
    }
    // total >= LOG_OVERHEAD + V0_MIN_MESSAGE_SIZE > MAGIC_OFFSET, so the magic was visible.
    Ok(Split::Batch {
        magic: magic.unwrap_or(0),
        bytes: rest.split_to(total),
    })
}

pub(crate) fn decode_entry(
    magic: i8,
    bytes: Bytes,
    options: &DecodeOptions,
) -> Result<RecordBatch, RecordsError> {
    if magic == 2 {
        decode_v2(bytes, options)
    } else {
        super::legacy::decode_legacy(bytes, options)
    }
}

/// Decodes one whole v2 batch; `batch` is exactly `LOG_OVERHEAD + batchLength` bytes with
/// `batchLength >= V2_MIN_BATCH_LENGTH` (checked by [`split_batch`]).
fn decode_v2(batch: Bytes, options: &DecodeOptions) -> Result<RecordBatch, RecordsError> {
    let Some(mut h) = batch.get(..V2_HEADER_SIZE) else {
        return Err(RecordsError::Truncated {
            needed: V2_HEADER_SIZE,
            remaining: batch.len(),
        });
    };
    // `h` is exactly V2_HEADER_SIZE bytes, so these fixed-width reads cannot run out.
    let base_offset = h.get_i64();
    let _batch_length = h.get_i32();
    let partition_leader_epoch = h.get_i32();
    let magic = h.get_i8();
    let crc = h.get_u32();
    let attributes = h.get_i16();
    let last_offset_delta = h.get_i32();
    let base_timestamp = h.get_i64();
    let max_timestamp = h.get_i64();
    let producer_id = h.get_i64();
    let producer_epoch = h.get_i16();
    let base_sequence = h.get_i32();
    let count = h.get_i32();

    if options.verify_crc {
        let computed = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        if computed != crc {
            return Err(RecordsError::CrcMismatch {
                base_offset,
                expected: crc,
                computed,
            });
        }
    }

    let codec_id = (attributes & COMPRESSION_MASK) as u8;
    let compression = Compression::from_id(codec_id).ok_or(RecordsError::UnknownCompression {
        base_offset,
        codec: codec_id,
        magic,
    })?;
    let timestamp_type = if attributes & TIMESTAMP_TYPE_BIT != 0 {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };

    let section = batch.slice(V2_HEADER_SIZE..);
    let section = match compression {
        Compression::None => section,
        codec => compression::decompress(codec, &section, options.max_decompressed_size)
            .map(Bytes::from)
            .map_err(|source| RecordsError::Decompression {
                base_offset,
                source,
            })?,
    };

    let available = section.len();
    let count = match usize::try_from(count) {
        Ok(n) if n <= available / MIN_RECORD_SIZE => n,
        _ => {
            return Err(RecordsError::InvalidRecordCount {
                base_offset,
                count,
                available,
            });
        }
    };
    let ctx = RecordContext {
        base_offset,
        base_timestamp,
        timestamp_override: (timestamp_type == TimestampType::LogAppendTime)
            .then_some(max_timestamp),
    };
    let mut records = Vec::with_capacity(count);
    decode_records(&section, count, &ctx, &mut records)?;

    Ok(RecordBatch {
        base_offset,
        partition_leader_epoch,
        magic,
        crc,
        attributes,
        compression,
        timestamp_type,
        is_transactional: attributes & TRANSACTIONAL_BIT != 0,
        is_control: attributes & CONTROL_BIT != 0,
        has_delete_horizon: attributes & DELETE_HORIZON_BIT != 0,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        records,
    })
}
