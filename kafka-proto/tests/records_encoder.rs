//! The batch encoder's buffer handling: reuse across batches, batches laid end to end,
//! abandoned batches, size accounting.

use bytes::{Bytes, BytesMut};
use kafka_proto::records::{
    BatchEncoder, BatchParams, Compression, ControlRecord, DecodeOptions, TimestampType,
    V2_HEADER_SIZE, decode_records,
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
