//! Record batches written by real clients, librdkafka (confluent-kafka) and kafka-python, with
//! every codec, captured from a broker (see `fixtures/records/README.md`). Each `<name>.bin`
//! is the `records` field as fetched; `<name>.json` holds what the client was asked to write
//! and the batch header the client wrote.
//!
//! For each fixture: our decoder reads it with CRC checks on, the batch claims the codec the
//! fixture is named for (and the payload really is compressed), every header field and record
//! matches, and our encoder lays out the same records byte for byte as the client did before
//! compression.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use kafka_proto::compression::decompress;
use kafka_proto::records::{
    BatchEncoder, BatchParams, Compression, DecodeOptions, Record, RecordBatch, TimestampType,
    V2_HEADER_SIZE, decode_records,
};
use serde_json::Value;

const CLIENTS: [&str; 2] = ["librdkafka", "kafka-python"];
/// Appears verbatim (as one value) in every fixture's records; see the capture tool.
const LONG_VALUE_UNIT: &str = "the quick brown fox jumps over the lazy dog; ";
const LONG_VALUE_REPEAT: usize = 30;
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/records")
}

struct Fixture {
    name: String,
    bytes: Bytes,
    manifest: Value,
}

fn load(name: &str) -> Fixture {
    let bin = dir().join(format!("{name}.bin"));
    let json = dir().join(format!("{name}.json"));
    let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
    let manifest: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
    Fixture {
        name: name.to_owned(),
        bytes: Bytes::from(bytes),
        manifest,
    }
}

fn codec_named(name: &str) -> Compression {
    Compression::ALL
        .into_iter()
        .find(|c| c.name() == name)
        .unwrap_or_else(|| panic!("unknown codec {name:?}"))
}

fn int(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} is not an integer in {v}"))
}

/// Keys, values and header values are UTF-8 strings or null in the manifests.
fn opt_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Bytes::from(s.clone().into_bytes())),
        other => panic!("expected a string or null, got {other}"),
    }
}

/// The records a manifest lists, as our decoder should yield them.
fn expected_records(f: &Fixture) -> Vec<Record> {
    f.manifest["records"]
        .as_array()
        .expect("records array")
        .iter()
        .map(|r| Record {
            offset: int(r, "offset"),
            timestamp: int(r, "timestamp"),
            key: opt_bytes(&r["key"]),
            value: opt_bytes(&r["value"]),
            headers: r["headers"]
                .as_array()
                .expect("headers array")
                .iter()
                .map(|h| {
                    let pair = h.as_array().expect("a header is a [key, value] pair");
                    assert_eq!(pair.len(), 2, "header {h}");
                    kafka_proto::records::RecordHeader::new(
                        pair[0].as_str().expect("header key is a string"),
                        opt_bytes(&pair[1]),
                    )
                })
                .collect(),
        })
        .collect()
}

fn decode(f: &Fixture) -> Vec<RecordBatch> {
    let decoded = decode_records(f.bytes.clone(), &DecodeOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", f.name));
    assert!(
        !decoded.truncated,
        "{}: fixture ends inside a batch",
        f.name
    );
    decoded.batches
}

fn check_header(f: &Fixture, batch: &RecordBatch, expected: &Value) {
    let name = &f.name;
    let codec = codec_named(f.manifest["codec"].as_str().unwrap());
    assert_eq!(
        expected["compression"].as_str(),
        Some(codec.name()),
        "{name}: manifest disagrees with itself about the codec"
    );
    // The attribute is what the fixture claims: a fixture silently stored uncompressed (or
    // recompressed with another codec) fails here.
    assert_eq!(batch.compression, codec, "{name}: compression attribute");
    assert_eq!(
        i64::from(batch.attributes & 0x07),
        i64::from(codec.id()),
        "{name}: raw attribute bits 0-2"
    );
    assert_eq!(
        i64::from(batch.attributes),
        int(expected, "attributes"),
        "{name}: attributes"
    );
    assert_eq!(batch.magic, 2, "{name}: magic");
    let timestamp_type = match expected["timestamp_type"].as_str() {
        Some("CreateTime") => TimestampType::CreateTime,
        Some("LogAppendTime") => TimestampType::LogAppendTime,
        other => panic!("{name}: timestamp_type {other:?}"),
    };
    assert_eq!(
        batch.timestamp_type, timestamp_type,
        "{name}: timestamp type"
    );
    assert!(!batch.is_transactional, "{name}: transactional");
    assert!(!batch.is_control, "{name}: control");
    assert!(!batch.has_delete_horizon, "{name}: delete horizon");
    let fields: [(&str, i64); 9] = [
        ("base_offset", batch.base_offset),
        (
            "partition_leader_epoch",
            i64::from(batch.partition_leader_epoch),
        ),
        ("last_offset_delta", i64::from(batch.last_offset_delta)),
        ("base_timestamp", batch.base_timestamp),
        ("max_timestamp", batch.max_timestamp),
        ("producer_id", batch.producer_id),
        ("producer_epoch", i64::from(batch.producer_epoch)),
        ("base_sequence", i64::from(batch.base_sequence)),
        ("record_count", batch.records.len() as i64),
    ];
    for (field, actual) in fields {
        assert_eq!(actual, int(expected, field), "{name}: batch {field}");
    }
}

fn check_records(f: &Fixture, batches: &[RecordBatch]) {
    let actual: Vec<&Record> = batches.iter().flat_map(|b| &b.records).collect();
    let expected = expected_records(f);
    assert_eq!(actual.len(), expected.len(), "{}: record count", f.name);
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        let name = &f.name;
        assert_eq!(a.offset, e.offset, "{name}: record {i} offset");
        assert_eq!(a.timestamp, e.timestamp, "{name}: record {i} timestamp");
        assert_eq!(a.key, e.key, "{name}: record {i} key");
        assert_eq!(a.value, e.value, "{name}: record {i} value");
        assert_eq!(a.headers, e.headers, "{name}: record {i} headers");
    }
    // The clients set maxTimestamp to the largest record timestamp (create time).
    let max = expected.iter().map(|r| r.timestamp).max().unwrap();
    assert_eq!(
        batches.last().unwrap().max_timestamp,
        max,
        "{}: max timestamp",
        f.name
    );
}

/// The payload really is compressed (so the attribute is not a label on plain records), and
/// snappy comes in the framing the manifest says, so both framings stay covered.
fn check_payload(f: &Fixture) {
    let long_value = LONG_VALUE_UNIT.repeat(LONG_VALUE_REPEAT);
    let verbatim = f
        .bytes
        .windows(long_value.len())
        .any(|w| w == long_value.as_bytes());
    let codec = codec_named(f.manifest["codec"].as_str().unwrap());
    assert_eq!(
        verbatim,
        codec == Compression::None,
        "{}: the long value {} verbatim in the batch",
        f.name,
        if verbatim {
            "appears"
        } else {
            "does not appear"
        }
    );
    let payload = &f.bytes[V2_HEADER_SIZE..];
    match f.manifest["snappy_framing"].as_str() {
        Some("xerial") => assert!(payload.starts_with(&XERIAL_MAGIC), "{}: xerial", f.name),
        Some("raw") => assert!(!payload.starts_with(&XERIAL_MAGIC), "{}: raw", f.name),
        None => assert_ne!(
            codec,
            Compression::Snappy,
            "{}: snappy framing unset",
            f.name
        ),
        Some(other) => panic!("{}: snappy_framing {other}", f.name),
    }
}

/// Our encoder, given the same header fields and records, lays out the records section
/// exactly as the client did (compared after decompressing the client's payload), and for an
/// uncompressed batch produces the identical batch, CRC included.
fn check_reencode(f: &Fixture, batches: &[RecordBatch]) {
    assert_eq!(batches.len(), 1, "{}: one batch per fixture", f.name);
    let b = &batches[0];
    let mut buf = BytesMut::new();
    let mut enc = BatchEncoder::new(
        &mut buf,
        BatchParams {
            base_offset: b.base_offset,
            base_timestamp: Some(b.base_timestamp),
            partition_leader_epoch: b.partition_leader_epoch,
            producer_id: b.producer_id,
            producer_epoch: b.producer_epoch,
            base_sequence: b.base_sequence,
            ..BatchParams::default()
        },
    );
    for r in expected_records(f) {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()))
            .collect();
        enc.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers)
            .unwrap();
    }
    let ours = enc.finish().unwrap();
    let theirs = decompress(b.compression, &f.bytes[V2_HEADER_SIZE..], 1 << 24)
        .unwrap_or_else(|e| panic!("{}: {e}", f.name));
    assert!(
        ours[V2_HEADER_SIZE..] == theirs[..],
        "{}: our records section differs from the client's",
        f.name
    );
    if b.compression == Compression::None {
        assert_eq!(&ours[..], &f.bytes[..], "{}: whole batch", f.name);
    }
}

/// A flipped payload byte fails the CRC32C check rather than decoding to something else.
fn check_crc_is_verified(f: &Fixture) {
    let mut corrupt = f.bytes.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    assert!(
        decode_records(Bytes::from(corrupt), &DecodeOptions::default()).is_err(),
        "{}: a corrupted batch decoded",
        f.name
    );
}

fn check(name: &str) {
    let f = load(name);
    let (client, codec) = name
        .rsplit_once('-')
        .expect("fixtures are named <client>-<codec>");
    assert_eq!(
        f.manifest["client"].as_str(),
        Some(client),
        "{name}: client"
    );
    assert_eq!(f.manifest["codec"].as_str(), Some(codec), "{name}: codec");
    let batches = decode(&f);
    let expected = f.manifest["batches"].as_array().expect("batches array");
    assert_eq!(batches.len(), expected.len(), "{name}: batch count");
    for (batch, e) in batches.iter().zip(expected) {
        check_header(&f, batch, e);
    }
    check_records(&f, &batches);
    check_payload(&f);
    check_reencode(&f, &batches);
    check_crc_is_verified(&f);
}

macro_rules! fixtures {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*

        /// Every client writes every codec, and no fixture in the folder goes unchecked.
        #[test]
        fn the_fixture_set_is_complete() {
            let listed = [$($name),*];
            for client in CLIENTS {
                for codec in Compression::ALL {
                    let name = format!("{client}-{}", codec.name());
                    assert!(listed.contains(&name.as_str()), "no test for {name}");
                    assert!(dir().join(format!("{name}.bin")).is_file(), "{name}.bin missing");
                }
            }
            for entry in std::fs::read_dir(dir()).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
                    assert!(listed.contains(&stem.as_str()), "{stem}.json is not checked");
                }
            }
        }
    };
}

fixtures! {
    librdkafka_none => "librdkafka-none",
    librdkafka_gzip => "librdkafka-gzip",
    librdkafka_snappy => "librdkafka-snappy",
    librdkafka_lz4 => "librdkafka-lz4",
    librdkafka_zstd => "librdkafka-zstd",
    kafka_python_none => "kafka-python-none",
    kafka_python_gzip => "kafka-python-gzip",
    kafka_python_snappy => "kafka-python-snappy",
    kafka_python_lz4 => "kafka-python-lz4",
    kafka_python_zstd => "kafka-python-zstd",
}
