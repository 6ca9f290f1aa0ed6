//! krafka: a pure-Rust async client with a Java-style accumulator. Records are queued with
//! `enqueue`, whose handles resolve on acknowledgement; a group-less consumer is assigned every
//! partition from the earliest offset and drained with `poll`.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use krafka::consumer::AutoOffsetReset;
use krafka::prelude::Compression as KCompression;
use krafka::producer::Acks as KAcks;
use krafka::{Kafka, Record};

use crate::Result;
use crate::args::{Acks, BenchArgs, Compression};
use crate::measure::{Outcome, Window};
use crate::payload::Payloads;
use crate::tally::Tally;

const STALL: Duration = Duration::from_secs(120);

async fn connect(args: &BenchArgs) -> Result<Kafka> {
    Ok(Kafka::builder(args.brokers.clone())
        .client_id("peer-bench-krafka")
        .connect()
        .await?)
}

pub async fn produce(args: &BenchArgs) -> Result<Outcome> {
    let kafka = connect(args).await?;
    let compression = match args.compression {
        Compression::None => KCompression::None,
        Compression::Gzip => KCompression::Gzip,
        Compression::Snappy => KCompression::Snappy,
        Compression::Lz4 => KCompression::Lz4,
        Compression::Zstd => KCompression::Zstd,
    };
    let acks = match args.acks {
        Acks::All => KAcks::All,
        Acks::Leader => KAcks::Leader,
        Acks::None => KAcks::None,
    };
    let producer = kafka
        .producer()
        .acks(acks)
        // Idempotence is krafka's default and needs acks=all; keep the default wherever allowed.
        .idempotent(args.acks == Acks::All)
        .compression(compression)
        .linger(Duration::from_millis(args.linger_ms))
        // krafka's default is Java's 16 KiB; see `BenchArgs::batch_bytes`.
        .batch_size(args.batch_bytes)
        .build()
        .await?;
    // Partition metadata before the clock starts, as for the other clients.
    producer.partitions_for(&args.topic).await?;

    let payloads = Payloads::new(args.size);
    let window = Window::start();
    let mut pending = FuturesUnordered::new();
    let mut acked = 0u64;
    for i in 0..args.count {
        let handle = producer
            .enqueue(Record::new(args.topic.clone(), payloads.bytes(i)))
            .await?;
        pending.push(handle);
        // Collect outcomes that are already in without waiting, so the set of pending handles
        // stays at what is in flight rather than growing to N.
        while let Some(Some(result)) = futures::FutureExt::now_or_never(pending.next()) {
            let _metadata = result?;
            acked += 1;
        }
    }
    while let Some(result) = tokio::time::timeout(STALL, pending.next())
        .await
        .map_err(|_| format!("krafka: no acknowledgement for {STALL:?}"))?
    {
        let _metadata = result?;
        acked += 1;
    }
    let outcome = window.finish("krafka", "produce", acked, acked * args.size as u64);
    producer.close().await?;
    Ok(outcome)
}

pub async fn consume(args: &BenchArgs) -> Result<Outcome> {
    let kafka = connect(args).await?;
    let mut builder = kafka.consumer_without_group();
    if let Some(wait) = args.fetch_max_wait_ms {
        builder = builder.fetch_max_wait(Duration::from_millis(wait));
    }
    let consumer = builder
        .auto_offset_reset(AutoOffsetReset::Earliest)
        // With a poll limit (default 500) a poll decodes only twice that many records of a
        // fetch response, drops the rest and fetches again from inside a batch, which tansu
        // 0.6.0 answers wrongly (see `tally`): records are lost. Unlimited, the whole response
        // is decoded and the next fetch starts at a batch boundary.
        .max_poll_records(-1)
        .build()
        .await?;
    let metadata = consumer.fetch_metadata(Some(&args.topic)).await?;
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name == args.topic)
        .ok_or_else(|| format!("topic {} not in metadata", args.topic))?;
    let mut partitions: Vec<i32> = topic.partitions.keys().copied().collect();
    partitions.sort_unstable();
    consumer.assign(&args.topic, partitions).await?;

    let window = Window::start();
    let mut tally = Tally::default();
    let mut idle = Duration::ZERO;
    while tally.records < args.count {
        let batch = consumer.poll(Duration::from_millis(500)).await?;
        if batch.is_empty() {
            idle += Duration::from_millis(500);
            if idle >= STALL {
                return Err(format!(
                    "krafka: no record for {STALL:?} after {} of {}",
                    tally.records, args.count
                )
                .into());
            }
            continue;
        }
        idle = Duration::ZERO;
        for record in &batch {
            let len = record.value.as_ref().map_or(0, |v| v.len());
            tally.add(record.partition, record.offset, len)?;
        }
    }
    let outcome = window.finish("krafka", "consume", tally.records, tally.bytes);
    consumer.close().await?;
    Ok(outcome)
}
