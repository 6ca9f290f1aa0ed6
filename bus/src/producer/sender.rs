//! The producer's background task: drains ready batches into one Produce request per broker,
//! sends each request from its own task so requests to many brokers (and several to one
//! broker) are in flight at once, and feeds the answers back to the accumulator. It also
//! obtains producer ids. All waiting uses the tokio clock, so tests drive it in virtual time.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kafka_proto::messages::ProduceRequest;
use kafka_proto::messages::produce_request::{PartitionProduceData, TopicProduceData};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::accumulator::{Accumulator, Batch, Completions, Drained, RequestOutcome};
use super::cluster::Cluster;
use super::config::ProducerConfig;
use super::error::ProduceError;

/// What the producer's handles, its sender task and its request tasks share.
pub(crate) struct Shared {
    pub acc: Mutex<Accumulator>,
    pub cluster: Arc<dyn Cluster>,
    pub config: ProducerConfig,
    /// Wakes the sender: a batch is ready, a request finished, the producer is closing.
    pub wake: Notify,
    /// Wakes everyone waiting for batches to complete or memory to free up.
    pub progress: Notify,
    /// An InitProducerId is in progress.
    identity_busy: AtomicBool,
}

impl Shared {
    pub fn new(cluster: Arc<dyn Cluster>, config: ProducerConfig) -> Self {
        Shared {
            acc: Mutex::new(Accumulator::new(config.clone())),
            cluster,
            config,
            wake: Notify::new(),
            progress: Notify::new(),
            identity_busy: AtomicBool::new(false),
        }
    }

    /// The accumulator. Every critical section leaves it consistent before anything that
    /// could panic, so a poisoned lock is still usable.
    pub fn lock(&self) -> MutexGuard<'_, Accumulator> {
        self.acc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every record future and waiter about finished batches. Called without the lock.
    pub fn complete(&self, completions: Completions) {
        if completions.is_empty() {
            return;
        }
        for (completion, first_index, outcome) in completions {
            completion.complete(first_index, outcome);
        }
        self.progress.notify_waiters();
    }
}

thread_local! {
    /// Compression output, reused by every batch built on this thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs until the producer is closed (or every handle dropped) and nothing is left to deliver.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        let now = Instant::now();
        let (drained, exit) = {
            let mut acc = shared.lock();
            for name in acc.topic_names() {
                if let Some(md) = shared.cluster.cached_topic(&name) {
                    acc.set_topic(md);
                }
            }
            let drained = acc.drain(now);
            let exit = acc.is_closed() && acc.is_idle();
            (drained, exit)
        };
        shared.complete(drained.completed);
        if exit {
            return;
        }
        let mut next_wake = drained.next_wake;
        if drained.need_metadata {
            shared.cluster.invalidate();
            // The client refreshes in the background; look again after one backoff step.
            let at = now + shared.config.retry_backoff.initial;
            next_wake = Some(next_wake.map_or(at, |w| w.min(at)));
        }
        if drained.need_identity && !shared.identity_busy.swap(true, Ordering::AcqRel) {
            tokio::spawn(obtain_identity(shared.clone()));
        }
        let sent = !drained.requests.is_empty();
        for request in drained.requests {
            tokio::spawn(send_request(shared.clone(), request));
        }
        if sent {
            // A request limit may have held batches back that can go right away.
            tokio::task::yield_now().await;
            continue;
        }
        match next_wake {
            Some(at) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Builds, sends and settles one Produce request.
async fn send_request(shared: Arc<Shared>, request: Drained) {
    let Drained { node, mut batches } = request;
    let config = &shared.config;
    let mut req = ProduceRequest::default();
    req.transactional_id = None;
    req.acks = config.acks.wire();
    req.timeout_ms = config.request_timeout.as_millis().min(i32::MAX as u128) as i32;

    // Finishing a batch compresses it; that happens here, outside the lock and on whichever
    // worker runs this task.
    let mut unbuildable = Vec::new();
    let mut kept = Vec::with_capacity(batches.len());
    for mut batch in batches.drain(..) {
        let built = SCRATCH.with(|s| batch.build(&mut s.borrow_mut()));
        match built {
            Ok(records) => {
                add_to_request(&mut req, &batch, records);
                kept.push(batch);
            }
            Err(e) => unbuildable.push((batch, e)),
        }
    }
    if !unbuildable.is_empty() {
        let completions = shared.lock().fail_unsent(unbuildable);
        shared.complete(completions);
    }

    let outcome = if kept.is_empty() {
        RequestOutcome::Queued
    } else {
        shared
            .cluster
            .produce(node, req, config.acks, config.request_timeout)
            .await
    };
    let (completions, refresh) =
        shared
            .lock()
            .complete_request(node, kept, outcome, Instant::now());
    if refresh {
        shared.cluster.invalidate();
    }
    shared.complete(completions);
    shared.wake.notify_one();
}

fn add_to_request(req: &mut ProduceRequest, batch: &Batch, records: bytes::Bytes) {
    let mut partition = PartitionProduceData::default();
    partition.index = batch.partition;
    partition.records = Some(records);
    match req.topic_data.iter_mut().find(|t| *t.name == *batch.topic) {
        Some(t) => t.partition_data.push(partition),
        None => {
            let mut t = TopicProduceData::default();
            t.name = batch.topic.to_string();
            t.partition_data.push(partition);
            req.topic_data.push(t);
        }
    }
}

/// Gets a producer id and epoch, retrying retriable failures with backoff. A refusal that
/// retrying cannot fix fails every waiting record and every later send.
async fn obtain_identity(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        match shared.cluster.init_producer_id().await {
            Ok((producer_id, epoch)) => {
                shared.lock().set_identity(producer_id, epoch);
                break;
            }
            Err(e) if is_retriable(&e) => {
                attempt = attempt.saturating_add(1);
                let delay = shared.lock().retry_delay(attempt);
                tokio::time::sleep(delay).await;
                let acc = shared.lock();
                if acc.is_closed() && acc.is_idle() {
                    break;
                }
            }
            Err(e) => {
                let completions = shared.lock().fail_all(e);
                shared.complete(completions);
                break;
            }
        }
    }
    shared.identity_busy.store(false, Ordering::Release);
    shared.wake.notify_one();
}

fn is_retriable(e: &ProduceError) -> bool {
    match e {
        ProduceError::Client(c) => c.is_retriable(),
        ProduceError::Request(r) => r.is_retriable(),
        _ => false,
    }
}
