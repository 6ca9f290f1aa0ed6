//! One handler group's runtime: a dispatcher that polls the backend and hands each record to
//! its partition's worker, one worker task per partition.
//!
//! - **Order per aggregate**: an aggregate lives on one partition, and a partition's worker
//!   handles one record at a time in offset order. Partitions run concurrently.
//! - **Commit only after success**: a worker advances its partition's `done` mark (next
//!   offset) only after the handler succeeded, the event was recognised as a duplicate, or
//!   its dead letter was confirmed. Records of a partition finish in order, so `done` is
//!   always the end of a contiguous completed prefix and is what gets committed.
//! - **Bounded poison**: retries stop at the policy's attempts or elapsed budget; then the
//!   dead letter is written (retried until confirmed) and the partition moves on.
//! - **Revocation and shutdown**: a stopped partition's worker stops before its next record
//!   or retry, its in-flight handler call finishes, and its `done` mark is committed before
//!   the partition moves to another member. A retry backoff or a dead-letter write waits no
//!   longer than the stop: the event is left unmarked and is redelivered, never lost. Every
//!   worker of a revocation is stopped at once, so it takes as long as the slowest in-flight
//!   call, not their sum.
//! - **De-duplication**: the group's [`DedupStore`] (shared by every subscriber of one
//!   `EventBus`) is asked before the handler runs and told once the event is finished.
//! - **A slow partition stalls only itself**: a record for a partition whose worker queue
//!   is full is parked (in order) and that partition is paused in the subscription; the
//!   others keep being polled. The parked records are queued first and the partition is
//!   resumed once they all fit. Parked records of a revoked partition are dropped: they
//!   were never marked done, so the next owner reads them from the committed offset.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use partitioner::{RandomSource, SplitMix64};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::backend::{Backend, BusError, PartitionId, RevokeHook, Subscription};
use super::dedup::DedupStore;
use super::dlq;
use super::envelope::{InRecord, ReceivedEvent};
use super::handler::{BoxFuture, Handler, HandlerError, RetryPolicy};
use super::metrics;
use crate::backoff::Retry;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of one subscriber, for tests and dashboards (the same numbers go to metrics).
#[derive(Debug, Default)]
pub struct SubscriberStats {
    pub handled: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub duplicates: AtomicU64,
    pub retries: AtomicU64,
    /// Last measured lag per partition (log end minus the group's committed offset).
    pub lag: Mutex<HashMap<PartitionId, i64>>,
    /// The offsets (next to read) this subscriber's periodic and final commits stored, per
    /// partition. Never beyond a record that is not finished.
    pub committed: Mutex<HashMap<PartitionId, i64>>,
}

struct Progress {
    /// Next offset after the contiguous completed prefix; -1 before the first record.
    done: AtomicI64,
    committed: AtomicI64,
}

impl Progress {
    /// The `done` mark, when it is beyond what was committed.
    fn uncommitted(&self) -> Option<i64> {
        let done = self.done.load(Ordering::Acquire);
        (done > self.committed.load(Ordering::Acquire)).then_some(done)
    }
}

struct Worker {
    tx: mpsc::Sender<InRecord>,
    progress: Arc<Progress>,
    /// Turns true when the partition is revoked or the subscriber stops; wakes the worker
    /// out of a backoff.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub(crate) struct Settings {
    pub group: String,
    pub policy: RetryPolicy,
    /// `None`: de-duplication is off (`dedup_capacity = 0`).
    pub dedup: Option<Arc<dyn DedupStore>>,
    pub queue: usize,
    pub commit_interval: Duration,
    pub dlq_topic: Arc<str>,
    pub dlq_partitions: i32,
}

pub(crate) struct GroupRuntime {
    settings: Settings,
    handler: Arc<dyn Handler>,
    backend: Arc<dyn Backend>,
    workers: Mutex<HashMap<PartitionId, Worker>>,
    /// Records polled for a partition whose queue was full, in offset order; the partition
    /// is paused while it has an entry here. Bounded by one poll's records.
    parked: Mutex<HashMap<PartitionId, VecDeque<InRecord>>>,
    pub(crate) stats: Arc<SubscriberStats>,
    metrics: metrics::GroupMetrics,
}

enum Outcome {
    Done,
    /// Stopped before the event finished (revocation or shutdown between retries): its
    /// offset is not marked, so it is redelivered.
    Abandoned,
}

impl GroupRuntime {
    pub(crate) fn new(
        settings: Settings,
        handler: Arc<dyn Handler>,
        backend: Arc<dyn Backend>,
    ) -> Arc<Self> {
        Arc::new(GroupRuntime {
            metrics: metrics::GroupMetrics::new(&settings.group),
            settings,
            handler,
            backend,
            workers: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashMap::new()),
            stats: Arc::new(SubscriberStats::default()),
        })
    }

    /// Hands each of one poll's records to its partition's worker, starting one when
    /// needed. Never waits: when a worker's queue is full the record is parked, and its
    /// partition is answered, to pause (back-pressure on that partition only).
    fn dispatch(self: &Arc<Self>, records: Vec<InRecord>) -> Vec<PartitionId> {
        let mut full = Vec::new();
        if records.is_empty() {
            return full;
        }
        // Lock order: parked, then workers.
        let mut parked = lock(&self.parked);
        let mut workers = lock(&self.workers);
        for record in records {
            let id = PartitionId::new(record.topic.clone(), record.partition);
            if let Some(q) = parked.get_mut(&id) {
                // Behind records already parked: order within the partition is kept.
                q.push_back(record);
                continue;
            }
            let w = workers
                .entry(id.clone())
                .or_insert_with(|| self.clone().spawn_worker());
            match w.tx.try_send(record) {
                Ok(()) => {}
                Err(TrySendError::Full(record)) => {
                    parked.insert(id.clone(), VecDeque::from([record]));
                    full.push(id);
                }
                // The partition was revoked meanwhile: the record belongs to its next owner,
                // which reads it from the committed offset.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        full
    }

    /// Queues parked records that now fit; answers the partitions whose parked records are
    /// all queued (to resume).
    fn unpark(&self) -> Vec<PartitionId> {
        let mut parked = lock(&self.parked);
        if parked.is_empty() {
            return Vec::new();
        }
        let workers = lock(&self.workers);
        let mut ready = Vec::new();
        parked.retain(|id, q| {
            let Some(w) = workers.get(id) else {
                return false; // revoked: see stop_workers
            };
            while let Some(record) = q.pop_front() {
                match w.tx.try_send(record) {
                    Ok(()) => {}
                    Err(TrySendError::Full(record)) => {
                        q.push_front(record);
                        return true;
                    }
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            ready.push(id.clone());
            false
        });
        ready
    }

    fn spawn_worker(self: Arc<Self>) -> Worker {
        let (tx, mut rx) = mpsc::channel::<InRecord>(self.settings.queue);
        let progress = Arc::new(Progress {
            done: AtomicI64::new(-1),
            committed: AtomicI64::new(-1),
        });
        let (stop, mut s) = watch::channel(false);
        let p = progress.clone();
        let task = tokio::spawn(async move {
            let mut rng = SplitMix64::from_entropy();
            while let Some(record) = rx.recv().await {
                if *s.borrow() {
                    break;
                }
                let offset = record.offset;
                match self.process(record, &mut s, &mut rng).await {
                    Outcome::Done => p.done.store(offset + 1, Ordering::Release),
                    Outcome::Abandoned => break,
                }
            }
        });
        Worker {
            tx,
            progress,
            stop,
            task,
        }
    }

    async fn process(
        &self,
        record: InRecord,
        stop: &mut watch::Receiver<bool>,
        rng: &mut SplitMix64,
    ) -> Outcome {
        let group = self.settings.group.as_str();
        let event = match ReceivedEvent::from_record(&record) {
            Ok(e) => e,
            Err(e) => {
                return self.dead_letter(&record, &e.to_string(), 0, stop).await;
            }
        };
        let id = event.event.id;
        // `attempt` is recorded as retries happen: the span's final value is the attempts made.
        let span = tracing::info_span!("bus.handle", handler_group = group, event_id = %id,
            event_type = %event.event.event_type, topic = %record.topic,
            partition = record.partition, offset = record.offset,
            attempt = tracing::field::Empty);
        let attempt_span = span.clone();
        let dedup = self.settings.dedup.as_deref();
        let handled: Result<Outcome, (String, u32)> = async {
            if let Some(store) = dedup
                && store.contains(group, id).await
            {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                self.metrics.duplicate();
                tracing::debug!("duplicate skipped");
                return Ok(Outcome::Done);
            }
            let first = Instant::now();
            let mut attempt = 1u32;
            let mut ev = event;
            loop {
                attempt_span.record("attempt", attempt);
                ev.attempt = attempt;
                let started = Instant::now();
                let result = AssertUnwindSafe(self.handler.handle(ev))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(HandlerError::Retriable("handler panicked".into())));
                let error = match result {
                    Ok(()) => {
                        if let Some(store) = dedup {
                            store.insert(group, id).await;
                        }
                        self.stats.handled.fetch_add(1, Ordering::Relaxed);
                        self.metrics.ok(started.elapsed());
                        return Ok(Outcome::Done);
                    }
                    Err(HandlerError::Permanent(m)) => {
                        tracing::warn!(attempt, error = %m, "permanent failure");
                        return Err((m, attempt));
                    }
                    Err(HandlerError::Retriable(m)) => m,
                };
                match self
                    .settings
                    .policy
                    .next_delay(attempt + 1, first.elapsed(), rng.next_u64())
                {
                    Some(delay) => {
                        tracing::info!(attempt, error = %error, ?delay, "retrying");
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        self.metrics.retried();
                        if sleep_unless_stopped(delay, stop).await {
                            tracing::debug!(attempt, "stopped between retries; redelivered later");
                            return Ok(Outcome::Abandoned);
                        }
                        // The handler took the event: a retry reads it from the record again
                        // (which cannot fail now, as it did not the first time).
                        ev = ReceivedEvent::from_record(&record)
                            .map_err(|e| (e.to_string(), attempt))?;
                        attempt += 1;
                    }
                    None => {
                        tracing::warn!(attempt, error = %error, "retry budget spent");
                        return Err((error, attempt));
                    }
                }
            }
        }
        .instrument(span.clone())
        .await;
        match handled {
            Ok(outcome) => outcome,
            Err((error, attempts)) => {
                let outcome = self
                    .dead_letter(&record, &error, attempts, stop)
                    .instrument(span)
                    .await;
                if let (Outcome::Done, Some(store)) = (&outcome, dedup) {
                    // A redelivery of a dead-lettered event is not dead-lettered again.
                    store.insert(group, id).await;
                }
                outcome
            }
        }
    }

    /// Writes the dead letter, retrying until it is confirmed: giving up would lose the event.
    /// A stop (revocation, shutdown) ends the attempts, and a write in flight is not waited
    /// for: the event stays unmarked, so its next owner handles it again and writes its dead
    /// letter (twice, if the abandoned write landed after all: at least once).
    async fn dead_letter(
        &self,
        record: &InRecord,
        error: &str,
        attempts: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let group = self.settings.group.as_str();
        let out = dlq::dead_letter(
            self.settings.dlq_topic.clone(),
            self.settings.dlq_partitions,
            record,
            group,
            error,
            attempts,
        );
        let mut retry = Retry::new(self.settings.policy.backoff);
        loop {
            if *stop.borrow() {
                return Outcome::Abandoned;
            }
            let r = tokio::select! {
                r = self.backend.send(vec![out.clone()]) => r.into_iter().next(),
                _ = stop.wait_for(|s| *s) => return Outcome::Abandoned,
            };
            match r {
                Some(Ok(_)) => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    self.metrics.dead_lettered();
                    return Outcome::Done;
                }
                Some(Err(e)) => tracing::error!(error = %e, "dead letter not written, retrying"),
                None => tracing::error!("dead letter not answered, retrying"),
            }
            if sleep_unless_stopped(retry.next_delay(), stop).await {
                return Outcome::Abandoned;
            }
        }
    }

    /// Offsets completed since the last commit.
    fn pending(&self) -> Vec<(PartitionId, i64)> {
        lock(&self.workers)
            .iter()
            .filter_map(|(id, w)| Some((id.clone(), w.progress.uncommitted()?)))
            .collect()
    }

    /// Records `offsets` as committed: on their workers (none once they are stopped) and in
    /// the stats.
    fn mark_committed(&self, offsets: &[(PartitionId, i64)]) {
        let workers = lock(&self.workers);
        for (id, off) in offsets {
            if let Some(w) = workers.get(id) {
                w.progress.committed.fetch_max(*off, Ordering::AcqRel);
            }
        }
        drop(workers);
        let mut stats = lock(&self.stats.committed);
        for (id, off) in offsets {
            stats.insert(id.clone(), *off);
        }
    }

    /// Stops the workers of `partitions` (all when `None`), lets their in-flight handler
    /// finish, and answers their completed offsets not yet committed.
    async fn stop_workers(&self, partitions: Option<&[PartitionId]>) -> Vec<(PartitionId, i64)> {
        let removed: Vec<(PartitionId, Worker)> = {
            // Parked records of these partitions were never marked done: the next owner
            // reads them from the committed offset.
            let mut parked = lock(&self.parked);
            match partitions {
                None => parked.clear(),
                Some(ps) => ps.iter().for_each(|p| drop(parked.remove(p))),
            }
            let mut workers = lock(&self.workers);
            match partitions {
                None => workers.drain().collect(),
                Some(ps) => ps
                    .iter()
                    .filter_map(|p| workers.remove(p).map(|w| (p.clone(), w)))
                    .collect(),
            }
        };
        // Stop them all first, so their in-flight calls finish side by side.
        let removed: Vec<(PartitionId, Arc<Progress>, JoinHandle<()>)> = removed
            .into_iter()
            .map(|(id, w)| {
                let _ = w.stop.send(true);
                (id, w.progress, w.task)
            })
            .collect();
        let mut out = Vec::new();
        for (id, progress, task) in removed {
            let _ = task.await;
            if let Some(done) = progress.uncommitted() {
                out.push((id, done));
            }
        }
        out
    }

    /// Kills every worker at once, committing nothing: what a crash does.
    pub(crate) fn abort_workers(&self) {
        for (_, w) in lock(&self.workers).drain() {
            w.task.abort();
        }
    }

    async fn commit(&self, sub: &mut Box<dyn Subscription>) {
        let pending = self.pending();
        if pending.is_empty() {
            return;
        }
        match sub.commit(pending.clone()).await {
            Ok(()) => self.mark_committed(&pending),
            // Not fatal: the offsets are committed with the next attempt, and until then a
            // crash only redelivers.
            Err(e) => tracing::warn!(group = %self.settings.group, error = %e, "commit failed"),
        }
    }

    async fn record_lag(&self, sub: &mut Box<dyn Subscription>) {
        let lag = sub.lag().await;
        let mut stats = lock(&self.stats.lag);
        for (id, l) in lag {
            metrics::lag(&self.settings.group, &id.topic, id.partition, l);
            stats.insert(id, l);
        }
    }

    /// The poll loop, until `stop` turns true; then a graceful leave.
    pub(crate) async fn run(
        self: Arc<Self>,
        mut sub: Box<dyn Subscription>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), BusError> {
        let mut last_commit = Instant::now();
        let mut poll_retry = Retry::new(self.settings.policy.backoff);
        while !*stop.borrow_and_update() {
            for id in self.unpark() {
                sub.resume(&id);
            }
            match sub.poll().await {
                Ok(records) => {
                    poll_retry.reset();
                    for id in self.dispatch(records) {
                        tracing::debug!(topic = %id.topic, partition = id.partition,
                            "worker queue full; partition paused");
                        sub.pause(&id);
                    }
                }
                Err(BusError::Closed) => break,
                Err(e) => {
                    tracing::warn!(group = %self.settings.group, error = %e, "poll failed");
                    tokio::select! {
                        _ = tokio::time::sleep(poll_retry.next_delay()) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            if last_commit.elapsed() >= self.settings.commit_interval {
                self.commit(&mut sub).await;
                self.record_lag(&mut sub).await;
                last_commit = Instant::now();
            }
        }
        let offsets = self.stop_workers(None).await;
        let closed = sub.close(offsets.clone()).await;
        if closed.is_ok() {
            self.mark_committed(&offsets);
        }
        closed
    }
}

/// Sleeps `delay`, or less when `stop` turns true (or its sender is gone); answers whether
/// it was stopped.
async fn sleep_unless_stopped(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// The runtime's answer to a revocation.
pub(crate) struct Revoker(pub(crate) std::sync::Weak<GroupRuntime>);

impl RevokeHook for Revoker {
    fn revoked(&self, partitions: Vec<PartitionId>) -> BoxFuture<'_, Vec<(PartitionId, i64)>> {
        let rt = self.0.upgrade();
        Box::pin(async move {
            let Some(rt) = rt else {
                return Vec::new();
            };
            // In a task of its own: the backends never cancel a revocation, but if the
            // subscriber's task is aborted meanwhile (a crash), the workers are still
            // stopped rather than left half-stopped.
            tokio::spawn(async move { rt.stop_workers(Some(&partitions)).await })
                .await
                .unwrap_or_default()
        })
    }
}
