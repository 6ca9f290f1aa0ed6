//! The batch encoder's buffer handling: reuse across batches, batches laid end to end,
//! abandoned batches, size accounting; the owned builder and re-stamping of producer fields.

use bytes::{Bytes, BytesMut};
use kafka_proto::records::{
    BatchBuilder, BatchEncoder, BatchParams, Compression, ControlRecord, DecodeOptions, NO_HEADERS,
    RecordHeader, RecordsEncodeError, TimestampType, V2_HEADER_SIZE, decode_records,
    restamp_producer,
};

#[test]
fn empty_batch_is_a_bare_header() {
    let mut buf = BytesMut::new();
    let enc = BatchEncoder::new(&mut buf, BatchParams::default());
    assert_eq!(enc.encoded_len(), V2_HEADER_SIZE);
    assert!(enc.is_empty());
    let bytes = enc.finish().unwrap();
    assert_eq!(bytes.len(), V2_HEADER_SIZE);
    let decoded = decode_records(bytes, &DecodeOptions::default()).unwrap();
    let batch = &decoded.batches[0];
    assert!(batch.records.is_empty());
    assert_eq!(
        (
            batch.base_timestamp,
            batch.max_timestamp,
            batch.last_offset_delta
        ),
        (-1, -1, 0)
    );
}

#[test]
fn batches_laid_end_to_end_in_one_buffer() {
    let mut buf = BytesMut::new();
    let mut ranges = Vec::new();
    for (i, codec) in Compression::ALL.into_iter().enumerate() {
        let mut scratch = Vec::new();
        let mut enc = BatchEncoder::with_scratch(
            &mut buf,
            &mut scratch,
            BatchParams {
                base_offset: 10 * i as i64,
                compression: codec,
                ..BatchParams::default()
            },
        );
        for j in 0..10u8 {
            enc.append(1000 + i64::from(j), Some(&[j]), Some(&[j; 100]), &[])
                .unwrap();
        }
        ranges.push(enc.finish_in_place().unwrap());
    }
    assert_eq!(ranges.first().unwrap().start, 0);
    assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
    let decoded = decode_records(buf.freeze(), &DecodeOptions::default()).unwrap();
    let codecs: Vec<_> = decoded.batches.iter().map(|b| b.compression).collect();
    assert_eq!(codecs, Compression::ALL.to_vec());
    let offsets: Vec<_> = decoded.records().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..50).collect::<Vec<i64>>());
}

#[test]
fn finish_splits_only_this_batch_off() {
    let mut buf = BytesMut::from(&b"prefix"[..]);
    let mut enc = BatchEncoder::new(&mut buf, BatchParams::default());
    enc.append(1, None, Some(b"v"), &[]).unwrap();
    let batch = enc.finish().unwrap();
    assert_eq!(&buf[..], b"prefix");
    assert_eq!(
        decode_records(batch, &DecodeOptions::default())
            .unwrap()
            .batches
            .len(),
        1
    );
}

#[test]
fn reused_buffer_keeps_its_capacity() {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut scratch = Vec::new();
    for round in 0..3 {
        let mut enc = BatchEncoder::with_scratch(
            &mut buf,
            &mut scratch,
            BatchParams {
                compression: Compression::Lz4,
                ..BatchParams::default()
            },
        );
        for _ in 0..20 {
            enc.append(round, None, Some(&[round as u8; 200]), &[])
                .unwrap();
        }
        let batch = enc.finish().unwrap();
        assert!(buf.is_empty());
        assert!(buf.capacity() > 0, "spare capacity stays with the caller");
        let decoded = decode_records(batch, &DecodeOptions::default()).unwrap();
        assert_eq!(decoded.batches[0].records.len(), 20);
    }
    assert!(scratch.capacity() > 0, "the compression scratch is reused");
}

#[test]
fn dropping_an_unfinished_batch_leaves_the_buffer_as_it_was() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    {
        let mut enc = BatchEncoder::new(&mut buf, BatchParams::default());
        enc.append(0, Some(b"k"), Some(b"v"), &[("h", Some(b"x"))])
            .unwrap();
    }
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn size_accounting_matches_the_output() {
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(&mut buf, BatchParams::default());
    let mut expected = V2_HEADER_SIZE;
    for i in 0..100i64 {
        let value = vec![b'x'; i as usize * 3];
        let headers: &[(&str, Option<&[u8]>)] = if i % 3 == 0 {
            &[("a", None), ("bb", Some(b"cc"))]
        } else {
            &[]
        };
        let ts = 1_700_000_000_000 + i * 1_000_000;
        expected += enc.record_size(ts, Some(b"key"), Some(&value), headers);
        enc.append(ts, Some(b"key"), Some(&value), headers).unwrap();
        assert_eq!(enc.encoded_len(), expected);
    }
    assert_eq!(enc.record_count(), 100);
    assert_eq!(enc.finish().unwrap().len(), expected);
}

#[test]
fn log_append_time_batch() {
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(
        &mut buf,
        BatchParams {
            timestamp_type: TimestampType::LogAppendTime,
            max_timestamp: Some(9_999),
            ..BatchParams::default()
        },
    );
    enc.append(1, None, Some(b"a"), &[]).unwrap();
    enc.append(2, None, Some(b"b"), &[]).unwrap();
    let decoded = decode_records(enc.finish().unwrap(), &DecodeOptions::default()).unwrap();
    let batch = &decoded.batches[0];
    assert_eq!((batch.base_timestamp, batch.max_timestamp), (1, 9_999));
    assert!(batch.records.iter().all(|r| r.timestamp == 9_999));
}

#[test]
fn abort_marker_round_trip() {
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(
        &mut buf,
        BatchParams {
            is_control: true,
            is_transactional: true,
            producer_id: 5,
            producer_epoch: 2,
            ..BatchParams::default()
        },
    );
    enc.append_control(
        10,
        &ControlRecord::Abort {
            coordinator_epoch: 3,
        },
    )
    .unwrap();
    let decoded = decode_records(enc.finish().unwrap(), &DecodeOptions::default()).unwrap();
    assert_eq!(
        decoded.batches[0].control_record(),
        Some(Ok(ControlRecord::Abort {
            coordinator_epoch: 3
        }))
    );
    assert_eq!(
        decoded.batches[0].records[0].control(),
        Ok(ControlRecord::Abort {
            coordinator_epoch: 3
        })
    );
}

#[test]
fn data_batches_have_no_control_record() {
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(&mut buf, BatchParams::default());
    enc.append(0, None, Some(b"v"), &[]).unwrap();
    let decoded = decode_records(enc.finish().unwrap(), &DecodeOptions::default()).unwrap();
    assert_eq!(decoded.batches[0].control_record(), None);
}

#[test]
fn zero_copy_values_share_the_input() {
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(&mut buf, BatchParams::default());
    enc.append(0, Some(b"key"), Some(&[7u8; 512]), &[("h", Some(b"hv"))])
        .unwrap();
    let bytes: Bytes = enc.finish().unwrap();
    let range = bytes.as_ptr_range();
    let decoded = decode_records(bytes.clone(), &DecodeOptions::default()).unwrap();
    let record = &decoded.batches[0].records[0];
    for field in [
        record.key.as_ref(),
        record.value.as_ref(),
        record.headers[0].value.as_ref(),
    ] {
        let p = field.unwrap().as_ptr();
        assert!(range.contains(&p), "field is not a slice of the input");
    }
}

/// The owned builder writes the same bytes as the borrowing encoder for the same records and
/// parameters, for every codec, so the producer's batches are as well tested as the encoder's.
#[test]
fn builder_matches_the_encoder_byte_for_byte() {
    for codec in Compression::ALL {
        let params = BatchParams {
            compression: codec,
            producer_id: 9,
            producer_epoch: 1,
            base_sequence: 100,
            ..BatchParams::default()
        };
        let mut buf = BytesMut::new();
        let mut enc = BatchEncoder::new(&mut buf, params);
        let mut builder = BatchBuilder::new(
            BatchParams {
                compression: codec,
                ..BatchParams::default()
            },
            64,
        );
        for i in 0..50i64 {
            let value = vec![(i % 7) as u8; i as usize * 5];
            let headers: &[(&str, Option<&[u8]>)] = if i % 4 == 0 {
                &[("trace", Some(b"t")), ("null", None)]
            } else {
                &[]
            };
            let key = i.to_be_bytes();
            assert_eq!(
                builder.record_size(1_000 + i, Some(&key), Some(&value), headers),
                enc.record_size(1_000 + i, Some(&key), Some(&value), headers)
            );
            enc.append(1_000 + i, Some(&key), Some(&value), headers)
                .unwrap();
            builder
                .append(1_000 + i, Some(&key), Some(&value), headers)
                .unwrap();
            assert_eq!(builder.encoded_len(), enc.encoded_len());
        }
        builder.set_producer(9, 1, 100);
        assert_eq!(builder.record_count(), 50);
        let mut scratch = Vec::new();
        assert_eq!(
            builder.finish(Some(&mut scratch)).unwrap(),
            enc.finish().unwrap(),
            "{codec:?}"
        );
    }
}

#[test]
fn builder_grows_only_as_asked_and_accepts_decoded_headers() {
    let mut builder = BatchBuilder::new(BatchParams::default(), 256);
    let start = builder.capacity();
    assert!(start >= 256);
    assert_eq!(builder.spare_capacity(), start - V2_HEADER_SIZE);
    let headers = vec![RecordHeader::new("k", Some(Bytes::from_static(b"v")))];
    // Records that fit the spare room never reallocate.
    while builder.spare_capacity() >= builder.record_size(5, None, Some(b"0123456789"), &headers) {
        builder
            .append(5, None, Some(b"0123456789"), &headers)
            .unwrap();
        assert_eq!(builder.capacity(), start);
    }
    builder.reserve(4096);
    assert!(builder.spare_capacity() >= 4096);
    let n = builder.record_count();
    let decoded = decode_records(builder.finish(None).unwrap(), &DecodeOptions::default()).unwrap();
    let batch = &decoded.batches[0];
    assert_eq!(batch.records.len(), n);
    assert_eq!(batch.records[0].headers, headers);
    assert_eq!((batch.producer_id, batch.base_sequence), (-1, -1));
}

#[test]
fn an_empty_builder_finishes_to_a_bare_header() {
    let builder = BatchBuilder::new(BatchParams::default(), 0);
    assert!(builder.is_empty());
    let bytes = builder.finish(None).unwrap();
    assert_eq!(bytes.len(), V2_HEADER_SIZE);
    assert_eq!(
        decode_records(bytes, &DecodeOptions::default())
            .unwrap()
            .batches[0]
            .records
            .len(),
        0
    );
}

/// A re-stamped batch passes the CRC check and carries the new producer fields, with its
/// (compressed) records unchanged.
#[test]
fn restamping_rewrites_the_producer_fields_and_the_crc() {
    for codec in Compression::ALL {
        let mut builder = BatchBuilder::new(
            BatchParams {
                compression: codec,
                ..BatchParams::default()
            },
            1024,
        );
        for i in 0..10u8 {
            builder
                .append(7, Some(&[i]), Some(&[i; 30]), NO_HEADERS)
                .unwrap();
        }
        builder.set_producer(1, 0, 5);
        let original = builder.finish(None).unwrap();
        let mut stamped = original.to_vec();
        restamp_producer(&mut stamped, 77, 3, 1234).unwrap();
        let before = decode_records(original, &DecodeOptions::default()).unwrap();
        let after = decode_records(Bytes::from(stamped), &DecodeOptions::default()).unwrap();
        let (b, a) = (&before.batches[0], &after.batches[0]);
        assert_eq!(
            (a.producer_id, a.producer_epoch, a.base_sequence),
            (77, 3, 1234)
        );
        assert_eq!(a.records, b.records, "{codec:?}");
        assert_ne!(a.crc, b.crc);
    }
}

#[test]
fn restamping_refuses_what_is_not_a_v2_batch() {
    let mut short = vec![0u8; V2_HEADER_SIZE - 1];
    assert_eq!(
        restamp_producer(&mut short, 1, 0, 0),
        Err(RecordsEncodeError::NotABatch)
    );
    let mut builder = BatchBuilder::new(BatchParams::default(), 0);
    builder.append(0, None, Some(b"v"), NO_HEADERS).unwrap();
    let mut bytes = builder.finish(None).unwrap().to_vec();
    bytes[16] = 1; // magic
    let copy = bytes.clone();
    assert_eq!(
        restamp_producer(&mut bytes, 1, 0, 0),
        Err(RecordsEncodeError::NotABatch)
    );
    assert_eq!(bytes, copy, "a refused batch is left untouched");
}
