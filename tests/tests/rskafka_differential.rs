//! Differential tests of our record batch codec against rskafka's, an independent
//! implementation: random batches we encode must decode in rskafka to the same fields, and
//! random batches rskafka encodes must decode in ours to the same fields, for no compression,
//! gzip and snappy (the codecs rskafka has without C libraries). Uncompressed, the two encoders
//! must agree byte for byte.
//!
//! What rskafka cannot express is left out of the generated batches, not papered over in
//! the comparison: its header values are never null (`Vec<u8>`), it has no delete-horizon
//! attribute, and it frames control records differently from Kafka (the bare 4-byte key with
//! no record around it), so control batches are not compared.

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use kafka_proto::records::{
    BatchEncoder, BatchParams, Compression, DecodeOptions, RecordBatch, TimestampType,
    decode_records,
};
use proptest::prelude::*;
use rskafka::protocol::record::{
    ControlBatchOrRecords, Record as RsRecord, RecordBatch as RsBatch, RecordBatchCompression,
    RecordBatchTimestampType, RecordHeader as RsHeader,
};
use rskafka::protocol::traits::{ReadType, WriteType};

#[derive(Debug, Clone)]
struct Rec {
    /// Delta from the batch's first timestamp; negative deltas are legal (out-of-order
    /// timestamps within a batch).
    timestamp_delta: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone)]
struct Batch {
    base_offset: i64,
    partition_leader_epoch: i32,
    first_timestamp: i64,
    /// Used as maxTimestamp for log-append-time batches; create-time batches use the largest
    /// record timestamp, as producers do.
    log_append_time: i64,
    timestamp_type: TimestampType,
    codec: Compression,
    is_transactional: bool,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<Rec>,
    /// Offset deltas for the rskafka-encoded direction: increasing, with gaps, as compaction
    /// leaves them. Our encoder always writes 0, 1, 2, ...
    offset_gaps: Vec<i32>,
    /// How far lastOffsetDelta lies past the last record (compaction can remove the last
    /// records of a batch but keeps the batch's offset range).
    trailing_gap: i32,
}

impl Batch {
    fn timestamp(&self, r: &Rec) -> i64 {
        self.first_timestamp + r.timestamp_delta
    }

    fn max_timestamp(&self) -> i64 {
        match self.timestamp_type {
            TimestampType::LogAppendTime => self.log_append_time,
            TimestampType::CreateTime => self
                .records
                .iter()
                .map(|r| self.timestamp(r))
                .max()
                .unwrap_or(-1),
        }
    }

    fn rs_offset_deltas(&self) -> Vec<i32> {
        let mut next = 0i32;
        self.offset_gaps
            .iter()
            .map(|gap| {
                let delta = next + gap;
                next = delta + 1;
                delta
            })
            .collect()
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn record() -> impl Strategy<Value = Rec> {
    (
        prop_oneof![
            Just(0i64),
            -86_400_000i64..86_400_000,
            -(1i64 << 40)..(1i64 << 40)
        ],
        prop::option::weighted(0.8, bytes(40)),
        prop::option::weighted(0.8, prop_oneof![bytes(200), bytes(3000)]),
        prop::collection::vec(("\\PC{0,10}", bytes(30)), 0..4),
    )
        .prop_map(|(timestamp_delta, key, value, headers)| Rec {
            timestamp_delta,
            key,
            value,
            headers,
        })
}

fn batch() -> impl Strategy<Value = Batch> {
    let header = (
        prop_oneof![Just(0i64), 0i64..(1i64 << 48)],
        prop_oneof![Just(-1i32), 0..i32::MAX],
        prop_oneof![Just(1_700_000_000_000i64), 0i64..(1i64 << 44)],
        0i64..(1i64 << 44),
        prop_oneof![
            Just(TimestampType::CreateTime),
            Just(TimestampType::LogAppendTime)
        ],
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Snappy)
        ],
    );
    let producer = (
        any::<bool>(),
        prop_oneof![Just(-1i64), 0..i64::MAX],
        prop_oneof![Just(-1i16), 0..i16::MAX],
        prop_oneof![Just(-1i32), 0..i32::MAX / 2],
    );
    (
        header,
        producer,
        prop::collection::vec((record(), 0i32..3), 0..16),
        0i32..3,
    )
        .prop_map(
            |(
                (base_offset, epoch, first_timestamp, log_append_time, timestamp_type, codec),
                (is_transactional, producer_id, producer_epoch, base_sequence),
                records,
                trailing_gap,
            )| {
                let (records, offset_gaps) = records.into_iter().unzip();
                Batch {
                    base_offset,
                    partition_leader_epoch: epoch,
                    first_timestamp,
                    log_append_time,
                    timestamp_type,
                    codec,
                    is_transactional,
                    producer_id,
                    producer_epoch,
                    base_sequence,
                    records,
                    offset_gaps,
                    trailing_gap,
                }
            },
        )
}

fn rs_codec(c: Compression) -> RecordBatchCompression {
    match c {
        Compression::None => RecordBatchCompression::NoCompression,
        Compression::Gzip => RecordBatchCompression::Gzip,
        Compression::Snappy => RecordBatchCompression::Snappy,
        Compression::Lz4 => RecordBatchCompression::Lz4,
        Compression::Zstd => RecordBatchCompression::Zstd,
    }
}

fn rs_timestamp_type(t: TimestampType) -> RecordBatchTimestampType {
    match t {
        TimestampType::CreateTime => RecordBatchTimestampType::CreateTime,
        TimestampType::LogAppendTime => RecordBatchTimestampType::LogAppendTime,
    }
}

fn encode_ours(b: &Batch) -> Bytes {
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(
        &mut buf,
        BatchParams {
            base_offset: b.base_offset,
            base_timestamp: Some(b.first_timestamp),
            max_timestamp: (b.timestamp_type == TimestampType::LogAppendTime)
                .then_some(b.log_append_time),
            partition_leader_epoch: b.partition_leader_epoch,
            compression: b.codec,
            timestamp_type: b.timestamp_type,
            is_transactional: b.is_transactional,
            producer_id: b.producer_id,
            producer_epoch: b.producer_epoch,
            base_sequence: b.base_sequence,
            ..BatchParams::default()
        },
    );
    for r in &b.records {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
            .collect();
        enc.append(
            b.timestamp(r),
            r.key.as_deref(),
            r.value.as_deref(),
            &headers,
        )
        .unwrap();
    }
    enc.finish().unwrap()
}

/// The batch as rskafka would write it. With `dense` the offsets are 0, 1, 2, ... and
/// lastOffsetDelta is what our encoder derives, so both encoders describe the same batch;
/// otherwise offsets have the generated gaps.
fn rs_batch(b: &Batch, dense: bool) -> RsBatch {
    let deltas: Vec<i32> = if dense {
        (0..b.records.len() as i32).collect()
    } else {
        b.rs_offset_deltas()
    };
    let last_offset_delta = if dense {
        (b.records.len() as i32 - 1).max(0)
    } else {
        deltas.last().copied().unwrap_or(0) + b.trailing_gap
    };
    let records = b
        .records
        .iter()
        .zip(&deltas)
        .map(|(r, &offset_delta)| RsRecord {
            timestamp_delta: r.timestamp_delta,
            offset_delta,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| RsHeader {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        })
        .collect();
    RsBatch {
        base_offset: b.base_offset,
        partition_leader_epoch: b.partition_leader_epoch,
        last_offset_delta,
        first_timestamp: b.first_timestamp,
        max_timestamp: b.max_timestamp(),
        producer_id: b.producer_id,
        producer_epoch: b.producer_epoch,
        base_sequence: b.base_sequence,
        records: ControlBatchOrRecords::Records(records),
        compression: rs_codec(b.codec),
        is_transactional: b.is_transactional,
        timestamp_type: rs_timestamp_type(b.timestamp_type),
    }
}

fn encode_rskafka(batch: &RsBatch) -> Vec<u8> {
    let mut out = Vec::new();
    batch.write(&mut out).expect("rskafka encodes the batch");
    out
}

fn decode_ours(bytes: Bytes) -> RecordBatch {
    let decoded = decode_records(bytes, &DecodeOptions::default()).expect("we decode the batch");
    assert!(!decoded.truncated);
    assert_eq!(decoded.batches.len(), 1);
    decoded.batches.into_iter().next().unwrap()
}

fn decode_rskafka(bytes: &[u8]) -> RsBatch {
    let mut cursor = Cursor::new(bytes);
    let batch = RsBatch::read(&mut cursor).expect("rskafka decodes the batch");
    assert_eq!(
        cursor.position() as usize,
        bytes.len(),
        "rskafka left bytes over"
    );
    batch
}

/// Field by field: what rskafka decoded against what we decoded from the same bytes.
fn assert_same(ours: &RecordBatch, rs: &RsBatch) -> Result<(), TestCaseError> {
    prop_assert_eq!(ours.base_offset, rs.base_offset, "base offset");
    prop_assert_eq!(ours.partition_leader_epoch, rs.partition_leader_epoch);
    prop_assert_eq!(ours.magic, 2);
    prop_assert_eq!(
        ours.last_offset_delta,
        rs.last_offset_delta,
        "last offset delta"
    );
    prop_assert_eq!(ours.base_timestamp, rs.first_timestamp, "base timestamp");
    prop_assert_eq!(ours.max_timestamp, rs.max_timestamp, "max timestamp");
    prop_assert_eq!(ours.producer_id, rs.producer_id, "producer id");
    prop_assert_eq!(ours.producer_epoch, rs.producer_epoch, "producer epoch");
    prop_assert_eq!(ours.base_sequence, rs.base_sequence, "base sequence");
    prop_assert_eq!(rs_codec(ours.compression), rs.compression, "compression");
    prop_assert_eq!(ours.is_transactional, rs.is_transactional, "transactional");
    prop_assert_eq!(
        rs_timestamp_type(ours.timestamp_type),
        rs.timestamp_type,
        "timestamp type"
    );
    // Attributes as a whole: codec bits, timestamp type bit 3, transactional bit 4, and
    // nothing else (not control, no delete horizon).
    let attributes = i16::from(ours.compression.id())
        | if rs.timestamp_type == RecordBatchTimestampType::LogAppendTime {
            8
        } else {
            0
        }
        | if rs.is_transactional { 16 } else { 0 };
    prop_assert_eq!(ours.attributes, attributes, "attributes");
    prop_assert!(!ours.is_control && !ours.has_delete_horizon);

    let ControlBatchOrRecords::Records(rs_records) = &rs.records else {
        return Err(TestCaseError::fail("rskafka decoded a control batch"));
    };
    prop_assert_eq!(ours.records.len(), rs_records.len(), "record count");
    for (i, (o, r)) in ours.records.iter().zip(rs_records).enumerate() {
        prop_assert_eq!(
            o.offset,
            rs.base_offset + i64::from(r.offset_delta),
            "record {} offset",
            i
        );
        let timestamp = match rs.timestamp_type {
            RecordBatchTimestampType::CreateTime => rs.first_timestamp + r.timestamp_delta,
            RecordBatchTimestampType::LogAppendTime => rs.max_timestamp,
        };
        prop_assert_eq!(o.timestamp, timestamp, "record {} timestamp", i);
        prop_assert_eq!(o.key.as_deref(), r.key.as_deref(), "record {} key", i);
        prop_assert_eq!(o.value.as_deref(), r.value.as_deref(), "record {} value", i);
        prop_assert_eq!(
            o.headers.len(),
            r.headers.len(),
            "record {} header count",
            i
        );
        for (j, (oh, rh)) in o.headers.iter().zip(&r.headers).enumerate() {
            prop_assert_eq!(&oh.key, &rh.key, "record {} header {} key", i, j);
            prop_assert_eq!(
                oh.value.as_deref(),
                Some(rh.value.as_slice()),
                "record {} header {} value",
                i,
                j
            );
        }
    }
    Ok(())
}

/// Both decoders also agree with what was generated (so agreeing on a wrong answer fails).
fn assert_matches_spec(ours: &RecordBatch, b: &Batch, deltas: &[i32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(ours.records.len(), b.records.len());
    prop_assert_eq!(ours.compression, b.codec);
    prop_assert_eq!(ours.max_timestamp, b.max_timestamp());
    for ((o, r), &delta) in ours.records.iter().zip(&b.records).zip(deltas) {
        prop_assert_eq!(o.offset, b.base_offset + i64::from(delta));
        let timestamp = match b.timestamp_type {
            TimestampType::CreateTime => b.timestamp(r),
            TimestampType::LogAppendTime => b.log_append_time,
        };
        prop_assert_eq!(o.timestamp, timestamp);
        prop_assert_eq!(o.key.as_deref(), r.key.as_deref());
        prop_assert_eq!(o.value.as_deref(), r.value.as_deref());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// Ours encodes, rskafka decodes (and so do we: the two readings must be identical).
    #[test]
    fn rskafka_decodes_what_we_encode(b in batch()) {
        let bytes = encode_ours(&b);
        let rs = decode_rskafka(&bytes);
        let ours = decode_ours(bytes);
        assert_same(&ours, &rs)?;
        let dense: Vec<i32> = (0..b.records.len() as i32).collect();
        assert_matches_spec(&ours, &b, &dense)?;
        // rskafka's reading of our batch, written back by rskafka, is our batch when
        // uncompressed (compressed, the compressors' outputs may legitimately differ).
        if b.codec == Compression::None {
            let again = encode_ours(&b);
            prop_assert_eq!(encode_rskafka(&rs), again.to_vec());
        }
    }

    /// rskafka encodes (with offset gaps and a lastOffsetDelta past the last record, as
    /// compaction leaves them), we decode; rskafka's own reading must match ours.
    #[test]
    fn we_decode_what_rskafka_encodes(b in batch()) {
        let rs = rs_batch(&b, false);
        let bytes = encode_rskafka(&rs);
        let ours = decode_ours(Bytes::from(bytes.clone()));
        assert_same(&ours, &decode_rskafka(&bytes))?;
        assert_same(&ours, &rs)?;
        assert_matches_spec(&ours, &b, &b.rs_offset_deltas())?;
    }

    /// Given the same batch, both encoders write the same bytes when uncompressed, and
    /// compressed batches from either decode to the same thing in both decoders.
    #[test]
    fn both_encoders_describe_the_same_batch(b in batch()) {
        let ours = encode_ours(&b);
        let theirs = encode_rskafka(&rs_batch(&b, true));
        if b.codec == Compression::None {
            prop_assert_eq!(ours.to_vec(), theirs.clone());
        }
        let from_ours = decode_ours(ours.clone());
        let from_theirs = decode_ours(Bytes::from(theirs.clone()));
        prop_assert_eq!(&from_ours.records, &from_theirs.records);
        assert_same(&from_ours, &decode_rskafka(&theirs))?;
        assert_same(&from_theirs, &decode_rskafka(&ours))?;
    }
}

/// The fixed cases the generators might take a while to hit: an empty batch, and every
/// codec-bearing attribute combination with one record.
#[test]
fn edge_batches_agree() {
    for codec in [Compression::None, Compression::Gzip, Compression::Snappy] {
        for (timestamp_type, is_transactional) in [
            (TimestampType::CreateTime, false),
            (TimestampType::CreateTime, true),
            (TimestampType::LogAppendTime, false),
            (TimestampType::LogAppendTime, true),
        ] {
            for n in [0usize, 1] {
                let b = Batch {
                    base_offset: 42,
                    partition_leader_epoch: 7,
                    first_timestamp: 1_700_000_000_000,
                    log_append_time: 1_700_000_123_456,
                    timestamp_type,
                    codec,
                    is_transactional,
                    producer_id: 1234,
                    producer_epoch: 5,
                    base_sequence: 99,
                    records: (0..n)
                        .map(|_| Rec {
                            timestamp_delta: -5,
                            key: None,
                            value: Some(Vec::new()),
                            headers: vec![("h".into(), Vec::new()), ("".into(), vec![0])],
                        })
                        .collect(),
                    offset_gaps: vec![3; n],
                    trailing_gap: 2,
                };
                let ours = encode_ours(&b);
                let decoded = decode_ours(ours.clone());
                assert_same(&decoded, &decode_rskafka(&ours)).unwrap();
                let rs = rs_batch(&b, false);
                let theirs = encode_rskafka(&rs);
                assert_same(&decode_ours(Bytes::from(theirs)), &rs).unwrap();
            }
        }
    }
}
