//! Building record batch v2 (KIP-98; protocol guide "Record Batch") one record at a time.
//!
//! A producer appends records as they arrive and must know, before each append, whether the
//! batch is full. So the encoder writes each record straight into the caller's buffer in its
//! final wire form, leaving room for the 61-byte header, and fills in the header, the length
//! and the CRC32C only in [`BatchEncoder::finish`]. Each record's length is computed up front
//! from the field sizes so the record is written in a single pass, without a temporary buffer
//! and without any allocation beyond the (amortised) growth of the output buffer.
//!
//! [`BatchEncoder`] borrows a caller's buffer (batches laid end to end, one buffer reused);
//! [`BatchBuilder`] owns its buffer, for a producer holding an open batch per partition.
//! Both share one record writer and one header writer. [`restamp_producer`] rewrites the
//! idempotence fields of a finished batch.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::compression::{self, Compression};

use super::batch::{
    ATTRIBUTES_OFFSET, CONTROL_BIT, CRC_OFFSET, DELETE_HORIZON_BIT, LOG_OVERHEAD, MAGIC_OFFSET,
    TIMESTAMP_TYPE_BIT, TRANSACTIONAL_BIT, V2_HEADER_SIZE,
};
use super::record::{varint_len, varlong_len};
use super::{ControlRecord, RecordHeader, RecordsEncodeError, TimestampType};

/// The header fields of a batch being built. The defaults are those of a non-idempotent,
/// non-transactional producer: no producer id, epoch or sequence (-1), unknown leader epoch
/// (-1), no compression, create time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchParams {
    pub base_offset: i64,
    /// Timestamps are stored as deltas from this. `None` uses the first record's timestamp,
    /// as the Java producer does, which keeps the deltas (and so the varints) small.
    pub base_timestamp: Option<i64>,
    /// Overrides the batch's maxTimestamp, which is otherwise the largest record timestamp.
    /// With [`TimestampType::LogAppendTime`] this is the append time that readers report as
    /// every record's timestamp.
    pub max_timestamp: Option<i64>,
    pub partition_leader_epoch: i32,
    pub compression: Compression,
    pub timestamp_type: TimestampType,
    pub is_transactional: bool,
    pub is_control: bool,
    pub has_delete_horizon: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Default for BatchParams {
    fn default() -> Self {
        BatchParams {
            base_offset: 0,
            base_timestamp: None,
            max_timestamp: None,
            partition_leader_epoch: -1,
            compression: Compression::None,
            timestamp_type: TimestampType::CreateTime,
            is_transactional: false,
            is_control: false,
            has_delete_horizon: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

impl BatchParams {
    /// The attributes field these parameters encode to.
    pub fn attributes(&self) -> i16 {
        let mut attributes = i16::from(self.compression.id());
        if self.timestamp_type == TimestampType::LogAppendTime {
            attributes |= TIMESTAMP_TYPE_BIT;
        }
        if self.is_transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        if self.is_control {
            attributes |= CONTROL_BIT;
        }
        if self.has_delete_horizon {
            attributes |= DELETE_HORIZON_BIT;
        }
        attributes
    }
}

/// Largest `batchLength`; the whole batch is this plus [`LOG_OVERHEAD`].
const MAX_BATCH_LENGTH: usize = i32::MAX as usize;

/// Writes one record into its exactly-sized slot of the output buffer. The slot's size comes
/// from [`body_size`], so every write lands in bounds; the proptests hold `record_size` to the
/// bytes actually written.
struct Writer<'o> {
    out: &'o mut [u8],
    pos: usize,
}

impl Writer<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.out[self.pos] = b;
        self.pos += 1;
    }

    #[inline(always)]
    fn uvarlong(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline(always)]
    fn varint(&mut self, v: i32) {
        self.uvarlong(u64::from(((v << 1) ^ (v >> 31)) as u32));
    }

    #[inline(always)]
    fn varlong(&mut self, v: i64) {
        self.uvarlong(((v << 1) ^ (v >> 63)) as u64);
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    /// A varint length (-1, zigzagged to 1, for null) and the field.
    #[inline(always)]
    fn nullable(&mut self, field: Option<&[u8]>) {
        match field {
            None => self.byte(1),
            Some(b) => {
                self.varint(b.len() as i32);
                self.bytes(b);
            }
        }
    }
}

/// Length prefix plus payload of a nullable varint-length field.
#[inline]
fn nullable_size(field: Option<&[u8]>) -> usize {
    match field {
        None => 1,
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

#[inline]
fn check_len(field: &'static str, len: usize) -> Result<(), RecordsEncodeError> {
    if len > i32::MAX as usize {
        Err(RecordsEncodeError::TooLong { field, len })
    } else {
        Ok(())
    }
}

/// One record header as the encoders read it. The encoders take any slice of headers the
/// caller already holds (tuples, decoded [`RecordHeader`]s, a producer's own header type), so
/// nobody has to build a temporary slice of tuples for every record.
pub trait HeaderRef {
    fn key(&self) -> &str;
    fn value(&self) -> Option<&[u8]>;
}

impl HeaderRef for (&str, Option<&[u8]>) {
    #[inline]
    fn key(&self) -> &str {
        self.0
    }

    #[inline]
    fn value(&self) -> Option<&[u8]> {
        self.1
    }
}

impl HeaderRef for RecordHeader {
    #[inline]
    fn key(&self) -> &str {
        &self.key
    }

    #[inline]
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

/// An empty header list with a concrete type, for [`BatchBuilder::append`] calls that pass no
/// headers (a bare `&[]` leaves the header type unknown).
pub const NO_HEADERS: &[(&str, Option<&[u8]>)] = &[];

/// What both encoders track while records are appended: everything the header needs that is
/// only known once the records are in.
#[derive(Debug, Clone, Copy)]
struct Progress {
    base_timestamp: Option<i64>,
    max_timestamp: Option<i64>,
    count: i32,
}

impl Progress {
    fn new(base_timestamp: Option<i64>) -> Self {
        Progress {
            base_timestamp,
            max_timestamp: None,
            count: 0,
        }
    }

    fn record_size<H: HeaderRef>(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
    ) -> usize {
        let base = self.base_timestamp.unwrap_or(timestamp);
        let headers = if headers.is_empty() {
            1
        } else {
            headers_size(headers).unwrap_or(usize::MAX)
        };
        let body = body_size(
            timestamp.wrapping_sub(base),
            self.count,
            key,
            value,
            headers,
        );
        varint_len(body.min(i32::MAX as usize) as i32).saturating_add(body)
    }

    /// Writes one record at the end of `buf`, whose batch started at `start`.
    #[inline]
    fn append<H: HeaderRef>(
        &mut self,
        buf: &mut BytesMut,
        start: usize,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
    ) -> Result<(), RecordsEncodeError> {
        if self.count == i32::MAX {
            return Err(RecordsEncodeError::TooManyRecords);
        }
        check_len("record key", key.map_or(0, <[u8]>::len))?;
        check_len("record value", value.map_or(0, <[u8]>::len))?;
        let headers_size = if headers.is_empty() {
            1
        } else {
            headers_size(headers)?
        };

        // The first record sets the base (unless given), but only once it is accepted.
        let base = self.base_timestamp.unwrap_or(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(base);
        let offset_delta = self.count;
        let body = body_size(timestamp_delta, offset_delta, key, value, headers_size);
        check_len("record", body)?;
        let total = varint_len(body as i32) + body;
        let batch_len = buf.len() - start - LOG_OVERHEAD + total;
        if batch_len > MAX_BATCH_LENGTH {
            return Err(RecordsEncodeError::BatchTooLarge {
                len: batch_len + LOG_OVERHEAD,
            });
        }

        // One resize, then plain stores: cheaper than a capacity check per field.
        let at = buf.len();
        buf.resize(at + total, 0);
        let mut w = Writer {
            out: &mut buf[at..],
            pos: 0,
        };
        w.varint(body as i32);
        w.byte(0); // record attributes: unused
        w.varlong(timestamp_delta);
        w.varint(offset_delta);
        w.nullable(key);
        w.nullable(value);
        w.varint(headers.len() as i32);
        for h in headers {
            let k = h.key();
            w.varint(k.len() as i32);
            w.bytes(k.as_bytes());
            w.nullable(h.value());
        }
        debug_assert_eq!(w.pos, total);

        self.base_timestamp = Some(base);
        self.count += 1;
        self.max_timestamp = Some(self.max_timestamp.map_or(timestamp, |m| m.max(timestamp)));
        Ok(())
    }

    /// Compresses the records after `start`'s header if asked, then writes the header and
    /// the CRC. Returns where the finished batch lies in `buf`.
    fn complete(
        &self,
        buf: &mut BytesMut,
        start: usize,
        params: &BatchParams,
        scratch: Option<&mut Vec<u8>>,
    ) -> Result<Range<usize>, RecordsEncodeError> {
        let records_at = start + V2_HEADER_SIZE;
        let codec = params.compression;
        if codec != Compression::None {
            let mut local = Vec::new();
            let scratch = scratch.unwrap_or(&mut local);
            scratch.clear();
            compression::compress(codec, &buf[records_at..], scratch)?;
            buf.truncate(records_at);
            buf.extend_from_slice(scratch);
        }
        let batch_length = buf.len() - start - LOG_OVERHEAD;
        if batch_length > MAX_BATCH_LENGTH {
            return Err(RecordsEncodeError::BatchTooLarge {
                len: batch_length + LOG_OVERHEAD,
            });
        }

        let p = params;
        let base_timestamp = self.base_timestamp.unwrap_or(-1);
        let max_timestamp = p.max_timestamp.or(self.max_timestamp).unwrap_or(-1);
        let last_offset_delta = (self.count - 1).max(0);
        let mut header = [0u8; V2_HEADER_SIZE];
        let mut at = 0;
        let mut put = |field: &[u8]| {
            header[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        };
        put(&p.base_offset.to_be_bytes());
        put(&(batch_length as i32).to_be_bytes());
        put(&p.partition_leader_epoch.to_be_bytes());
        put(&[2]); // magic
        put(&[0; 4]); // crc, filled below
        put(&p.attributes().to_be_bytes());
        put(&last_offset_delta.to_be_bytes());
        put(&base_timestamp.to_be_bytes());
        put(&max_timestamp.to_be_bytes());
        put(&p.producer_id.to_be_bytes());
        put(&p.producer_epoch.to_be_bytes());
        put(&p.base_sequence.to_be_bytes());
        put(&self.count.to_be_bytes());
        let batch = &mut buf[start..];
        batch[..V2_HEADER_SIZE].copy_from_slice(&header);
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(start..buf.len())
    }
}

/// Appends one record batch (magic 2) to a buffer. Dropping the encoder without finishing
/// removes the partial batch from the buffer.
///
/// ```
/// # use bytes::BytesMut;
/// # use kafka_proto::records::{BatchEncoder, BatchParams, DecodeOptions, decode_records};
/// let mut buf = BytesMut::new();
/// let mut batch = BatchEncoder::new(&mut buf, BatchParams { base_offset: 100, ..Default::default() });
/// batch.append(1_700_000_000_000, Some(b"key"), Some(b"value"), &[("trace", Some(b"abc"))]).unwrap();
/// let bytes = batch.finish().unwrap();
/// let decoded = decode_records(bytes, &DecodeOptions::default()).unwrap();
/// assert_eq!(decoded.batches[0].records[0].offset, 100);
/// ```
pub struct BatchEncoder<'a> {
    buf: &'a mut BytesMut,
    scratch: Option<&'a mut Vec<u8>>,
    /// Where this batch's header starts in `buf`.
    start: usize,
    params: BatchParams,
    progress: Progress,
    finished: bool,
}

impl<'a> BatchEncoder<'a> {
    /// Starts a batch at the end of `buf`. Pass the same (emptied) buffer batch after batch:
    /// [`finish`](Self::finish) leaves its spare capacity behind for the next one.
    pub fn new(buf: &'a mut BytesMut, params: BatchParams) -> Self {
        let start = buf.len();
        buf.resize(start + V2_HEADER_SIZE, 0);
        BatchEncoder {
            buf,
            scratch: None,
            start,
            params,
            progress: Progress::new(params.base_timestamp),
            finished: false,
        }
    }

    /// Like [`new`](Self::new), but compresses through `scratch`, so a producer compressing
    /// many batches reuses one compression buffer instead of allocating one per batch.
    pub fn with_scratch(
        buf: &'a mut BytesMut,
        scratch: &'a mut Vec<u8>,
        params: BatchParams,
    ) -> Self {
        let mut encoder = BatchEncoder::new(buf, params);
        encoder.scratch = Some(scratch);
        encoder
    }

    pub fn params(&self) -> &BatchParams {
        &self.params
    }

    /// Bytes of the batch so far, header included, before compression: what the batch would
    /// take uncompressed if finished now. For a compressed batch it is an upper bound (bar
    /// incompressible data) usable against `batch.size`.
    pub fn encoded_len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn record_count(&self) -> usize {
        self.progress.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.progress.count == 0
    }

    /// Bytes [`append`](Self::append) would add for this record, so a caller can check a
    /// size limit before appending.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        self.progress.record_size(timestamp, key, value, headers)
    }

    /// Appends a record at the next offset (`base_offset + record_count()`).
    #[inline]
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<(), RecordsEncodeError> {
        self.progress
            .append(self.buf, self.start, timestamp, key, value, headers)
    }

    /// Appends a control record (a transaction marker, KIP-98). The batch should have been
    /// started with `is_control` (and normally `is_transactional`) set.
    pub fn append_control(
        &mut self,
        timestamp: i64,
        control: &ControlRecord,
    ) -> Result<(), RecordsEncodeError> {
        let value = control.value_bytes();
        self.append(
            timestamp,
            Some(&control.key_bytes()),
            value.as_ref().map(|v| &v[..]),
            &[],
        )
    }

    /// Completes the batch and splits it off the buffer.
    pub fn finish(mut self) -> Result<Bytes, RecordsEncodeError> {
        let range = self.complete()?;
        Ok(if range.start == 0 {
            // Keeps the buffer's spare capacity with the caller for the next batch.
            self.buf.split().freeze()
        } else {
            self.buf.split_off(range.start).freeze()
        })
    }

    /// Completes the batch and leaves it in the buffer, returning where it lies; for callers
    /// that lay several batches end to end in one `records` field.
    pub fn finish_in_place(mut self) -> Result<Range<usize>, RecordsEncodeError> {
        self.complete()
    }

    fn complete(&mut self) -> Result<Range<usize>, RecordsEncodeError> {
        let range = self.progress.complete(
            self.buf,
            self.start,
            &self.params,
            self.scratch.as_deref_mut(),
        )?;
        self.finished = true;
        Ok(range)
    }
}

impl Drop for BatchEncoder<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.buf.truncate(self.start);
        }
    }
}

/// A record batch that owns its buffer, for a producer that keeps one open batch per
/// partition (a [`BatchEncoder`] borrows its buffer, so many of them cannot live side by side
/// in one accumulator).
///
/// Records are written in their final form as they arrive, exactly as with [`BatchEncoder`].
/// The buffer never grows behind the caller's back beyond what one `append` needs, and
/// [`reserve`](Self::reserve) lets the caller grow it in steps it has accounted for, so a
/// producer can bound its memory by real allocations. The producer id, epoch and base
/// sequence are usually only known when the batch is sent, hence
/// [`set_producer`](Self::set_producer) before [`finish`](Self::finish).
///
/// ```
/// # use kafka_proto::records::{BatchBuilder, BatchParams, DecodeOptions, NO_HEADERS, decode_records};
/// let mut batch = BatchBuilder::new(BatchParams::default(), 4096);
/// batch.append(1_700_000_000_000, Some(b"k"), Some(b"v"), NO_HEADERS).unwrap();
/// batch.set_producer(7, 0, 42);
/// let decoded = decode_records(batch.finish(None).unwrap(), &DecodeOptions::default()).unwrap();
/// assert_eq!(decoded.batches[0].base_sequence, 42);
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: BytesMut,
    params: BatchParams,
    progress: Progress,
}

impl BatchBuilder {
    /// An empty batch whose buffer can take `capacity` bytes (header included) before it has
    /// to grow.
    pub fn new(params: BatchParams, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(V2_HEADER_SIZE));
        buf.resize(V2_HEADER_SIZE, 0);
        BatchBuilder {
            buf,
            params,
            progress: Progress::new(params.base_timestamp),
        }
    }

    pub fn params(&self) -> &BatchParams {
        &self.params
    }

    /// Sets the idempotent producer's fields of the header.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.params.producer_id = producer_id;
        self.params.producer_epoch = producer_epoch;
        self.params.base_sequence = base_sequence;
    }

    /// Bytes of the batch so far, header included, before compression.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the buffer holds allocated, used or not.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes that can still be appended without the buffer growing.
    pub fn spare_capacity(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Makes room for at least `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    pub fn record_count(&self) -> usize {
        self.progress.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.progress.count == 0
    }

    /// Bytes [`append`](Self::append) would add for this record.
    pub fn record_size<H: HeaderRef>(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
    ) -> usize {
        self.progress.record_size(timestamp, key, value, headers)
    }

    /// Appends a record at the next offset. On error nothing was written.
    #[inline]
    pub fn append<H: HeaderRef>(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
    ) -> Result<(), RecordsEncodeError> {
        self.progress
            .append(&mut self.buf, 0, timestamp, key, value, headers)
    }

    /// Compresses (through `scratch` if given, so one buffer serves many batches), writes the
    /// header and CRC, and returns the batch. The allocation moves into the returned bytes.
    pub fn finish(mut self, scratch: Option<&mut Vec<u8>>) -> Result<Bytes, RecordsEncodeError> {
        self.progress
            .complete(&mut self.buf, 0, &self.params, scratch)?;
        Ok(self.buf.freeze())
    }
}

/// Offset of the producer id in a v2 batch header; the epoch and base sequence follow it.
const PRODUCER_ID_OFFSET: usize = 43;

/// Rewrites the producer id, epoch and base sequence of one finished v2 batch and updates its
/// CRC. An idempotent producer that must start a partition's sequence afresh (a new producer
/// id after the broker lost its state) re-stamps batches it already built instead of
/// rebuilding them; compressed records are untouched because the header is not compressed.
pub fn restamp_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), RecordsEncodeError> {
    if batch.len() < V2_HEADER_SIZE || batch[MAGIC_OFFSET] != 2 {
        return Err(RecordsEncodeError::NotABatch);
    }
    let at = PRODUCER_ID_OFFSET;
    batch[at..at + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[at + 8..at + 10].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[at + 10..at + 14].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Size of a record after its length prefix, given the size of its headers section.
#[inline(always)]
fn body_size(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers_size: usize,
) -> usize {
    (1 // attributes
        + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + nullable_size(key)
        + nullable_size(value))
    .saturating_add(headers_size)
}

/// Size of the headers section (count included), once every length is known to fit its
/// varint. Out of line: most records have no headers.
#[inline(never)]
fn headers_size<H: HeaderRef>(headers: &[H]) -> Result<usize, RecordsEncodeError> {
    check_len("record headers", headers.len())?;
    let mut size = varint_len(headers.len() as i32);
    for h in headers {
        let (k, v) = (h.key(), h.value());
        check_len("header key", k.len())?;
        check_len("header value", v.map_or(0, <[u8]>::len))?;
        size = size
            .saturating_add(varint_len(k.len() as i32) + k.len())
            .saturating_add(nullable_size(v));
    }
    Ok(size)
}
