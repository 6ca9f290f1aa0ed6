//! The producer: records in, batches per partition, one Produce request per broker out.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use bus::producer::{Producer, ProducerConfig, Record};
//! use bus::{Client, ClientConfig};
//!
//! let client = Client::connect(ClientConfig::new(["localhost:9092"])).await?;
//! let producer = Producer::new(client, ProducerConfig::default()).await?;
//! let topic: Arc<str> = "orders".into();
//! // Await the delivery future for the offset...
//! let md = producer.send(Record::new(topic.clone()).key("k").value("v")).await?.await?;
//! println!("written at {}-{:?}", md.partition, md.offset);
//! // ...or drop it (fire and forget) and learn about failures from flush or close.
//! for i in 0..1000u32 {
//!     let _ = producer.send(Record::new(topic.clone()).value(i.to_string())).await?;
//! }
//! producer.close().await?;
//! # Ok(()) }
//! ```
//!
//! # How a record travels
//!
//! `send` picks the partition (an explicit one, `murmur2(key)` for a key, KIP-480 sticky for
//! neither), then, under one short lock, encodes the record straight into that partition's
//! open batch: no per-record allocation, channel message or copy beyond that one. A batch
//! is ready when it is full (`batch_size`), when it has lingered (`linger`), or at once while
//! something waits on it (a `flush`, a `close`, a `send` short of memory). The sender task
//! takes ready batches, at most one per partition per request, and sends one Produce
//! request per broker, up to `max_in_flight` per broker; compression and the CRC happen there,
//! outside the lock. The answer completes each batch's shared [`DeliveryFuture`] state.
//!
//! # Guarantees
//!
//! - **Back-pressure.** Buffers count against `buffer_memory` for as long as a batch lives;
//!   when it is full, `send` waits (first come, first served) and fails with
//!   [`ProduceError::BufferFull`] after `max_block`.
//! - **Every accepted record gets an answer**: its delivery future resolves, and failures
//!   are also summed up by the next [`Producer::flush`] or [`Producer::close`], so
//!   fire-and-forget callers hear about them too. Nothing accepted is dropped silently.
//! - **Order per partition** holds across retries: a partition sends nothing while a retry is
//!   pending and resends in order. With idempotence (the default) up to five batches per
//!   partition are in flight and the broker's sequence check keeps order and drops
//!   duplicates; without it, retries force one request in flight per broker.
//! - **Idempotence** (KIP-98/KIP-360): see `sequence.rs` for when sequences restart and why a
//!   batch whose earlier attempt went unanswered is reported as uncertain rather than resent
//!   under a new producer id.
//! - **Timeouts**: a record fails with [`ProduceError::DeliveryTimeout`] once
//!   `delivery_timeout` has passed since it was accepted (an in-flight attempt is allowed to
//!   finish first, bounded by `request_timeout`).

mod accumulator;
mod cluster;
mod config;
mod delivery;
mod error;
mod record;
mod sender;
mod sequence;

#[cfg(test)]
mod tests;

pub use accumulator::ProducerStats;
pub use config::{Acks, MAX_IDEMPOTENT_IN_FLIGHT, ProducerConfig};
pub use delivery::DeliveryFuture;
pub use error::ProduceError;
pub use record::{Header, Record, RecordMetadata};

use std::sync::{Arc, Mutex};

use kafka_proto::records::V2_HEADER_SIZE;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::accumulator::Blocked;
use self::cluster::Cluster;
use self::sender::Shared;
use crate::client::Client;

/// An asynchronous Kafka producer, cheap to clone; clones share batches and the sender task.
/// When the last clone is dropped the producer stops taking records but still delivers what
/// it accepted; call [`close`](Producer::close) to wait for that and hear about failures.
#[derive(Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.handle.shared.config)
            .finish_non_exhaustive()
    }
}

struct Handle {
    shared: Arc<Shared>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().close();
        self.shared.wake.notify_one();
    }
}

impl Producer {
    /// Validates `config`, obtains a producer id when idempotent (so a broker that refuses
    /// one fails here, not on the first record), and starts the sender task.
    pub async fn new(client: Client, config: ProducerConfig) -> Result<Producer, ProduceError> {
        Producer::with_cluster(Arc::new(client), config).await
    }

    pub(crate) async fn with_cluster(
        cluster: Arc<dyn Cluster>,
        config: ProducerConfig,
    ) -> Result<Producer, ProduceError> {
        config.validate().map_err(ProduceError::Config)?;
        let shared = Arc::new(Shared::new(cluster.clone(), config.clone()));
        if config.idempotence {
            let deadline = Instant::now() + config.max_block;
            let mut attempt = 0u32;
            loop {
                match cluster.init_producer_id().await {
                    Ok((id, epoch)) => {
                        shared.lock().set_identity(id, epoch);
                        break;
                    }
                    Err(ProduceError::Client(e)) if e.is_retriable() => {
                        attempt += 1;
                        let delay = shared.lock().retry_delay(attempt);
                        if Instant::now() + delay >= deadline {
                            return Err(ProduceError::Client(e));
                        }
                        tokio::time::sleep(delay).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let task = tokio::spawn(sender::run(shared.clone()));
        Ok(Producer {
            handle: Arc::new(Handle {
                shared,
                sender: Mutex::new(Some(task)),
            }),
        })
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.handle.shared.config
    }

    /// Counters since the producer started.
    pub fn stats(&self) -> ProducerStats {
        self.handle.shared.lock().stats()
    }

    /// Accepts a record and returns the future of its delivery.
    ///
    /// Returns at once unless the producer must first learn the topic's metadata or wait for
    /// buffer memory; either wait is bounded by `max_block`. Refused records (too large, a
    /// partition the topic lacks, a closed producer, the wait expired) are errors here and
    /// were not accepted; accepted records always get an answer through the future, and a
    /// failure also shows in the next `flush` or `close`. Dropping this call's future before
    /// it returns does not accept the record.
    pub async fn send(&self, record: Record) -> Result<DeliveryFuture, ProduceError> {
        let future = self.enqueue(record, true).await?;
        // `enqueue` with `want_future` always yields one; the fallback keeps this panic-free.
        future.ok_or(ProduceError::Closed)
    }

    /// The fire-and-forget path: accepts a record like [`send`](Self::send) but returns no
    /// delivery future, which saves its bookkeeping. Failures of such records are reported
    /// only by the next [`flush`](Self::flush) or [`close`](Self::close).
    pub async fn send_and_forget(&self, record: Record) -> Result<(), ProduceError> {
        self.enqueue(record, false).await.map(drop)
    }

    async fn enqueue(
        &self,
        record: Record,
        want_future: bool,
    ) -> Result<Option<DeliveryFuture>, ProduceError> {
        let shared = &*self.handle.shared;
        let size = record.size_bound();
        let max = shared.config.max_request_size;
        if size.saturating_add(V2_HEADER_SIZE) > max {
            return Err(ProduceError::RecordTooLarge { size, max });
        }
        let timestamp = record.timestamp.unwrap_or_else(wall_clock_millis);
        let mut deadline = None;
        let mut ticket: Option<Ticket<'_>> = None;
        loop {
            let blocked = {
                let mut acc = shared.lock();
                let waiting = ticket.as_ref().map(|t| t.id);
                match acc.append(&record, timestamp, size, Instant::now, waiting, want_future)? {
                    Ok(appended) => {
                        let head_moved = ticket.take().is_some_and(|t| t.served(&mut acc));
                        drop(acc);
                        if head_moved {
                            shared.progress.notify_waiters();
                        }
                        if appended.wake_sender {
                            shared.wake.notify_one();
                        }
                        return Ok(appended.future);
                    }
                    Err(Blocked::NoMemory) => {
                        if ticket.is_none() {
                            ticket = Some(Ticket {
                                shared,
                                id: acc.enqueue_memory_waiter(),
                                armed: true,
                            });
                        }
                        // Registered before the lock is released, so a release that happens
                        // in between still wakes us. Only this slow path pays for it.
                        let mut notified = Box::pin(shared.progress.notified());
                        notified.as_mut().enable();
                        Some(notified)
                    }
                    Err(Blocked::UnknownTopic) => None,
                }
            };
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + shared.config.max_block);
            match blocked {
                Some(notified) => {
                    // Waiting senders make every batch ready, so memory frees up soonest.
                    shared.wake.notify_one();
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(ProduceError::BufferFull(shared.config.max_block));
                    }
                }
                None => {
                    let lookup = shared.cluster.topic(&record.topic);
                    match tokio::time::timeout_at(deadline, lookup).await {
                        Ok(Ok(md)) => shared.lock().set_topic(md),
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => {
                            return Err(ProduceError::MetadataTimeout {
                                topic: record.topic.clone(),
                                waited: shared.config.max_block,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Sends everything buffered now, without waiting for `linger`, and waits until every
    /// record accepted before the call is delivered or failed. Returns
    /// [`ProduceError::Undelivered`] if any record failed since the previous `flush` or
    /// `close` returned (whether or not its future was awaited).
    pub async fn flush(&self) -> Result<(), ProduceError> {
        let shared = &*self.handle.shared;
        let mark = shared.lock().begin_flush();
        let _flushing = FlushGuard { shared };
        shared.wake.notify_one();
        loop {
            let notified = shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.lock().flushed(mark) {
                break;
            }
            notified.await;
        }
        match shared.lock().take_failures() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops taking records (later sends fail with [`ProduceError::Closed`]), delivers
    /// everything accepted, and stops the sender task. The result is that of a final
    /// [`flush`](Self::flush). Other clones are closed too.
    pub async fn close(&self) -> Result<(), ProduceError> {
        self.handle.shared.lock().close();
        self.handle.shared.wake.notify_one();
        let result = self.flush().await;
        let task = self
            .handle
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        result
    }
}

/// A `send`'s place in the queue for buffer memory; leaving the queue (served, timed out,
/// or the `send` dropped) lets the next waiter in.
struct Ticket<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Ticket<'_> {
    /// The waiter got its memory. Returns whether others should look again.
    fn served(mut self, acc: &mut accumulator::Accumulator) -> bool {
        self.armed = false;
        acc.remove_memory_waiter(self.id)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.armed && self.shared.lock().remove_memory_waiter(self.id) {
            self.shared.progress.notify_waiters();
        }
    }
}

struct FlushGuard<'a> {
    shared: &'a Shared,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().end_flush();
    }
}

fn wall_clock_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl From<ProduceError> for crate::error::Error {
    fn from(e: ProduceError) -> Self {
        crate::error::Error::Produce(Box::new(e))
    }
}
