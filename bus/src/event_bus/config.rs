//! The event bus's settings: a `[bus]` TOML section read with serde, then environment
//! overrides, then one `validate()`.
//!
//! Every error names the key (`bus.kafka.producer.acks`, or the environment variable) and the
//! source it came from (the file path, `<string>`, or `environment`), because a deployment
//! with three layers of config is only debuggable when the message says where to look. A
//! value an environment variable set is reported under that variable, wherever the check
//! that refuses it runs. Unknown keys inside `[bus]` are rejected rather than ignored: a
//! misspelt `retention_ms` that silently keeps the default is worse than a refusal to start.
//! Other top-level tables are left alone, so `[bus]` can live in an application's own file.
//!
//! `validate_in` also makes every check the producer, consumer and group configurations
//! built from these values would make later (when the backend connects or a handler group
//! subscribes), so those failures too name a `bus.*` key and the file.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use kafka_proto::compression::Compression;

use crate::backoff::Backoff;
use crate::consumer::{AutoOffsetReset, ConsumerConfig};
use crate::group::GroupConfig;
use crate::producer::{Acks, ProducerConfig};
use crate::security::SecurityConfig;

/// The most partitions `bus.kafka.topics.partitions` may ask for: far above any real event
/// topic, and low enough that the memory backend's per-partition logs stay small.
pub const MAX_PARTITIONS: i32 = 100_000;

/// The most records `bus.handlers.partition_queue` may queue per partition (tokio's bounded
/// channel panics above `usize::MAX >> 3`; a queue this long already holds minutes of events).
pub const MAX_PARTITION_QUEUE: usize = 1 << 20;

/// The longest duration a `*_ms` key the Kafka clients put on the wire may hold: protocol
/// timeouts are `int32` milliseconds.
const MAX_WIRE_MS: u64 = i32::MAX as u64;

/// Why a configuration was refused. Both variants name the key and the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The source could not be read at all.
    #[error("{source_name}: cannot read: {message}")]
    Read {
        source_name: String,
        message: String,
    },
    /// A key is unknown, has the wrong type or an impossible value.
    #[error("{source_name}: key `{key}`: {message}")]
    Invalid {
        source_name: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The offending key (dotted path or environment variable), when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

/// Which transport carries the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendKind {
    /// In process, no broker: the quickstart and handler unit tests.
    Memory,
    Kafka,
}

/// The whole `[bus]` section. Not `PartialEq`: the security section holds secrets and
/// callbacks, which have no meaningful equality.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct BusConfig {
    /// Default `memory`, so a fresh checkout runs without a broker.
    pub backend: BackendKind,
    pub kafka: KafkaSection,
    pub handlers: HandlerSection,
    /// Keys whose value an environment variable set, and that variable: errors about those
    /// values name the variable, not a file the value is not in.
    #[serde(skip)]
    env_origins: Vec<(&'static str, &'static str)>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            backend: BackendKind::Memory,
            kafka: KafkaSection::default(),
            handlers: HandlerSection::default(),
            env_origins: Vec::new(),
        }
    }
}

/// `[bus.kafka]`. The topic layout (`topic_prefix`, `[bus.kafka.topics]`) applies to the
/// memory backend too, so both backends name and partition topics the same way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port`. Default `["localhost:9092"]`.
    pub brokers: Vec<String>,
    /// Topics are `{prefix}.events.{domain}` and `{prefix}.dlq.{handler_group}`. Default
    /// `angzarr`.
    pub topic_prefix: String,
    /// Prefix of every handler group's Kafka group id: handler group `h` joins consumer group
    /// `{consumer_group}.h`, so each handler group keeps its own offsets. Default
    /// `angzarr-handlers`.
    pub consumer_group: String,
    pub producer: ProducerSection,
    pub consumer: ConsumerSection,
    pub topics: TopicSection,
    /// `[bus.kafka.security]`: TLS and SASL of every connection the Kafka backend opens
    /// (unknown keys rejected, passwords redacted in `Debug`). Default `None`: plaintext.
    pub security: Option<SecurityConfig>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: vec!["localhost:9092".into()],
            topic_prefix: "angzarr".into(),
            consumer_group: "angzarr-handlers".into(),
            producer: ProducerSection::default(),
            consumer: ConsumerSection::default(),
            topics: TopicSection::default(),
            security: None,
        }
    }
}

/// `[bus.kafka.producer]`, mapped onto [`ProducerConfig`](crate::producer::ProducerConfig).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ProducerSection {
    /// `"all"`, `"1"` or `"0"`. Default `"all"`: an event confirmed to the caller survives a
    /// leader failure.
    pub acks: String,
    /// `none`, `gzip`, `snappy`, `lz4`, `zstd`. Default `none`.
    pub compression: String,
    /// Default 5 ms (the producer's default).
    pub linger_ms: u64,
    /// Default on: retries never duplicate or reorder an aggregate's events.
    pub idempotence: bool,
    /// Default 120 000 ms: how long `publish` may take before it fails.
    pub delivery_timeout_ms: u64,
}

impl ProducerSection {
    /// `acks` as the producer reads it; `None` for a value it does not accept.
    fn parsed_acks(&self) -> Option<Acks> {
        match self.acks.as_str() {
            "all" | "-1" => Some(Acks::All),
            "1" => Some(Acks::Leader),
            "0" => Some(Acks::None),
            _ => None,
        }
    }

    /// `compression` as the producer's codec; `None` for an unknown name.
    fn codec(&self) -> Option<Compression> {
        Compression::from_name(&self.compression)
    }
}

impl Default for ProducerSection {
    fn default() -> Self {
        ProducerSection {
            acks: "all".into(),
            compression: "none".into(),
            linger_ms: 5,
            idempotence: true,
            delivery_timeout_ms: 120_000,
        }
    }
}

/// `[bus.kafka.consumer]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ConsumerSection {
    /// Where a handler group with no committed offset starts: `earliest` (default: a new
    /// projection sees the whole history) or `latest`.
    pub auto_offset_reset: String,
    /// Records one poll hands to the dispatcher. Default 500 (Kafka's `max.poll.records`).
    pub max_poll_records: usize,
    /// Default 45 000 ms (Kafka 3.0+).
    pub session_timeout_ms: u64,
    /// Default 3 000 ms.
    pub heartbeat_interval_ms: u64,
    /// How often completed offsets are committed while running. Default 1 000 ms; a crash
    /// redelivers at most this much work.
    pub commit_interval_ms: u64,
    /// How long one poll waits for records. Default 100 ms.
    pub poll_timeout_ms: u64,
}

impl Default for ConsumerSection {
    fn default() -> Self {
        ConsumerSection {
            auto_offset_reset: "earliest".into(),
            max_poll_records: 500,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            commit_interval_ms: 1_000,
            poll_timeout_ms: 100,
        }
    }
}

/// `[bus.kafka.topics]`: how missing topics are created.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TopicSection {
    /// Default 12: enough parallelism for a dozen handler instances, and a partition count is
    /// part of the placement (`hash % partitions`), so it should be chosen once. At most
    /// [`MAX_PARTITIONS`].
    pub partitions: i32,
    /// Default 1 (a single dev broker); production clusters want 3.
    pub replication_factor: i16,
    /// `retention.ms` of created topics. Default 604 800 000 (7 days); -1 keeps forever.
    pub retention_ms: i64,
}

impl Default for TopicSection {
    fn default() -> Self {
        TopicSection {
            partitions: 12,
            replication_factor: 1,
            retention_ms: 604_800_000,
        }
    }
}

/// `[bus.handlers]`: retries, dead letters and de-duplication, for every handler group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HandlerSection {
    /// Attempts per event, the first included, before it is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Time budget per event from its first attempt; no retry starts after it. Default
    /// 30 000 ms. Together with `max_attempts` this bounds how long a poison event holds its
    /// partition.
    pub max_elapsed_ms: u64,
    /// First retry delay, doubling per attempt, ±20 % jitter. Default 100 ms.
    pub initial_backoff_ms: u64,
    /// Default 5 000 ms.
    pub max_backoff_ms: u64,
    /// Event ids the default de-duplication store remembers per handler group (shared by
    /// the group's subscribers on one `EventBus`), so a redelivery (after a rebalance, a
    /// member's crash or a retried commit) is not handled twice. Default 100 000; 0 turns
    /// de-duplication off, whatever the store.
    pub dedup_capacity: usize,
    /// How long an id is remembered. Default 600 000 ms (10 min).
    pub dedup_window_ms: u64,
    /// Records queued per partition between the poller and that partition's worker.
    /// Default 1 000; at most [`MAX_PARTITION_QUEUE`].
    pub partition_queue: usize,
}

impl Default for HandlerSection {
    fn default() -> Self {
        HandlerSection {
            max_attempts: 5,
            max_elapsed_ms: 30_000,
            initial_backoff_ms: 100,
            max_backoff_ms: 5_000,
            dedup_capacity: 100_000,
            dedup_window_ms: 600_000,
            partition_queue: 1_000,
        }
    }
}

impl HandlerSection {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.initial_backoff_ms),
            Duration::from_millis(self.max_backoff_ms),
        )
    }
}

/// A whole file: `[bus]` is ours (strictly checked); other top-level tables belong to the
/// application sharing the file and are not looked at.
#[derive(Deserialize)]
struct FileRoot {
    #[serde(default)]
    bus: BusConfig,
}

/// The environment variables that override the file.
pub const ENV_BACKEND: &str = "BUS_BACKEND";
pub const ENV_BROKERS: &str = "KAFKA_BROKERS";
pub const ENV_TOPIC_PREFIX: &str = "KAFKA_TOPIC_PREFIX";
pub const ENV_CONSUMER_GROUP: &str = "KAFKA_CONSUMER_GROUP";

const ENV_SOURCE: &str = "environment";

/// Which key each environment variable overrides.
const ENV_KEYS: [(&str, &str); 4] = [
    ("bus.backend", ENV_BACKEND),
    ("bus.kafka.brokers", ENV_BROKERS),
    ("bus.kafka.topic_prefix", ENV_TOPIC_PREFIX),
    ("bus.kafka.consumer_group", ENV_CONSUMER_GROUP),
];

impl BusConfig {
    /// Reads `path`, applies the process environment, validates.
    pub fn load(path: impl AsRef<Path>) -> Result<BusConfig, ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            source_name: name.clone(),
            message: e.to_string(),
        })?;
        let mut cfg = Self::parse(&text, &name)?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate_in(&name)?;
        Ok(cfg)
    }

    /// Defaults plus the process environment, validated: the configuration of a program
    /// without a file (the quickstart).
    pub fn from_env() -> Result<BusConfig, ConfigError> {
        let mut cfg = BusConfig::default();
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate_in(ENV_SOURCE)?;
        Ok(cfg)
    }

    /// Parses TOML text (a whole file with a `[bus]` table, possibly among the application's
    /// own tables); `source_name` is used in errors. Does not apply the environment or
    /// validate.
    pub fn parse(text: &str, source_name: &str) -> Result<BusConfig, ConfigError> {
        let root: FileRoot = toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            let mut key = e.span().and_then(|s| key_at(text, s.start));
            // An unknown table (`[bus.kafak]`) has no `=` on its line: name it from the message.
            if let Some(field) = message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                && key.as_deref().is_none_or(|k| !k.ends_with(field))
            {
                key = Some(match key {
                    Some(k) => format!("{k}.{field}"),
                    None => field.to_owned(),
                });
            }
            ConfigError::Invalid {
                source_name: source_name.to_owned(),
                key: key.unwrap_or_else(|| "<document>".into()),
                message: one_line(&message),
            }
        })?;
        Ok(root.bus)
    }

    /// Applies the overrides `BUS_BACKEND`, `KAFKA_BROKERS` (comma-separated),
    /// `KAFKA_TOPIC_PREFIX` and `KAFKA_CONSUMER_GROUP`, read through `get` (tests pass a map).
    /// Later errors about these values (from [`validate_in`](Self::validate_in)) name the
    /// variable and `environment`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            source_name: ENV_SOURCE.into(),
            key: key.into(),
            message,
        };
        for (key, var) in ENV_KEYS {
            if get(var).is_some() && !self.env_origins.iter().any(|(k, _)| *k == key) {
                self.env_origins.push((key, var));
            }
        }
        if let Some(v) = get(ENV_BACKEND) {
            self.backend = match v.trim().to_ascii_lowercase().as_str() {
                "memory" => BackendKind::Memory,
                "kafka" => BackendKind::Kafka,
                other => {
                    return Err(bad(
                        ENV_BACKEND,
                        format!("unknown backend {other:?}, expected `memory` or `kafka`"),
                    ));
                }
            };
        }
        if let Some(v) = get(ENV_BROKERS) {
            let brokers: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if brokers.is_empty() {
                return Err(bad(ENV_BROKERS, "no broker in the list".into()));
            }
            self.kafka.brokers = brokers;
        }
        if let Some(v) = get(ENV_TOPIC_PREFIX) {
            self.kafka.topic_prefix = v;
        }
        if let Some(v) = get(ENV_CONSUMER_GROUP) {
            self.kafka.consumer_group = v;
        }
        Ok(())
    }

    /// Rejects impossible values; errors name the key and `source_name` (or the environment
    /// variable that set the value, and `environment`).
    pub fn validate_in(&self, source_name: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            let (source_name, key) = match self.env_origins.iter().find(|(k, _)| *k == key) {
                Some((_, var)) => (ENV_SOURCE, *var),
                None => (source_name, key),
            };
            Err(ConfigError::Invalid {
                source_name: source_name.into(),
                key: key.into(),
                message,
            })
        };
        let k = &self.kafka;
        if self.backend == BackendKind::Kafka && k.brokers.is_empty() {
            return bad("bus.kafka.brokers", "empty, but backend is kafka".into());
        }
        if let Some(b) = k.brokers.iter().find(|b| !b.contains(':')) {
            return bad("bus.kafka.brokers", format!("{b:?} is not host:port"));
        }
        if let Err(m) = check_topic_part(&k.topic_prefix) {
            return bad("bus.kafka.topic_prefix", m);
        }
        if k.consumer_group.is_empty() {
            return bad("bus.kafka.consumer_group", "must not be empty".into());
        }
        let Some(acks) = k.producer.parsed_acks() else {
            return bad(
                "bus.kafka.producer.acks",
                format!("{:?}, expected \"all\", \"1\" or \"0\"", k.producer.acks),
            );
        };
        if k.producer.codec().is_none() {
            return bad(
                "bus.kafka.producer.compression",
                format!(
                    "unknown codec {:?} (none, gzip, snappy, lz4, zstd)",
                    k.producer.compression
                ),
            );
        }
        if k.producer.idempotence && acks != Acks::All {
            return bad(
                "bus.kafka.producer.acks",
                "idempotence needs acks = \"all\"".into(),
            );
        }
        if !matches!(k.consumer.auto_offset_reset.as_str(), "earliest" | "latest") {
            return bad(
                "bus.kafka.consumer.auto_offset_reset",
                format!(
                    "{:?}, expected \"earliest\" or \"latest\"",
                    k.consumer.auto_offset_reset
                ),
            );
        }
        if k.consumer.max_poll_records == 0 {
            return bad("bus.kafka.consumer.max_poll_records", "must be >= 1".into());
        }
        for (key, ms, zero_ok) in [
            ("bus.kafka.producer.linger_ms", k.producer.linger_ms, true),
            (
                "bus.kafka.producer.delivery_timeout_ms",
                k.producer.delivery_timeout_ms,
                false,
            ),
            (
                "bus.kafka.consumer.session_timeout_ms",
                k.consumer.session_timeout_ms,
                false,
            ),
            (
                "bus.kafka.consumer.heartbeat_interval_ms",
                k.consumer.heartbeat_interval_ms,
                false,
            ),
            (
                "bus.kafka.consumer.poll_timeout_ms",
                k.consumer.poll_timeout_ms,
                true,
            ),
            (
                "bus.kafka.consumer.commit_interval_ms",
                k.consumer.commit_interval_ms,
                true,
            ),
        ] {
            if ms == 0 && !zero_ok {
                return bad(key, "must be positive".into());
            }
            if ms > MAX_WIRE_MS {
                return bad(
                    key,
                    format!("{ms} does not fit in i32 milliseconds (at most {MAX_WIRE_MS})"),
                );
            }
        }
        if k.producer.delivery_timeout_ms < k.producer.linger_ms {
            return bad(
                "bus.kafka.producer.delivery_timeout_ms",
                format!(
                    "{} is below linger_ms ({}): batches would expire before they are sent",
                    k.producer.delivery_timeout_ms, k.producer.linger_ms
                ),
            );
        }
        if k.consumer.heartbeat_interval_ms >= k.consumer.session_timeout_ms {
            return bad(
                "bus.kafka.consumer.heartbeat_interval_ms",
                "must be below session_timeout_ms".into(),
            );
        }
        if let Some(sec) = &k.security
            && let Err(m) = sec.validate()
        {
            return bad("bus.kafka.security", m);
        }
        if !(1..=MAX_PARTITIONS).contains(&k.topics.partitions) {
            return bad(
                "bus.kafka.topics.partitions",
                format!(
                    "{}: must be from 1 to {MAX_PARTITIONS}",
                    k.topics.partitions
                ),
            );
        }
        if k.topics.replication_factor < 1 {
            return bad("bus.kafka.topics.replication_factor", "must be >= 1".into());
        }
        if k.topics.retention_ms < -1 || k.topics.retention_ms == 0 {
            return bad(
                "bus.kafka.topics.retention_ms",
                "must be -1 (forever) or positive".into(),
            );
        }
        let h = &self.handlers;
        if h.max_attempts == 0 {
            return bad("bus.handlers.max_attempts", "must be >= 1".into());
        }
        if h.initial_backoff_ms > h.max_backoff_ms {
            return bad(
                "bus.handlers.initial_backoff_ms",
                "must not exceed max_backoff_ms".into(),
            );
        }
        if !(1..=MAX_PARTITION_QUEUE).contains(&h.partition_queue) {
            return bad(
                "bus.handlers.partition_queue",
                format!(
                    "{}: must be from 1 to {MAX_PARTITION_QUEUE}",
                    h.partition_queue
                ),
            );
        }
        // What the clients would refuse later, should a rule exist that the checks above do
        // not mirror: refused now, under the section's key.
        if let Err(m) = self.producer_config().validate() {
            return bad("bus.kafka.producer", m);
        }
        if let Err(m) = self.consumer_config(true).validate() {
            return bad("bus.kafka.consumer", m);
        }
        if let Err(m) = self.group_config(self.group_id("h")).validate() {
            return bad("bus.kafka.consumer", m);
        }
        Ok(())
    }

    /// The Kafka backend's producer.
    pub(crate) fn producer_config(&self) -> ProducerConfig {
        let p = &self.kafka.producer;
        ProducerConfig::default()
            .acks(p.parsed_acks().unwrap_or(Acks::All))
            .idempotence(p.idempotence)
            .linger(Duration::from_millis(p.linger_ms))
            .delivery_timeout(Duration::from_millis(p.delivery_timeout_ms))
            .compression(p.codec().unwrap_or(Compression::None))
    }

    /// The Kafka backend's fetch settings for a handler group.
    pub(crate) fn consumer_config(&self, earliest: bool) -> ConsumerConfig {
        ConsumerConfig::default()
            .fetch_max_wait(Duration::from_millis(self.kafka.consumer.poll_timeout_ms))
            .auto_offset_reset(if earliest {
                AutoOffsetReset::Earliest
            } else {
                AutoOffsetReset::Latest
            })
    }

    /// The Kafka backend's consumer group for a handler group's `group_id`.
    pub(crate) fn group_config(&self, group_id: String) -> GroupConfig {
        let c = &self.kafka.consumer;
        GroupConfig::new(group_id)
            .session_timeout(Duration::from_millis(c.session_timeout_ms))
            .heartbeat_interval(Duration::from_millis(c.heartbeat_interval_ms))
            .max_poll_records(c.max_poll_records)
            // The runtime commits what its handlers finished, never what poll returned.
            .auto_commit(false)
    }

    /// `{prefix}.events.{domain}`.
    pub fn event_topic(&self, domain: &str) -> String {
        format!("{}.events.{domain}", self.kafka.topic_prefix)
    }

    /// `{prefix}.dlq.{handler_group}`.
    pub fn dlq_topic(&self, handler_group: &str) -> String {
        format!("{}.dlq.{handler_group}", self.kafka.topic_prefix)
    }

    /// The consumer group id of a handler group.
    pub fn group_id(&self, handler_group: &str) -> String {
        format!("{}.{handler_group}", self.kafka.consumer_group)
    }
}

/// A topic name part (prefix, domain, handler group): Kafka's legal characters, so the
/// composed name is legal too.
pub(crate) fn check_topic_part(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 200 {
        return Err("longer than 200 bytes".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{s:?} contains {c:?}; topic names allow only [a-zA-Z0-9._-]"
        ));
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The dotted key at byte `pos` of `text`: the last `[table]` header above it plus the key
/// whose value `pos` is in. toml reports where a bad value or unknown key is, not its path;
/// this turns that span into the name a user searches their file for. A value that spans
/// lines (a multi-line array or inline table) belongs to the key on the line it starts on.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let mut table = String::new();
    let mut key: Option<String> = None;
    // Open brackets and braces of the value being read: above 0, lines continue it.
    let mut depth = 0usize;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let line_end = line_start + line.len();
        let trimmed = line.trim();
        let mut value = line;
        if depth == 0 {
            if trimmed.starts_with('[') {
                table = trimmed
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                // An error about a whole table (an unknown table, a field given twice through
                // an alias) points at its header: the table is the key.
                if pos < line_end {
                    let bare = |c: char| c.is_ascii_alphanumeric() || "_-. ".contains(c);
                    let named = !table.is_empty() && table.chars().all(bare);
                    return named.then_some(table);
                }
                key = None;
                line_start = line_end;
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) if !trimmed.starts_with('#') => {
                    key = Some(k.trim().trim_matches('"').to_owned());
                    value = v;
                }
                _ => key = None,
            }
        }
        if pos < line_end || line_end == text.len() {
            let key = key?;
            return Some(if table.is_empty() {
                key
            } else {
                format!("{table}.{key}")
            });
        }
        depth = open_after(depth, value);
        line_start = line_end;
    }
    None
}

/// `depth` after the brackets and braces of `value` (one line), outside strings and comments.
fn open_after(mut depth: usize, value: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in value.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => break,
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{SaslMechanism, SecurityProtocol};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    const FILE: &str = r#"
[bus]
backend = "kafka"

[bus.kafka]
brokers = ["b1:9092", "b2:9092"]
topic_prefix = "angzarr"
consumer_group = "angzarr-handlers"

[bus.kafka.producer]
acks = "all"
compression = "lz4"
linger_ms = 10

[bus.kafka.consumer]
max_poll_records = 100

[bus.kafka.topics]
partitions = 6
replication_factor = 3
retention_ms = 86400000

[bus.handlers]
max_attempts = 7
"#;

    #[test]
    fn reads_the_documented_file() {
        let c = BusConfig::parse(FILE, "bus.toml").unwrap();
        c.validate_in("bus.toml").unwrap();
        assert_eq!(c.backend, BackendKind::Kafka);
        assert_eq!(c.kafka.brokers, ["b1:9092", "b2:9092"]);
        assert_eq!(c.kafka.producer.compression, "lz4");
        assert_eq!(c.kafka.producer.linger_ms, 10);
        assert_eq!(c.kafka.consumer.max_poll_records, 100);
        assert_eq!(c.kafka.topics.partitions, 6);
        assert_eq!(c.kafka.topics.retention_ms, 86_400_000);
        assert_eq!(c.handlers.max_attempts, 7);
        // Unset keys keep their defaults.
        assert_eq!(c.handlers.max_elapsed_ms, 30_000);
        assert_eq!(c.event_topic("player"), "angzarr.events.player");
        assert_eq!(
            c.dlq_topic("output-projector"),
            "angzarr.dlq.output-projector"
        );
        assert_eq!(
            c.group_id("player-projector"),
            "angzarr-handlers.player-projector"
        );
    }

    #[test]
    fn empty_file_is_the_memory_default() {
        let c = BusConfig::parse("", "empty.toml").unwrap();
        assert_eq!(format!("{c:?}"), format!("{:?}", BusConfig::default()));
        assert_eq!(c.backend, BackendKind::Memory);
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let text = FILE.replace("linger_ms = 10", "linger_msec = 10");
        let e = BusConfig::parse(&text, "conf/bus.toml").unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.producer.linger_msec"), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("conf/bus.toml") && msg.contains("linger_msec"),
            "{msg}"
        );

        let e = BusConfig::parse("[bus.kafak]\nbrokers = []\n", "x.toml").unwrap_err();
        assert!(
            e.to_string().contains("kafak") && e.to_string().contains("x.toml"),
            "{e}"
        );
    }

    #[test]
    fn bad_value_names_the_key_and_the_file() {
        let text = FILE.replace("partitions = 6", "partitions = \"six\"");
        let e = BusConfig::parse(&text, "bus.toml").unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.topics.partitions"), "{e}");
        assert!(
            e.to_string()
                .starts_with("bus.toml: key `bus.kafka.topics.partitions`"),
            "{e}"
        );

        let text = FILE.replace("backend = \"kafka\"", "backend = \"rabbit\"");
        let e = BusConfig::parse(&text, "bus.toml").unwrap_err();
        assert_eq!(e.key(), Some("bus.backend"), "{e}");

        // Well-typed but impossible: caught by validate, same shape of message.
        let text = FILE.replace("acks = \"all\"", "acks = \"2\"");
        let c = BusConfig::parse(&text, "bus.toml").unwrap();
        let e = c.validate_in("bus.toml").unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.producer.acks"));
        assert!(e.to_string().contains("bus.toml"), "{e}");
        let text = FILE.replace("partitions = 6", "partitions = 0");
        let e = BusConfig::parse(&text, "b.toml")
            .unwrap()
            .validate_in("b.toml")
            .unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.topics.partitions"));
        let text = FILE.replace("compression = \"lz4\"", "compression = \"brotli\"");
        let e = BusConfig::parse(&text, "b.toml")
            .unwrap()
            .validate_in("b.toml")
            .unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.producer.compression"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c = BusConfig::parse(FILE, "bus.toml").unwrap();
        c.apply_env(env(&[
            (ENV_BACKEND, "memory"),
            (ENV_BROKERS, "k1:9092, k2:9093,"),
            (ENV_TOPIC_PREFIX, "staging"),
            (ENV_CONSUMER_GROUP, "staging-handlers"),
        ]))
        .unwrap();
        assert_eq!(c.backend, BackendKind::Memory);
        assert_eq!(c.kafka.brokers, ["k1:9092", "k2:9093"]);
        assert_eq!(c.event_topic("hand"), "staging.events.hand");
        assert_eq!(c.group_id("g"), "staging-handlers.g");

        let e = c.apply_env(env(&[(ENV_BACKEND, "rabbit")])).unwrap_err();
        assert_eq!(e.key(), Some(ENV_BACKEND));
        assert!(e.to_string().contains("environment"), "{e}");
        let e = c.apply_env(env(&[(ENV_BROKERS, " , ")])).unwrap_err();
        assert_eq!(e.key(), Some(ENV_BROKERS));
        c.apply_env(env(&[(ENV_TOPIC_PREFIX, "bad prefix")]))
            .unwrap();
        let e = c.validate_in("bus.toml").unwrap_err();
        assert_eq!(e.key(), Some(ENV_TOPIC_PREFIX), "{e}");
        assert!(e.to_string().starts_with("environment: "), "{e}");
    }

    /// A value the environment set is reported under its variable, even when `validate_in`
    /// refuses it with a file's name in hand; the file's own values keep the file's name.
    #[test]
    fn environment_values_are_reported_under_the_variable() {
        let mut c = BusConfig::parse(FILE, "bus.toml").unwrap();
        c.apply_env(env(&[(ENV_BROKERS, "k1:9092,no-port")]))
            .unwrap();
        let e = c.validate_in("bus.toml").unwrap_err();
        assert_eq!(
            e,
            ConfigError::Invalid {
                source_name: "environment".into(),
                key: ENV_BROKERS.into(),
                message: "\"no-port\" is not host:port".into(),
            }
        );
        let mut c = BusConfig::parse(FILE, "bus.toml").unwrap();
        c.apply_env(env(&[(ENV_CONSUMER_GROUP, "")])).unwrap();
        assert_eq!(
            c.validate_in("bus.toml").unwrap_err().key(),
            Some(ENV_CONSUMER_GROUP)
        );
        // The environment set the brokers, the file the bad prefix.
        let text = FILE.replace("topic_prefix = \"angzarr\"", "topic_prefix = \"a b\"");
        let mut c = BusConfig::parse(&text, "bus.toml").unwrap();
        c.apply_env(env(&[(ENV_BROKERS, "k1:9092")])).unwrap();
        let e = c.validate_in("bus.toml").unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.topic_prefix"));
        assert!(e.to_string().starts_with("bus.toml: "), "{e}");
    }

    fn refused(edit: (&str, &str)) -> ConfigError {
        assert!(FILE.contains(edit.0) || edit.0.is_empty(), "{edit:?}");
        let text = if edit.0.is_empty() {
            format!("{FILE}{}", edit.1)
        } else {
            FILE.replace(edit.0, edit.1)
        };
        let c = BusConfig::parse(&text, "app.toml").unwrap();
        let e = c.validate_in("app.toml").unwrap_err();
        assert!(e.to_string().starts_with("app.toml: key `"), "{e}");
        e
    }

    /// What the producer, consumer and group configurations would refuse at connect or
    /// subscribe time is refused by `validate_in`, under the `bus.*` key and the file.
    #[test]
    fn client_rules_are_checked_under_the_bus_keys() {
        let e = refused(("linger_ms = 10", "linger_ms = 10\ndelivery_timeout_ms = 5"));
        assert_eq!(
            e.key(),
            Some("bus.kafka.producer.delivery_timeout_ms"),
            "{e}"
        );
        assert!(e.to_string().contains("linger_ms"), "{e}");
        let e = refused(("linger_ms = 10", "linger_ms = 10\ndelivery_timeout_ms = 0"));
        assert_eq!(
            e.key(),
            Some("bus.kafka.producer.delivery_timeout_ms"),
            "{e}"
        );
        let e = refused((
            "max_poll_records = 100",
            "max_poll_records = 100\npoll_timeout_ms = 2147483648",
        ));
        assert_eq!(e.key(), Some("bus.kafka.consumer.poll_timeout_ms"), "{e}");
        assert!(e.to_string().contains("i32"), "{e}");
        let e = refused((
            "max_poll_records = 100",
            "max_poll_records = 100\nsession_timeout_ms = 0",
        ));
        assert_eq!(
            e.key(),
            Some("bus.kafka.consumer.session_timeout_ms"),
            "{e}"
        );
        let e = refused((
            "max_poll_records = 100",
            "max_poll_records = 100\nsession_timeout_ms = 99999999999\nheartbeat_interval_ms = 1000",
        ));
        assert_eq!(
            e.key(),
            Some("bus.kafka.consumer.session_timeout_ms"),
            "{e}"
        );
        let e = refused((
            "max_poll_records = 100",
            "max_poll_records = 100\nsession_timeout_ms = 3000\nheartbeat_interval_ms = 3000",
        ));
        assert_eq!(
            e.key(),
            Some("bus.kafka.consumer.heartbeat_interval_ms"),
            "{e}"
        );
        // Every value these checks accept, the clients accept too.
        let c = BusConfig::parse(FILE, "app.toml").unwrap();
        c.validate_in("app.toml").unwrap();
        c.producer_config().validate().unwrap();
        c.consumer_config(true).validate().unwrap();
        c.group_config(c.group_id("g")).validate().unwrap();
    }

    /// Counts that size an allocation or a channel are bounded.
    #[test]
    fn absurd_sizes_are_refused() {
        let e = refused(("partitions = 6", "partitions = 2147483647"));
        assert_eq!(e.key(), Some("bus.kafka.topics.partitions"), "{e}");
        let e = refused((
            "max_attempts = 7",
            "max_attempts = 7\npartition_queue = 18446744073709551615",
        ));
        assert_eq!(e.key(), Some("bus.handlers.partition_queue"), "{e}");
        let e = refused(("max_attempts = 7", "max_attempts = 7\npartition_queue = 0"));
        assert_eq!(e.key(), Some("bus.handlers.partition_queue"), "{e}");
        let at_most = FILE.replace(
            "max_attempts = 7",
            &format!("max_attempts = 7\npartition_queue = {MAX_PARTITION_QUEUE}"),
        );
        BusConfig::parse(&at_most, "a.toml")
            .unwrap()
            .validate_in("a.toml")
            .unwrap();
    }

    /// `[bus]` may share a file with the application's tables; inside `[bus]` unknown keys
    /// are still refused.
    #[test]
    fn other_top_level_tables_are_left_alone() {
        let text = format!(
            "title = \"poker\"\n\n[database]\nurl = \"postgres://x\"\n\n{FILE}\n[server.http]\nport = 8080\n"
        );
        let c = BusConfig::parse(&text, "app.toml").unwrap();
        c.validate_in("app.toml").unwrap();
        assert_eq!(c.kafka.topics.partitions, 6);
        let bad = text.replace("[bus.handlers]\n", "[bus.handlers]\nretry = 1\n");
        let e = BusConfig::parse(&bad, "app.toml").unwrap_err();
        assert_eq!(e.key(), Some("bus.handlers.retry"), "{e}");
        let bad = text.replace("[bus.handlers]", "[bus.handler]");
        let e = BusConfig::parse(&bad, "app.toml").unwrap_err();
        assert!(e.to_string().contains("handler"), "{e}");
    }

    /// A type error inside a value that spans lines names the key the value belongs to.
    #[test]
    fn errors_inside_multi_line_values_name_their_key() {
        let text = FILE.replace(
            "brokers = [\"b1:9092\", \"b2:9092\"]",
            "brokers = [\n  \"b1:9092\", # the first\n  \"[b2]:9092\",\n  3,\n]",
        );
        let e = BusConfig::parse(&text, "bus.toml").unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.brokers"), "{e}");
        assert!(
            e.to_string()
                .starts_with("bus.toml: key `bus.kafka.brokers`"),
            "{e}"
        );
        // The key after the array is its own again.
        let text = text
            .replace("  3,\n", "")
            .replace("topic_prefix = \"angzarr\"", "topic_prefix = 5");
        let e = BusConfig::parse(&text, "bus.toml").unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.topic_prefix"), "{e}");
    }

    #[test]
    fn load_reads_a_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("bus-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bus.toml");
        std::fs::write(&path, "[bus]\nbackend = \"memory\"\nretries = 3\n").unwrap();
        let e = BusConfig::load(&path).unwrap_err();
        assert_eq!(e.key(), Some("bus.retries"));
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        let e = BusConfig::load(dir.join("missing.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn security_section_parses_validates_and_hides_the_password() {
        let text = "[bus]\nbackend = \"kafka\"\n\n[bus.kafka]\nbrokers = [\"k:9093\"]\n\n\
                    [bus.kafka.security]\nsecurity_protocol = \"SASL_SSL\"\n\n\
                    [bus.kafka.security.ssl]\nca = \"/etc/kafka/ca.pem\"\n\n\
                    [bus.kafka.security.sasl]\nmechanism = \"SCRAM-SHA-512\"\n\
                    username = \"svc\"\npassword = \"hunter2-s3cret\"\n";
        let c = BusConfig::parse(text, "sec.toml").unwrap();
        c.validate_in("sec.toml").unwrap();
        let sec = c.kafka.security.as_ref().unwrap();
        assert_eq!(sec.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            sec.tls.as_ref().unwrap().ca.as_deref(),
            Some(Path::new("/etc/kafka/ca.pem"))
        );
        let sasl = sec.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.username, "svc");
        assert_eq!(sasl.password.expose(), "hunter2-s3cret");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("svc"), "{debug}");

        // An unknown key inside the section names the key and the file.
        let bad = text.replace("username = ", "user_name = \"x\"\nusername = ");
        let e = BusConfig::parse(&bad, "sec.toml").unwrap_err();
        let key = e.key().unwrap();
        assert!(key.ends_with("user_name"), "{e}");
        assert!(key.starts_with("bus.kafka.security"), "{e}");
        assert!(e.to_string().starts_with("sec.toml: "), "{e}");

        // `protocol` is the alias of `security_protocol`; both at once are refused, by key.
        let alias = text.replace("security_protocol =", "protocol =");
        let c = BusConfig::parse(&alias, "sec.toml").unwrap();
        c.validate_in("sec.toml").unwrap();
        assert_eq!(
            c.kafka.security.as_ref().unwrap().protocol,
            SecurityProtocol::SaslSsl
        );
        let both = text.replace(
            "security_protocol = \"SASL_SSL\"",
            "security_protocol = \"SASL_SSL\"\nprotocol = \"SSL\"",
        );
        let e = BusConfig::parse(&both, "sec.toml").unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert_eq!(e.key(), Some("bus.kafka.security"), "{e}");

        // Well-typed but inconsistent: SASL_SSL without sasl settings.
        let cut = &text[..text.find("[bus.kafka.security.sasl]").unwrap()];
        let e = BusConfig::parse(cut, "sec.toml")
            .unwrap()
            .validate_in("sec.toml")
            .unwrap_err();
        assert_eq!(e.key(), Some("bus.kafka.security"), "{e}");
        assert!(e.to_string().contains("needs sasl"), "{e}");
    }
}
