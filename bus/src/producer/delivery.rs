//! How a record's outcome reaches its sender without a channel per record.
//!
//! Every batch has one shared [`Completion`]; a record's [`DeliveryFuture`] is that `Arc` plus
//! the record's index in the batch. Fire-and-forget callers drop the future, which costs one
//! reference count, and never allocate per record. The batch is completed exactly once, with
//! the base offset or the error, and every waiting future derives its own answer from it.
//!
//! A batch the broker finds too large is split and its halves are sent separately, each
//! with its own base offset. The completion then holds one segment per part, keyed by the
//! index of the part's first record; every record still finds its outcome by its index.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::error::ProduceError;
use super::record::RecordMetadata;

/// What a batch ended with, shared by its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchDone {
    pub base_offset: Option<i64>,
    /// The broker's append time, on LogAppendTime topics.
    pub log_append_time: Option<i64>,
}

/// The outcome of the records from index `start` up to the next segment's start.
struct Segment {
    start: u32,
    outcome: Option<Result<BatchDone, ProduceError>>,
}

struct State {
    /// Sorted by `start`; the first starts at 0. One segment unless the batch was split.
    segments: Vec<Segment>,
    wakers: Vec<Waker>,
}

impl State {
    fn segment(&mut self, index: u32) -> &mut Segment {
        let at = self.segments.partition_point(|s| s.start <= index);
        &mut self.segments[at.saturating_sub(1)]
    }
}

/// The outcome of one batch, completed once, read by any number of record futures.
pub(crate) struct Completion {
    partition: i32,
    state: Mutex<State>,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("partition", &self.partition)
            .field("done", &self.is_done())
            .finish()
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Completion {
    pub fn new(partition: i32) -> Arc<Completion> {
        Arc::new(Completion {
            partition,
            state: Mutex::new(State {
                segments: vec![Segment {
                    start: 0,
                    outcome: None,
                }],
                wakers: Vec::new(),
            }),
        })
    }

    /// Records the outcome of the segment starting at `start` and wakes every waiter. A
    /// second outcome for a segment is ignored: the first is the one records were told.
    pub fn complete(&self, start: u32, outcome: Result<BatchDone, ProduceError>) {
        let wakers = {
            let mut state = lock(&self.state);
            let segment = state.segment(start);
            if segment.outcome.is_some() {
                return;
            }
            segment.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Splits the pending segment holding index `at` so that records from `at` on get their
    /// own outcome.
    pub fn split_at(&self, at: u32) {
        let mut state = lock(&self.state);
        let i = state.segments.partition_point(|s| s.start <= at);
        if state.segments[i.saturating_sub(1)].start != at {
            state.segments.insert(
                i,
                Segment {
                    start: at,
                    outcome: None,
                },
            );
        }
    }

    pub fn is_done(&self) -> bool {
        lock(&self.state)
            .segments
            .iter()
            .all(|s| s.outcome.is_some())
    }

    fn poll_record(
        &self,
        index: u32,
        timestamp: i64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RecordMetadata, ProduceError>> {
        let mut state = lock(&self.state);
        let segment = state.segment(index);
        let start = segment.start;
        match &segment.outcome {
            Some(Ok(done)) => Poll::Ready(Ok(RecordMetadata {
                partition: self.partition,
                offset: done.base_offset.map(|o| o + i64::from(index - start)),
                timestamp: done.log_append_time.unwrap_or(timestamp),
            })),
            Some(Err(e)) => Poll::Ready(Err(e.clone())),
            None => {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Resolves to where one record landed, or why it was not written. Dropping it does not
/// cancel the record; a failure is then still counted in the next `flush` or `close`.
#[derive(Debug)]
#[must_use = "dropping the future is fire-and-forget: failures then only show in flush/close"]
pub struct DeliveryFuture {
    batch: Arc<Completion>,
    index: u32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub(crate) fn new(batch: Arc<Completion>, index: u32, timestamp: i64) -> Self {
        DeliveryFuture {
            batch,
            index,
            timestamp,
        }
    }

    /// The partition the record was put in.
    pub fn partition(&self) -> i32 {
        self.batch.partition
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.batch.poll_record(this.index, this.timestamp, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_record_gets_its_own_offset_from_one_completion() {
        let batch = Completion::new(3);
        let futures: Vec<_> = (0..4)
            .map(|i| DeliveryFuture::new(batch.clone(), i, 100 + i64::from(i)))
            .collect();
        let waiter = tokio::spawn(DeliveryFuture::new(batch.clone(), 9, 0));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        batch.complete(
            0,
            Ok(BatchDone {
                base_offset: Some(40),
                log_append_time: None,
            }),
        );
        // A second outcome does not overwrite the first.
        batch.complete(0, Err(ProduceError::Closed));
        assert_eq!(waiter.await.unwrap().unwrap().offset, Some(49));
        for (i, f) in futures.into_iter().enumerate() {
            let md = f.await.unwrap();
            assert_eq!(md.partition, 3);
            assert_eq!(md.offset, Some(40 + i as i64));
            assert_eq!(md.timestamp, 100 + i as i64);
        }
    }

    #[tokio::test]
    async fn failures_and_append_times_reach_every_record() {
        let failed = Completion::new(0);
        let f = DeliveryFuture::new(failed.clone(), 0, 1);
        failed.complete(0, Err(ProduceError::Closed));
        assert!(failed.is_done());
        assert!(matches!(f.await, Err(ProduceError::Closed)));

        let appended = Completion::new(0);
        appended.complete(
            0,
            Ok(BatchDone {
                base_offset: None,
                log_append_time: Some(777),
            }),
        );
        let md = DeliveryFuture::new(appended, 5, 1).await.unwrap();
        assert_eq!((md.offset, md.timestamp), (None, 777));
    }

    /// A split batch: each part reports its own base offset (or error) to its own records,
    /// and the batch is done only when every part is.
    #[tokio::test]
    async fn split_parts_answer_for_their_own_records() {
        let batch = Completion::new(1);
        batch.split_at(4);
        batch.split_at(6);
        batch.split_at(4);
        let f = |i| DeliveryFuture::new(batch.clone(), i, 0);
        let late = tokio::spawn(f(7));
        batch.complete(
            4,
            Ok(BatchDone {
                base_offset: Some(100),
                log_append_time: None,
            }),
        );
        assert!(!batch.is_done());
        assert_eq!(f(5).await.unwrap().offset, Some(101));
        batch.complete(0, Err(ProduceError::Closed));
        assert!(f(3).await.is_err());
        batch.complete(
            6,
            Ok(BatchDone {
                base_offset: Some(200),
                log_append_time: None,
            }),
        );
        assert!(batch.is_done());
        assert_eq!(late.await.unwrap().unwrap().offset, Some(201));
        assert_eq!(f(4).await.unwrap().offset, Some(100));
    }
}
