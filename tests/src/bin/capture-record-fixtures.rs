//! Captures the record batch fixtures in `kafka-proto/tests/fixtures/records/`: batches that
//! real clients (librdkafka through confluent-kafka, and kafka-python) write with each codec.
//!
//! ```text
//! scripts/install-python-peers.sh
//! KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo run -p integration-tests --bin capture-record-fixtures
//! ```
//!
//! For every (client, codec) pair it creates a fresh one-partition topic and has the client
//! produce the same records (see [`spec`]) in one batch, through a recording proxy. The proxy
//! keeps every Produce request frame the client sends, and rewrites the broker addresses in
//! Metadata responses to its own so that the client's produce connection goes through it too.
//! The tool then fetches the partition back from the broker and compares the batch with what
//! the client sent (the bytes covered by the CRC, which hold the codec, the header fields and
//! the compressed payload). The committed `.bin` is the fetched `records` when the broker
//! stored the batch verbatim, else the client's own bytes from the Produce request; the
//! `.json` next to it says which, and holds the records the client was asked to write (taken
//! from [`spec`], never from our decoder, so the fixtures can catch a decoder bug).
//!
//! Nothing here decodes records with `kafka_proto::records`: batch fields are read at their
//! fixed offsets in the v2 header, so a bug in our record codec cannot shape the fixtures.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::admin::create_topic_request;
use bytes::{Bytes, BytesMut};
use integration_tests::{TestConnection, fetch_from_start};
use kafka_proto::envelope::{decode_request, decode_response};
use kafka_proto::messages::{CreateTopicsRequest, FetchRequest, MetadataResponse, ProduceRequest};
use kafka_proto::version::response_header_version;
use kafka_proto::{ApiKey, Encode, ErrorCode, Uuid};
use serde_json::{Value, json};

/// Timestamps are relative to this (2023-11-14T22:13:20Z), so they are explicit and stable.
const T0: i64 = 1_700_000_000_000;
/// A value long and repetitive enough that every codec must shrink it: a fixture claiming a
/// codec while carrying this value verbatim was not really compressed.
const LONG_VALUE_UNIT: &str = "the quick brown fox jumps over the lazy dog; ";
const LONG_VALUE_REPEAT: usize = 30;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

#[derive(Clone, Copy, PartialEq)]
enum Client {
    Librdkafka,
    KafkaPython,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Librdkafka => "librdkafka",
            Client::KafkaPython => "kafka-python",
        }
    }

    /// librdkafka comes with confluent-kafka from PyPI, for the `python3` on PATH;
    /// kafka-python is Debian's python3-kafka, for the system interpreter.
    fn python(self) -> &'static str {
        match self {
            Client::Librdkafka => "python3",
            Client::KafkaPython => "/usr/bin/python3",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Client::Librdkafka => LIBRDKAFKA_PRODUCER,
            Client::KafkaPython => KAFKA_PYTHON_PRODUCER,
        }
    }

    /// kafka-python 2.0.2's `send()` asserts every header value is `bytes`, so it cannot
    /// write a null header value; librdkafka can.
    fn allows_null_header_value(self) -> bool {
        self == Client::Librdkafka
    }
}

/// Reads the JSON record list from stdin, produces it to partition 0 in one batch, prints the
/// client's versions as JSON. Keys, values and header values are UTF-8 strings or null.
const LIBRDKAFKA_PRODUCER: &str = r#"
import json, sys
import confluent_kafka
boot, topic, codec = sys.argv[1:4]
spec = json.load(sys.stdin)
enc = lambda s: None if s is None else s.encode('utf-8')
p = confluent_kafka.Producer({
    'bootstrap.servers': boot,
    'compression.type': codec,
    'linger.ms': 2000,
    'batch.num.messages': 10000,
    'acks': 'all',
    'enable.idempotence': False,
})
errors = []
def report(err, msg):
    if err is not None:
        errors.append(str(err))
for r in spec:
    p.produce(topic, partition=0, key=enc(r['key']), value=enc(r['value']),
              timestamp=r['timestamp'],
              headers=[(k, enc(v)) for k, v in r['headers']] or None,
              on_delivery=report)
left = p.flush(60)
if left or errors:
    sys.exit('librdkafka: %d undelivered, errors: %s' % (left, errors))
version = confluent_kafka.version()  # a string in 2.x, a (string, int) pair in 1.x
version = version[0] if isinstance(version, tuple) else version
print(json.dumps({'client_version': confluent_kafka.libversion()[0],
                  'package': 'confluent-kafka ' + version}))
"#;

const KAFKA_PYTHON_PRODUCER: &str = r#"
import json, sys
import kafka
boot, topic, codec = sys.argv[1:4]
spec = json.load(sys.stdin)
enc = lambda s: None if s is None else s.encode('utf-8')
p = kafka.KafkaProducer(
    bootstrap_servers=boot,
    compression_type=None if codec == 'none' else codec,
    linger_ms=2000,
    batch_size=1 << 20,
    acks='all',
    api_version=(2, 5, 0),
)
futures = [p.send(topic, partition=0, key=enc(r['key']), value=enc(r['value']),
                  timestamp_ms=r['timestamp'],
                  headers=[(k, enc(v)) for k, v in r['headers']])
           for r in spec]
p.flush(60)
for f in futures:
    f.get(timeout=60)
p.close()
print(json.dumps({'client_version': kafka.__version__,
                  'package': 'kafka-python ' + kafka.__version__ + ' (Debian python3-kafka)'}))
"#;

/// The records every client is asked to write, in order: null key, empty key, empty value,
/// null value, headers (two on one record, an empty header value, a null one where the client
/// allows it), non-ASCII UTF-8, a long compressible value, and timestamps before and well
/// after the first (negative and large timestamp deltas).
fn spec(client: Client) -> Vec<Value> {
    let long_value = LONG_VALUE_UNIT.repeat(LONG_VALUE_REPEAT);
    let null_header = if client.allows_null_header_value() {
        Value::Null
    } else {
        json!("not-null")
    };
    vec![
        json!({"key": "key-0", "value": "first record", "headers": [], "timestamp": T0}),
        json!({"key": null, "value": "null key", "headers": [], "timestamp": T0 + 1}),
        json!({"key": "key-2", "value": "", "headers": [], "timestamp": T0 + 2}),
        json!({"key": "key-3", "value": null, "headers": [], "timestamp": T0 + 3}),
        json!({"key": "key-4", "value": "two headers",
               "headers": [["trace-id", "4bf92f3577b34da6"], ["empty", ""]], "timestamp": T0 + 4}),
        json!({"key": "key-5", "value": "header that may be null",
               "headers": [["nullable", null_header]], "timestamp": T0 + 5}),
        json!({"key": "ключ-6", "value": "värde ✓ 値", "headers": [["ünïcode", "✓"]],
               "timestamp": T0 + 6}),
        json!({"key": "key-7", "value": long_value, "headers": [], "timestamp": T0 + 7}),
        json!({"key": "key-8", "value": "a minute earlier", "headers": [], "timestamp": T0 - 60_000}),
        json!({"key": "key-9", "value": "an hour later", "headers": [], "timestamp": T0 + 3_600_000}),
        json!({"key": "", "value": "empty key",
               "headers": [["a", "1"], ["b", "2"], ["a", "3"]], "timestamp": T0 + 10}),
        json!({"key": "key-11", "value": "last", "headers": [], "timestamp": T0 + 11}),
    ]
}

// ---------------------------------------------------------------------------------------
// Recording proxy

/// Every Produce request frame (without size prefix) that went through the proxy.
type Recorded = Arc<Mutex<Vec<Bytes>>>;

struct Proxy {
    addr: SocketAddr,
    produced: Recorded,
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|&n| n <= 256 << 20)
        .ok_or_else(|| std::io::Error::other(format!("implausible frame size {size}")))?;
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame)?;
    Ok(Some(frame))
}

fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out)
}

fn start_proxy(broker: &str) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().unwrap();
    let produced: Recorded = Arc::default();
    let broker = broker.to_owned();
    let recorded = produced.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let (broker, recorded) = (broker.clone(), recorded.clone());
            std::thread::spawn(move || {
                if let Err(e) = relay(client, &broker, addr, recorded) {
                    eprintln!("proxy connection ended: {e}");
                }
            });
        }
    });
    Proxy { addr, produced }
}

/// Relays one client connection to the broker, recording Produce requests and pointing the
/// brokers of every Metadata response at the proxy.
fn relay(
    mut client: TcpStream,
    broker: &str,
    proxy: SocketAddr,
    recorded: Recorded,
) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(broker)?;
    // Correlation id -> (api key, version) of requests awaiting their response.
    let pending: Arc<Mutex<HashMap<i32, (i16, i16)>>> = Arc::default();

    let mut client_rx = client.try_clone()?;
    let mut upstream_tx = upstream.try_clone()?;
    let requests = pending.clone();
    let forward = std::thread::spawn(move || -> std::io::Result<()> {
        while let Some(frame) = read_frame(&mut client_rx)? {
            if frame.len() >= 8 {
                let key = i16::from_be_bytes([frame[0], frame[1]]);
                let version = i16::from_be_bytes([frame[2], frame[3]]);
                let id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                requests.lock().unwrap().insert(id, (key, version));
                if key == ApiKey::Produce as i16 {
                    recorded.lock().unwrap().push(Bytes::from(frame.clone()));
                }
            }
            write_frame(&mut upstream_tx, &frame)?;
        }
        let _ = upstream_tx.shutdown(Shutdown::Write);
        Ok(())
    });

    while let Some(frame) = read_frame(&mut upstream)? {
        let id = frame
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let request = id.and_then(|id| pending.lock().unwrap().remove(&id));
        let frame = match request {
            Some((key, version)) if key == ApiKey::Metadata as i16 => {
                rewrite_metadata(&frame, version, proxy).unwrap_or_else(|e| {
                    eprintln!("proxy: cannot rewrite Metadata v{version} ({e}); passing it on");
                    frame
                })
            }
            _ => frame,
        };
        write_frame(&mut client, &frame)?;
    }
    let _ = client.shutdown(Shutdown::Write);
    forward.join().expect("proxy forwarder panicked")
}

fn rewrite_metadata(frame: &[u8], version: i16, proxy: SocketAddr) -> Result<Vec<u8>, String> {
    let (header, mut resp) =
        decode_response::<MetadataResponse>(Bytes::copy_from_slice(frame), version)
            .map_err(|e| e.to_string())?;
    for broker in &mut resp.brokers {
        broker.host = proxy.ip().to_string();
        broker.port = i32::from(proxy.port());
    }
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, response_header_version(ApiKey::Metadata, version))
        .map_err(|e| e.to_string())?;
    resp.encode(&mut buf, version).map_err(|e| e.to_string())?;
    Ok(buf.to_vec())
}

// ---------------------------------------------------------------------------------------
// Broker side

fn create_topic(conn: &mut TestConnection, topic: &str) -> Uuid {
    let req = create_topic_request(topic, 1, 1);
    let v = conn.version::<CreateTopicsRequest>();
    let (_, resp) = conn.round_trip(&req, v).expect("CreateTopics");
    let created = &resp.topics[0];
    assert_eq!(
        ErrorCode::from_code(created.error_code),
        ErrorCode::None,
        "creating {topic}: {resp:?}"
    );
    created.topic_id
}

/// The `records` of partition 0 from offset 0, as the broker sends them.
fn fetch_raw(conn: &mut TestConnection, topic: &str, topic_id: Uuid) -> Bytes {
    let v = conn.version::<FetchRequest>();
    let req = fetch_from_start(topic, topic_id, v, 1 << 20);
    let (_, resp) = conn.round_trip(&req, v).expect("Fetch");
    let part = &resp.responses[0].partitions[0];
    assert_eq!(
        ErrorCode::from_code(part.error_code),
        ErrorCode::None,
        "fetching {topic}: {resp:?}"
    );
    part.records.clone().unwrap_or_default()
}

/// The `records` the client sent for partition 0 of `topic`, from every recorded Produce.
fn produced_records(frames: &[Bytes], topic: &str) -> (Vec<Bytes>, Vec<i16>) {
    let mut records = Vec::new();
    let mut versions = Vec::new();
    for frame in frames {
        let (header, req) =
            decode_request::<ProduceRequest>(frame.clone()).expect("decode recorded Produce");
        for t in req.topic_data.iter().filter(|t| t.name == topic) {
            for p in t.partition_data.iter().filter(|p| p.index == 0) {
                if let Some(r) = &p.records {
                    records.push(r.clone());
                    versions.push(header.request_api_version);
                }
            }
        }
    }
    (records, versions)
}

// ---------------------------------------------------------------------------------------
// Batch header fields at their fixed v2 offsets (protocol guide, "Record Batch").

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Splits a `records` blob into whole batches (magic 2 only).
fn split_batches(mut blob: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !blob.is_empty() {
        assert!(blob.len() >= 61, "records end inside a batch header");
        assert_eq!(blob[16], 2, "not a magic 2 batch");
        let total = 12 + usize::try_from(be_i32(blob, 8)).expect("batch length");
        assert!(total <= blob.len(), "records end inside a batch");
        out.push(&blob[..total]);
        blob = &blob[total..];
    }
    out
}

// ---------------------------------------------------------------------------------------

fn run_producer(
    client: Client,
    proxy: SocketAddr,
    topic: &str,
    codec: &str,
    spec: &[Value],
) -> Value {
    let mut child = Command::new(client.python())
        .arg("-c")
        .arg(client.script())
        .arg(proxy.to_string())
        .arg(topic)
        .arg(codec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", client.python()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(spec).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} producer failed for {codec}",
        client.name()
    );
    serde_json::from_slice(&out.stdout).expect("producer prints its versions as JSON")
}

fn capture(
    conn: &mut TestConnection,
    proxy: &Proxy,
    client: Client,
    codec: &str,
    dir: &Path,
    run: &str,
) -> Value {
    let name = format!("{}-{codec}", client.name());
    let topic = format!("fixtures-{name}-{run}");
    let topic_id = create_topic(conn, &topic);
    let spec = spec(client);
    proxy.produced.lock().unwrap().clear();
    let versions = run_producer(client, proxy.addr, &topic, codec, &spec);

    let frames = proxy.produced.lock().unwrap().clone();
    let (sent, produce_versions) = produced_records(&frames, &topic);
    assert_eq!(
        sent.len(),
        1,
        "{name}: expected one Produce carrying the partition, saw {} (did the client bypass the proxy?)",
        sent.len()
    );
    let sent = sent[0].clone();
    let sent_batches = split_batches(&sent);
    assert_eq!(
        sent_batches.len(),
        1,
        "{name}: the client split the records into several batches"
    );
    let count = be_i32(sent_batches[0], 57);
    assert_eq!(count as usize, spec.len(), "{name}: record count");
    let codec_id = be_i16(sent_batches[0], 21) & 7;
    assert_eq!(
        codec_id,
        CODECS.iter().position(|c| *c == codec).unwrap() as i16,
        "{name}: the client did not use the codec asked for"
    );

    let fetched = fetch_raw(conn, &topic, topic_id);
    let fetched_batches = split_batches(&fetched);
    // The CRC covers attributes..end: codec, timestamps, producer fields and the payload. The
    // broker may assign baseOffset and partitionLeaderEpoch, which the CRC does not cover.
    let verbatim = fetched_batches.len() == 1 && fetched_batches[0][16..] == sent_batches[0][16..];
    let mut differences = Vec::new();
    if verbatim {
        for (field, at, width) in [("baseOffset", 0, 8), ("partitionLeaderEpoch", 12, 4)] {
            if fetched[at..at + width] != sent[at..at + width] {
                differences.push(field);
            }
        }
    }
    let (stored, source) = if verbatim {
        (fetched.clone(), "fetch")
    } else {
        eprintln!(
            "{name}: the broker did not return the client's batch verbatim \
             ({} batch(es), {} bytes fetched vs {} sent); keeping the Produce request's bytes",
            fetched_batches.len(),
            fetched.len(),
            sent.len()
        );
        (sent.clone(), "produce-request")
    };
    let payload = &stored[61..];
    let framing = if codec == "snappy" {
        if payload.starts_with(&[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0]) {
            Some("xerial")
        } else {
            Some("raw")
        }
    } else {
        None
    };

    std::fs::write(dir.join(format!("{name}.bin")), &stored).unwrap();
    let base_offset = be_i64(&stored, 0);
    let attributes = be_i16(&stored, 21);
    let records: Vec<Value> = spec
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r["offset"] = json!(base_offset + i as i64);
            r
        })
        .collect();
    let manifest = json!({
        "client": client.name(),
        "client_version": versions["client_version"],
        "package": versions["package"],
        "codec": codec,
        "snappy_framing": framing,
        "produce_version": produce_versions[0],
        "source": source,
        "broker_rewrote": differences,
        "batches": [{
            "base_offset": base_offset,
            "partition_leader_epoch": be_i32(&stored, 12),
            "compression": codec,
            "attributes": attributes,
            "timestamp_type": if attributes & 8 == 0 { "CreateTime" } else { "LogAppendTime" },
            "last_offset_delta": be_i32(&stored, 23),
            "base_timestamp": be_i64(&stored, 27),
            "max_timestamp": be_i64(&stored, 35),
            "producer_id": be_i64(&stored, 43),
            "producer_epoch": be_i16(&stored, 51),
            "base_sequence": be_i32(&stored, 53),
            "record_count": count,
        }],
        "records": records,
    });
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
    eprintln!(
        "wrote {name}.bin ({} bytes, source {source}, broker rewrote {differences:?})",
        stored.len()
    );
    json!({"fixture": name, "source": source, "verbatim": verbatim})
}

fn main() {
    let addr = std::env::var("KAFKA_BOOTSTRAP").expect("set KAFKA_BOOTSTRAP");
    let dir: PathBuf = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../kafka-proto/tests/fixtures/records"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    let mut conn = TestConnection::connect(&addr).expect("connect");
    let proxy = start_proxy(&addr);
    let run = std::process::id().to_string();
    let mut summary = Vec::new();
    for client in [Client::Librdkafka, Client::KafkaPython] {
        for codec in CODECS {
            summary.push(capture(&mut conn, &proxy, client, codec, &dir, &run));
        }
    }
    // Give the relay threads a moment to log closing connections before the summary.
    std::thread::sleep(Duration::from_millis(100));
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
}
