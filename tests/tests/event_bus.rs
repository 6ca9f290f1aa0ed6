//! The event bus's behavioural suite (`integration_tests::event_bus_suite`) against the
//! memory backend (always) and against Kafka on the broker (`KAFKA_BOOTSTRAP`), plus the
//! checks only one backend can make.

use std::sync::Arc;
use std::time::Duration;

use bus::consumer::{ConsumerConfig, Offset, PartitionConsumer};
use bus::event_bus::{BackendKind, BusConfig, BusError, EventBus, InRecord, MemoryBackend};
use integration_tests::event_bus_suite::{BoxFuture, Factory, Fixture};

fn memory_factory() -> Option<Factory> {
    Some(Arc::new(
        |cfg: BusConfig| -> BoxFuture<Result<Fixture, BusError>> {
            Box::pin(async move {
                let backend = MemoryBackend::new(
                    Duration::from_millis(cfg.kafka.consumer.poll_timeout_ms),
                    cfg.kafka.consumer.max_poll_records,
                );
                let (reader, shared, cfg2) = (backend.clone(), backend.clone(), cfg.clone());
                Ok(Fixture {
                    bus: EventBus::with_backend(Arc::new(backend), cfg)?,
                    another_process: Arc::new(move || -> BoxFuture<EventBus> {
                        let bus = EventBus::with_backend(Arc::new(shared.clone()), cfg2.clone());
                        Box::pin(async move { bus.unwrap() })
                    }),
                    read_topic: Arc::new(move |t: String| -> BoxFuture<Vec<InRecord>> {
                        let r = reader.records(&t);
                        Box::pin(async move { r })
                    }),
                })
            })
        },
    ))
}

/// Every record of `topic`: whatever a few seconds of fetching from the start bring.
async fn read_kafka_topic(addr: String, topic: String) -> Vec<InRecord> {
    let client = bus::Client::connect(bus::ClientConfig::new([addr]))
        .await
        .unwrap();
    let partitions = client.topic(&topic).await.unwrap().partition_count();
    let mut consumer = PartitionConsumer::new(
        client,
        ConsumerConfig::default().fetch_max_wait(Duration::from_millis(100)),
    )
    .unwrap();
    consumer
        .assign((0..partitions).map(|p| (topic.as_str(), p, Offset::Earliest)))
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        // poll_batch waits for records; an idle topic is the end of this read.
        let Ok(batch) =
            tokio::time::timeout(Duration::from_millis(1500), consumer.poll_batch()).await
        else {
            break;
        };
        for r in batch.unwrap() {
            out.push(InRecord {
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|h| (h.key.clone().into(), h.value.clone().unwrap_or_default()))
                    .collect(),
            });
        }
    }
    out
}

/// `cfg` pointed at the test broker, with what the tests need of Kafka.
fn on_kafka(mut cfg: BusConfig, addr: &str) -> BusConfig {
    cfg.backend = BackendKind::Kafka;
    cfg.kafka.brokers = vec![addr.to_owned()];
    // tansu 0.6 gives every idempotent producer the same id, so concurrent tests'
    // producers would fence each other.
    cfg.kafka.producer.idempotence = false;
    // A crashed member holds its partitions until its session expires.
    cfg.kafka.consumer.session_timeout_ms = 6_000;
    cfg.kafka.consumer.heartbeat_interval_ms = 1_000;
    cfg
}

fn kafka_factory() -> Option<Factory> {
    let addr = integration_tests::bootstrap()?;
    Some(Arc::new(
        move |cfg: BusConfig| -> BoxFuture<Result<Fixture, BusError>> {
            let addr = addr.clone();
            Box::pin(async move {
                let cfg = on_kafka(cfg, &addr);
                let cfg2 = cfg.clone();
                Ok(Fixture {
                    bus: EventBus::connect(cfg).await?,
                    another_process: Arc::new(move || -> BoxFuture<EventBus> {
                        let cfg = cfg2.clone();
                        Box::pin(async move { EventBus::connect(cfg).await.unwrap() })
                    }),
                    read_topic: Arc::new(move |t: String| -> BoxFuture<Vec<InRecord>> {
                        Box::pin(read_kafka_topic(addr.clone(), t))
                    }),
                })
            })
        },
    ))
}

/// `[bus.kafka.security]` reaches the Kafka backend's connections: with `protocol = "SSL"`
/// the first bytes the "broker" receives are a TLS handshake record (0x16, version 3.x), not
/// a Kafka request (a 4-byte big-endian length). No broker needed: a bare listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_section_reaches_the_kafka_connections() {
    use tokio::io::AsyncReadExt;

    async fn first_bytes(security: &str) -> [u8; 2] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let text =
            format!("[bus]\nbackend = \"kafka\"\n[bus.kafka]\nbrokers = [\"{addr}\"]\n{security}");
        let cfg = BusConfig::parse(&text, "tls.toml").unwrap();
        cfg.validate_in("tls.toml").unwrap();
        let client = tokio::spawn(EventBus::connect(cfg));
        let mut buf = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), async {
            let (mut sock, _) = listener.accept().await.unwrap();
            sock.read_exact(&mut buf).await.unwrap();
        })
        .await
        .expect("the backend connects");
        client.abort();
        buf
    }

    let tls = first_bytes("[bus.kafka.security]\nprotocol = \"SSL\"\n").await;
    assert_eq!(tls, [0x16, 0x03], "a TLS handshake record");
    let plain = first_bytes("").await;
    assert_eq!(plain[0], 0, "a Kafka request's length prefix: {plain:?}");
}

/// Publishes a poison event (its handler fails it, retriably, every time) and then its
/// aggregate's next event, and waits until the next one is handled (failing after `limit`,
/// if any): how long the poison held the partition (its first attempt to the next event's),
/// how often it was tried, and the subscriber.
async fn poison_then_next(
    bus: &EventBus,
    limit: Option<Duration>,
) -> (Duration, usize, bus::event_bus::Subscriber) {
    use bus::event_bus::{Event, HandlerError, ReceivedEvent};
    use std::sync::atomic::Ordering;
    use tokio::time::Instant;
    let log: Arc<std::sync::Mutex<Vec<(String, Instant)>>> = Arc::default();
    let l2 = log.clone();
    let sub = bus
        .subscribe(&["hand"], "budget", move |e: ReceivedEvent| {
            let log = l2.clone();
            async move {
                log.lock()
                    .unwrap()
                    .push((e.event.event_type.clone(), Instant::now()));
                if e.event.event_type == "Poison" {
                    return Err(HandlerError::retriable("always"));
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    for t in ["Poison", "Next"] {
        bus.publish("hand", "h-1", Event::raw(t, "text/plain", ""))
            .await
            .unwrap();
    }
    let deadline = limit.map(|l| Instant::now() + l);
    while sub.stats().handled.load(Ordering::SeqCst) == 0 {
        assert!(
            deadline.is_none_or(|d| Instant::now() < d),
            "Next never handled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = log.lock().unwrap().clone();
    let next_at = log.iter().find(|(t, _)| t == "Next").unwrap().1;
    let attempts = log.iter().filter(|(t, _)| t == "Poison").count();
    (next_at - log[0].1, attempts, sub)
}

mod memory {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bus::event_bus::{
        Backend, BoxFuture as BusFuture, Event, HandlerError, OutRecord, ReceivedEvent, RevokeHook,
        SendResult, Subscription, TopicSpec,
    };

    use super::*;
    integration_tests::event_bus_suite!(memory_factory());

    /// In virtual time: a shutdown while a handler waits out a long retry backoff ends at
    /// once instead of when the backoff would; the event is left uncommitted, so the next
    /// member gets it.
    #[tokio::test(start_paused = true)]
    async fn shutdown_does_not_wait_out_a_retry_backoff() {
        let mut cfg = integration_tests::event_bus_suite::test_config();
        cfg.handlers.max_attempts = 10;
        cfg.handlers.initial_backoff_ms = 3_600_000;
        cfg.handlers.max_backoff_ms = 3_600_000;
        cfg.handlers.max_elapsed_ms = 100 * 3_600_000;
        let (group_id, topic) = (cfg.group_id("patient"), cfg.event_topic("hand"));
        let backend = MemoryBackend::new(Duration::from_millis(50), 100);
        let bus = EventBus::with_backend(Arc::new(backend.clone()), cfg.clone()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = bus
            .subscribe(&["hand"], "patient", move |e: ReceivedEvent| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(e.attempt);
                    Err::<(), _>(HandlerError::retriable("down"))
                }
            })
            .await
            .unwrap();
        let d = bus
            .publish("hand", "h-1", Event::raw("Dealt", "text/plain", ""))
            .await
            .unwrap();
        assert_eq!(rx.recv().await, Some(1));
        tokio::time::sleep(Duration::from_secs(1)).await; // well into the hour-long backoff
        let before = tokio::time::Instant::now();
        sub.shutdown().await.unwrap();
        let took = before.elapsed();
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
        assert_eq!(rx.try_recv().ok(), None, "no second attempt");
        assert_eq!(backend.committed(&group_id, &topic, d.partition), None);

        let bus = EventBus::with_backend(Arc::new(backend.clone()), cfg).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let next = bus
            .subscribe(&["hand"], "patient", move |e: ReceivedEvent| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(e.event.id);
                    Ok(())
                }
            })
            .await
            .unwrap();
        assert_eq!(rx.recv().await, Some(d.event_id), "redelivered");
        next.shutdown().await.unwrap();
    }

    /// A memory backend whose dead-letter topics refuse every write.
    struct NoDeadLetters(MemoryBackend);

    impl Backend for NoDeadLetters {
        fn ensure_topic(&self, spec: TopicSpec) -> BusFuture<'_, Result<i32, BusError>> {
            self.0.ensure_topic(spec)
        }
        fn send(&self, records: Vec<OutRecord>) -> BusFuture<'_, Vec<SendResult>> {
            if records.iter().any(|r| r.topic.contains(".dlq.")) {
                let n = records.len();
                return Box::pin(async move {
                    (0..n)
                        .map(|_| Err(BusError::Unsupported("the DLQ is down".into())))
                        .collect()
                });
            }
            self.0.send(records)
        }
        fn subscribe(
            &self,
            group_id: String,
            topics: Vec<String>,
            earliest: bool,
            hook: Arc<dyn RevokeHook>,
        ) -> BusFuture<'_, Result<Box<dyn Subscription>, BusError>> {
            self.0.subscribe(group_id, topics, earliest, hook)
        }
        fn close(&self) -> BusFuture<'_, Result<(), BusError>> {
            self.0.close()
        }
    }

    /// In virtual time: a dead letter that cannot be written is retried until confirmed, but
    /// a shutdown ends the retries at once; the event is left uncommitted (not lost), and
    /// the next member, with a working dead-letter topic, writes its dead letter.
    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_a_dead_letter_write_that_cannot_land() {
        let mut cfg = integration_tests::event_bus_suite::test_config();
        cfg.handlers.max_attempts = 1;
        cfg.handlers.initial_backoff_ms = 1_000;
        cfg.handlers.max_backoff_ms = 600_000;
        let (group_id, topic) = (cfg.group_id("stubborn"), cfg.event_topic("hand"));
        let dlq = cfg.dlq_topic("stubborn");
        let memory = MemoryBackend::new(Duration::from_millis(50), 100);
        let broken =
            EventBus::with_backend(Arc::new(NoDeadLetters(memory.clone())), cfg.clone()).unwrap();
        let handler = |e: ReceivedEvent| async move {
            match e.event.event_type.as_str() {
                "Poison" => Err(HandlerError::permanent("bad")),
                _ => Ok(()),
            }
        };
        let sub = broken
            .subscribe(&["hand"], "stubborn", handler)
            .await
            .unwrap();
        let d = broken
            .publish("hand", "h-1", Event::raw("Poison", "text/plain", ""))
            .await
            .unwrap();
        // Minutes of refused writes: the backoff between them has grown long.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(sub.stats().dead_lettered.load(Ordering::SeqCst), 0);
        let before = tokio::time::Instant::now();
        sub.shutdown().await.unwrap();
        let took = before.elapsed();
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
        assert_eq!(memory.committed(&group_id, &topic, d.partition), None);
        assert!(memory.records(&dlq).is_empty());

        let bus = EventBus::with_backend(Arc::new(memory.clone()), cfg).unwrap();
        let next = bus.subscribe(&["hand"], "stubborn", handler).await.unwrap();
        while next.stats().dead_lettered.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        next.shutdown().await.unwrap();
        assert_eq!(memory.records(&dlq).len(), 1);
        assert_eq!(
            memory.committed(&group_id, &topic, d.partition),
            Some(d.offset.unwrap() + 1)
        );
    }

    /// In virtual time: a poison event holds its partition no longer than the retry budget
    /// (`max_elapsed`), even with attempts to spare, and the aggregate's next event follows.
    #[tokio::test(start_paused = true)]
    async fn poison_holds_its_partition_at_most_the_retry_budget() {
        let mut cfg = integration_tests::event_bus_suite::test_config();
        cfg.handlers.max_attempts = 1_000;
        cfg.handlers.initial_backoff_ms = 100;
        cfg.handlers.max_backoff_ms = 400;
        cfg.handlers.max_elapsed_ms = 2_000;
        let f = memory_factory().unwrap()(cfg).await.unwrap();
        let (held, attempts, sub) = poison_then_next(&f.bus, None).await;
        assert!(held <= Duration::from_millis(2_100), "held {held:?}");
        assert!(
            held >= Duration::from_millis(1_000),
            "retried for a while: {held:?}"
        );
        assert!((4..1_000).contains(&attempts), "{attempts} attempts");
        assert_eq!(sub.stats().dead_lettered.load(Ordering::SeqCst), 1);
        sub.shutdown().await.unwrap();
    }

    /// Two members of one group share the partitions; when one leaves gracefully, the other
    /// takes its partitions over from the committed offsets and nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_share_partitions_and_take_over_on_leave() {
        let f = memory_factory().unwrap()(integration_tests::event_bus_suite::test_config())
            .await
            .unwrap();
        let counts: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
        let seen: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
        let mut subs = Vec::new();
        for c in &counts {
            let (c, seen) = (c.clone(), seen.clone());
            subs.push(
                f.bus
                    .subscribe(&["player"], "shared", move |e: ReceivedEvent| {
                        let (c, seen) = (c.clone(), seen.clone());
                        async move {
                            c.fetch_add(1, Ordering::SeqCst);
                            seen.lock().unwrap().insert(e.event.id.to_string());
                            Ok::<_, HandlerError>(())
                        }
                    })
                    .await
                    .unwrap(),
            );
        }
        let publish = |n: usize| {
            let bus = f.bus.clone();
            async move {
                for i in 0..n {
                    bus.publish(
                        "player",
                        &format!("p-{i}"),
                        Event::raw("E", "text/plain", ""),
                    )
                    .await
                    .unwrap();
                }
            }
        };
        publish(100).await;
        let wait = |n: usize| {
            let seen = seen.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while seen.lock().unwrap().len() < n {
                    assert!(tokio::time::Instant::now() < deadline, "stuck below {n}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        wait(100).await;
        assert!(
            counts.iter().all(|c| c.load(Ordering::SeqCst) > 0),
            "both members got partitions"
        );
        let second = subs.pop().unwrap();
        second.shutdown().await.unwrap();
        let before = counts[0].load(Ordering::SeqCst);
        publish(100).await;
        wait(200).await;
        assert!(
            counts[0].load(Ordering::SeqCst) - before >= 100,
            "the survivor took over"
        );
        subs.pop().unwrap().shutdown().await.unwrap();
    }
}

mod kafka {
    use bus::admin::ConfigResource;
    use bus::event_bus::{HandlerError, ReceivedEvent};

    use super::*;

    /// Topics the bus creates (events on publish, dead letters on subscribe) have the
    /// configured partition count and `retention.ms`, as the broker describes them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn created_topics_have_the_configured_partitions_and_retention() {
        let Some(factory) = kafka_factory() else {
            return;
        };
        let mut cfg = integration_tests::event_bus_suite::test_config();
        cfg.kafka.topics.partitions = 3;
        cfg.kafka.topics.retention_ms = 3_600_000;
        let (events, dlq) = (cfg.event_topic("player"), cfg.dlq_topic("retained"));
        let f = factory(cfg).await.unwrap();
        let sub = f
            .bus
            .subscribe(&["player"], "retained", |_e: ReceivedEvent| async {
                Ok::<_, HandlerError>(())
            })
            .await
            .unwrap();
        let client =
            bus::Client::connect(bus::ClientConfig::new(f.bus.config().kafka.brokers.clone()))
                .await
                .unwrap();
        let admin = client.admin();
        for topic in [&events, &dlq] {
            assert_eq!(client.topic(topic).await.unwrap().partition_count(), 3);
            let configs = admin
                .describe_config(ConfigResource::Topic(topic.clone()))
                .await
                .unwrap();
            let retention = configs
                .get("retention.ms")
                .unwrap_or_else(|| panic!("{topic}: no retention.ms in {configs:?}"));
            assert_eq!(retention.value.as_deref(), Some("3600000"), "{topic}");
        }
        sub.shutdown().await.unwrap();
        f.bus.close().await.unwrap();
    }

    /// The retry budget's time bound on Kafka: a poison event with attempts to spare holds
    /// its partition until `max_elapsed` is spent (plus its dead letter's write), then the
    /// aggregate's next event follows. Real time, so the bounds leave room for a slow host.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn poison_holds_its_partition_at_most_the_retry_budget() {
        let Some(factory) = kafka_factory() else {
            return;
        };
        let mut cfg = integration_tests::event_bus_suite::test_config();
        cfg.handlers.max_attempts = 1_000;
        cfg.handlers.initial_backoff_ms = 50;
        cfg.handlers.max_backoff_ms = 200;
        cfg.handlers.max_elapsed_ms = 1_500;
        let f = factory(cfg).await.unwrap();
        let (held, attempts, sub) = poison_then_next(&f.bus, Some(Duration::from_secs(60))).await;
        assert!(
            held >= Duration::from_millis(1_000),
            "retried for most of the budget: {held:?}"
        );
        assert!(held < Duration::from_millis(4_500), "held {held:?}");
        assert!((4..1_000).contains(&attempts), "{attempts} attempts");
        assert_eq!(
            sub.stats()
                .dead_lettered
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        sub.shutdown().await.unwrap();
        f.bus.close().await.unwrap();
    }

    /// Publishing on Kafka: the topic is created with the configured partitions and
    /// retention, each event lands on its aggregate's partition with its headers, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_places_and_labels_events() {
        let Some(factory) = kafka_factory() else {
            return;
        };
        let cfg = integration_tests::event_bus_suite::test_config();
        let topic = cfg.event_topic("player");
        let f = factory(cfg).await.unwrap();
        let mut sent = Vec::new();
        for i in 0..40 {
            let root = format!("p-{}", i % 7);
            let e =
                bus::event_bus::Event::json("PlayerScored", &serde_json::json!({"i": i})).unwrap();
            let d = f.bus.publish("player", &root, e.clone()).await.unwrap();
            assert_eq!(
                d.partition,
                partitioner::bus_partition("player", &root, 4).unwrap()
            );
            sent.push((root, e));
        }
        let records = (f.read_topic)(topic.clone()).await;
        assert_eq!(records.len(), sent.len());
        for (root, e) in &sent {
            let r = records
                .iter()
                .find(|r| {
                    r.header(bus::event_bus::H_EVENT_ID).map(|v| &v[..])
                        == Some(e.id.to_string().as_bytes())
                })
                .expect("every event read back");
            assert_eq!(
                r.partition,
                partitioner::bus_partition("player", root, 4).unwrap()
            );
            assert_eq!(
                r.key.as_deref(),
                Some(&partitioner::bus_key("player", root).unwrap()[..])
            );
            assert_eq!(r.value.as_ref(), Some(&e.payload));
            let h = |k| r.header(k).map(|v| String::from_utf8(v.to_vec()).unwrap());
            assert_eq!(
                h(bus::event_bus::H_EVENT_TYPE).as_deref(),
                Some("PlayerScored")
            );
            assert_eq!(
                h(bus::event_bus::H_TIMESTAMP),
                Some(e.timestamp_ms.to_string())
            );
            assert_eq!(
                h(bus::event_bus::H_CONTENT_TYPE).as_deref(),
                Some("application/json")
            );
        }
        // Order per aggregate: offsets of one root's events increase in publish order.
        for root in (0..7).map(|i| format!("p-{i}")) {
            let offsets: Vec<i64> = sent
                .iter()
                .filter(|(r, _)| *r == root)
                .map(|(_, e)| {
                    records
                        .iter()
                        .find(|r| {
                            r.header(bus::event_bus::H_EVENT_ID).map(|v| &v[..])
                                == Some(e.id.to_string().as_bytes())
                        })
                        .unwrap()
                        .offset
                })
                .collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "{root}: {offsets:?}"
            );
        }
        let client =
            bus::Client::connect(bus::ClientConfig::new(f.bus.config().kafka.brokers.clone()))
                .await
                .unwrap();
        assert_eq!(client.topic(&topic).await.unwrap().partition_count(), 4);
        f.bus.close().await.unwrap();
    }

    integration_tests::event_bus_suite!(kafka_factory());
}
