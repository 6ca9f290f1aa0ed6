//! What a partitioner is told about a topic's partitions at the moment it decides.

use std::num::{NonZeroU32, NonZeroU64};

use crate::PartitionError;
use crate::murmur2::to_positive;

/// A partition count already checked to be in `1..=i32::MAX`.
///
/// Keeping the check in one type means every `%` below divides by a `NonZero` value, so
/// division by zero is ruled out by the compiler rather than by a runtime guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PartitionCount(NonZeroU32);

impl PartitionCount {
    pub(crate) fn try_from_int(count: impl TryInto<i32>) -> Result<Self, PartitionError> {
        let count: i32 = count
            .try_into()
            .map_err(|_| PartitionError::PartitionCountOutOfRange)?;
        if count < 0 {
            return Err(PartitionError::PartitionCountOutOfRange);
        }
        NonZeroU32::new(count.unsigned_abs())
            .map(Self)
            .ok_or(PartitionError::NoPartitions)
    }

    /// The count as Kafka's wire type; lossless because construction caps it at `i32::MAX`.
    pub(crate) fn get(self) -> i32 {
        self.0.get() as i32
    }

    /// Java's `toPositive(hash) % count`.
    pub(crate) fn bucket(self, hash: i32) -> i32 {
        // `to_positive` leaves 31 bits, so the cast to u32 is exact; the remainder is below
        // the count and therefore fits back into i32.
        (to_positive(hash) as u32 % self.0) as i32
    }

    /// `value % count`, for counters and random draws wider than 32 bits.
    pub(crate) fn reduce(self, value: u64) -> i32 {
        (value % NonZeroU64::from(self.0)) as i32
    }

    pub(crate) fn contains(self, partition: i32) -> bool {
        (0..self.get()).contains(&partition)
    }
}

/// A topic's partition count plus, optionally, which partitions currently have a leader.
///
/// Java's partitioners read both from `Cluster`: keyed records hash over *all* partitions (a
/// key must not move just because its leader is briefly down), while records without a key
/// prefer partitions that can accept writes right now. An empty `available` list means "no
/// leader information" and every partition is a candidate, which is also what Java does when
/// no partition is available. Entries outside `0..count` are ignored rather than trusted, so
/// stale metadata can never yield an out-of-range partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPartitions<'a> {
    count: PartitionCount,
    available: &'a [i32],
}

impl<'a> TopicPartitions<'a> {
    /// Validates the count once so partitioners never have to: zero is
    /// [`PartitionError::NoPartitions`], negative or above `i32::MAX` is
    /// [`PartitionError::PartitionCountOutOfRange`].
    pub fn new(count: impl TryInto<i32>) -> Result<Self, PartitionError> {
        Ok(Self {
            count: PartitionCount::try_from_int(count)?,
            available: &[],
        })
    }

    /// Adds the partitions that currently have a leader (Java's
    /// `Cluster::availablePartitionsForTopic`), used only for records without a key.
    #[must_use]
    pub fn with_available(self, available: &'a [i32]) -> Self {
        Self { available, ..self }
    }

    /// The number of partitions, always at least 1.
    #[must_use]
    pub fn count(&self) -> i32 {
        self.count.get()
    }

    /// The leader-bearing partitions as given, including any out-of-range entries.
    #[must_use]
    pub fn available(&self) -> &'a [i32] {
        self.available
    }

    /// Whether `partition` exists in this topic.
    #[must_use]
    pub fn contains(&self, partition: i32) -> bool {
        self.count.contains(partition)
    }

    pub(crate) fn partition_count(&self) -> PartitionCount {
        self.count
    }

    /// The `available` entries that really are partitions of this topic.
    pub(crate) fn usable_available(&self) -> impl Iterator<Item = i32> + 'a {
        let count = self.count;
        self.available
            .iter()
            .copied()
            .filter(move |&p| count.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_is_validated() {
        assert_eq!(TopicPartitions::new(0), Err(PartitionError::NoPartitions));
        assert_eq!(
            TopicPartitions::new(-1),
            Err(PartitionError::PartitionCountOutOfRange)
        );
        assert_eq!(
            TopicPartitions::new(i64::from(i32::MAX) + 1),
            Err(PartitionError::PartitionCountOutOfRange)
        );
        assert_eq!(TopicPartitions::new(7usize).unwrap().count(), 7);
    }

    #[test]
    fn out_of_range_available_entries_are_not_usable() {
        let list = [2, -1, 9, 0, 3];
        let parts = TopicPartitions::new(4).unwrap().with_available(&list);
        assert_eq!(parts.usable_available().collect::<Vec<_>>(), vec![2, 0, 3]);
        assert_eq!(parts.available(), &list);
    }

    #[test]
    fn bucket_and_reduce_stay_in_range() {
        let count = PartitionCount::try_from_int(3).unwrap();
        assert_eq!(count.bucket(i32::MIN), 0);
        assert_eq!(count.bucket(-1), i32::MAX % 3);
        assert_eq!(count.reduce(u64::MAX), (u64::MAX % 3) as i32);
        assert!(count.contains(2));
        assert!(!count.contains(3));
        assert!(!count.contains(-1));
    }
}
