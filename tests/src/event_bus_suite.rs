//! The event bus's behavioural suite, written once and run against every backend
//! (`tests/tests/event_bus.rs` instantiates it for the memory backend and for Kafka).
//!
//! Each test takes a [`Fixture`] factory: given a configuration (with a fresh topic prefix,
//! so tests never share topics), it answers a bus, a way to open another bus on the same
//! backend (what another process of the application would have: its own de-duplication
//! store), and a way to read a topic back whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::event_bus::{
    BusConfig, BusError, CONTENT_BYTES, DedupStore, Delivered, Event, EventBus, H_ATTEMPTS,
    H_ERROR, H_EVENT_ID, H_ORIGINAL_OFFSET, H_ORIGINAL_PARTITION, H_ORIGINAL_TOPIC, Handler,
    HandlerError, InRecord, PartitionId, ReceivedEvent, Subscriber,
};
use serde_json::json;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A bus on one backend, and a reader of whole topics (for the dead letters).
pub struct Fixture {
    pub bus: EventBus,
    /// Another bus on the same backend and configuration: another process of the same
    /// application (same topics and groups, its own de-duplication store).
    pub another_process: Arc<dyn Fn() -> BoxFuture<EventBus> + Send + Sync>,
    pub read_topic: Arc<dyn Fn(String) -> BoxFuture<Vec<InRecord>> + Send + Sync>,
}

/// Opens a bus on one backend for a configuration; a configuration the bus refuses is an
/// `Err` (the config-error tests), anything else answers a fixture.
pub type Factory = Arc<dyn Fn(BusConfig) -> BoxFuture<Result<Fixture, BusError>> + Send + Sync>;

async fn open(factory: &Factory, cfg: BusConfig) -> Fixture {
    factory(cfg).await.expect("the bus opens")
}

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
    let f = open(&factory, cfg).await;
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
/// starts after what it handled. The successors run in other processes (other buses), whose
/// de-duplication stores have not seen the first member's events, so what reaches their
/// handlers is exactly what the backend delivered.
pub async fn at_least_once_across_crash(factory: Factory) {
    let mut cfg = test_config();
    // No periodic commit before the crash: everything the first member handled is redelivered.
    cfg.kafka.consumer.commit_interval_ms = 600_000;
    let f = open(&factory, cfg).await;
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

    let second = (f.another_process)().await;
    let b: Seen = Arc::default();
    let sub = second
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
    let third = (f.another_process)().await;
    let c: Seen = Arc::default();
    let sub = third
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
    let f = open(&factory, cfg).await;
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
    // Where each event landed, for the dead letters' headers.
    let mut placed: HashMap<String, Delivered> = HashMap::new();
    for d in f.bus.publish_batch(batch).await {
        let d = d.unwrap();
        placed.insert(d.event_id.to_string(), d);
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
        let origin = &placed[&h(H_EVENT_ID)];
        assert_eq!(h(H_ORIGINAL_TOPIC), events_topic);
        assert_eq!(&*origin.topic, events_topic);
        assert_eq!(h(H_ORIGINAL_PARTITION), origin.partition.to_string());
        assert_eq!(
            h(H_ORIGINAL_OFFSET),
            origin
                .offset
                .expect("the backend answers offsets")
                .to_string()
        );
        assert_eq!(h(H_ERROR), "cannot handle this one");
        assert_eq!(h(H_ATTEMPTS), max_attempts.to_string());
        assert_eq!(attempts.lock().unwrap()[&h(H_EVENT_ID)], max_attempts);
        // The dead letter keeps the event: same key and payload as the original record.
        let root = format!("p-{}", {
            let v: serde_json::Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            v["i"].as_i64().unwrap() % 17
        });
        assert_eq!(
            r.key.as_deref(),
            Some(&partitioner::bus_key("player", &root).unwrap()[..])
        );
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
    let f = open(&factory, test_config()).await;
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
    let f = open(&factory, cfg).await;
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

/// Publishes `events` one at a time, each confirmed before the next is sent, so each is a
/// record batch of its own. Tests whose members resume from a commit inside what they
/// published need this: tansu 0.6 skips the rest of a batch when a fetch starts inside it
/// (see `tests/tests/consumer.rs`), where Kafka returns the batch's later records.
async fn publish_one_by_one(
    bus: &EventBus,
    events: Vec<(String, String, Event)>,
) -> Vec<Delivered> {
    let mut out = Vec::with_capacity(events.len());
    for (domain, root, event) in events {
        out.push(
            bus.publish(&domain, &root, event)
                .await
                .expect("publish confirmed"),
        );
    }
    out
}

/// A root of `domain` whose events land on `partition`.
pub fn root_on(domain: &str, partition: i32, partitions: i32) -> String {
    (0..)
        .map(|i| format!("root-{partition}-{i}"))
        .find(|r| partitioner::bus_partition(domain, r, partitions).unwrap() == partition)
        .unwrap()
}

/// What the members of one handler group did, for the rebalance test.
#[derive(Default)]
struct Track {
    /// Members inside a handler call, per partition.
    in_flight: Mutex<HashMap<i32, Vec<&'static str>>>,
    /// Calls that started while another member was inside a call for the same partition.
    overlaps: Mutex<Vec<String>>,
    /// (member, event id, event type) of every call that finished.
    finished: Mutex<Vec<(&'static str, String, String)>>,
    slow_started: AtomicUsize,
}

const SLOW: Duration = Duration::from_secs(2);

fn tracked(member: &'static str, track: Arc<Track>) -> impl Handler {
    move |e: ReceivedEvent| {
        let track = track.clone();
        async move {
            {
                let mut in_flight = track.in_flight.lock().unwrap();
                let here = in_flight.entry(e.partition).or_default();
                if !here.is_empty() {
                    track.overlaps.lock().unwrap().push(format!(
                        "{member} started {} on partition {} while {here:?} handled it",
                        e.event.event_type, e.partition
                    ));
                }
                here.push(member);
            }
            if e.event.event_type == "Slow" {
                track.slow_started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(SLOW).await;
            } else {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            {
                let mut in_flight = track.in_flight.lock().unwrap();
                let here = in_flight.entry(e.partition).or_default();
                if let Some(i) = here.iter().position(|m| *m == member) {
                    here.remove(i);
                }
            }
            track.finished.lock().unwrap().push((
                member,
                e.event.id.to_string(),
                e.event.event_type.clone(),
            ));
            Ok::<_, HandlerError>(())
        }
    }
}

/// Two live members of one handler group, in two processes. While the first is inside slow
/// handler calls on every partition (longer than a poll timeout), the second joins. The
/// rebalance waits for those calls, and what the first member finished is committed before
/// any partition moves: no partition is handled by two members at once, and no event is
/// handled twice.
pub async fn rebalance_waits_for_in_flight_handlers(factory: Factory) {
    let mut cfg = test_config();
    // Only the revocation commits: a periodic commit would cover for one that did not land.
    cfg.kafka.consumer.commit_interval_ms = 600_000;
    let partitions = cfg.kafka.topics.partitions;
    let f = open(&factory, cfg).await;
    let mut batch = Vec::new();
    for p in 0..partitions {
        let root = root_on("player", p, partitions);
        for seq in 0..7 {
            let t = if seq == 3 { "Slow" } else { "Quick" };
            let e = Event::json(t, &json!({ "seq": seq })).unwrap();
            batch.push(("player".to_owned(), root.clone(), e));
        }
    }
    let total = batch.len();
    publish_one_by_one(&f.bus, batch).await;
    let track = Arc::new(Track::default());
    let a = f
        .bus
        .subscribe(&["player"], "rebalanced", tracked("a", track.clone()))
        .await
        .unwrap();
    wait_until(
        "a to be inside a slow call on every partition",
        Duration::from_secs(60),
        || track.slow_started.load(Ordering::SeqCst) == partitions as usize,
    )
    .await;
    let other = (f.another_process)().await;
    let b = other
        .subscribe(&["player"], "rebalanced", tracked("b", track.clone()))
        .await
        .unwrap();
    wait_until("every event finished", Duration::from_secs(90), || {
        track.finished.lock().unwrap().len() >= total
    })
    .await;
    // Linger: a redelivery of something already finished would show up now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let overlaps = track.overlaps.lock().unwrap().clone();
    assert!(overlaps.is_empty(), "{overlaps:?}");
    let finished = track.finished.lock().unwrap().clone();
    let mut per_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for (member, id, _) in &finished {
        per_id.entry(id).or_default().push(member);
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(twice.is_empty(), "handled twice: {twice:?}");
    assert_eq!(per_id.len(), total);
    let slow_by_a = finished
        .iter()
        .filter(|(m, _, t)| *m == "a" && t == "Slow")
        .count();
    assert_eq!(
        slow_by_a, partitions as usize,
        "the revocation let a's slow calls finish"
    );
    assert!(
        finished.iter().any(|(m, _, _)| *m == "b"),
        "b took partitions over"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    other.close().await.unwrap();
    f.bus.close().await.unwrap();
}

/// A member handles events and crashes before committing; the member of the same group that
/// takes its partitions over (same `EventBus`) gets them all again, and skips every one as a
/// known duplicate.
pub async fn redelivery_after_a_crash_is_not_handled_twice(factory: Factory) {
    let mut cfg = test_config();
    cfg.kafka.consumer.commit_interval_ms = 600_000;
    let f = open(&factory, cfg).await;
    let ids = publish_seq(&f.bus, 5, 4).await;
    let a: Seen = Arc::default();
    let first = f
        .bus
        .subscribe(
            &["player", "hand"],
            "deduped",
            recorder(a.clone(), Arc::default(), Arc::default()),
        )
        .await
        .unwrap();
    wait_until("a to handle everything", Duration::from_secs(60), || {
        a.lock().unwrap().len() == ids.len()
    })
    .await;
    first.crash();
    let b: Seen = Arc::default();
    let second = f
        .bus
        .subscribe(
            &["player", "hand"],
            "deduped",
            recorder(b.clone(), Arc::default(), Arc::default()),
        )
        .await
        .unwrap();
    wait_until(
        "every uncommitted event to come back as a duplicate",
        Duration::from_secs(90),
        || second.stats().duplicates.load(Ordering::SeqCst) == ids.len() as u64,
    )
    .await;
    assert!(b.lock().unwrap().is_empty(), "{:?}", b.lock().unwrap());
    let fresh = publish_seq(&f.bus, 1, 1).await;
    wait_until("the new events", Duration::from_secs(60), || {
        b.lock().unwrap().len() == fresh.len()
    })
    .await;
    second.shutdown().await.unwrap();
    f.bus.close().await.unwrap();
}

/// A [`DedupStore`] two buses share, standing for a database both processes use.
#[derive(Default)]
pub struct SharedStore(Mutex<std::collections::HashSet<(String, bus::event_bus::Uuid)>>);

impl DedupStore for SharedStore {
    fn contains<'a>(
        &'a self,
        group: &'a str,
        id: bus::event_bus::Uuid,
    ) -> bus::event_bus::BoxFuture<'a, bool> {
        let seen = self.0.lock().unwrap().contains(&(group.to_owned(), id));
        Box::pin(async move { seen })
    }

    fn insert<'a>(
        &'a self,
        group: &'a str,
        id: bus::event_bus::Uuid,
    ) -> bus::event_bus::BoxFuture<'a, ()> {
        self.0.lock().unwrap().insert((group.to_owned(), id));
        Box::pin(async {})
    }
}

/// A member crashes before committing and its partitions move to a member in another
/// process. With the default in-process store the redelivered events are handled again (the
/// documented limit); with a store both processes share they are skipped.
pub async fn a_shared_dedup_store_spans_processes(factory: Factory) {
    let mut cfg = test_config();
    cfg.kafka.consumer.commit_interval_ms = 600_000;
    let f = open(&factory, cfg).await;
    let ids = publish_seq(&f.bus, 4, 3).await;
    let store = Arc::new(SharedStore::default());
    let shared_1 = (f.another_process)().await.with_dedup_store(store.clone());
    let shared_2 = (f.another_process)().await.with_dedup_store(store);
    let own_2 = (f.another_process)().await;
    // Group "own": default stores; group "shared": the shared store. Both run side by side.
    let (a_own, a_shared): (Seen, Seen) = Default::default();
    let first = [
        f.bus
            .subscribe(
                &["player", "hand"],
                "own",
                recorder(a_own.clone(), Arc::default(), Arc::default()),
            )
            .await
            .unwrap(),
        shared_1
            .subscribe(
                &["player", "hand"],
                "shared",
                recorder(a_shared.clone(), Arc::default(), Arc::default()),
            )
            .await
            .unwrap(),
    ];
    wait_until(
        "both first members to handle everything",
        Duration::from_secs(60),
        || a_own.lock().unwrap().len() == ids.len() && a_shared.lock().unwrap().len() == ids.len(),
    )
    .await;
    for s in first {
        s.crash();
    }
    let (b_own, b_shared): (Seen, Seen) = Default::default();
    let own = own_2
        .subscribe(
            &["player", "hand"],
            "own",
            recorder(b_own.clone(), Arc::default(), Arc::default()),
        )
        .await
        .unwrap();
    let shared = shared_2
        .subscribe(
            &["player", "hand"],
            "shared",
            recorder(b_shared.clone(), Arc::default(), Arc::default()),
        )
        .await
        .unwrap();
    wait_until(
        "both successors to get everything again",
        Duration::from_secs(90),
        || {
            b_own.lock().unwrap().len() == ids.len()
                && shared.stats().duplicates.load(Ordering::SeqCst) == ids.len() as u64
        },
    )
    .await;
    assert!(b_shared.lock().unwrap().is_empty());
    assert_eq!(own.stats().duplicates.load(Ordering::SeqCst), 0);
    own.shutdown().await.unwrap();
    shared.shutdown().await.unwrap();
    f.bus.close().await.unwrap();
}

/// Commit only after success, under frequent periodic commits: one event keeps failing
/// while the rest of its partition and the other partitions are handled and committed. The
/// committed offset of its partition stops exactly at it. After a crash, a member in another
/// process gets that event and everything after it, and nothing that was committed.
pub async fn commits_stop_at_a_stuck_event(factory: Factory) {
    let mut cfg = test_config();
    cfg.kafka.consumer.commit_interval_ms = 20;
    cfg.handlers.max_attempts = u32::MAX;
    cfg.handlers.max_elapsed_ms = 600_000;
    let partitions = cfg.kafka.topics.partitions;
    let f = open(&factory, cfg).await;
    let stuck_root = root_on("player", 0, partitions);
    let mut batch = Vec::new();
    for seq in 0..7 {
        let t = if seq == 3 { "Stuck" } else { "Fine" };
        let e = Event::json(t, &json!({ "seq": seq })).unwrap();
        batch.push(("player".to_owned(), stuck_root.clone(), e));
    }
    for p in 1..partitions {
        let root = root_on("player", p, partitions);
        for seq in 0..3 {
            let e = Event::json("Fine", &json!({ "seq": seq })).unwrap();
            batch.push(("player".to_owned(), root.clone(), e));
        }
    }
    let delivered = publish_one_by_one(&f.bus, batch).await;
    let offset = |d: &Delivered| d.offset.expect("the backend answers offsets");
    let stuck = &delivered[3];
    // Where each partition's committed offset must end up: the stuck event's own offset on
    // its partition, the end elsewhere.
    let mut expected: HashMap<i32, i64> = HashMap::new();
    for d in &delivered[7..] {
        let e = expected.entry(d.partition).or_default();
        *e = (*e).max(offset(d) + 1);
    }
    expected.insert(stuck.partition, offset(stuck));
    let handled: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let h = handled.clone();
    let a = f
        .bus
        .subscribe(&["player"], "stuck", move |e: ReceivedEvent| {
            let h = h.clone();
            async move {
                if e.event.event_type == "Stuck" {
                    return Err(HandlerError::retriable("not yet"));
                }
                h.lock().unwrap().push((e.partition, e.offset));
                Ok(())
            }
        })
        .await
        .unwrap();
    let committed = |s: &Subscriber| -> HashMap<i32, i64> {
        s.stats()
            .committed
            .lock()
            .unwrap()
            .iter()
            .map(|(p, o): (&PartitionId, &i64)| (p.partition, *o))
            .collect()
    };
    wait_until(
        "the periodic commits to reach the stuck event and every partition's end",
        Duration::from_secs(60),
        || committed(&a) == expected,
    )
    .await;
    // Many more commit rounds and retries: the commit never passes the stuck event.
    let retries = a.stats().retries.load(Ordering::SeqCst);
    wait_until("more retries", Duration::from_secs(30), || {
        a.stats().retries.load(Ordering::SeqCst) >= retries + 20
    })
    .await;
    assert_eq!(committed(&a), expected);
    assert!(
        !handled
            .lock()
            .unwrap()
            .iter()
            .any(|(p, o)| *p == stuck.partition && *o > offset(stuck))
    );
    a.crash();

    let other = (f.another_process)().await;
    let again: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let g = again.clone();
    let b = other
        .subscribe(&["player"], "stuck", move |e: ReceivedEvent| {
            let g = g.clone();
            async move {
                g.lock()
                    .unwrap()
                    .push((e.partition, e.offset, e.event.event_type.clone()));
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();
    wait_until(
        "the stuck event and what follows it",
        Duration::from_secs(90),
        || again.lock().unwrap().len() >= 4,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = again.lock().unwrap().clone();
    let want: Vec<(i32, i64, String)> = delivered[3..7]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let t = if i == 0 { "Stuck" } else { "Fine" };
            (d.partition, offset(d), t.to_owned())
        })
        .collect();
    assert_eq!(got, want, "from the stuck event on, and nothing committed");
    b.shutdown().await.unwrap();
    other.close().await.unwrap();
    f.bus.close().await.unwrap();
}

/// Graceful shutdown waits for the handler call in flight, and commits it: a member in
/// another process starts after it.
pub async fn shutdown_finishes_in_flight_handler_and_commits(factory: Factory) {
    let f = open(&factory, test_config()).await;
    let (entered_tx, mut entered) = tokio::sync::watch::channel(false);
    let (release, gate) = tokio::sync::watch::channel(false);
    let finished = Arc::new(AtomicUsize::new(0));
    let fin = finished.clone();
    let a = f
        .bus
        .subscribe(&["player"], "graceful", move |_e: ReceivedEvent| {
            let (entered_tx, mut gate, fin) = (entered_tx.clone(), gate.clone(), fin.clone());
            async move {
                entered_tx.send_replace(true);
                let _ = gate.wait_for(|open| *open).await;
                fin.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();
    f.bus
        .publish("player", "p-1", Event::raw("Held", "text/plain", ""))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), entered.wait_for(|e| *e))
        .await
        .expect("the handler starts")
        .unwrap();
    let shutdown = tokio::spawn(a.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the call in flight"
    );
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    release.send(true).unwrap();
    shutdown.await.unwrap().unwrap();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the call finished, not cancelled"
    );

    let other = (f.another_process)().await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    let b = other
        .subscribe(&["player"], "graceful", move |e: ReceivedEvent| {
            let s = s2.clone();
            async move {
                s.lock().unwrap().push(e.event.event_type.clone());
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();
    f.bus
        .publish("player", "p-1", Event::raw("Marker", "text/plain", ""))
        .await
        .unwrap();
    wait_until("the marker", Duration::from_secs(60), || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["Marker"],
        "the held event was committed"
    );
    b.shutdown().await.unwrap();
    other.close().await.unwrap();
    f.bus.close().await.unwrap();
}

/// Raw bytes (every byte value, and nothing at all) reach the handler unchanged, with their
/// content type and event type.
pub async fn raw_payloads_round_trip(factory: Factory) {
    let f = open(&factory, test_config()).await;
    let got: Arc<Mutex<Vec<Event>>> = Arc::default();
    let g = got.clone();
    let sub = f
        .bus
        .subscribe(&["hand"], "raw", move |e: ReceivedEvent| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(e.event);
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();
    let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let sent = vec![
        Event::raw("Blob", CONTENT_BYTES, every_byte),
        Event::raw("Empty", CONTENT_BYTES, Vec::new()),
        Event::raw("Text", "text/plain; charset=utf-8", "ünïcödé ♠"),
    ];
    for e in &sent {
        f.bus.publish("hand", "h-9", e.clone()).await.unwrap();
    }
    wait_until("every payload", Duration::from_secs(60), || {
        got.lock().unwrap().len() == sent.len()
    })
    .await;
    assert_eq!(*got.lock().unwrap(), sent);
    sub.shutdown().await.unwrap();
    f.bus.close().await.unwrap();
}

/// A permanent failure is dead-lettered after one attempt; a panicking handler is retried
/// like a retriable failure and then dead-lettered; the aggregate's next event follows both.
pub async fn permanent_errors_and_panics_dead_letter(factory: Factory) {
    let cfg = test_config();
    let max_attempts = cfg.handlers.max_attempts;
    let dlq_topic = cfg.dlq_topic("strict");
    let f = open(&factory, cfg).await;
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let c2 = calls.clone();
    let sub = f
        .bus
        .subscribe(&["player"], "strict", move |e: ReceivedEvent| {
            let calls = c2.clone();
            async move {
                calls.lock().unwrap().push(e.event.event_type.clone());
                match e.event.event_type.as_str() {
                    "Permanent" => Err(HandlerError::permanent("no such player")),
                    "Panic" => panic!("handler bug"),
                    _ => Ok(()),
                }
            }
        })
        .await
        .unwrap();
    for t in ["Permanent", "Panic", "Fine"] {
        f.bus
            .publish("player", "p-3", Event::raw(t, "text/plain", ""))
            .await
            .unwrap();
    }
    wait_until(
        "both dead letters and the next event",
        Duration::from_secs(60),
        || {
            let s = sub.stats();
            s.dead_lettered.load(Ordering::SeqCst) == 2 && s.handled.load(Ordering::SeqCst) == 1
        },
    )
    .await;
    let mut expected = vec!["Permanent".to_owned()];
    expected.extend((0..max_attempts).map(|_| "Panic".to_owned()));
    expected.push("Fine".into());
    assert_eq!(*calls.lock().unwrap(), expected);
    let dlq = (f.read_topic)(dlq_topic).await;
    assert_eq!(dlq.len(), 2);
    let h = |r: &InRecord, k: &str| String::from_utf8(r.header(k).unwrap().to_vec()).unwrap();
    let by_type = |t: &str| {
        dlq.iter()
            .find(|r| h(r, bus::event_bus::H_EVENT_TYPE) == t)
            .unwrap_or_else(|| panic!("no dead letter for {t}"))
    };
    let permanent = by_type("Permanent");
    assert_eq!(h(permanent, H_ATTEMPTS), "1");
    assert_eq!(h(permanent, H_ERROR), "no such player");
    let panicked = by_type("Panic");
    assert_eq!(h(panicked, H_ATTEMPTS), max_attempts.to_string());
    assert_eq!(h(panicked, H_ERROR), "handler panicked");
    sub.shutdown().await.unwrap();
    f.bus.close().await.unwrap();
}

/// A configuration the bus cannot run with is refused when the bus opens, with a typed error
/// naming the key.
pub async fn config_errors_name_the_key(factory: Factory) {
    type Edit = fn(&mut BusConfig);
    let cases: [(Edit, &str); 6] = [
        (
            |c| c.kafka.topics.partitions = 0,
            "bus.kafka.topics.partitions",
        ),
        (
            |c| c.kafka.producer.acks = "2".into(),
            "bus.kafka.producer.acks",
        ),
        (
            |c| c.handlers.partition_queue = usize::MAX,
            "bus.handlers.partition_queue",
        ),
        (
            |c| c.kafka.consumer.poll_timeout_ms = u64::MAX,
            "bus.kafka.consumer.poll_timeout_ms",
        ),
        (
            |c| {
                c.kafka.producer.linger_ms = 100;
                c.kafka.producer.delivery_timeout_ms = 50;
            },
            "bus.kafka.producer.delivery_timeout_ms",
        ),
        (
            |c| c.kafka.topic_prefix = "a b".into(),
            "bus.kafka.topic_prefix",
        ),
    ];
    for (edit, key) in cases {
        let mut cfg = test_config();
        edit(&mut cfg);
        match factory(cfg).await {
            Err(BusError::Config(e)) => {
                assert_eq!(e.key(), Some(key), "{e}");
                assert!(e.to_string().contains(&format!("key `{key}`")), "{e}");
            }
            Err(e) => panic!("{key}: not a config error: {e}"),
            Ok(_) => panic!("{key}: accepted"),
        }
    }
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
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rebalance_waits_for_in_flight_handlers() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::rebalance_waits_for_in_flight_handlers(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redelivery_after_a_crash_is_not_handled_twice() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::redelivery_after_a_crash_is_not_handled_twice(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_shared_dedup_store_spans_processes() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::a_shared_dedup_store_spans_processes(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn commits_stop_at_a_stuck_event() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::commits_stop_at_a_stuck_event(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn shutdown_finishes_in_flight_handler_and_commits() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::shutdown_finishes_in_flight_handler_and_commits(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn raw_payloads_round_trip() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::raw_payloads_round_trip(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn permanent_errors_and_panics_dead_letter() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::permanent_errors_and_panics_dead_letter(f).await;
            }
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn config_errors_name_the_key() {
            if let Some(f) = $factory {
                $crate::event_bus_suite::config_errors_name_the_key(f).await;
            }
        }
    };
}
