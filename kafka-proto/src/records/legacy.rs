//! Legacy message sets, magic 0 and 1 (protocol guide "Message Sets"; KIP-32 added the v1
//! timestamp and timestamp type, KIP-31 the relative offsets of compressed inner messages).
//! Decode only: brokers since 0.11 down-convert for old consumers and accept v2 from producers,
//! but a log written by old clients can still reach a new consumer in these formats.
//!
//! ```text
//! offset: int64
//! message_size: int32
//! crc: uint32          -- CRC32 (IEEE) of magic..end
//! magic: int8          -- 0 or 1
//! attributes: int8     -- bits 0-2 codec, bit 3 timestamp type (v1)
//! timestamp: int64     -- v1 only
//! key: bytes           -- int32 length, -1 = null
//! value: bytes         -- for a compressed wrapper: the compressed inner message set
//! ```
//!
//! A compressed wrapper's inner offsets are absolute with magic 0. With magic 1 they are
//! relative (0, 1, ...) and the wrapper carries the absolute offset of the *last* inner
//! message, so inner message `i` sits at `wrapper_offset - last_relative + relative_i`. With
//! log-append time the wrapper's timestamp applies to every inner message.

use bytes::{Buf, Bytes};

use crate::compression::{self, Compression};
use crate::error::DecodeError;
use crate::wire::{get_i8, get_i32, get_i64, get_nullable_bytes, get_u32};

use super::batch::MAGIC_OFFSET;
use super::{DecodeOptions, Record, RecordBatch, RecordsError, TimestampType};

/// crc + magic + attributes + key length + value length.
pub(crate) const V0_MIN_MESSAGE_SIZE: usize = 14;
/// The v0 minimum plus the timestamp.
pub(crate) const V1_MIN_MESSAGE_SIZE: usize = 22;
const TIMESTAMP_TYPE_BIT: i8 = 0x08;

/// One parsed message, before offsets and timestamps are resolved against a wrapper.
struct Message {
    offset: i64,
    crc: u32,
    magic: i8,
    attributes: i8,
    /// -1 for magic 0.
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

impl Message {
    fn compression_id(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }

    fn timestamp_type(&self) -> TimestampType {
        if self.magic >= 1 && self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// Parses one whole entry (`offset`, `message_size`, message), `entry` being exactly
/// `LOG_OVERHEAD + message_size` bytes.
fn parse_message(entry: Bytes, options: &DecodeOptions) -> Result<Message, RecordsError> {
    let mut buf = entry.clone();
    let offset = get_i64(&mut buf).map_err(|source| RecordsError::Malformed {
        base_offset: -1,
        source,
    })?;
    let malformed = |source| RecordsError::Malformed {
        base_offset: offset,
        source,
    };
    let _message_size = get_i32(&mut buf).map_err(malformed)?;
    let crc = get_u32(&mut buf).map_err(malformed)?;
    if options.verify_crc {
        let computed = crc32fast::hash(entry.get(MAGIC_OFFSET..).unwrap_or_default());
        if computed != crc {
            return Err(RecordsError::CrcMismatch {
                base_offset: offset,
                expected: crc,
                computed,
            });
        }
    }
    let magic = get_i8(&mut buf).map_err(malformed)?;
    if !(0..=1).contains(&magic) {
        return Err(RecordsError::UnsupportedMagic {
            base_offset: offset,
            magic,
        });
    }
    let attributes = get_i8(&mut buf).map_err(malformed)?;
    let timestamp = if magic == 1 {
        get_i64(&mut buf).map_err(malformed)?
    } else {
        -1
    };
    let key = get_nullable_bytes(&mut buf, false).map_err(malformed)?;
    let value = get_nullable_bytes(&mut buf, false).map_err(malformed)?;
    if !buf.is_empty() {
        return Err(malformed(DecodeError::TrailingBytes {
            message: "legacy message",
            remaining: buf.remaining(),
        }));
    }
    Ok(Message {
        offset,
        crc,
        magic,
        attributes,
        timestamp,
        key,
        value,
    })
}

/// Decodes one top-level legacy entry into a batch.
pub(crate) fn decode_legacy(
    entry: Bytes,
    options: &DecodeOptions,
) -> Result<RecordBatch, RecordsError> {
    let wrapper = parse_message(entry, options)?;
    let timestamp_type = wrapper.timestamp_type();
    let codec_id = wrapper.compression_id();
    // zstd (and anything above) needs magic 2 (KIP-110).
    let compression = Compression::from_id(codec_id)
        .filter(|c| *c != Compression::Zstd)
        .ok_or(RecordsError::UnknownCompression {
            base_offset: wrapper.offset,
            codec: codec_id,
            magic: wrapper.magic,
        })?;

    let records = if compression == Compression::None {
        vec![Record {
            offset: wrapper.offset,
            timestamp: wrapper.timestamp,
            key: wrapper.key.clone(),
            value: wrapper.value.clone(),
            headers: Vec::new(),
        }]
    } else {
        decode_wrapped(&wrapper, compression, options)?
    };

    let (first, last) = match (records.first(), records.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => {
            return Err(RecordsError::EmptyWrapper {
                offset: wrapper.offset,
            });
        }
    };
    let span = last.offset.wrapping_sub(first.offset);
    Ok(RecordBatch {
        base_offset: first.offset,
        partition_leader_epoch: -1,
        magic: wrapper.magic,
        crc: wrapper.crc,
        attributes: i16::from(wrapper.attributes as u8),
        compression,
        timestamp_type,
        is_transactional: false,
        is_control: false,
        has_delete_horizon: false,
        last_offset_delta: i32::try_from(span).unwrap_or(i32::MAX),
        base_timestamp: first.timestamp,
        max_timestamp: wrapper.timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records,
    })
}

/// Decompresses a wrapper's value and resolves its inner messages' offsets and timestamps.
fn decode_wrapped(
    wrapper: &Message,
    compression: Compression,
    options: &DecodeOptions,
) -> Result<Vec<Record>, RecordsError> {
    let Some(compressed) = &wrapper.value else {
        return Err(RecordsError::EmptyWrapper {
            offset: wrapper.offset,
        });
    };
    let mut inner = compression::decompress(compression, compressed, options.max_decompressed_size)
        .map(Bytes::from)
        .map_err(|source| RecordsError::Decompression {
            base_offset: wrapper.offset,
            source,
        })?;

    let mut records = Vec::new();
    while !inner.is_empty() {
        // Inside a checksummed wrapper a short entry is corruption, not a fetch cut.
        let entry = match super::batch::split_batch(&mut inner)? {
            super::batch::Split::Batch { bytes, .. } => bytes,
            super::batch::Split::Truncated { needed } => {
                return Err(RecordsError::Malformed {
                    base_offset: wrapper.offset,
                    source: DecodeError::UnexpectedEof {
                        needed,
                        remaining: inner.len(),
                    },
                });
            }
            super::batch::Split::End => break,
        };
        let message = parse_message(entry, options)?;
        if message.compression_id() != 0 {
            return Err(RecordsError::NestedCompression {
                offset: wrapper.offset,
            });
        }
        let timestamp =
            if wrapper.magic >= 1 && wrapper.timestamp_type() == TimestampType::LogAppendTime {
                wrapper.timestamp
            } else {
                message.timestamp
            };
        records.push(Record {
            offset: message.offset,
            timestamp,
            key: message.key,
            value: message.value,
            headers: Vec::new(),
        });
    }

    if wrapper.magic >= 1
        && let Some(last_relative) = records.last().map(|r| r.offset)
    {
        let base = wrapper.offset.wrapping_sub(last_relative);
        for record in &mut records {
            record.offset = base.wrapping_add(record.offset);
        }
    }
    Ok(records)
}
