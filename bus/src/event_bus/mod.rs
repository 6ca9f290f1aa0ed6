//! The event bus: `publish(domain, root, event)` and handler groups that each see every event,
//! over Kafka or an in-process backend with the same semantics.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bus::event_bus::BusError> {
//! use bus::event_bus::{BusConfig, Event, EventBus, HandlerError, ReceivedEvent};
//!
//! let bus = EventBus::connect(BusConfig::default()).await?; // memory backend
//! let sub = bus
//!     .subscribe(&["player"], "player-projector", |e: ReceivedEvent| async move {
//!         println!("{} {} {}", e.domain, e.root, e.event.event_type);
//!         Ok::<_, HandlerError>(())
//!     })
//!     .await?;
//! bus.publish("player", "p-1", Event::json("PlayerJoined", &serde_json::json!({"name": "ann"}))?)
//!     .await?;
//! sub.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! - Topics: `{prefix}.events.{domain}`; dead letters `{prefix}.dlq.{handler_group}`.
//! - Placement: `partitioner::bus_partition(domain, root, partitions)` (murmur2 of
//!   `domain ‖ 0 ‖ root`), so an aggregate's events keep their order. The record key is
//!   `bus_key(domain, root)`, so other clients can reproduce the placement.
//! - Handler group `h` is consumer group `{consumer_group}.h`: groups are independent.
//! - At least once: see `runtime.rs` for when offsets are committed.
//! - De-duplication: event ids a handler group finished are remembered in a [`DedupStore`]
//!   shared by every subscriber of one `EventBus`, so a redelivery to any member of the
//!   group in this process (after a rebalance, a member's crash or leave) is skipped. The
//!   default store, [`InProcessDedup`], cannot see other processes: a partition that moves to
//!   another process is handled again from the committed offset, unless the bus is given a
//!   shared store ([`EventBus::with_dedup_store`]).

mod backend;
mod config;
mod dedup;
mod dlq;
mod envelope;
mod handler;
mod kafka;
mod memory;
pub mod metrics;
mod runtime;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

pub use backend::{
    Backend, BusError, OutRecord, PartitionId, RevokeHook, SendResult, Subscription, TopicSpec,
};
pub use config::{
    BackendKind, BusConfig, ConfigError, ConsumerSection, ENV_BACKEND, ENV_BROKERS,
    ENV_CONSUMER_GROUP, ENV_TOPIC_PREFIX, HandlerSection, KafkaSection, MAX_PARTITION_QUEUE,
    MAX_PARTITIONS, ProducerSection, TopicSection,
};
pub use dedup::{DedupStore, InProcessDedup};
pub use dlq::{
    H_ATTEMPTS, H_ERROR, H_HANDLER_GROUP, H_ORIGINAL_OFFSET, H_ORIGINAL_PARTITION, H_ORIGINAL_TOPIC,
};
pub use envelope::{
    CONTENT_BYTES, CONTENT_JSON, Delivered, EnvelopeError, Event, H_CONTENT_TYPE, H_DOMAIN,
    H_EVENT_ID, H_EVENT_TYPE, H_ROOT, H_TIMESTAMP, InRecord, ReceivedEvent,
};
pub use handler::{BoxFuture, Handler, HandlerError, RetryPolicy};
pub use kafka::KafkaBackend;
pub use memory::MemoryBackend;
pub use runtime::SubscriberStats;
/// Event ids (`Event::id`), re-exported so a [`DedupStore`] can be written without naming
/// the same `uuid` version.
pub use uuid::Uuid;

use runtime::{GroupRuntime, Revoker, Settings};

/// A handle to the bus; clones share the backend.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    config: BusConfig,
    /// Partition counts of topics known to exist.
    partitions: Mutex<HashMap<String, i32>>,
    /// Shared by every subscriber of this bus (see the module docs).
    dedup: Mutex<Arc<dyn DedupStore>>,
    metrics: metrics::PublishMetrics,
}

/// The source name of a configuration handed to [`EventBus::connect`] in code.
const CODE_SOURCE: &str = "<config>";

impl EventBus {
    /// The backend `config` names: an in-process [`MemoryBackend`], or Kafka. The
    /// configuration is validated first (`BusError::Config` names the key).
    pub async fn connect(config: BusConfig) -> Result<EventBus, BusError> {
        config.validate_in(CODE_SOURCE)?;
        let backend: Arc<dyn Backend> = match config.backend {
            BackendKind::Memory => Arc::new(MemoryBackend::new(
                Duration::from_millis(config.kafka.consumer.poll_timeout_ms),
                config.kafka.consumer.max_poll_records,
            )),
            BackendKind::Kafka => Arc::new(KafkaBackend::connect(&config).await?),
        };
        Self::with_backend(backend, config)
    }

    /// A bus on a backend the caller built (a [`MemoryBackend`] shared by several buses in
    /// tests, standing for several processes). `config` is validated as by `connect`; its
    /// `backend` key is not used.
    pub fn with_backend(
        backend: Arc<dyn Backend>,
        config: BusConfig,
    ) -> Result<EventBus, BusError> {
        config.validate_in(CODE_SOURCE)?;
        let h = &config.handlers;
        let dedup = Arc::new(InProcessDedup::new(
            h.dedup_capacity,
            Duration::from_millis(h.dedup_window_ms),
        ));
        Ok(EventBus {
            inner: Arc::new(Inner {
                backend,
                config,
                partitions: Mutex::new(HashMap::new()),
                dedup: Mutex::new(dedup),
                metrics: metrics::PublishMetrics::default(),
            }),
        })
    }

    /// Replaces the de-duplication store (default [`InProcessDedup`], sized by
    /// `bus.handlers.dedup_capacity` and `dedup_window_ms`) for subscribers created from now
    /// on, in every clone of this bus. A store shared between processes makes a redelivery
    /// to another process a known duplicate too. `dedup_capacity = 0` still turns
    /// de-duplication off.
    pub fn with_dedup_store(self, store: Arc<dyn DedupStore>) -> EventBus {
        *lock(&self.inner.dedup) = store;
        self
    }

    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// Creates `topic` when missing; its partition count.
    async fn ensure(&self, topic: &str) -> Result<i32, BusError> {
        if let Some(&n) = lock(&self.inner.partitions).get(topic) {
            return Ok(n);
        }
        let t = &self.inner.config.kafka.topics;
        let n = self
            .inner
            .backend
            .ensure_topic(TopicSpec {
                name: topic.to_owned(),
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                retention_ms: t.retention_ms,
            })
            .await?;
        lock(&self.inner.partitions).insert(topic.to_owned(), n);
        Ok(n)
    }

    /// Publishes one event of aggregate `root` in `domain`, and waits until it is confirmed.
    pub async fn publish(
        &self,
        domain: &str,
        root: &str,
        event: Event,
    ) -> Result<Delivered, BusError> {
        self.publish_batch(vec![(domain.to_owned(), root.to_owned(), event)])
            .await
            .pop()
            .unwrap_or(Err(BusError::Closed))
    }

    /// [`publish`](Self::publish) of a JSON-serialised value.
    pub async fn publish_json<T: Serialize + ?Sized>(
        &self,
        domain: &str,
        root: &str,
        event_type: &str,
        value: &T,
    ) -> Result<Delivered, BusError> {
        self.publish(domain, root, Event::json(event_type, value)?)
            .await
    }

    /// Publishes `(domain, root, event)`s in one go (they share batches and requests) and
    /// answers each, in order. Events of one aggregate keep their order within the batch.
    pub async fn publish_batch(
        &self,
        events: Vec<(String, String, Event)>,
    ) -> Vec<Result<Delivered, BusError>> {
        let started = Instant::now();
        let mut results: Vec<Option<Result<Delivered, BusError>>> = Vec::new();
        let mut out = Vec::new();
        // Per record sent: its event's index and its topic (the records move into `send`).
        let mut slots = Vec::new();
        // One span per event, from placement until its answer: the event id is how a trace is
        // joined to the handler spans of every group that later sees the event.
        let mut spans = Vec::with_capacity(events.len());
        for (i, (domain, root, event)) in events.iter().enumerate() {
            results.push(None);
            let span = tracing::info_span!("bus.publish", event_id = %event.id, domain = %domain,
                root = %root, event_type = %event.event_type, topic = tracing::field::Empty,
                partition = tracing::field::Empty, offset = tracing::field::Empty);
            match self
                .prepare(domain, root, event)
                .instrument(span.clone())
                .await
            {
                Ok(r) => {
                    span.record("topic", &*r.topic);
                    slots.push((i, r.topic.clone()));
                    out.push(r);
                }
                Err(e) => {
                    span.in_scope(|| tracing::debug!(error = %e, "not published"));
                    results[i] = Some(Err(e));
                }
            }
            spans.push(span);
        }
        let batch = tracing::info_span!("bus.publish_batch", events = out.len());
        let answers = self.inner.backend.send(out).instrument(batch).await;
        for ((slot, topic), answer) in slots.into_iter().zip(answers) {
            let (domain, _, event) = &events[slot];
            self.inner
                .metrics
                .published(domain, answer.is_ok(), started.elapsed());
            let span = &spans[slot];
            match &answer {
                Ok((partition, offset)) => {
                    span.record("partition", partition);
                    span.record("offset", offset);
                    span.in_scope(|| tracing::debug!("published"));
                }
                Err(e) => span.in_scope(|| tracing::debug!(error = %e, "not published")),
            }
            results[slot] = Some(answer.map(|(partition, offset)| Delivered {
                event_id: event.id,
                topic,
                partition,
                offset,
            }));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(BusError::Closed)))
            .collect()
    }

    async fn prepare(
        &self,
        domain: &str,
        root: &str,
        event: &Event,
    ) -> Result<OutRecord, BusError> {
        config::check_topic_part(domain).map_err(|reason| BusError::InvalidName {
            what: "domain",
            reason,
        })?;
        let topic = self.inner.config.event_topic(domain);
        let partitions = self.ensure(&topic).await?;
        // Exactly `bus_partition(domain, root, partitions)`, without building the key twice.
        let key = partitioner::bus_key(domain, root)?;
        let partition = partitioner::partition_for_key(&key, partitions)?;
        Ok(OutRecord {
            topic: topic.into(),
            partition,
            key: Bytes::from(key),
            value: event.payload.clone(),
            headers: event.headers(domain, root),
        })
    }

    /// Runs `handler` for every event of `domains` as handler group `handler_group`, until
    /// the returned [`Subscriber`] is shut down. Several subscribers of one group (in this
    /// process or others) share the partitions; different groups each see every event.
    pub async fn subscribe<H: Handler>(
        &self,
        domains: &[&str],
        handler_group: &str,
        handler: H,
    ) -> Result<Subscriber, BusError> {
        config::check_topic_part(handler_group).map_err(|reason| BusError::InvalidName {
            what: "handler group",
            reason,
        })?;
        let cfg = &self.inner.config;
        let mut topics = Vec::new();
        for d in domains {
            config::check_topic_part(d).map_err(|reason| BusError::InvalidName {
                what: "domain",
                reason,
            })?;
            let t = cfg.event_topic(d);
            self.ensure(&t).await?;
            topics.push(t);
        }
        let dlq_topic = cfg.dlq_topic(handler_group);
        let dlq_partitions = self.ensure(&dlq_topic).await?;
        let h = &cfg.handlers;
        let settings = Settings {
            group: handler_group.to_owned(),
            policy: RetryPolicy {
                max_attempts: h.max_attempts,
                max_elapsed: Duration::from_millis(h.max_elapsed_ms),
                backoff: h.backoff(),
            },
            dedup: (h.dedup_capacity > 0).then(|| lock(&self.inner.dedup).clone()),
            queue: h.partition_queue,
            commit_interval: Duration::from_millis(cfg.kafka.consumer.commit_interval_ms),
            dlq_topic: dlq_topic.into(),
            dlq_partitions,
        };
        let rt = GroupRuntime::new(settings, Arc::new(handler), self.inner.backend.clone());
        let sub = self
            .inner
            .backend
            .subscribe(
                cfg.group_id(handler_group),
                topics,
                cfg.kafka.consumer.auto_offset_reset == "earliest",
                Arc::new(Revoker(Arc::downgrade(&rt))),
            )
            .await?;
        let (stop, stop_rx) = watch::channel(false);
        let span = tracing::info_span!("bus.subscriber", group = handler_group);
        let task = tokio::spawn(rt.clone().run(sub, stop_rx).instrument(span));
        Ok(Subscriber {
            group: handler_group.to_owned(),
            stop,
            task,
            runtime: rt,
        })
    }

    /// Flushes and closes the backend. Shut subscribers down first.
    pub async fn close(&self) -> Result<(), BusError> {
        self.inner.backend.close().await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running handler group member.
pub struct Subscriber {
    group: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), BusError>>,
    runtime: Arc<GroupRuntime>,
}

impl Subscriber {
    pub fn handler_group(&self) -> &str {
        &self.group
    }

    pub fn stats(&self) -> &SubscriberStats {
        &self.runtime.stats
    }

    /// Graceful stop: no new records, in-flight handlers finish, completed offsets are
    /// committed, the group is left (its partitions move to the other members at once).
    pub async fn shutdown(self) -> Result<(), BusError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(BusError::Unsupported(format!(
                "subscriber task failed: {e}"
            ))),
        }
    }

    /// Stops at once, committing nothing since the last periodic commit: what a crash does.
    /// For tests of at-least-once delivery.
    pub fn crash(self) {
        self.task.abort();
        self.runtime.abort_workers();
    }
}
