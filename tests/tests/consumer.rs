//! The partition consumer against the broker. Records are produced with raw Produce requests
//! (our `BatchEncoder`, independent of the producer) and read back through
//! `PartitionConsumer`: every record of a multi-partition topic in per-partition order, the
//! stream, seeks (offset, earliest, latest, timestamp), the reset policy for positions outside
//! the log, every compression codec, batches larger than the fetch limits, and transaction
//! markers.
//!
//! tansu 0.6 departs from Kafka in ways a consumer sees; each test asserts Kafka's behaviour on
//! Kafka and tansu's exact behaviour on tansu (recognised by its cluster id):
//! - A fetch from an offset inside a batch skips that batch (and may repeat the next one), so
//!   on tansu the tests seek only to batch boundaries.
//! - ListOffsets "latest" is the last batch's base offset + 1 (Kafka: the high watermark).
//! - A fetch outside the log answers no records and no error (Kafka: OFFSET_OUT_OF_RANGE), so
//!   the reset policy cannot be triggered on tansu; its decisions are unit-tested in `bus`.
//! - A timestamp after every record resolves to offset 0 (Kafka: the end of the log).
//! - It stores control batches a client produces (Kafka rejects them), which lets the marker
//!   test run there.

use std::collections::BTreeMap;
use std::time::Duration;

use bus::consumer::{AutoOffsetReset, ConsumerConfig, ConsumerRecord, Offset, PartitionConsumer};
use bus::{Client, Error};
use bytes::BytesMut;
use integration_tests::{bootstrap, client_with_topic, is_tansu, now_ms, produce_batch};
use kafka_proto::ErrorCode;
use kafka_proto::messages::InitProducerIdRequest;
use kafka_proto::records::{BatchEncoder, BatchParams, Compression, ControlRecord};

/// Long enough for a loaded CI machine; a healthy run takes well under a second per wait.
const WAIT: Duration = Duration::from_secs(30);

/// One batch of (key, value) records with a `seq` header, timestamped `ts`.
async fn produce(
    client: &Client,
    topic: &str,
    partition: i32,
    records: &[(String, String)],
    ts: i64,
    compression: Compression,
) -> i64 {
    let mut buf = BytesMut::new();
    let mut batch = BatchEncoder::new(
        &mut buf,
        BatchParams {
            compression,
            ..BatchParams::default()
        },
    );
    for (i, (k, v)) in records.iter().enumerate() {
        let seq = i.to_string();
        batch
            .append(
                ts,
                Some(k.as_bytes()),
                Some(v.as_bytes()),
                &[("seq", Some(seq.as_bytes()))],
            )
            .unwrap();
    }
    produce_batch(client, topic, partition, batch.finish().unwrap())
        .await
        .unwrap_or_else(|code| panic!("produce to {topic}-{partition}: {code}"))
}

fn kv(prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(|i| (format!("{prefix}-k{i}"), format!("{prefix}-v{i}")))
        .collect()
}

/// Polls until `n` records arrived (failing on errors and on the timeout).
async fn read(consumer: &mut PartitionConsumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        let batch = tokio::time::timeout_at(deadline, consumer.poll_batch())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived", out.len()))
            .unwrap();
        out.extend(batch);
    }
    out
}

/// The first record after `seek`, or a panic.
async fn first(consumer: &mut PartitionConsumer) -> ConsumerRecord {
    read(consumer, 1).await.swap_remove(0)
}

/// Asserts nothing arrives (no records, no error) for a while.
async fn nothing_for(consumer: &mut PartitionConsumer, d: Duration) {
    if let Ok(got) = tokio::time::timeout(d, consumer.poll_batch()).await {
        panic!("expected nothing, got {got:?}");
    }
}

fn value(r: &ConsumerRecord) -> &str {
    std::str::from_utf8(r.value.as_deref().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_record_of_a_multi_partition_topic_in_partition_order() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "consume-all", 3).await;
    let ts = now_ms();
    // 3 partitions x 4 batches of 50 keyed records; partition p gets keys with i % 3 == p.
    let mut expected: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for round in 0..4 {
        for p in 0..3 {
            let records: Vec<(String, String)> = (0..150)
                .filter(|i| i % 3 == p as usize)
                .map(|i| (format!("key{i}"), format!("p{p}-r{round}-v{i}")))
                .collect();
            expected
                .entry(p)
                .or_default()
                .extend(records.iter().map(|(_, v)| v.clone()));
            produce(&client, &topic, p, &records, ts, Compression::None).await;
        }
    }

    let mut consumer = PartitionConsumer::new(
        client.clone(),
        // A small partition limit so the read takes many pipelined fetches.
        ConsumerConfig::default().max_partition_fetch_bytes(2048),
    )
    .unwrap();
    consumer
        .assign((0..3).map(|p| (topic.as_str(), p, Offset::Earliest)))
        .unwrap();
    let records = read(&mut consumer, 600).await;
    assert_eq!(records.len(), 600);

    let mut by_partition: BTreeMap<i32, Vec<&ConsumerRecord>> = BTreeMap::new();
    for r in &records {
        assert_eq!(&*r.topic, topic);
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (p, want) in &expected {
        let got = &by_partition[p];
        let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..200).collect::<Vec<i64>>(), "partition {p}");
        let values: Vec<&str> = got.iter().map(|r| value(r)).collect();
        assert_eq!(values, *want, "partition {p}");
        assert!(got.iter().all(|r| r.timestamp == ts));
        assert_eq!(got[7].headers[0].key, "seq");
        assert_eq!(consumer.position(&topic, *p), Some(200));
        assert_eq!(consumer.high_watermark(&topic, *p), Some(200));
    }
    nothing_for(&mut consumer, Duration::from_millis(700)).await;

    // New records reach a consumer that is waiting at the end.
    produce(&client, &topic, 1, &kv("late", 0..3), ts, Compression::None).await;
    let late = read(&mut consumer, 3).await;
    assert_eq!(
        late.iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        [(1, 200), (1, 201), (1, 202)]
    );
}

#[tokio::test]
async fn the_stream_yields_records_and_positions_follow_what_it_yielded() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "consume-stream", 1).await;
    produce(
        &client,
        &topic,
        0,
        &kv("s", 0..10),
        now_ms(),
        Compression::None,
    )
    .await;
    produce(
        &client,
        &topic,
        0,
        &kv("s", 10..20),
        now_ms(),
        Compression::None,
    )
    .await;

    let mut consumer = PartitionConsumer::new(client, ConsumerConfig::default()).unwrap();
    consumer
        .assign([(topic.as_str(), 0, Offset::Earliest)])
        .unwrap();
    {
        let mut stream = consumer.records();
        for i in 0..5 {
            let r = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(r.offset, i);
            assert_eq!(value(&r), format!("s-v{i}"));
        }
    }
    // Five records were yielded, so the position is 5 even though more were fetched.
    assert_eq!(consumer.position(&topic, 0), Some(5));
    // poll_batch continues exactly where the stream stopped.
    let rest = read(&mut consumer, 15).await;
    assert_eq!(
        rest.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (5..20).collect::<Vec<_>>()
    );
    assert_eq!(consumer.position(&topic, 0), Some(20));
}

#[tokio::test]
async fn seeks_to_an_offset_the_earliest_the_latest_and_a_timestamp() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "consume-seek", 1).await;
    let tansu = is_tansu(&client);
    // Offsets 0-49 in batches of 10, then (later) 50-59.
    let t_first = now_ms();
    for b in 0..5 {
        produce(
            &client,
            &topic,
            0,
            &kv("a", b * 10..b * 10 + 10),
            t_first,
            Compression::None,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t_mid = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    produce(
        &client,
        &topic,
        0,
        &kv("b", 0..10),
        now_ms(),
        Compression::None,
    )
    .await;

    let mut consumer = PartitionConsumer::new(client.clone(), ConsumerConfig::default()).unwrap();
    consumer
        .assign([(topic.as_str(), 0, Offset::At(20))])
        .unwrap();
    assert_eq!(consumer.position(&topic, 0), Some(20));
    assert_eq!(value(&first(&mut consumer).await), "a-v20");

    if !tansu {
        // Inside a batch: the records before the offset are skipped.
        consumer.seek(&topic, 0, Offset::At(25)).unwrap();
        let r = first(&mut consumer).await;
        assert_eq!((r.offset, value(&r)), (25, "a-v25"));
    }

    consumer.seek(&topic, 0, Offset::Timestamp(t_mid)).unwrap();
    assert_eq!(
        consumer.position(&topic, 0),
        None,
        "resolved on the next poll"
    );
    let r = first(&mut consumer).await;
    assert_eq!((r.offset, value(&r)), (50, "b-v0"));

    consumer.seek(&topic, 0, Offset::Earliest).unwrap();
    let r = first(&mut consumer).await;
    assert_eq!((r.offset, value(&r)), (0, "a-v0"));

    consumer.seek(&topic, 0, Offset::Latest).unwrap();
    nothing_for(&mut consumer, Duration::from_millis(700)).await;
    let latest = if tansu { 51 } else { 60 };
    assert_eq!(consumer.position(&topic, 0), Some(latest));
    produce(
        &client,
        &topic,
        0,
        &kv("c", 0..5),
        now_ms(),
        Compression::None,
    )
    .await;
    let r = first(&mut consumer).await;
    assert_eq!(
        (r.offset, value(&r)),
        (60, "c-v0"),
        "only records produced after the seek"
    );

    consumer
        .seek(&topic, 0, Offset::Timestamp(now_ms() + 3_600_000))
        .unwrap();
    if tansu {
        let r = first(&mut consumer).await;
        assert_eq!(r.offset, 0);
    } else {
        nothing_for(&mut consumer, Duration::from_millis(700)).await;
        assert_eq!(
            consumer.position(&topic, 0),
            Some(65),
            "a future timestamp is the end"
        );
    }

    let err = consumer.seek(&topic, 0, Offset::At(-1)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let err = consumer.seek(&topic, 5, Offset::Earliest).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[tokio::test]
async fn a_position_outside_the_log_follows_the_reset_policy() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "consume-reset", 1).await;
    produce(
        &client,
        &topic,
        0,
        &kv("r", 0..10),
        now_ms(),
        Compression::None,
    )
    .await;
    let consumer_with = |reset| {
        let mut c = PartitionConsumer::new(
            client.clone(),
            ConsumerConfig::default().auto_offset_reset(reset),
        )
        .unwrap();
        c.assign([(topic.as_str(), 0, Offset::At(1_000))]).unwrap();
        c
    };

    if is_tansu(&client) {
        // tansu answers a fetch past the end with no records and no error, so the position
        // simply stays; the reset decisions are unit-tested in bus::consumer::position.
        let mut c = consumer_with(AutoOffsetReset::None);
        nothing_for(&mut c, Duration::from_millis(1200)).await;
        assert_eq!(c.position(&topic, 0), Some(1_000));
        return;
    }

    let mut earliest = consumer_with(AutoOffsetReset::Earliest);
    let r = first(&mut earliest).await;
    assert_eq!((r.offset, value(&r)), (0, "r-v0"));

    let mut latest = consumer_with(AutoOffsetReset::Latest);
    nothing_for(&mut latest, Duration::from_millis(700)).await;
    assert_eq!(latest.position(&topic, 0), Some(10));

    let mut none = consumer_with(AutoOffsetReset::None);
    let err = tokio::time::timeout(WAIT, none.poll_batch())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
    assert_eq!(
        none.position(&topic, 0),
        Some(1_000),
        "the position is kept"
    );
    nothing_for(&mut none, Duration::from_millis(700)).await;
    none.seek(&topic, 0, Offset::At(4)).unwrap();
    let r = first(&mut none).await;
    assert_eq!((r.offset, value(&r)), (4, "r-v4"));

    produce(
        &client,
        &topic,
        0,
        &kv("r2", 0..1),
        now_ms(),
        Compression::None,
    )
    .await;
    let r = first(&mut latest).await;
    assert_eq!((r.offset, value(&r)), (10, "r2-v0"));
}

#[tokio::test]
async fn batches_of_every_codec_are_read() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "consume-codecs", 1).await;
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs {
        let records: Vec<(String, String)> = (0..25)
            .map(|i| (format!("{codec}-k{i}"), format!("{codec}-v{i}-").repeat(8)))
            .collect();
        produce(&client, &topic, 0, &records, now_ms(), codec).await;
    }
    let mut consumer = PartitionConsumer::new(client.clone(), ConsumerConfig::default()).unwrap();
    consumer
        .assign([(topic.as_str(), 0, Offset::Earliest)])
        .unwrap();
    let records = read(&mut consumer, 100).await;
    for (i, r) in records.iter().enumerate() {
        let codec = codecs[i / 25];
        let n = i % 25;
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.key.as_deref(), Some(format!("{codec}-k{n}").as_bytes()));
        assert_eq!(value(r), format!("{codec}-v{n}-").repeat(8));
        assert_eq!(
            r.headers[0].value.as_deref(),
            Some(n.to_string().as_bytes())
        );
    }
    if !is_tansu(&client) {
        // Into the middle of the lz4 batch: decompressed, then cut at the offset.
        consumer.seek(&topic, 0, Offset::At(60)).unwrap();
        let r = first(&mut consumer).await;
        assert_eq!((r.offset, value(&r)), (60, "lz4-v10-".repeat(8).as_str()));
    }
}

#[tokio::test]
async fn batches_larger_than_the_fetch_limits_still_arrive() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "consume-big", 2).await;
    // 8 KiB batches against 1 KiB partition and 2 KiB response limits, on two partitions so
    // one of them is not first in the response.
    let big: Vec<(String, String)> = (0..8)
        .map(|i| (format!("k{i}"), "x".repeat(1000)))
        .collect();
    for p in 0..2 {
        for _ in 0..3 {
            produce(&client, &topic, p, &big, now_ms(), Compression::None).await;
        }
    }
    let mut consumer = PartitionConsumer::new(
        client,
        ConsumerConfig::default()
            .max_partition_fetch_bytes(1024)
            .fetch_max_bytes(2048),
    )
    .unwrap();
    consumer
        .assign([
            (topic.as_str(), 0, Offset::Earliest),
            (topic.as_str(), 1, Offset::Earliest),
        ])
        .unwrap();
    let records = read(&mut consumer, 48).await;
    for p in 0..2 {
        let offsets: Vec<i64> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (0..24).collect::<Vec<_>>(), "partition {p}");
    }
}

#[tokio::test]
async fn paused_partitions_are_not_read_until_resumed() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "consume-pause", 2).await;
    produce(
        &client,
        &topic,
        0,
        &kv("p0", 0..5),
        now_ms(),
        Compression::None,
    )
    .await;
    produce(
        &client,
        &topic,
        1,
        &kv("p1", 0..5),
        now_ms(),
        Compression::None,
    )
    .await;
    let mut consumer = PartitionConsumer::new(client, ConsumerConfig::default()).unwrap();
    consumer
        .assign([
            (topic.as_str(), 0, Offset::Earliest),
            (topic.as_str(), 1, Offset::Earliest),
        ])
        .unwrap();
    consumer.pause(&topic, 1).unwrap();
    let records = read(&mut consumer, 5).await;
    assert!(records.iter().all(|r| r.partition == 0), "{records:?}");
    nothing_for(&mut consumer, Duration::from_millis(700)).await;
    assert_eq!(consumer.position(&topic, 1), Some(0));
    consumer.resume(&topic, 1).unwrap();
    let records = read(&mut consumer, 5).await;
    assert_eq!(
        records
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        (0..5).map(|o| (1, o)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn transaction_markers_are_never_delivered() {
    let Some(addr) = bootstrap() else { return };
    let (client, topic) = client_with_topic(&addr, "consume-markers", 1).await;
    let ts = now_ms();
    // A producer id the broker issued, so it accepts the producer's batches.
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    init.transaction_timeout_ms = 60_000;
    let ids = client.send_any(&init).await.unwrap();
    assert_eq!(ids.error_code, 0, "{ids:?}");
    let txn = BatchParams {
        is_transactional: true,
        producer_id: ids.producer_id,
        producer_epoch: ids.producer_epoch,
        base_sequence: 0,
        ..BatchParams::default()
    };
    let mut buf = BytesMut::new();
    let mut data = BatchEncoder::new(&mut buf, txn);
    for i in 0..3 {
        data.append(ts, None, Some(format!("t{i}").as_bytes()), &[])
            .unwrap();
    }
    let data = data.finish().unwrap();
    let mut buf = BytesMut::new();
    let mut marker = BatchEncoder::new(
        &mut buf,
        BatchParams {
            is_control: true,
            base_sequence: -1,
            ..txn
        },
    );
    marker
        .append_control(
            ts,
            &ControlRecord::Commit {
                coordinator_epoch: 0,
            },
        )
        .unwrap();
    let marker = marker.finish().unwrap();

    produce_batch(&client, &topic, 0, data).await.unwrap();
    let marker_result = produce_batch(&client, &topic, 0, marker).await;
    if !is_tansu(&client) {
        // Kafka only lets transaction coordinators write markers.
        assert!(
            marker_result.is_err(),
            "a client-written marker was accepted"
        );
        return;
    }
    assert_eq!(marker_result, Ok(3));
    produce(
        &client,
        &topic,
        0,
        &kv("after", 0..2),
        ts,
        Compression::None,
    )
    .await;

    let mut consumer = PartitionConsumer::new(client, ConsumerConfig::default()).unwrap();
    consumer
        .assign([(topic.as_str(), 0, Offset::Earliest)])
        .unwrap();
    let records = read(&mut consumer, 5).await;
    assert_eq!(
        records
            .iter()
            .map(|r| (r.offset, value(r).to_owned()))
            .collect::<Vec<_>>(),
        [
            (0, "t0".to_owned()),
            (1, "t1".to_owned()),
            (2, "t2".to_owned()),
            (4, "after-v0".to_owned()),
            (5, "after-v1".to_owned())
        ]
    );
    nothing_for(&mut consumer, Duration::from_millis(700)).await;
    assert_eq!(consumer.position(&topic, 0), Some(6));
}
