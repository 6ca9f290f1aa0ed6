//! `kbus bench produce|consume`: throughput of this client against a real broker, printed as
//! one JSON line (records, seconds, records/s, MB/s, CPU seconds, peak RSS) so runs can be
//! compared with other clients measured the same way (benches/peers).

use std::time::{Duration, Instant};

use bus::admin::NewTopic;
use bus::consumer::{ConsumerConfig, Offset, PartitionConsumer};
use bus::producer::{Producer, Record};
use bytes::Bytes;

use crate::args::Args;
use crate::usage;

/// Progress on stderr, at most every two seconds, only for runs long enough to need it.
pub struct Progress {
    what: &'static str,
    start: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        let now = Instant::now();
        Progress {
            what,
            start: now,
            last: now,
        }
    }

    pub fn tick(&mut self, done: u64) {
        // Checking the clock per record would cost more than the rest of the loop.
        if !done.is_multiple_of(4096) {
            return;
        }
        let now = Instant::now();
        if now - self.last >= Duration::from_secs(2) {
            self.last = now;
            let secs = (now - self.start).as_secs_f64();
            eprintln!(
                "kbus: {} {done} records ({:.0} records/s)",
                self.what,
                done as f64 / secs
            );
        }
    }
}

/// Record values, by the recipe every client in benches/peers uses (its README): a 1 MiB pool
/// of xorshift64 letters, record `i` a `size`-byte window at `(i * 7919) % 2^20`. Letters give
/// compression something to work with; sliding windows keep identical records from making it
/// look free. Each value is a zero-copy slice of the pool.
struct Values {
    pool: Bytes,
    size: usize,
}

impl Values {
    const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
    const POOL_LEN: usize = 1 << 20;
    const STRIDE: u64 = 7919;

    fn new(size: usize) -> Self {
        let mut x = Self::SEED;
        let mut pool = Vec::with_capacity(Self::POOL_LEN + size);
        for _ in 0..Self::POOL_LEN + size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            pool.push(b'a' + (x % 26) as u8);
        }
        Values {
            pool: pool.into(),
            size,
        }
    }

    fn get(&self, i: u64) -> Bytes {
        let o = (u128::from(i) * u128::from(Self::STRIDE) % Self::POOL_LEN as u128) as usize;
        self.pool.slice(o..o + self.size)
    }
}

struct Report {
    mode: &'static str,
    records: u64,
    bytes: u64,
    seconds: f64,
    cpu_seconds: f64,
}

impl Report {
    fn json(&self) -> String {
        let peak = usage::peak_rss_bytes().unwrap_or(0);
        format!(
            "{{\"client\":\"kbus\",\"mode\":\"{}\",\"records\":{},\"bytes\":{},\"seconds\":{:.6},\"records_per_sec\":{:.1},\"mb_per_sec\":{:.3},\"cpu_seconds\":{:.3},\"cpu_us_per_record\":{:.4},\"peak_rss_bytes\":{}}}",
            self.mode,
            self.records,
            self.bytes,
            self.seconds,
            self.records as f64 / self.seconds,
            self.bytes as f64 / self.seconds / 1e6,
            self.cpu_seconds,
            self.cpu_seconds * 1e6 / self.records.max(1) as f64,
            peak
        )
    }
}

pub async fn run(mut args: Args, brokers: &str) -> Result<(), String> {
    let mode = args
        .positional()
        .ok_or("bench: expected produce or consume")?;
    let topic = args
        .value(Some("-t"), "--topic")?
        .unwrap_or("kbus-bench".into());
    let count = args.parsed::<u64>(None, "--count")?.unwrap_or(1_000_000);
    let size = args.parsed::<usize>(None, "--size")?.unwrap_or(100);
    let partitions = args.parsed::<i32>(None, "--partitions")?.unwrap_or(6);
    if count == 0 {
        return Err("--count must be at least 1".into());
    }
    if size > 16 << 20 {
        return Err("--size above 16 MiB is not a record size a broker accepts".into());
    }
    if partitions < 1 {
        return Err("--partitions must be at least 1".into());
    }
    let report = match mode.as_str() {
        "produce" => {
            let cfg = crate::produce::producer_config(&mut args)?;
            args.finish()?;
            let client = crate::connect(brokers).await?;
            if client.topic(&topic).await.is_err() {
                client
                    .admin()
                    .create_topic(
                        NewTopic::new(&topic)
                            .partitions(partitions)
                            .replication_factor(1),
                    )
                    .await
                    .map_err(|e| format!("creating {topic}: {e}"))?;
            }
            let producer = Producer::new(client, cfg)
                .await
                .map_err(|e| e.to_string())?;
            let values = Values::new(size);
            let topic: std::sync::Arc<str> = topic.into();
            let mut progress = Progress::new("produced");
            let cpu0 = usage::cpu_seconds().unwrap_or(0.0);
            let start = Instant::now();
            for i in 0..count {
                producer
                    .send_and_forget(Record::new(topic.clone()).value(values.get(i)))
                    .await
                    .map_err(|e| e.to_string())?;
                progress.tick(i + 1);
            }
            producer.close().await.map_err(|e| e.to_string())?;
            Report {
                mode: "produce",
                records: count,
                bytes: count * size as u64,
                seconds: start.elapsed().as_secs_f64(),
                cpu_seconds: usage::cpu_seconds().unwrap_or(0.0) - cpu0,
            }
        }
        "consume" => {
            for flag in ["--acks", "--compression", "-z", "--linger-ms"] {
                // Accepted for symmetry with `bench produce`, meaningless here.
                let _ = args.value(None, flag)?;
            }
            let mut cfg = ConsumerConfig::default();
            if let Some(ms) = args.parsed::<u64>(None, "--fetch-max-wait-ms")? {
                cfg = cfg.fetch_max_wait(Duration::from_millis(ms));
            }
            args.finish()?;
            let client = crate::connect(brokers).await?;
            let meta = client.topic(&topic).await.map_err(|e| e.to_string())?;
            let mut consumer = PartitionConsumer::new(client, cfg).map_err(|e| e.to_string())?;
            consumer
                .assign(
                    meta.partitions
                        .iter()
                        .map(|p| (topic.as_str(), p.partition, Offset::Earliest)),
                )
                .map_err(|e| e.to_string())?;
            let mut progress = Progress::new("consumed");
            let cpu0 = usage::cpu_seconds().unwrap_or(0.0);
            let start = Instant::now();
            let (mut records, mut bytes) = (0u64, 0u64);
            while records < count {
                let batch = tokio::time::timeout(Duration::from_secs(30), consumer.poll_batch())
                    .await
                    .map_err(|_| {
                        format!("no records for 30 s after {records} of {count}: is the topic that full?")
                    })?
                    .map_err(|e| e.to_string())?;
                for r in &batch {
                    bytes += r.value.as_ref().map_or(0, |v| v.len() as u64)
                        + r.key.as_ref().map_or(0, |k| k.len() as u64);
                }
                records += batch.len() as u64;
                progress.tick(records - records % 4096);
            }
            Report {
                mode: "consume",
                records,
                bytes,
                seconds: start.elapsed().as_secs_f64(),
                cpu_seconds: usage::cpu_seconds().unwrap_or(0.0) - cpu0,
            }
        }
        other => {
            return Err(format!(
                "bench: unknown mode {other:?} (produce or consume)"
            ));
        }
    };
    println!("{}", report.json());
    Ok(())
}
