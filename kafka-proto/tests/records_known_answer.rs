//! Known-answer tests: batches and messages written byte by byte from the protocol guide's
//! layouts ("Record Batch", "Record", "Message Sets"), with checksums computed here
//! independently of the decoder (CRC32C through the `crc32c` crate, CRC32 through a bitwise
//! implementation of the IEEE polynomial in this file).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_proto::records::{
    BatchEncoder, BatchParams, Compression, ControlRecord, DecodeOptions, Record, RecordBatch,
    RecordHeader, RecordsError, TimestampType, decode_records,
};

/// Bitwise CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the legacy message checksum.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn zigzag(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push(z as u8 | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

#[test]
fn checksum_helpers_match_the_standard_check_values() {
    assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

/// Two records, the second with a header, in a transactional create-time batch, laid out
/// field by field from the protocol guide.
fn hand_built_v2() -> Vec<u8> {
    let mut records = Vec::new();
    // Record 0: timestampDelta 0, offsetDelta 0, key "k", value "hello", no headers.
    let mut r0 = vec![0u8]; // attributes
    zigzag(&mut r0, 0);
    zigzag(&mut r0, 0);
    zigzag(&mut r0, 1);
    r0.push(b'k');
    zigzag(&mut r0, 5);
    r0.extend_from_slice(b"hello");
    zigzag(&mut r0, 0);
    zigzag(&mut records, r0.len() as i64);
    records.extend_from_slice(&r0);
    // Record 1: timestampDelta 250, offsetDelta 1, null key, empty value, header ("h", null).
    let mut r1 = vec![0u8];
    zigzag(&mut r1, 250);
    zigzag(&mut r1, 1);
    zigzag(&mut r1, -1);
    zigzag(&mut r1, 0);
    zigzag(&mut r1, 1);
    zigzag(&mut r1, 1);
    r1.push(b'h');
    zigzag(&mut r1, -1);
    zigzag(&mut records, r1.len() as i64);
    records.extend_from_slice(&r1);

    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&0x0010i16.to_be_bytes()); // attributes: transactional
    after_crc.extend_from_slice(&1i32.to_be_bytes()); // lastOffsetDelta
    after_crc.extend_from_slice(&1_600_000_000_000i64.to_be_bytes()); // baseTimestamp
    after_crc.extend_from_slice(&1_600_000_000_250i64.to_be_bytes()); // maxTimestamp
    after_crc.extend_from_slice(&4242i64.to_be_bytes()); // producerId
    after_crc.extend_from_slice(&3i16.to_be_bytes()); // producerEpoch
    after_crc.extend_from_slice(&17i32.to_be_bytes()); // baseSequence
    after_crc.extend_from_slice(&2i32.to_be_bytes()); // records count
    after_crc.extend_from_slice(&records);

    let crc = crc32c::crc32c(&after_crc);
    let mut batch = Vec::new();
    batch.extend_from_slice(&1000i64.to_be_bytes()); // baseOffset
    batch.extend_from_slice(&((4 + 1 + 4 + after_crc.len()) as i32).to_be_bytes()); // batchLength
    batch.extend_from_slice(&7i32.to_be_bytes()); // partitionLeaderEpoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&after_crc);
    batch
}

fn expected_v2() -> RecordBatch {
    RecordBatch {
        base_offset: 1000,
        partition_leader_epoch: 7,
        magic: 2,
        crc: crc32c::crc32c(&hand_built_v2()[21..]),
        attributes: 0x10,
        compression: Compression::None,
        timestamp_type: TimestampType::CreateTime,
        is_transactional: true,
        is_control: false,
        has_delete_horizon: false,
        last_offset_delta: 1,
        base_timestamp: 1_600_000_000_000,
        max_timestamp: 1_600_000_000_250,
        producer_id: 4242,
        producer_epoch: 3,
        base_sequence: 17,
        records: vec![
            Record {
                offset: 1000,
                timestamp: 1_600_000_000_000,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"hello")),
                headers: vec![],
            },
            Record {
                offset: 1001,
                timestamp: 1_600_000_000_250,
                key: None,
                value: Some(Bytes::new()),
                headers: vec![RecordHeader::new("h", None)],
            },
        ],
    }
}

#[test]
fn hand_built_v2_batch_decodes() {
    let bytes = hand_built_v2();
    let decoded = decode_records(Bytes::from(bytes), &DecodeOptions::default()).unwrap();
    assert!(!decoded.truncated);
    assert_eq!(decoded.batches, vec![expected_v2()]);
}

#[test]
fn encoder_reproduces_the_hand_built_bytes() {
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(
        &mut buf,
        BatchParams {
            base_offset: 1000,
            base_timestamp: Some(1_600_000_000_000),
            partition_leader_epoch: 7,
            is_transactional: true,
            producer_id: 4242,
            producer_epoch: 3,
            base_sequence: 17,
            ..BatchParams::default()
        },
    );
    enc.append(1_600_000_000_000, Some(b"k"), Some(b"hello"), &[])
        .unwrap();
    enc.append(1_600_000_000_250, None, Some(b""), &[("h", None)])
        .unwrap();
    assert_eq!(enc.encoded_len(), hand_built_v2().len());
    assert_eq!(&enc.finish().unwrap()[..], &hand_built_v2()[..]);
}

#[test]
fn batch_written_by_another_implementation_decodes() {
    // A one-record batch as found in a Kafka log segment published with a public test
    // fixture: value "Hello Kafka!", null key, CRC computed by the writer.
    let hex = "0000000000000000000000440000000002abfd049100000000000000000191e05b6d8b00000191e05b6d8b\
               00000000000000000000000000000000000124000000011848656c6c6f204b61666b612100";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let decoded = decode_records(Bytes::from(bytes.clone()), &DecodeOptions::default()).unwrap();
    let batch = &decoded.batches[0];
    assert_eq!(batch.crc, 0xabfd_0491);
    assert_eq!(batch.base_timestamp, 0x0191_e05b_6d8b);
    assert_eq!(batch.producer_id, 0);
    assert_eq!(
        batch.records,
        vec![Record {
            offset: 0,
            timestamp: 0x0191_e05b_6d8b,
            key: None,
            value: Some(Bytes::from_static(b"Hello Kafka!")),
            headers: vec![],
        }]
    );
    // And our encoder writes the same bytes for the same content.
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(
        &mut buf,
        BatchParams {
            partition_leader_epoch: 0,
            producer_id: 0,
            producer_epoch: 0,
            base_sequence: 0,
            ..BatchParams::default()
        },
    );
    enc.append(0x0191_e05b_6d8b, None, Some(b"Hello Kafka!"), &[])
        .unwrap();
    assert_eq!(&enc.finish().unwrap()[..], &bytes[..]);
}

#[test]
fn crc_mismatch_names_the_batch() {
    let mut bytes = hand_built_v2();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let err = decode_records(Bytes::from(bytes.clone()), &DecodeOptions::default()).unwrap_err();
    let stored = crc32c::crc32c(&hand_built_v2()[21..]);
    assert_eq!(
        err,
        RecordsError::CrcMismatch {
            base_offset: 1000,
            expected: stored,
            computed: crc32c::crc32c(&bytes[21..]),
        }
    );
    assert!(err.to_string().contains("1000"));
    // Skipping verification reaches the records: the flipped bit turns the last header's
    // value length from -1 (null) into 0 (empty), which still parses.
    let options = DecodeOptions {
        verify_crc: false,
        ..DecodeOptions::default()
    };
    assert!(decode_records(Bytes::from(bytes), &options).is_ok());
}

#[test]
fn log_append_time_uses_max_timestamp() {
    let mut bytes = hand_built_v2();
    // Set the timestamp-type bit and re-checksum.
    bytes[22] |= 0x08;
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let decoded = decode_records(Bytes::from(bytes), &DecodeOptions::default()).unwrap();
    let batch = &decoded.batches[0];
    assert_eq!(batch.timestamp_type, TimestampType::LogAppendTime);
    assert!(
        batch
            .records
            .iter()
            .all(|r| r.timestamp == 1_600_000_000_250)
    );
}

#[test]
fn control_batch_known_bytes() {
    // COMMIT marker from coordinator epoch 9, as a transaction coordinator writes it.
    let mut record = vec![0u8];
    zigzag(&mut record, 0);
    zigzag(&mut record, 0);
    zigzag(&mut record, 4);
    record.extend_from_slice(&[0, 0, 0, 1]);
    zigzag(&mut record, 6);
    record.extend_from_slice(&[0, 0, 0, 0, 0, 9]);
    zigzag(&mut record, 0);
    let mut records = Vec::new();
    zigzag(&mut records, record.len() as i64);
    records.extend_from_slice(&record);

    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&0x0030i16.to_be_bytes()); // transactional | control
    after_crc.extend_from_slice(&0i32.to_be_bytes());
    after_crc.extend_from_slice(&5i64.to_be_bytes());
    after_crc.extend_from_slice(&5i64.to_be_bytes());
    after_crc.extend_from_slice(&77i64.to_be_bytes());
    after_crc.extend_from_slice(&1i16.to_be_bytes());
    after_crc.extend_from_slice(&(-1i32).to_be_bytes());
    after_crc.extend_from_slice(&1i32.to_be_bytes());
    after_crc.extend_from_slice(&records);
    let mut batch = Vec::new();
    batch.extend_from_slice(&42i64.to_be_bytes());
    batch.extend_from_slice(&((9 + after_crc.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes());
    batch.push(2);
    batch.extend_from_slice(&crc32c::crc32c(&after_crc).to_be_bytes());
    batch.extend_from_slice(&after_crc);

    let decoded = decode_records(Bytes::from(batch.clone()), &DecodeOptions::default()).unwrap();
    let b = &decoded.batches[0];
    assert!(b.is_control && b.is_transactional);
    assert_eq!(
        b.control_record(),
        Some(Ok(ControlRecord::Commit {
            coordinator_epoch: 9
        }))
    );

    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(
        &mut buf,
        BatchParams {
            base_offset: 42,
            partition_leader_epoch: 0,
            is_transactional: true,
            is_control: true,
            producer_id: 77,
            producer_epoch: 1,
            ..BatchParams::default()
        },
    );
    enc.append_control(
        5,
        &ControlRecord::Commit {
            coordinator_epoch: 9,
        },
    )
    .unwrap();
    assert_eq!(&enc.finish().unwrap()[..], &batch[..]);
}

/// One legacy message-set entry, checksummed with the test's own CRC32.
fn legacy_entry(
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = vec![magic as u8, attributes as u8];
    if magic == 1 {
        body.extend_from_slice(&timestamp.to_be_bytes());
    }
    for field in [key, value] {
        match field {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                body.extend_from_slice(&(b.len() as i32).to_be_bytes());
                body.extend_from_slice(b);
            }
        }
    }
    let mut entry = Vec::new();
    entry.extend_from_slice(&offset.to_be_bytes());
    entry.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
    entry.extend_from_slice(&crc32_ieee(&body).to_be_bytes());
    entry.extend_from_slice(&body);
    entry
}

#[test]
fn v0_message_known_bytes() {
    let entry = legacy_entry(5, 0, 0, 0, Some(b"key"), Some(b"value"));
    // offset(8) size(4) crc(4) magic attributes keylen(4) "key" valuelen(4) "value"
    assert_eq!(entry.len(), 12 + 4 + 2 + 4 + 3 + 4 + 5);
    let decoded = decode_records(Bytes::from(entry), &DecodeOptions::default()).unwrap();
    let batch = &decoded.batches[0];
    assert_eq!(batch.magic, 0);
    assert_eq!(
        batch.records,
        vec![Record {
            offset: 5,
            timestamp: -1,
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::from_static(b"value")),
            headers: vec![],
        }]
    );
}

#[test]
fn v1_message_known_bytes() {
    let entry = legacy_entry(9, 1, 0, 1_500_000_000_000, None, Some(b"v1"));
    let decoded = decode_records(Bytes::from(entry.clone()), &DecodeOptions::default()).unwrap();
    let batch = &decoded.batches[0];
    assert_eq!(
        (batch.magic, batch.base_offset, batch.max_timestamp),
        (1, 9, 1_500_000_000_000)
    );
    assert_eq!(batch.crc, crc32_ieee(&entry[16..]));
    assert_eq!(
        batch.records,
        vec![Record {
            offset: 9,
            timestamp: 1_500_000_000_000,
            key: None,
            value: Some(Bytes::from_static(b"v1")),
            headers: vec![],
        }]
    );

    let mut corrupt = entry;
    *corrupt.last_mut().unwrap() ^= 0x20;
    assert!(matches!(
        decode_records(Bytes::from(corrupt), &DecodeOptions::default()),
        Err(RecordsError::CrcMismatch { base_offset: 9, .. })
    ));
}

/// A compressed wrapper around `inner` (a message set), as an old producer writes it.
fn wrapper(
    offset: i64,
    magic: i8,
    codec: Compression,
    timestamp_type_bit: bool,
    timestamp: i64,
    inner: &[u8],
) -> Vec<u8> {
    let mut compressed = Vec::new();
    kafka_proto::compression::compress(codec, inner, &mut compressed).unwrap();
    let attributes = codec.id() as i8 | if timestamp_type_bit { 0x08 } else { 0 };
    legacy_entry(
        offset,
        magic,
        attributes,
        timestamp,
        None,
        Some(&compressed),
    )
}

#[test]
fn v1_compressed_wrapper_has_relative_inner_offsets() {
    // KIP-31: inner offsets 0,1,2; the wrapper carries the absolute offset of the last one.
    let mut inner = Vec::new();
    for (i, ts) in [(0i64, 100i64), (1, 200), (2, 150)] {
        inner.extend(legacy_entry(
            i,
            1,
            0,
            ts,
            None,
            Some(format!("m{i}").as_bytes()),
        ));
    }
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
        let entry = wrapper(52, 1, codec, false, 200, &inner);
        let decoded = decode_records(Bytes::from(entry), &DecodeOptions::default()).unwrap();
        let batch = &decoded.batches[0];
        assert_eq!(batch.compression, codec);
        assert_eq!(batch.base_offset, 50);
        assert_eq!(batch.last_offset(), 52);
        let got: Vec<_> = batch
            .records
            .iter()
            .map(|r| (r.offset, r.timestamp, r.value.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (50, 100, Some(Bytes::from_static(b"m0"))),
                (51, 200, Some(Bytes::from_static(b"m1"))),
                (52, 150, Some(Bytes::from_static(b"m2"))),
            ],
            "{codec}"
        );

        // With log-append time the wrapper's timestamp applies to all inner messages.
        let entry = wrapper(52, 1, codec, true, 999, &inner);
        let decoded = decode_records(Bytes::from(entry), &DecodeOptions::default()).unwrap();
        assert_eq!(
            decoded.batches[0].timestamp_type,
            TimestampType::LogAppendTime
        );
        assert!(
            decoded.batches[0]
                .records
                .iter()
                .all(|r| r.timestamp == 999)
        );
    }
}

#[test]
fn v0_compressed_wrapper_has_absolute_inner_offsets() {
    let mut inner = Vec::new();
    for i in 70..73i64 {
        inner.extend(legacy_entry(i, 0, 0, 0, Some(b"k"), Some(b"v")));
    }
    let entry = wrapper(72, 0, Compression::Gzip, false, 0, &inner);
    let decoded = decode_records(Bytes::from(entry), &DecodeOptions::default()).unwrap();
    let offsets: Vec<_> = decoded.batches[0]
        .records
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, vec![70, 71, 72]);
    assert!(decoded.batches[0].records.iter().all(|r| r.timestamp == -1));
}

#[test]
fn legacy_wrapper_errors() {
    // Nested compression is forbidden.
    let inner = wrapper(
        0,
        1,
        Compression::Gzip,
        false,
        0,
        &legacy_entry(0, 1, 0, 0, None, Some(b"x")),
    );
    let entry = wrapper(0, 1, Compression::Gzip, false, 0, &inner);
    assert!(matches!(
        decode_records(Bytes::from(entry), &DecodeOptions::default()),
        Err(RecordsError::NestedCompression { offset: 0 })
    ));
    // A wrapper with no inner messages.
    let entry = wrapper(3, 1, Compression::Gzip, false, 0, &[]);
    assert!(matches!(
        decode_records(Bytes::from(entry), &DecodeOptions::default()),
        Err(RecordsError::EmptyWrapper { offset: 3 })
    ));
    // zstd was never valid before magic 2.
    let entry = legacy_entry(3, 1, 4, 0, None, Some(b"x"));
    assert!(matches!(
        decode_records(Bytes::from(entry), &DecodeOptions::default()),
        Err(RecordsError::UnknownCompression {
            codec: 4,
            magic: 1,
            ..
        })
    ));
    // A truncated inner message set inside an intact wrapper is corruption.
    let inner = legacy_entry(0, 1, 0, 0, None, Some(b"xyz"));
    let entry = wrapper(
        0,
        1,
        Compression::Snappy,
        false,
        0,
        &inner[..inner.len() - 1],
    );
    assert!(decode_records(Bytes::from(entry), &DecodeOptions::default()).is_err());
}

#[test]
fn mixed_magics_in_one_blob() {
    let mut blob = BytesMut::new();
    blob.put_slice(&legacy_entry(0, 0, 0, 0, None, Some(b"zero")));
    blob.put_slice(&legacy_entry(1, 1, 0, 10, None, Some(b"one")));
    let mut v2 = hand_built_v2();
    v2[..8].copy_from_slice(&2i64.to_be_bytes()); // baseOffset is outside the CRC
    blob.put_slice(&v2);
    let decoded = decode_records(blob.freeze(), &DecodeOptions::default()).unwrap();
    let magics: Vec<_> = decoded.batches.iter().map(|b| b.magic).collect();
    assert_eq!(magics, vec![0, 1, 2]);
    let offsets: Vec<_> = decoded.records().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
}
