//! The event bus's behavioural suite (`integration_tests::event_bus_suite`) against the
//! memory backend (always) and against Kafka on the broker (`KAFKA_BOOTSTRAP`), plus the
//! checks only one backend can make.

use std::sync::Arc;
use std::time::Duration;

use bus::consumer::{ConsumerConfig, Offset, PartitionConsumer};
use bus::event_bus::{BackendKind, BusConfig, EventBus, InRecord, MemoryBackend};
use integration_tests::event_bus_suite::{BoxFuture, Factory, Fixture};

fn memory_factory() -> Option<Factory> {
    Some(Arc::new(|cfg: BusConfig| -> BoxFuture<Fixture> {
        Box::pin(async move {
            let backend = MemoryBackend::new(
                Duration::from_millis(cfg.kafka.consumer.poll_timeout_ms),
                cfg.kafka.consumer.max_poll_records,
            );
            let reader = backend.clone();
            Fixture {
                bus: EventBus::with_backend(Arc::new(backend), cfg),
                read_topic: Arc::new(move |t: String| -> BoxFuture<Vec<InRecord>> {
                    let r = reader.records(&t);
                    Box::pin(async move { r })
                }),
            }
        })
    }))
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
                    .map(|h| (h.key.clone(), h.value.clone().unwrap_or_default()))
                    .collect(),
            });
        }
    }
    out
}

fn kafka_factory() -> Option<Factory> {
    let addr = integration_tests::bootstrap()?;
    Some(Arc::new(move |mut cfg: BusConfig| -> BoxFuture<Fixture> {
        let addr = addr.clone();
        Box::pin(async move {
            cfg.backend = BackendKind::Kafka;
            cfg.kafka.brokers = vec![addr.clone()];
            // tansu 0.6 gives every idempotent producer the same id, so concurrent tests'
            // producers would fence each other.
            cfg.kafka.producer.idempotence = false;
            // A crashed member holds its partitions until its session expires.
            cfg.kafka.consumer.session_timeout_ms = 6_000;
            cfg.kafka.consumer.heartbeat_interval_ms = 1_000;
            Fixture {
                bus: EventBus::connect(cfg).await.unwrap(),
                read_topic: Arc::new(move |t: String| -> BoxFuture<Vec<InRecord>> {
                    Box::pin(read_kafka_topic(addr.clone(), t))
                }),
            }
        })
    }))
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

mod memory {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bus::event_bus::{Event, HandlerError, ReceivedEvent};

    use super::*;
    integration_tests::event_bus_suite!(memory_factory());

    /// In virtual time: a poison event holds its partition no longer than the retry budget
    /// (`max_elapsed`), even with attempts to spare, and the aggregate's next event follows.
    #[tokio::test(start_paused = true)]
    async fn poison_holds_its_partition_at_most_the_retry_budget() {
        let mut cfg = integration_tests::event_bus_suite::test_config();
        cfg.handlers.max_attempts = 1_000;
        cfg.handlers.initial_backoff_ms = 100;
        cfg.handlers.max_backoff_ms = 400;
        cfg.handlers.max_elapsed_ms = 2_000;
        let f = memory_factory().unwrap()(cfg).await;
        let log: Arc<Mutex<Vec<(String, u32, tokio::time::Instant)>>> = Arc::default();
        let l2 = log.clone();
        let sub = f
            .bus
            .subscribe(&["hand"], "budget", move |e: ReceivedEvent| {
                let log = l2.clone();
                async move {
                    log.lock().unwrap().push((
                        e.event.event_type.clone(),
                        e.attempt,
                        tokio::time::Instant::now(),
                    ));
                    if e.event.event_type == "Poison" {
                        return Err(HandlerError::retriable("always"));
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
        f.bus
            .publish("hand", "h-1", Event::raw("Poison", "text/plain", ""))
            .await
            .unwrap();
        f.bus
            .publish("hand", "h-1", Event::raw("Next", "text/plain", ""))
            .await
            .unwrap();
        while sub.stats().handled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = log.lock().unwrap().clone();
        let first = log.first().unwrap().2;
        let (_, _, next_at) = log.iter().find(|(t, _, _)| t == "Next").unwrap();
        let attempts = log.iter().filter(|(t, _, _)| t == "Poison").count();
        let held = *next_at - first;
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
        let f = memory_factory().unwrap()(integration_tests::event_bus_suite::test_config()).await;
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
    use super::*;

    /// Publishing on Kafka: the topic is created with the configured partitions and
    /// retention, each event lands on its aggregate's partition with its headers, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publish_places_and_labels_events() {
        let Some(factory) = kafka_factory() else {
            return;
        };
        let cfg = integration_tests::event_bus_suite::test_config();
        let topic = cfg.event_topic("player");
        let f = factory(cfg).await;
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
