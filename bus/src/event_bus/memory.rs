//! The in-process backend: partitioned logs, consumer groups with committed offsets and
//! rebalancing, in one process and without a broker. It exists so the quickstart runs on a
//! laptop and users can test handlers; it keeps the semantics the runtime relies on
//! (partitions, per-partition order, group offsets, redelivery of uncommitted records after a
//! member dies), not Kafka's performance or durability (nothing survives the process).
//!
//! Rebalances are eager, as in Kafka's classic protocol: a membership change (join, leave,
//! crash) bumps the group's generation; each member notices on its next poll and revokes
//! *every* partition it holds (the runtime stops those workers, lets their in-flight handler
//! calls finish and answers their completed offsets, which are committed), then releases
//! them. Only then can the new assignment's owner take a partition, from the committed
//! offset: a partition is never held by two members, so no event is handled by two members
//! at once. Assignment: the group's partitions, sorted, dealt round-robin to its members in
//! join order.
//!
//! Commits are accepted only from the member holding the partition, as Kafka refuses a
//! commit from a member whose generation is gone (`ILLEGAL_GENERATION`). A member dropped
//! without `close` (a crash) releases its partitions without committing, so its uncommitted
//! records are delivered again to whoever takes them over.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_proto::ErrorCode;
use tokio::sync::Notify;

use super::MAX_PARTITIONS;
use super::backend::{
    Backend, BusError, OutRecord, PartitionId, RevokeHook, SendResult, Subscription, TopicSpec,
};
use super::envelope::InRecord;
use super::handler::BoxFuture;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Group {
    generation: u64,
    /// Member ids in join order.
    members: Vec<u64>,
    topics: BTreeSet<String>,
    committed: HashMap<PartitionId, i64>,
    /// Which member holds each partition: set when it takes the partition, cleared when it
    /// revokes it (after committing) or leaves. A partition is taken only while free.
    owners: HashMap<PartitionId, u64>,
}

/// Each topic's shared name and its partitions' logs.
type Topics = HashMap<String, (Arc<str>, Vec<Vec<InRecord>>)>;

#[derive(Default)]
struct State {
    topics: Topics,
    groups: HashMap<String, Group>,
    next_member: u64,
}

/// The offset the next record of `p` will get (0 for an unknown topic).
fn log_end(topics: &Topics, p: &PartitionId) -> i64 {
    topics
        .get(&*p.topic)
        .map_or(0, |(_, ps)| ps[p.partition as usize].len() as i64)
}

struct Inner {
    state: Mutex<State>,
    /// Woken on every append and membership change.
    changed: Notify,
    poll_timeout: Duration,
    max_poll_records: usize,
}

/// The in-process backend. Clones share the same logs.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

impl MemoryBackend {
    pub fn new(poll_timeout: Duration, max_poll_records: usize) -> Self {
        MemoryBackend {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                poll_timeout,
                max_poll_records: max_poll_records.max(1),
            }),
        }
    }

    /// Every record of `topic`, partition by partition: what a test reads back (the dead
    /// letters, for one).
    pub fn records(&self, topic: &str) -> Vec<InRecord> {
        lock(&self.inner.state)
            .topics
            .get(topic)
            .map(|(_, ps)| ps.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// The committed offset of `group_id` on a partition.
    pub fn committed(&self, group_id: &str, topic: &str, partition: i32) -> Option<i64> {
        lock(&self.inner.state)
            .groups
            .get(group_id)?
            .committed
            .get(&PartitionId {
                topic: topic.into(),
                partition,
            })
            .copied()
    }
}

impl Backend for MemoryBackend {
    fn ensure_topic(&self, spec: TopicSpec) -> BoxFuture<'_, Result<i32, BusError>> {
        Box::pin(async move {
            if !(1..=MAX_PARTITIONS).contains(&spec.partitions) {
                return Err(BusError::InvalidName {
                    what: "partition count",
                    reason: format!(
                        "{} for topic {} (1 to {MAX_PARTITIONS})",
                        spec.partitions, spec.name
                    ),
                });
            }
            let mut st = lock(&self.inner.state);
            let (_, parts) = st.topics.entry(spec.name.clone()).or_insert_with(|| {
                let name: Arc<str> = spec.name.as_str().into();
                (name, vec![Vec::new(); spec.partitions as usize])
            });
            Ok(parts.len() as i32)
        })
    }

    fn send(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Vec<SendResult>> {
        Box::pin(async move {
            let mut st = lock(&self.inner.state);
            let out = records
                .into_iter()
                .map(|r| {
                    let Some((name, parts)) = st.topics.get_mut(&*r.topic) else {
                        return Err(BusError::Kafka(crate::Error::UnknownTopic(
                            r.topic.to_string(),
                        )));
                    };
                    let Some(log) = usize::try_from(r.partition)
                        .ok()
                        .and_then(|p| parts.get_mut(p))
                    else {
                        return Err(BusError::Kafka(crate::Error::UnknownPartition {
                            topic: r.topic.to_string(),
                            partition: r.partition,
                        }));
                    };
                    let offset = log.len() as i64;
                    log.push(InRecord {
                        topic: name.clone(),
                        partition: r.partition,
                        offset,
                        key: Some(r.key),
                        value: Some(r.value),
                        headers: r.headers,
                    });
                    Ok((r.partition, Some(offset)))
                })
                .collect();
            drop(st);
            self.inner.changed.notify_waiters();
            out
        })
    }

    fn subscribe(
        &self,
        group_id: String,
        topics: Vec<String>,
        earliest: bool,
        hook: Arc<dyn RevokeHook>,
    ) -> BoxFuture<'_, Result<Box<dyn Subscription>, BusError>> {
        Box::pin(async move {
            let member = {
                let mut st = lock(&self.inner.state);
                if let Some(t) = topics.iter().find(|t| !st.topics.contains_key(*t)) {
                    return Err(BusError::Kafka(crate::Error::UnknownTopic(t.clone())));
                }
                st.next_member += 1;
                let member = st.next_member;
                let g = st.groups.entry(group_id.clone()).or_default();
                g.members.push(member);
                g.topics.extend(topics.iter().cloned());
                g.generation += 1;
                member
            };
            self.inner.changed.notify_waiters();
            Ok(Box::new(MemorySubscription {
                inner: self.inner.clone(),
                group_id,
                member,
                earliest,
                generation: 0,
                positions: HashMap::new(),
                starts: HashMap::new(),
                pending: Vec::new(),
                paused: HashSet::new(),
                hook,
                left: false,
            }) as Box<dyn Subscription>)
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async { Ok(()) })
    }
}

struct MemorySubscription {
    inner: Arc<Inner>,
    group_id: String,
    member: u64,
    earliest: bool,
    /// The group generation this member has revoked for and been assigned in.
    generation: u64,
    /// Partitions this member holds and the next offset to hand out.
    positions: HashMap<PartitionId, i64>,
    /// Where each held partition started (its committed offset, or the reset position), for
    /// the lag of a partition the group never committed.
    starts: HashMap<PartitionId, i64>,
    /// Partitions of this generation's assignment still held by their previous owner.
    pending: Vec<PartitionId>,
    /// Assigned partitions poll skips.
    paused: HashSet<PartitionId>,
    hook: Arc<dyn RevokeHook>,
    left: bool,
}

impl MemorySubscription {
    /// This member's share of its group's partitions under the current membership.
    fn assignment(st: &State, group: &Group, member: u64) -> Vec<PartitionId> {
        let Some(index) = group.members.iter().position(|&m| m == member) else {
            return Vec::new();
        };
        let mut all: Vec<PartitionId> = group
            .topics
            .iter()
            .filter_map(|t| st.topics.get(t))
            .flat_map(|(name, parts)| {
                (0..parts.len() as i32).map(|p| PartitionId {
                    topic: name.clone(),
                    partition: p,
                })
            })
            .collect();
        all.sort();
        all.into_iter()
            .enumerate()
            .filter(|(i, _)| i % group.members.len() == index)
            .map(|(_, p)| p)
            .collect()
    }

    /// Stores `offsets` if this member holds every one of those partitions; otherwise refuses
    /// them all, as Kafka refuses a commit under a generation that is gone.
    fn commit_now(&self, offsets: &[(PartitionId, i64)]) -> Result<(), BusError> {
        let mut st = lock(&self.inner.state);
        let Some(g) = st.groups.get_mut(&self.group_id) else {
            return Err(not_owner(&self.group_id, offsets.first().map(|(p, _)| p)));
        };
        if let Some((p, _)) = offsets
            .iter()
            .find(|(p, _)| g.owners.get(p) != Some(&self.member))
        {
            return Err(not_owner(&self.group_id, Some(p)));
        }
        for (p, o) in offsets {
            let c = g.committed.entry(p.clone()).or_insert(0);
            *c = (*c).max(*o);
        }
        Ok(())
    }

    /// Follows the group to its current generation: revokes everything held when the
    /// generation moved (eager), then takes whatever of the assignment is free.
    async fn rebalance(&mut self) {
        let (generation, assignment) = {
            let st = lock(&self.inner.state);
            let Some(g) = st.groups.get(&self.group_id) else {
                return;
            };
            if g.generation == self.generation {
                if self.pending.is_empty() {
                    return;
                }
                (g.generation, None)
            } else {
                (g.generation, Some(Self::assignment(&st, g, self.member)))
            }
        };
        if let Some(assignment) = assignment {
            let held: Vec<PartitionId> = self.positions.keys().cloned().collect();
            if !held.is_empty() {
                let offsets = self.hook.revoked(held.clone()).await;
                if let Err(e) = self.commit_now(&offsets) {
                    tracing::warn!(error = %e, "commit on revoke refused");
                }
                let mut st = lock(&self.inner.state);
                if let Some(g) = st.groups.get_mut(&self.group_id) {
                    for p in &held {
                        if g.owners.get(p) == Some(&self.member) {
                            g.owners.remove(p);
                        }
                    }
                }
                drop(st);
                self.positions.clear();
                self.starts.clear();
                self.paused.clear();
                // Members waiting for these partitions take them now.
                self.inner.changed.notify_waiters();
            }
            self.generation = generation;
            self.pending = assignment;
        }
        let mut st = lock(&self.inner.state);
        let st = &mut *st;
        let Some(g) = st.groups.get_mut(&self.group_id) else {
            return;
        };
        if g.generation != self.generation {
            return; // moved again while revoking: the next round revokes and reassigns
        }
        let (member, earliest) = (self.member, self.earliest);
        let mut taken = Vec::new();
        self.pending.retain(|p| {
            if g.owners.contains_key(p) {
                return true; // its previous owner has not revoked it yet
            }
            g.owners.insert(p.clone(), member);
            let start = match g.committed.get(p) {
                Some(&c) => c,
                None if earliest => 0,
                None => log_end(&st.topics, p),
            };
            taken.push((p.clone(), start));
            false
        });
        for (p, start) in taken {
            self.starts.insert(p.clone(), start);
            self.positions.insert(p, start);
        }
    }

    /// Leaves the group, releasing what it holds (uncommitted work goes to the next owner).
    fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        let mut st = lock(&self.inner.state);
        if let Some(g) = st.groups.get_mut(&self.group_id) {
            g.members.retain(|&m| m != self.member);
            g.owners.retain(|_, m| *m != self.member);
            g.generation += 1;
        }
        drop(st);
        self.inner.changed.notify_waiters();
    }
}

fn not_owner(group: &str, partition: Option<&PartitionId>) -> BusError {
    let what = partition.map_or_else(String::new, |p| format!(" {}-{}", p.topic, p.partition));
    BusError::Kafka(crate::Error::CommitFailed {
        code: ErrorCode::IllegalGeneration,
        message: Some(format!(
            "group {group}: this member does not hold{what} (it was revoked or the member left)"
        )),
    })
}

impl Drop for MemorySubscription {
    /// A member that goes away without `close` leaves without committing: a crash.
    fn drop(&mut self) {
        self.leave();
    }
}

impl Subscription for MemorySubscription {
    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<InRecord>, BusError>> {
        Box::pin(async move {
            if self.left {
                return Err(BusError::Closed);
            }
            let deadline = tokio::time::Instant::now() + self.inner.poll_timeout;
            loop {
                let inner = self.inner.clone();
                let notified = inner.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                self.rebalance().await;
                let mut out = Vec::new();
                {
                    let st = lock(&self.inner.state);
                    let mut ids: Vec<_> = self.positions.keys().cloned().collect();
                    ids.sort();
                    for id in ids {
                        if self.paused.contains(&id) {
                            continue;
                        }
                        let Some((_, parts)) = st.topics.get(&*id.topic) else {
                            continue;
                        };
                        let log = &parts[id.partition as usize];
                        let pos = self.positions.get_mut(&id).expect("listed above");
                        while (*pos as usize) < log.len() && out.len() < self.inner.max_poll_records
                        {
                            out.push(log[*pos as usize].clone());
                            *pos += 1;
                        }
                    }
                }
                if !out.is_empty() {
                    return Ok(out);
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        })
    }

    fn pause(&mut self, partition: &PartitionId) {
        if self.positions.contains_key(partition) {
            self.paused.insert(partition.clone());
        }
    }

    fn resume(&mut self, partition: &PartitionId) {
        self.paused.remove(partition);
    }

    fn commit(&mut self, offsets: Vec<(PartitionId, i64)>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move { self.commit_now(&offsets) })
    }

    /// Log end minus the committed offset (or, before the group's first commit, minus where
    /// this member started reading).
    fn lag(&mut self) -> BoxFuture<'_, Vec<(PartitionId, i64)>> {
        Box::pin(async move {
            let st = lock(&self.inner.state);
            let g = st.groups.get(&self.group_id);
            self.positions
                .keys()
                .map(|p| {
                    let end = log_end(&st.topics, p);
                    let committed = g
                        .and_then(|g| g.committed.get(p))
                        .or_else(|| self.starts.get(p))
                        .copied()
                        .unwrap_or(0);
                    (p.clone(), (end - committed).max(0))
                })
                .collect()
        })
    }

    fn close(
        mut self: Box<Self>,
        offsets: Vec<(PartitionId, i64)>,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async move {
            let committed = if offsets.is_empty() {
                Ok(())
            } else {
                self.commit_now(&offsets)
            };
            self.leave();
            committed
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use tokio::sync::watch;

    use super::*;

    /// Records each revocation; answers `done` for it once `gate` opens.
    struct Hook {
        gate: watch::Receiver<bool>,
        done: i64,
        revocations: AtomicUsize,
    }

    impl RevokeHook for Hook {
        fn revoked(&self, partitions: Vec<PartitionId>) -> BoxFuture<'_, Vec<(PartitionId, i64)>> {
            self.revocations.fetch_add(1, Ordering::SeqCst);
            let mut gate = self.gate.clone();
            Box::pin(async move {
                let _ = gate.wait_for(|open| *open).await;
                partitions.into_iter().map(|p| (p, self.done)).collect()
            })
        }
    }

    fn hook(done: i64) -> (watch::Sender<bool>, Arc<Hook>) {
        let (tx, gate) = watch::channel(false);
        let h = Hook {
            gate,
            done,
            revocations: AtomicUsize::new(0),
        };
        (tx, Arc::new(h))
    }

    async fn backend() -> MemoryBackend {
        let b = MemoryBackend::new(Duration::from_millis(100), 100);
        b.ensure_topic(TopicSpec {
            name: "t".into(),
            partitions: 2,
            replication_factor: 1,
            retention_ms: -1,
        })
        .await
        .unwrap();
        let records = (0..6)
            .map(|i| OutRecord {
                topic: "t".into(),
                partition: i % 2,
                key: Bytes::new(),
                value: Bytes::from(format!("{i}")),
                headers: Vec::new(),
            })
            .collect();
        for r in b.send(records).await {
            r.unwrap();
        }
        b
    }

    fn partitions(records: &[InRecord]) -> BTreeSet<i32> {
        records.iter().map(|r| r.partition).collect()
    }

    /// A joining member gets nothing until the old owner's revocation (its in-flight work)
    /// has finished and committed; then it starts from that commit. The old owner's commit of
    /// a partition it gave up is refused.
    #[tokio::test(start_paused = true)]
    async fn a_new_owner_waits_for_the_old_owner_s_revocation() {
        let b = backend().await;
        let (open_a, hook_a) = hook(2);
        let mut a = b
            .subscribe("g".into(), vec!["t".into()], true, hook_a.clone())
            .await
            .unwrap();
        let first = a.poll().await.unwrap();
        assert_eq!(first.len(), 6);
        assert_eq!(partitions(&first), BTreeSet::from([0, 1]));

        let (open_b, hook_b) = hook(0);
        open_b.send(true).unwrap();
        let mut b2 = b
            .subscribe("g".into(), vec!["t".into()], true, hook_b)
            .await
            .unwrap();
        // a revokes everything (eager) and blocks in the hook: its handlers are still busy.
        let a_task = tokio::spawn(async move {
            let r = a.poll().await;
            (a, r)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(hook_a.revocations.load(Ordering::SeqCst), 1);
        for _ in 0..5 {
            let got = b2.poll().await.unwrap();
            assert!(got.is_empty(), "b took a partition a still holds: {got:?}");
        }
        open_a.send(true).unwrap();
        // a goes on with its share (members in join order: a gets t-0), from its commit.
        let (mut a, a_got) = a_task.await.unwrap();
        let a_got = a_got.unwrap();
        assert_eq!(a_got.len(), 1, "{a_got:?}");
        assert_eq!((a_got[0].partition, a_got[0].offset), (0, 2));
        // b now holds the other one and reads it from a's commit (offset 2 of 3).
        let got = b2.poll().await.unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].partition, got[0].offset), (1, 2));
        let b_part = got[0].partition;
        assert_eq!(b.committed("g", "t", b_part), Some(2));

        let lost = PartitionId {
            topic: "t".into(),
            partition: b_part,
        };
        let e = a.commit(vec![(lost.clone(), 3)]).await.unwrap_err();
        assert!(
            matches!(
                e,
                BusError::Kafka(crate::Error::CommitFailed {
                    code: ErrorCode::IllegalGeneration,
                    ..
                })
            ),
            "{e}"
        );
        assert_eq!(
            b.committed("g", "t", b_part),
            Some(2),
            "refused, not stored"
        );
        b2.commit(vec![(lost, 3)]).await.unwrap();
        assert_eq!(b.committed("g", "t", b_part), Some(3));
    }

    /// A member that goes away without closing releases its partitions uncommitted.
    #[tokio::test(start_paused = true)]
    async fn a_crashed_member_s_partitions_move_uncommitted() {
        let b = backend().await;
        let (open, h) = hook(0);
        open.send(true).unwrap();
        let mut a = b
            .subscribe("g".into(), vec!["t".into()], true, h.clone())
            .await
            .unwrap();
        assert_eq!(a.poll().await.unwrap().len(), 6);
        let mut c = b
            .subscribe("g".into(), vec!["t".into()], true, h)
            .await
            .unwrap();
        drop(a);
        let got = c.poll().await.unwrap();
        assert_eq!(got.len(), 6, "everything again: nothing was committed");
    }
}
