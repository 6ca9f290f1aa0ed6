//! The producer's state, behind one mutex: a queue of batches per partition, buffer memory,
//! in-flight counts, the idempotent sequencing, and the bookkeeping `flush` waits on. It does
//! no I/O and reads no clock: callers pass `now`, so linger, backoff and expiry are tested by
//! passing instants.
//!
//! A record is written once, by `append`, straight into its partition's open batch. The
//! sender takes ready batches out with [`Accumulator::drain`], sends them, and hands the
//! answers back to [`Accumulator::complete_request`], which completes, retries or fails each
//! batch.
//!
//! Invariants:
//! - A partition's batches leave in queue order, and a batch that comes back for a retry is
//!   put back in front of every later batch of its partition (queue order is batch id order).
//! - After a retriable failure a partition sends nothing until all of its in-flight batches
//!   have come back, then resends in order; with idempotence the broker's sequence check
//!   then keeps the log in order even with several batches in flight.
//! - Memory is charged for buffer capacity when a batch is created or grown and released
//!   only when the batch completes, so `used` bounds the real allocations of every batch
//!   that is filling, waiting, or in flight.
//! - Every batch is completed exactly once; the failure log counts every failed record until
//!   a `flush` or `close` reports it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_proto::ErrorCode;
use kafka_proto::compression::Compression;
use kafka_proto::messages::ProduceResponse;
use kafka_proto::records::{
    BatchBuilder, BatchParams, DecodeOptions, V2_HEADER_SIZE, decode_records, restamp_producer,
};
use partitioner::{
    DefaultPartitioner, Partitioner, RandomSource, SplitMix64, TopicPartitions, partition_for_key,
};
use tokio::time::Instant;

use super::config::{MAX_IDEMPOTENT_IN_FLIGHT, ProducerConfig};
use super::delivery::{BatchDone, Completion, DeliveryFuture};
use super::error::ProduceError;
use super::record::Record;
use super::sequence::{Identity, PartitionSequence, Sequenced, Verdict, add_sequence};
use crate::client::TopicMetadata;
use crate::error::{Error, RequestError};

/// A new batch's buffer starts this large (or at `batch_size` if smaller) and doubles as it
/// fills, so a partition that receives a trickle does not hold `batch_size` of memory.
pub(crate) const INITIAL_BATCH_CAPACITY: usize = 16 * 1024;

/// A batch's records: still filling, or finished (compressed, header and CRC written).
#[derive(Debug)]
pub(crate) enum Body {
    Open(BatchBuilder),
    Built(Bytes),
    /// Transient, while the sender finishes the batch outside the lock.
    Taken,
}

/// One batch and everything needed to complete, retry or fail it.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Creation order, producer-wide; also the order of a partition's queue.
    pub id: u64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub body: Body,
    pub records: u32,
    pub created: Instant,
    pub deadline: Instant,
    pub completion: Arc<Completion>,
    /// Index of this batch's first record in `completion` (non-zero for the second part of a
    /// split batch).
    pub first_index: u32,
    /// Bytes of buffer memory charged for this batch.
    pub charged: usize,
    pub seq: Option<Sequenced>,
    /// The bytes in `Built` carry other producer fields than `seq` (after a reset).
    pub needs_restamp: bool,
    pub attempts: u32,
    /// An attempt ended without an answer, so the batch may be in the log.
    pub maybe_written: bool,
    pub last_error: Option<ProduceError>,
}

impl Batch {
    /// Bytes this batch adds to a request (before compression for a batch still open).
    pub fn wire_len(&self) -> usize {
        match &self.body {
            Body::Open(b) => b.encoded_len(),
            Body::Built(b) => b.len(),
            Body::Taken => 0,
        }
    }

    /// Turns the batch into its final bytes with its sequence stamped in: compresses an open
    /// batch (through `scratch`), or re-stamps a built one whose sequence changed.
    pub fn build(&mut self, scratch: &mut Vec<u8>) -> Result<Bytes, ProduceError> {
        let (pid, epoch, base) = match self.seq {
            Some(s) => (s.identity.producer_id, s.identity.epoch, s.base),
            None => (-1, -1, -1),
        };
        match std::mem::replace(&mut self.body, Body::Taken) {
            Body::Open(mut builder) => {
                builder.set_producer(pid, epoch, base);
                let bytes = builder.finish(Some(scratch))?;
                self.body = Body::Built(bytes.clone());
                Ok(bytes)
            }
            Body::Built(bytes) if self.needs_restamp => {
                let mut copy = BytesMut::from(&bytes[..]);
                restamp_producer(&mut copy, pid, epoch, base)?;
                let bytes = copy.freeze();
                self.needs_restamp = false;
                self.body = Body::Built(bytes.clone());
                Ok(bytes)
            }
            Body::Built(bytes) => {
                self.body = Body::Built(bytes.clone());
                Ok(bytes)
            }
            Body::Taken => Err(ProduceError::Closed),
        }
    }
}

#[derive(Debug, Default)]
struct PartitionQueue {
    /// The batch records are appended to.
    open: Option<Batch>,
    /// Closed batches and batches back for a retry, in id order.
    queue: VecDeque<Batch>,
    in_flight: usize,
    /// Nothing is sent before this instant (retry backoff).
    retry_at: Option<Instant>,
    /// A batch came back for a retry: wait for the rest of the in-flight ones, then resend
    /// in order.
    recovering: bool,
    seq: PartitionSequence,
    /// Sequenced batches not yet written or failed (queued or in flight).
    sequenced: usize,
}

impl PartitionQueue {
    fn is_empty(&self) -> bool {
        self.open.is_none() && self.queue.is_empty()
    }

    /// Puts a returning batch back in id order.
    fn requeue(&mut self, batch: Batch) {
        // After equal ids: the parts of a split batch share their parent's id.
        let at = self.queue.partition_point(|b| b.id <= batch.id);
        self.queue.insert(at, batch);
    }
}

#[derive(Debug)]
struct TopicQueues {
    name: Arc<str>,
    metadata: Arc<TopicMetadata>,
    /// The partition unkeyed records stick to, as the partitioner last chose it. The
    /// partitioner is asked again only when that partition's batch is done, not per record.
    sticky: Option<i32>,
    /// Leader per partition index, -1 when unknown.
    leaders: Vec<i32>,
    available: Vec<i32>,
    partitions: Vec<PartitionQueue>,
}

impl TopicQueues {
    fn new(name: Arc<str>, metadata: Arc<TopicMetadata>) -> Self {
        let mut t = TopicQueues {
            name,
            metadata: metadata.clone(),
            sticky: None,
            leaders: Vec::new(),
            available: Vec::new(),
            partitions: Vec::new(),
        };
        t.set_metadata(metadata);
        t
    }

    fn set_metadata(&mut self, metadata: Arc<TopicMetadata>) {
        let count = metadata
            .partitions
            .last()
            .map_or(0, |p| (p.partition.max(-1) + 1) as usize)
            .max(metadata.partitions.len());
        self.leaders = vec![-1; count];
        for p in &metadata.partitions {
            if let Some(slot) = usize::try_from(p.partition)
                .ok()
                .and_then(|i| self.leaders.get_mut(i))
            {
                *slot = p.leader;
            }
        }
        self.available = metadata.available_partitions();
        // Partitions are only ever added to a topic; a shrinking answer is stale metadata,
        // and queues holding records must never be dropped.
        if self.partitions.len() < count {
            self.partitions.resize_with(count, PartitionQueue::default);
            self.sticky = None;
        }
        self.metadata = metadata;
    }
}

/// Buffer memory with first-come, first-served waiting: while anyone waits, only the oldest
/// waiter may take memory, so a large record is not starved by a stream of small ones.
#[derive(Debug)]
struct Memory {
    limit: usize,
    used: usize,
    waiters: VecDeque<u64>,
    next_ticket: u64,
}

impl Memory {
    fn try_take(&mut self, n: usize, ticket: Option<u64>) -> bool {
        let my_turn = self.waiters.front().is_none_or(|t| Some(*t) == ticket);
        if my_turn && self.used.saturating_add(n) <= self.limit {
            self.used += n;
            true
        } else {
            false
        }
    }

    fn release(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }
}

/// What the producer owes its caller after `append`.
#[derive(Debug)]
pub(crate) struct Appended {
    /// The record's delivery future, when the caller asked for one.
    pub future: Option<DeliveryFuture>,
    /// A batch became ready or a new one started its linger: the sender should look.
    pub wake_sender: bool,
}

/// Why `append` could not take the record yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// The topic's metadata is not known; fetch it and try again.
    UnknownTopic,
    /// Not enough buffer memory (or others are queued for it); wait and try again.
    NoMemory,
}

/// Batches to send to one broker in one Produce request.
#[derive(Debug)]
pub(crate) struct Drained {
    pub node: i32,
    pub batches: Vec<Batch>,
}

/// What the sender should do after a drain.
#[derive(Debug, Default)]
pub(crate) struct DrainResult {
    pub requests: Vec<Drained>,
    /// When something becomes ready by time alone (a linger, a backoff, a deadline).
    pub next_wake: Option<Instant>,
    /// Some partition has no known leader.
    pub need_metadata: bool,
    /// A producer identity is needed (the first, or a newer one for a reset).
    pub need_identity: bool,
    /// Batches that failed (expired, or uncertain after a reset), with their outcome.
    pub completed: Completions,
}

/// Outcomes to hand to completions once the lock is released.
pub(crate) type Completions = Vec<(Arc<Completion>, u32, Result<BatchDone, ProduceError>)>;

/// How one request ended, for [`Accumulator::complete_request`].
#[derive(Debug)]
pub(crate) enum RequestOutcome {
    /// The broker answered.
    Answered(ProduceResponse),
    /// acks=0: the request was queued on the connection and no answer will come.
    Queued,
    /// The request failed as a whole.
    Failed(ProduceError),
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Produce requests sent.
    pub requests: u64,
    /// Batches sent, retries included.
    pub batches_sent: u64,
    /// Batches sent again after a retriable error.
    pub retries: u64,
    /// Records acknowledged (or queued, with acks=0).
    pub records_delivered: u64,
    /// Records failed.
    pub records_failed: u64,
    /// Producer identities obtained (InitProducerId answers), the first included.
    pub identities: u64,
    /// Partition sequence resets.
    pub sequence_resets: u64,
    /// Batches split in two because the broker found them too large.
    pub splits: u64,
}

/// The producer's state. See the module docs.
pub(crate) struct Accumulator {
    cfg: ProducerConfig,
    max_in_flight: usize,
    partition_in_flight: usize,
    topics: Vec<TopicQueues>,
    topic_index: HashMap<Arc<str>, usize>,
    /// The topic of the previous `append`: most producers write to one topic, and comparing
    /// two pointers is cheaper than hashing the name for every record.
    last_topic: Option<(Arc<str>, usize)>,
    partitioner: DefaultPartitioner,
    memory: Memory,
    identity: Option<Identity>,
    generations: u32,
    node_in_flight: HashMap<i32, usize>,
    /// `flush` calls in progress: every batch is ready while one is.
    flushing: usize,
    closed: bool,
    fatal: Option<ProduceError>,
    next_batch_id: u64,
    /// Ids of batches not yet completed, for `flush`.
    /// Incomplete batches by id (a split batch counts once per part).
    incomplete: BTreeMap<u64, u32>,
    failed_records: u64,
    first_failure: Option<ProduceError>,
    rng: SplitMix64,
    stats: ProducerStats,
}

impl std::fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulator")
            .field("topics", &self.topics.len())
            .field("memory_used", &self.memory.used)
            .field("incomplete", &self.incomplete.len())
            .finish_non_exhaustive()
    }
}

impl Accumulator {
    pub fn new(cfg: ProducerConfig) -> Self {
        let max_in_flight = cfg.effective_max_in_flight();
        let partition_in_flight = if cfg.idempotence {
            max_in_flight.min(MAX_IDEMPOTENT_IN_FLIGHT)
        } else {
            max_in_flight
        };
        Accumulator {
            memory: Memory {
                limit: cfg.buffer_memory,
                used: 0,
                waiters: VecDeque::new(),
                next_ticket: 0,
            },
            cfg,
            max_in_flight,
            partition_in_flight,
            topics: Vec::new(),
            topic_index: HashMap::new(),
            last_topic: None,
            partitioner: DefaultPartitioner::new(),
            identity: None,
            generations: 0,
            node_in_flight: HashMap::new(),
            flushing: 0,
            closed: false,
            fatal: None,
            next_batch_id: 0,
            incomplete: BTreeMap::new(),
            failed_records: 0,
            first_failure: None,
            rng: SplitMix64::from_entropy(),
            stats: ProducerStats::default(),
        }
    }

    pub fn stats(&self) -> ProducerStats {
        self.stats
    }

    #[cfg(test)]
    pub fn memory_used(&self) -> usize {
        self.memory.used
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Refuses new records from now on.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Nothing is left to deliver.
    pub fn is_idle(&self) -> bool {
        self.incomplete.is_empty()
    }

    /// Adds or refreshes a topic's metadata.
    pub fn set_topic(&mut self, metadata: Arc<TopicMetadata>) {
        match self.topic_index.get(metadata.name.as_str()) {
            Some(&i) => {
                let t = &mut self.topics[i];
                if !Arc::ptr_eq(&t.metadata, &metadata) {
                    t.set_metadata(metadata);
                }
            }
            None => {
                let name: Arc<str> = metadata.name.as_str().into();
                self.topic_index.insert(name.clone(), self.topics.len());
                self.topics.push(TopicQueues::new(name, metadata));
            }
        }
    }

    /// Topics this producer writes to.
    pub fn topic_names(&self) -> Vec<Arc<str>> {
        self.topics.iter().map(|t| t.name.clone()).collect()
    }

    fn topic_slot(&mut self, topic: &Arc<str>) -> Option<usize> {
        if let Some((last, i)) = &self.last_topic
            && Arc::ptr_eq(last, topic)
        {
            return Some(*i);
        }
        let i = *self.topic_index.get(&**topic)?;
        self.last_topic = Some((topic.clone(), i));
        Some(i)
    }

    // ---- send side ----

    /// A place in the queue for buffer memory, for a `send` that found none.
    pub fn enqueue_memory_waiter(&mut self) -> u64 {
        let t = self.memory.next_ticket;
        self.memory.next_ticket += 1;
        self.memory.waiters.push_back(t);
        t
    }

    /// Leaves the memory queue (served, timed out or cancelled). Returns whether the head of
    /// the queue changed, so the others should look again.
    pub fn remove_memory_waiter(&mut self, ticket: u64) -> bool {
        match self.memory.waiters.iter().position(|t| *t == ticket) {
            Some(0) => {
                self.memory.waiters.pop_front();
                true
            }
            Some(i) => {
                self.memory.waiters.remove(i);
                false
            }
            None => false,
        }
    }

    /// Appends `record` to its partition's open batch, starting a batch if needed. `size` is
    /// [`Record::size_bound`], already checked against `max_request_size`. `ticket` is the
    /// caller's place in the memory queue, if it waited. `now` is only read when a batch is
    /// created: a clock read per record is a measurable share of the send path.
    /// `want_future` is false on the fire-and-forget path, which then skips the reference
    /// count a delivery future costs.
    pub fn append(
        &mut self,
        record: &Record,
        timestamp: i64,
        size: usize,
        now: impl FnOnce() -> Instant,
        ticket: Option<u64>,
        want_future: bool,
    ) -> Result<Result<Appended, Blocked>, ProduceError> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if self.closed {
            return Err(ProduceError::Closed);
        }
        let Some(slot) = self.topic_slot(&record.topic) else {
            return Ok(Err(Blocked::UnknownTopic));
        };
        let topic = &mut self.topics[slot];
        let mut wake_sender = false;
        let partition = if record.partition.is_none() && record.key.is_none() {
            // Sticky partitioning (KIP-480): an unkeyed record that would start a new batch
            // moves the sticky choice on first, and may then join another partition's batch.
            let current = match topic.sticky {
                Some(p) => p,
                None => sticky_choice(&mut self.partitioner, topic)?,
            };
            if fits_open(
                &topic.partitions[current as usize],
                self.cfg.batch_size,
                size,
            ) {
                current
            } else {
                self.partitioner.on_new_batch(&topic.name, current);
                sticky_choice(&mut self.partitioner, topic)?
            }
        } else {
            choose_partition(record, topic.partitions.len())?
        };
        let pq = &mut topic.partitions[partition as usize];

        // A full open batch is closed (ready to send) before anything else, even if the new
        // batch then has to wait for memory: sending it is what frees memory.
        if let Some(open) = &pq.open
            && !open_has_room(open, self.cfg.batch_size, size)
        {
            let full = pq.open.take();
            pq.queue.extend(full);
            wake_sender = true;
        }

        // Past the check above, an open batch has an open body and room for the record.
        if let Some(open) = &mut pq.open
            && let Body::Open(builder) = &mut open.body
        {
            if builder.spare_capacity() < size {
                // Grow by doubling, within the batch limit, paying for the new capacity.
                let cap = builder.capacity();
                let want = builder.encoded_len() + size;
                let target = (cap * 2).min(self.cfg.batch_size.max(want)).max(want);
                if !self.memory.try_take(target - cap, ticket) {
                    return Ok(Err(Blocked::NoMemory));
                }
                builder.reserve(target - builder.encoded_len());
                // The allocator may round up; charge what was really allocated.
                let grown = builder.capacity().saturating_sub(cap);
                if grown > target - cap {
                    self.memory.used += grown - (target - cap);
                } else {
                    self.memory.release((target - cap) - grown);
                }
                open.charged += grown;
            }
            let index = open.records;
            builder.append(
                timestamp,
                record.key.as_deref(),
                record.value.as_deref(),
                &record.headers,
            )?;
            open.records += 1;
            let future =
                want_future.then(|| DeliveryFuture::new(open.completion.clone(), index, timestamp));
            return Ok(Ok(Appended {
                future,
                wake_sender,
            }));
        }

        // A new batch, sized for this record at least.
        let capacity = INITIAL_BATCH_CAPACITY
            .min(self.cfg.batch_size)
            .max(V2_HEADER_SIZE + size);
        if !self.memory.try_take(capacity, ticket) {
            return Ok(Err(Blocked::NoMemory));
        }
        let params = BatchParams {
            compression: self.cfg.compression,
            ..BatchParams::default()
        };
        let mut builder = BatchBuilder::new(params, capacity);
        let real = builder.capacity();
        if real > capacity {
            self.memory.used += real - capacity;
        } else {
            self.memory.release(capacity - real);
        }
        if let Err(e) = builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        ) {
            self.memory.release(real);
            return Err(e.into());
        }
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        self.incomplete.insert(id, 1);
        let now = now();
        let completion = Completion::new(partition);
        let future = want_future.then(|| DeliveryFuture::new(completion.clone(), 0, timestamp));
        pq.open = Some(Batch {
            id,
            topic: record.topic.clone(),
            partition,
            body: Body::Open(builder),
            records: 1,
            created: now,
            deadline: now + self.cfg.delivery_timeout,
            completion,
            first_index: 0,
            charged: real,
            seq: None,
            needs_restamp: false,
            attempts: 0,
            maybe_written: false,
            last_error: None,
        });
        Ok(Ok(Appended {
            future,
            wake_sender: true,
        }))
    }

    // ---- flush ----

    pub fn begin_flush(&mut self) -> u64 {
        self.flushing += 1;
        self.next_batch_id
    }

    pub fn end_flush(&mut self) {
        self.flushing = self.flushing.saturating_sub(1);
    }

    /// Every batch created before `mark` is complete.
    pub fn flushed(&self, mark: u64) -> bool {
        self.incomplete
            .first_key_value()
            .is_none_or(|(id, _)| *id >= mark)
    }

    /// The failures since the last summary, as one error, and clears them.
    pub fn take_failures(&mut self) -> Option<ProduceError> {
        let first = self.first_failure.take()?;
        let failed = std::mem::take(&mut self.failed_records);
        Some(ProduceError::Undelivered {
            failed,
            first: Box::new(first),
        })
    }

    // ---- identity ----

    /// Installs a new producer id and epoch from InitProducerId.
    pub fn set_identity(&mut self, producer_id: i64, epoch: i16) {
        self.generations += 1;
        self.identity = Some(Identity {
            producer_id,
            epoch,
            generation: self.generations,
        });
        self.stats.identities += 1;
    }

    /// The producer cannot go on: fail everything not in flight, and every later send.
    pub fn fail_all(&mut self, error: ProduceError) -> Completions {
        let fatal = ProduceError::Fatal(Box::new(error));
        self.fatal = Some(fatal.clone());
        let mut out = Vec::new();
        let mut batches = Vec::new();
        for t in &mut self.topics {
            for pq in &mut t.partitions {
                batches.extend(pq.open.take());
                batches.extend(pq.queue.drain(..));
                pq.sequenced = 0;
            }
        }
        for b in batches {
            self.fail(b, fatal.clone(), &mut out);
        }
        out
    }

    // ---- sender side ----

    /// Takes the batches that are ready, at most one per partition and one request per
    /// broker, respecting every in-flight limit; expires batches past their deadline and
    /// runs pending sequence resets first.
    pub fn drain(&mut self, now: Instant) -> DrainResult {
        let mut result = DrainResult::default();
        let idempotent = self.cfg.idempotence;
        let pressure = self.flushing > 0 || self.closed || !self.memory.waiters.is_empty();
        let mut requests: HashMap<i32, (usize, Vec<Batch>)> = HashMap::new();
        let mut expired = Vec::new();
        let mut uncertain = Vec::new();
        let identity = self.identity;
        let wake = |t: Instant, r: &mut DrainResult| {
            r.next_wake = Some(r.next_wake.map_or(t, |w| w.min(t)));
        };

        for topic in &mut self.topics {
            for (index, pq) in topic.partitions.iter_mut().enumerate() {
                if pq.is_empty() {
                    continue;
                }
                // Expire what waits past its deadline; in-flight batches expire on return.
                let mut gone = Vec::new();
                if pq.open.as_ref().is_some_and(|b| b.deadline <= now) {
                    gone.extend(pq.open.take());
                }
                while pq.queue.front().is_some_and(|b| b.deadline <= now) {
                    gone.extend(pq.queue.pop_front());
                }
                for b in &gone {
                    if b.seq.is_some() {
                        // Its sequence is now a gap the broker would wait for forever.
                        pq.sequenced = pq.sequenced.saturating_sub(1);
                        pq.seq.require_reset(ErrorCode::RequestTimedOut);
                    }
                }
                expired.append(&mut gone);
                if let Some(b) = pq.queue.front().or(pq.open.as_ref()) {
                    wake(b.deadline, &mut result);
                }

                if pq.seq.needs_reset() {
                    if pq.in_flight > 0 {
                        continue;
                    }
                    if !pq.seq.can_reset_with(identity) {
                        result.need_identity = true;
                        continue;
                    }
                    if let Some(current) = identity {
                        let reason = pq
                            .seq
                            .reset_reason()
                            .unwrap_or(ErrorCode::UnknownServerError);
                        reset_partition(pq, current, reason, &mut uncertain);
                        self.stats.sequence_resets += 1;
                    }
                }
                if pq.is_empty() {
                    continue;
                }
                if pq.recovering {
                    if pq.in_flight > 0 {
                        continue;
                    }
                    pq.recovering = false;
                }
                if let Some(at) = pq.retry_at {
                    if at > now {
                        wake(at, &mut result);
                        continue;
                    }
                    pq.retry_at = None;
                }
                if idempotent && identity.is_none() {
                    result.need_identity = true;
                    continue;
                }
                if pq.in_flight >= self.partition_in_flight {
                    continue;
                }
                let leader = topic.leaders.get(index).copied().unwrap_or(-1);
                if leader < 0 {
                    result.need_metadata = true;
                    continue;
                }
                if self.node_in_flight.get(&leader).copied().unwrap_or(0) >= self.max_in_flight {
                    continue;
                }
                // The next batch: a closed or returning one, else the open one once ready.
                let from_queue = !pq.queue.is_empty();
                if !from_queue {
                    let Some(open) = &pq.open else { continue };
                    let ready_at = open.created + self.cfg.linger;
                    if !pressure && ready_at > now {
                        wake(ready_at, &mut result);
                        continue;
                    }
                }
                let (size, list) = requests.entry(leader).or_default();
                let len = if from_queue {
                    pq.queue.front().map_or(0, Batch::wire_len)
                } else {
                    pq.open.as_ref().map_or(0, Batch::wire_len)
                };
                if !list.is_empty() && *size + len > self.cfg.max_request_size {
                    // It goes in the next request: the sender drains again right after
                    // sending this one.
                    continue;
                }
                let taken = if from_queue {
                    pq.queue.pop_front()
                } else {
                    pq.open.take()
                };
                let Some(mut batch) = taken else { continue };
                if idempotent
                    && batch.seq.is_none()
                    && let Some(current) = identity
                {
                    let quiet = pq.sequenced == 0 && pq.in_flight == 0;
                    batch.seq = Some(pq.seq.assign(current, batch.records as i32, quiet));
                    pq.sequenced += 1;
                }
                if batch.attempts > 0 {
                    self.stats.retries += 1;
                }
                batch.attempts += 1;
                pq.in_flight += 1;
                *size += len;
                list.push(batch);
            }
        }

        for b in expired {
            let err = ProduceError::DeliveryTimeout {
                timeout: self.cfg.delivery_timeout,
                attempts: b.attempts,
                maybe_written: b.maybe_written,
                last: b.last_error.clone().map(Box::new),
            };
            self.fail(b, err, &mut result.completed);
        }
        for (b, err) in uncertain {
            self.fail(b, err, &mut result.completed);
        }
        for (node, (_, batches)) in requests {
            if batches.is_empty() {
                continue;
            }
            *self.node_in_flight.entry(node).or_default() += 1;
            self.stats.requests += 1;
            self.stats.batches_sent += batches.len() as u64;
            result.requests.push(Drained { node, batches });
        }
        result
    }

    /// Applies the outcome of one request to its batches.
    pub fn complete_request(
        &mut self,
        node: i32,
        batches: Vec<Batch>,
        outcome: RequestOutcome,
        now: Instant,
    ) -> (Completions, bool) {
        if let Some(n) = self.node_in_flight.get_mut(&node) {
            *n = n.saturating_sub(1);
        }
        let mut out = Vec::new();
        let mut refresh = false;
        let compression = self.cfg.compression;
        for batch in batches {
            let (code, offset, append_time, message) = match &outcome {
                RequestOutcome::Queued => (ErrorCode::None, None, None, None),
                RequestOutcome::Failed(e) => {
                    refresh |= self.retry_or_fail(
                        batch,
                        e.clone(),
                        request_may_have_written(e),
                        now,
                        &mut out,
                    );
                    continue;
                }
                RequestOutcome::Answered(resp) => {
                    match find_partition(resp, &batch.topic, batch.partition) {
                        Some(p) => (
                            ErrorCode::from_code(p.error_code),
                            Some(p.base_offset),
                            (p.log_append_time_ms >= 0).then_some(p.log_append_time_ms),
                            p.error_message.clone(),
                        ),
                        None => {
                            let e = ProduceError::from(Error::Protocol(format!(
                                "produce response has no entry for {}-{}",
                                batch.topic, batch.partition
                            )));
                            refresh |= self.retry_or_fail(batch, e, true, now, &mut out);
                            continue;
                        }
                    }
                }
            };
            let Some(pq) = self.partition_mut(&batch.topic, batch.partition) else {
                continue;
            };
            pq.in_flight = pq.in_flight.saturating_sub(1);
            let verdict = pq.seq.classify(code, batch.seq);
            let broker_error = |batch: &Batch| ProduceError::Broker {
                topic: batch.topic.clone(),
                partition: batch.partition,
                code,
                message: message.clone(),
            };
            match verdict {
                Verdict::Written { offset_known } => {
                    if let Some(s) = batch.seq {
                        pq.seq.on_written(s, batch.records as i32);
                        pq.sequenced = pq.sequenced.saturating_sub(1);
                    }
                    let done = BatchDone {
                        base_offset: if offset_known {
                            offset.filter(|o| *o >= 0)
                        } else {
                            None
                        },
                        log_append_time: append_time,
                    };
                    self.stats.records_delivered += u64::from(batch.records);
                    self.finish(batch, Ok(done), &mut out);
                }
                Verdict::Retry { refresh_metadata } => {
                    refresh |= refresh_metadata;
                    let e = broker_error(&batch);
                    self.back_in_line(batch, e, false, now, &mut out);
                }
                Verdict::Reset => {
                    pq.seq.require_reset(code);
                    pq.recovering = true;
                    // Not written: it goes back to be re-sequenced, attempts unchanged in
                    // meaning (the reset, not a retry, is what sends it again).
                    let mut batch = batch;
                    batch.last_error = Some(broker_error(&batch));
                    pq.requeue(batch);
                }
                Verdict::Fail if is_too_large(code) && batch.records > 1 => {
                    let Some([first, second]) = split(&batch, compression) else {
                        if batch.seq.is_some() {
                            pq.sequenced = pq.sequenced.saturating_sub(1);
                            pq.seq.require_reset(code);
                        }
                        let e = broker_error(&batch);
                        self.fail(batch, e, &mut out);
                        continue;
                    };
                    // The halves take the parent's place and, between them, exactly its
                    // sequence range, so the partition's chain goes on unchanged.
                    let e = broker_error(&batch);
                    let (a, b, released) = halves(batch, first, second, e);
                    let charged = a.charged + b.charged;
                    if a.seq.is_some() {
                        pq.sequenced += 1;
                    }
                    pq.recovering = true;
                    let id = a.id;
                    pq.requeue(a);
                    pq.requeue(b);
                    self.memory.used += charged;
                    self.memory.release(released);
                    *self.incomplete.entry(id).or_default() += 1;
                    self.stats.splits += 1;
                }
                Verdict::Fail => {
                    if batch.seq.is_some() {
                        pq.sequenced = pq.sequenced.saturating_sub(1);
                        pq.seq.require_reset(code);
                    }
                    let e = broker_error(&batch);
                    self.fail(batch, e, &mut out);
                }
            }
        }
        (out, refresh)
    }

    /// Batches drained but never sent because they could not be built (encoding or
    /// compression failed): fail them, and restart the sequence past any they held.
    pub fn fail_unsent(&mut self, batches: Vec<(Batch, ProduceError)>) -> Completions {
        let mut out = Vec::new();
        for (batch, error) in batches {
            if let Some(pq) = self.partition_mut(&batch.topic, batch.partition) {
                pq.in_flight = pq.in_flight.saturating_sub(1);
                if batch.seq.is_some() {
                    pq.sequenced = pq.sequenced.saturating_sub(1);
                    pq.seq.require_reset(ErrorCode::UnknownServerError);
                }
            }
            self.fail(batch, error, &mut out);
        }
        out
    }

    /// A request-level failure for one batch: retry when the error allows it.
    fn retry_or_fail(
        &mut self,
        batch: Batch,
        error: ProduceError,
        maybe_written: bool,
        now: Instant,
        out: &mut Completions,
    ) -> bool {
        let Some(pq) = self.partition_mut(&batch.topic, batch.partition) else {
            return false;
        };
        pq.in_flight = pq.in_flight.saturating_sub(1);
        if is_retriable(&error) {
            self.back_in_line(batch, error, maybe_written, now, out);
            true
        } else {
            if batch.seq.is_some()
                && let Some(pq) = self.partition_mut(&batch.topic, batch.partition)
            {
                pq.sequenced = pq.sequenced.saturating_sub(1);
                pq.seq.require_reset(ErrorCode::UnknownServerError);
            }
            self.fail(batch, error, out);
            false
        }
    }

    /// Puts a batch back for a retry after a backoff, unless its retries or its time are up.
    fn back_in_line(
        &mut self,
        mut batch: Batch,
        error: ProduceError,
        maybe_written: bool,
        now: Instant,
        out: &mut Completions,
    ) {
        batch.maybe_written |= maybe_written;
        let give_up = if now >= batch.deadline {
            Some(ProduceError::DeliveryTimeout {
                timeout: self.cfg.delivery_timeout,
                attempts: batch.attempts,
                maybe_written: batch.maybe_written,
                last: Some(Box::new(error.clone())),
            })
        } else if batch.attempts > self.cfg.retries {
            Some(ProduceError::RetriesExhausted {
                attempts: batch.attempts,
                maybe_written: batch.maybe_written,
                last: Box::new(error.clone()),
            })
        } else {
            None
        };
        let delay = self
            .cfg
            .retry_backoff
            .delay(batch.attempts, self.rng.next_u64());
        let Some(pq) = self.partition_mut(&batch.topic, batch.partition) else {
            return;
        };
        if let Some(e) = give_up {
            if batch.seq.is_some() {
                pq.sequenced = pq.sequenced.saturating_sub(1);
                pq.seq
                    .require_reset(e.code().unwrap_or(ErrorCode::RequestTimedOut));
            }
            self.fail(batch, e, out);
            return;
        }
        batch.last_error = Some(error);
        pq.recovering = true;
        let at = now + delay;
        pq.retry_at = Some(pq.retry_at.map_or(at, |t| t.max(at)));
        pq.requeue(batch);
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionQueue> {
        let i = *self.topic_index.get(topic)?;
        self.topics[i]
            .partitions
            .get_mut(usize::try_from(partition).ok()?)
    }

    fn fail(&mut self, batch: Batch, error: ProduceError, out: &mut Completions) {
        self.failed_records += u64::from(batch.records);
        self.stats.records_failed += u64::from(batch.records);
        if self.first_failure.is_none() {
            self.first_failure = Some(error.clone());
        }
        self.finish(batch, Err(error), out);
    }

    fn finish(
        &mut self,
        batch: Batch,
        outcome: Result<BatchDone, ProduceError>,
        out: &mut Completions,
    ) {
        self.memory.release(batch.charged);
        if let Some(n) = self.incomplete.get_mut(&batch.id) {
            *n -= 1;
            if *n == 0 {
                self.incomplete.remove(&batch.id);
            }
        }
        out.push((batch.completion, batch.first_index, outcome));
    }

    pub(crate) fn retry_delay(&mut self, attempt: u32) -> Duration {
        self.cfg.retry_backoff.delay(attempt, self.rng.next_u64())
    }
}

fn is_too_large(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge
    )
}

/// Re-encodes a finished batch's records as two batches of half the records each, or `None`
/// when it cannot (one record, or bytes that do not decode).
fn split(batch: &Batch, compression: Compression) -> Option<[(BatchBuilder, u32); 2]> {
    let Body::Built(bytes) = &batch.body else {
        return None;
    };
    let decoded = decode_records(bytes.clone(), &DecodeOptions::default()).ok()?;
    let records: Vec<&kafka_proto::records::Record> = decoded.records().collect();
    if records.len() < 2 {
        return None;
    }
    let params = BatchParams {
        compression,
        ..BatchParams::default()
    };
    let (front, back) = records.split_at(records.len() / 2);
    let build = |part: &[&kafka_proto::records::Record]| {
        let mut builder = BatchBuilder::new(params, V2_HEADER_SIZE);
        for r in part {
            let size = builder.record_size(
                r.timestamp,
                r.key.as_deref(),
                r.value.as_deref(),
                &r.headers,
            );
            builder.reserve(size);
            builder
                .append(
                    r.timestamp,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &r.headers,
                )
                .ok()?;
        }
        Some((builder, part.len() as u32))
    };
    Some([build(front)?, build(back)?])
}

/// The two parts of a split batch, sharing its id, completion, deadline and sequence range,
/// and the memory the parent held.
fn halves(
    parent: Batch,
    (first, n1): (BatchBuilder, u32),
    (second, n2): (BatchBuilder, u32),
    error: ProduceError,
) -> (Batch, Batch, usize) {
    let second_seq = parent.seq.map(|s| Sequenced {
        identity: s.identity,
        base: add_sequence(s.base, n1 as i32),
    });
    parent.completion.split_at(parent.first_index + n1);
    let part = |builder: BatchBuilder, records, first_index, seq| Batch {
        id: parent.id,
        topic: parent.topic.clone(),
        partition: parent.partition,
        charged: builder.capacity(),
        body: Body::Open(builder),
        records,
        created: parent.created,
        deadline: parent.deadline,
        completion: parent.completion.clone(),
        first_index,
        seq,
        needs_restamp: false,
        attempts: parent.attempts,
        maybe_written: false,
        last_error: Some(error.clone()),
    };
    let a = part(first, n1, parent.first_index, parent.seq);
    let b = part(second, n2, parent.first_index + n1, second_seq);
    (a, b, parent.charged)
}

/// Restarts a partition's sequence under `current`: batches not written get new sequences
/// when next sent; batches that may already be in the log are failed as uncertain.
fn reset_partition(
    pq: &mut PartitionQueue,
    current: Identity,
    reason: ErrorCode,
    uncertain: &mut Vec<(Batch, ProduceError)>,
) {
    pq.seq.reset_to(current);
    pq.sequenced = 0;
    let queue = std::mem::take(&mut pq.queue);
    for mut b in queue {
        if b.seq.is_none() {
            pq.queue.push_back(b);
        } else if b.maybe_written {
            let err = ProduceError::Uncertain {
                topic: b.topic.clone(),
                partition: b.partition,
                reason,
            };
            uncertain.push((b, err));
        } else {
            b.seq = None;
            b.needs_restamp = matches!(b.body, Body::Built(_));
            pq.queue.push_back(b);
        }
    }
}

fn is_retriable(e: &ProduceError) -> bool {
    match e {
        ProduceError::Request(r) => r.is_retriable(),
        ProduceError::Client(c) => c.is_retriable() || matches!(**c, Error::Protocol(_)),
        ProduceError::Broker { code, .. } => code.is_retriable(),
        _ => false,
    }
}

/// Whether a failed request may have reached the broker and been acted on.
fn request_may_have_written(e: &ProduceError) -> bool {
    let r = match e {
        ProduceError::Request(r) => r,
        ProduceError::Client(c) => match &**c {
            Error::Request(r) => r,
            _ => return false,
        },
        _ => return false,
    };
    matches!(
        r,
        RequestError::ConnectionClosed { .. } | RequestError::Timeout(_)
    )
}

fn find_partition<'r>(
    resp: &'r ProduceResponse,
    topic: &str,
    partition: i32,
) -> Option<&'r kafka_proto::messages::produce_response::PartitionProduceResponse> {
    resp.responses
        .iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
}

fn fits_open(pq: &PartitionQueue, batch_size: usize, size: usize) -> bool {
    pq.open
        .as_ref()
        .is_some_and(|open| open_has_room(open, batch_size, size))
}

fn open_has_room(open: &Batch, batch_size: usize, size: usize) -> bool {
    match &open.body {
        Body::Open(b) => b.is_empty() || b.encoded_len() + size <= batch_size,
        _ => false,
    }
}

/// An explicit partition (range-checked) or Java's murmur2 mapping of the key.
fn choose_partition(record: &Record, count: usize) -> Result<i32, ProduceError> {
    let err = |source| ProduceError::Partition {
        topic: record.topic.clone(),
        source,
    };
    match (record.partition, &record.key) {
        (Some(p), _) if usize::try_from(p).is_ok_and(|p| p < count) => Ok(p),
        (Some(p), _) => Err(err(
            partitioner::PartitionError::ExplicitPartitionOutOfRange {
                partition: p,
                count: count as i32,
            },
        )),
        (None, Some(key)) => partition_for_key(key, count as i32).map_err(err),
        (None, None) => Err(err(partitioner::PartitionError::NoPartitions)),
    }
}

/// Asks the partitioner where unkeyed records of `topic` go now, and remembers it.
fn sticky_choice(
    partitioner: &mut DefaultPartitioner,
    topic: &mut TopicQueues,
) -> Result<i32, ProduceError> {
    let err = |source| ProduceError::Partition {
        topic: topic.name.clone(),
        source,
    };
    let count = topic.partitions.len();
    let parts = TopicPartitions::new(count as i32)
        .map_err(err)?
        .with_available(&topic.available);
    let p = partitioner
        .partition(&topic.name, None, parts)
        .map_err(err)?;
    if !usize::try_from(p).is_ok_and(|p| p < count) {
        return Err(err(partitioner::PartitionError::PartitionerOutOfRange {
            partition: p,
            count: count as i32,
        }));
    }
    topic.sticky = Some(p);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::PartitionMetadata;

    fn topic(partitions: i32) -> Arc<TopicMetadata> {
        Arc::new(TopicMetadata {
            name: "t".into(),
            topic_id: [0; 16],
            error: ErrorCode::None,
            is_internal: false,
            partitions: (0..partitions)
                .map(|p| PartitionMetadata {
                    partition: p,
                    leader: 1,
                    leader_epoch: 0,
                    error: ErrorCode::None,
                    replicas: vec![1],
                    isr: vec![1],
                })
                .collect(),
        })
    }

    fn record(partition: i32, len: usize) -> Record {
        Record::new("t").partition(partition).value(vec![0u8; len])
    }

    fn append(acc: &mut Accumulator, r: &Record, ticket: Option<u64>) -> Result<Appended, Blocked> {
        acc.append(r, 0, r.size_bound(), Instant::now, ticket, false)
            .unwrap()
    }

    /// Memory is charged per buffer, and while someone waits for it, nobody else may take
    /// it, even a record that would fit: the oldest waiter is served first.
    #[tokio::test(start_paused = true)]
    async fn memory_is_served_first_come_first_served() {
        let config = ProducerConfig::default()
            .idempotence(false)
            .acks(crate::producer::Acks::Leader)
            .batch_size(16 * 1024)
            .max_request_size(16 * 1024)
            .buffer_memory(64 * 1024);
        let mut acc = Accumulator::new(config);
        acc.set_topic(topic(8));
        for p in 0..4 {
            append(&mut acc, &record(p, 100), None).unwrap();
        }
        assert_eq!(acc.memory_used(), 64 * 1024, "four 16 KiB buffers");
        // Records that fit an open buffer need no memory.
        append(&mut acc, &record(0, 100), None).unwrap();
        assert_eq!(
            append(&mut acc, &record(4, 100), None).unwrap_err(),
            Blocked::NoMemory
        );
        let waiter = acc.enqueue_memory_waiter();

        // One batch completes and frees 16 KiB...
        let drained = acc.drain(Instant::now());
        let sent: Vec<Batch> = drained
            .requests
            .into_iter()
            .flat_map(|r| r.batches)
            .collect();
        assert_eq!(sent.len(), 4, "a waiting sender makes every batch ready");
        let mut sent = sent.into_iter();
        let first = sent.next().unwrap();
        let (done, _) =
            acc.complete_request(1, vec![first], RequestOutcome::Queued, Instant::now());
        assert_eq!(done.len(), 1);
        assert_eq!(acc.memory_used(), 48 * 1024);
        // ...which a newcomer may not take while the waiter is queued...
        assert_eq!(
            append(&mut acc, &record(5, 100), None).unwrap_err(),
            Blocked::NoMemory
        );
        // ...but the waiter may.
        append(&mut acc, &record(4, 100), Some(waiter)).unwrap();
        assert!(acc.remove_memory_waiter(waiter));
        append(&mut acc, &record(4, 100), None).unwrap();
        assert_eq!(acc.memory_used(), 64 * 1024);

        let rest: Vec<Batch> = sent.collect();
        let (done, _) = acc.complete_request(1, rest, RequestOutcome::Queued, Instant::now());
        assert_eq!(done.len(), 3);
        assert_eq!(acc.memory_used(), 16 * 1024, "only the new batch is left");
        assert!(!acc.is_idle());
    }

    /// A batch grows by doubling within `batch_size`, paying for each step, and a record that
    /// does not fit closes it.
    #[tokio::test(start_paused = true)]
    async fn batches_grow_in_charged_steps_up_to_batch_size() {
        let config = ProducerConfig::default().batch_size(64 * 1024);
        let mut acc = Accumulator::new(config);
        acc.set_topic(topic(1));
        let mut charged = Vec::new();
        for _ in 0..600 {
            append(&mut acc, &record(0, 100), None).unwrap();
            if charged.last() != Some(&acc.memory_used()) {
                charged.push(acc.memory_used());
            }
        }
        assert!(charged[0] >= INITIAL_BATCH_CAPACITY);
        assert!(charged.len() >= 3, "{charged:?}");
        assert!(
            charged.windows(2).all(|w| w[1] <= 2 * w[0] + 1024),
            "{charged:?}"
        );
        let pq = &acc.topics[0].partitions[0];
        assert!(!pq.queue.is_empty(), "a full batch was closed");
        assert!(pq.queue.iter().all(|b| b.wire_len() <= 64 * 1024));
    }
}
