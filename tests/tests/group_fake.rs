//! The group consumer (`bus::group`) against the in-process fake cluster, in paused tokio
//! time: rebalances on join, leave and crash, coordinator moves and every retriable group
//! error injected through the fake's hooks, cooperative-sticky's minimal revocations, commits
//! from `on_revoked`, fencing, and static membership. Timeouts (session, rebalance,
//! heartbeat) are real protocol timeouts, but virtual: the suite runs in well under a second.
//!
//! Each member runs in its own task, polling in short slices so the test can watch its
//! assignment and stop it; its listener records every callback.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::consumer::{AutoOffsetReset, ConsumerConfig};
use bus::group::{
    AssignorKind, GroupConfig, GroupConsumer, RebalanceContext, RebalanceListener, TopicPartition,
};
use bus::producer::{Producer, ProducerConfig, Record};
use bus::{Client, Error};
use integration_tests::fake::{Action, FakeCluster, GroupState};
use kafka_proto::{ApiKey, ErrorCode};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TOPIC: &str = "t";
const SESSION: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assigned(BTreeSet<i32>),
    Revoked(BTreeSet<i32>),
    Lost(BTreeSet<i32>),
}

fn parts(tps: &[TopicPartition]) -> BTreeSet<i32> {
    tps.iter().map(|tp| tp.partition).collect()
}

/// Records callbacks; optionally commits its positions from `on_revoked`.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    commit_on_revoke: bool,
    revoke_commits: Arc<Mutex<Vec<Result<(), String>>>>,
}

impl RebalanceListener for Recorder {
    async fn on_assigned(
        &mut self,
        _ctx: &mut RebalanceContext<'_>,
        partitions: &[TopicPartition],
    ) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Assigned(parts(partitions)));
    }

    async fn on_revoked(&mut self, ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Revoked(parts(partitions)));
        if self.commit_on_revoke {
            let r = ctx.commit().await.map_err(|e| e.to_string());
            self.revoke_commits.lock().unwrap().push(r);
        }
    }

    async fn on_lost(&mut self, _ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Lost(parts(partitions)));
    }
}

/// A member running in its own task.
struct Member {
    task: JoinHandle<Result<(), Error>>,
    stop: Arc<AtomicBool>,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    /// (partition, offset) of every record it received.
    records: Arc<Mutex<Vec<(i32, i64)>>>,
    member_id: Arc<Mutex<String>>,
    generation: Arc<Mutex<i32>>,
    listener: Recorder,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn assignment(&self) -> BTreeSet<i32> {
        self.assignment.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Event> {
        self.listener.events.lock().unwrap().clone()
    }

    fn revoked(&self) -> BTreeSet<i32> {
        self.events()
            .into_iter()
            .flat_map(|e| match e {
                Event::Revoked(s) => s,
                _ => BTreeSet::new(),
            })
            .collect()
    }

    fn member_id(&self) -> String {
        self.member_id.lock().unwrap().clone()
    }

    fn generation(&self) -> i32 {
        *self.generation.lock().unwrap()
    }

    /// Closes the consumer (on_revoked, commit, LeaveGroup) and waits for it.
    async fn close(self) -> Result<(), Error> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }

    /// A crash: the task dies mid-flight, nothing is sent on its behalf.
    fn crash(self) {
        self.task.abort();
    }
}

fn group_config(group: &str, assignor: AssignorKind) -> GroupConfig {
    GroupConfig::new(group)
        .session_timeout(SESSION)
        .heartbeat_interval(Duration::from_secs(1))
        .rebalance_timeout(Duration::from_secs(20))
        .assignors([assignor])
        .auto_commit(false)
}

fn start(fake: &FakeCluster, config: GroupConfig, listener: Recorder) -> Member {
    let stop = Arc::new(AtomicBool::new(false));
    let assignment = Arc::new(Mutex::new(BTreeSet::new()));
    let records = Arc::new(Mutex::new(Vec::new()));
    let member_id = Arc::new(Mutex::new(String::new()));
    let generation = Arc::new(Mutex::new(-1));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let fake = fake.clone();
    let task = {
        let (stop, assignment, records, member_id, generation, errors, listener) = (
            stop.clone(),
            assignment.clone(),
            records.clone(),
            member_id.clone(),
            generation.clone(),
            errors.clone(),
            listener.clone(),
        );
        tokio::spawn(async move {
            let client = Client::connect(fake.client_config()).await?;
            let consumer = ConsumerConfig::default()
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .fetch_max_wait(Duration::from_millis(100));
            let mut c = GroupConsumer::new(client, config, consumer)?.with_listener(listener);
            c.subscribe([TOPIC])?;
            while !stop.load(Ordering::SeqCst) {
                match tokio::time::timeout(Duration::from_millis(200), c.poll()).await {
                    Ok(Ok(batch)) => records
                        .lock()
                        .unwrap()
                        .extend(batch.iter().map(|r| (r.partition, r.offset))),
                    Ok(Err(e)) => errors.lock().unwrap().push(e.to_string()),
                    Err(_) => {}
                }
                *assignment.lock().unwrap() =
                    c.assignment().iter().map(|tp| tp.partition).collect();
                *member_id.lock().unwrap() = c.member_id();
                *generation.lock().unwrap() = c.generation().map_or(-1, |(g, _)| g);
            }
            c.close().await
        })
    };
    Member {
        task,
        stop,
        assignment,
        records,
        member_id,
        generation,
        listener,
        errors,
    }
}

/// Waits (virtual time) until `cond` holds, or fails after `limit`.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all(n: i32) -> BTreeSet<i32> {
    (0..n).collect()
}

async fn produce(fake: &FakeCluster, partitions: i32, per_partition: usize) {
    let client = Client::connect(fake.client_config()).await.unwrap();
    let producer = Producer::new(client, ProducerConfig::default())
        .await
        .unwrap();
    for p in 0..partitions {
        for i in 0..per_partition {
            // Delivery is checked by the flush below.
            drop(
                producer
                    .send(Record::new(TOPIC).partition(p).value(format!("{p}-{i}")))
                    .await
                    .unwrap(),
            );
        }
    }
    producer.flush().await.unwrap();
}

/// Two members splitting `n` partitions: returns them once both hold a disjoint half.
async fn two_members(
    fake: &FakeCluster,
    group: &str,
    assignor: AssignorKind,
    n: i32,
) -> (Member, Member) {
    let a = start(fake, group_config(group, assignor), Recorder::default());
    until("a alone holds everything", Duration::from_secs(30), || {
        a.assignment() == all(n)
    })
    .await;
    let b = start(fake, group_config(group, assignor), Recorder::default());
    until(
        "a and b split the partitions",
        Duration::from_secs(60),
        || {
            let (x, y) = (a.assignment(), b.assignment());
            !x.is_empty() && !y.is_empty() && x.is_disjoint(&y) && x.union(&y).count() == n as usize
        },
    )
    .await;
    (a, b)
}

#[tokio::test(start_paused = true)]
async fn rebalance_when_a_second_member_joins() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 4)]);
    let (a, b) = two_members(&fake, "g", AssignorKind::Range, 4).await;
    assert_eq!(a.assignment().len(), 2);
    assert_eq!(b.assignment().len(), 2);
    let g = fake.group_state("g").unwrap();
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.members.len(), 2);
    assert_eq!(g.protocol.as_deref(), Some("range"));
    assert_eq!(a.generation(), g.generation);
    assert_eq!(b.generation(), g.generation);
    // Eager: a gave everything back before the split.
    assert!(
        a.events().contains(&Event::Revoked(all(4))),
        "{:?}",
        a.events()
    );
}

#[tokio::test(start_paused = true)]
async fn rebalance_when_a_member_leaves() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 4)]);
    let (a, b) = two_members(&fake, "g", AssignorKind::Range, 4).await;
    let left = Instant::now();
    b.close().await.unwrap();
    assert_eq!(fake.count(ApiKey::LeaveGroup), 1);
    until("a gets everything", Duration::from_secs(30), || {
        a.assignment() == all(4)
    })
    .await;
    assert!(
        left.elapsed() < SESSION,
        "a leave rebalances without waiting for the session"
    );
    assert_eq!(fake.group_state("g").unwrap().members.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn rebalance_after_a_crashed_member_s_session_expires() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 4)]);
    let (a, b) = two_members(&fake, "g", AssignorKind::Range, 4).await;
    let before = a.assignment();
    let crashed = Instant::now();
    b.crash();
    tokio::time::sleep(SESSION - Duration::from_secs(2)).await;
    assert_eq!(
        a.assignment(),
        before,
        "nothing moves before the session timeout"
    );
    until("a gets everything", Duration::from_secs(30), || {
        a.assignment() == all(4)
    })
    .await;
    assert!(crashed.elapsed() >= SESSION - Duration::from_secs(1));
    assert_eq!(fake.count(ApiKey::LeaveGroup), 0);
}

#[tokio::test(start_paused = true)]
async fn coordinator_move_is_followed() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 2)]);
    fake.move_coordinator("g", 0);
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("a holds everything", Duration::from_secs(30), || {
        a.assignment() == all(2)
    })
    .await;
    let finds = fake.count(ApiKey::FindCoordinator);
    fake.move_coordinator("g", 2);
    // The next heartbeat at node 0 gets NOT_COORDINATOR; the member finds node 2.
    until("heartbeats reach node 2", Duration::from_secs(30), || {
        fake.requests()
            .iter()
            .any(|r| r.api == ApiKey::Heartbeat && r.node == 2)
    })
    .await;
    assert!(fake.count(ApiKey::FindCoordinator) > finds);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(a.assignment(), all(2));
    assert!(
        a.errors.lock().unwrap().is_empty(),
        "{:?}",
        a.errors.lock().unwrap()
    );
}

/// One heartbeat fails with `code`: the member rejoins and ends up owning everything again.
async fn heartbeat_error_rejoins(code: ErrorCode) {
    let fake = FakeCluster::with_topics(1, &[(TOPIC, 2)]);
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("a holds everything", Duration::from_secs(30), || {
        a.assignment() == all(2)
    })
    .await;
    let joins = fake.count(ApiKey::JoinGroup);
    fake.hook_once(ApiKey::Heartbeat, move |_| Action::Error(code));
    until(
        &format!("a rejoins after {code:?}"),
        Duration::from_secs(60),
        || fake.count(ApiKey::JoinGroup) > joins,
    )
    .await;
    until("a holds everything again", Duration::from_secs(60), || {
        a.assignment() == all(2)
            && fake
                .group_state("g")
                .is_some_and(|g| g.state == GroupState::Stable && g.members.len() == 1)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn heartbeat_rebalance_in_progress_rejoins() {
    heartbeat_error_rejoins(ErrorCode::RebalanceInProgress).await;
}

#[tokio::test(start_paused = true)]
async fn heartbeat_illegal_generation_rejoins() {
    heartbeat_error_rejoins(ErrorCode::IllegalGeneration).await;
}

#[tokio::test(start_paused = true)]
async fn heartbeat_unknown_member_id_rejoins() {
    heartbeat_error_rejoins(ErrorCode::UnknownMemberId).await;
}

/// `api` fails once with a coordinator error: the member looks the coordinator up again (for
/// NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE) and carries on.
async fn coordinator_error(api: ApiKey, code: ErrorCode) {
    let fake = FakeCluster::with_topics(2, &[(TOPIC, 2)]);
    if api == ApiKey::JoinGroup {
        fake.fail_next(api, 1, code);
    }
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("a holds everything", Duration::from_secs(30), || {
        a.assignment() == all(2)
    })
    .await;
    let finds = fake.count(ApiKey::FindCoordinator);
    match api {
        ApiKey::JoinGroup => {}
        ApiKey::Heartbeat => {
            let hb = fake.count(ApiKey::Heartbeat);
            fake.fail_next(api, 1, code);
            until("the failed heartbeat", Duration::from_secs(10), || {
                fake.count(ApiKey::Heartbeat) > hb
            })
            .await;
            until("heartbeats succeed again", Duration::from_secs(30), || {
                fake.count(ApiKey::Heartbeat) > hb + 2
            })
            .await;
        }
        ApiKey::OffsetCommit => {
            // The commit is the application's own call here, so it needs the consumer itself.
            a.close().await.unwrap();
            produce(&fake, 2, 3).await;
            let client = Client::connect(fake.client_config()).await.unwrap();
            let consumer = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
            let mut c =
                GroupConsumer::new(client, group_config("g", AssignorKind::Range), consumer)
                    .unwrap();
            c.subscribe([TOPIC]).unwrap();
            let mut got = 0;
            while got < 6 {
                got += c.poll().await.unwrap().len();
            }
            let finds = fake.count(ApiKey::FindCoordinator);
            let commits = fake.count(ApiKey::OffsetCommit);
            fake.fail_next(api, 1, code);
            c.commit()
                .await
                .unwrap_or_else(|e| panic!("commit after {code:?}: {e}"));
            let g = fake.group_state("g").unwrap();
            assert_eq!(
                (g.committed(TOPIC, 0), g.committed(TOPIC, 1)),
                (Some(3), Some(3))
            );
            assert_eq!(
                fake.count(ApiKey::OffsetCommit),
                commits + 2,
                "retried once"
            );
            if code != ErrorCode::CoordinatorLoadInProgress {
                assert!(fake.count(ApiKey::FindCoordinator) > finds, "rediscovered");
            }
            return;
        }
        _ => unreachable!(),
    }
    if api == ApiKey::Heartbeat && code != ErrorCode::CoordinatorLoadInProgress {
        assert!(
            fake.count(ApiKey::FindCoordinator) > finds,
            "rediscovered after {code:?}"
        );
    }
    if api == ApiKey::JoinGroup {
        assert!(
            fake.count(ApiKey::JoinGroup) >= 3,
            "the refused join was retried"
        );
        if code != ErrorCode::CoordinatorLoadInProgress {
            assert!(finds >= 2, "rediscovered after {code:?}");
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.assignment(), all(2));
}

macro_rules! coordinator_error_tests {
    ($($name:ident: $api:ident, $code:ident;)*) => {$(
        #[tokio::test(start_paused = true)]
        async fn $name() {
            coordinator_error(ApiKey::$api, ErrorCode::$code).await;
        }
    )*};
}

coordinator_error_tests! {
    join_not_coordinator: JoinGroup, NotCoordinator;
    join_coordinator_not_available: JoinGroup, CoordinatorNotAvailable;
    join_coordinator_load_in_progress: JoinGroup, CoordinatorLoadInProgress;
    heartbeat_not_coordinator: Heartbeat, NotCoordinator;
    heartbeat_coordinator_not_available: Heartbeat, CoordinatorNotAvailable;
    heartbeat_coordinator_load_in_progress: Heartbeat, CoordinatorLoadInProgress;
    commit_not_coordinator: OffsetCommit, NotCoordinator;
    commit_coordinator_not_available: OffsetCommit, CoordinatorNotAvailable;
    commit_coordinator_load_in_progress: OffsetCommit, CoordinatorLoadInProgress;
}

#[tokio::test(start_paused = true)]
async fn cooperative_sticky_revokes_only_what_moves() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 6)]);
    let (a, b) = two_members(&fake, "g", AssignorKind::CooperativeSticky, 6).await;
    assert_eq!(
        fake.group_state("g").unwrap().protocol.as_deref(),
        Some("cooperative-sticky")
    );
    let (a_before, b_before) = (a.assignment(), b.assignment());
    let (a_rev_before, b_rev_before) = (a.revoked(), b.revoked());
    assert!(
        a_rev_before.len() <= 3,
        "a gave b only what b got: {:?}",
        a.events()
    );
    let c = start(
        &fake,
        group_config("g", AssignorKind::CooperativeSticky),
        Recorder::default(),
    );
    until(
        "three members hold two partitions each",
        Duration::from_secs(90),
        || {
            let (x, y, z) = (a.assignment(), b.assignment(), c.assignment());
            x.len() == 2
                && y.len() == 2
                && z.len() == 2
                && x.union(&y).chain(z.iter()).collect::<BTreeSet<_>>().len() == 6
        },
    )
    .await;
    for (name, m, before, rev_before) in [
        ("a", &a, a_before, a_rev_before),
        ("b", &b, b_before, b_rev_before),
    ] {
        let newly: BTreeSet<i32> = m.revoked().difference(&rev_before).copied().collect();
        let kept = m.assignment();
        assert!(
            newly.is_subset(&before),
            "{name} revoked only what it owned"
        );
        assert!(kept.is_subset(&before), "{name} kept, never gained");
        assert!(
            newly.is_disjoint(&kept),
            "{name} never revoked a partition it kept: {:?}",
            m.events()
        );
        assert_eq!(
            newly.len(),
            1,
            "{name} gave up exactly one: {:?}",
            m.events()
        );
    }
    assert!(c.revoked().is_empty());
}

/// a reads everything, commits its positions from `on_revoked`; b joins and takes half.
/// The moved partitions' commits are in the group before b reads them, so b reads nothing old.
async fn commit_from_on_revoked(assignor: AssignorKind) {
    commit_before_move(assignor, false).await;
}

/// With `auto_commit`, the consumer's own commit on revoke (not the listener's) does it.
async fn commit_before_move(assignor: AssignorKind, auto_commit: bool) {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 4)]);
    produce(&fake, 4, 5).await;
    let listener = Recorder {
        commit_on_revoke: !auto_commit,
        ..Recorder::default()
    };
    let config = group_config("g", assignor)
        .auto_commit(auto_commit)
        .auto_commit_interval(Duration::from_secs(60));
    let a = start(&fake, config, listener.clone());
    until("a reads everything", Duration::from_secs(30), || {
        a.records.lock().unwrap().len() == 20
    })
    .await;
    let b = start(&fake, group_config("g", assignor), Recorder::default());
    until("the split", Duration::from_secs(60), || {
        b.assignment().len() == 2 && a.assignment().len() == 2
    })
    .await;
    let commits = listener.revoke_commits.lock().unwrap().clone();
    assert!(auto_commit || !commits.is_empty(), "on_revoked ran");
    assert!(commits.iter().all(|r| r.is_ok()), "{commits:?}");
    let g = fake.group_state("g").unwrap();
    for p in a.revoked() {
        assert_eq!(
            g.committed(TOPIC, p),
            Some(5),
            "partition {p} committed from on_revoked"
        );
    }
    for p in b.assignment() {
        assert_eq!(
            g.committed(TOPIC, p),
            Some(5),
            "b's partition {p} was committed before it moved"
        );
    }
    // b starts where a's commit says: it reads nothing old.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        b.records.lock().unwrap().is_empty(),
        "{:?}",
        b.records.lock().unwrap()
    );
    // The commit reached the coordinator before b's last SyncGroup.
    let log = fake.requests();
    let commit_at = log
        .iter()
        .position(|r| r.api == ApiKey::OffsetCommit)
        .unwrap();
    let last_sync = log
        .iter()
        .rposition(|r| r.api == ApiKey::SyncGroup)
        .unwrap();
    assert!(commit_at < last_sync);
}

#[tokio::test(start_paused = true)]
async fn commit_from_on_revoked_lands_before_the_partitions_move() {
    commit_from_on_revoked(AssignorKind::Range).await;
}

#[tokio::test(start_paused = true)]
async fn auto_commit_on_revoke_lands_before_the_partitions_move() {
    commit_before_move(AssignorKind::Range, true).await;
}

#[tokio::test(start_paused = true)]
async fn cooperative_auto_commit_on_revoke_lands_before_the_partitions_move() {
    commit_before_move(AssignorKind::CooperativeSticky, true).await;
}

#[tokio::test(start_paused = true)]
async fn cooperative_commit_from_on_revoked_lands_before_the_partitions_move() {
    commit_from_on_revoked(AssignorKind::CooperativeSticky).await;
}

/// The connection dies under a JoinGroup (or a heartbeat): the member redials and carries on.
async fn dropped_connection(api: ApiKey) {
    let fake = FakeCluster::with_topics(1, &[(TOPIC, 2)]);
    if api == ApiKey::JoinGroup {
        fake.hook_once(api, |ctx| {
            if ctx.member().is_some_and(|m| !m.is_empty()) {
                Action::DropConnection
            } else {
                Action::Pass
            }
        });
    }
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("a holds everything", Duration::from_secs(60), || {
        a.assignment() == all(2)
    })
    .await;
    if api == ApiKey::Heartbeat {
        let conns = fake.connections(0);
        fake.hook_once(api, |_| Action::DropConnection);
        until("a redials", Duration::from_secs(30), || {
            fake.connections(0) > conns
        })
        .await;
        let hb = fake.count(ApiKey::Heartbeat);
        until("heartbeats resume", Duration::from_secs(30), || {
            fake.count(ApiKey::Heartbeat) > hb + 2
        })
        .await;
    }
    tokio::time::sleep(SESSION * 2).await;
    assert_eq!(a.assignment(), all(2));
    let g = fake.group_state("g").unwrap();
    assert_eq!((g.state, g.members.len()), (GroupState::Stable, 1));
}

#[tokio::test(start_paused = true)]
async fn join_survives_a_dropped_connection() {
    dropped_connection(ApiKey::JoinGroup).await;
}

#[tokio::test(start_paused = true)]
async fn heartbeat_survives_a_dropped_connection() {
    dropped_connection(ApiKey::Heartbeat).await;
}

#[tokio::test(start_paused = true)]
async fn a_fenced_member_s_commit_fails_with_the_typed_error() {
    let fake = FakeCluster::with_topics(1, &[(TOPIC, 1)]);
    produce(&fake, 1, 2).await;
    let config = group_config("g", AssignorKind::Range).group_instance_id("inst");
    let client = Client::connect(fake.client_config()).await.unwrap();
    let consumer = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
    let mut old = GroupConsumer::new(client, config.clone(), consumer.clone()).unwrap();
    old.subscribe([TOPIC]).unwrap();
    assert_eq!(old.poll().await.unwrap().len(), 2);
    // The same instance starts elsewhere and takes over.
    let new = start(&fake, config, Recorder::default());
    until(
        "the new instance holds the partition",
        Duration::from_secs(30),
        || new.assignment() == all(1),
    )
    .await;
    match old.commit().await {
        Err(Error::FencedInstanceId { instance_id }) => assert_eq!(instance_id, "inst"),
        other => panic!("expected FencedInstanceId, got {other:?}"),
    }
    assert_eq!(fake.group_state("g").unwrap().committed(TOPIC, 0), None);
    // Fenced for good: polling says so too.
    let polled = tokio::time::timeout(Duration::from_secs(30), old.poll()).await;
    assert!(
        matches!(polled, Ok(Err(Error::FencedInstanceId { .. }))),
        "{polled:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_member_s_commit_fails_with_commit_failed() {
    let fake = FakeCluster::with_topics(1, &[(TOPIC, 1)]);
    produce(&fake, 1, 2).await;
    let client = Client::connect(fake.client_config()).await.unwrap();
    let consumer = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
    let mut c =
        GroupConsumer::new(client, group_config("g", AssignorKind::Range), consumer).unwrap();
    c.subscribe([TOPIC]).unwrap();
    assert_eq!(c.poll().await.unwrap().len(), 2);
    assert!(fake.expire_member("g", &c.member_id()));
    match c.commit().await {
        Err(Error::CommitFailed { code, .. }) => assert_eq!(code, ErrorCode::UnknownMemberId),
        other => panic!("expected CommitFailed, got {other:?}"),
    }
}

/// Two static members split the partitions; `restart` ("a", the leader, or "b", a follower)
/// crashes and comes back within the session timeout: same partitions, same generation, and
/// the other member sees no callback at all.
async fn static_restart(restart: &str) {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 4)]);
    let config = |id: &str| group_config("g", AssignorKind::Range).group_instance_id(id);
    let a = start(&fake, config("a"), Recorder::default());
    until("a holds everything", Duration::from_secs(30), || {
        a.assignment() == all(4)
    })
    .await;
    let b = start(&fake, config("b"), Recorder::default());
    until("the split", Duration::from_secs(60), || {
        a.assignment().len() == 2 && b.assignment().len() == 2
    })
    .await;
    let generation = fake.group_state("g").unwrap().generation;
    let (gone, stays) = if restart == "a" { (a, b) } else { (b, a) };
    let parts = gone.assignment();
    let stays_events = stays.events();
    let old_id = gone.member_id();
    gone.crash();
    tokio::time::sleep(SESSION / 2).await;
    let back = start(&fake, config(restart), Recorder::default());
    until(
        "the restart holds its partitions",
        Duration::from_secs(30),
        || back.assignment() == parts,
    )
    .await;
    tokio::time::sleep(SESSION).await;
    let g = fake.group_state("g").unwrap();
    assert_eq!(g.generation, generation, "no rebalance");
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.members.len(), 2);
    assert!(!g.member_ids().contains(&old_id), "the old id was replaced");
    assert_eq!(
        stays.events(),
        stays_events,
        "the other member saw no revoke or assign"
    );
    assert_eq!(back.assignment(), parts);
}

#[tokio::test(start_paused = true)]
async fn static_leader_restart_gets_its_partitions_back_without_a_rebalance() {
    static_restart("a").await;
}

#[tokio::test(start_paused = true)]
async fn static_follower_restart_gets_its_partitions_back_without_a_rebalance() {
    static_restart("b").await;
}

/// A consumer owned by the test (not in a task), after its first records.
async fn owned_consumer(fake: &FakeCluster, config: GroupConfig, records: usize) -> GroupConsumer {
    let client = Client::connect(fake.client_config()).await.unwrap();
    let consumer = ConsumerConfig::default()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100));
    let mut c = GroupConsumer::new(client, config, consumer).unwrap();
    c.subscribe([TOPIC]).unwrap();
    let mut got = 0;
    while got < records {
        got += c.poll().await.unwrap().len();
    }
    c
}

/// A commit refused for the generation fails with `CommitFailed` carrying the code, and the
/// consumer rejoins on its next poll.
async fn commit_refused(code: ErrorCode) {
    let fake = FakeCluster::with_topics(1, &[(TOPIC, 1)]);
    produce(&fake, 1, 2).await;
    let mut c = owned_consumer(&fake, group_config("g", AssignorKind::Range), 2).await;
    fake.fail_next(ApiKey::OffsetCommit, 1, code);
    match c.commit().await {
        Err(Error::CommitFailed { code: got, .. }) => assert_eq!(got, code),
        other => panic!("expected CommitFailed({code:?}), got {other:?}"),
    }
    assert_eq!(fake.group_state("g").unwrap().committed(TOPIC, 0), None);
    assert_eq!(
        fake.count(ApiKey::OffsetCommit),
        1,
        "not retried under a stale generation"
    );
    // After a rejoin (a new generation when the member knew it was stale) it commits again.
    produce(&fake, 1, 1).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), c.poll()).await;
    c.commit().await.unwrap();
    assert_eq!(
        fake.group_state("g").unwrap().committed(TOPIC, 0),
        c.position(&TopicPartition::new(TOPIC, 0))
    );
}

#[tokio::test(start_paused = true)]
async fn commit_illegal_generation_is_commit_failed() {
    commit_refused(ErrorCode::IllegalGeneration).await;
}

#[tokio::test(start_paused = true)]
async fn commit_rebalance_in_progress_is_commit_failed() {
    commit_refused(ErrorCode::RebalanceInProgress).await;
}

/// SyncGroup fails once with `code`: the member rejoins (or rediscovers) and gets its
/// partitions.
async fn sync_error(code: ErrorCode) {
    let fake = FakeCluster::with_topics(2, &[(TOPIC, 2)]);
    fake.fail_next(ApiKey::SyncGroup, 1, code);
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until(
        &format!("a holds everything after {code:?}"),
        Duration::from_secs(60),
        || a.assignment() == all(2),
    )
    .await;
    assert!(fake.count(ApiKey::SyncGroup) >= 2);
    let g = fake.group_state("g").unwrap();
    assert_eq!((g.state, g.members.len()), (GroupState::Stable, 1));
}

#[tokio::test(start_paused = true)]
async fn sync_rebalance_in_progress_rejoins() {
    sync_error(ErrorCode::RebalanceInProgress).await;
}

#[tokio::test(start_paused = true)]
async fn sync_not_coordinator_rediscovers() {
    sync_error(ErrorCode::NotCoordinator).await;
}

#[tokio::test(start_paused = true)]
async fn a_member_that_stops_polling_leaves_after_max_poll_interval() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 2)]);
    produce(&fake, 2, 1).await;
    let config = group_config("g", AssignorKind::Range).max_poll_interval(Duration::from_secs(15));
    let slow = owned_consumer(&fake, config, 2).await;
    let slow_id = slow.member_id();
    let stopped = Instant::now();
    // It keeps heartbeating while the application is busy, then leaves at max_poll_interval
    // (before the 10 s session could have expired it, had it stopped heartbeating).
    until("the slow member leaves", Duration::from_secs(30), || {
        fake.count(ApiKey::LeaveGroup) == 1
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(14),
        "left early: {:?}",
        stopped.elapsed()
    );
    assert!(
        fake.count(ApiKey::Heartbeat) >= 10,
        "heartbeats went on meanwhile"
    );
    let g = fake.group_state("g").unwrap();
    assert!(!g.member_ids().contains(&slow_id));
    assert_eq!(g.state, GroupState::Empty);
    drop(slow);
}

#[tokio::test(start_paused = true)]
async fn members_starting_together_share_the_first_generation() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 4)]);
    // Kafka's default group.initial.rebalance.delay.ms.
    fake.set_initial_rebalance_delay(Duration::from_secs(3));
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    // b comes a second later, inside the delay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("the split", Duration::from_secs(30), || {
        a.assignment().len() == 2 && b.assignment().len() == 2
    })
    .await;
    assert_eq!(
        fake.group_state("g").unwrap().generation,
        1,
        "one rebalance for both"
    );
    assert!(a.revoked().is_empty() && b.revoked().is_empty());
}

#[tokio::test(start_paused = true)]
async fn coordinator_broker_dies_and_the_group_moves() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 2)]);
    fake.move_leader(TOPIC, 1, 0);
    fake.move_coordinator("g", 1);
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("a holds everything", Duration::from_secs(30), || {
        a.assignment() == all(2)
    })
    .await;
    fake.down(1);
    fake.move_coordinator("g", 2);
    until("heartbeats reach node 2", Duration::from_secs(60), || {
        fake.requests()
            .iter()
            .any(|r| r.api == ApiKey::Heartbeat && r.node == 2)
    })
    .await;
    produce(&fake, 2, 2).await;
    until("a keeps reading", Duration::from_secs(30), || {
        a.records.lock().unwrap().len() == 4
    })
    .await;
    assert_eq!(a.assignment(), all(2));
    let g = fake.group_state("g").unwrap();
    assert_eq!((g.state, g.members.len()), (GroupState::Stable, 1));
}

#[tokio::test(start_paused = true)]
async fn a_lost_leader_sync_is_recovered() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 4)]);
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("a holds everything", Duration::from_secs(30), || {
        a.assignment() == all(4)
    })
    .await;
    let leader = a.member_id();
    // The leader's next SyncGroup (the one carrying the split) never gets an answer.
    fake.hook_once(ApiKey::SyncGroup, move |ctx| {
        if ctx.member() == Some(leader.as_str()) {
            Action::NoReply
        } else {
            Action::Pass
        }
    });
    let b = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until(
        "the split after the lost sync",
        Duration::from_secs(180),
        || {
            let (x, y) = (a.assignment(), b.assignment());
            x.len() == 2 && y.len() == 2 && x.is_disjoint(&y)
        },
    )
    .await;
    let g = fake.group_state("g").unwrap();
    assert_eq!((g.state, g.members.len()), (GroupState::Stable, 2));
}

#[tokio::test(start_paused = true)]
async fn cooperative_sticky_leave_revokes_nothing_from_the_others() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 6)]);
    let (a, b) = two_members(&fake, "g", AssignorKind::CooperativeSticky, 6).await;
    let c = start(
        &fake,
        group_config("g", AssignorKind::CooperativeSticky),
        Recorder::default(),
    );
    until("three-way split", Duration::from_secs(90), || {
        a.assignment().len() == 2 && b.assignment().len() == 2 && c.assignment().len() == 2
    })
    .await;
    let (a_kept, b_kept) = (a.assignment(), b.assignment());
    let (a_rev, b_rev) = (a.revoked(), b.revoked());
    c.close().await.unwrap();
    until(
        "a and b take c's partitions",
        Duration::from_secs(60),
        || a.assignment().len() == 3 && b.assignment().len() == 3,
    )
    .await;
    assert!(a_kept.is_subset(&a.assignment()), "a kept its partitions");
    assert!(b_kept.is_subset(&b.assignment()), "b kept its partitions");
    assert_eq!(a.revoked(), a_rev, "a revoked nothing: {:?}", a.events());
    assert_eq!(b.revoked(), b_rev, "b revoked nothing: {:?}", b.events());
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_delayed_past_the_session_rejoins_as_a_new_member() {
    let fake = FakeCluster::with_topics(1, &[(TOPIC, 2)]);
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("a holds everything", Duration::from_secs(30), || {
        a.assignment() == all(2)
    })
    .await;
    let old_id = a.member_id();
    // Every heartbeat stalls past the session timeout once: the coordinator expires a.
    fake.hook_once(ApiKey::Heartbeat, |_| {
        Action::Delay(SESSION + Duration::from_secs(5))
    });
    until("a is back under a new id", Duration::from_secs(120), || {
        let g = fake.group_state("g");
        a.assignment() == all(2)
            && g.is_some_and(|g| {
                g.state == GroupState::Stable
                    && g.members.len() == 1
                    && g.members[0].member_id != old_id
            })
    })
    .await;
    assert!(
        a.events().iter().any(|e| matches!(e, Event::Lost(_))),
        "expiry is a loss, not a clean revoke: {:?}",
        a.events()
    );
}

/// On Kafka a JoinGroup is answered only when every member rejoined or the rebalance timeout
/// passed, which may be far beyond the request timeout (30 s by default). The member must wait
/// for that answer, not time out and send the join again.
#[tokio::test(start_paused = true)]
async fn a_join_held_past_the_request_timeout_is_waited_for() {
    let fake = FakeCluster::with_topics(1, &[(TOPIC, 2)]);
    // The join that carries a member id (after MEMBER_ID_REQUIRED) is held for 60 s.
    fake.hook(ApiKey::JoinGroup, |ctx| {
        if ctx.member().is_some_and(|m| !m.is_empty()) && ctx.call == 2 {
            Action::Delay(Duration::from_secs(60))
        } else {
            Action::Pass
        }
    });
    let started = Instant::now();
    let a = start(
        &fake,
        group_config("g", AssignorKind::Range).rebalance_timeout(Duration::from_secs(120)),
        Recorder::default(),
    );
    until("a holds everything", Duration::from_secs(120), || {
        a.assignment() == all(2)
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(60));
    // The fake serves one connection's requests in order and applies a delayed one when it
    // answers it, by when the pending member id has expired: MEMBER_ID_REQUIRED, the held
    // join (UNKNOWN_MEMBER_ID at 60 s), then a fresh MEMBER_ID_REQUIRED round: 4 joins. A join
    // re-sent at the 30 s request timeout queues behind the held one and makes it 5.
    assert_eq!(
        fake.count(ApiKey::JoinGroup),
        4,
        "the held join was re-sent at the request timeout"
    );
    a.close().await.unwrap();
}

/// Commits its positions from `on_revoked` after a delay, as an application that first waits
/// for its in-flight work does.
struct SlowRevoke {
    delay: Duration,
    commits: Arc<Mutex<Vec<Result<(), String>>>>,
    revoked: Arc<AtomicBool>,
}

impl RebalanceListener for SlowRevoke {
    async fn on_revoked(&mut self, ctx: &mut RebalanceContext<'_>, _partitions: &[TopicPartition]) {
        tokio::time::sleep(self.delay).await;
        let r = ctx.commit().await.map_err(|e| e.to_string());
        self.commits.lock().unwrap().push(r);
        self.revoked.store(true, Ordering::SeqCst);
    }
}

/// An `on_revoked` that takes longer than the session timeout keeps its member in the group:
/// the heartbeat goes on through the callback, so the coordinator waits for the member's
/// rejoin instead of expiring it and handing its partitions on while it still works on them.
/// Its commit from the callback lands, and the partitions are split only afterwards.
#[tokio::test(start_paused = true)]
async fn a_slow_on_revoked_keeps_the_session_alive() {
    let fake = FakeCluster::with_topics(3, &[(TOPIC, 4)]);
    produce(&fake, 4, 5).await;
    let commits: Arc<Mutex<Vec<Result<(), String>>>> = Arc::default();
    let revoked = Arc::new(AtomicBool::new(false));
    let listener = SlowRevoke {
        delay: SESSION + SESSION / 2,
        commits: commits.clone(),
        revoked: revoked.clone(),
    };
    let read = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(tokio::sync::Notify::new());
    let a = {
        let (fake, read, stop) = (fake.clone(), read.clone(), stop.clone());
        tokio::spawn(async move {
            let client = Client::connect(fake.client_config()).await.unwrap();
            let consumer = ConsumerConfig::default()
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .fetch_max_wait(Duration::from_millis(100));
            let mut c =
                GroupConsumer::new(client, group_config("g", AssignorKind::Range), consumer)
                    .unwrap()
                    .with_listener(listener);
            c.subscribe([TOPIC]).unwrap();
            // Never cancelled inside a callback: poll runs until it answers.
            loop {
                tokio::select! {
                    r = c.poll() => *read.lock().unwrap() += r.unwrap().len(),
                    _ = stop.notified() => break,
                }
            }
            c.assignment().len()
        })
    };
    until("a reads everything", Duration::from_secs(30), || {
        *read.lock().unwrap() == 20
    })
    .await;
    let b = start(
        &fake,
        group_config("g", AssignorKind::Range),
        Recorder::default(),
    );
    until("the split", Duration::from_secs(120), || {
        revoked.load(Ordering::SeqCst) && b.assignment().len() == 2
    })
    .await;
    let commits = commits.lock().unwrap().clone();
    assert_eq!(
        commits,
        [Ok(())],
        "the commit from the slow on_revoked landed"
    );
    let g = fake.group_state("g").unwrap();
    assert_eq!(
        g.members.len(),
        2,
        "a was not expired: {:?}",
        g.member_ids()
    );
    for p in 0..4 {
        assert_eq!(g.committed(TOPIC, p), Some(5), "partition {p}");
    }
    stop.notify_one();
    assert_eq!(a.await.unwrap(), 2, "a keeps its half");
    b.close().await.unwrap();
}
