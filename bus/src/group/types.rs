//! The names a group speaks in: a partition of a topic, and an offset to commit for one.

use std::sync::Arc;

/// One partition of one topic. Ordered by topic then partition, which is the order the
/// assignors hand partitions out in, so an assignment is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// An offset to commit: `offset` is the next record to read (the last processed + 1), as in
/// Kafka's OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPartitionOffset {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

impl TopicPartitionOffset {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32, offset: i64) -> Self {
        TopicPartitionOffset {
            topic: topic.into(),
            partition,
            offset,
            metadata: None,
        }
    }

    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}
