//! Reading partitions the application assigns itself (no consumer group yet; group
//! membership, assignors and commits will sit beside this module and drive `assign`/`seek`).
//!
//! How records flow:
//! - Every assigned partition is fetched from its leader. Partitions are grouped by leader
//!   and each broker gets one Fetch for all of its partitions, with at most one Fetch in
//!   flight per broker.
//! - Each Fetch runs as its own task ([`fetcher`]): the request is on the wire and its
//!   response is decoded while the application still works on the previous records.
//!   When the application takes a partition's records, that partition is fetched again at
//!   once, before the records are returned, so the next response is already coming.
//! - Memory is bounded: a partition is fetched again only after the application took its
//!   previous records, so per partition at most one response's worth waits and one is in
//!   flight: about `2 x fetch_max_bytes` per broker, plus what the application holds (records
//!   are zero-copy slices of the responses).
//! - Per-partition errors are handled here: a moved leader or stale epoch refreshes metadata
//!   and re-routes after a backoff; OFFSET_OUT_OF_RANGE applies the reset policy; a corrupt
//!   batch or a `none` reset policy stops the partition with an error until the application
//!   seeks. Nothing is skipped silently.
//!
//! [`PartitionConsumer::poll_batch`] and the [`Records`] stream are cancel-safe: a dropped
//! call (a `tokio::time::timeout`, a `select!`) loses no records and leaves every position
//! where it was.

mod config;
mod fetch_response;
mod fetcher;
mod position;
mod record;

pub use config::{AutoOffsetReset, ConsumerConfig};
pub use record::{ConsumerRecord, Offset};

pub use crate::offsets::IsolationLevel;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use kafka_proto::Uuid;
use kafka_proto::records::DecodeOptions;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::Error;
use crate::offsets::{OffsetSpec, list_offsets_round};
use config::wire_bytes;
use fetcher::{FetchEntry, FetchOutcome, FetchParams, run_fetch};
use position::{Decision, PartitionState, decide};

/// Room a response frame needs besides one record batch (headers, topic and partition
/// fields); the largest batch the consumer can take is the frame cap minus this.
const FRAME_OVERHEAD: usize = 64 * 1024;

/// topic -> partition -> index into `PartitionConsumer::partitions`.
type Index = HashMap<Arc<str>, HashMap<i32, usize>>;

/// One partition of a requested assignment: topic, partition, where a new one starts.
type Wanted = (Arc<str>, i32, Offset);

/// Reads assigned partitions. See the module docs for how fetching is pipelined.
pub struct PartitionConsumer {
    client: Client,
    config: ConsumerConfig,
    params: FetchParams,
    /// The largest batch a response may carry (the connection's frame cap, less overhead).
    batch_limit: usize,
    partitions: Vec<PartitionState>,
    index: Index,
    /// The fetch task per broker.
    in_flight: HashMap<i32, AbortHandle>,
    done_tx: UnboundedSender<FetchOutcome>,
    /// Unbounded, yet never holds more than one outcome per broker (one fetch in flight each).
    done_rx: UnboundedReceiver<FetchOutcome>,
    /// Partitions with buffered records, in arrival order.
    ready: VecDeque<usize>,
    /// Records taken from the buffers but not yet yielded by the stream.
    current: std::vec::IntoIter<ConsumerRecord>,
    errors: VecDeque<Error>,
    next_generation: u64,
    next_fetch_id: u64,
}

impl std::fmt::Debug for PartitionConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionConsumer")
            .field("partitions", &self.partitions.len())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Drop for PartitionConsumer {
    fn drop(&mut self) {
        for task in self.in_flight.values() {
            task.abort();
        }
    }
}

impl PartitionConsumer {
    /// A consumer with nothing assigned. Fails when `config` cannot work, or cannot work with
    /// the client's connections (a `fetch_max_wait` the request timeout would cut short, a
    /// `fetch_max_bytes` above the frame cap).
    pub fn new(client: Client, config: ConsumerConfig) -> Result<PartitionConsumer, Error> {
        config.validate().map_err(Error::Config)?;
        let conn = &client.config().connection;
        if config.fetch_max_wait >= conn.request_timeout {
            return Err(Error::Config(format!(
                "fetch_max_wait ({:?}) must be below the connection's request_timeout ({:?}), \
                 or every fetch that waits for data times out",
                config.fetch_max_wait, conn.request_timeout
            )));
        }
        if config.fetch_max_bytes > conn.max_frame_size.saturating_sub(FRAME_OVERHEAD) {
            return Err(Error::Config(format!(
                "fetch_max_bytes ({}) must leave {FRAME_OVERHEAD} bytes of room below the \
                 connection's max_frame_size ({})",
                config.fetch_max_bytes, conn.max_frame_size
            )));
        }
        let params = FetchParams {
            max_wait_ms: config.fetch_max_wait_ms(),
            min_bytes: wire_bytes(config.fetch_min_bytes),
            max_bytes: wire_bytes(config.fetch_max_bytes),
            isolation: config.isolation_level,
            decode: DecodeOptions::default().with_verify_crc(config.check_crcs),
        };
        let batch_limit = conn.max_frame_size.saturating_sub(FRAME_OVERHEAD);
        let (done_tx, done_rx) = unbounded_channel();
        Ok(PartitionConsumer {
            client,
            config,
            params,
            batch_limit,
            partitions: Vec::new(),
            index: HashMap::new(),
            in_flight: HashMap::new(),
            done_tx,
            done_rx,
            ready: VecDeque::new(),
            current: Vec::new().into_iter(),
            errors: VecDeque::new(),
            next_generation: 0,
            next_fetch_id: 0,
        })
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Replaces the assignment: exactly these partitions, each starting at its offset.
    /// Records buffered for the previous assignment are dropped. Topics are looked up on the
    /// first fetch, so an unknown topic shows as an error from [`poll_batch`](Self::poll_batch).
    pub fn assign<T: AsRef<str>>(
        &mut self,
        partitions: impl IntoIterator<Item = (T, i32, Offset)>,
    ) -> Result<(), Error> {
        let (wanted, index) = self.plan(partitions)?;
        let mut next = Vec::with_capacity(wanted.len());
        for (topic, partition, offset) in wanted {
            let generation = self.bump_generation();
            next.push(PartitionState::new(topic, partition, offset, generation));
        }
        self.partitions = next;
        self.index = index;
        self.ready.clear();
        self.current = Vec::new().into_iter();
        self.errors.clear();
        Ok(())
    }

    /// Changes the assignment to exactly these partitions, keeping the state (position,
    /// buffered records, fetch in flight) of those already assigned; `offset` applies only to
    /// partitions new to the assignment. A group consumer calls this on every rebalance, so a
    /// partition it keeps (cooperative protocol) is not fetched again from scratch.
    pub fn set_assignment<T: AsRef<str>>(
        &mut self,
        partitions: impl IntoIterator<Item = (T, i32, Offset)>,
    ) -> Result<(), Error> {
        let (wanted, index) = self.plan(partitions)?;
        let mut old: Vec<Option<PartitionState>> = std::mem::take(&mut self.partitions)
            .into_iter()
            .map(Some)
            .collect();
        let old_index = std::mem::replace(&mut self.index, index);
        let mut remap: HashMap<usize, usize> = HashMap::new();
        for (topic, partition, offset) in wanted {
            let kept = old_index
                .get(&topic)
                .and_then(|m| m.get(&partition))
                .and_then(|&i| old[i].take().map(|st| (i, st)));
            let st = match kept {
                Some((i, st)) => {
                    remap.insert(i, self.partitions.len());
                    st
                }
                None => {
                    let generation = self.bump_generation();
                    PartitionState::new(topic, partition, offset, generation)
                }
            };
            self.partitions.push(st);
        }
        self.ready = self
            .ready
            .iter()
            .filter_map(|i| remap.get(i).copied())
            .collect();
        let index = &self.index;
        if self.current.as_slice().iter().any(|r| {
            index
                .get(&r.topic)
                .and_then(|m| m.get(&r.partition))
                .is_none()
        }) {
            let keep: Vec<ConsumerRecord> = self
                .current
                .by_ref()
                .filter(|r| {
                    index
                        .get(&r.topic)
                        .and_then(|m| m.get(&r.partition))
                        .is_some()
                })
                .collect();
            self.current = keep.into_iter();
        }
        Ok(())
    }

    /// Checks a requested assignment (valid offsets, partitions numbered from 0, none twice)
    /// and names each topic with one shared `Arc` (the current assignment's, when it has the
    /// topic): the partitions in order, and the index they will have.
    fn plan<T: AsRef<str>>(
        &self,
        partitions: impl IntoIterator<Item = (T, i32, Offset)>,
    ) -> Result<(Vec<Wanted>, Index), Error> {
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut index = Index::new();
        for (topic, partition, offset) in partitions {
            let topic = topic.as_ref();
            check_offset(topic, partition, offset)?;
            if partition < 0 {
                return Err(Error::InvalidArgument(format!(
                    "{topic}-{partition}: partitions are numbered from 0"
                )));
            }
            let name = match index
                .get_key_value(topic)
                .or_else(|| self.index.get_key_value(topic))
            {
                Some((name, _)) => name.clone(),
                None => Arc::from(topic),
            };
            let slots = index.entry(name.clone()).or_default();
            if slots.insert(partition, wanted.len()).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{topic}-{partition} is assigned twice"
                )));
            }
            wanted.push((name, partition, offset));
        }
        Ok((wanted, index))
    }

    /// Removes these partitions from the assignment (the rest keep their state).
    pub fn unassign(&mut self, partitions: &[(Arc<str>, i32)]) -> Result<(), Error> {
        let keep: Vec<(Arc<str>, i32, Offset)> = self
            .partitions
            .iter()
            .filter(|p| {
                !partitions
                    .iter()
                    .any(|(t, n)| *t == p.topic && *n == p.partition)
            })
            .map(|p| (p.topic.clone(), p.partition, Offset::Latest))
            .collect();
        self.set_assignment(keep)
    }

    /// The assigned partitions, in assignment order.
    pub fn assignment(&self) -> Vec<(Arc<str>, i32)> {
        self.partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect()
    }

    /// Whether any partition is assigned, without building the list (the group's poll loop
    /// asks on every turn).
    pub fn has_assignment(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// Moves an assigned partition to `offset`. Records fetched from the old position and not
    /// yet returned are dropped; a stopped partition (corrupt batch, reset policy `none`)
    /// resumes.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: Offset) -> Result<(), Error> {
        check_offset(topic, partition, offset)?;
        let i = self.slot(topic, partition)?;
        self.drop_current(i);
        let generation = self.bump_generation();
        self.partitions[i].start_at(offset, generation);
        Ok(())
    }

    /// The next offset the application will receive from the partition; `None` while a seek
    /// to earliest, latest or a timestamp is still being looked up, or if not assigned.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let i = self.slot(topic, partition).ok()?;
        let st = &self.partitions[i];
        // Records the stream holds but has not yielded yet come first.
        self.current
            .as_slice()
            .iter()
            .find(|r| r.partition == partition && *r.topic == *topic)
            .map(|r| r.offset)
            .or(st.position)
    }

    /// The partition's high watermark (the offset after the last committed-to-all-replicas
    /// record) as of the latest fetch; `None` before the first answer.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        let i = self.slot(topic, partition).ok()?;
        self.partitions[i].high_watermark
    }

    /// The partition's last stable offset (the end of what `ReadCommitted` may read) as of the
    /// latest fetch.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        let i = self.slot(topic, partition).ok()?;
        self.partitions[i].last_stable_offset
    }

    /// Stops fetching the partition; records fetched but not yet returned are dropped and
    /// fetched again after [`resume`](Self::resume), so the position does not move.
    pub fn pause(&mut self, topic: &str, partition: i32) -> Result<(), Error> {
        let i = self.slot(topic, partition)?;
        let position = self.position(topic, partition);
        self.drop_current(i);
        let generation = self.bump_generation();
        let st = &mut self.partitions[i];
        st.generation = generation;
        st.buffered = None;
        if st.pending.is_none() {
            st.position = position;
        }
        st.paused = true;
        Ok(())
    }

    pub fn resume(&mut self, topic: &str, partition: i32) -> Result<(), Error> {
        let i = self.slot(topic, partition)?;
        self.partitions[i].paused = false;
        Ok(())
    }

    /// Waits for records and returns every record fetched so far, across partitions (in
    /// order within each partition), or the next error. Never returns an empty batch: with
    /// nothing to read it waits, so bound it with `tokio::time::timeout` (cancel-safe) where
    /// needed.
    pub async fn poll_batch(&mut self) -> Result<Vec<ConsumerRecord>, Error> {
        if self.current.len() > 0 {
            return Ok(self.current.by_ref().collect());
        }
        loop {
            self.drain_outcomes();
            let records = self.take_ready();
            if !records.is_empty() {
                // Prefetch before handing the records over.
                self.send_fetches();
                return Ok(records);
            }
            if let Some(e) = self.errors.pop_front() {
                self.send_fetches();
                return Err(e);
            }
            self.refresh_routes().await;
            self.resolve_positions().await;
            if !self.errors.is_empty() {
                continue;
            }
            self.send_fetches();
            let now = Instant::now();
            let wake = self.partitions.iter().filter_map(|p| p.wakes_at(now)).min();
            let outcome = match wake {
                Some(at) => tokio::select! {
                    o = self.done_rx.recv() => o,
                    _ = tokio::time::sleep_until(at) => None,
                },
                // Nothing in flight and nothing to retry: wait for the caller's timeout.
                None => self.done_rx.recv().await,
            };
            if let Some(o) = outcome {
                self.apply(o);
            }
        }
    }

    /// The records as a stream, one at a time; errors are yielded in line and the stream goes
    /// on after them. Dropping the stream loses nothing: the next call continues.
    pub fn records(&mut self) -> Records<'_> {
        Records {
            consumer: Some(self),
            pending: None,
        }
    }

    fn bump_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn slot(&self, topic: &str, partition: i32) -> Result<usize, Error> {
        self.index
            .get(topic)
            .and_then(|m| m.get(&partition))
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("{topic}-{partition} is not assigned")))
    }

    /// Drops the stream's not-yet-yielded records of partition `i`.
    fn drop_current(&mut self, i: usize) {
        let st = &self.partitions[i];
        if self
            .current
            .as_slice()
            .iter()
            .any(|r| r.partition == st.partition && r.topic == st.topic)
        {
            let keep: Vec<ConsumerRecord> = self
                .current
                .by_ref()
                .filter(|r| !(r.partition == st.partition && r.topic == st.topic))
                .collect();
            self.current = keep.into_iter();
        }
    }

    fn drain_outcomes(&mut self) {
        while let Ok(o) = self.done_rx.try_recv() {
            self.apply(o);
        }
    }

    /// Hands out every buffered chunk, moving positions past it.
    fn take_ready(&mut self) -> Vec<ConsumerRecord> {
        let mut out: Vec<ConsumerRecord> = Vec::new();
        while let Some(i) = self.ready.pop_front() {
            let st = &mut self.partitions[i];
            let Some(chunk) = st.buffered.take() else {
                continue;
            };
            st.position = Some(chunk.next_position);
            if let Some(e) = chunk.error {
                st.parked = true;
                self.errors.push_back(e);
            }
            if out.is_empty() {
                out = chunk.records;
            } else {
                out.extend(chunk.records);
            }
        }
        out
    }

    /// Makes sure metadata knows every topic that has work (the client tracks and refreshes
    /// it from then on), so `send_fetches` can route from the snapshot without waiting.
    async fn refresh_routes(&mut self) {
        let now = Instant::now();
        let mut topics: Vec<Arc<str>> = Vec::new();
        for p in &self.partitions {
            if (p.fetchable(now) || p.resolvable(now)) && !topics.contains(&p.topic) {
                topics.push(p.topic.clone());
            }
        }
        for topic in topics {
            if let Err(e) = self.client.topic(&topic).await {
                let now = Instant::now();
                for p in self.partitions.iter_mut().filter(|p| p.topic == topic) {
                    let delay = self.client.backoff_delay(p.failures + 1);
                    p.back_off(now, delay);
                }
                if !e.is_retriable() {
                    self.errors.push_back(e);
                }
            }
        }
    }

    /// Looks up the positions of partitions waiting for a seek or reset (one ListOffsets per
    /// leader).
    async fn resolve_positions(&mut self) {
        // A timestamp after every record resolves to the end: a second round.
        for _ in 0..2 {
            let now = Instant::now();
            let due: Vec<(usize, u64, OffsetSpec)> = self
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.resolvable(now))
                .filter_map(|(i, p)| p.pending.map(|spec| (i, p.generation, spec)))
                .collect();
            if due.is_empty() {
                return;
            }
            let wanted: Vec<(Arc<str>, i32, OffsetSpec)> = due
                .iter()
                .map(|&(i, _, spec)| {
                    let p = &self.partitions[i];
                    (p.topic.clone(), p.partition, spec)
                })
                .collect();
            let answers =
                list_offsets_round(&self.client, &wanted, self.config.isolation_level).await;
            let now = Instant::now();
            let mut again = false;
            for ((i, generation, spec), answer) in due.into_iter().zip(answers) {
                let delay = self.client.backoff_delay(self.partitions[i].failures + 1);
                let st = &mut self.partitions[i];
                if st.generation != generation {
                    continue;
                }
                match answer.map(|listed| listed.offset) {
                    Ok(Some(offset)) => {
                        st.position = Some(offset);
                        st.pending = None;
                        st.succeeded();
                    }
                    Ok(None) if matches!(spec, OffsetSpec::Timestamp(_)) => {
                        // Every record is older than the timestamp: read from the end.
                        st.pending = Some(OffsetSpec::Latest);
                        again = true;
                    }
                    Ok(None) => {
                        st.back_off(now, delay);
                        self.errors.push_back(Error::Protocol(format!(
                            "ListOffsets gave no {spec:?} offset for {}-{}",
                            st.topic, st.partition
                        )));
                    }
                    Err(e) => {
                        st.back_off(now, delay);
                        if !e.is_retriable() {
                            self.errors.push_back(e);
                        }
                    }
                }
            }
            if !again {
                return;
            }
        }
    }

    /// Sends a Fetch to every broker that has fetchable partitions and none in flight. Routes
    /// from the metadata snapshot only, so it never waits (and so cannot be cancelled halfway).
    fn send_fetches(&mut self) {
        let now = Instant::now();
        let md = self.client.metadata();
        let mut by_node: HashMap<i32, Vec<FetchEntry>> = HashMap::new();
        let mut order: Vec<i32> = Vec::new();
        for i in 0..self.partitions.len() {
            if !self.partitions[i].fetchable(now) {
                continue;
            }
            let st = &self.partitions[i];
            let route = md.topics.get(&*st.topic).and_then(|t| {
                t.partition(st.partition)
                    .map(|p| (Uuid(t.topic_id), p.leader, p.leader_epoch))
            });
            let (topic_id, leader, leader_epoch) = match route {
                Some(r) if r.1 >= 0 => r,
                _ => {
                    // Unknown partition or no leader yet: refresh and look again later.
                    self.client.invalidate();
                    let delay = self.client.backoff_delay(st.failures + 1);
                    self.partitions[i].back_off(now, delay);
                    continue;
                }
            };
            if self.in_flight.contains_key(&leader) {
                continue;
            }
            let entry = FetchEntry {
                topic: st.topic.clone(),
                topic_id,
                partition: st.partition,
                fetch_offset: st.position.unwrap_or(0),
                max_bytes: wire_bytes(
                    st.fetch_bytes
                        .unwrap_or(self.config.max_partition_fetch_bytes),
                ),
                leader_epoch,
                generation: st.generation,
            };
            let list = by_node.entry(leader).or_insert_with(|| {
                order.push(leader);
                Vec::new()
            });
            // A partition whose batch did not fit goes first: KIP-74 only guarantees a whole
            // oversized batch to the first partition of a response.
            if st.fetch_bytes.is_some() {
                list.insert(0, entry);
            } else {
                list.push(entry);
            }
        }
        for node in order {
            let Some(entries) = by_node.remove(&node) else {
                continue;
            };
            self.next_fetch_id += 1;
            let fetch_id = self.next_fetch_id;
            for e in &entries {
                if let Some(&i) = self.index.get(&e.topic).and_then(|m| m.get(&e.partition)) {
                    self.partitions[i].in_flight = Some(fetch_id);
                }
            }
            let task = tokio::spawn(run_fetch(
                self.client.clone(),
                node,
                fetch_id,
                entries,
                self.params,
                self.done_tx.clone(),
            ));
            self.in_flight.insert(node, task.abort_handle());
        }
    }

    /// Applies one fetch's outcome to the partitions it covered.
    fn apply(&mut self, outcome: FetchOutcome) {
        self.in_flight.remove(&outcome.node);
        let now = Instant::now();
        let results = match outcome.result {
            Ok(results) => results,
            Err(e) => {
                for entry in &outcome.entries {
                    if let Some(i) = self.slot_of(entry, outcome.fetch_id) {
                        let delay = self.client.backoff_delay(self.partitions[i].failures + 1);
                        let st = &mut self.partitions[i];
                        st.in_flight = None;
                        st.back_off(now, delay);
                    }
                }
                if e.is_retriable() {
                    self.client.invalidate();
                } else {
                    self.errors.push_back(e);
                }
                return;
            }
        };
        for (entry, fetched) in outcome.entries.iter().zip(results) {
            let Some(i) = self.slot_of(entry, outcome.fetch_id) else {
                continue;
            };
            let delay = self.client.backoff_delay(self.partitions[i].failures + 1);
            let st = &mut self.partitions[i];
            st.in_flight = None;
            if st.generation != entry.generation {
                continue; // seeked or paused since: this answer is for the old position
            }
            let Some(fetched) = fetched else {
                continue; // left out of the response: simply fetched again
            };
            st.update_watermarks(&fetched);
            let asked = st
                .fetch_bytes
                .unwrap_or(self.config.max_partition_fetch_bytes);
            let decision = decide(
                &entry.topic,
                entry.partition,
                entry.fetch_offset,
                asked,
                self.batch_limit,
                self.config.auto_offset_reset,
                fetched,
            );
            match decision {
                Decision::Deliver(chunk) => {
                    st.buffered = Some(chunk);
                    st.fetch_bytes = None;
                    st.succeeded();
                    self.ready.push_back(i);
                }
                Decision::Advance(next) => {
                    if st.position.is_some_and(|p| p < next) {
                        st.position = Some(next);
                    }
                    st.succeeded();
                }
                Decision::Reset(offset) => {
                    st.position = None;
                    st.pending = Some(offset);
                }
                Decision::Park(e) => {
                    st.parked = true;
                    self.errors.push_back(e);
                }
                Decision::Retry { refresh, error } => {
                    st.back_off(now, delay);
                    if refresh {
                        self.client.invalidate();
                    }
                    if let Some(e) = error {
                        self.errors.push_back(e);
                    }
                }
                Decision::Grow(bytes) => st.fetch_bytes = Some(bytes),
            }
        }
    }

    /// The partition an entry of fetch `fetch_id` belongs to, if it is still waiting for it.
    fn slot_of(&self, entry: &FetchEntry, fetch_id: u64) -> Option<usize> {
        let i = *self.index.get(&entry.topic)?.get(&entry.partition)?;
        (self.partitions[i].in_flight == Some(fetch_id)).then_some(i)
    }
}

fn check_offset(topic: &str, partition: i32, offset: Offset) -> Result<(), Error> {
    match offset {
        Offset::At(n) if n < 0 => Err(Error::InvalidArgument(format!(
            "{topic}-{partition}: offset {n} is negative; use Offset::Earliest or Offset::Latest"
        ))),
        _ => Ok(()),
    }
}

type PollFuture<'a> = Pin<
    Box<
        dyn Future<
                Output = (
                    Result<Vec<ConsumerRecord>, Error>,
                    &'a mut PartitionConsumer,
                ),
            > + Send
            + 'a,
    >,
>;

/// The consumer's records as a [`Stream`], from [`PartitionConsumer::records`]. Yields
/// buffered records without allocating; fetches a new batch only when they run out.
pub struct Records<'a> {
    consumer: Option<&'a mut PartitionConsumer>,
    pending: Option<PollFuture<'a>>,
}

impl std::fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("polling", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl Records<'_> {
    /// The next record or error, for callers that do not use a `StreamExt`. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord, Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Records<'_> {
    type Item = Result<ConsumerRecord, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(consumer) = this.consumer.as_mut() {
                if let Some(r) = consumer.current.next() {
                    return Poll::Ready(Some(Ok(r)));
                }
                let Some(consumer) = this.consumer.take() else {
                    continue;
                };
                this.pending = Some(Box::pin(async move {
                    let batch = consumer.poll_batch().await;
                    (batch, consumer)
                }));
            }
            let Some(fut) = this.pending.as_mut() else {
                // Neither a consumer nor a poll in progress cannot happen; end the stream
                // rather than spin.
                return Poll::Ready(None);
            };
            let (batch, consumer) = match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => done,
            };
            this.pending = None;
            match batch {
                Ok(records) => {
                    consumer.current = records.into_iter();
                    this.consumer = Some(consumer);
                }
                Err(e) => {
                    this.consumer = Some(consumer);
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}
