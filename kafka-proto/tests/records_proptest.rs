//! Property tests for record batch v2: encode→decode round trips for every codec and header
//! flag, CRC corruption, concatenated batches, and truncation at every prefix.

use bytes::{Bytes, BytesMut};
use kafka_proto::records::{
    BatchEncoder, BatchParams, Compression, DecodeOptions, Record, RecordBatch, RecordHeader,
    RecordsError, TimestampType, decode_records,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct InputRecord {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn bytes_field() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => proptest::collection::vec(any::<u8>(), 0..48).prop_map(Some),
    ]
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1_600_000_000_000i64..1_800_000_000_000,
        1 => any::<i64>(),
        1 => Just(-1i64),
    ]
}

fn input_record() -> impl Strategy<Value = InputRecord> {
    (
        timestamp(),
        bytes_field(),
        bytes_field(),
        proptest::collection::vec(("[a-z\u{e9}\u{4e2d}]{0,8}", bytes_field()), 0..3),
    )
        .prop_map(|(timestamp, key, value, headers)| InputRecord {
            timestamp,
            key,
            value,
            headers,
        })
}

fn compression() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

fn params() -> impl Strategy<Value = BatchParams> {
    (
        (
            0i64..1 << 40,
            proptest::option::of(timestamp()),
            proptest::option::of(timestamp()),
        ),
        (any::<i32>(), compression(), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<i64>(), any::<i16>(), any::<i32>()),
    )
        .prop_map(
            |(
                (base_offset, base_timestamp, max_timestamp),
                (partition_leader_epoch, compression, log_append),
                (is_transactional, is_control, has_delete_horizon),
                (producer_id, producer_epoch, base_sequence),
            )| BatchParams {
                base_offset,
                base_timestamp,
                max_timestamp,
                partition_leader_epoch,
                compression,
                timestamp_type: if log_append {
                    TimestampType::LogAppendTime
                } else {
                    TimestampType::CreateTime
                },
                is_transactional,
                is_control,
                has_delete_horizon,
                producer_id,
                producer_epoch,
                base_sequence,
            },
        )
}

fn batch_input() -> impl Strategy<Value = (BatchParams, Vec<InputRecord>)> {
    (params(), proptest::collection::vec(input_record(), 0..8))
}

fn encode(params: &BatchParams, records: &[InputRecord]) -> Bytes {
    let mut buf = BytesMut::new();
    let mut scratch = Vec::new();
    let mut enc = BatchEncoder::with_scratch(&mut buf, &mut scratch, *params);
    for r in records {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let before = enc.encoded_len();
        let predicted =
            enc.record_size(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
        enc.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers)
            .unwrap();
        assert_eq!(enc.encoded_len() - before, predicted);
    }
    assert_eq!(enc.record_count(), records.len());
    enc.finish().unwrap()
}

/// What decoding the encoded batch must give back.
fn expected(params: &BatchParams, records: &[InputRecord], bytes: &Bytes) -> RecordBatch {
    let base_timestamp = params
        .base_timestamp
        .or(records.first().map(|r| r.timestamp))
        .unwrap_or(-1);
    let max_timestamp = params
        .max_timestamp
        .or(records.iter().map(|r| r.timestamp).max())
        .unwrap_or(-1);
    let log_append = params.timestamp_type == TimestampType::LogAppendTime;
    RecordBatch {
        base_offset: params.base_offset,
        partition_leader_epoch: params.partition_leader_epoch,
        magic: 2,
        crc: crc32c::crc32c(&bytes[21..]),
        attributes: params.attributes(),
        compression: params.compression,
        timestamp_type: params.timestamp_type,
        is_transactional: params.is_transactional,
        is_control: params.is_control,
        has_delete_horizon: params.has_delete_horizon,
        last_offset_delta: records.len().saturating_sub(1) as i32,
        base_timestamp,
        max_timestamp,
        producer_id: params.producer_id,
        producer_epoch: params.producer_epoch,
        base_sequence: params.base_sequence,
        records: records
            .iter()
            .enumerate()
            .map(|(i, r)| Record {
                offset: params.base_offset + i as i64,
                timestamp: if log_append {
                    max_timestamp
                } else {
                    r.timestamp
                },
                key: r.key.clone().map(Bytes::from),
                value: r.value.clone().map(Bytes::from),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| RecordHeader::new(k.clone(), v.clone().map(Bytes::from)))
                    .collect(),
            })
            .collect(),
    }
}

proptest! {
    #[test]
    fn round_trip((params, records) in batch_input()) {
        let bytes = encode(&params, &records);
        let decoded = decode_records(bytes.clone(), &DecodeOptions::default()).unwrap();
        prop_assert!(!decoded.truncated);
        prop_assert_eq!(decoded.trailing_bytes, 0);
        prop_assert_eq!(decoded.batches, vec![expected(&params, &records, &bytes)]);
    }

    #[test]
    fn every_codec_round_trips_the_same_records(
        (params, records) in batch_input(),
    ) {
        for codec in Compression::ALL {
            let params = BatchParams { compression: codec, ..params };
            let bytes = encode(&params, &records);
            let decoded = decode_records(bytes.clone(), &DecodeOptions::default()).unwrap();
            prop_assert_eq!(&decoded.batches, &vec![expected(&params, &records, &bytes)]);
        }
    }

    #[test]
    fn crc_corruption_is_detected((params, records) in batch_input(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let bytes = encode(&params, &records);
        let mut corrupt = bytes.to_vec();
        // Everything from the CRC field on is covered by the checksum.
        let i = 17 + at.index(corrupt.len() - 17);
        corrupt[i] ^= 1 << bit;
        let err = decode_records(Bytes::from(corrupt.clone()), &DecodeOptions::default()).unwrap_err();
        match err {
            RecordsError::CrcMismatch { base_offset, expected, computed } => {
                prop_assert_eq!(base_offset, params.base_offset);
                prop_assert_eq!(expected, u32::from_be_bytes(corrupt[17..21].try_into().unwrap()));
                prop_assert_eq!(computed, crc32c::crc32c(&corrupt[21..]));
            }
            other => prop_assert!(false, "expected a CRC mismatch, got {other:?}"),
        }
        // Without verification the decoder must still not panic.
        let _ = decode_records(Bytes::from(corrupt), &DecodeOptions::default().with_verify_crc(false));
    }

    #[test]
    fn concatenated_batches_decode_in_order(batches in proptest::collection::vec(batch_input(), 1..5)) {
        let mut blob = Vec::new();
        let mut want = Vec::new();
        let mut next_offset = 0i64;
        for (params, records) in &batches {
            let params = BatchParams { base_offset: next_offset, ..*params };
            next_offset += records.len().max(1) as i64;
            let bytes = encode(&params, records);
            want.push(expected(&params, records, &bytes));
            blob.extend_from_slice(&bytes);
        }
        let decoded = decode_records(Bytes::from(blob), &DecodeOptions::default()).unwrap();
        prop_assert!(!decoded.truncated);
        prop_assert_eq!(decoded.batches, want);
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), verify in any::<bool>()) {
        let options = DecodeOptions::default().with_verify_crc(verify).with_max_decompressed_size(1 << 20);
        let _ = decode_records(Bytes::from(data), &options);
    }

    #[test]
    fn bit_flips_without_crc_never_panic(
        (params, records) in batch_input(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut bytes = encode(&params, &records).to_vec();
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        let options = DecodeOptions::default().with_verify_crc(false).with_max_decompressed_size(1 << 20);
        let _ = decode_records(Bytes::from(bytes), &options);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_prefix_decodes_the_complete_batches(batches in proptest::collection::vec(batch_input(), 1..4)) {
        let mut blob = Vec::new();
        let mut ends = Vec::new();
        let mut want = Vec::new();
        for (params, records) in &batches {
            let bytes = encode(params, records);
            want.push(expected(params, records, &bytes));
            blob.extend_from_slice(&bytes);
            ends.push(blob.len());
        }
        let blob = Bytes::from(blob);
        for cut in 0..=blob.len() {
            let complete = ends.iter().filter(|&&end| end <= cut).count();
            let boundary = if complete == 0 { 0 } else { ends[complete - 1] };
            match decode_records(blob.slice(..cut), &DecodeOptions::default()) {
                Ok(decoded) => {
                    prop_assert_eq!(&decoded.batches[..], &want[..complete], "cut {}", cut);
                    prop_assert_eq!(decoded.truncated, cut > boundary, "cut {}", cut);
                    prop_assert_eq!(decoded.trailing_bytes, cut - boundary, "cut {}", cut);
                }
                Err(e) => prop_assert!(false, "cut {cut}: a clean cut must not be an error: {e}"),
            }
            // A single-batch decode of a cut batch is a typed truncation error instead.
            if cut > boundary {
                let mut rest = blob.slice(boundary..cut);
                let single = RecordBatch::decode(&mut rest, &DecodeOptions::default());
                prop_assert!(
                    matches!(single, Err(RecordsError::Truncated { .. })),
                    "cut {}: {:?}",
                    cut,
                    single
                );
            }
        }
    }
}

#[test]
fn overrunning_records_inside_a_complete_batch_are_errors() {
    let params = BatchParams::default();
    let records = vec![
        InputRecord {
            timestamp: 5,
            key: Some(b"key".to_vec()),
            value: Some(b"value".to_vec()),
            headers: vec![],
        };
        2
    ];
    let good = encode(&params, &records);

    // Declare one more record than is present: the batch length fits, the records don't.
    let mut more = good.to_vec();
    more[57..61].copy_from_slice(&3i32.to_be_bytes());
    let crc = crc32c::crc32c(&more[21..]);
    more[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = decode_records(Bytes::from(more), &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(err, RecordsError::InvalidRecord { index: 2, .. }),
        "{err:?}"
    );

    // Declare one fewer: bytes are left after the last record.
    let mut fewer = good.to_vec();
    fewer[57..61].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&fewer[21..]);
    fewer[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = decode_records(Bytes::from(fewer), &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(err, RecordsError::TrailingRecordBytes { .. }),
        "{err:?}"
    );

    // A record count no record section could hold.
    let mut huge = good.to_vec();
    huge[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&huge[21..]);
    huge[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = decode_records(Bytes::from(huge), &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            RecordsError::InvalidRecordCount {
                count: i32::MAX,
                ..
            }
        ),
        "{err:?}"
    );

    // A batch length below the v2 header is corruption even at the end of the blob.
    let mut short = good.to_vec();
    short[8..12].copy_from_slice(&48i32.to_be_bytes());
    let err = decode_records(Bytes::from(short), &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            RecordsError::InvalidBatchLength {
                length: 48,
                min: 49,
                ..
            }
        ),
        "{err:?}"
    );

    // An unknown magic.
    let mut magic = good.to_vec();
    magic[16] = 3;
    let err = decode_records(Bytes::from(magic), &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(err, RecordsError::UnsupportedMagic { magic: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn decompression_cap_applies_to_batches() {
    let params = BatchParams {
        compression: Compression::Zstd,
        ..BatchParams::default()
    };
    let records = vec![
        InputRecord {
            timestamp: 0,
            key: None,
            value: Some(vec![7u8; 4000]),
            headers: vec![],
        };
        4
    ];
    let bytes = encode(&params, &records);
    assert!(decode_records(bytes.clone(), &DecodeOptions::default()).is_ok());
    let err = decode_records(
        bytes,
        &DecodeOptions::default().with_max_decompressed_size(10_000),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RecordsError::Decompression {
                base_offset: 0,
                source: kafka_proto::compression::CompressionError::TooLarge { max: 10_000, .. }
            }
        ),
        "{err:?}"
    );
}
