//! Producer options, each default stated with its unit and the reason for it. Kafka's Java
//! defaults are kept where they are sensible, so a reader who knows `linger.ms` or
//! `delivery.timeout.ms` finds the same meaning here.

use std::time::Duration;

use kafka_proto::compression::Compression;

use crate::backoff::Backoff;

/// How many replicas must have a batch before the broker answers (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Acks {
    /// The broker does not answer at all; a record counts as delivered once its request is
    /// queued on the connection. Fastest, and records can be lost without anyone knowing.
    None,
    /// The leader answers once it has written the batch to its own log.
    Leader,
    /// The leader answers once every in-sync replica has the batch. Required for
    /// idempotence, because only then does a retry meet the broker state the first attempt
    /// left behind.
    All,
}

impl Acks {
    /// The `acks` field of a Produce request.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Options of one producer. Build with [`ProducerConfig::default`] and the setters, then
/// [`Producer::new`](super::Producer::new) runs [`validate`](Self::validate).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// How long a batch that is not full waits for more records before it is sent. Default
    /// 5 ms (Kafka 4.0's `linger.ms`): at high rates batches fill first and linger costs
    /// nothing; at low rates 5 ms buys much larger batches for a latency nobody notices.
    pub linger: Duration,
    /// Uncompressed bytes of one batch (record headers included) beyond which a new batch is
    /// started. Default 1,000,000 bytes, librdkafka's `batch.size`, far above Java's 16 KiB:
    /// per-batch costs (a request entry, a CRC setup, a completion, and the broker's own
    /// per-batch work) then vanish per record, while memory is only charged for what a batch
    /// really holds (its buffer starts at 16 KiB and doubles). It stays under Kafka's default
    /// `message.max.bytes` (1,048,588) with the batch header. Measured against tansu, 1M x 100 B
    /// and 200k x 1 KiB both ran 1.3-1.6x faster than with 256 KiB. A record larger than this
    /// travels alone.
    pub batch_size: usize,
    /// Bytes of record buffers the producer may hold (batches filling, waiting or in flight).
    /// Default 32 MiB (Java's `buffer.memory`). When it is full, `send` waits.
    pub buffer_memory: usize,
    /// How long `send` may wait for buffer memory or for the topic's metadata before it fails.
    /// Default 60 s (Java's `max.block.ms`).
    pub max_block: Duration,
    /// Upper bound on the time from `send` until a record is reported delivered or failed,
    /// retries included. Default 120 s (Java's `delivery.timeout.ms`).
    pub delivery_timeout: Duration,
    /// How long one Produce request may wait for its answer; also sent to the broker as the
    /// time it may wait for replication. Default 30 s (Java's `request.timeout.ms`).
    pub request_timeout: Duration,
    /// Replicas that must have a batch before it counts as written. Default [`Acks::All`]:
    /// no acknowledged record is lost when the leader fails, and idempotence needs it.
    pub acks: Acks,
    /// Retries of a batch after a retriable error. Default `u32::MAX`: retry until
    /// `delivery_timeout`, which is the bound users actually reason about (Java's default).
    pub retries: u32,
    /// Between retries of a batch: 100 ms doubling to 1 s, ±20 % jitter (Java's
    /// `retry.backoff.ms` and `retry.backoff.max.ms`).
    pub retry_backoff: Backoff,
    /// Produce requests outstanding per broker. Default 5 (Java's
    /// `max.in.flight.requests.per.connection`), the most the broker's idempotence state can
    /// check (it remembers five batches per producer and partition). Without idempotence and
    /// with retries on, the producer uses 1, because a retried batch could otherwise overtake
    /// a later one and reorder the partition.
    pub max_in_flight: usize,
    /// Idempotent writes: the broker drops a batch it already has, so retries never duplicate
    /// or reorder records. Default on, as in Kafka 3.0+; needs `acks = All` and
    /// `max_in_flight <= 5`.
    pub idempotence: bool,
    /// Codec for batches. Default none: compression is a trade of CPU for bandwidth that
    /// only the user can judge.
    pub compression: Compression,
    /// Largest Produce request, and so the largest record, in bytes. Default 1 MiB (Java's
    /// `max.request.size`, and about the broker's default `message.max.bytes`).
    pub max_request_size: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_size: 1_000_000,
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            acks: Acks::All,
            retries: u32::MAX,
            retry_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            max_in_flight: 5,
            idempotence: true,
            compression: Compression::None,
            max_request_size: 1024 * 1024,
        }
    }
}

/// The most in-flight batches per partition a broker's idempotence check can follow.
pub const MAX_IDEMPOTENT_IN_FLIGHT: usize = 5;

impl ProducerConfig {
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }

    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes;
        self
    }

    pub fn max_block(mut self, d: Duration) -> Self {
        self.max_block = d;
        self
    }

    pub fn delivery_timeout(mut self, d: Duration) -> Self {
        self.delivery_timeout = d;
        self
    }

    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    pub fn retry_backoff(mut self, b: Backoff) -> Self {
        self.retry_backoff = b;
        self
    }

    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    pub fn idempotence(mut self, on: bool) -> Self {
        self.idempotence = on;
        self
    }

    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// The in-flight limit the producer really applies: 1 when retries without idempotence
    /// could reorder a partition.
    pub fn effective_max_in_flight(&self) -> usize {
        if !self.idempotence && self.retries > 0 {
            1
        } else {
            self.max_in_flight
        }
    }

    /// Rejects settings that cannot work together, naming the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.idempotence && self.acks != Acks::All {
            return Err(
                "idempotence needs acks = All: with fewer acknowledgements a retry can \
                        meet a broker that lost the first attempt's state"
                    .into(),
            );
        }
        if self.idempotence && self.max_in_flight > MAX_IDEMPOTENT_IN_FLIGHT {
            return Err(format!(
                "idempotence allows at most {MAX_IDEMPOTENT_IN_FLIGHT} requests in flight \
                 (max_in_flight is {}): the broker checks only that many batches per partition",
                self.max_in_flight
            ));
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("batch_size must be positive".into());
        }
        if self.max_request_size < 1024 {
            return Err("max_request_size below 1 KiB cannot hold a batch of one record".into());
        }
        if self.batch_size > self.max_request_size {
            return Err(format!(
                "batch_size ({}) above max_request_size ({}) makes full batches unsendable",
                self.batch_size, self.max_request_size
            ));
        }
        if self.buffer_memory < self.max_request_size {
            return Err(format!(
                "buffer_memory ({}) below max_request_size ({}) could never hold the largest \
                 record",
                self.buffer_memory, self.max_request_size
            ));
        }
        // Each duration is converted to an i32 of milliseconds somewhere (the request's
        // timeout field) or bounds a wait; zero would fail every request or send.
        for (name, d) in [
            ("delivery_timeout", self.delivery_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.request_timeout.as_millis() > i32::MAX as u128 {
            return Err("request_timeout must fit in i32 milliseconds".into());
        }
        if self.delivery_timeout < self.linger {
            return Err(
                "delivery_timeout below linger would expire batches before they are sent".into(),
            );
        }
        if self.retry_backoff.initial > self.retry_backoff.max {
            return Err("retry_backoff: initial is above max".into());
        }
        if !(0.0..=1.0).contains(&self.retry_backoff.jitter) {
            return Err("retry_backoff: jitter must be within 0..=1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_idempotent() {
        let c = ProducerConfig::default();
        c.validate().unwrap();
        assert!(c.idempotence);
        assert_eq!(c.acks, Acks::All);
        assert_eq!(c.effective_max_in_flight(), 5);
    }

    #[test]
    fn impossible_combinations_are_rejected_by_name() {
        let cases = [
            (ProducerConfig::default().acks(Acks::Leader), "acks"),
            (ProducerConfig::default().max_in_flight(6), "max_in_flight"),
            (ProducerConfig::default().max_in_flight(0), "max_in_flight"),
            (ProducerConfig::default().batch_size(0), "batch_size"),
            (
                ProducerConfig::default().batch_size(2 << 20),
                "max_request_size",
            ),
            (
                ProducerConfig::default().buffer_memory(1000),
                "buffer_memory",
            ),
            (
                ProducerConfig::default().delivery_timeout(Duration::ZERO),
                "delivery_timeout",
            ),
            (
                ProducerConfig::default().request_timeout(Duration::from_secs(1 << 31)),
                "request_timeout",
            ),
        ];
        for (config, word) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.contains(word), "{err:?} should name {word}");
        }
    }

    #[test]
    fn without_idempotence_retries_cap_in_flight_at_one() {
        let c = ProducerConfig::default()
            .idempotence(false)
            .acks(Acks::Leader)
            .max_in_flight(10);
        c.validate().unwrap();
        assert_eq!(c.effective_max_in_flight(), 1);
        assert_eq!(c.clone().retries(0).effective_max_in_flight(), 10);
    }
}
