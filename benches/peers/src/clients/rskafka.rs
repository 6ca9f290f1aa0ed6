//! rskafka: a minimal pure-Rust client built around one independent stream per partition.
//!
//! It has no partitioner and no accumulator on its plain path (`PartitionClient::produce` takes
//! a `Vec<Record>` and sends it as one batch), so the benchmark batches for it: the N records are
//! cut into chunks of `--chunk` records (1000 by default), chunk `j` goes to partition
//! `j % P`, and each partition's chunks are sent by one task, one request in flight at a time,
//! which is rskafka's per-partition write model. rskafka always sends acks=-1 and has no linger.
//! Consumption is one `StreamConsumer` per partition, each in its own task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rskafka::client::consumer::{StartOffset, StreamConsumerBuilder};
use rskafka::client::error::{Error as RsError, ProtocolError};
use rskafka::client::partition::{
    Compression as RsCompression, PartitionClient, UnknownTopicHandling,
};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use tokio::sync::Notify;

use crate::Result;
use crate::args::{Acks, BenchArgs, Compression};
use crate::measure::{Outcome, Window};
use crate::payload::Payloads;
use crate::tally::Tally;

const STALL: Duration = Duration::from_secs(120);

pub async fn connect(brokers: &str) -> Result<Client> {
    Ok(ClientBuilder::new(vec![brokers.to_string()])
        .client_id("peer-bench-rskafka")
        .build()
        .await?)
}

/// Creates `topic` with `partitions` partitions and replication factor 1 (one broker), and
/// succeeds when it exists already.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let client = connect(brokers).await?;
    match client
        .controller_client()?
        .create_topic(topic, partitions, 1, 30_000)
        .await
    {
        Ok(()) => Ok(()),
        Err(RsError::ServerError {
            protocol_error: ProtocolError::TopicAlreadyExists,
            ..
        }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Deletes `topic`, so a broker that keeps logs in memory gives the space back between runs.
pub async fn delete_topic(brokers: &str, topic: &str) -> Result<()> {
    let client = connect(brokers).await?;
    client
        .controller_client()?
        .delete_topic(topic, 30_000)
        .await?;
    Ok(())
}

async fn partition_clients(client: &Client, topic: &str) -> Result<Vec<Arc<PartitionClient>>> {
    let topics = client.list_topics().await?;
    let found = topics
        .into_iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| format!("topic {topic} does not exist"))?;
    let mut clients = Vec::new();
    for p in found.partitions {
        clients.push(Arc::new(
            client
                .partition_client(topic, p, UnknownTopicHandling::Retry)
                .await?,
        ));
    }
    Ok(clients)
}

fn codec(compression: Compression) -> Result<RsCompression> {
    Ok(match compression {
        Compression::None => RsCompression::NoCompression,
        Compression::Gzip => RsCompression::Gzip,
        Compression::Snappy => RsCompression::Snappy,
        #[cfg(feature = "c-codecs")]
        Compression::Lz4 => RsCompression::Lz4,
        #[cfg(feature = "c-codecs")]
        Compression::Zstd => RsCompression::Zstd,
        #[allow(unreachable_patterns)]
        other => {
            return Err(format!(
                "rskafka: {other} needs a C codec crate; build with --features c-codecs"
            )
            .into());
        }
    })
}

pub async fn produce(args: &BenchArgs) -> Result<Outcome> {
    if args.acks != Acks::All {
        return Err("rskafka always produces with acks=-1; only --acks all applies".into());
    }
    let compression = codec(args.compression)?;
    let client = connect(&args.brokers).await?;
    let partitions = partition_clients(&client, &args.topic).await?;
    let payloads = Arc::new(Payloads::new(args.size));
    let chunk = args.chunk as u64;
    let chunks = args.count.div_ceil(chunk);
    let stride = partitions.len() as u64;

    let window = Window::start();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, partition) in partitions.into_iter().enumerate() {
        let payloads = Arc::clone(&payloads);
        let count = args.count;
        tasks.spawn(async move {
            let mut sent = 0u64;
            let mut j = k as u64;
            while j < chunks {
                let first = j * chunk;
                let last = (first + chunk).min(count);
                let timestamp = chrono::Utc::now();
                let records: Vec<Record> = (first..last)
                    .map(|i| Record {
                        key: None,
                        value: Some(payloads.get(i).to_vec()),
                        headers: Default::default(),
                        timestamp,
                    })
                    .collect();
                partition.produce(records, compression).await?;
                sent += last - first;
                j += stride;
            }
            Ok::<u64, RsError>(sent)
        });
    }
    let mut acked = 0u64;
    while let Some(joined) = tasks.join_next().await {
        acked += joined??;
    }
    Ok(window.finish("rskafka", "produce", acked, acked * args.size as u64))
}

/// What the per-partition consumer tasks report to the task that watches the total.
#[derive(Default)]
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    error: std::sync::Mutex<Option<String>>,
    changed: Notify,
}

pub async fn consume(args: &BenchArgs) -> Result<Outcome> {
    let client = connect(&args.brokers).await?;
    let partitions = partition_clients(&client, &args.topic).await?;
    let progress = Arc::new(Progress::default());
    let max_wait_ms = match args.fetch_max_wait_ms {
        Some(wait) => i32::try_from(wait)?,
        None => 500,
    };

    let window = Window::start();
    let mut tasks = tokio::task::JoinSet::new();
    for partition in partitions {
        let progress = Arc::clone(&progress);
        let p = partition.partition();
        tasks.spawn(async move {
            let mut stream = StreamConsumerBuilder::new(partition, StartOffset::Earliest)
                .with_max_wait_ms(max_wait_ms)
                .build();
            let mut tally = Tally::default();
            let mut reported = (0u64, 0u64);
            while let Some(item) = stream.next().await {
                let added = item
                    .map_err(|e| e.to_string())
                    .and_then(|(record, high_watermark)| {
                        let len = record.record.value.as_ref().map_or(0, Vec::len);
                        tally
                            .add(p, record.offset, len)
                            .map_err(|gap| gap.to_string())?;
                        Ok(record.offset + 1 >= high_watermark)
                    });
                match added {
                    Ok(caught_up) => {
                        // Report in bulk (a shared counter per record would add contention
                        // the client itself does not have), and always once caught up.
                        if caught_up || tally.records - reported.0 >= 4096 {
                            progress
                                .records
                                .fetch_add(tally.records - reported.0, Ordering::Relaxed);
                            progress
                                .bytes
                                .fetch_add(tally.bytes - reported.1, Ordering::Relaxed);
                            reported = (tally.records, tally.bytes);
                            progress.changed.notify_one();
                        }
                    }
                    Err(err) => {
                        *progress.error.lock().unwrap() = Some(format!("partition {p}: {err}"));
                        progress.changed.notify_one();
                        return;
                    }
                }
            }
        });
    }
    loop {
        let total = progress.records.load(Ordering::Relaxed);
        if total >= args.count {
            break;
        }
        if let Some(err) = progress.error.lock().unwrap().take() {
            return Err(format!("rskafka fetch: {err}").into());
        }
        if tokio::time::timeout(STALL, progress.changed.notified())
            .await
            .is_err()
        {
            return Err(format!(
                "rskafka: no record for {STALL:?} after {total} of {}",
                args.count
            )
            .into());
        }
    }
    let records = progress.records.load(Ordering::Relaxed);
    let outcome = window.finish(
        "rskafka",
        "consume",
        records,
        progress.bytes.load(Ordering::Relaxed),
    );
    tasks.abort_all();
    Ok(outcome)
}
