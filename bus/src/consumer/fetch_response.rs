//! Turning one partition of a Fetch response into the records the application may see, as a
//! pure function of the response and the offset that was asked for. No clock, no I/O: every
//! rule here is tested on hand-built batches.
//!
//! The rules (protocol guide "Fetch API"; KIP-74; KIP-98 for transactions):
//! - A fetch returns whole batches, so the first batch may start before the fetch offset (a
//!   compressed batch, or a refetch after a seek): its earlier records are skipped. Offsets
//!   only go up: a record below one already taken (a batch a broker repeats, as tansu 0.6
//!   does) is skipped too.
//! - The response may end inside a batch, cut at a byte limit: that is normal and the next
//!   fetch starts at the first offset not yet covered. If not even one batch is complete, the
//!   batch is larger than the limit asked for; the caller refetches with a larger limit.
//! - The next fetch offset is the batch's last offset + 1 even when its last records were
//!   compacted away or the batch was skipped, so progress never stalls on a hole.
//! - Control batches (transaction markers) are never handed to the application.
//! - Under `ReadCommitted`, a transactional batch is dropped when its producer has an aborted
//!   transaction that started at or before the batch's last offset and whose ABORT marker has
//!   not been passed yet. The broker lists those transactions (`aborted_transactions`,
//!   producer id and first offset); the marker closes one. This mirrors how Kafka's own
//!   consumer reads the list: it is what the broker's answer means.
//! - A batch that fails to decode (CRC, lengths, decompression) stops the partition there:
//!   the records before it are delivered, and the error names its offset. Nothing is skipped
//!   silently.

use std::sync::Arc;

use bytes::Bytes;
use kafka_proto::ErrorCode;
use kafka_proto::messages::fetch_response::{AbortedTransaction, PartitionData};
use kafka_proto::records::{
    ControlRecord, DecodeOptions, LOG_OVERHEAD, RecordBatches, RecordsError,
};

use super::record::ConsumerRecord;
use crate::offsets::IsolationLevel;

/// What one partition of a response amounts to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FetchedPartition {
    /// Records at or after the fetch offset, in order, transaction markers and aborted
    /// records removed.
    pub records: Vec<ConsumerRecord>,
    /// Where the next fetch starts: after every complete batch, or where decoding stopped.
    pub next_offset: i64,
    /// -1 when the broker did not say (an error answer).
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub status: PartitionStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PartitionStatus {
    Ok,
    /// The records held only part of one batch: it needs at least this many bytes (`None`
    /// when not even its length field arrived).
    BatchTooLarge(Option<usize>),
    /// The broker's error for this partition; no records.
    Error(ErrorCode),
    /// The batch at `next_offset` is corrupt; `records` holds everything before it.
    Corrupt(RecordsError),
}

/// Processes `data`, the answer for a fetch of `topic`/`partition` from `fetch_offset`.
pub(crate) fn process_partition(
    topic: &Arc<str>,
    partition: i32,
    fetch_offset: i64,
    data: PartitionData,
    isolation: IsolationLevel,
    options: &DecodeOptions,
) -> FetchedPartition {
    let mut out = FetchedPartition {
        records: Vec::new(),
        next_offset: fetch_offset,
        high_watermark: data.high_watermark,
        last_stable_offset: data.last_stable_offset,
        log_start_offset: data.log_start_offset,
        status: PartitionStatus::Ok,
    };
    let code = ErrorCode::from_code(data.error_code);
    if !code.is_ok() {
        out.status = PartitionStatus::Error(code);
        return out;
    }
    let records = data.records.unwrap_or_default();
    if records.is_empty() {
        return out;
    }
    let mut aborted = match isolation {
        IsolationLevel::ReadCommitted => {
            Some(Aborted::new(data.aborted_transactions.unwrap_or_default()))
        }
        IsolationLevel::ReadUncommitted => None,
    };

    let mut batches = RecordBatches::new(records.clone(), *options);
    let mut complete = 0usize;
    for batch in &mut batches {
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                out.status = PartitionStatus::Corrupt(e);
                return out;
            }
        };
        complete += 1;
        let after = batch.last_offset().saturating_add(1);
        let mut deliver = !batch.is_control;
        if let Some(aborted) = aborted.as_mut()
            && batch.producer_id >= 0
        {
            aborted.start_transactions_up_to(batch.last_offset());
            if batch.is_control {
                match batch.control_record() {
                    Some(Ok(ControlRecord::Abort { .. })) => aborted.end(batch.producer_id),
                    Some(Err(e)) => {
                        // Misreading a marker would drop or keep a whole transaction.
                        out.status = PartitionStatus::Corrupt(e);
                        return out;
                    }
                    _ => {}
                }
            } else if batch.is_transactional && aborted.is_aborted(batch.producer_id) {
                deliver = false;
            }
        }
        // Everything below `floor` was asked for earlier or is already in `out`: a batch
        // that starts before the fetch offset, or one a broker sends twice.
        let floor = out.next_offset;
        if deliver && after > floor {
            let timestamp_type = batch.timestamp_type;
            out.records.reserve(batch.records.len());
            for r in batch.records.drain(..) {
                if r.offset < floor {
                    continue;
                }
                out.records.push(ConsumerRecord {
                    topic: topic.clone(),
                    partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    timestamp_type,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
            }
        }
        out.next_offset = out.next_offset.max(after);
    }
    if complete == 0 && batches.truncated() {
        out.status = PartitionStatus::BatchTooLarge(declared_batch_size(&records));
    }
    out
}

/// The whole size of the batch at the front of `records`, from its length field.
fn declared_batch_size(records: &Bytes) -> Option<usize> {
    let len = records.get(8..LOG_OVERHEAD)?;
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    usize::try_from(len).ok().map(|n| n + LOG_OVERHEAD)
}

/// The aborted transactions of one response, opened as the reader passes their first offset
/// and closed by their ABORT markers.
struct Aborted {
    /// Sorted by first offset, consumed from `next`.
    pending: Vec<AbortedTransaction>,
    next: usize,
    /// Producers whose current transaction is aborted. Few at a time, so a vector.
    open: Vec<i64>,
}

impl Aborted {
    fn new(mut list: Vec<AbortedTransaction>) -> Self {
        list.sort_by_key(|t| t.first_offset);
        Aborted {
            pending: list,
            next: 0,
            open: Vec::new(),
        }
    }

    fn start_transactions_up_to(&mut self, offset: i64) {
        while let Some(t) = self.pending.get(self.next) {
            if t.first_offset > offset {
                break;
            }
            if !self.open.contains(&t.producer_id) {
                self.open.push(t.producer_id);
            }
            self.next += 1;
        }
    }

    fn is_aborted(&self, producer_id: i64) -> bool {
        self.open.contains(&producer_id)
    }

    fn end(&mut self, producer_id: i64) {
        self.open.retain(|&p| p != producer_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_proto::records::{BatchEncoder, BatchParams, Compression};

    const T0: i64 = 1_700_000_000_000;

    fn topic() -> Arc<str> {
        Arc::from("t")
    }

    /// A data batch at `base` with `n` records valued "v{offset}".
    fn data_batch(base: i64, n: i64, params: BatchParams) -> Bytes {
        let mut buf = BytesMut::new();
        let mut b = BatchEncoder::new(
            &mut buf,
            BatchParams {
                base_offset: base,
                ..params
            },
        );
        for i in 0..n {
            let v = format!("v{}", base + i);
            b.append(T0 + i, Some(b"k"), Some(v.as_bytes()), &[])
                .unwrap();
        }
        b.finish().unwrap()
    }

    fn txn(producer_id: i64) -> BatchParams {
        BatchParams {
            is_transactional: true,
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
            ..BatchParams::default()
        }
    }

    fn marker(base: i64, producer_id: i64, control: ControlRecord) -> Bytes {
        let mut buf = BytesMut::new();
        let mut b = BatchEncoder::new(
            &mut buf,
            BatchParams {
                base_offset: base,
                is_control: true,
                ..txn(producer_id)
            },
        );
        b.append_control(T0, &control).unwrap();
        b.finish().unwrap()
    }

    fn abort(base: i64, pid: i64) -> Bytes {
        marker(
            base,
            pid,
            ControlRecord::Abort {
                coordinator_epoch: 0,
            },
        )
    }

    fn commit(base: i64, pid: i64) -> Bytes {
        marker(
            base,
            pid,
            ControlRecord::Commit {
                coordinator_epoch: 0,
            },
        )
    }

    fn response(parts: &[Bytes]) -> PartitionData {
        let mut all = BytesMut::new();
        for p in parts {
            all.extend_from_slice(p);
        }
        let mut d = PartitionData::default();
        d.high_watermark = 100;
        d.last_stable_offset = 90;
        d.log_start_offset = 0;
        d.records = Some(all.freeze());
        d
    }

    fn aborted_txn(producer_id: i64, first_offset: i64) -> AbortedTransaction {
        let mut t = AbortedTransaction::default();
        t.producer_id = producer_id;
        t.first_offset = first_offset;
        t
    }

    fn run(fetch_offset: i64, data: PartitionData, isolation: IsolationLevel) -> FetchedPartition {
        process_partition(
            &topic(),
            3,
            fetch_offset,
            data,
            isolation,
            &DecodeOptions::default(),
        )
    }

    fn offsets(f: &FetchedPartition) -> Vec<i64> {
        f.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_before_the_fetch_offset_are_skipped_even_inside_a_compressed_batch() {
        let params = BatchParams {
            compression: Compression::Lz4,
            ..BatchParams::default()
        };
        let data = response(&[data_batch(10, 5, params), data_batch(15, 3, params)]);
        let f = run(13, data, IsolationLevel::ReadUncommitted);
        assert_eq!(offsets(&f), [13, 14, 15, 16, 17]);
        assert_eq!(f.next_offset, 18);
        assert_eq!(f.status, PartitionStatus::Ok);
        let r = &f.records[0];
        assert_eq!(&*r.topic, "t");
        assert_eq!(r.partition, 3);
        assert_eq!(r.value.as_deref(), Some(&b"v13"[..]));
        assert_eq!(r.timestamp, T0 + 3);
        assert_eq!((f.high_watermark, f.last_stable_offset), (100, 90));
    }

    #[test]
    fn a_batch_sent_twice_is_delivered_once() {
        let b = data_batch(3, 2, BatchParams::default());
        let f = run(
            1,
            response(&[b.clone(), b]),
            IsolationLevel::ReadUncommitted,
        );
        assert_eq!(offsets(&f), [3, 4]);
        assert_eq!(f.next_offset, 5);
    }

    #[test]
    fn a_truncated_trailing_batch_is_left_for_the_next_fetch() {
        let first = data_batch(0, 4, BatchParams::default());
        let second = data_batch(4, 4, BatchParams::default());
        let cut = second.slice(..second.len() - 7);
        let f = run(0, response(&[first, cut]), IsolationLevel::ReadUncommitted);
        assert_eq!(offsets(&f), [0, 1, 2, 3]);
        assert_eq!(
            f.next_offset, 4,
            "the cut batch is refetched from its start"
        );
        assert_eq!(f.status, PartitionStatus::Ok);
    }

    #[test]
    fn a_lone_partial_batch_reports_the_size_it_needs() {
        let big = data_batch(7, 50, BatchParams::default());
        let f = run(
            7,
            response(&[big.slice(..100)]),
            IsolationLevel::ReadUncommitted,
        );
        assert!(f.records.is_empty());
        assert_eq!(f.next_offset, 7);
        assert_eq!(f.status, PartitionStatus::BatchTooLarge(Some(big.len())));
        // Not even the length field: the size is unknown.
        let f = run(
            7,
            response(&[big.slice(..5)]),
            IsolationLevel::ReadUncommitted,
        );
        assert_eq!(f.status, PartitionStatus::BatchTooLarge(None));
    }

    #[test]
    fn read_committed_drops_aborted_transactions_and_every_marker() {
        // pid 1: offsets 0-2 aborted (marker 3); pid 2: 4-5 committed (marker 6);
        // pid 1 again: 7-8, a new transaction, committed (marker 9); plain batch 10-11.
        let mut data = response(&[
            data_batch(0, 3, txn(1)),
            abort(3, 1),
            data_batch(4, 2, txn(2)),
            commit(6, 2),
            data_batch(7, 2, txn(1)),
            commit(9, 1),
            data_batch(10, 2, BatchParams::default()),
        ]);
        data.aborted_transactions = Some(vec![aborted_txn(1, 0)]);
        let f = run(0, data.clone(), IsolationLevel::ReadCommitted);
        assert_eq!(offsets(&f), [4, 5, 7, 8, 10, 11]);
        assert_eq!(f.next_offset, 12);

        // Read uncommitted sees every data record but still no markers.
        let f = run(0, data, IsolationLevel::ReadUncommitted);
        assert_eq!(offsets(&f), [0, 1, 2, 4, 5, 7, 8, 10, 11]);
        assert_eq!(f.next_offset, 12);
    }

    #[test]
    fn interleaved_transactions_are_told_apart_by_producer() {
        // pid 5 and pid 6 interleave; only pid 6 aborts.
        let mut data = response(&[
            data_batch(0, 1, txn(5)),
            data_batch(1, 1, txn(6)),
            data_batch(2, 1, txn(5)),
            data_batch(3, 1, txn(6)),
            abort(4, 6),
            commit(5, 5),
        ]);
        data.aborted_transactions = Some(vec![aborted_txn(6, 1)]);
        let f = run(0, data, IsolationLevel::ReadCommitted);
        assert_eq!(offsets(&f), [0, 2]);
        assert_eq!(f.next_offset, 6);
    }

    #[test]
    fn a_response_of_only_markers_and_aborted_data_still_advances() {
        let mut data = response(&[data_batch(20, 3, txn(9)), abort(23, 9)]);
        data.aborted_transactions = Some(vec![aborted_txn(9, 20)]);
        let f = run(20, data, IsolationLevel::ReadCommitted);
        assert!(f.records.is_empty());
        assert_eq!(f.next_offset, 24);
    }

    #[test]
    fn an_unparseable_marker_stops_the_partition_instead_of_guessing() {
        let mut buf = BytesMut::new();
        let mut b = BatchEncoder::new(
            &mut buf,
            BatchParams {
                base_offset: 2,
                is_control: true,
                ..txn(1)
            },
        );
        b.append(T0, Some(b"x"), None, &[]).unwrap();
        let bad_marker = b.finish().unwrap();
        let mut data = response(&[data_batch(0, 2, txn(1)), bad_marker]);
        data.aborted_transactions = Some(vec![aborted_txn(1, 0)]);
        let f = run(0, data, IsolationLevel::ReadCommitted);
        assert!(matches!(f.status, PartitionStatus::Corrupt(_)), "{f:?}");
        assert_eq!(f.next_offset, 2);
    }

    #[test]
    fn a_corrupt_batch_delivers_what_came_before_and_names_its_offset() {
        let good = data_batch(0, 2, BatchParams::default());
        let mut bad = BytesMut::from(&data_batch(2, 2, BatchParams::default())[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let f = run(
            0,
            response(&[good, bad.freeze()]),
            IsolationLevel::ReadUncommitted,
        );
        assert_eq!(offsets(&f), [0, 1]);
        assert_eq!(f.next_offset, 2);
        assert!(
            matches!(
                f.status,
                PartitionStatus::Corrupt(RecordsError::CrcMismatch { base_offset: 2, .. })
            ),
            "{f:?}"
        );
    }

    #[test]
    fn a_broker_error_carries_no_records() {
        let mut data = response(&[data_batch(0, 2, BatchParams::default())]);
        data.error_code = ErrorCode::OffsetOutOfRange.code();
        let f = run(0, data, IsolationLevel::ReadUncommitted);
        assert!(f.records.is_empty());
        assert_eq!(f.next_offset, 0);
        assert_eq!(
            f.status,
            PartitionStatus::Error(ErrorCode::OffsetOutOfRange)
        );
    }

    #[test]
    fn batches_already_seen_and_compaction_holes_do_not_stall_progress() {
        // A batch whose last records were compacted away still covers through its last
        // offset delta.
        let mut buf = BytesMut::new();
        let mut b = BatchEncoder::new(
            &mut buf,
            BatchParams {
                base_offset: 30,
                ..BatchParams::default()
            },
        );
        b.append(T0, Some(b"k"), Some(b"v30"), &[]).unwrap();
        let holey = b.finish().unwrap();
        // Rewrite lastOffsetDelta (bytes 23..27) to 4 and fix the CRC: offsets 31-34 are gone.
        let mut holey = BytesMut::from(&holey[..]);
        holey[23..27].copy_from_slice(&4i32.to_be_bytes());
        let crc = crc32c::crc32c(&holey[21..]);
        holey[17..21].copy_from_slice(&crc.to_be_bytes());
        let data = response(&[
            data_batch(25, 5, BatchParams::default()),
            holey.freeze(),
            data_batch(35, 1, BatchParams::default()),
        ]);
        let f = run(30, data, IsolationLevel::ReadUncommitted);
        assert_eq!(offsets(&f), [30, 35]);
        assert_eq!(f.next_offset, 36);
    }
}
