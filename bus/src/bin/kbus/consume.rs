//! `kbus consume`: prints records of a topic (all partitions, or one) with a format template.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;

use bus::consumer::{ConsumerConfig, Offset, PartitionConsumer};

use crate::args::Args;
use crate::format::{Format, View};

fn parse_from(s: &str) -> Result<Offset, String> {
    match s {
        "earliest" | "beginning" => Ok(Offset::Earliest),
        "latest" | "end" => Ok(Offset::Latest),
        n => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Offset::At)
            .ok_or_else(|| format!("--from: {s:?} is not earliest, latest or an offset")),
    }
}

pub async fn run(mut args: Args, brokers: &str) -> Result<(), String> {
    let topic = args
        .value(Some("-t"), "--topic")?
        .ok_or("consume: -t TOPIC is required")?;
    let from = parse_from(&args.value(None, "--from")?.unwrap_or("earliest".into()))?;
    let count = args.parsed::<u64>(Some("-n"), "--count")?;
    let exit_at_end = args.switch(Some("-e"), "--exit-at-end");
    let format = Format::parse(
        &args
            .value(Some("-f"), "--format")?
            .unwrap_or("%v\\n".into()),
    )?;
    let only = args.parsed::<i32>(Some("-p"), "--partition")?;
    // 100 ms rather than Kafka's 500: an interactive tool should show new records promptly.
    let fetch_wait_ms = args
        .parsed::<u64>(None, "--fetch-max-wait-ms")?
        .unwrap_or(100);
    let group = args.value(Some("-g"), "--group")?;
    let session_timeout_ms = args.parsed::<u64>(None, "--session-timeout-ms")?;
    args.finish()?;
    if group.is_none() && session_timeout_ms.is_some() {
        return Err("consume: --session-timeout-ms needs -g".into());
    }
    if let Some(group) = group {
        if only.is_some() {
            return Err(
                "consume: -p and -g exclude each other (the group assigns partitions)".into(),
            );
        }
        let a = crate::group_consume::GroupArgs {
            group,
            topic,
            from,
            count,
            exit_at_end,
            format,
            fetch_wait_ms,
            session_timeout_ms,
        };
        return crate::group_consume::run(a, brokers).await;
    }

    let client = crate::connect(brokers).await?;
    let meta = client.topic(&topic).await.map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = match only {
        Some(p) if meta.partition(p).is_none() => {
            return Err(format!(
                "topic {topic} has no partition {p} (it has {})",
                meta.partition_count()
            ));
        }
        Some(p) => vec![p],
        None => meta.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut consumer = PartitionConsumer::new(
        client,
        ConsumerConfig::default().fetch_max_wait(Duration::from_millis(fetch_wait_ms)),
    )
    .map_err(|e| e.to_string())?;
    consumer
        .assign(partitions.iter().map(|&p| (topic.as_str(), p, from)))
        .map_err(|e| e.to_string())?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    // --exit-at-end stops at each partition's end as the first fetch reports it (the high
    // watermark), so a topic that keeps growing still ends. Progress is measured by what was
    // printed, not by the consumer's position, which runs ahead while it prefetches.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut finished: HashSet<i32> = HashSet::new();
    loop {
        if count.is_some_and(|c| printed >= c) {
            break;
        }
        if exit_at_end {
            for &p in &partitions {
                if let Some(hw) = consumer.high_watermark(&topic, p) {
                    ends.entry(p).or_insert(hw);
                }
                if let Some(&end) = ends.get(&p) {
                    let pos = next.get(&p).copied().or_else(|| {
                        consumer
                            .position(&topic, p)
                            .filter(|_| from != Offset::Earliest)
                    });
                    if pos.is_some_and(|n| n >= end) || end == 0 {
                        finished.insert(p);
                    }
                }
            }
            if finished.len() == partitions.len() {
                break;
            }
        }
        let batch =
            match tokio::time::timeout(Duration::from_millis(500), consumer.poll_batch()).await {
                Err(_) => {
                    out.flush().map_err(|e| format!("stdout: {e}"))?;
                    // Quiet: a partition whose fetch position passed its end has nothing more to
                    // print (its last offsets may be transaction markers or compacted away).
                    for (&p, &end) in &ends {
                        if consumer.position(&topic, p).is_some_and(|pos| pos >= end) {
                            finished.insert(p);
                        }
                    }
                    continue;
                }
                Ok(b) => b.map_err(|e| e.to_string())?,
            };
        for r in &batch {
            if count.is_some_and(|c| printed >= c) {
                break;
            }
            if exit_at_end && ends.get(&r.partition).is_some_and(|&end| r.offset >= end) {
                continue;
            }
            format
                .write(&mut out, &View::of(r))
                .map_err(|e| format!("stdout: {e}"))?;
            next.insert(r.partition, r.offset + 1);
            printed += 1;
        }
    }
    out.flush().map_err(|e| format!("stdout: {e}"))?;
    Ok(())
}
