//! The producer against an in-process broker, in virtual time (`start_paused`): linger,
//! batch rollover, back-pressure and `max_block`, delivery timeouts, retries and ordering,
//! sequence resets. The fake broker checks idempotent sequences the way Kafka and tansu do
//! (duplicates dropped, gaps refused, unknown producers refused), keeps a log per partition,
//! and can be told to fail the next requests in chosen ways.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_proto::ErrorCode;
use kafka_proto::messages::ProduceRequest;
use kafka_proto::messages::ProduceResponse;
use kafka_proto::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_proto::records::{DecodeOptions, decode_records};
use tokio::sync::watch;
use tokio::time::Instant;

use super::accumulator::RequestOutcome;
use super::cluster::{BoxFuture, Cluster};
use super::*;
use crate::client::{PartitionMetadata, TopicMetadata};
use crate::error::{ConnectionFailure, Error, RequestError};

/// What the fake broker does to the next request it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answers every partition with this code and writes nothing.
    Code(ErrorCode),
    /// Writes the request, then the answer is lost with the connection.
    LoseAnswer,
    /// The connection fails before the request reaches the broker.
    Refuse,
    /// Forgets every producer's sequence state first (as retention would).
    ForgetProducers,
}

#[derive(Debug, Clone)]
struct SeenBatch {
    topic: String,
    partition: i32,
    records: usize,
    wire_len: usize,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
}

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    /// When the answer (or the failure) reached the producer.
    answered: Option<Instant>,
    node: i32,
    /// The broker refused or failed this request on purpose.
    faulted: bool,
    batches: Vec<SeenBatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    key: Option<Bytes>,
    value: Option<Bytes>,
}

#[derive(Default)]
struct Broker {
    logs: HashMap<(String, i32), Vec<Stored>>,
    /// (topic, partition, producer id) -> (epoch, next expected sequence).
    producers: HashMap<(String, i32, i64), (i16, i32)>,
    next_pid: i64,
    init_calls: usize,
    faults: VecDeque<Fault>,
    seen: Vec<Seen>,
    in_flight: HashMap<i32, usize>,
    max_in_flight: usize,
    latency: Duration,
    /// Faulted requests are answered after 1 ms instead of `latency`.
    fast_faults: bool,
    /// Batches larger than this are refused with MESSAGE_TOO_LARGE.
    max_batch_bytes: Option<usize>,
    invalidations: usize,
}

impl Broker {
    fn handle(&mut self, node: i32, req: &ProduceRequest) -> RequestOutcome {
        let fault = self.faults.pop_front();
        if fault == Some(Fault::Refuse) {
            return RequestOutcome::Failed(ProduceError::Request(RequestError::ConnectionClosed {
                addr: "fake".into(),
                cause: Arc::new(ConnectionFailure::Eof),
            }));
        }
        if fault == Some(Fault::ForgetProducers) {
            self.producers.clear();
        }
        let mut resp = ProduceResponse::default();
        let mut seen = Vec::new();
        for t in &req.topic_data {
            let mut tr = TopicProduceResponse::default();
            tr.name = t.name.clone();
            for p in &t.partition_data {
                let records = p.records.clone().unwrap_or_default();
                let decoded = decode_records(records.clone(), &DecodeOptions::default()).unwrap();
                let batch = &decoded.batches[0];
                seen.push(SeenBatch {
                    topic: t.name.clone(),
                    partition: p.index,
                    records: batch.records.len(),
                    wire_len: records.len(),
                    producer_id: batch.producer_id,
                    epoch: batch.producer_epoch,
                    base_sequence: batch.base_sequence,
                });
                let mut pr = PartitionProduceResponse::default();
                pr.index = p.index;
                pr.base_offset = -1;
                pr.log_append_time_ms = -1;
                let code = match fault {
                    Some(Fault::Code(code)) => code,
                    _ if self.max_batch_bytes.is_some_and(|max| records.len() > max) => {
                        ErrorCode::MessageTooLarge
                    }
                    _ => self.check_sequence(&t.name, p.index, batch),
                };
                if code == ErrorCode::None {
                    let log = self.logs.entry((t.name.clone(), p.index)).or_default();
                    pr.base_offset = log.len() as i64;
                    log.extend(batch.records.iter().map(|r| Stored {
                        key: r.key.clone(),
                        value: r.value.clone(),
                    }));
                }
                pr.error_code = code.code();
                tr.partition_responses.push(pr);
            }
            resp.responses.push(tr);
        }
        self.seen.push(Seen {
            at: Instant::now(),
            answered: None,
            node,
            faulted: fault.is_some(),
            batches: seen,
        });
        if fault == Some(Fault::LoseAnswer) {
            return RequestOutcome::Failed(ProduceError::Request(RequestError::ConnectionClosed {
                addr: "fake".into(),
                cause: Arc::new(ConnectionFailure::Eof),
            }));
        }
        RequestOutcome::Answered(resp)
    }

    /// Kafka's (and tansu's) idempotence check for one batch; updates the state on success.
    fn check_sequence(
        &mut self,
        topic: &str,
        partition: i32,
        batch: &kafka_proto::records::RecordBatch,
    ) -> ErrorCode {
        if batch.producer_id < 0 {
            return ErrorCode::None;
        }
        let key = (topic.to_owned(), partition, batch.producer_id);
        let count = batch.records.len() as i32;
        match self.producers.get(&key).copied() {
            None if batch.base_sequence != 0 => ErrorCode::UnknownProducerId,
            Some((epoch, _)) if batch.producer_epoch < epoch => ErrorCode::ProducerFenced,
            Some((epoch, next)) if batch.producer_epoch == epoch && batch.base_sequence < next => {
                ErrorCode::DuplicateSequenceNumber
            }
            Some((epoch, next)) if batch.producer_epoch == epoch && batch.base_sequence > next => {
                ErrorCode::OutOfOrderSequenceNumber
            }
            _ => {
                self.producers
                    .insert(key, (batch.producer_epoch, batch.base_sequence + count));
                ErrorCode::None
            }
        }
    }
}

struct FakeCluster {
    topics: HashMap<String, Arc<TopicMetadata>>,
    broker: Arc<Mutex<Broker>>,
    /// Answers are held while this is false.
    open: watch::Sender<bool>,
}

impl FakeCluster {
    /// Topics with their partition counts, every partition led by node 1 (node 2 for odd
    /// partitions when `two_nodes`).
    fn new(topics: &[(&str, i32)], two_nodes: bool) -> Arc<FakeCluster> {
        let topics = topics
            .iter()
            .map(|(name, count)| {
                let partitions = (0..*count)
                    .map(|p| PartitionMetadata {
                        partition: p,
                        leader: if two_nodes && p % 2 == 1 { 2 } else { 1 },
                        leader_epoch: 0,
                        error: ErrorCode::None,
                        replicas: vec![1],
                        isr: vec![1],
                    })
                    .collect();
                let md = TopicMetadata {
                    name: name.to_string(),
                    topic_id: [0; 16],
                    error: ErrorCode::None,
                    is_internal: false,
                    partitions,
                };
                (name.to_string(), Arc::new(md))
            })
            .collect();
        Arc::new(FakeCluster {
            topics,
            broker: Arc::new(Mutex::new(Broker {
                next_pid: 1000,
                latency: Duration::from_millis(1),
                ..Broker::default()
            })),
            open: watch::channel(true).0,
        })
    }

    fn broker(&self) -> std::sync::MutexGuard<'_, Broker> {
        self.broker.lock().unwrap()
    }

    fn fault(&self, faults: &[Fault]) {
        self.broker().faults.extend(faults.iter().copied());
    }

    fn seen(&self) -> Vec<Seen> {
        self.broker().seen.clone()
    }

    fn log(&self, topic: &str, partition: i32) -> Vec<Stored> {
        self.broker()
            .logs
            .get(&(topic.to_owned(), partition))
            .cloned()
            .unwrap_or_default()
    }

    fn hold_answers(&self, hold: bool) {
        self.open.send_replace(!hold);
    }
}

impl Cluster for FakeCluster {
    fn topic(&self, name: &str) -> BoxFuture<Result<Arc<TopicMetadata>, Error>> {
        let found = self.topics.get(name).cloned();
        let name = name.to_owned();
        Box::pin(async move { found.ok_or(Error::UnknownTopic(name)) })
    }

    fn cached_topic(&self, name: &str) -> Option<Arc<TopicMetadata>> {
        self.topics.get(name).cloned()
    }

    fn invalidate(&self) {
        self.broker().invalidations += 1;
    }

    fn produce(
        &self,
        node: i32,
        request: ProduceRequest,
        acks: Acks,
        timeout: Duration,
    ) -> BoxFuture<RequestOutcome> {
        let broker = self.broker.clone();
        let mut open = self.open.subscribe();
        let (outcome, latency, index) = {
            let mut b = broker.lock().unwrap();
            let n = b.in_flight.entry(node).or_default();
            *n += 1;
            let n = *n;
            b.max_in_flight = b.max_in_flight.max(n);
            let outcome = b.handle(node, &request);
            let index = b.seen.len() - 1;
            let latency = if b.fast_faults && b.seen[index].faulted {
                Duration::from_millis(1)
            } else {
                b.latency
            };
            (outcome, latency, index)
        };
        Box::pin(async move {
            let answer = async {
                let _ = open.wait_for(|open| *open).await;
                tokio::time::sleep(latency).await;
            };
            let timed_out = tokio::time::timeout(timeout, answer).await.is_err();
            let mut b = broker.lock().unwrap();
            *b.in_flight.entry(node).or_default() -= 1;
            b.seen[index].answered = Some(Instant::now());
            drop(b);
            match outcome {
                _ if timed_out => {
                    RequestOutcome::Failed(ProduceError::Request(RequestError::Timeout(timeout)))
                }
                RequestOutcome::Answered(_) if acks == Acks::None => RequestOutcome::Queued,
                other => other,
            }
        })
    }

    fn init_producer_id(&self) -> BoxFuture<Result<(i64, i16), ProduceError>> {
        let mut b = self.broker();
        b.init_calls += 1;
        b.next_pid += 1;
        let pid = b.next_pid;
        Box::pin(async move { Ok((pid, 0)) })
    }
}

async fn producer(cluster: &Arc<FakeCluster>, config: ProducerConfig) -> Producer {
    Producer::with_cluster(cluster.clone(), config)
        .await
        .unwrap()
}

fn record(topic: &str, key: &str, value: &str) -> Record {
    Record::new(topic)
        .key(key.to_owned())
        .value(value.to_owned())
}

fn values(log: &[Stored]) -> Vec<String> {
    log.iter()
        .map(|s| String::from_utf8(s.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_lone_record_waits_exactly_linger_then_goes() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    let p = producer(
        &fake,
        ProducerConfig::default().linger(Duration::from_millis(20)),
    )
    .await;
    let start = Instant::now();
    let delivery = p.send(record("t", "k", "v")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(19)).await;
    assert!(fake.seen().is_empty(), "sent before linger expired");
    let md = delivery.await.unwrap();
    assert_eq!(md.partition, 0);
    assert_eq!(md.offset, Some(0));
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].at - start, Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn full_batches_go_at_once_and_roll_over_at_batch_size() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    let config = ProducerConfig::default()
        .linger(Duration::from_secs(10))
        .batch_size(4096)
        .max_request_size(4096);
    let p = producer(&fake, config).await;
    let start = Instant::now();
    let mut last = None;
    for i in 0..200 {
        last = Some(
            p.send(record("t", "key", &format!("{i:0>100}")))
                .await
                .unwrap(),
        );
    }
    // Every full batch left without waiting for linger; the last (partial) one is still here.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = fake.seen();
    assert!(seen.len() >= 5, "{} requests", seen.len());
    for s in &seen {
        assert!(s.at - start < Duration::from_millis(100));
        for b in &s.batches {
            assert!(b.wire_len <= 4096, "batch of {} bytes", b.wire_len);
            assert!(
                b.wire_len > 4096 - 200,
                "batch closed early at {} bytes",
                b.wire_len
            );
        }
    }
    let sent: usize = seen
        .iter()
        .flat_map(|s| &s.batches)
        .map(|b| b.records)
        .sum();
    assert!(sent < 200);
    p.flush().await.unwrap();
    assert_eq!(last.unwrap().await.unwrap().offset, Some(199));
    let log = fake.log("t", 0);
    assert_eq!(
        values(&log),
        (0..200).map(|i| format!("{i:0>100}")).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_blocks_send_until_memory_frees_or_max_block_passes() {
    let fake = FakeCluster::new(&[("t", 4)], false);
    fake.hold_answers(true);
    let config = ProducerConfig::default()
        .batch_size(16 * 1024)
        .max_request_size(16 * 1024)
        .buffer_memory(64 * 1024)
        .max_block(Duration::from_secs(3));
    let p = producer(&fake, config).await;
    let value = "x".repeat(1000);
    let mut accepted = Vec::new();
    let blocked = loop {
        let send = p.send(
            Record::new("t")
                .partition(accepted.len() as i32 % 4)
                .value(value.clone()),
        );
        match tokio::time::timeout(Duration::from_millis(1), send).await {
            Ok(r) => accepted.push(r.unwrap()),
            Err(_) => break accepted.len(),
        }
        assert!(accepted.len() < 1000, "send never blocked");
    };
    // About buffer_memory worth of records got in; the rest must wait.
    assert!((40..=70).contains(&blocked), "{blocked} records accepted");
    assert!(p.handle.shared.lock().memory_used() <= 64 * 1024);

    // Nothing frees memory: the send fails after max_block, not before.
    let start = Instant::now();
    let err = p
        .send(Record::new("t").value(value.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProduceError::BufferFull(d) if d == Duration::from_secs(3)),
        "{err}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(3));

    // Once answers flow, a blocked send gets through.
    let waiting = tokio::spawn({
        let p = p.clone();
        let value = value.clone();
        async move { p.send(Record::new("t").value(value)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished());
    fake.hold_answers(false);
    let last = waiting.await.unwrap().unwrap();
    p.flush().await.unwrap();
    last.await.unwrap();
    for f in accepted {
        f.await.unwrap();
    }
    assert_eq!(
        p.handle.shared.lock().memory_used(),
        0,
        "every byte is returned"
    );
}

#[tokio::test(start_paused = true)]
async fn records_fail_with_delivery_timeout_while_errors_persist() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    fake.fault(&[Fault::Code(ErrorCode::NotLeaderOrFollower); 1000]);
    let config = ProducerConfig::default().delivery_timeout(Duration::from_secs(10));
    let p = producer(&fake, config).await;
    let start = Instant::now();
    let f = p.send(record("t", "k", "v")).await.unwrap();
    let err = f.await.unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        ProduceError::DeliveryTimeout {
            attempts,
            maybe_written,
            last,
            ..
        } => {
            assert!(*attempts > 5, "{attempts} attempts");
            assert!(!maybe_written, "every attempt was refused, none unanswered");
            assert_eq!(
                last.as_ref().unwrap().code(),
                Some(ErrorCode::NotLeaderOrFollower)
            );
        }
        other => panic!("{other}"),
    }
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(12),
        "{elapsed:?}"
    );
    assert!(
        fake.broker().invalidations > 0,
        "routing errors refresh metadata"
    );
    assert!(fake.log("t", 0).is_empty());
    // The failure is also reported to whoever flushes.
    let summary = p.flush().await.unwrap_err();
    assert!(
        matches!(summary, ProduceError::Undelivered { failed: 1, .. }),
        "{summary}"
    );
    p.flush().await.unwrap();
}

/// Five batches in flight; one is refused (and told so quickly), the ones behind it then
/// fail the sequence check. The partition resends nothing until all of them are back, then
/// resends in order: the log is in order, once.
#[tokio::test(start_paused = true)]
async fn retries_keep_order_with_five_batches_in_flight() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    fake.broker().latency = Duration::from_millis(300);
    fake.broker().fast_faults = true;
    let config = ProducerConfig::default()
        .batch_size(1024)
        .max_request_size(1024)
        .linger(Duration::ZERO);
    let p = producer(&fake, config).await;
    let mut futures = Vec::new();
    for i in 0..40 {
        futures.push(
            p.send(record("t", "k", &format!("{i:0>100}")))
                .await
                .unwrap(),
        );
        if i == 12 {
            // Lands on a request while others are in flight behind it.
            fake.fault(&[Fault::Code(ErrorCode::NotEnoughReplicas)]);
        }
        tokio::task::yield_now().await;
    }
    p.flush().await.unwrap();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().offset, Some(i as i64));
    }
    assert_eq!(
        values(&fake.log("t", 0)),
        (0..40).map(|i| format!("{i:0>100}")).collect::<Vec<_>>()
    );
    let b = fake.broker();
    assert!(
        b.max_in_flight > 1 && b.max_in_flight <= 5,
        "{}",
        b.max_in_flight
    );
    drop(b);
    assert!(p.stats().retries > 0);

    // The refused batch's retry left only after every request in flight with it returned.
    let seen = fake.seen();
    let refused = seen.iter().position(|s| s.faulted).unwrap();
    let seq = seen[refused].batches[0].base_sequence;
    let retry = seen[refused + 1..]
        .iter()
        .find(|s| s.batches.iter().any(|b| b.base_sequence == seq))
        .unwrap();
    let last_answer = seen
        .iter()
        .filter(|s| s.at <= seen[refused].answered.unwrap())
        .map(|s| s.answered.unwrap())
        .max()
        .unwrap();
    assert!(
        retry.at >= last_answer,
        "retry at {:?}, an earlier request answered at {:?}",
        retry.at,
        last_answer
    );
    assert!(seen[..refused].len() + 1 < seen.len());
}

/// The answer to a written batch is lost with its connection. The retry carries the same
/// producer id, epoch and sequence, the broker recognises the duplicate, and the log holds
/// every record once.
#[tokio::test(start_paused = true)]
async fn a_lost_answer_is_retried_without_duplicates() {
    let fake = FakeCluster::new(&[("t", 2)], true);
    let p = producer(&fake, ProducerConfig::default().linger(Duration::ZERO)).await;
    fake.fault(&[Fault::LoseAnswer, Fault::Refuse, Fault::LoseAnswer]);
    let mut futures = Vec::new();
    for i in 0..100 {
        futures.push(
            p.send(Record::new("t").partition(i % 2).value(i.to_string()))
                .await
                .unwrap(),
        );
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    p.flush().await.unwrap();
    for f in futures {
        f.await.unwrap();
    }
    for partition in 0..2 {
        let want: Vec<String> = (0..100)
            .filter(|i| i % 2 == partition)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(values(&fake.log("t", partition)), want);
    }
    let seen = fake.seen();
    let first = &seen[0].batches[0];
    let retry = seen
        .iter()
        .skip(1)
        .flat_map(|s| &s.batches)
        .find(|b| b.partition == first.partition)
        .unwrap();
    assert_eq!(
        (retry.producer_id, retry.epoch, retry.base_sequence),
        (first.producer_id, first.epoch, first.base_sequence),
        "a retry keeps its sequence"
    );
    assert_eq!(fake.broker().init_calls, 1, "no new producer id was needed");
}

/// The broker forgets the producer (UNKNOWN_PRODUCER_ID). The producer obtains a new id,
/// restarts the partition's sequence at 0 and loses nothing.
#[tokio::test(start_paused = true)]
async fn unknown_producer_id_restarts_the_sequence_under_a_new_id() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    let p = producer(&fake, ProducerConfig::default().linger(Duration::ZERO)).await;
    for i in 0..10 {
        p.send_and_forget(record("t", "k", &i.to_string()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.flush().await.unwrap();
    fake.fault(&[Fault::ForgetProducers]);
    for i in 10..20 {
        p.send_and_forget(record("t", "k", &i.to_string()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.flush().await.unwrap();
    assert_eq!(
        values(&fake.log("t", 0)),
        (0..20).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(fake.broker().init_calls, 2);
    let stats = p.stats();
    assert_eq!((stats.identities, stats.sequence_resets), (2, 1));
    let seen = fake.seen();
    let last = seen.last().unwrap().batches[0].clone();
    assert_ne!(last.producer_id, seen[0].batches[0].producer_id);
}

/// A batch that may already be written must not be resent under a new producer id: it is
/// reported as uncertain, and everything after it still arrives, in order, once.
#[tokio::test(start_paused = true)]
async fn a_maybe_written_batch_is_reported_not_resent_after_a_reset() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    let p = producer(&fake, ProducerConfig::default().linger(Duration::ZERO)).await;
    let first = p.send(record("t", "k", "a")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    first.await.unwrap();
    // "b" is written but its answer is lost; its retry then meets a broker that forgot us.
    fake.fault(&[Fault::LoseAnswer, Fault::ForgetProducers]);
    let b = p.send(record("t", "k", "b")).await.unwrap();
    let err = b.await.unwrap_err();
    assert!(matches!(err, ProduceError::Uncertain { .. }), "{err}");
    assert!(err.maybe_written());
    let c = p.send(record("t", "k", "c")).await.unwrap();
    c.await.unwrap();
    assert_eq!(values(&fake.log("t", 0)), ["a", "b", "c"]);
    assert!(matches!(
        p.flush().await,
        Err(ProduceError::Undelivered { failed: 1, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn without_idempotence_retries_allow_one_request_in_flight() {
    let fake = FakeCluster::new(&[("t", 8)], false);
    fake.broker().latency = Duration::from_millis(10);
    let config = ProducerConfig::default()
        .idempotence(false)
        .acks(Acks::Leader)
        .linger(Duration::ZERO);
    let p = producer(&fake, config).await;
    fake.fault(&[Fault::Code(ErrorCode::NotLeaderOrFollower)]);
    for i in 0..200 {
        p.send_and_forget(Record::new("t").partition(i % 8).value(i.to_string()))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    p.close().await.unwrap();
    assert_eq!(fake.broker().max_in_flight, 1);
    assert_eq!(fake.broker().init_calls, 0);
    for partition in 0..8 {
        let want: Vec<String> = (0..200)
            .filter(|i| i % 8 == partition)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(values(&fake.log("t", partition)), want);
    }
}

#[tokio::test(start_paused = true)]
async fn fatal_broker_errors_fail_only_their_batch_with_the_code() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    let p = producer(&fake, ProducerConfig::default().linger(Duration::ZERO)).await;
    fake.fault(&[Fault::Code(ErrorCode::MessageTooLarge)]);
    let bad = p.send(record("t", "k", "too big")).await.unwrap();
    let err = bad.await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge));
    assert!(
        matches!(err, ProduceError::Broker { partition: 0, .. }),
        "{err}"
    );
    // The partition's sequence restarts past the gap; later records are unaffected.
    let good = p.send(record("t", "k", "fine")).await.unwrap();
    assert_eq!(good.await.unwrap().offset, Some(0));
    assert_eq!(values(&fake.log("t", 0)), ["fine"]);
}

#[tokio::test(start_paused = true)]
async fn refused_records_are_errors_at_send() {
    let fake = FakeCluster::new(&[("t", 3)], false);
    let p = producer(&fake, ProducerConfig::default()).await;
    let huge = Record::new("t").value(vec![0u8; 1024 * 1024]);
    assert!(matches!(
        p.send(huge).await,
        Err(ProduceError::RecordTooLarge { max: 1048576, .. })
    ));
    let err = p.send(Record::new("t").partition(3)).await.unwrap_err();
    assert!(matches!(err, ProduceError::Partition { .. }), "{err}");
    let err = p.send(Record::new("missing")).await.unwrap_err();
    assert!(
        matches!(&err, ProduceError::Client(e) if matches!(**e, Error::UnknownTopic(_))),
        "{err}"
    );
    p.close().await.unwrap();
    assert!(matches!(
        p.send(Record::new("t")).await,
        Err(ProduceError::Closed)
    ));
}

/// Keys land where Java's murmur2 puts them; unkeyed records stick to one partition until its
/// batch is sent.
#[tokio::test(start_paused = true)]
async fn keyed_records_follow_murmur2_and_unkeyed_ones_stick() {
    let fake = FakeCluster::new(&[("t", 6)], false);
    let p = producer(&fake, ProducerConfig::default()).await;
    for i in 0..50 {
        let key = format!("key-{i}");
        let f = p.send(record("t", &key, "v")).await.unwrap();
        assert_eq!(
            f.partition(),
            partitioner::partition_for_key(key.as_bytes(), 6).unwrap()
        );
    }
    let first = p
        .send(Record::new("t").value("u"))
        .await
        .unwrap()
        .partition();
    for _ in 0..20 {
        let f = p.send(Record::new("t").value("u")).await.unwrap();
        assert_eq!(
            f.partition(),
            first,
            "unkeyed records stick while the batch is open"
        );
    }
    p.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_request_per_broker_carries_many_partitions() {
    let fake = FakeCluster::new(&[("a", 4), ("b", 4)], true);
    let p = producer(
        &fake,
        ProducerConfig::default().linger(Duration::from_millis(5)),
    )
    .await;
    for i in 0..4 {
        for topic in ["a", "b"] {
            p.send_and_forget(Record::new(topic).partition(i).value("v"))
                .await
                .unwrap();
        }
    }
    p.flush().await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "one request per node: {seen:?}");
    for s in &seen {
        assert_eq!(s.batches.len(), 4);
        assert!(
            s.batches
                .iter()
                .all(|b| (b.partition % 2 == 1) == (s.node == 2))
        );
        let topics: std::collections::BTreeSet<_> =
            s.batches.iter().map(|b| b.topic.as_str()).collect();
        assert_eq!(topics.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }
}

#[tokio::test(start_paused = true)]
async fn acks_zero_completes_without_offsets() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    let config = ProducerConfig::default()
        .idempotence(false)
        .acks(Acks::None)
        .retries(0);
    let p = producer(&fake, config).await;
    let f = p.send(record("t", "k", "v")).await.unwrap();
    let md = f.await.unwrap();
    assert_eq!(md.offset, None);
    assert_eq!(values(&fake.log("t", 0)), ["v"]);
    let seen = fake.seen();
    assert_eq!(
        seen[0].batches[0].producer_id, -1,
        "no idempotence without acks=all"
    );
}

/// Dropping every handle still delivers what was accepted.
#[tokio::test(start_paused = true)]
async fn dropping_the_producer_still_delivers_accepted_records() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    let p = producer(
        &fake,
        ProducerConfig::default().linger(Duration::from_millis(50)),
    )
    .await;
    let f = p.send(record("t", "k", "v")).await.unwrap();
    drop(p);
    assert_eq!(f.await.unwrap().offset, Some(0));
}

/// Sequences handed out per partition are consecutive, and a batch's retry repeats its own.
#[tokio::test(start_paused = true)]
async fn sequences_are_consecutive_per_partition() {
    let fake = FakeCluster::new(&[("t", 2)], false);
    let config = ProducerConfig::default()
        .batch_size(1024)
        .max_request_size(1024)
        .linger(Duration::ZERO);
    let p = producer(&fake, config).await;
    for i in 0..60 {
        p.send_and_forget(Record::new("t").partition(i % 2).value(format!("{i:0>50}")))
            .await
            .unwrap();
    }
    p.flush().await.unwrap();
    let mut next = [0i32; 2];
    for s in fake.seen() {
        for b in &s.batches {
            let n = &mut next[b.partition as usize];
            assert_eq!(b.base_sequence, *n);
            *n += b.records as i32;
        }
    }
    assert_eq!(next, [30, 30]);
}

/// The broker wrote the batch but its answer never came within `request_timeout`. The retry
/// repeats the sequence, the broker calls it a duplicate, and the record is delivered once,
/// without an offset (the broker did not repeat it).
#[tokio::test(start_paused = true)]
async fn a_timed_out_request_is_retried_and_recognised_as_a_duplicate() {
    let fake = FakeCluster::new(&[("t", 1)], false);
    let config = ProducerConfig::default()
        .linger(Duration::ZERO)
        .request_timeout(Duration::from_secs(2));
    let p = producer(&fake, config).await;
    fake.hold_answers(true);
    let start = Instant::now();
    let f = p.send(record("t", "k", "v")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    fake.hold_answers(false);
    let md = f.await.unwrap();
    assert_eq!(md.offset, None, "a duplicate's offset is unknown");
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert_eq!(values(&fake.log("t", 0)), ["v"]);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].batches[0].base_sequence,
        seen[1].batches[0].base_sequence
    );
    assert_eq!(p.stats().retries, 1);
}

/// A broker that refuses large batches: the producer splits them until they fit, the parts
/// keep the sequence range and the order, and every record learns its own offset. A single
/// record that is too large cannot be split and fails with the broker's code.
#[tokio::test(start_paused = true)]
async fn batches_the_broker_finds_too_large_are_split_until_they_fit() {
    let fake = FakeCluster::new(&[("t", 2)], false);
    fake.broker().max_batch_bytes = Some(3000);
    let config = ProducerConfig::default()
        .batch_size(32 * 1024)
        .linger(Duration::from_millis(50))
        .compression(kafka_proto::compression::Compression::Lz4);
    let p = producer(&fake, config).await;
    // Random bytes, so compression cannot bring the batches under the limit.
    let mut rng = partitioner::SplitMix64::new(5);
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| partitioner::RandomSource::next_u64(&mut rng) as u8)
            .collect()
    };
    let mut futures = Vec::new();
    for i in 0..200 {
        let record = Record::new("t")
            .partition(0)
            .key(i.to_string())
            .value(noise(100));
        futures.push(p.send(record).await.unwrap());
    }
    let noise = noise(5000);
    let big = p
        .send(Record::new("t").partition(1).value(noise))
        .await
        .unwrap();
    let summary = p.flush().await.unwrap_err();
    assert!(
        matches!(summary, ProduceError::Undelivered { failed: 1, .. }),
        "{summary}"
    );
    assert_eq!(
        big.await.unwrap_err().code(),
        Some(ErrorCode::MessageTooLarge)
    );
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().offset, Some(i as i64));
    }
    let log = fake.log("t", 0);
    let keys: Vec<String> = log
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(keys, (0..200).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(p.stats().splits >= 4, "{:?}", p.stats());
    // The accepted parts hold every record exactly once between them.
    let accepted: Vec<SeenBatch> = fake
        .seen()
        .into_iter()
        .flat_map(|s| s.batches)
        .filter(|b| b.partition == 0 && b.wire_len <= 3000)
        .collect();
    assert!(accepted.len() >= 8);
    assert_eq!(accepted.iter().map(|b| b.records).sum::<usize>(), 200);
    assert!(fake.log("t", 1).is_empty());
}

/// Producers are shared between tasks and their futures are spawned: all must be `Send`.
#[test]
fn handles_and_futures_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Producer>();
    send_sync::<DeliveryFuture>();
    send_sync::<ProduceError>();
    let check = |p: Producer| {
        let sending = async move {
            let delivery = p.send(Record::new("t")).await?;
            p.send_and_forget(Record::new("t")).await?;
            p.flush().await?;
            p.close().await?;
            delivery.await
        };
        send(&sending);
    };
    let _ = check;
}
