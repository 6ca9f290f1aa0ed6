//! Consumer groups over the classic group protocol: FindCoordinator, JoinGroup (v5+ with
//! KIP-394's MEMBER_ID_REQUIRED round), SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and
//! OffsetFetch; static membership (KIP-345); eager and cooperative (KIP-429) rebalancing.
//!
//! Layers, so each can be tested alone:
//! - [`assignor`]: pure functions from subscriptions to assignments.
//! - [`protocol`]: the subscription/assignment payloads, decoded as hostile input.
//! - [`membership`]: the sans-IO state machine: what each coordinator answer does to member
//!   id, generation and owned partitions.
//! - `coordinator`: the requests, built for the negotiated version, thin over the client.
//! - `heartbeat`: the timer task, one per generation, so a slow application is not evicted
//!   before `max_poll_interval`.
//! - [`GroupConsumer`]: drives the rest from `poll`. Rebalance callbacks run inside `poll`
//!   and `close` on the application's task (as in Java), so committing from `on_revoked` is
//!   just an `.await`. Fetching is the [`PartitionConsumer`]'s; the group only tells it which
//!   partitions to read and from where.
//!
//! Commit semantics: positions are the next offset the application will receive, so
//! [`GroupConsumer::commit`] and auto-commit only ever cover records `poll` already returned.
//! Every commit keeps the generation it was made in (it fails rather than go out under a
//! later one), and a consumer's commits are sent one at a time in the order they were made.

pub mod assignor;
mod config;
mod coordinator;
mod heartbeat;
pub mod membership;
pub mod protocol;
mod types;

pub use config::{AssignorKind, GroupConfig};
pub use types::{TopicPartition, TopicPartitionOffset};

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::consumer::{AutoOffsetReset, ConsumerConfig, ConsumerRecord, Offset, PartitionConsumer};
use crate::error::Error;
use assignor::{MemberSubscription, TopicPartitions};
use coordinator::{CommitQueue, Coordinator, JoinResult};
use heartbeat::LastPoll;
use membership::{Membership, Next};
use protocol::{Assignment, Subscription};

/// How many join rounds one `poll` tries before it returns the last retriable error (the
/// next `poll` goes on from there).
const MAX_JOIN_ROUNDS: u32 = 50;

/// Callbacks around rebalances. They run inside `poll` (and `close`) on the application's
/// task; `ctx` can commit, so `on_revoked` can save progress before the partitions move.
pub trait RebalanceListener: Send + 'static {
    /// Partitions newly assigned to this member (committed offsets already looked up).
    fn on_assigned(
        &mut self,
        ctx: &mut RebalanceContext<'_>,
        partitions: &[TopicPartition],
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, partitions);
        async {}
    }

    /// Partitions leaving this member cleanly: the generation is still valid, so commits
    /// from here succeed.
    fn on_revoked(
        &mut self,
        ctx: &mut RebalanceContext<'_>,
        partitions: &[TopicPartition],
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, partitions);
        async {}
    }

    /// Partitions this member no longer owns without a clean revoke (session expired,
    /// fenced, UNKNOWN_MEMBER_ID, max_poll_interval exceeded): another member may already
    /// have them, so commits would fail.
    fn on_lost(
        &mut self,
        ctx: &mut RebalanceContext<'_>,
        partitions: &[TopicPartition],
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, partitions);
        async {}
    }
}

/// The listener that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopListener;

impl RebalanceListener for NoopListener {}

/// What a rebalance callback can do with the consumer.
pub struct RebalanceContext<'a> {
    inner: &'a mut Inner,
}

impl std::fmt::Debug for RebalanceContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RebalanceContext").finish_non_exhaustive()
    }
}

impl RebalanceContext<'_> {
    /// Commits these offsets (next offset to read) under the current generation.
    pub async fn commit_offsets(&mut self, offsets: &[TopicPartitionOffset]) -> Result<(), Error> {
        self.inner.commits.submit(offsets.to_vec(), false).await
    }

    /// Commits the positions of every assigned partition (what `poll` returned so far).
    pub async fn commit(&mut self) -> Result<(), Error> {
        self.inner.commit_positions(None).await
    }

    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.inner.position(tp)
    }

    pub fn generation(&self) -> Option<(i32, String)> {
        self.inner.coord.lock().generation()
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.assignment()
    }

    /// Moves an assigned partition (from `on_assigned`: start somewhere other than the
    /// committed offset).
    pub fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<(), Error> {
        self.inner.seek(tp, offset)
    }
}

/// Aborts the heartbeat task when replaced or dropped.
#[derive(Debug, Default)]
struct TaskGuard(Option<AbortHandle>);

impl TaskGuard {
    fn set(&mut self, h: Option<AbortHandle>) {
        if let Some(old) = std::mem::replace(&mut self.0, h) {
            old.abort();
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.set(None);
    }
}

/// Marks the application as inside `poll` (never timed out) until dropped, even when the
/// `poll` future is cancelled.
struct PollGuard(LastPoll);

impl PollGuard {
    fn enter(last: &LastPoll) -> PollGuard {
        *last.lock().unwrap_or_else(|p| p.into_inner()) = None;
        PollGuard(last.clone())
    }
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

/// Everything but the listener, so callbacks can borrow it.
struct Inner {
    coord: Coordinator,
    /// Every commit goes through here: in order, each under the identity it was made with.
    commits: CommitQueue,
    consumer: PartitionConsumer,
    reset: AutoOffsetReset,
    topics: Vec<String>,
    /// Records fetched but not yet returned (beyond `max_poll_records`).
    buffer: VecDeque<ConsumerRecord>,
    heartbeat: TaskGuard,
    wake: Arc<Notify>,
    last_poll: LastPoll,
    next_auto_commit: Instant,
    /// Assigned partitions with no committed offset under reset policy `None`: reported by
    /// `poll` until the application seeks them.
    unpositioned: BTreeSet<TopicPartition>,
    /// The join round in flight; kept across a cancelled `poll`.
    joining: Option<tokio::task::JoinHandle<Result<Round, Error>>>,
    /// Positions of partitions being revoked, taken before they left the fetcher, for
    /// `on_revoked` to read and commit.
    revoking: Vec<TopicPartitionOffset>,
    /// As leader, the partition counts the assignment was computed from: when metadata shows
    /// a different count (partitions added, a subscribed topic created), the leader rejoins
    /// so the new partitions get an owner, as Java's leader does.
    assigned_topics: Option<TopicPartitions>,
    next_metadata_check: Instant,
}

impl Drop for Inner {
    /// A dropped consumer stops its join round too (the heartbeat task stops with its guard);
    /// without `close` the member leaves by session timeout.
    fn drop(&mut self) {
        if let Some(task) = self.joining.take() {
            task.abort();
        }
    }
}

/// A member of a consumer group. See the module docs.
pub struct GroupConsumer<L: RebalanceListener = NoopListener> {
    inner: Inner,
    listener: L,
}

impl<L: RebalanceListener> std::fmt::Debug for GroupConsumer<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.inner.coord.config.group_id)
            .field("topics", &self.inner.topics)
            .finish_non_exhaustive()
    }
}

impl GroupConsumer<NoopListener> {
    /// A member of `group.group_id`, not yet subscribed. Nothing is sent until the first
    /// `poll` after [`subscribe`](Self::subscribe).
    pub fn new(
        client: Client,
        group: GroupConfig,
        consumer: ConsumerConfig,
    ) -> Result<Self, Error> {
        group.validate().map_err(Error::Config)?;
        let reset = consumer.auto_offset_reset;
        let consumer = PartitionConsumer::new(client.clone(), consumer)?;
        let membership = Membership::new(
            group.group_id.clone(),
            group.group_instance_id.clone(),
            group.cooperative(),
        );
        let next_auto_commit = Instant::now() + group.auto_commit_interval;
        let coord = Coordinator {
            client,
            config: Arc::new(group),
            state: Arc::new(Mutex::new(membership)),
        };
        Ok(GroupConsumer {
            inner: Inner {
                commits: CommitQueue::new(coord.clone()),
                coord,
                consumer,
                reset,
                topics: Vec::new(),
                buffer: VecDeque::new(),
                heartbeat: TaskGuard::default(),
                wake: Arc::new(Notify::new()),
                last_poll: Arc::new(Mutex::new(Some(Instant::now()))),
                next_auto_commit,
                unpositioned: BTreeSet::new(),
                joining: None,
                revoking: Vec::new(),
                assigned_topics: None,
                next_metadata_check: Instant::now(),
            },
            listener: NoopListener,
        })
    }
}

impl<L: RebalanceListener> GroupConsumer<L> {
    /// The same consumer with `listener` for rebalance callbacks.
    pub fn with_listener<M: RebalanceListener>(self, listener: M) -> GroupConsumer<M> {
        GroupConsumer {
            inner: self.inner,
            listener,
        }
    }

    pub fn listener(&self) -> &L {
        &self.listener
    }

    pub fn listener_mut(&mut self) -> &mut L {
        &mut self.listener
    }

    pub fn config(&self) -> &GroupConfig {
        &self.inner.coord.config
    }

    /// Subscribes to exactly these topics. The group is joined (or rejoined, when the topics
    /// changed) on the next `poll`.
    pub fn subscribe<T: AsRef<str>>(
        &mut self,
        topics: impl IntoIterator<Item = T>,
    ) -> Result<(), Error> {
        let mut list: Vec<String> = Vec::new();
        for t in topics {
            let t = t.as_ref();
            if t.is_empty() {
                return Err(Error::InvalidArgument(
                    "topic names must not be empty".into(),
                ));
            }
            if !list.iter().any(|x| x == t) {
                list.push(t.to_owned());
            }
        }
        if list.is_empty() {
            return Err(Error::InvalidArgument(
                "subscribe to at least one topic".into(),
            ));
        }
        list.sort();
        let mut m = self.inner.coord.lock();
        m.subscribed = true;
        if list != self.inner.topics {
            m.request_rejoin();
            drop(m);
            self.inner.topics = list;
        }
        Ok(())
    }

    /// The subscribed topics.
    pub fn subscription(&self) -> &[String] {
        &self.inner.topics
    }

    /// Joins or rejoins as needed (running rebalance callbacks), commits on the auto-commit
    /// interval, then waits for records and returns at most `max_poll_records` of them.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, Error> {
        self.fill(None).await?;
        Ok(self.take_polled())
    }

    /// `poll`, but it returns (possibly with no records) once `timeout` has passed while it
    /// waited: for records, for a JoinGroup/SyncGroup round, or in a join backoff. A rebalance
    /// callback that has started always runs to its end first, however long it takes, so a
    /// commit from `on_revoked` is never cut short. Prefer this to wrapping `poll` in a
    /// timeout, which would cancel a callback in the middle (Java's `poll(Duration)` has the
    /// same rule).
    pub async fn poll_for(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, Error> {
        self.fill(Some(Instant::now() + timeout)).await?;
        Ok(self.take_polled())
    }

    fn take_polled(&mut self) -> Vec<ConsumerRecord> {
        let n = self
            .inner
            .buffer
            .len()
            .min(self.inner.coord.config.max_poll_records);
        self.inner.buffer.drain(..n).collect()
    }

    /// The records one at a time, driving the group as `poll` does. Errors are yielded in
    /// line and the stream goes on after them.
    pub fn records(&mut self) -> impl Stream<Item = Result<ConsumerRecord, Error>> + '_ {
        futures_util::stream::unfold(self, |this| async move {
            let next = match this.fill(None).await {
                Ok(()) => this.inner.buffer.pop_front().ok_or(Error::Closed),
                Err(e) => Err(e),
            };
            Some((next, this))
        })
    }

    /// Commits the position of every assigned partition: everything `poll` has returned.
    pub async fn commit(&mut self) -> Result<(), Error> {
        self.inner.commit_positions(None).await
    }

    /// Commits these offsets (each the next offset to read) and waits for the answer.
    pub async fn commit_offsets(&mut self, offsets: &[TopicPartitionOffset]) -> Result<(), Error> {
        self.inner.commits.submit(offsets.to_vec(), false).await
    }

    /// Queues the commit now, in the background; the future reports how it ended (dropping
    /// it does not cancel the commit). Commits go out in the order they were made, each under
    /// the generation it was made in: if that generation is over before its turn (or before
    /// a retry), it fails with `Error::CommitFailed` instead.
    pub fn commit_async(
        &mut self,
        offsets: Vec<TopicPartitionOffset>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.inner.commits.submit(offsets, true)
    }

    /// The group's committed offsets for `partitions`, from the coordinator.
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>, Error> {
        self.inner.coord.committed(partitions).await
    }

    /// The partitions assigned to this member now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.assignment()
    }

    /// The next offset `poll` returns for `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.inner.position(tp)
    }

    /// The partition's high watermark as of the latest fetch.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        self.inner.consumer.high_watermark(&tp.topic, tp.partition)
    }

    /// High watermark (from the latest fetch) minus position.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let hw = self
            .inner
            .consumer
            .high_watermark(&tp.topic, tp.partition)?;
        Some((hw - self.position(tp)?).max(0))
    }

    pub fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<(), Error> {
        self.inner.seek(tp, offset)
    }

    /// Stops returning records of `tp` (it stays assigned, and heartbeats go on).
    pub fn pause(&mut self, tp: &TopicPartition) -> Result<(), Error> {
        let pos = self.inner.position(tp);
        let had = self.inner.drop_buffered(tp);
        if had && let Some(p) = pos {
            self.inner
                .consumer
                .seek(&tp.topic, tp.partition, Offset::At(p))?;
        }
        self.inner.consumer.pause(&tp.topic, tp.partition)
    }

    pub fn resume(&mut self, tp: &TopicPartition) -> Result<(), Error> {
        self.inner.consumer.resume(&tp.topic, tp.partition)
    }

    /// (generation id, member id) while in a generation.
    pub fn generation(&self) -> Option<(i32, String)> {
        self.inner.coord.lock().generation()
    }

    /// The member id the coordinator gave (empty before the first join).
    pub fn member_id(&self) -> String {
        self.inner.coord.lock().member_id.clone()
    }

    /// Leaves the group: `on_revoked` for what it owns, a final commit (with auto-commit),
    /// then LeaveGroup unless this is a static member (KIP-345: a static member's partitions
    /// wait for it for `session_timeout`).
    pub async fn close(mut self) -> Result<(), Error> {
        let _polling = PollGuard::enter(&self.inner.last_poll);
        if let Some(task) = self.inner.joining.take() {
            task.abort();
        }
        let (owned, lost, stable) = {
            let m = self.inner.coord.lock();
            let owned: Vec<TopicPartition> = m.owned.iter().cloned().collect();
            (owned, m.owned_lost, m.generation().is_some())
        };
        let mut result = Ok(());
        if !owned.is_empty() {
            let mut ctx = RebalanceContext {
                inner: &mut self.inner,
            };
            if lost || !stable {
                self.listener.on_lost(&mut ctx, &owned).await;
            } else {
                self.listener.on_revoked(&mut ctx, &owned).await;
                if self.inner.coord.config.auto_commit {
                    result = self.inner.commit_positions(None).await;
                }
            }
        }
        self.inner.heartbeat.set(None);
        let leave = self.inner.coord.config.group_instance_id.is_none()
            && !self.inner.coord.lock().member_id.is_empty();
        if leave {
            let r = self.inner.coord.leave("the consumer is closing").await;
            if result.is_ok() {
                result = r;
            }
        }
        self.inner.coord.lock().on_closed();
        result
    }

    /// Makes sure records are buffered, or returns why not; with a `deadline`, returns with
    /// none buffered once it has passed while waiting (never inside a callback).
    async fn fill(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        let _polling = PollGuard::enter(&self.inner.last_poll);
        if self.inner.topics.is_empty() {
            return Err(Error::InvalidArgument(
                "subscribe before polling a group consumer".into(),
            ));
        }
        loop {
            self.inner.check_metadata().await;
            if !self.ensure_active(deadline).await? {
                return Ok(());
            }
            self.inner.maybe_auto_commit();
            if !self.inner.buffer.is_empty() {
                return Ok(());
            }
            if let Some(tp) = self.inner.unpositioned.first() {
                return Err(Error::NoCommittedOffset {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                });
            }
            let inner = &mut self.inner;
            let auto_at = inner
                .coord
                .config
                .auto_commit
                .then_some(inner.next_auto_commit);
            let has_work = inner.consumer.has_assignment();
            let wake = inner.wake.clone();
            tokio::select! {
                r = inner.consumer.poll_batch(), if has_work => {
                    inner.buffer.extend(r?);
                }
                _ = wake.notified() => {}
                _ = sleep_until_opt(auto_at) => {}
                () = sleep_until_opt(deadline) => return Ok(()),
                // Housekeeping (the leader's metadata check) while nothing else happens;
                // `poll_batch` is cancel-safe, so waking costs nothing but a loop.
                _ = tokio::time::sleep(inner.coord.config.heartbeat_interval) => {}
            }
        }
    }

    /// Joins, syncs and runs the callbacks until the member is stable (or an error says
    /// otherwise). JoinGroup and SyncGroup (which can wait for seconds) run in a task whose
    /// handle outlives a cancelled `poll`, so the next `poll` picks the same round up instead of
    /// starting over; the bookkeeping around them is synchronous. Cancelling `poll` inside a
    /// rebalance callback skips the rest of that callback only (`poll_for` never does).
    ///
    /// Returns whether the member is active; `false` only when `deadline` passed while it
    /// waited for a join round or a backoff, never in the middle of a callback.
    async fn ensure_active(&mut self, deadline: Option<Instant>) -> Result<bool, Error> {
        let mut rounds = 0u32;
        let mut last_error: Option<Error> = None;
        loop {
            if self.inner.joining.is_none() {
                {
                    let m = self.inner.coord.lock();
                    if let Some(e) = &m.fatal {
                        return Err(e.clone());
                    }
                    if !m.needs_join() {
                        return Ok(true);
                    }
                }
                rounds += 1;
                if rounds > MAX_JOIN_ROUNDS {
                    return Err(
                        last_error.unwrap_or_else(|| Error::Timeout("joining the group".into()))
                    );
                }
                // The heartbeat task goes on while the callbacks below run: an `on_revoked`
                // slower than the session timeout must not get the member evicted (the
                // coordinator keeps a member alive on heartbeats during a rebalance).
                let prep = self.inner.coord.lock().prepare_join();
                if !prep.lost.is_empty() {
                    self.inner.revoking.clear();
                    self.inner.drop_partitions(&prep.lost)?;
                    let mut ctx = RebalanceContext {
                        inner: &mut self.inner,
                    };
                    self.listener.on_lost(&mut ctx, &prep.lost).await;
                }
                if !prep.revoked.is_empty() {
                    self.inner.snapshot_revoked(&prep.revoked)?;
                    self.revoke_callbacks(&prep.revoked).await;
                }
                let protocols = self.inner.protocols()?;
                {
                    let mut m = self.inner.coord.lock();
                    if let Some(e) = &m.fatal {
                        return Err(e.clone());
                    }
                    m.begin_join();
                }
                // A member waiting in JoinGroup cannot be evicted for silence; the next
                // generation starts its own heartbeat task.
                self.inner.heartbeat.set(None);
                let task = tokio::spawn(join_round(
                    self.inner.coord.clone(),
                    protocols,
                    self.inner.reset,
                ));
                self.inner.joining = Some(task);
            }
            let Some(task) = self.inner.joining.as_mut() else {
                continue;
            };
            // The round's task survives giving up here; the next poll awaits the same one.
            let outcome = tokio::select! {
                outcome = task => outcome,
                () = sleep_until_opt(deadline) => return Ok(false),
            };
            self.inner.joining = None;
            let round = match outcome {
                Ok(r) => r,
                Err(e) => {
                    self.inner.coord.lock().request_rejoin();
                    return Err(Error::Protocol(format!("join task failed: {e}")));
                }
            };
            let synced = match round {
                Ok(Round::Synced(s)) => s,
                Ok(Round::Next(next)) => {
                    last_error = self.inner.act(next, rounds).await?.or(last_error);
                    continue;
                }
                Err(e) if e.is_retriable() => {
                    {
                        let mut m = self.inner.coord.lock();
                        m.request_rejoin();
                        m.abandon_join();
                    }
                    let backoff = self.inner.coord.client.backoff_delay(rounds);
                    last_error = Some(e);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = sleep_until_opt(deadline) => return Ok(false),
                    }
                    continue;
                }
                Err(e) => {
                    self.inner.coord.lock().request_rejoin();
                    return Err(e);
                }
            };
            let change = self.inner.coord.lock().on_synced(synced.assigned);
            self.inner.snapshot_revoked(&change.revoked)?;
            self.inner
                .apply_assignment(&change.assigned, &synced.starts)?;
            self.inner.start_heartbeat(synced.generation);
            self.inner.assigned_topics = synced.assigned_topics;
            self.inner.next_metadata_check =
                Instant::now() + self.inner.coord.client.config().metadata_max_age;
            if !change.revoked.is_empty() {
                self.revoke_callbacks(&change.revoked).await;
            }
            let mut ctx = RebalanceContext {
                inner: &mut self.inner,
            };
            self.listener.on_assigned(&mut ctx, &change.added).await;
        }
    }

    /// A clean revoke of partitions already taken out of the fetcher (their positions are
    /// in `revoking`): commit them (auto-commit), then `on_revoked`.
    async fn revoke_callbacks(&mut self, partitions: &[TopicPartition]) {
        if self.inner.coord.config.auto_commit {
            // A failed commit here means the generation is gone; the records will be read
            // again by the next owner, which is the at-least-once promise.
            let offsets = self.inner.revoking.clone();
            let _ = self.inner.commits.submit(offsets, false).await;
        }
        let mut ctx = RebalanceContext {
            inner: &mut self.inner,
        };
        self.listener.on_revoked(&mut ctx, partitions).await;
        self.inner.revoking.clear();
    }
}

/// What one join round came to.
enum Round {
    Synced(Synced),
    Next(Next),
}

struct Synced {
    generation: i32,
    assigned: Vec<TopicPartition>,
    starts: Vec<(TopicPartition, Option<Offset>)>,
    /// The leader's view of the partition counts it assigned from.
    assigned_topics: Option<TopicPartitions>,
}

/// JoinGroup, the leader's assignment, SyncGroup, and the committed offsets of what was
/// added: one round, in its own task (see `ensure_active`).
async fn join_round(
    coord: Coordinator,
    protocols: Vec<(AssignorKind, Bytes)>,
    reset: AutoOffsetReset,
) -> Result<Round, Error> {
    let joined = match coord.join(&protocols, "joining").await? {
        JoinResult::Joined(j) => j,
        JoinResult::Next(next) => return Ok(Round::Next(next)),
    };
    let leader = joined.leader == joined.member_id;
    coord
        .lock()
        .on_joined(joined.generation, &joined.member_id, leader);
    let (assignments, assigned_topics) = if leader {
        let (a, t) = lead(&coord, &joined).await?;
        (a, Some(t))
    } else {
        (Vec::new(), None)
    };
    let bytes = match coord.sync(joined.protocol, assignments).await? {
        Ok(b) => b,
        Err(next) => return Ok(Round::Next(next)),
    };
    let assignment = protocol::decode_assignment(bytes)?;
    // What will be new once `poll` applies the assignment (it alone changes what is owned).
    let added: Vec<TopicPartition> = {
        let m = coord.lock();
        assignment
            .partitions
            .iter()
            .filter(|tp| !m.owned.contains(*tp))
            .cloned()
            .collect()
    };
    let committed = match coord.committed(&added).await {
        Ok(c) => c,
        Err(e) => {
            // Owned but never started: rejoin rather than sit on them.
            coord.lock().request_rejoin();
            return Err(e);
        }
    };
    let starts = committed
        .into_iter()
        .map(|(tp, c)| {
            let start = match (c, reset) {
                (Some(o), _) => Some(Offset::At(o)),
                (None, AutoOffsetReset::Earliest) => Some(Offset::Earliest),
                (None, AutoOffsetReset::Latest) => Some(Offset::Latest),
                (None, _) => None,
            };
            (tp, start)
        })
        .collect();
    Ok(Round::Synced(Synced {
        generation: joined.generation,
        assigned: assignment.partitions,
        starts,
        assigned_topics,
    }))
}

/// Partition counts of the topics that exist among `names`.
async fn partition_counts(client: &Client, names: &[String]) -> Result<TopicPartitions, Error> {
    let resp = client.fetch_metadata(Some(names)).await?;
    let mut out = TopicPartitions::new();
    for t in resp.topics {
        if t.error_code != 0 || t.partitions.is_empty() {
            continue;
        }
        if let Some(name) = t.name {
            out.insert(Arc::from(name.as_str()), t.partitions.len() as i32);
        }
    }
    Ok(out)
}

/// As leader: decode every subscription, run the chosen assignor, encode.
async fn lead(
    coord: &Coordinator,
    joined: &coordinator::Joined,
) -> Result<(Vec<(String, Bytes)>, TopicPartitions), Error> {
    let members: Vec<MemberSubscription> = joined
        .members
        .iter()
        .map(|(id, instance, meta)| MemberSubscription {
            member_id: id.clone(),
            group_instance_id: instance.clone(),
            // A member whose metadata we cannot read gets nothing rather than failing the
            // whole group.
            subscription: protocol::decode_subscription(meta.clone()).unwrap_or_default(),
        })
        .collect();
    let wanted: BTreeSet<&str> = members
        .iter()
        .flat_map(|m| m.subscription.topics.iter().map(String::as_str))
        .collect();
    // One Metadata request for exactly these topics: a topic that does not exist (yet) is
    // left out at once instead of holding the rebalance up while the client waits for it.
    let names: Vec<String> = wanted.iter().map(|t| t.to_string()).collect();
    let topics = partition_counts(&coord.client, &names).await?;
    let kind = joined
        .protocol
        .or_else(|| coord.config.assignors.first().copied())
        .unwrap_or(AssignorKind::Range);
    let mut assignment = assignor::assign(kind, &members, &topics);
    // Keyed on the protocol the coordinator chose, not on our own configuration: in a group
    // upgrading to cooperative-sticky (KIP-429), an eager-configured leader such as one with
    // the default [Range, CooperativeSticky] leads members that keep their partitions while
    // they rejoin, so what moves must wait for its owner to revoke it.
    if kind.cooperative() {
        assignor::withhold_moving_partitions(&mut assignment, &members);
    }
    let mut out = Vec::with_capacity(members.len());
    for m in &members {
        let partitions = assignment.remove(&m.member_id).unwrap_or_default();
        let bytes = protocol::encode_assignment(&Assignment {
            partitions,
            user_data: None,
        })?;
        out.push((m.member_id.clone(), bytes));
    }
    Ok((out, topics))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Inner {
    fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer
            .assignment()
            .into_iter()
            .map(|(topic, partition)| TopicPartition { topic, partition })
            .chain(self.unpositioned.iter().cloned())
            .collect()
    }

    fn position(&self, tp: &TopicPartition) -> Option<i64> {
        if let Some(o) = self
            .revoking
            .iter()
            .find(|o| o.partition == tp.partition && *o.topic == *tp.topic)
        {
            return Some(o.offset);
        }
        self.buffer
            .iter()
            .find(|r| r.partition == tp.partition && *r.topic == *tp.topic)
            .map(|r| r.offset)
            .or_else(|| self.consumer.position(&tp.topic, tp.partition))
    }

    fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<(), Error> {
        if self.unpositioned.remove(tp) {
            let mut all: Vec<(Arc<str>, i32, Offset)> = self
                .consumer
                .assignment()
                .into_iter()
                .map(|(t, p)| (t, p, Offset::Latest))
                .collect();
            all.push((tp.topic.clone(), tp.partition, offset));
            return self.consumer.set_assignment(all);
        }
        self.drop_buffered(tp);
        self.consumer.seek(&tp.topic, tp.partition, offset)
    }

    /// Drops the buffered records of `tp`; true if there were any.
    fn drop_buffered(&mut self, tp: &TopicPartition) -> bool {
        let before = self.buffer.len();
        self.buffer
            .retain(|r| !(r.partition == tp.partition && *r.topic == *tp.topic));
        self.buffer.len() != before
    }

    /// Takes the positions of `partitions` into `revoking`, then stops fetching them.
    fn snapshot_revoked(&mut self, partitions: &[TopicPartition]) -> Result<(), Error> {
        self.revoking.clear();
        let snapshot = self.positions(Some(partitions));
        self.drop_partitions(partitions)?;
        self.revoking = snapshot;
        Ok(())
    }

    fn drop_partitions(&mut self, partitions: &[TopicPartition]) -> Result<(), Error> {
        for tp in partitions {
            self.drop_buffered(tp);
            self.unpositioned.remove(tp);
        }
        let gone: Vec<(Arc<str>, i32)> = partitions
            .iter()
            .map(|tp| (tp.topic.clone(), tp.partition))
            .collect();
        self.consumer.unassign(&gone)
    }

    /// Commits the positions of `only` (or of every assigned partition).
    async fn commit_positions(&mut self, only: Option<&[TopicPartition]>) -> Result<(), Error> {
        let offsets = self.positions(only);
        self.commits.submit(offsets, false).await
    }

    fn positions(&self, only: Option<&[TopicPartition]>) -> Vec<TopicPartitionOffset> {
        let parts = match only {
            Some(p) => p.to_vec(),
            None => {
                let mut all = self.assignment();
                all.extend(
                    self.revoking
                        .iter()
                        .map(TopicPartitionOffset::topic_partition),
                );
                all
            }
        };
        parts
            .iter()
            .filter_map(|tp| {
                self.position(tp).map(|offset| TopicPartitionOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                    metadata: None,
                })
            })
            .collect()
    }

    /// As leader: asks for a rejoin when a subscribed topic's partition count differs from
    /// the one the assignment used: from the client's metadata snapshot on every loop (no
    /// request), and from a Metadata request for the subscribed topics every
    /// `metadata_max_age` (a topic created after the join is not in the snapshot).
    async fn check_metadata(&mut self) {
        if self.assigned_topics.is_none() {
            return;
        }
        let mut fresh: Option<TopicPartitions> = None;
        if Instant::now() >= self.next_metadata_check {
            self.next_metadata_check = Instant::now() + self.coord.client.config().metadata_max_age;
            fresh = partition_counts(&self.coord.client, &self.topics)
                .await
                .ok();
        }
        let Some(assigned) = &self.assigned_topics else {
            return;
        };
        let md = self.coord.client.metadata();
        let changed = self.topics.iter().any(|t| {
            let now = match &fresh {
                Some(f) => f.get(t.as_str()).copied(),
                None => md
                    .topics
                    .get(t.as_str())
                    .filter(|m| m.error == kafka_proto::ErrorCode::None)
                    .map(|m| m.partition_count()),
            };
            match (assigned.get(t.as_str()).copied(), now) {
                (Some(before), Some(now)) => before != now,
                (None, Some(now)) => now > 0,
                _ => false,
            }
        });
        if changed {
            self.assigned_topics = None;
            let mut m = self.coord.lock();
            if m.leader && m.generation().is_some() {
                m.request_rejoin();
            }
        }
    }

    /// Auto-commit: in the background, positions of records already returned.
    fn maybe_auto_commit(&mut self) {
        let cfg = &self.coord.config;
        if !cfg.auto_commit || Instant::now() < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = Instant::now() + cfg.auto_commit_interval;
        if self.coord.lock().generation().is_none() {
            return;
        }
        let offsets = self.positions(None);
        if offsets.is_empty() {
            return;
        }
        // Queued behind earlier commits and sent without waiting here. A failed auto-commit
        // is retried with newer positions on the next interval.
        drop(self.commits.submit(offsets, true));
    }

    /// What to do after an error answer while joining; Some(error) to remember as the cause
    /// if joining finally gives up.
    async fn act(&mut self, next: Next, round: u32) -> Result<Option<Error>, Error> {
        match next {
            Next::Fatal(e) => Err(e),
            Next::JoinAgain | Next::Rejoin => {
                self.coord.lock().abandon_join();
                Ok(None)
            }
            Next::Retry | Next::Rediscover => {
                self.coord.lock().abandon_join();
                tokio::time::sleep(self.coord.client.backoff_delay(round)).await;
                Ok(Some(Error::Timeout(format!(
                    "group {} is not ready: {next:?}",
                    self.coord.config.group_id
                ))))
            }
        }
    }

    /// JoinGroup metadata, one per assignor in preference order.
    fn protocols(&self) -> Result<Vec<(AssignorKind, Bytes)>, Error> {
        let (owned, generation) = {
            let m = self.coord.lock();
            (m.owned.iter().cloned().collect::<Vec<_>>(), m.generation)
        };
        let sub = Subscription {
            topics: self.topics.clone(),
            user_data: None,
            owned_partitions: owned,
            generation_id: generation,
            rack_id: None,
        };
        let bytes = protocol::encode_subscription(&sub)?;
        Ok(self
            .coord
            .config
            .assignors
            .iter()
            .map(|&a| (a, bytes.clone()))
            .collect())
    }

    fn apply_assignment(
        &mut self,
        assigned: &[TopicPartition],
        starts: &[(TopicPartition, Option<Offset>)],
    ) -> Result<(), Error> {
        let mut list: Vec<(Arc<str>, i32, Offset)> = Vec::new();
        let current = self.consumer.assignment();
        for tp in assigned {
            match starts.iter().find(|(t, _)| t == tp) {
                Some((_, Some(o))) => list.push((tp.topic.clone(), tp.partition, *o)),
                Some((_, None)) => {
                    self.unpositioned.insert(tp.clone());
                }
                // Kept from before: set_assignment keeps its state (the offset is unused).
                // A new partition without a looked-up start (cannot happen while only `poll`
                // changes what is owned) starts by the reset policy, never silently at the end.
                None if !self.unpositioned.contains(tp) => {
                    let kept = current.contains(&(tp.topic.clone(), tp.partition));
                    match self.reset {
                        _ if kept => list.push((tp.topic.clone(), tp.partition, Offset::Latest)),
                        AutoOffsetReset::Latest => {
                            list.push((tp.topic.clone(), tp.partition, Offset::Latest))
                        }
                        AutoOffsetReset::Earliest => {
                            list.push((tp.topic.clone(), tp.partition, Offset::Earliest))
                        }
                        _ => {
                            self.unpositioned.insert(tp.clone());
                        }
                    }
                }
                None => {}
            }
        }
        self.unpositioned.retain(|tp| assigned.contains(tp));
        let keep: BTreeSet<TopicPartition> = assigned.iter().cloned().collect();
        self.buffer.retain(|r| {
            keep.contains(&TopicPartition {
                topic: r.topic.clone(),
                partition: r.partition,
            })
        });
        self.consumer.set_assignment(list)
    }

    fn start_heartbeat(&mut self, generation: i32) {
        let task = tokio::spawn(heartbeat::run(
            self.coord.clone(),
            generation,
            self.last_poll.clone(),
            self.wake.clone(),
        ));
        self.heartbeat.set(Some(task.abort_handle()));
    }
}

#[cfg(test)]
mod send_check {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    /// `poll`, `close` and the stream stay `Send` (no lock held across an await), so a
    /// consumer can live in a spawned task.
    #[allow(dead_code)]
    async fn futures_are_send<L: RebalanceListener>(mut c: GroupConsumer<L>) {
        is_send(&c.poll());
        is_send(&c.commit());
        is_send(&c.records());
        is_send(&c.close());
    }
}
