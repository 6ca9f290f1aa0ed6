//! Batches our `BatchEncoder` writes, with every codec, produced to a real broker and read back
//! by other clients: librdkafka (confluent-kafka, as a consumer-group member with
//! `auto.offset.reset=earliest` and CRC checks on) and kafka-python (assigned the partition).
//! Both print what they consumed as JSON lines; every key, value, header and timestamp must
//! be what we encoded.
//!
//! Needs the broker (`KAFKA_BOOTSTRAP`) and the Python peers (`scripts/install-python-peers.sh`).
//! Under `CI=true` a missing broker or peer fails the test; elsewhere it prints a note and passes.

use std::process::{Command, Stdio};

use bus::admin::create_topic_request;
use bus::{Connection, ConnectionConfig};
use bytes::{Bytes, BytesMut};
use integration_tests::{bootstrap, ci, confluent_available, fetch_from_start, unique_topic};
use kafka_proto::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_proto::messages::{FetchRequest, ProduceRequest};
use kafka_proto::records::{
    BatchEncoder, BatchParams, Compression, DecodeOptions, RecordBatch, decode_records,
};
use kafka_proto::{ErrorCode, Uuid};
use serde_json::Value;

const T0: i64 = 1_710_000_000_000;

/// librdkafka from PyPI's confluent-kafka, for the `python3` on PATH.
const CONFLUENT_PYTHON: &str = "python3";
/// kafka-python from Debian's python3-kafka, for the system interpreter.
const KAFKA_PYTHON_PYTHON: &str = "/usr/bin/python3";

/// Whether `python` can import `module` (and, for kafka-python, every codec). Under CI a
/// missing peer is a failure, never a skip.
fn peer_available(python: &str, check: &str, what: &str) -> bool {
    let ok = Command::new(python)
        .args(["-c", check])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !ci(),
            "{what} is not usable by {python} and CI=true: run scripts/install-python-peers.sh"
        );
        eprintln!(
            "note: {what} not usable by {python}; skipping (scripts/install-python-peers.sh)"
        );
    }
    ok
}

fn kafka_python_available() -> bool {
    peer_available(
        KAFKA_PYTHON_PYTHON,
        "from kafka.codec import has_snappy, has_lz4, has_zstd\n\
         assert has_snappy() and has_lz4() and has_zstd()",
        "kafka-python with snappy, lz4 and zstd",
    )
}

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn rec(timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Rec {
    Rec {
        timestamp,
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: Vec::new(),
    }
}

/// Two batches' worth of records: every shape of key, value and header, binary bytes, a large
/// compressible value and timestamps out of order. The codec name goes into the values so a
/// mix-up between tests would show.
fn batches(codec: Compression) -> [Vec<Rec>; 2] {
    let tag = codec.name().as_bytes();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let reversed: Vec<u8> = all_bytes.iter().rev().copied().collect();
    let big: Vec<u8> = b"interop record payload, repeated so every codec has work; "
        .iter()
        .copied()
        .cycle()
        .take(20_000)
        .collect();

    let mut first = vec![
        rec(T0, Some(b"k0"), Some(tag)),
        rec(T0 + 1, None, Some(b"null key")),
        rec(T0 + 2, Some(b"k2"), Some(b"")),
        rec(T0 + 3, Some(b"k3"), None),
        rec(T0 + 4, Some(b""), Some(b"empty key")),
        rec(T0 + 5, Some(&all_bytes), Some(&reversed)),
        rec(T0 + 6, Some(b"big"), Some(&big)),
        rec(
            T0 - 86_400_000,
            Some(b"a day earlier"),
            Some(b"negative delta"),
        ),
        rec(
            T0 + 31_536_000_000,
            Some(b"a year later"),
            Some(b"large delta"),
        ),
        rec(
            T0 + 9,
            Some("ключ ✓".as_bytes()),
            Some("värde 値".as_bytes()),
        ),
    ];
    first[1].headers = vec![
        ("trace-id".into(), Some(b"4bf92f3577b34da6".to_vec())),
        ("nullable".into(), None),
    ];
    first[5].headers = vec![
        ("binary".into(), Some(all_bytes.clone())),
        ("empty".into(), Some(Vec::new())),
        ("ünïcode-key".into(), Some(tag.to_vec())),
    ];
    let second = (0..12)
        .map(|i| {
            let mut r = rec(
                T0 + 1000 + i,
                Some(format!("second-{i}").as_bytes()),
                Some(format!("{}-{i}", codec.name()).as_bytes()),
            );
            if i % 4 == 0 {
                r.headers = vec![("i".into(), Some(i.to_string().into_bytes()))];
            }
            r
        })
        .collect();
    [first, second]
}

fn encode(codec: Compression, records: &[Rec]) -> Bytes {
    let mut buf = BytesMut::new();
    let mut batch = BatchEncoder::new(
        &mut buf,
        BatchParams {
            compression: codec,
            ..BatchParams::default()
        },
    );
    for r in records {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        batch
            .append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers)
            .unwrap();
    }
    batch.finish().unwrap()
}

async fn create_topic(conn: &Connection, topic: &str) -> Uuid {
    let req = create_topic_request(topic, 1, 1);
    let resp = conn.send(&req).await.unwrap();
    assert_eq!(
        ErrorCode::from_code(resp.topics[0].error_code),
        ErrorCode::None,
        "{resp:?}"
    );
    resp.topics[0].topic_id
}

/// Produces one batch with acks=-1 and returns the base offset the broker assigned.
async fn produce(conn: &Connection, topic: &str, records: Bytes) -> i64 {
    let mut partition = PartitionProduceData::default();
    partition.index = 0;
    partition.records = Some(records);
    let mut data = TopicProduceData::default();
    data.name = topic.into();
    data.partition_data.push(partition);
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data.push(data);
    let resp = conn.send(&req).await.unwrap();
    assert_eq!(resp.responses.len(), 1, "{resp:?}");
    let parts = &resp.responses[0].partition_responses;
    assert_eq!(parts.len(), 1, "{resp:?}");
    assert_eq!(
        ErrorCode::from_code(parts[0].error_code),
        ErrorCode::None,
        "produce to {topic}: {resp:?}"
    );
    parts[0].base_offset
}

/// The partition's batches as the broker serves them.
async fn fetch(conn: &Connection, topic: &str, topic_id: Uuid) -> Vec<RecordBatch> {
    let v = conn.version_for::<FetchRequest>().unwrap();
    let req = fetch_from_start(topic, topic_id, v, 4 << 20);
    let resp = conn.send(&req).await.unwrap();
    let part = &resp.responses[0].partitions[0];
    assert_eq!(
        ErrorCode::from_code(part.error_code),
        ErrorCode::None,
        "{resp:?}"
    );
    let records = part.records.clone().unwrap_or_default();
    let decoded = decode_records(records, &DecodeOptions::default()).unwrap();
    decoded.batches
}

/// Subscribes (group, earliest), reads `expected` messages or gives up after a minute, and
/// prints each as a JSON line; errors become `{"error": ...}` lines.
const CONFLUENT_CONSUMER: &str = r#"
import json, sys, time
import confluent_kafka
boot, topic, group, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
hexed = lambda b: None if b is None else b.hex()
c = confluent_kafka.Consumer({
    'bootstrap.servers': boot,
    'group.id': group,
    'auto.offset.reset': 'earliest',
    'enable.auto.commit': False,
    'check.crcs': True,
})
c.subscribe([topic])
seen, deadline = 0, time.time() + 60
while seen < expected and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        print(json.dumps({'error': str(m.error())}), flush=True)
        continue
    ts_type, ts = m.timestamp()
    print(json.dumps({
        'partition': m.partition(), 'offset': m.offset(),
        'timestamp_type': 'CreateTime' if ts_type == confluent_kafka.TIMESTAMP_CREATE_TIME else str(ts_type),
        'timestamp': ts, 'key': hexed(m.key()), 'value': hexed(m.value()),
        'headers': [[k, hexed(v)] for k, v in (m.headers() or [])],
    }), flush=True)
    seen += 1
c.close()
"#;

/// Assigns partition 0 from the beginning (no group), same output as above.
const KAFKA_PYTHON_CONSUMER: &str = r#"
import json, sys, time
import kafka
boot, topic, group, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
hexed = lambda b: None if b is None else b.hex()
c = kafka.KafkaConsumer(bootstrap_servers=boot, auto_offset_reset='earliest',
                        enable_auto_commit=False, check_crcs=True, api_version=(2, 5, 0))
tp = kafka.TopicPartition(topic, 0)
c.assign([tp])
c.seek_to_beginning(tp)
seen, deadline = 0, time.time() + 60
while seen < expected and time.time() < deadline:
    for batch in c.poll(timeout_ms=500).values():
        for m in batch:
            print(json.dumps({
                'partition': m.partition, 'offset': m.offset,
                'timestamp_type': 'CreateTime' if m.timestamp_type == 0 else str(m.timestamp_type),
                'timestamp': m.timestamp, 'key': hexed(m.key), 'value': hexed(m.value),
                'headers': [[k, hexed(v)] for k, v in m.headers],
            }), flush=True)
            seen += 1
c.close()
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn opt_hex(b: &Option<Vec<u8>>) -> Value {
    b.as_deref().map_or(Value::Null, |b| Value::String(hex(b)))
}

/// Runs a consumer script and returns the JSON lines it printed.
fn consume(python: &str, script: &str, addr: &str, topic: &str, expected: usize) -> Vec<Value> {
    let group = format!("{topic}-group");
    let child = Command::new(python)
        .arg("-c")
        .arg(script)
        .args([addr, topic, &group, &expected.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python} consumer failed: {}\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect()
}

/// The consumer saw exactly `expected`, in order, at offsets from 0, with no errors.
fn check_consumed(who: &str, codec: Compression, lines: &[Value], expected: &[Rec]) {
    let errors: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert!(
        errors.is_empty(),
        "{who} ({codec}): consumer errors {errors:?}"
    );
    assert_eq!(
        lines.len(),
        expected.len(),
        "{who} ({codec}): consumed {} of {} records: {lines:?}",
        lines.len(),
        expected.len()
    );
    for (i, (got, want)) in lines.iter().zip(expected).enumerate() {
        let ctx = format!("{who} ({codec}) record {i}");
        assert_eq!(got["partition"], 0, "{ctx}: partition");
        assert_eq!(got["offset"], i as i64, "{ctx}: offset");
        assert_eq!(got["timestamp_type"], "CreateTime", "{ctx}: timestamp type");
        assert_eq!(got["timestamp"], want.timestamp, "{ctx}: timestamp");
        assert_eq!(got["key"], opt_hex(&want.key), "{ctx}: key");
        assert_eq!(got["value"], opt_hex(&want.value), "{ctx}: value");
        let headers: Vec<Value> = want
            .headers
            .iter()
            .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), opt_hex(v)]))
            .collect();
        assert_eq!(got["headers"], Value::Array(headers), "{ctx}: headers");
    }
}

async fn our_batches_are_read_by_other_clients(codec: Compression) {
    let Some(addr) = bootstrap() else { return };
    let confluent = confluent_available();
    let kafka_python = kafka_python_available();
    if !confluent && !kafka_python {
        return;
    }
    let conn = Connection::connect(&addr, ConnectionConfig::default())
        .await
        .unwrap();
    let topic = unique_topic(&format!("records-interop-{}", codec.name()));
    let topic_id = create_topic(&conn, &topic).await;

    let [first, second] = batches(codec);
    let encoded = [encode(codec, &first), encode(codec, &second)];
    assert_eq!(produce(&conn, &topic, encoded[0].clone()).await, 0);
    assert_eq!(
        produce(&conn, &topic, encoded[1].clone()).await,
        first.len() as i64
    );

    // The broker serves our batches as written (same codec, same CRC-covered bytes), so the
    // consumers below decompress our bytes, not a re-encoding of them.
    let stored = fetch(&conn, &topic, topic_id).await;
    assert_eq!(stored.len(), 2, "{codec}: batches stored");
    for (batch, ours) in stored.iter().zip(&encoded) {
        assert_eq!(batch.compression, codec, "{codec}: stored codec");
        let ours = RecordBatch::decode(&mut ours.clone(), &DecodeOptions::default()).unwrap();
        assert_eq!(
            batch.crc, ours.crc,
            "{codec}: the broker re-encoded our batch"
        );
    }

    let expected: Vec<Rec> = first.into_iter().chain(second).collect();
    let n = expected.len();
    let (addr2, topic2, expected2) = (addr.clone(), topic.clone(), expected.clone());
    let librdkafka = tokio::task::spawn_blocking(move || {
        if confluent {
            let lines = consume(CONFLUENT_PYTHON, CONFLUENT_CONSUMER, &addr2, &topic2, n);
            check_consumed("librdkafka", codec, &lines, &expected2);
        }
    });
    let (addr3, topic3) = (addr.clone(), topic.clone());
    let kafka_python = tokio::task::spawn_blocking(move || {
        if kafka_python {
            let lines = consume(
                KAFKA_PYTHON_PYTHON,
                KAFKA_PYTHON_CONSUMER,
                &addr3,
                &topic3,
                n,
            );
            check_consumed("kafka-python", codec, &lines, &expected);
        }
    });
    let (a, b) = tokio::join!(librdkafka, kafka_python);
    if let Err(e) = a.and(b) {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn uncompressed_batches_are_read_by_other_clients() {
    our_batches_are_read_by_other_clients(Compression::None).await;
}

#[tokio::test]
async fn gzip_batches_are_read_by_other_clients() {
    our_batches_are_read_by_other_clients(Compression::Gzip).await;
}

#[tokio::test]
async fn snappy_batches_are_read_by_other_clients() {
    our_batches_are_read_by_other_clients(Compression::Snappy).await;
}

#[tokio::test]
async fn lz4_batches_are_read_by_other_clients() {
    our_batches_are_read_by_other_clients(Compression::Lz4).await;
}

#[tokio::test]
async fn zstd_batches_are_read_by_other_clients() {
    our_batches_are_read_by_other_clients(Compression::Zstd).await;
}
