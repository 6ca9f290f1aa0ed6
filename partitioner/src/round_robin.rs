//! Strict rotation for callers who want even record counts per partition more than they want
//! big batches.

use std::collections::HashMap;

use crate::partitions::TopicPartitions;
use crate::{PartitionError, Partitioner};

/// Cycles through a topic's partitions one record at a time, ignoring keys, like Java's
/// `RoundRobinPartitioner`.
///
/// Each topic has its own counter starting at partition 0, so the sequence is deterministic
/// without any randomness. When leader information is given, the rotation runs over the
/// available partitions only. Batch completion does not affect the rotation: Java's version
/// once skipped partitions because `onNewBatch` re-ran the partitioner (KAFKA-9965), and here
/// [`on_new_batch`](Partitioner::on_new_batch) is deliberately a no-op.
#[derive(Debug, Clone, Default)]
pub struct RoundRobinPartitioner {
    counters: HashMap<String, u64>,
}

impl RoundRobinPartitioner {
    /// A fresh rotation for every topic.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(
        &mut self,
        topic: &str,
        _key: Option<&[u8]>,
        partitions: TopicPartitions<'_>,
    ) -> Result<i32, PartitionError> {
        // Look up before inserting so the topic name is only copied on its first record.
        let n = match self.counters.get_mut(topic) {
            Some(counter) => {
                let n = *counter;
                *counter = n.wrapping_add(1);
                n
            }
            None => {
                self.counters.insert(topic.to_owned(), 1);
                0
            }
        };

        let usable = partitions.usable_available().count() as u64;
        if usable > 0
            && let Some(p) = partitions.usable_available().nth((n % usable) as usize)
        {
            return Ok(p);
        }
        Ok(partitions.partition_count().reduce(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_partition_in_order_then_wraps() {
        let mut rr = RoundRobinPartitioner::new();
        let parts = TopicPartitions::new(4).unwrap();
        let got: Vec<i32> = (0..10)
            .map(|_| rr.partition("t", Some(b"keys are ignored"), parts).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]);
    }

    #[test]
    fn each_topic_has_its_own_rotation() {
        let mut rr = RoundRobinPartitioner::new();
        let parts = TopicPartitions::new(3).unwrap();
        assert_eq!(rr.partition("a", None, parts).unwrap(), 0);
        assert_eq!(rr.partition("a", None, parts).unwrap(), 1);
        assert_eq!(rr.partition("b", None, parts).unwrap(), 0);
        assert_eq!(rr.partition("a", None, parts).unwrap(), 2);
    }

    #[test]
    fn rotates_over_available_partitions_only() {
        let mut rr = RoundRobinPartitioner::new();
        let available = [5, 2, 9, 42];
        let parts = TopicPartitions::new(10).unwrap().with_available(&available);
        let got: Vec<i32> = (0..6)
            .map(|_| rr.partition("t", None, parts).unwrap())
            .collect();
        // 42 is not a partition of a 10-partition topic and is skipped.
        assert_eq!(got, [5, 2, 9, 5, 2, 9]);
    }

    #[test]
    fn batch_completion_does_not_skip_partitions() {
        let mut rr = RoundRobinPartitioner::new();
        let parts = TopicPartitions::new(3).unwrap();
        let mut got = Vec::new();
        for _ in 0..6 {
            let p = rr.partition("t", None, parts).unwrap();
            rr.on_new_batch("t", p);
            got.push(p);
        }
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
    }
}
