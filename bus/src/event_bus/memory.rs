//! The in-process backend: partitioned logs, consumer groups with committed offsets and
//! rebalancing, in one process and without a broker. It exists so the quickstart runs on a
//! laptop and users can test handlers; it keeps the semantics the runtime relies on
//! (partitions, per-partition order, group offsets, redelivery of uncommitted records after a
//! member dies), not Kafka's performance or durability (nothing survives the process).
//!
//! Group assignment: the group's partitions, sorted, dealt round-robin to its members in
//! join order. A membership change bumps the group's generation; each member notices on its
//! next poll, lets the runtime drain and commit what it lost, and reads what it gained from
//! the committed offset. A member dropped without `close` (a crash) leaves without
//! committing, so its uncommitted records are delivered again to whoever takes them over.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

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
}

#[derive(Default)]
struct State {
    topics: HashMap<String, (Arc<str>, Vec<Vec<InRecord>>)>,
    groups: HashMap<String, Group>,
    next_member: u64,
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
            if spec.partitions < 1 {
                return Err(BusError::InvalidName {
                    what: "partition count",
                    reason: format!("{} for topic {}", spec.partitions, spec.name),
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
    generation: u64,
    /// Assigned partitions and the next offset to hand out.
    positions: HashMap<PartitionId, i64>,
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

    fn commit_now(&self, offsets: &[(PartitionId, i64)]) {
        let mut st = lock(&self.inner.state);
        if let Some(g) = st.groups.get_mut(&self.group_id) {
            for (p, o) in offsets {
                let c = g.committed.entry(p.clone()).or_insert(0);
                *c = (*c).max(*o);
            }
        }
    }

    fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        let mut st = lock(&self.inner.state);
        if let Some(g) = st.groups.get_mut(&self.group_id) {
            g.members.retain(|&m| m != self.member);
            g.generation += 1;
        }
        drop(st);
        self.inner.changed.notify_waiters();
    }
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
                // Rebalance: revoke what we lost (the runtime drains and commits it).
                let change = {
                    let st = lock(&self.inner.state);
                    let g = st.groups.get(&self.group_id);
                    match g {
                        Some(g) if g.generation != self.generation => {
                            Some((g.generation, Self::assignment(&st, g, self.member)))
                        }
                        _ => None,
                    }
                };
                if let Some((generation, now)) = change {
                    let lost: Vec<PartitionId> = self
                        .positions
                        .keys()
                        .filter(|p| !now.contains(p))
                        .cloned()
                        .collect();
                    if !lost.is_empty() {
                        let offsets = self.hook.revoked(lost.clone()).await;
                        self.commit_now(&offsets);
                        for p in &lost {
                            self.positions.remove(p);
                            self.paused.remove(p);
                        }
                    }
                    let st = lock(&self.inner.state);
                    let g = st.groups.get(&self.group_id);
                    for p in now {
                        if self.positions.contains_key(&p) {
                            continue;
                        }
                        let start = match g.and_then(|g| g.committed.get(&p)) {
                            Some(&c) => c,
                            None if self.earliest => 0,
                            None => st
                                .topics
                                .get(&*p.topic)
                                .map_or(0, |(_, ps)| ps[p.partition as usize].len() as i64),
                        };
                        self.positions.insert(p, start);
                    }
                    self.generation = generation;
                    continue;
                }
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
        Box::pin(async move {
            self.commit_now(&offsets);
            Ok(())
        })
    }

    fn lag(&mut self) -> BoxFuture<'_, Vec<(PartitionId, i64)>> {
        Box::pin(async move {
            let st = lock(&self.inner.state);
            let g = st.groups.get(&self.group_id);
            self.positions
                .keys()
                .map(|p| {
                    let end = st
                        .topics
                        .get(&*p.topic)
                        .map_or(0, |(_, ps)| ps[p.partition as usize].len() as i64);
                    let committed = g.and_then(|g| g.committed.get(p)).copied().unwrap_or(0);
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
            self.commit_now(&offsets);
            self.leave();
            Ok(())
        })
    }
}
