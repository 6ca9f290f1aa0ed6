//! The record as a consumer sees it, and the magic 2 record layout (protocol guide "Record",
//! KIP-98): length varint, attributes i8, timestampDelta varlong, offsetDelta varint, key and
//! value as varint-length nullable bytes (-1 is null), then a varint count of headers, each a
//! varint-length UTF-8 key and a varint-length nullable value.
//!
//! Legacy messages (magic 0 and 1) decode into the same [`Record`], with no headers, so a
//! consumer does not care which magic the broker sent.

use bytes::Bytes;

use crate::error::DecodeError;

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
#[inline(always)]
pub(crate) fn varint_len(v: i32) -> usize {
    crate::wire::uvarint_len(((v << 1) ^ (v >> 31)) as u32)
}

/// Bytes a zigzag varlong of `v` takes.
#[inline(always)]
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

/// A read position in a borrowed records section.
///
/// Records are parsed from a plain slice rather than through `wire`'s `Bytes` cursor: it is
/// the hottest loop of a consumer, and a slice index keeps every field read to a bounds check
/// (with a one-byte fast path for varints), touching the `Bytes` reference count only for the
/// key, value and header values handed out. The varint rules are the wire module's: at most 5
/// bytes for 32 bits and 10 for 64, with no bits beyond the type's width.
struct Cursor<'a> {
    /// The current record only (its declared length), so no field can run into the next one.
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn eof(&self, needed: usize) -> DecodeError {
        DecodeError::UnexpectedEof {
            needed,
            remaining: self.data.len() - self.pos,
        }
    }

    #[inline(always)]
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.eof(1)),
        }
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<i32, DecodeError> {
        let v = self.uvarint(5)? as u32;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    #[inline(always)]
    fn varlong(&mut self) -> Result<i64, DecodeError> {
        let v = self.uvarint(10)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// One- and two-byte varints (every length below 16 KiB) inline; longer ones out of line.
    /// The one-byte case needs only one byte left: a record's last field (its header count)
    /// sits at the end of the record's slice.
    #[inline(always)]
    fn uvarint(&mut self, max_bytes: usize) -> Result<u64, DecodeError> {
        if let Some(&b0) = self.data.get(self.pos)
            && b0 < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b0));
        }
        match self.data.get(self.pos..self.pos + 2) {
            Some(&[b0, b1]) if b1 < 0x80 => {
                self.pos += 2;
                Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
            }
            _ => self.uvarint_slow(max_bytes),
        }
    }

    /// Multi-byte varints: `max_bytes` is 5 (32-bit) or 10 (64-bit); the last byte may only
    /// carry the bits the type has left (4 or 1).
    #[inline(never)]
    fn uvarint_slow(&mut self, max_bytes: usize) -> Result<u64, DecodeError> {
        let last_limit = if max_bytes == 5 { 0x0f } else { 0x01 };
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.u8()?;
            if i == max_bytes - 1 && b > last_limit {
                return Err(DecodeError::VarintTooLong { max_bytes });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintTooLong { max_bytes })
    }

    /// A varint length followed by that many bytes, as a slice of `section` (which `data`
    /// borrows from); -1 is null.
    #[inline(always)]
    fn nullable(
        &mut self,
        section: &Bytes,
        what: &'static str,
    ) -> Result<Option<Bytes>, DecodeError> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        match usize::try_from(len) {
            Ok(n) if n <= self.remaining() => {
                let start = self.pos;
                self.pos += n;
                Ok(Some(section.slice(start..start + n)))
            }
            _ => Err(DecodeError::InvalidLength {
                what,
                length: i64::from(len),
                remaining: self.remaining(),
            }),
        }
    }
}

/// How a record failed, before the batch context is attached (kept small so the hot path
/// passes little around).
enum RecordFault {
    Field(DecodeError),
    Length { declared: usize, actual: usize },
}

impl From<DecodeError> for RecordFault {
    fn from(e: DecodeError) -> Self {
        RecordFault::Field(e)
    }
}

/// Decodes the `count` records of an (uncompressed) records section into `out`. The section
/// must hold exactly those records.
pub(crate) fn decode_records(
    section: &Bytes,
    count: usize,
    ctx: &RecordContext,
    out: &mut Vec<Record>,
) -> Result<(), RecordsError> {
    let data: &[u8] = section;
    let mut pos = 0;
    for index in 0..count {
        match decode_one(section, data, pos, ctx, out) {
            Ok(next) => pos = next,
            Err(fault) => return Err(record_error(fault, ctx.base_offset, index)),
        }
    }
    if pos != data.len() {
        return Err(RecordsError::TrailingRecordBytes {
            base_offset: ctx.base_offset,
            remaining: data.len() - pos,
        });
    }
    Ok(())
}

#[cold]
fn record_error(fault: RecordFault, base_offset: i64, index: usize) -> RecordsError {
    match fault {
        RecordFault::Field(source) => RecordsError::InvalidRecord {
            base_offset,
            index,
            source,
        },
        RecordFault::Length { declared, actual } => RecordsError::RecordLengthMismatch {
            base_offset,
            index,
            declared,
            actual,
        },
    }
}

/// Decodes the record at `pos` straight into `out`, returning where the next one starts.
#[inline(always)]
fn decode_one(
    section: &Bytes,
    data: &[u8],
    pos: usize,
    ctx: &RecordContext,
    out: &mut Vec<Record>,
) -> Result<usize, RecordFault> {
    let mut head = Cursor { data, pos };
    let length = head.varint()?;
    let declared = match usize::try_from(length) {
        Ok(n) if n <= head.remaining() => n,
        _ => {
            return Err(RecordFault::Field(DecodeError::InvalidLength {
                what: "record",
                length: i64::from(length),
                remaining: head.remaining(),
            }));
        }
    };
    let start = head.pos;
    let end = start + declared;
    let mut c = Cursor {
        data: &data[..end],
        pos: start,
    };
    let _attributes = c.u8()?;
    let timestamp_delta = c.varlong()?;
    let offset_delta = c.varint()?;
    let key = c.nullable(section, "record key")?;
    let value = c.nullable(section, "record value")?;
    let header_count = c.varint()?;
    let headers = if header_count == 0 {
        Vec::new()
    } else {
        decode_headers(section, &mut c, header_count)?
    };
    if c.pos != end {
        return Err(RecordFault::Length {
            declared,
            actual: c.pos - start,
        });
    }
    out.push(Record {
        offset: ctx.base_offset.wrapping_add(i64::from(offset_delta)),
        timestamp: match ctx.timestamp_override {
            Some(t) => t,
            None => ctx.base_timestamp.wrapping_add(timestamp_delta),
        },
        key,
        value,
        headers,
    });
    Ok(end)
}

/// Out of line: most records carry no headers.
#[inline(never)]
fn decode_headers(
    section: &Bytes,
    c: &mut Cursor<'_>,
    count: i32,
) -> Result<Vec<RecordHeader>, DecodeError> {
    // Each header takes at least two bytes (two one-byte lengths).
    let room = c.remaining();
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
        let key_len = c.varint()?;
        let key_len = match usize::try_from(key_len) {
            Ok(n) if n <= c.remaining() => n,
            _ if key_len == -1 => {
                return Err(DecodeError::NullNotAllowed {
                    field: "header key",
                    version: 2,
                });
            }
            _ => {
                return Err(DecodeError::InvalidLength {
                    what: "header key",
                    length: i64::from(key_len),
                    remaining: c.remaining(),
                });
            }
        };
        let raw = &c.data[c.pos..c.pos + key_len];
        c.pos += key_len;
        let key = match std::str::from_utf8(raw) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                return Err(DecodeError::InvalidUtf8 {
                    field: "header key",
                });
            }
        };
        let value = c.nullable(section, "header value")?;
        headers.push(RecordHeader { key, value });
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{put_varint, put_varlong};
    use bytes::BytesMut;

    /// The slice cursor must accept and reject exactly what the wire module's decoders do.
    #[test]
    fn cursor_varints_agree_with_wire() {
        use crate::wire::{get_varint, get_varlong};
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x80],
            vec![0xff; 5],
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![0xff, 0xff, 0xff, 0xff, 0x10],
            vec![0xff; 10],
            [vec![0xff; 9], vec![0x01]].concat(),
            [vec![0xff; 9], vec![0x02]].concat(),
            vec![0x80, 0x00],
            vec![0xac, 0x02],
        ];
        // A cheap deterministic spread of byte strings, biased towards continuation bits.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 12) as usize;
            inputs.push(
                (0..len)
                    .map(|i| ((x >> (i * 5)) as u8) | if i + 1 < len { 0x80 } else { 0 })
                    .collect(),
            );
        }
        for input in inputs {
            let mut c = Cursor {
                data: &input,
                pos: 0,
            };
            let mut b = Bytes::from(input.clone());
            let ours = c.varint();
            assert_eq!(ours, get_varint(&mut b), "{input:?}");
            if ours.is_ok() {
                assert_eq!(c.pos, input.len() - b.len(), "{input:?}");
            }
            let mut c = Cursor {
                data: &input,
                pos: 0,
            };
            let mut b = Bytes::from(input.clone());
            let ours = c.varlong();
            assert_eq!(ours, get_varlong(&mut b), "{input:?}");
            if ours.is_ok() {
                assert_eq!(c.pos, input.len() - b.len(), "{input:?}");
            }
        }
    }

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
