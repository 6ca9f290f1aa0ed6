//! Where each assigned partition stands, and what a fetch result does to it.
//!
//! A partition's *position* is the next offset the application will receive. Records are
//! fetched ahead of it (at most one response's worth per partition, see `mod.rs`), so a
//! fetched chunk only moves the position when the application takes it. The decision what a
//! fetch result means ([`decide`]) is a pure function, tested without a broker.

use std::sync::Arc;

use kafka_proto::ErrorCode;
use tokio::time::Instant;

use super::config::AutoOffsetReset;
use super::fetch_response::{FetchedPartition, PartitionStatus};
use super::record::{ConsumerRecord, Offset};
use crate::error::Error;
use crate::offsets::OffsetSpec;
use crate::routing::is_stale_metadata;

/// Records fetched for one partition and not yet taken by the application.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub records: Vec<ConsumerRecord>,
    /// The position once these records are taken.
    pub next_position: i64,
    /// Raised once the records are taken; the partition stops there.
    pub error: Option<Error>,
}

/// One assigned partition.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub topic: Arc<str>,
    pub partition: i32,
    /// `None` until a pending seek is resolved.
    pub position: Option<i64>,
    /// A seek (earliest, latest, timestamp) or reset that needs ListOffsets first.
    pub pending: Option<OffsetSpec>,
    /// Stopped by an error that retrying cannot fix (corrupt batch, OFFSET_OUT_OF_RANGE with
    /// no reset policy) until the application seeks.
    pub parked: bool,
    pub paused: bool,
    /// Bumped by every seek and pause, so answers to requests sent before are dropped.
    pub generation: u64,
    /// The fetch request this partition is part of, if any.
    pub in_flight: Option<u64>,
    pub buffered: Option<Chunk>,
    /// Not fetched or resolved again before this (after an error).
    pub retry_at: Option<Instant>,
    /// Consecutive failures, for the backoff.
    pub failures: u32,
    /// A larger per-partition limit, after a batch did not fit the configured one.
    pub fetch_bytes: Option<usize>,
    pub high_watermark: Option<i64>,
    pub last_stable_offset: Option<i64>,
    pub log_start_offset: Option<i64>,
}

impl PartitionState {
    pub fn new(topic: Arc<str>, partition: i32, start: Offset, generation: u64) -> Self {
        let mut st = PartitionState {
            topic,
            partition,
            position: None,
            pending: None,
            parked: false,
            paused: false,
            generation,
            in_flight: None,
            buffered: None,
            retry_at: None,
            failures: 0,
            fetch_bytes: None,
            high_watermark: None,
            last_stable_offset: None,
            log_start_offset: None,
        };
        st.start_at(start, generation);
        st
    }

    /// Restarts reading at `offset`: buffered records are dropped and in-flight answers will
    /// be ignored (new `generation`).
    pub fn start_at(&mut self, offset: Offset, generation: u64) {
        self.generation = generation;
        self.buffered = None;
        self.parked = false;
        self.retry_at = None;
        self.failures = 0;
        self.fetch_bytes = None;
        let spec = match offset {
            Offset::At(n) => {
                self.position = Some(n);
                self.pending = None;
                return;
            }
            Offset::Earliest => OffsetSpec::Earliest,
            Offset::Latest => OffsetSpec::Latest,
            Offset::Timestamp(t) => OffsetSpec::Timestamp(t),
        };
        self.position = None;
        self.pending = Some(spec);
    }

    /// Whether nothing stops this partition from being resolved or fetched, apart from the
    /// backoff.
    fn active(&self) -> bool {
        !self.parked && !self.paused && self.in_flight.is_none() && self.buffered.is_none()
    }

    /// Ready for a Fetch now.
    pub fn fetchable(&self, now: Instant) -> bool {
        self.active()
            && self.pending.is_none()
            && self.position.is_some()
            && self.retry_at.is_none_or(|t| t <= now)
    }

    /// Waiting for ListOffsets, and due. Paused partitions are resolved too, so `position`
    /// answers for them (a lookup reads no records).
    pub fn resolvable(&self, now: Instant) -> bool {
        !self.parked
            && self.in_flight.is_none()
            && self.buffered.is_none()
            && self.pending.is_some()
            && self.retry_at.is_none_or(|t| t <= now)
    }

    /// When this partition will next want work, if it is only waiting for its backoff.
    pub fn wakes_at(&self, now: Instant) -> Option<Instant> {
        let idle = !self.parked && self.in_flight.is_none() && self.buffered.is_none();
        let wants_work = self.pending.is_some() || (!self.paused && self.position.is_some());
        if !(idle && wants_work) {
            return None;
        }
        self.retry_at.filter(|&t| t > now)
    }

    /// Counts a failure and schedules the next attempt after `delay`.
    pub fn back_off(&mut self, now: Instant, delay: std::time::Duration) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + delay);
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    pub fn update_watermarks(&mut self, f: &FetchedPartition) {
        if f.high_watermark >= 0 {
            self.high_watermark = Some(f.high_watermark);
        }
        if f.last_stable_offset >= 0 {
            self.last_stable_offset = Some(f.last_stable_offset);
        }
        if f.log_start_offset >= 0 {
            self.log_start_offset = Some(f.log_start_offset);
        }
    }
}

/// What a fetch result means for its partition.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Records (and maybe an error after them) for the application.
    Deliver(Chunk),
    /// No records, but the log moved on (markers, aborted data, compaction): the position
    /// can jump to here.
    Advance(i64),
    /// The position is gone from the log; look the partition up again with this.
    Reset(OffsetSpec),
    /// Stop the partition until the application seeks, and tell it why.
    Park(Error),
    /// Try again after a backoff, refreshing metadata first if the broker said it is the
    /// wrong one; report `error` when retrying alone will not fix it.
    Retry { refresh: bool, error: Option<Error> },
    /// Fetch again asking for at least this many bytes of the partition.
    Grow(usize),
}

/// Decides what `fetched`, the answer for a fetch from `fetch_offset` with a per-partition
/// limit of `asked_bytes`, does to its partition. `batch_limit` is the largest batch the
/// connection can receive.
pub(crate) fn decide(
    topic: &str,
    partition: i32,
    fetch_offset: i64,
    asked_bytes: usize,
    batch_limit: usize,
    policy: AutoOffsetReset,
    fetched: FetchedPartition,
) -> Decision {
    match fetched.status {
        PartitionStatus::Ok if fetched.records.is_empty() => Decision::Advance(fetched.next_offset),
        PartitionStatus::Ok => Decision::Deliver(Chunk {
            records: fetched.records,
            next_position: fetched.next_offset,
            error: None,
        }),
        PartitionStatus::Corrupt(source) => Decision::Deliver(Chunk {
            records: fetched.records,
            next_position: fetched.next_offset,
            error: Some(Error::CorruptRecords {
                topic: topic.to_owned(),
                partition,
                offset: fetched.next_offset,
                source,
            }),
        }),
        PartitionStatus::BatchTooLarge(needed) => {
            let needed = needed.unwrap_or_else(|| asked_bytes.saturating_mul(2));
            if needed > batch_limit {
                Decision::Park(Error::RecordTooLarge {
                    topic: topic.to_owned(),
                    partition,
                    offset: fetch_offset,
                    size: needed,
                    limit: batch_limit,
                })
            } else {
                Decision::Grow(needed.max(asked_bytes.saturating_add(1)))
            }
        }
        PartitionStatus::Error(ErrorCode::OffsetOutOfRange) => match policy {
            AutoOffsetReset::Earliest => Decision::Reset(OffsetSpec::Earliest),
            AutoOffsetReset::Latest => Decision::Reset(OffsetSpec::Latest),
            AutoOffsetReset::None => Decision::Park(Error::broker(
                ErrorCode::OffsetOutOfRange,
                Some(format!(
                    "offset {fetch_offset} is not in the log and auto_offset_reset is none"
                )),
                format!("{topic}-{partition}"),
            )),
        },
        PartitionStatus::Error(code) if is_stale_metadata(code) => Decision::Retry {
            refresh: true,
            error: None,
        },
        PartitionStatus::Error(code) if code.is_retriable() => Decision::Retry {
            refresh: false,
            error: None,
        },
        PartitionStatus::Error(code) => Decision::Retry {
            refresh: false,
            error: Some(Error::broker(code, None, format!("{topic}-{partition}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_proto::records::{RecordsError, TimestampType};

    fn fetched(status: PartitionStatus, records: usize, next_offset: i64) -> FetchedPartition {
        FetchedPartition {
            records: (0..records)
                .map(|i| ConsumerRecord {
                    topic: Arc::from("t"),
                    partition: 0,
                    offset: i as i64,
                    timestamp: 0,
                    timestamp_type: TimestampType::CreateTime,
                    key: None,
                    value: None,
                    headers: Vec::new(),
                })
                .collect(),
            next_offset,
            high_watermark: 10,
            last_stable_offset: 10,
            log_start_offset: 0,
            status,
        }
    }

    fn run(policy: AutoOffsetReset, f: FetchedPartition) -> Decision {
        decide("t", 0, 5, 1024, 1 << 20, policy, f)
    }

    #[test]
    fn offset_out_of_range_follows_the_reset_policy() {
        let oor = || fetched(PartitionStatus::Error(ErrorCode::OffsetOutOfRange), 0, 5);
        assert!(matches!(
            run(AutoOffsetReset::Earliest, oor()),
            Decision::Reset(OffsetSpec::Earliest)
        ));
        assert!(matches!(
            run(AutoOffsetReset::Latest, oor()),
            Decision::Reset(OffsetSpec::Latest)
        ));
        match run(AutoOffsetReset::None, oor()) {
            Decision::Park(e) => {
                assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange));
                let text = e.to_string();
                assert!(text.contains("t-0") && text.contains("offset 5"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routing_errors_refresh_and_retry_silently_other_errors_are_reported() {
        for code in [
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::FencedLeaderEpoch,
        ] {
            assert!(matches!(
                run(
                    AutoOffsetReset::Latest,
                    fetched(PartitionStatus::Error(code), 0, 5)
                ),
                Decision::Retry {
                    refresh: true,
                    error: None
                }
            ));
        }
        assert!(matches!(
            run(
                AutoOffsetReset::Latest,
                fetched(PartitionStatus::Error(ErrorCode::RequestTimedOut), 0, 5)
            ),
            Decision::Retry {
                refresh: false,
                error: None
            }
        ));
        match run(
            AutoOffsetReset::Latest,
            fetched(
                PartitionStatus::Error(ErrorCode::TopicAuthorizationFailed),
                0,
                5,
            ),
        ) {
            Decision::Retry {
                refresh: false,
                error: Some(e),
            } => assert_eq!(e.code(), Some(ErrorCode::TopicAuthorizationFailed)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_are_delivered_and_empty_answers_only_advance() {
        match run(AutoOffsetReset::Latest, fetched(PartitionStatus::Ok, 3, 8)) {
            Decision::Deliver(c) => {
                assert_eq!(c.records.len(), 3);
                assert_eq!(c.next_position, 8);
                assert!(c.error.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(AutoOffsetReset::Latest, fetched(PartitionStatus::Ok, 0, 9)),
            Decision::Advance(9)
        ));
    }

    #[test]
    fn a_corrupt_batch_delivers_the_records_before_it_then_the_error() {
        let corrupt = PartitionStatus::Corrupt(RecordsError::CrcMismatch {
            base_offset: 7,
            expected: 1,
            computed: 2,
        });
        match run(AutoOffsetReset::Latest, fetched(corrupt, 2, 7)) {
            Decision::Deliver(c) => {
                assert_eq!(c.records.len(), 2);
                assert_eq!(c.next_position, 7);
                assert!(
                    matches!(c.error, Some(Error::CorruptRecords { offset: 7, .. })),
                    "{:?}",
                    c.error
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_oversized_batch_grows_the_request_up_to_the_frame_limit() {
        assert!(matches!(
            run(
                AutoOffsetReset::Latest,
                fetched(PartitionStatus::BatchTooLarge(Some(5000)), 0, 5)
            ),
            Decision::Grow(5000)
        ));
        // Unknown size: double.
        assert!(matches!(
            run(
                AutoOffsetReset::Latest,
                fetched(PartitionStatus::BatchTooLarge(None), 0, 5)
            ),
            Decision::Grow(2048)
        ));
        match run(
            AutoOffsetReset::Latest,
            fetched(PartitionStatus::BatchTooLarge(Some(2 << 20)), 0, 5),
        ) {
            Decision::Park(Error::RecordTooLarge { size, limit, .. }) => {
                assert_eq!((size, limit), (2 << 20, 1 << 20));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_and_seeks_gate_what_is_fetchable() {
        let now = Instant::now();
        let mut st = PartitionState::new(Arc::from("t"), 0, Offset::Earliest, 1);
        assert!(!st.fetchable(now), "a pending seek is resolved first");
        assert!(st.resolvable(now));
        st.start_at(Offset::At(42), 2);
        assert_eq!(st.position, Some(42));
        assert!(st.fetchable(now));
        st.back_off(now, std::time::Duration::from_millis(100));
        assert!(!st.fetchable(now));
        assert_eq!(
            st.wakes_at(now),
            Some(now + std::time::Duration::from_millis(100))
        );
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert!(st.fetchable(Instant::now()));
        st.in_flight = Some(9);
        assert!(!st.fetchable(Instant::now()), "one request per partition");
        st.in_flight = None;
        st.paused = true;
        assert!(!st.fetchable(Instant::now()));
        st.start_at(Offset::Latest, 3);
        st.paused = true;
        assert!(
            st.resolvable(Instant::now()),
            "paused partitions still learn their position"
        );
        st.pending = None;
        assert_eq!(st.wakes_at(Instant::now()), None);
    }
}
