//! What a producer uses when the user configured nothing: Java's default behaviour.

use crate::partitions::TopicPartitions;
use crate::rng::SplitMix64;
use crate::{PartitionError, Partitioner, StickyPartitioner};

/// Keyed records by Java's murmur2, unkeyed records by a second strategy (sticky by default).
///
/// This is the split Java's producer makes: since 2.4 the `DefaultPartitioner` hashes keys
/// and sticks (KIP-480) for null keys, and since 3.3 the same split lives in
/// `BuiltInPartitioner`, whose `partitionForKey` is [`partition_for_key`]. Keyed records
/// always hash over *all* partitions, never only the available ones, so a key keeps its
/// partition through leader elections. To rotate unkeyed records instead of sticking, use
/// [`DefaultPartitioner::with_unkeyed`] with a
/// [`RoundRobinPartitioner`](crate::RoundRobinPartitioner).
///
/// [`partition_for_key`]: crate::partition_for_key
#[derive(Debug, Clone)]
pub struct DefaultPartitioner<U = StickyPartitioner<SplitMix64>> {
    unkeyed: U,
}

impl DefaultPartitioner {
    /// Hashes keys; sticks unkeyed records with per-process random choices.
    #[must_use]
    pub fn new() -> Self {
        Self::with_unkeyed(StickyPartitioner::new())
    }

    /// Like [`new`](Self::new) but with reproducible choices for unkeyed records; keyed
    /// records never depend on the seed.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        Self::with_unkeyed(StickyPartitioner::with_seed(seed))
    }
}

impl Default for DefaultPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl<U: Partitioner> DefaultPartitioner<U> {
    /// Keeps Java's keyed mapping but lets the caller choose how unkeyed records spread.
    pub fn with_unkeyed(unkeyed: U) -> Self {
        Self { unkeyed }
    }

    /// The strategy for unkeyed records, e.g. to read which partition it is sticking to.
    pub fn unkeyed(&self) -> &U {
        &self.unkeyed
    }
}

impl<U: Partitioner> Partitioner for DefaultPartitioner<U> {
    fn partition(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        partitions: TopicPartitions<'_>,
    ) -> Result<i32, PartitionError> {
        match key {
            Some(key) => Ok(partitions
                .partition_count()
                .bucket(crate::murmur2::murmur2(key))),
            None => self.unkeyed.partition(topic, None, partitions),
        }
    }

    fn on_new_batch(&mut self, topic: &str, prev_partition: i32) {
        // A completed batch frees the sticky partition whether the batch held keyed records,
        // unkeyed ones or both, as in Java.
        self.unkeyed.on_new_batch(topic, prev_partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RoundRobinPartitioner, partition_for_key};

    #[test]
    fn keyed_records_follow_murmur2_and_ignore_availability() {
        let available = [0];
        let parts = TopicPartitions::new(12).unwrap().with_available(&available);
        let mut dp = DefaultPartitioner::with_seed(1);
        for key in [&b"foobar"[..], b"", b"21", b"\xff\x00\x80"] {
            let want = partition_for_key(key, 12).unwrap();
            assert_eq!(dp.partition("t", Some(key), parts).unwrap(), want);
        }
        // "foobar" does not hash to 0, so availability really was ignored.
        assert_ne!(partition_for_key(b"foobar", 12).unwrap(), 0);
    }

    #[test]
    fn keyed_records_do_not_disturb_the_sticky_choice() {
        let parts = TopicPartitions::new(30).unwrap();
        let mut dp = DefaultPartitioner::with_seed(2);
        let stuck = dp.partition("t", None, parts).unwrap();
        for i in 0..50u32 {
            dp.partition("t", Some(&i.to_le_bytes()), parts).unwrap();
        }
        assert_eq!(dp.partition("t", None, parts).unwrap(), stuck);
        assert_eq!(dp.unkeyed().current("t"), Some(stuck));
        dp.on_new_batch("t", stuck);
        assert_ne!(dp.partition("t", None, parts).unwrap(), stuck);
    }

    #[test]
    fn unkeyed_strategy_is_pluggable() {
        let parts = TopicPartitions::new(3).unwrap();
        let mut dp = DefaultPartitioner::with_unkeyed(RoundRobinPartitioner::new());
        let got: Vec<i32> = (0..4)
            .map(|_| dp.partition("t", None, parts).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2, 0]);
    }
}
