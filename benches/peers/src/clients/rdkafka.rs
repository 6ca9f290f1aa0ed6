//! rdkafka (librdkafka) through its lowest-overhead Rust API: `BaseProducer` with delivery
//! callbacks served by polling on the sending thread, and a group-less `BaseConsumer` with every
//! partition assigned at the beginning. Both are synchronous; librdkafka's own threads do the
//! network I/O, so no async runtime runs during the timed window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::Result;
use crate::args::{BenchArgs, Compression};
use crate::measure::{Outcome, Window};
use crate::payload::Payloads;
use crate::tally::Tally;

/// How long any single wait may take before the run is declared stuck.
const STALL: Duration = Duration::from_secs(120);

/// librdkafka's version string, for the report.
pub fn version() -> String {
    rdkafka::util::get_rdkafka_version().1
}

fn base_config(args: &BenchArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("client.id", "peer-bench-rdkafka");
    config
}

/// Counts outcomes in the delivery callback, which librdkafka runs inside `poll` on the
/// sending thread; the first error is kept to report it.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap();
                first.get_or_insert_with(|| err.to_string());
            }
        }
    }
}

pub fn produce(args: &BenchArgs) -> Result<Outcome> {
    let codec = match args.compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    };
    let producer: BaseProducer<Deliveries> = base_config(args)
        .set("acks", args.acks.name())
        .set("compression.codec", codec)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_bytes.to_string())
        .create_with_context(Deliveries::default())?;
    // Metadata for the topic before the clock starts, as the other clients do when they look
    // up partitions; otherwise the first batch would also pay for it.
    producer.client().fetch_metadata(Some(&args.topic), STALL)?;

    let payloads = Payloads::new(args.size);
    let context = producer.context();
    let window = Window::start();
    for i in 0..args.count {
        let mut record = BaseRecord::<(), [u8]>::to(&args.topic).payload(payloads.get(i));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve delivery reports, which frees it.
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((err, _)) => return Err(format!("rdkafka send: {err}").into()),
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(STALL)?;
    // flush returns once the queue is empty; the last callbacks may still be pending.
    while context.acked.load(Ordering::Relaxed) + context.failed.load(Ordering::Relaxed)
        < args.count
    {
        producer.poll(Duration::from_millis(10));
    }
    let outcome = window.finish(
        "rdkafka",
        "produce",
        args.count,
        args.count * args.size as u64,
    );
    if let Some(err) = context.first_error.lock().unwrap().take() {
        return Err(format!(
            "rdkafka: {} of {} records failed, first error: {err}",
            context.failed.load(Ordering::Relaxed),
            args.count
        )
        .into());
    }
    Ok(outcome)
}

pub fn consume(args: &BenchArgs) -> Result<Outcome> {
    // Partitions are assigned by hand and nothing is committed, which keeps group membership
    // out of the measurement, as for the other clients. librdkafka refuses `assign` without a
    // group.id ("Local: Unknown group"), so one is set; it only looks up the coordinator.
    let mut config = base_config(args);
    config
        .set("group.id", format!("peer-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    if let Some(wait) = args.fetch_max_wait_ms {
        config.set("fetch.wait.max.ms", wait.to_string());
    }
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(&args.topic), STALL)?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == args.topic)
        .ok_or_else(|| format!("topic {} not in metadata", args.topic))?;
    if let Some(err) = topic.error() {
        return Err(format!("topic {}: {:?}", args.topic, err).into());
    }
    let mut assignment = TopicPartitionList::new();
    for p in topic.partitions() {
        assignment.add_partition_offset(&args.topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;

    let window = Window::start();
    let mut tally = Tally::default();
    let mut idle = Duration::ZERO;
    while tally.records < args.count {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                tally.add(message.partition(), message.offset(), message.payload_len())?;
                idle = Duration::ZERO;
            }
            Some(Err(err)) => return Err(format!("rdkafka poll: {err}").into()),
            None => {
                idle += Duration::from_millis(100);
                if idle >= STALL {
                    return Err(format!(
                        "rdkafka: no record for {STALL:?} after {} of {}",
                        tally.records, args.count
                    )
                    .into());
                }
            }
        }
    }
    Ok(window.finish("rdkafka", "consume", tally.records, tally.bytes))
}
