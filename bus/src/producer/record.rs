//! What a caller hands the producer, and what it gets back per record.
//!
//! A record is copied into its partition's batch buffer during `send` and dropped right
//! after, so the producer never keeps the caller's allocations alive. The types are shaped so
//! the common case costs no allocation of its own: the topic is an `Arc<str>` the caller
//! clones (an atomic increment), header keys are usually `&'static str`, and key and value
//! are [`Bytes`], which a caller can fill however it likes.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use kafka_proto::records::HeaderRef;

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Keep one `Arc<str>` per topic and clone it: building it from a `&str` for every record
    /// allocates every time.
    pub topic: Arc<str>,
    /// An explicit partition bypasses the partitioner, as in Java.
    pub partition: Option<i32>,
    /// Keyed records go to `murmur2(key) % partitions`, Java's mapping; `None` is different
    /// from an empty key, which is hashed like any other.
    pub key: Option<Bytes>,
    /// `None` is a tombstone on a compacted topic.
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` takes the wall clock at `send`.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record for `topic` with no key, value, headers or timestamp yet.
    pub fn new(topic: impl Into<Arc<str>>) -> Self {
        Record {
            topic: topic.into(),
            partition: None,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    pub fn header(mut self, key: impl Into<Cow<'static, str>>, value: Option<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value,
        });
        self
    }

    /// An upper bound on the record's size inside a batch, whatever batch it lands in: every
    /// varint at its widest. Used to refuse a record before any buffer is touched.
    pub(crate) fn size_bound(&self) -> usize {
        const VARINT: usize = 5;
        const VARLONG: usize = 10;
        let field = |b: Option<&[u8]>| VARINT + b.map_or(0, <[u8]>::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|h| VARINT + h.key.len() + field(h.value.as_deref()))
            .fold(0usize, usize::saturating_add);
        // Length prefix, attributes, timestamp delta, offset delta, key, value, header count.
        (VARINT + 1 + VARLONG + VARINT + VARINT)
            .saturating_add(field(self.key.as_deref()))
            .saturating_add(field(self.value.as_deref()))
            .saturating_add(headers)
    }
}

/// A record header (KIP-82): a string key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Cow<'static, str>,
    pub value: Option<Bytes>,
}

impl HeaderRef for Header {
    #[inline]
    fn key(&self) -> &str {
        &self.key
    }

    #[inline]
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

/// Where a delivered record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    pub partition: i32,
    /// `None` when the broker did not say: with `acks = None`, and when the broker reported
    /// the batch as a duplicate of one it already had without repeating its offset
    /// (DUPLICATE_SEQUENCE_NUMBER, which tansu always does and Kafka does for old batches).
    pub offset: Option<i64>,
    /// The record's timestamp, or the broker's append time on a topic with
    /// `message.timestamp.type = LogAppendTime`.
    pub timestamp: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_proto::records::{BatchBuilder, BatchParams};

    /// The bound really bounds: the exact size in the worst position of a batch (a huge
    /// offset delta and timestamp delta) never exceeds it.
    #[test]
    fn size_bound_is_never_below_the_encoded_size() {
        let records = [
            Record::new("t"),
            Record::new("t").key("k").value(vec![1u8; 300]),
            Record::new("t")
                .value(Bytes::new())
                .header("a", None)
                .header(String::from("bb"), Some(Bytes::from_static(b"vv"))),
        ];
        for r in &records {
            let mut b = BatchBuilder::new(BatchParams::default(), 0);
            b.append(0, None, None, kafka_proto::records::NO_HEADERS)
                .unwrap();
            for ts in [i64::MIN, 0, i64::MAX] {
                let exact = b.record_size(ts, r.key.as_deref(), r.value.as_deref(), &r.headers);
                assert!(exact <= r.size_bound(), "{exact} > {}", r.size_bound());
            }
        }
    }
}
