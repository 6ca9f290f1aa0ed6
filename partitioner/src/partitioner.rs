//! The extension point a producer calls for every record, and the one place an explicit
//! partition or a custom partitioner's answer is checked against the topic.

use crate::{PartitionError, TopicPartitions};

/// Chooses a partition for each record of a topic.
///
/// Shaped after Java's `org.apache.kafka.clients.producer.Partitioner`: `partition` is called
/// once per record, and `on_new_batch` tells stateful strategies (sticky) that the batch they
/// were filling is closed, which is their cue to move on. Methods take `&mut self` because
/// the built-in null-key strategies keep per-topic state; wrap in a `Mutex` to share one
/// between threads.
///
/// Implementations should return a partition in `0..partitions.count()`; [`select_partition`]
/// rejects anything else with a typed error instead of trusting it.
pub trait Partitioner {
    /// The partition for one record. `key` is `None` for a record without a key, which is
    /// different from an empty key: Java hashes an empty key like any other.
    fn partition(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        partitions: TopicPartitions<'_>,
    ) -> Result<i32, PartitionError>;

    /// Called when a batch for `prev_partition` of `topic` was completed (sent, or full so a
    /// new one is being started). Stateless partitioners need not care, hence the no-op
    /// default.
    fn on_new_batch(&mut self, topic: &str, prev_partition: i32) {
        let _ = (topic, prev_partition);
    }
}

impl<P: Partitioner + ?Sized> Partitioner for &mut P {
    fn partition(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        partitions: TopicPartitions<'_>,
    ) -> Result<i32, PartitionError> {
        (**self).partition(topic, key, partitions)
    }

    fn on_new_batch(&mut self, topic: &str, prev_partition: i32) {
        (**self).on_new_batch(topic, prev_partition);
    }
}

impl<P: Partitioner + ?Sized> Partitioner for Box<P> {
    fn partition(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        partitions: TopicPartitions<'_>,
    ) -> Result<i32, PartitionError> {
        (**self).partition(topic, key, partitions)
    }

    fn on_new_batch(&mut self, topic: &str, prev_partition: i32) {
        (**self).on_new_batch(topic, prev_partition);
    }
}

/// The producer's full decision for one record: an explicit partition wins, otherwise the
/// partitioner decides; either way the result is checked against the topic.
///
/// Mirrors Java's `KafkaProducer`, which uses `ProducerRecord.partition()` when set and never
/// consults the partitioner for such a record. Java only rejects negative partitioner
/// results; here an answer beyond the partition count is rejected too, because it can only
/// come from a bug or from metadata the partitioner should not have guessed at.
pub fn select_partition<P: Partitioner + ?Sized>(
    partitioner: &mut P,
    topic: &str,
    explicit: Option<i32>,
    key: Option<&[u8]>,
    partitions: TopicPartitions<'_>,
) -> Result<i32, PartitionError> {
    let count = partitions.count();
    if let Some(partition) = explicit {
        return if partitions.contains(partition) {
            Ok(partition)
        } else {
            Err(PartitionError::ExplicitPartitionOutOfRange { partition, count })
        };
    }
    let partition = partitioner.partition(topic, key, partitions)?;
    if partitions.contains(partition) {
        Ok(partition)
    } else {
        Err(PartitionError::PartitionerOutOfRange { partition, count })
    }
}
