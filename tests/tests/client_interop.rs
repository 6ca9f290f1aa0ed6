//! The producer and consumer end to end, with every codec: 100,000 keyed records written by
//! our producer are read back by our consumer and by confluent-kafka (librdkafka), and both
//! see every record once, in order within each partition, with each key on the partition
//! Java's murmur2 partitioner picks.
//!
//! Needs the broker (`KAFKA_BOOTSTRAP`) and confluent-kafka (`scripts/install-python-peers.sh`).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use bus::consumer::{ConsumerConfig, Offset, PartitionConsumer};
use bus::producer::{Producer, ProducerConfig, Record};
use integration_tests::{bootstrap, client_with_topic, confluent_available};
use kafka_proto::compression::Compression;

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 6;
/// Distinct keys: enough to reach every partition, few enough that each key has many records
/// whose order can be checked.
const KEYS: usize = 1_000;

fn key(i: usize) -> String {
    format!("key-{}", i % KEYS)
}

/// Prints `partition offset key value` per record, one line each, until `expected` records.
const CONFLUENT_CONSUMER: &str = r#"
import sys, time
import confluent_kafka
boot, topic, group, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = confluent_kafka.Consumer({
    'bootstrap.servers': boot, 'group.id': group, 'auto.offset.reset': 'earliest',
    'enable.auto.commit': False, 'check.crcs': True, 'fetch.wait.max.ms': 10,
})
c.subscribe([topic])
seen, deadline, out = 0, time.time() + 120, []
while seen < expected and time.time() < deadline:
    for m in c.consume(10000, 0.5):
        if m.error():
            sys.stderr.write('error %s\n' % m.error())
            sys.exit(2)
        out.append('%d %d %s %s' % (m.partition(), m.offset(), m.key().decode(), m.value().decode()))
        seen += 1
c.close()
sys.stdout.write('\n'.join(out) + '\n')
"#;

/// Checks one reader's view: every record exactly once, per-partition offsets increasing with
/// the send order of each key, and each key on its murmur2 partition.
fn check(who: &str, seen: &[(i32, i64, String, usize)]) {
    assert_eq!(seen.len(), RECORDS, "{who}: record count");
    let mut got = vec![false; RECORDS];
    let mut last: HashMap<&str, (i64, usize)> = HashMap::new();
    for (partition, offset, k, i) in seen {
        assert!(*i < RECORDS, "{who}: value {i} out of range");
        assert!(!got[*i], "{who}: record {i} seen twice");
        got[*i] = true;
        assert_eq!(*k, key(*i), "{who}: record {i} has the wrong key");
        let want = partitioner::partition_for_key(k.as_bytes(), PARTITIONS).unwrap();
        assert_eq!(*partition, want, "{who}: key {k} on the wrong partition");
        if let Some((prev_offset, prev_i)) = last.insert(k, (*offset, *i)) {
            // Same key, same partition: later sends must have later offsets.
            assert_eq!(
                prev_offset < *offset,
                prev_i < *i,
                "{who}: key {k}: record {i} at {offset} vs record {prev_i} at {prev_offset}"
            );
        }
    }
}

async fn round_trip(codec: Compression) {
    let Some(addr) = bootstrap() else { return };
    let confluent = confluent_available();
    let prefix = format!("interop-{codec:?}").to_lowercase();
    let (client, topic) = client_with_topic(&addr, &prefix, PARTITIONS).await;

    let producer = Producer::new(client.clone(), ProducerConfig::default().compression(codec))
        .await
        .unwrap();
    let mut last = None;
    for i in 0..RECORDS {
        let fut = producer
            .send(Record::new(topic.as_str()).key(key(i)).value(i.to_string()))
            .await
            .unwrap();
        // Keep one confirmation to await, so a delivery error shows up as itself.
        if i + 1 == RECORDS {
            last = Some(fut);
        }
    }
    producer.flush().await.unwrap();
    let meta = last.unwrap().await.unwrap();
    assert_eq!(
        meta.partition,
        partitioner::partition_for_key(key(RECORDS - 1).as_bytes(), PARTITIONS).unwrap()
    );
    producer.close().await.unwrap();

    // Our consumer.
    let mut consumer = PartitionConsumer::new(
        client.clone(),
        ConsumerConfig::default().fetch_max_wait(Duration::from_millis(10)),
    )
    .unwrap();
    consumer
        .assign((0..PARTITIONS).map(|p| (topic.as_str(), p, Offset::Earliest)))
        .unwrap();
    let mut ours = Vec::with_capacity(RECORDS);
    while ours.len() < RECORDS {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.poll_batch())
            .await
            .expect("our consumer stalled")
            .unwrap();
        for r in batch {
            let k = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let i: usize = std::str::from_utf8(&r.value.unwrap())
                .unwrap()
                .parse()
                .unwrap();
            ours.push((r.partition, r.offset, k, i));
        }
    }
    check("kbus consumer", &ours);

    if confluent {
        let topic2 = topic.clone();
        let addr2 = addr.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .arg("-c")
                .arg(CONFLUENT_CONSUMER)
                .args([
                    &addr2,
                    &topic2,
                    &format!("{topic2}-g"),
                    &RECORDS.to_string(),
                ])
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "confluent-kafka failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Vec<(i32, i64, String, usize)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].to_owned(),
                    f[3].parse().unwrap(),
                )
            })
            .collect();
        check("confluent-kafka", &theirs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_uncompressed() {
    round_trip(Compression::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_gzip() {
    round_trip(Compression::Gzip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_snappy() {
    round_trip(Compression::Snappy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_lz4() {
    round_trip(Compression::Lz4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_zstd() {
    round_trip(Compression::Zstd).await;
}
