//! Decodes arbitrary bytes as a `records` blob, with CRC checks off so the fuzzer gets past the
//! checksum to the decompressors and the record parser. Must never panic, and whatever decodes
//! must re-encode through `BatchEncoder` and decode back (CRC on) to the same records.
//!
//! Every input is used twice:
//! - raw: the whole input is the blob (any magic, any header);
//! - wrapped: `[attributes, mode, count_hi, count_lo, payload..]` becomes one syntactically
//!   valid v2 batch whose attribute byte (low 3 bits: the codec) and record count come from the
//!   input. With `mode & 1` clear the payload is the records section as stored (compressed by
//!   the fuzzer for a compressed codec); with it set the payload is a plain records section that
//!   is compressed here, and decoding it must match decoding the same section uncompressed.
//!   `mode & 2` puts the base offset near `i64::MAX`, `mode & 4` the base timestamp near
//!   `i64::MIN`, so the wrapping offset and timestamp arithmetic is exercised too.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_proto::compression::{self, Compression};
use kafka_proto::records::{
    BatchEncoder, BatchParams, ControlRecord, DecodeOptions, DecodedRecords, LOG_OVERHEAD, Record,
    RecordBatch, RecordsError, TimestampType, V2_HEADER_SIZE, decode_records,
};
use libfuzzer_sys::fuzz_target;

/// Small enough that a decompression bomb cannot run the fuzzer out of memory.
const CAP: usize = 1 << 20;

fn fuzz_options() -> DecodeOptions {
    DecodeOptions::default()
        .with_verify_crc(false)
        .with_max_decompressed_size(CAP)
}

/// A v2 batch around `section`, with a zero CRC (the decode skips the check).
fn wrap(
    attributes: i16,
    count: i32,
    base_offset: i64,
    base_timestamp: i64,
    section: &[u8],
) -> Bytes {
    let mut b = Vec::with_capacity(V2_HEADER_SIZE + section.len());
    b.extend_from_slice(&base_offset.to_be_bytes());
    let batch_length = (V2_HEADER_SIZE - LOG_OVERHEAD + section.len()) as i32;
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&5i32.to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(count - 1).max(0).to_be_bytes()); // last offset delta
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&base_timestamp.wrapping_add(1000).to_be_bytes()); // max timestamp
    b.extend_from_slice(&42i64.to_be_bytes()); // producer id
    b.extend_from_slice(&3i16.to_be_bytes()); // producer epoch
    b.extend_from_slice(&17i32.to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(section);
    debug_assert_eq!(b.len(), LOG_OVERHEAD + batch_length as usize);
    Bytes::from(b)
}

/// Re-encodes `run` (records at consecutive offsets) as one v2 batch carrying `batch`'s
/// producer fields and codec, decodes it with CRC verification, and checks it reads back the same.
fn reencode(batch: &RecordBatch, run: &[Record], buf: &mut BytesMut) {
    let log_append = batch.timestamp_type == TimestampType::LogAppendTime;
    let params = BatchParams {
        base_offset: run.first().map_or(batch.base_offset, |r| r.offset),
        base_timestamp: None,
        max_timestamp: log_append.then_some(batch.max_timestamp),
        partition_leader_epoch: batch.partition_leader_epoch,
        compression: batch.compression,
        timestamp_type: batch.timestamp_type,
        is_transactional: batch.is_transactional,
        is_control: batch.is_control,
        has_delete_horizon: batch.has_delete_horizon,
        producer_id: batch.producer_id,
        producer_epoch: batch.producer_epoch,
        base_sequence: batch.base_sequence,
    };
    let mut encoder = BatchEncoder::new(buf, params);
    let mut headers: Vec<(&str, Option<&[u8]>)> = Vec::new();
    for r in run {
        if log_append {
            assert_eq!(
                r.timestamp, batch.max_timestamp,
                "log-append-time record timestamp"
            );
        }
        headers.clear();
        headers.extend(
            r.headers
                .iter()
                .map(|h| (h.key.as_str(), h.value.as_deref())),
        );
        let predicted =
            encoder.record_size(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
        let before = encoder.encoded_len();
        encoder
            .append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers)
            .expect("a decoded record must re-encode");
        assert_eq!(
            encoder.encoded_len() - before,
            predicted,
            "record_size must match append"
        );
    }
    let bytes = encoder
        .finish()
        .expect("a batch of decoded records must finish");
    let back = decode_records(bytes, &DecodeOptions::default())
        .expect("our own batch must decode with CRC verification");
    assert!(!back.truncated, "our own batch must be whole");
    assert_eq!(back.batches.len(), 1, "one batch in, one batch out");
    let b = &back.batches[0];
    assert_eq!(
        b.records, run,
        "records must survive decode -> encode -> decode"
    );
    assert_eq!(b.magic, 2);
    assert_eq!(b.base_offset, params.base_offset);
    assert_eq!(b.compression, batch.compression);
    assert_eq!(b.timestamp_type, batch.timestamp_type);
    assert_eq!(b.is_transactional, batch.is_transactional);
    assert_eq!(b.is_control, batch.is_control);
    assert_eq!(b.has_delete_horizon, batch.has_delete_horizon);
    assert_eq!(b.partition_leader_epoch, batch.partition_leader_epoch);
    assert_eq!(
        (b.producer_id, b.producer_epoch, b.base_sequence),
        (batch.producer_id, batch.producer_epoch, batch.base_sequence)
    );
    assert_eq!(b.last_offset_delta, (run.len() as i32 - 1).max(0));
}

fn check_decoded(decoded: &DecodedRecords) {
    assert_eq!(decoded.truncated, decoded.trailing_bytes > 0);
    let mut buf = BytesMut::new();
    for batch in &decoded.batches {
        let _ = (batch.last_offset(), batch.delete_horizon_ms());
        if let Some(Ok(control)) = batch.control_record() {
            let key = control.key_bytes();
            let value = control.value_bytes();
            let again = ControlRecord::parse(Some(&key), value.as_ref().map(|v| &v[..]))
                .expect("a control record's own bytes must parse");
            assert_eq!(again, control);
        }
        if batch.records.is_empty() {
            reencode(batch, &[], &mut buf);
            continue;
        }
        // Compaction leaves gaps in the offsets, and a batch encoder only writes consecutive
        // ones, so each run of consecutive offsets goes into a batch of its own.
        let records = &batch.records;
        let mut start = 0;
        while start < records.len() {
            let mut end = start + 1;
            while end < records.len()
                && records[end].offset == records[end - 1].offset.wrapping_add(1)
            {
                end += 1;
            }
            reencode(batch, &records[start..end], &mut buf);
            start = end;
        }
    }
}

fn decode_and_check(blob: Bytes) -> Result<Vec<Record>, RecordsError> {
    let mut single = blob.clone();
    let first = RecordBatch::decode(&mut single, &fuzz_options());
    let result = decode_records(blob, &fuzz_options());
    match (&first, &result) {
        (Ok(batch), Ok(decoded)) => assert_eq!(decoded.batches.first(), Some(batch)),
        // A later batch failed.
        (Ok(_), Err(_)) => {}
        (Err(RecordsError::Truncated { .. }), Ok(decoded)) => assert!(decoded.batches.is_empty()),
        (Err(e), Ok(_)) => panic!("RecordBatch::decode failed ({e}) where decode_records did not"),
        // Both failed on the first batch, so for the same reason.
        (Err(single), Err(multi)) => assert_eq!(single, multi),
    }
    let decoded = result?;
    check_decoded(&decoded);
    Ok(decoded.records().cloned().collect())
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_and_check(Bytes::copy_from_slice(data));

    let [attrs, mode, count_hi, count_lo, payload @ ..] = data else {
        return;
    };
    let attributes = i16::from(*attrs);
    let count = i32::from(u16::from_be_bytes([*count_hi, *count_lo]));
    let base_offset = if mode & 2 != 0 { i64::MAX - 3 } else { 0 };
    let base_timestamp = if mode & 4 != 0 {
        i64::MIN + 2
    } else {
        1_700_000_000_000
    };
    let codec = Compression::from_id(attrs & 0x07);

    match codec {
        Some(codec) if mode & 1 != 0 && codec != Compression::None && payload.len() <= CAP => {
            let mut compressed = Vec::new();
            compression::compress(codec, payload, &mut compressed)
                .expect("compressing a small payload must not fail");
            let via_codec = decode_and_check(wrap(
                attributes,
                count,
                base_offset,
                base_timestamp,
                &compressed,
            ));
            let plain = decode_and_check(wrap(
                attributes & !0x07,
                count,
                base_offset,
                base_timestamp,
                payload,
            ));
            assert_eq!(
                via_codec, plain,
                "{codec}: compression must be transparent to the records"
            );
        }
        _ => {
            let _ = decode_and_check(wrap(
                attributes,
                count,
                base_offset,
                base_timestamp,
                payload,
            ));
        }
    }
});
