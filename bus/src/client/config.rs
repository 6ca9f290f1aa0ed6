//! Cluster client options, each default stated with its unit and reason.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::connection::ConnectionConfig;

/// Options shared by everything that talks to the cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `host:port` of one or more brokers to learn the cluster from.
    pub bootstrap: Vec<String>,
    /// Per-connection options (timeouts, client id, version pins).
    pub connection: ConnectionConfig,
    /// Refresh metadata at least this often even without errors. Default 5 min, Kafka's
    /// `metadata.max.age.ms`: picks up new partitions and moved leaders.
    pub metadata_max_age: Duration,
    /// How long a lookup waits for a topic that is unknown or has no leaders yet (just
    /// created, or electing). Default 10 s; after it, the lookup fails with `UnknownTopic`.
    pub metadata_wait: Duration,
    /// Retries of a Metadata request on connection errors. Default 3.
    pub metadata_retries: u32,
    /// Between retries of a failed request. Default 100 ms doubling to 1 s, ±20 % jitter:
    /// Kafka's `retry.backoff.ms` and `retry.backoff.max.ms`.
    pub retry_backoff: Backoff,
    /// Between reconnects to a broker that failed. Default 50 ms doubling to 1 s, ±20 %
    /// jitter: Kafka's `reconnect.backoff.ms` and `reconnect.backoff.max.ms`.
    pub reconnect_backoff: Backoff,
}

impl ClientConfig {
    /// Defaults with these bootstrap brokers.
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>) -> Self {
        ClientConfig {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            connection: ConnectionConfig::default(),
            metadata_max_age: Duration::from_secs(300),
            metadata_wait: Duration::from_secs(10),
            metadata_retries: 3,
            retry_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            reconnect_backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        }
    }

    /// Parses a comma-separated broker list, as `-b` and `KAFKA_BROKERS` give it.
    pub fn from_broker_list(list: &str) -> Self {
        ClientConfig::new(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        )
    }

    pub fn connection(mut self, connection: ConnectionConfig) -> Self {
        self.connection = connection;
        self
    }

    pub fn metadata_max_age(mut self, d: Duration) -> Self {
        self.metadata_max_age = d;
        self
    }

    pub fn metadata_wait(mut self, d: Duration) -> Self {
        self.metadata_wait = d;
        self
    }

    pub fn retry_backoff(mut self, b: Backoff) -> Self {
        self.retry_backoff = b;
        self
    }

    pub fn reconnect_backoff(mut self, b: Backoff) -> Self {
        self.reconnect_backoff = b;
        self
    }

    /// Rejects settings that cannot work, naming the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.bootstrap.is_empty() {
            return Err("bootstrap: at least one broker address is needed".into());
        }
        for addr in &self.bootstrap {
            if !addr.contains(':') {
                return Err(format!("bootstrap: {addr:?} is not host:port"));
            }
        }
        if self.metadata_max_age.is_zero() {
            return Err("metadata_max_age must be positive".into());
        }
        for (name, b) in [
            ("retry_backoff", &self.retry_backoff),
            ("reconnect_backoff", &self.reconnect_backoff),
        ] {
            if b.initial > b.max {
                return Err(format!("{name}: initial is above max"));
            }
            if !(0.0..=1.0).contains(&b.jitter) {
                return Err(format!("{name}: jitter must be within 0..=1"));
            }
        }
        self.connection
            .validate()
            .map_err(|e| format!("connection: {e}"))
    }
}
