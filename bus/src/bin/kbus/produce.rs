//! `kbus produce`: one record per stdin line. Records are handed to the producer as they are
//! read and confirmed by `close`, so a large file streams through bounded memory (the
//! producer's `buffer_memory` applies back-pressure to the reader).

use std::time::Duration;

use bus::producer::{Acks, Producer, ProducerConfig, Record};
use kafka_proto::compression::Compression;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::Args;

pub fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "all" | "-1" => Ok(Acks::All),
        "1" | "leader" => Ok(Acks::Leader),
        "0" | "none" => Ok(Acks::None),
        other => Err(format!("--acks: {other:?} is not all, 1 or 0")),
    }
}

pub fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::from_name(s)
        .ok_or_else(|| format!("--compression: {s:?} is not none, gzip, snappy, lz4 or zstd"))
}

/// Producer options shared by `produce` and `bench produce`. acks other than all turns
/// idempotence off, since idempotence needs acks=all.
pub fn producer_config(args: &mut Args) -> Result<ProducerConfig, String> {
    let mut cfg = ProducerConfig::default();
    if let Some(a) = args.value(None, "--acks")? {
        let acks = parse_acks(&a)?;
        cfg = cfg.acks(acks);
        if acks != Acks::All {
            cfg = cfg.idempotence(false);
        }
    }
    if let Some(c) = args.value(Some("-z"), "--compression")? {
        cfg = cfg.compression(parse_compression(&c)?);
    }
    if let Some(ms) = args.parsed::<u64>(None, "--linger-ms")? {
        cfg = cfg.linger(Duration::from_millis(ms));
    }
    if let Some(bytes) = args.parsed::<usize>(None, "--batch-size")? {
        cfg = cfg.batch_size(bytes);
    }
    cfg.validate()?;
    Ok(cfg)
}

pub async fn run(mut args: Args, brokers: &str) -> Result<(), String> {
    let topic = args
        .value(Some("-t"), "--topic")?
        .ok_or("produce: -t TOPIC is required")?;
    let delimiter = args.value(Some("-K"), "--key-delimiter")?;
    if delimiter.as_deref() == Some("") {
        return Err("--key-delimiter must not be empty".into());
    }
    let partition = args.parsed::<i32>(Some("-p"), "--partition")?;
    let cfg = producer_config(&mut args)?;
    args.finish()?;

    let client = crate::connect(brokers).await?;
    // Fail on an unknown topic before reading any input.
    let meta = client.topic(&topic).await.map_err(|e| e.to_string())?;
    if let Some(p) = partition
        && meta.partition(p).is_none()
    {
        return Err(format!(
            "topic {topic} has no partition {p} (it has {})",
            meta.partition_count()
        ));
    }
    let producer = Producer::new(client, cfg)
        .await
        .map_err(|e| e.to_string())?;
    let topic: std::sync::Arc<str> = topic.into();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sent = 0u64;
    let mut progress = crate::bench::Progress::new("produced");
    while let Some(line) = lines.next_line().await.map_err(|e| format!("stdin: {e}"))? {
        let mut record = Record::new(topic.clone());
        match delimiter.as_deref().and_then(|d| line.split_once(d)) {
            Some((k, v)) => record = record.key(k.to_owned()).value(v.to_owned()),
            None => record = record.value(line),
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        // Failures are reported by close below, which waits for every accepted record.
        producer
            .send_and_forget(record)
            .await
            .map_err(|e| e.to_string())?;
        sent += 1;
        progress.tick(sent);
    }
    producer
        .close()
        .await
        .map_err(|e| format!("delivery failed: {e}"))?;
    eprintln!("kbus: produced {sent} records to {topic}");
    Ok(())
}
