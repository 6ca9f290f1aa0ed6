//! Topics and partition logs: record batches stored as the producer sent them, with the base
//! offset rewritten (it sits outside the CRC, as on a real broker), served back whole.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_proto::records::{DecodeOptions, decode_records};
use kafka_proto::{ErrorCode, Uuid};

/// Byte offsets in a v2 batch header (protocol guide, "Record Batch").
const LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const LAST_OFFSET_DELTA_AT: usize = 23;
const MAX_TIMESTAMP_AT: usize = 35;
const HEADER_LEN: usize = 61;

pub(crate) struct StoredBatch {
    pub base: i64,
    pub last: i64,
    pub max_timestamp: i64,
    pub bytes: Bytes,
}

pub(crate) struct Partition {
    pub leader: i32,
    pub leader_epoch: i32,
    pub batches: Vec<StoredBatch>,
    pub log_start: i64,
    pub high_watermark: i64,
}

impl Partition {
    /// Appends every batch of a Produce's `records`; returns the first base offset.
    pub fn append(&mut self, records: &Bytes) -> Result<i64, ErrorCode> {
        // kafka_proto checks the framing and CRCs; anything it rejects is corrupt.
        match decode_records(records.clone(), &DecodeOptions::default()) {
            Ok(d) if !d.truncated && !d.batches.is_empty() => {}
            _ => return Err(ErrorCode::CorruptMessage),
        }
        let mut split = Vec::new();
        let mut rest = &records[..];
        while !rest.is_empty() {
            if rest.len() < HEADER_LEN || rest[MAGIC_AT] != 2 {
                return Err(ErrorCode::UnsupportedForMessageFormat);
            }
            let len = i32::from_be_bytes(rest[LENGTH_AT..LENGTH_AT + 4].try_into().unwrap());
            let total = 12 + len.max(0) as usize;
            if total > rest.len() || total < HEADER_LEN {
                return Err(ErrorCode::CorruptMessage);
            }
            split.push(&rest[..total]);
            rest = &rest[total..];
        }
        let first = self.high_watermark;
        for raw in split {
            let delta = i32::from_be_bytes(
                raw[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
                    .try_into()
                    .unwrap(),
            );
            let max_timestamp = i64::from_be_bytes(
                raw[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
                    .try_into()
                    .unwrap(),
            );
            let base = self.high_watermark;
            let mut b = BytesMut::from(raw);
            b[..8].copy_from_slice(&base.to_be_bytes());
            let last = base + delta.max(0) as i64;
            self.batches.push(StoredBatch {
                base,
                last,
                max_timestamp,
                bytes: b.freeze(),
            });
            self.high_watermark = last + 1;
        }
        Ok(first)
    }

    /// Whole batches from the one holding `offset`, at least one, then up to `max_bytes`.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Bytes {
        let start = self.batches.partition_point(|b| b.last < offset);
        let mut out = BytesMut::new();
        for b in &self.batches[start..] {
            if !out.is_empty() && out.len() + b.bytes.len() > max_bytes {
                break;
            }
            out.extend_from_slice(&b.bytes);
        }
        out.freeze()
    }

    /// ListOffsets: -2 earliest, -1 latest, -3 the batch with the largest timestamp, else the
    /// first batch whose max timestamp reaches `ts` (the high watermark when none does).
    pub fn offset_for(&self, ts: i64) -> (i64, i64) {
        match ts {
            -2 => (self.log_start, -1),
            -1 => (self.high_watermark, -1),
            -3 => self
                .batches
                .iter()
                .max_by_key(|b| b.max_timestamp)
                .map_or((-1, -1), |b| (b.base, b.max_timestamp)),
            ts => self
                .batches
                .iter()
                .find(|b| b.max_timestamp >= ts)
                .map_or((self.high_watermark, -1), |b| (b.base, b.max_timestamp)),
        }
    }
}

/// The most partitions one topic of the fake may have; more is INVALID_PARTITIONS.
pub const MAX_PARTITIONS: i32 = 10_000;

pub(crate) struct Topic {
    pub id: Uuid,
    pub partitions: Vec<Partition>,
}

#[derive(Default)]
pub(crate) struct Logs {
    pub topics: BTreeMap<String, Topic>,
    next_id: u64,
}

impl Logs {
    /// Partition `p` is led by node `p % nodes` until a test moves it.
    pub fn create(&mut self, name: &str, partitions: i32, nodes: i32) -> Result<Uuid, ErrorCode> {
        if self.topics.contains_key(name) {
            return Err(ErrorCode::TopicAlreadyExists);
        }
        // The count comes off the wire (CreateTopics' num_partitions, up to i32::MAX) and a
        // partition is allocated for each: cap it, as Kafka caps what a request may create.
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(ErrorCode::InvalidPartitions);
        }
        if name.is_empty() || name.len() > 249 {
            return Err(ErrorCode::InvalidTopicException);
        }
        self.next_id += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&0x6661_6b65u64.to_be_bytes());
        id[8..].copy_from_slice(&self.next_id.to_be_bytes());
        let id = Uuid(id);
        let partitions = (0..partitions)
            .map(|p| Partition {
                leader: p % nodes,
                leader_epoch: 0,
                batches: Vec::new(),
                log_start: 0,
                high_watermark: 0,
            })
            .collect();
        self.topics
            .insert(name.to_string(), Topic { id, partitions });
        Ok(id)
    }

    pub fn by_id(&self, id: Uuid) -> Option<(&String, &Topic)> {
        self.topics.iter().find(|(_, t)| t.id == id)
    }

    pub fn partition(&self, topic: &str, p: i32) -> Option<&Partition> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(p).ok()?)
    }

    pub fn partition_mut(&mut self, topic: &str, p: i32) -> Option<&mut Partition> {
        self.topics
            .get_mut(topic)?
            .partitions
            .get_mut(usize::try_from(p).ok()?)
    }
}
