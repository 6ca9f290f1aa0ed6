use thiserror::Error;

/// Why a record could not be given a partition.
///
/// Every variant is a caller or metadata mistake that a producer should surface rather than
/// paper over: silently clamping a partition number would put a record where no consumer of
/// that key expects it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// A topic with zero partitions has nowhere to put a record; `hash % 0` must not be
    /// attempted.
    #[error("the topic has no partitions, so there is nowhere to place the record")]
    NoPartitions,

    /// Kafka numbers partitions with a signed 32-bit integer, so a negative count or one above
    /// `i32::MAX` cannot describe a real topic.
    #[error("partition count is negative or above i32::MAX, which Kafka cannot represent")]
    PartitionCountOutOfRange,

    /// The caller asked for a specific partition that the topic does not have.
    #[error("explicit partition {partition} is not in the topic's range 0..{count}")]
    ExplicitPartitionOutOfRange {
        /// The partition the record asked for.
        partition: i32,
        /// How many partitions the topic has.
        count: i32,
    },

    /// A (custom) partitioner chose a partition the topic does not have; sending there would
    /// fail at the broker or, worse, land on a partition created later.
    #[error("the partitioner chose partition {partition}, outside the topic's range 0..{count}")]
    PartitionerOutOfRange {
        /// The partition the partitioner returned.
        partition: i32,
        /// How many partitions the topic has.
        count: i32,
    },

    /// The bus key is `domain ‖ 0x00 ‖ root`; a NUL inside the domain would make two different
    /// (domain, root) pairs produce the same key bytes, and so the same partition by accident.
    #[error("bus domain contains a NUL byte at offset {position}; NUL separates domain from root")]
    DomainContainsNul {
        /// Byte offset of the first NUL in the domain.
        position: usize,
    },
}
