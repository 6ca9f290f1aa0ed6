//! Consumer groups against the broker: members split partitions, commit and resume from the
//! committed offsets, commit from `on_revoked`, cooperative two-step moves, static members,
//! auto-commit never ahead of the application, and a member outside its generation cannot
//! commit (typed `CommitFailed`).
//!
//! tansu 0.6 departs from Kafka here (asserted on tansu, recognised by its cluster id):
//! - OffsetCommit is accepted whatever the generation and member id (Kafka: ILLEGAL_GENERATION,
//!   UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS), so a refusal by the broker is tested on Kafka
//!   only; on tansu the member's own check (it knows its generation ended) is tested.
//! - A member that does not rejoin is not evicted after the rebalance timeout while it keeps
//!   heartbeating, so a rebalance waits for every member's `poll`.
//! - Generations start at 0 (Kafka: 1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::consumer::{AutoOffsetReset, ConsumerRecord};
use bus::producer::{Producer, ProducerConfig, Record};
use bus::{
    Client, ClientConfig, Error, GroupConfig, GroupConsumer, RebalanceContext, RebalanceListener,
    TopicPartition,
};
use integration_tests::{
    bootstrap, client, client_with_topic, consumer_config, is_tansu, unique_topic,
};

const WAIT: Duration = Duration::from_secs(60);

fn group_config(group: &str) -> GroupConfig {
    GroupConfig::new(group)
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(300))
        .rebalance_timeout(Duration::from_secs(10))
        .auto_commit(false)
}

/// A member of `cfg`'s group on a client of its own, subscribed to `topic`.
async fn subscriber(addr: &str, cfg: GroupConfig, topic: &str) -> GroupConsumer {
    let mut c = GroupConsumer::new(client(addr).await, cfg, consumer_config()).unwrap();
    c.subscribe([topic]).unwrap();
    c
}

/// `per_partition` records into each of `partitions` partitions, values "tag-p-i", one
/// batch per record (tansu skips a whole batch when a fetch starts inside it, so tests that
/// seek need batch boundaries at every offset).
async fn produce(client: &Client, topic: &str, partitions: i32, per_partition: usize, tag: &str) {
    let producer = Producer::new(client.clone(), ProducerConfig::default().idempotence(false))
        .await
        .unwrap();
    for p in 0..partitions {
        for i in 0..per_partition {
            let r = Record::new(topic)
                .partition(p)
                .value(format!("{tag}-{p}-{i}").into_bytes());
            producer.send(r).await.unwrap().await.unwrap();
        }
    }
    producer.close().await.unwrap();
}

/// Polls until `n` records arrived (or panics after WAIT).
async fn poll_n<L: RebalanceListener>(c: &mut GroupConsumer<L>, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while out.len() < n {
            out.extend(c.poll().await.unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} records within {WAIT:?}", out.len()));
    out
}

fn values(records: &[ConsumerRecord]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn one_member_consumes_commits_and_a_restart_resumes_from_the_commit() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-one", 3).await;
    produce(&admin, &topic, 3, 10, "a").await;
    let group = unique_topic("g-one");

    let mut c = subscriber(&addr, group_config(&group), &topic).await;
    let first = poll_n(&mut c, 30).await;
    assert_eq!(values(&first).len(), 30);
    assert_eq!(c.assignment().len(), 3);
    let (generation, member) = c.generation().expect("joined");
    assert!(generation >= 0 && !member.is_empty());
    for p in 0..3 {
        let tp = TopicPartition::new(topic.as_str(), p);
        assert_eq!(c.position(&tp), Some(10));
    }
    c.commit().await.unwrap();
    let tps: Vec<TopicPartition> = (0..3)
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    let committed = c.committed(&tps).await.unwrap();
    assert!(
        committed.iter().all(|(_, o)| *o == Some(10)),
        "{committed:?}"
    );
    c.close().await.unwrap();

    // A new member of the same group reads only what came after the commit.
    produce(&admin, &topic, 3, 2, "b").await;
    let mut c = subscriber(&addr, group_config(&group), &topic).await;
    let second = poll_n(&mut c, 6).await;
    let got = values(&second);
    assert!(
        got.iter().all(|v| v.starts_with("b-")),
        "re-read committed records: {got:?}"
    );
    assert_eq!(got.len(), 6);
    c.close().await.unwrap();
}

/// Shared record of what each member consumed, by member index.
type Seen = Arc<Mutex<BTreeMap<usize, Vec<ConsumerRecord>>>>;

#[tokio::test]
async fn two_members_split_the_partitions_and_each_record_is_read_once() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-two", 4).await;
    let group = unique_topic("g-two");
    let seen: Seen = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, usize)>();
    for member in 0..2usize {
        let addr = addr.clone();
        let topic = topic.clone();
        let group = group.clone();
        let seen = seen.clone();
        let stop = stop.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = subscriber(&addr, group_config(&group), &topic).await;
            loop {
                tokio::select! {
                    r = c.poll() => {
                        let batch = r.unwrap();
                        seen.lock().unwrap().entry(member).or_default().extend(batch);
                    }
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.notified() => break,
                }
                let _ = ready.send((member, c.assignment().len()));
            }
            let assignment = c.assignment();
            c.commit().await.unwrap();
            c.close().await.unwrap();
            assignment
        }));
        // The second member joins once the first one is in.
        if member == 0 {
            tokio::time::timeout(WAIT, async {
                while let Some((m, n)) = ready_rx.recv().await {
                    if m == 0 && n == 4 {
                        break;
                    }
                }
            })
            .await
            .expect("first member gets all four partitions");
        }
    }
    // Wait until both hold two partitions.
    tokio::time::timeout(WAIT, async {
        let mut last = [0usize; 2];
        while let Some((m, n)) = ready_rx.recv().await {
            last[m] = n;
            if last == [2, 2] {
                break;
            }
        }
    })
    .await
    .expect("the members settle on two partitions each");
    produce(&admin, &topic, 4, 5, "x").await;
    tokio::time::timeout(WAIT, async {
        loop {
            let n: usize = seen
                .lock()
                .unwrap()
                .values()
                .map(|v| {
                    v.iter()
                        .filter(|r| r.value.as_deref().is_some_and(|v| v.starts_with(b"x-")))
                        .count()
                })
                .sum();
            if n >= 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("all 20 records consumed");
    stop.notify_waiters();
    let mut assignments = Vec::new();
    for t in tasks {
        // notify_waiters only reaches a task waiting right then; nudge until it ends.
        let t = tokio::time::timeout(WAIT, async {
            let mut t = t;
            loop {
                tokio::select! {
                    r = &mut t => break r.unwrap(),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => stop.notify_waiters(),
                }
            }
        })
        .await
        .unwrap();
        assignments.push(t);
    }
    let seen = seen.lock().unwrap();
    let mut partitions_by_member: Vec<BTreeSet<i32>> = Vec::new();
    let mut all = Vec::new();
    for m in 0..2 {
        let recs: Vec<&ConsumerRecord> = seen[&m]
            .iter()
            .filter(|r| r.value.as_deref().is_some_and(|v| v.starts_with(b"x-")))
            .collect();
        partitions_by_member.push(recs.iter().map(|r| r.partition).collect());
        all.extend(recs.into_iter().cloned());
    }
    assert_eq!(values(&all).len(), 20, "every record exactly once");
    assert_eq!(all.len(), 20, "no record twice");
    assert!(partitions_by_member[0].is_disjoint(&partitions_by_member[1]));
    assert_eq!(partitions_by_member[0].len(), 2, "{partitions_by_member:?}");
    assert_eq!(partitions_by_member[1].len(), 2, "{partitions_by_member:?}");
    // Range: one member has partitions 0-1, the other 2-3.
    let mut sets: Vec<Vec<i32>> = partitions_by_member
        .iter()
        .map(|s| s.iter().copied().collect())
        .collect();
    sets.sort();
    assert_eq!(sets, vec![vec![0, 1], vec![2, 3]]);
}

/// Commits its position from `on_revoked`, and records what it was given.
#[derive(Default)]
struct CommitOnRevoke {
    revoked: Vec<TopicPartition>,
    commit_result: Option<Result<(), String>>,
}

impl RebalanceListener for CommitOnRevoke {
    async fn on_revoked(&mut self, ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        self.revoked.extend_from_slice(partitions);
        self.commit_result = Some(ctx.commit().await.map_err(|e| e.to_string()));
    }
}

#[tokio::test]
async fn on_revoked_can_commit_and_the_next_member_resumes_there() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-revoke", 2).await;
    produce(&admin, &topic, 2, 4, "a").await;
    let group = unique_topic("g-revoke");
    let mut c = subscriber(&addr, group_config(&group), &topic)
        .await
        .with_listener(CommitOnRevoke::default());
    poll_n(&mut c, 8).await;
    let tps: Vec<TopicPartition> = (0..2)
        .map(|p| TopicPartition::new(topic.as_str(), p))
        .collect();
    // Nothing committed yet: auto-commit is off.
    assert!(
        c.committed(&tps)
            .await
            .unwrap()
            .iter()
            .all(|(_, o)| o.is_none())
    );
    let mut probe =
        GroupConsumer::new(client(&addr).await, group_config(&group), consumer_config()).unwrap();
    // close() revokes everything: the listener commits 4 and 4.
    let listener_view = {
        c.close().await.unwrap();
        // close consumed `c`; what it committed is visible through the group.
        probe.committed(&tps).await.unwrap()
    };
    assert!(
        listener_view.iter().all(|(_, o)| *o == Some(4)),
        "{listener_view:?}"
    );
    produce(&admin, &topic, 2, 1, "b").await;
    probe.subscribe([&topic]).unwrap();
    let got = values(&poll_n(&mut probe, 2).await);
    assert!(got.iter().all(|v| v.starts_with("b-")), "{got:?}");
    probe.close().await.unwrap();
}

#[tokio::test]
async fn a_member_that_lost_its_generation_cannot_commit() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-fenced", 2).await;
    produce(&admin, &topic, 2, 2, "a").await;
    let group = unique_topic("g-fenced");
    // A short session, and this member stops heartbeating by never polling again after
    // max_poll_interval: its generation ends.
    let cfg = group_config(&group)
        .session_timeout(Duration::from_secs(3))
        .heartbeat_interval(Duration::from_millis(200))
        .max_poll_interval(Duration::from_secs(1))
        .rebalance_timeout(Duration::from_secs(3));
    let log: Log = Arc::default();
    let mut a = subscriber(&addr, cfg, &topic)
        .await
        .with_listener(Recorder {
            member: 0,
            log: log.clone(),
        });
    poll_n(&mut a, 4).await;
    let (generation, _) = a.generation().unwrap();
    let stale = vec![bus::TopicPartitionOffset::new(topic.as_str(), 0, 1)];
    a.commit_offsets(&stale)
        .await
        .expect("commits while in the generation");

    // A second member takes over while `a` does not poll.
    let mut b = subscriber(&addr, group_config(&group), &topic).await;
    tokio::time::timeout(WAIT, async {
        while b.assignment().len() < 2 {
            let _ = tokio::time::timeout(Duration::from_millis(300), b.poll()).await;
        }
    })
    .await
    .expect("b takes every partition once a is gone");
    let err = a.commit_offsets(&stale).await.unwrap_err();
    assert!(
        matches!(err, Error::CommitFailed { .. }),
        "a stale member's commit must fail typed, got {err:?} (generation was {generation})"
    );
    assert!(a.generation().is_none());
    // Its next poll reports the partitions as lost, not revoked, and rejoins.
    let _ = tokio::time::timeout(Duration::from_secs(2), a.poll()).await;
    let log = log.lock().unwrap().clone();
    assert_eq!(log[0], (0, "assigned", vec![0, 1]), "{log:?}");
    assert_eq!(log[1], (0, "lost", vec![0, 1]), "{log:?}");
    assert!(
        !log.iter().any(|(_, what, _)| *what == "revoked"),
        "{log:?}"
    );
    b.close().await.unwrap();
}

/// Every callback, in order, across members: (member, "assigned"/"revoked"/"lost", partitions).
type Log = Arc<Mutex<Vec<(usize, &'static str, Vec<i32>)>>>;

struct Recorder {
    member: usize,
    log: Log,
}

impl Recorder {
    fn note(&self, what: &'static str, partitions: &[TopicPartition]) {
        let parts = partitions.iter().map(|tp| tp.partition).collect();
        self.log.lock().unwrap().push((self.member, what, parts));
    }
}

impl RebalanceListener for Recorder {
    async fn on_assigned(&mut self, _: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        self.note("assigned", partitions);
    }
    async fn on_revoked(&mut self, _: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        self.note("revoked", partitions);
    }
    async fn on_lost(&mut self, _: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        self.note("lost", partitions);
    }
}

/// Polls `c` in short slices until `done` says so (or panics after WAIT).
async fn poll_until<L: RebalanceListener>(
    c: &mut GroupConsumer<L>,
    mut done: impl FnMut(&GroupConsumer<L>) -> bool,
) {
    tokio::time::timeout(WAIT, async {
        while !done(c) {
            let _ = tokio::time::timeout(Duration::from_millis(200), c.poll()).await;
        }
    })
    .await
    .expect("condition within WAIT");
}

#[tokio::test]
async fn cooperative_members_move_partitions_in_two_steps_without_revoking_the_rest() {
    let Some(addr) = bootstrap() else { return };
    let (_admin, topic) = client_with_topic(&addr, "group-coop", 4).await;
    let group = unique_topic("g-coop");
    let log: Log = Arc::default();
    let cfg = || group_config(&group).assignors([bus::AssignorKind::CooperativeSticky]);
    let mut a = subscriber(&addr, cfg(), &topic)
        .await
        .with_listener(Recorder {
            member: 0,
            log: log.clone(),
        });
    poll_until(&mut a, |c| c.assignment().len() == 4).await;
    let mut b = subscriber(&addr, cfg(), &topic)
        .await
        .with_listener(Recorder {
            member: 1,
            log: log.clone(),
        });
    // Both poll (each poll drives that member's rebalance steps) until the split settles.
    tokio::time::timeout(WAIT, async {
        while !(a.assignment().len() == 2 && b.assignment().len() == 2) {
            tokio::select! {
                _ = a.poll() => {}
                _ = b.poll() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await
    .expect("the members settle on two partitions each");
    let log = log.lock().unwrap().clone();
    // a never revoked more than it gave away, and never lost anything.
    let a_revoked: Vec<i32> = log
        .iter()
        .filter(|(m, what, _)| *m == 0 && *what == "revoked")
        .flat_map(|(_, _, p)| p.clone())
        .collect();
    assert_eq!(
        a_revoked.len(),
        2,
        "cooperative: only the moving partitions: {log:?}"
    );
    assert!(!log.iter().any(|(_, what, _)| *what == "lost"), "{log:?}");
    // No partition is ever held by both: replaying the log, an assignment never lands on
    // a partition the other member still owns.
    let mut owner: BTreeMap<i32, usize> = BTreeMap::new();
    for (m, what, parts) in &log {
        for p in parts {
            match *what {
                "assigned" => {
                    assert_eq!(owner.insert(*p, *m), None, "{p} owned twice: {log:?}");
                }
                _ => {
                    assert_eq!(owner.remove(p), Some(*m), "{log:?}");
                }
            }
        }
    }
    let kept: BTreeSet<i32> = a.assignment().iter().map(|tp| tp.partition).collect();
    assert!(kept.iter().all(|p| !a_revoked.contains(p)));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn the_broker_refuses_a_commit_from_an_ended_generation_and_the_partitions_are_lost() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-stale", 2).await;
    if is_tansu(&admin) {
        // tansu 0.6 neither evicts a member that does not rejoin within the rebalance
        // timeout nor checks generation or member id in OffsetCommit: assert that departure.
        let code = raw_commit(&admin, "g-any", 12345, "nobody", &topic).await;
        assert_eq!(
            code, 0,
            "tansu began checking generations: enable this test on it"
        );
        return;
    }
    produce(&admin, &topic, 2, 2, "a").await;
    let group = unique_topic("g-stale");
    let log: Log = Arc::default();
    // `a` heartbeats rarely, so it has not heard that its generation ended when it commits:
    // the broker is the one to refuse.
    let cfg = group_config(&group)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_secs(5))
        .rebalance_timeout(Duration::from_secs(2));
    let mut a = subscriber(&addr, cfg, &topic)
        .await
        .with_listener(Recorder {
            member: 0,
            log: log.clone(),
        });
    poll_n(&mut a, 4).await;
    let stale = vec![bus::TopicPartitionOffset::new(topic.as_str(), 0, 1)];
    let mut b = subscriber(&addr, group_config(&group), &topic).await;
    poll_until(&mut b, |c| c.assignment().len() == 2).await;
    let believed = a.generation();
    assert!(believed.is_some(), "a has not noticed yet");
    let err = a.commit_offsets(&stale).await.unwrap_err();
    assert!(
        matches!(err, Error::CommitFailed { .. }),
        "stale commit must fail typed, got {err:?}"
    );
    assert!(a.generation().is_none(), "the refusal ends a's generation");
    // The next poll reports a's partitions as lost (not revoked: it could not commit).
    let _ = tokio::time::timeout(Duration::from_secs(3), a.poll()).await;
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|(_, what, parts)| *what == "lost" && parts.len() == 2),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|(_, what, _)| *what == "revoked"),
        "{log:?}"
    );
    b.close().await.unwrap();
    a.close().await.unwrap();
}

#[tokio::test]
async fn auto_commit_covers_only_records_poll_returned() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-auto", 1).await;
    produce(&admin, &topic, 1, 20, "a").await;
    let group = unique_topic("g-auto");
    let cfg = group_config(&group)
        .auto_commit(true)
        .auto_commit_interval(Duration::from_millis(100))
        .max_poll_records(5);
    let mut c = subscriber(&addr, cfg, &topic).await;
    let first = c.poll().await.unwrap();
    assert_eq!(first.len(), 5, "max_poll_records caps a poll");
    let tp = TopicPartition::new(topic.as_str(), 0);
    assert_eq!(c.position(&tp), Some(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // This poll commits (in the background) what the last one returned, then returns more.
    let second = c.poll().await.unwrap();
    assert_eq!(second[0].offset, 5);
    // The background commit lands; until the next poll, the commit never passes 5 although
    // 10 records were returned and more are buffered.
    tokio::time::timeout(WAIT, async {
        loop {
            let committed = c.committed(std::slice::from_ref(&tp)).await.unwrap()[0].1;
            assert!(
                committed.is_none_or(|o| o <= 5),
                "auto-commit ran ahead of the application: {committed:?}"
            );
            if committed == Some(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the auto-commit of offset 5 lands");
    // close commits the final position.
    c.close().await.unwrap();
    let probe =
        GroupConsumer::new(client(&addr).await, group_config(&group), consumer_config()).unwrap();
    let mut probe = probe;
    assert_eq!(probe.committed(&[tp]).await.unwrap()[0].1, Some(10));
}

/// Polls both members concurrently in short slices until `done` says so (or panics after
/// WAIT): a rebalance completes only when every member polls.
async fn poll_both_until<L: RebalanceListener, M: RebalanceListener>(
    a: &mut GroupConsumer<L>,
    b: &mut GroupConsumer<M>,
    mut done: impl FnMut(&GroupConsumer<L>, &GroupConsumer<M>) -> bool,
) {
    tokio::time::timeout(WAIT, async {
        while !done(a, b) {
            let slice = Duration::from_millis(200);
            let _ = tokio::join!(
                tokio::time::timeout(slice, a.poll()),
                tokio::time::timeout(slice, b.poll())
            );
        }
    })
    .await
    .expect("condition within WAIT");
}

fn partitions(tps: Vec<TopicPartition>) -> BTreeSet<i32> {
    tps.into_iter().map(|tp| tp.partition).collect()
}

/// Two static members split four partitions; b closes (a static member does not leave) and
/// a new process with b's instance id takes its place within the session timeout. It gets
/// b's partitions back with no rebalance: the generation stays, and a sees no callback at
/// all. (Dynamic members would fail this: b's close leaves, a is given everything.)
#[tokio::test]
async fn a_restarted_static_member_gets_its_partitions_back_without_a_rebalance() {
    let Some(addr) = bootstrap() else { return };
    let (_admin, topic) = client_with_topic(&addr, "group-static", 4).await;
    let group = unique_topic("g-static");
    let log: Log = Arc::default();
    let member = |id: &str, n: usize| {
        let (addr, group, log) = (addr.clone(), group.clone(), log.clone());
        let id = id.to_owned();
        async move {
            let cfg = group_config(&group).group_instance_id(id);
            GroupConsumer::new(client(&addr).await, cfg, consumer_config())
                .unwrap()
                .with_listener(Recorder { member: n, log })
        }
    };
    let mut a = member("instance-a", 0).await;
    a.subscribe([&topic]).unwrap();
    poll_until(&mut a, |c| c.assignment().len() == 4).await;
    let mut b = member("instance-b", 1).await;
    b.subscribe([&topic]).unwrap();
    poll_both_until(&mut a, &mut b, |a, b| {
        a.assignment().len() == 2 && b.assignment().len() == 2
    })
    .await;
    let (generation, _) = a.generation().unwrap();
    assert_eq!(b.generation().map(|(g, _)| g), Some(generation));
    let (a_parts, b_parts) = (partitions(a.assignment()), partitions(b.assignment()));
    assert!(a_parts.is_disjoint(&b_parts));
    let split_at = log.lock().unwrap().len();

    b.close().await.unwrap();
    let mut again = member("instance-b", 2).await;
    again.subscribe([&topic]).unwrap();
    poll_both_until(&mut a, &mut again, |_, again| {
        partitions(again.assignment()) == b_parts
    })
    .await;
    // A few heartbeat intervals more: a rebalance, had one started, would show by now.
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    poll_both_until(&mut a, &mut again, |_, _| {
        tokio::time::Instant::now() >= settle
    })
    .await;
    assert_eq!(partitions(again.assignment()), b_parts);
    assert_eq!(partitions(a.assignment()), a_parts);
    assert_eq!(
        a.generation().map(|(g, _)| g),
        Some(generation),
        "no rebalance"
    );
    assert_eq!(again.generation().map(|(g, _)| g), Some(generation));
    let since: Vec<_> = log.lock().unwrap()[split_at..].to_vec();
    assert!(
        since.iter().all(|(m, _, _)| *m != 0),
        "a saw a callback after the split: {since:?}"
    );
    a.close().await.unwrap();
    again.close().await.unwrap();
}

#[tokio::test]
async fn the_record_stream_yields_every_record_in_partition_order() {
    use futures_util::StreamExt;
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-stream", 2).await;
    produce(&admin, &topic, 2, 6, "s").await;
    let group = unique_topic("g-stream");
    let mut c = subscriber(&addr, group_config(&group), &topic).await;
    let records: Vec<ConsumerRecord> = {
        let stream = c.records();
        tokio::time::timeout(WAIT, stream.take(12).map(|r| r.unwrap()).collect())
            .await
            .unwrap()
    };
    for p in 0..2 {
        let offsets: Vec<i64> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (0..6).collect::<Vec<i64>>());
    }
    let tp = TopicPartition::new(topic.as_str(), 0);
    assert_eq!(c.position(&tp), Some(6));
    assert_eq!(c.lag(&tp), Some(0));
    c.close().await.unwrap();
}

/// A raw OffsetCommit with the given generation and member id; the partition's error code.
async fn raw_commit(
    client: &Client,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
) -> i16 {
    use kafka_proto::messages::OffsetCommitRequest;
    use kafka_proto::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let mut p = OffsetCommitRequestPartition::default();
    p.committed_offset = 1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = topic.into();
    t.partitions.push(p);
    let mut req = OffsetCommitRequest::default();
    req.group_id = group.into();
    req.generation_id_or_member_epoch = generation;
    req.member_id = member.into();
    req.topics.push(t);
    let node = *client.metadata().brokers.keys().next().unwrap();
    let resp = client.send_to(node, &req).await.unwrap();
    resp.topics[0].partitions[0].error_code
}

#[tokio::test]
async fn no_committed_offset_under_reset_none_is_a_typed_error_until_a_seek() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-none", 1).await;
    produce(&admin, &topic, 1, 3, "n").await;
    let group = unique_topic("g-none");
    let cc = consumer_config().auto_offset_reset(AutoOffsetReset::None);
    let mut c = GroupConsumer::new(client(&addr).await, group_config(&group), cc).unwrap();
    c.subscribe([&topic]).unwrap();
    let err = tokio::time::timeout(WAIT, c.poll())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::NoCommittedOffset { ref topic, partition: 0 } if *topic == topic_name(&c)),
        "{err:?}"
    );
    let tp = TopicPartition::new(topic.as_str(), 0);
    assert_eq!(
        c.assignment(),
        vec![tp.clone()],
        "still assigned, waiting for a seek"
    );
    c.seek(&tp, bus::consumer::Offset::At(1)).unwrap();
    let got = poll_n(&mut c, 2).await;
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [1, 2]);
    c.close().await.unwrap();
}

fn topic_name<L: RebalanceListener>(c: &GroupConsumer<L>) -> String {
    c.subscription()[0].clone()
}

#[tokio::test]
async fn a_paused_partition_returns_nothing_until_resumed_and_loses_nothing() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-pause", 2).await;
    produce(&admin, &topic, 2, 4, "p").await;
    let group = unique_topic("g-pause");
    let mut c = subscriber(&addr, group_config(&group).max_poll_records(1), &topic).await;
    let first = poll_n(&mut c, 1).await;
    let paused = TopicPartition::new(topic.as_str(), first[0].partition);
    let other = TopicPartition::new(topic.as_str(), 1 - first[0].partition);
    // Records of `paused` may already be buffered: pausing drops them, position stays.
    c.pause(&paused).unwrap();
    assert_eq!(c.position(&paused), Some(1));
    let rest = poll_n(&mut c, 4).await;
    assert!(
        rest.iter().all(|r| r.partition == other.partition),
        "paused partition read"
    );
    c.resume(&paused).unwrap();
    let resumed = poll_n(&mut c, 3).await;
    assert_eq!(
        resumed
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        (1..4).map(|o| (paused.partition, o)).collect::<Vec<_>>()
    );
    c.close().await.unwrap();
}

/// The group consumer relies on `set_assignment` keeping what a retained partition has read.
#[tokio::test]
async fn set_assignment_keeps_retained_partitions_and_starts_new_ones() {
    use bus::consumer::{Offset, PartitionConsumer};
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-setassign", 3).await;
    produce(&admin, &topic, 3, 3, "k").await;
    let mut c = PartitionConsumer::new(client(&addr).await, consumer_config()).unwrap();
    c.set_assignment([
        (topic.as_str(), 0, Offset::Earliest),
        (topic.as_str(), 1, Offset::Earliest),
    ])
    .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while got.len() < 6 {
            got.extend(c.poll_batch().await.unwrap());
        }
    })
    .await
    .unwrap();
    assert_eq!(c.position(&topic, 0), Some(3));
    // Keep 1 (the offset given is ignored for it), drop 0, add 2 at offset 1.
    c.set_assignment([
        (topic.as_str(), 1, Offset::At(0)),
        (topic.as_str(), 2, Offset::At(1)),
    ])
    .unwrap();
    assert_eq!(
        c.position(&topic, 1),
        Some(3),
        "retained partition keeps its position"
    );
    assert_eq!(c.position(&topic, 0), None, "dropped partition is gone");
    let mut more = Vec::new();
    tokio::time::timeout(WAIT, async {
        while more.len() < 2 {
            more.extend(c.poll_batch().await.unwrap());
        }
    })
    .await
    .unwrap();
    assert!(more.iter().all(|r| r.partition == 2), "{more:?}");
    assert_eq!(more.iter().map(|r| r.offset).collect::<Vec<_>>(), [1, 2]);
    assert!(
        c.set_assignment([(topic.as_str(), 1, Offset::At(-1))])
            .is_err()
    );
    c.unassign(&[(topic.as_str().into(), 1)]).unwrap();
    assert_eq!(c.assignment().len(), 1);
}

#[tokio::test]
async fn a_subscribed_topic_created_later_is_assigned_after_the_leaders_metadata_check() {
    let Some(addr) = bootstrap() else { return };
    let (admin, topic) = client_with_topic(&addr, "group-late-a", 1).await;
    let late = unique_topic("group-late-b");
    let group = unique_topic("g-late");
    let client = Client::connect(
        ClientConfig::new([addr.as_str()]).metadata_max_age(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let mut c = GroupConsumer::new(client, group_config(&group), consumer_config()).unwrap();
    c.subscribe([topic.as_str(), late.as_str()]).unwrap();
    poll_until(&mut c, |c| c.assignment().len() == 1).await;
    admin
        .admin()
        .create_topic(
            bus::admin::NewTopic::new(&late)
                .partitions(2)
                .replication_factor(1),
        )
        .await
        .unwrap();
    poll_until(&mut c, |c| c.assignment().len() == 3).await;
    assert!(
        c.assignment()
            .iter()
            .filter(|tp| *tp.topic == *late)
            .count()
            == 2
    );
    c.close().await.unwrap();
}
