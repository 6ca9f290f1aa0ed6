//! The record as a consumer sees it, and the magic 2 record layout (protocol guide "Record",
//! KIP-98): length varint, attributes i8, timestampDelta varlong, offsetDelta varint, key and
//! value as varint-length nullable bytes (-1 is null), then a varint count of headers, each a
//! varint-length UTF-8 key and a varint-length nullable value.
//!
//! Legacy messages (magic 0 and 1) decode into the same [`Record`], with no headers, so a
//! consumer does not care which magic the broker sent.

use bytes::{Buf, Bytes};

use crate::error::DecodeError;
use crate::wire::{get_i8, get_varint, get_varlong};

use super::RecordsError;

/// One record with its offset and timestamp already resolved against its batch: `offset` is
/// absolute, and `timestamp` is the batch's `maxTimestamp` when the batch uses log-append time.
/// Keys, values and header values are slices of the fetched (or decompressed) buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset: i64,
    /// Milliseconds since the epoch, or -1 for magic 0 messages, which carry none.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Empty (and unallocated) for records without headers and for legacy messages.
    pub headers: Vec<RecordHeader>,
}

/// A record header (KIP-82). Keys are strings; values may be null.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

impl RecordHeader {
    pub fn new(key: impl Into<String>, value: Option<Bytes>) -> Self {
        RecordHeader {
            key: key.into(),
            value,
        }
    }
}

/// Bytes a zigzag varint of `v` takes.
#[inline]
pub(crate) fn varint_len(v: i32) -> usize {
    crate::wire::uvarint_len(((v << 1) ^ (v >> 31)) as u32)
}

/// Bytes a zigzag varlong of `v` takes.
#[inline]
pub(crate) fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// The smallest possible record: a one-byte length and six one-byte fields (attributes, both
/// deltas, null key, null value, zero headers). Bounds how many records a buffer can hold.
pub(crate) const MIN_RECORD_SIZE: usize = 7;

/// Per-batch context every record needs to resolve its offset and timestamp.
#[derive(Clone, Copy)]
pub(crate) struct RecordContext {
    pub base_offset: i64,
    pub base_timestamp: i64,
    /// Set for log-append-time batches: every record's timestamp is the batch's maxTimestamp.
    pub timestamp_override: Option<i64>,
}

/// Reads a varint length for a nullable field; `None` for -1, an error for other negatives or
/// for lengths past `limit` (the bytes left in the record).
#[inline]
fn get_len(
    buf: &mut Bytes,
    limit: usize,
    what: &'static str,
) -> Result<Option<usize>, DecodeError> {
    let len = get_varint(buf)?;
    if len == -1 {
        return Ok(None);
    }
    match usize::try_from(len) {
        Ok(n) if n <= limit => Ok(Some(n)),
        _ => Err(DecodeError::InvalidLength {
            what,
            length: i64::from(len),
            remaining: limit,
        }),
    }
}

/// Bytes of the current record still unread, given that the record ends where `buf` will
/// have `end_remaining` bytes left. An earlier field that ran past the record's end (a varint
/// straying into the next record) shows up here as an error rather than a misparse.
#[inline]
fn left(buf: &Bytes, end_remaining: usize) -> Result<usize, DecodeError> {
    buf.remaining()
        .checked_sub(end_remaining)
        .ok_or_else(|| DecodeError::UnexpectedEof {
            needed: end_remaining - buf.remaining(),
            remaining: 0,
        })
}

/// Decodes record `index` from the front of `buf`, which holds the rest of the batch's
/// (uncompressed) records section. Fields are parsed in place, without first splitting the
/// record off, to save a reference-count round trip per record.
#[inline]
pub(crate) fn decode_record(
    buf: &mut Bytes,
    index: usize,
    ctx: &RecordContext,
) -> Result<Record, RecordsError> {
    let invalid = |source| RecordsError::InvalidRecord {
        base_offset: ctx.base_offset,
        index,
        source,
    };
    let length = get_varint(buf).map_err(invalid)?;
    let declared = match usize::try_from(length) {
        Ok(n) if n <= buf.remaining() => n,
        _ => {
            return Err(invalid(DecodeError::InvalidLength {
                what: "record",
                length: i64::from(length),
                remaining: buf.remaining(),
            }));
        }
    };
    let end = buf.remaining() - declared;
    let record = decode_body(buf, end, ctx).map_err(invalid)?;
    if buf.remaining() != end {
        return Err(RecordsError::RecordLengthMismatch {
            base_offset: ctx.base_offset,
            index,
            declared,
            actual: declared.wrapping_add(end).wrapping_sub(buf.remaining()),
        });
    }
    Ok(record)
}

#[inline]
fn decode_body(buf: &mut Bytes, end: usize, ctx: &RecordContext) -> Result<Record, DecodeError> {
    let _attributes = get_i8(buf)?;
    let timestamp_delta = get_varlong(buf)?;
    let offset_delta = get_varint(buf)?;
    let key = get_len(buf, left(buf, end)?, "record key")?.map(|n| buf.split_to(n));
    let value = get_len(buf, left(buf, end)?, "record value")?.map(|n| buf.split_to(n));
    let count = get_varint(buf)?;
    let headers = if count == 0 {
        Vec::new()
    } else {
        // Each header takes at least two bytes (two one-byte lengths).
        let room = left(buf, end)?;
        let count = match usize::try_from(count) {
            Ok(n) if n <= room / 2 => n,
            _ => {
                return Err(DecodeError::InvalidLength {
                    what: "record headers",
                    length: i64::from(count),
                    remaining: room,
                });
            }
        };
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            headers.push(decode_header(buf, end)?);
        }
        headers
    };
    Ok(Record {
        offset: ctx.base_offset.wrapping_add(i64::from(offset_delta)),
        timestamp: ctx
            .timestamp_override
            .unwrap_or_else(|| ctx.base_timestamp.wrapping_add(timestamp_delta)),
        key,
        value,
        headers,
    })
}

fn decode_header(buf: &mut Bytes, end: usize) -> Result<RecordHeader, DecodeError> {
    let key_len =
        get_len(buf, left(buf, end)?, "header key")?.ok_or(DecodeError::NullNotAllowed {
            field: "header key",
            version: 2,
        })?;
    let raw = buf.split_to(key_len);
    let key = match std::str::from_utf8(&raw) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            return Err(DecodeError::InvalidUtf8 {
                field: "header key",
            });
        }
    };
    let value = get_len(buf, left(buf, end)?, "header value")?.map(|n| buf.split_to(n));
    Ok(RecordHeader { key, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{put_varint, put_varlong};
    use bytes::BytesMut;

    #[test]
    fn varint_lengths_match_the_writers() {
        for v in [
            0i32,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            8192,
            i32::MAX,
            i32::MIN,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -65,
            1 << 35,
            -(1 << 35),
            i64::MAX,
            i64::MIN,
        ] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v), "{v}");
        }
    }
}
