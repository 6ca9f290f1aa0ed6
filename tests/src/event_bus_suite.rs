//! The event bus's behavioural suite, written once and run against every backend
//! (`tests/tests/event_bus.rs` instantiates it for the memory backend and for Kafka).
//!
//! Each test takes a [`Fixture`] factory: given a configuration (with a fresh topic prefix,
//! so tests never share topics), it answers a bus and a way to read a topic back whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::event_bus::{
    BusConfig, Event, EventBus, H_ATTEMPTS, H_EVENT_ID, H_ORIGINAL_OFFSET, H_ORIGINAL_TOPIC,
    HandlerError, InRecord, ReceivedEvent,
};
use serde_json::json;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A bus on one backend, and a reader of whole topics (for the dead letters).
pub struct Fixture {
    pub bus: EventBus,
    pub read_topic: Arc<dyn Fn(String) -> BoxFuture<Vec<InRecord>> + Send + Sync>,
}

pub type Factory = Arc<dyn Fn(BusConfig) -> BoxFuture<Fixture> + Send + Sync>;

/// A configuration for tests: a fresh prefix, 4 partitions, fast commits and retries.
pub fn test_config() -> BusConfig {
    let mut c = BusConfig::default();
    c.kafka.topic_prefix = crate::unique_topic("bus").replace('-', "_");
    c.kafka.topics.partitions = 4;
    c.kafka.consumer.commit_interval_ms = 50;
    c.kafka.consumer.poll_timeout_ms = 50;
    c.handlers.max_attempts = 3;
    c.handlers.initial_backoff_ms = 5;
    c.handlers.max_backoff_ms = 20;
    c.handlers.max_elapsed_ms = 5_000;
    c
}

type Seen = Arc<Mutex<Vec<(String, String, i64, i32, String)>>>;

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn recorder(
    seen: Seen,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
) -> impl bus::event_bus::Handler {
    move |e: ReceivedEvent| {
        let (seen, in_flight, max_in_flight) =
            (seen.clone(), in_flight.clone(), max_in_flight.clone());
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            max_in_flight.fetch_max(now, Ordering::SeqCst);
            let v: serde_json::Value = e.event.decode_json()?;
            tokio::time::sleep(Duration::from_millis(2)).await;
            seen.lock().unwrap().push((
                e.domain.clone(),
                e.root.clone(),
                v["seq"].as_i64().unwrap_or(-1),
                e.partition,
                e.event.id.to_string(),
            ));
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    }
}

/// Publishes `per_root` events for each of `roots` roots in `player` and `hand`, with a
/// per-root sequence number; answers every event id.
async fn publish_seq(bus: &EventBus, roots: usize, per_root: i64) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for seq in 0..per_root {
        let mut batch = Vec::new();
        for r in 0..roots {
            for domain in ["player", "hand"] {
                let e = Event::json(format!("{domain}-event"), &json!({"seq": seq})).unwrap();
                ids.insert(e.id.to_string());
                batch.push((domain.to_owned(), format!("{domain}-{r}"), e));
            }
        }
        for d in bus.publish_batch(batch).await {
            d.expect("publish confirmed");
        }
    }
    ids
}

/// Every aggregate's events arrive in publish order, on the partition the frozen rule
/// names; two handler groups each see everything; partitions are handled concurrently.
pub async fn order_per_aggregate(factory: Factory) {
    let cfg = test_config();
    let partitions = cfg.kafka.topics.partitions;
    let f = factory(cfg).await;
    let groups = ["player-projector", "output-projector"];
    let mut subs = Vec::new();
    let mut seen = Vec::new();
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    for g in groups {
        let s: Seen = Arc::default();
        let h = recorder(s.clone(), Arc::default(), max_in_flight.clone());
        subs.push(f.bus.subscribe(&["player", "hand"], g, h).await.unwrap());
        seen.push(s);
    }
    let ids = publish_seq(&f.bus, 8, 10).await;
    for s in &seen {
        wait_until(
            "both groups to see every event",
            Duration::from_secs(60),
            || s.lock().unwrap().len() >= ids.len(),
        )
        .await;
    }
    for (g, s) in groups.iter().zip(&seen) {
        let s = s.lock().unwrap();
        let mut per_root: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        for (domain, root, seq, partition, _) in s.iter() {
            assert_eq!(
                *partition,
                partitioner::bus_partition(domain, root, partitions).unwrap(),
                "{domain}/{root} on the wrong partition"
            );
            per_root
                .entry((domain.clone(), root.clone()))
                .or_default()
                .push(*seq);
        }
        assert_eq!(per_root.len(), 16, "{g}: every aggregate");
        for (k, seqs) in per_root {
            assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "{g}: order of {k:?}");
        }
        let got: BTreeSet<String> = s.iter().map(|x| x.4.clone()).collect();
        assert_eq!(got, ids, "{g}: every event exactly once");
    }
    assert!(
        max_in_flight.load(Ordering::SeqCst) > 1,
        "partitions must be handled concurrently"
    );
    for s in subs {
        s.shutdown().await.unwrap();
    }
    f.bus.close().await.unwrap();
}

/// A member that crashes before committing has its events delivered again to the next
/// member of its group; a member that shuts down gracefully commits, so its successor
/// starts after what it handled.
pub async fn at_least_once_across_crash(factory: Factory) {
    let mut cfg = test_config();
    // No periodic commit before the crash: everything the first member handled is redelivered.
    cfg.kafka.consumer.commit_interval_ms = 600_000;
    let f = factory(cfg).await;
    let ids = publish_seq(&f.bus, 10, 5).await;

    let a: Seen = Arc::default();
    let sub = f
        .bus
        .subscribe(
            &["player", "hand"],
            "crashy",
            recorder(a.clone(), Arc::default(), Arc::default()),
        )
        .await
        .unwrap();
    wait_until(
        "the first member to handle some events",
        Duration::from_secs(60),
        || a.lock().unwrap().len() >= 20,
    )
    .await;
    sub.crash();
    let handled_before_crash: BTreeSet<String> =
        a.lock().unwrap().iter().map(|x| x.4.clone()).collect();
    assert!(!handled_before_crash.is_empty());

    let b: Seen = Arc::default();
    let sub = f
        .bus
        .subscribe(
            &["player", "hand"],
            "crashy",
            recorder(b.clone(), Arc::default(), Arc::default()),
        )
        .await
        .unwrap();
    wait_until(
        "the successor to see every event",
        Duration::from_secs(90),
        || b.lock().unwrap().len() >= ids.len(),
    )
    .await;
    let got: BTreeSet<String> = b.lock().unwrap().iter().map(|x| x.4.clone()).collect();
    assert_eq!(got, ids, "uncommitted events are delivered again");
    assert!(handled_before_crash.is_subset(&got));
    sub.shutdown().await.unwrap();

    // Graceful shutdown committed: a third member sees only what is new.
    let c: Seen = Arc::default();
    let sub = f
        .bus
        .subscribe(
            &["player", "hand"],
            "crashy",
            recorder(c.clone(), Arc::default(), Arc::default()),
        )
        .await
        .unwrap();
    let new_ids = publish_seq(&f.bus, 2, 1).await;
    wait_until("the new events", Duration::from_secs(60), || {
        c.lock().unwrap().len() >= new_ids.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: BTreeSet<String> = c.lock().unwrap().iter().map(|x| x.4.clone()).collect();
    assert_eq!(
        got, new_ids,
        "after a graceful shutdown nothing old is redelivered"
    );
    sub.shutdown().await.unwrap();
    f.bus.close().await.unwrap();
}

/// 1 % poison events: each lands in the dead-letter topic exactly once after the retries,
/// with headers naming where it came from; handled + dead-lettered = published.
pub async fn poison_events_dead_letter_once(factory: Factory) {
    let cfg = test_config();
    let max_attempts = cfg.handlers.max_attempts;
    let dlq_topic = cfg.dlq_topic("poisoned");
    let events_topic = cfg.event_topic("player");
    let f = factory(cfg).await;
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let (h2, a2) = (handled.clone(), attempts.clone());
    let sub = f
        .bus
        .subscribe(&["player"], "poisoned", move |e: ReceivedEvent| {
            let (handled, attempts) = (h2.clone(), a2.clone());
            async move {
                let v: serde_json::Value = e.event.decode_json()?;
                let id = e.event.id.to_string();
                *attempts.lock().unwrap().entry(id.clone()).or_default() += 1;
                if v["poison"] == json!(true) {
                    return Err(HandlerError::retriable("cannot handle this one"));
                }
                handled.lock().unwrap().push(id);
                Ok(())
            }
        })
        .await
        .unwrap();
    let total = 300;
    let mut poison = BTreeSet::new();
    let mut all = BTreeSet::new();
    let mut batch = Vec::new();
    for i in 0..total {
        let is_poison = i % 100 == 42;
        let e = Event::json("PlayerScored", &json!({"i": i, "poison": is_poison})).unwrap();
        if is_poison {
            poison.insert(e.id.to_string());
        }
        all.insert(e.id.to_string());
        batch.push(("player".to_owned(), format!("p-{}", i % 17), e));
    }
    for d in f.bus.publish_batch(batch).await {
        d.unwrap();
    }
    wait_until(
        "every event handled or dead-lettered",
        Duration::from_secs(60),
        || {
            let s = sub.stats();
            s.handled.load(Ordering::SeqCst) + s.dead_lettered.load(Ordering::SeqCst)
                >= total as u64
        },
    )
    .await;
    // Linger: a second dead letter for the same event would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = sub.stats();
    assert_eq!(s.dead_lettered.load(Ordering::SeqCst), poison.len() as u64);
    assert_eq!(
        s.handled.load(Ordering::SeqCst),
        (total - poison.len()) as u64
    );
    let dlq = (f.read_topic)(dlq_topic).await;
    let dlq_ids: Vec<String> = dlq
        .iter()
        .map(|r| String::from_utf8(r.header(H_EVENT_ID).unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        dlq_ids.len(),
        poison.len(),
        "each poison event dead-lettered exactly once"
    );
    assert_eq!(dlq_ids.iter().cloned().collect::<BTreeSet<_>>(), poison);
    for r in &dlq {
        let h = |k: &str| String::from_utf8(r.header(k).unwrap().to_vec()).unwrap();
        assert_eq!(h(H_ORIGINAL_TOPIC), events_topic);
        assert_eq!(h(H_ATTEMPTS), max_attempts.to_string());
        assert!(h(H_ORIGINAL_OFFSET).parse::<i64>().is_ok());
        assert_eq!(attempts.lock().unwrap()[&h(H_EVENT_ID)], max_attempts);
    }
    let handled: BTreeSet<String> = handled.lock().unwrap().iter().cloned().collect();
    assert!(handled.is_disjoint(&poison));
    assert_eq!(
        handled.len() + poison.len(),
        all.len(),
        "processed + dead-lettered = published"
    );
    sub.shutdown().await.unwrap();
    f.bus.close().await.unwrap();
}

/// The same event (same id) delivered twice is handled once.
pub async fn duplicates_are_dropped(factory: Factory) {
    let f = factory(test_config()).await;
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let sub = f
        .bus
        .subscribe(&["player"], "dedup", move |_e: ReceivedEvent| {
            let c = c2.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();
    let e = Event::json("PlayerJoined", &json!({})).unwrap();
    f.bus.publish("player", "p-1", e.clone()).await.unwrap();
    f.bus.publish("player", "p-1", e).await.unwrap();
    wait_until("the duplicate to be seen", Duration::from_secs(60), || {
        sub.stats().duplicates.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    sub.shutdown().await.unwrap();
    f.bus.close().await.unwrap();
}

/// A partition whose handler is stuck (its worker queue full) does not stop the others from
/// being polled and handled; once it moves again, its parked events follow in order.
pub async fn slow_partition_does_not_stall_others(factory: Factory) {
    let mut cfg = test_config();
    cfg.handlers.partition_queue = 1;
    let partitions = cfg.kafka.topics.partitions;
    let f = factory(cfg).await;
    let slow = "slow-root";
    let slow_p = partitioner::bus_partition("player", slow, partitions).unwrap();
    let fast = (0..)
        .map(|i| format!("fast-{i}"))
        .find(|r| partitioner::bus_partition("player", r, partitions).unwrap() != slow_p)
        .unwrap();
    let (release, gate) = tokio::sync::watch::channel(false);
    let seen: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let (s2, slow_root) = (seen.clone(), slow.to_owned());
    let sub = f
        .bus
        .subscribe(&["player"], "stalled", move |e: ReceivedEvent| {
            let (seen, mut gate, slow_root) = (s2.clone(), gate.clone(), slow_root.clone());
            async move {
                if e.root == slow_root {
                    let _ = gate.wait_for(|open| *open).await;
                }
                let v: serde_json::Value = e.event.decode_json()?;
                seen.lock()
                    .unwrap()
                    .push((e.root.clone(), v["seq"].as_i64().unwrap_or(-1)));
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();
    // Far more than the slow partition's queue: without a pause the poll loop would block
    // on it and the fast partition's events would wait behind it.
    let batch = |root: &str, n: i64| -> Vec<(String, String, Event)> {
        (0..n)
            .map(|seq| {
                let e = Event::json("Tick", &json!({ "seq": seq })).unwrap();
                ("player".to_owned(), root.to_owned(), e)
            })
            .collect()
    };
    for d in f.bus.publish_batch(batch(slow, 20)).await {
        d.expect("publish confirmed");
    }
    for d in f.bus.publish_batch(batch(&fast, 10)).await {
        d.expect("publish confirmed");
    }
    let count = |root: &str| seen.lock().unwrap().iter().filter(|x| x.0 == root).count();
    wait_until(
        "the fast partition's events while the slow one is stuck",
        Duration::from_secs(30),
        || count(&fast) == 10,
    )
    .await;
    assert_eq!(count(slow), 0, "the slow handler is still held");
    release.send(true).unwrap();
    wait_until(
        "the slow partition's events after release",
        Duration::from_secs(30),
        || count(slow) == 20,
    )
    .await;
    let seqs: Vec<i64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.0 == slow)
        .map(|x| x.1)
        .collect();
    assert_eq!(
        seqs,
        (0..20).collect::<Vec<_>>(),
        "parked events keep their order"
    );
    sub.shutdown().await.unwrap();
    f.bus.close().await.unwrap();
}

/// Runs every test of the suite against `factory`.
#[macro_export]
macro_rules! event_bus_suite {
    ($factory:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn order_per_aggregate() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::order_per_aggregate(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn at_least_once_across_crash() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::at_least_once_across_crash(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn poison_events_dead_letter_once() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::poison_events_dead_letter_once(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicates_are_dropped() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::duplicates_are_dropped(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn slow_partition_does_not_stall_others() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::slow_partition_does_not_stall_others(f).await;
            }
        }
    };
}
