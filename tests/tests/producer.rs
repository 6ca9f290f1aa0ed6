//! The producer against the broker: every codec, every acks level, and the idempotent
//! producer through a proxy that cuts its connections. Records are read back with raw Fetch
//! requests (independent of the consumer) and checked for count, order per partition, the
//! partition each key landed on, and duplicates.
//!
//! tansu hands the same producer id to every idempotent producer and bumps its epoch, so two
//! idempotent producers alive at once fence each other (PRODUCER_FENCED). The producer copes
//! by restarting its sequences, but the tests that use idempotence take a lock so they do not
//! spend their time fencing one another.

use std::collections::HashMap;
use std::sync::Arc;

use bus::producer::{Acks, Producer, ProducerConfig, Record, RecordMetadata};
use bus::{Client, ClientConfig};
use bytes::Bytes;
use integration_tests::fault_proxy::{FaultPlan, FaultProxy};
use integration_tests::{bootstrap, client_with_topic, fetch_from_start};
use kafka_proto::Uuid;
use kafka_proto::compression::Compression;
use kafka_proto::messages::FetchRequest;
use kafka_proto::records::{DecodeOptions, decode_records};

/// Serialises the tests whose producers are idempotent (see the module docs).
static IDEMPOTENT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One record as read back.
#[derive(Debug, Clone)]
struct Stored {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    timestamp: i64,
    headers: Vec<(String, Option<Bytes>)>,
    compression: Compression,
}

async fn setup(addr: &str, prefix: &str, partitions: i32) -> (Client, Arc<str>) {
    let (client, topic) = client_with_topic(addr, prefix, partitions).await;
    (client, topic.into())
}

/// Every record of every partition, read with Fetch from offset 0 to the high watermark.
async fn read_back(client: &Client, topic: &str) -> Vec<Vec<Stored>> {
    let md = client.topic(topic).await.unwrap();
    let mut partitions = Vec::new();
    for p in 0..md.partition_count() {
        let leader = client.leader(topic, p).await.unwrap();
        let conn = client.broker(leader).await.unwrap();
        let version = conn.version_for::<FetchRequest>().unwrap();
        let mut records: Vec<Stored> = Vec::new();
        let mut offset = 0i64;
        for _ in 0..10_000 {
            let mut req = fetch_from_start(topic, Uuid(md.topic_id), version, 8 << 20);
            req.max_wait_ms = 100;
            req.topics[0].partitions[0].partition = p;
            req.topics[0].partitions[0].fetch_offset = offset;
            let resp = conn.send(&req).await.unwrap();
            let data = &resp.responses[0].partitions[0];
            assert_eq!(data.error_code, 0, "fetch {topic}-{p} at {offset}");
            let decoded = decode_records(
                data.records.clone().unwrap_or_default(),
                &DecodeOptions::default(),
            )
            .unwrap();
            for batch in &decoded.batches {
                for r in batch.records.iter().filter(|r| r.offset >= offset) {
                    records.push(Stored {
                        offset: r.offset,
                        key: r.key.clone(),
                        value: r.value.clone(),
                        timestamp: r.timestamp,
                        headers: r
                            .headers
                            .iter()
                            .map(|h| (h.key.clone(), h.value.clone()))
                            .collect(),
                        compression: batch.compression,
                    });
                }
                offset = offset.max(batch.last_offset() + 1);
            }
            if offset >= data.high_watermark {
                break;
            }
        }
        partitions.push(records);
    }
    partitions
}

fn text(b: &Option<Bytes>) -> &str {
    std::str::from_utf8(b.as_deref().unwrap()).unwrap()
}

/// Keyed records with one codec: every record arrives once, each partition holds its records
/// in send order at the offsets the producer reported, every key is on Java's murmur2
/// partition, and the batches are compressed as asked.
async fn round_trip(codec: Compression) {
    let Some(addr) = bootstrap() else { return };
    let _serial = IDEMPOTENT.lock().await;
    let (client, topic) = setup(&addr, "producer-codec", 3).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default().compression(codec))
        .await
        .unwrap();
    const N: usize = 3000;
    let mut deliveries = Vec::with_capacity(N);
    for i in 0..N {
        let mut record = Record::new(topic.clone())
            .key(format!("key-{}", i % 211))
            .value(format!("value-{i}"))
            .timestamp(1_700_000_000_000 + i as i64);
        if i.is_multiple_of(7) {
            record = record.header("n", Some(Bytes::from(i.to_string())));
        }
        deliveries.push(producer.send(record).await.unwrap());
    }
    let mut reported: Vec<RecordMetadata> = Vec::with_capacity(N);
    for d in deliveries {
        reported.push(d.await.unwrap());
    }
    producer.close().await.unwrap();

    let partitions = read_back(&client, &topic).await;
    assert_eq!(partitions.iter().map(Vec::len).sum::<usize>(), N);
    let mut seen = vec![false; N];
    for (p, records) in partitions.iter().enumerate() {
        let mut last = None;
        for r in records {
            let key = text(&r.key);
            assert_eq!(
                partitioner::partition_for_key(key.as_bytes(), 3).unwrap(),
                p as i32,
                "{key} is on the wrong partition"
            );
            let i: usize = text(&r.value)["value-".len()..].parse().unwrap();
            assert!(!seen[i], "record {i} twice");
            seen[i] = true;
            assert!(last < Some(i), "partition {p} out of order at {i}");
            last = Some(i);
            assert_eq!(key, format!("key-{}", i % 211));
            assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
            assert_eq!(r.compression, codec);
            let want_headers: Vec<(String, Option<Bytes>)> = if i.is_multiple_of(7) {
                vec![("n".into(), Some(Bytes::from(i.to_string())))]
            } else {
                vec![]
            };
            assert_eq!(r.headers, want_headers);
            assert_eq!(reported[i].partition, p as i32);
            // tansu reports no offset for a batch it saw as a duplicate; none is expected here.
            assert_eq!(reported[i].offset, Some(r.offset), "record {i}");
        }
    }
}

#[tokio::test]
async fn keyed_records_round_trip_uncompressed() {
    round_trip(Compression::None).await;
}

#[tokio::test]
async fn keyed_records_round_trip_gzip() {
    round_trip(Compression::Gzip).await;
}

#[tokio::test]
async fn keyed_records_round_trip_snappy() {
    round_trip(Compression::Snappy).await;
}

#[tokio::test]
async fn keyed_records_round_trip_lz4() {
    round_trip(Compression::Lz4).await;
}

#[tokio::test]
async fn keyed_records_round_trip_zstd() {
    round_trip(Compression::Zstd).await;
}

/// Unkeyed records through each acks level: all arrive, in order per partition; offsets are
/// reported except with acks=0, where the broker says nothing.
#[tokio::test]
async fn every_acks_level_delivers_everything() {
    let Some(addr) = bootstrap() else { return };
    for acks in [Acks::None, Acks::Leader, Acks::All] {
        let (client, topic) = setup(&addr, "producer-acks", 2).await;
        let idempotent = acks == Acks::All;
        let _serial = if idempotent {
            Some(IDEMPOTENT.lock().await)
        } else {
            None
        };
        let config = ProducerConfig::default().acks(acks).idempotence(idempotent);
        let producer = Producer::new(client.clone(), config).await.unwrap();
        let mut deliveries = Vec::new();
        for i in 0..2000u32 {
            let record = Record::new(topic.clone())
                .partition((i % 2) as i32)
                .value(i.to_be_bytes().to_vec());
            deliveries.push(producer.send(record).await.unwrap());
        }
        for d in deliveries {
            let md = d.await.unwrap();
            assert_eq!(md.offset.is_some(), acks != Acks::None, "{acks:?}");
        }
        producer.close().await.unwrap();
        let partitions = read_back(&client, &topic).await;
        for (p, records) in partitions.iter().enumerate() {
            let values: Vec<u32> = records
                .iter()
                .map(|r| u32::from_be_bytes(r.value.as_deref().unwrap().try_into().unwrap()))
                .collect();
            let want: Vec<u32> = (0..2000).filter(|i| i % 2 == p as u32).collect();
            assert_eq!(values, want, "{acks:?} partition {p}");
        }
    }
}

/// 100,000 idempotent records through a proxy that cuts the producer's connections at least
/// twenty times, mid-request and between answers. Every record must be in the log exactly
/// once, in send order within its partition, and every delivery must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_survives_cut_connections_without_loss_or_duplicates() {
    let Some(addr) = bootstrap() else { return };
    let _serial = IDEMPOTENT.lock().await;
    let (direct, topic) = setup(&addr, "producer-chaos", 4).await;
    let plan = FaultPlan::none()
        .seed(20_240_601)
        .cut_after_bytes_to_broker(30_000..=300_000)
        .cut_after_responses(2..=25)
        .max_cuts(40);
    let proxy = FaultProxy::start(&addr, plan).unwrap();
    let client = Client::connect(ClientConfig::new([proxy.addr().to_string()]))
        .await
        .unwrap();
    let config = ProducerConfig::default().batch_size(32 * 1024);
    let producer = Producer::new(client, config).await.unwrap();

    const N: u64 = 100_000;
    let mut deliveries = Vec::with_capacity(N as usize);
    for i in 0..N {
        let record = Record::new(topic.clone())
            .key(format!("k{}", i % 1009))
            .value(i.to_be_bytes().to_vec());
        deliveries.push(producer.send(record).await.unwrap());
    }
    let mut failures = Vec::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        if let Err(e) = d.await {
            failures.push((i, e));
        }
    }
    let closed = producer.close().await;
    let stats = proxy.stats();
    let producer_stats = producer.stats();
    assert!(
        failures.is_empty(),
        "{} records failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    closed.unwrap();
    assert!(
        stats.connections_cut >= 20,
        "only {} cuts: the test did not test much ({stats:?})",
        stats.connections_cut
    );
    assert_eq!(stats.rewrite_failures, 0);
    assert!(producer_stats.retries > 0, "{producer_stats:?}");

    let partitions = read_back(&direct, &topic).await;
    let mut count: HashMap<u64, u32> = HashMap::new();
    for (p, records) in partitions.iter().enumerate() {
        let mut last = None;
        for r in records {
            let i = u64::from_be_bytes(r.value.as_deref().unwrap().try_into().unwrap());
            *count.entry(i).or_default() += 1;
            assert!(last < Some(i), "partition {p}: {i} after {last:?}");
            last = Some(i);
            let key = format!("k{}", i % 1009);
            assert_eq!(text(&r.key), key);
            assert_eq!(
                partitioner::partition_for_key(key.as_bytes(), 4).unwrap(),
                p as i32
            );
        }
    }
    eprintln!("{stats:?}\n{producer_stats:?}");
    let duplicates = count.values().filter(|c| **c > 1).count();
    let missing = (0..N).filter(|i| !count.contains_key(i)).count();
    assert_eq!(
        (duplicates, missing),
        (0, 0),
        "{producer_stats:?} {stats:?}"
    );
}
