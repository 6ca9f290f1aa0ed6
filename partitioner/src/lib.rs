//! Which partition a Kafka record goes to, decided exactly as the Java client decides it.
//!
//! A record's partition is data, not an implementation detail: per-key ordering, log
//! compaction and consumers that own a partition's keys all assume that a key always lands
//! on the same partition, whichever client wrote it. So the keyed path is a bit-exact copy of
//! the Java producer's behaviour rather than "a good hash":
//!
//! - **Keyed records**: `toPositive(murmur2(key)) % partitions` ([`partition_for_key`]),
//!   the mapping of Java's `DefaultPartitioner` (up to 3.2) and of
//!   `BuiltInPartitioner.partitionForKey` (3.3 on), also used by librdkafka's
//!   `murmur2_random` and kafka-python. Keys always hash over all partitions, never only the
//!   ones that currently have a leader.
//! - **Records without a key**: KIP-480 sticky partitioning ([`StickyPartitioner`]). Java's
//!   `DefaultPartitioner` since 2.4 fills one partition's batch and moves to a different,
//!   preferably available, partition only when that batch is done, because many tiny batches
//!   cost far more than a temporary imbalance. The producer signals "batch done" through
//!   [`Partitioner::on_new_batch`]. Java 3.3's `BuiltInPartitioner` (KIP-794) additionally
//!   switches after a byte budget and weighs partitions by queue depth; that adaptive part
//!   needs the accumulator's state and is not modelled here. [`RoundRobinPartitioner`]
//!   mirrors Java's `RoundRobinPartitioner` for callers who want strict rotation.
//! - **Explicit partition**: a record that names its partition bypasses the partitioner,
//!   as in Java; [`select_partition`] applies that rule and range-checks every answer.
//! - **Event bus**: [`bus_partition`] places `(domain, root)` by the Java mapping of
//!   `domain ‖ 0x00 ‖ root` ([`bus_key`]), so other clients can reproduce it.
//!
//! # Stability promise
//!
//! [`murmur2`], [`partition_for_key`], [`bus_key`] and [`bus_partition`] are frozen: for a
//! given input and partition count they return the same answer in every release, on every
//! platform, forever, and the tests pin them with Kafka's published vectors and golden
//! tables. Changing them would silently move existing keys to other partitions, reordering
//! and scattering users' data; if a different mapping is ever wanted it will be a new
//! function beside these. (Adding partitions to a topic moves keys by the nature of
//! `hash % n`; that is the operator's decision, not a change in this crate.) Where unkeyed
//! records go is deliberately *not* promised: it depends on batching and randomness, which
//! is injectable ([`RandomSource`], [`SplitMix64`]) so tests can replay it.
//!
//! Nothing here panics on any input: a topic with zero partitions, a count beyond Kafka's
//! `i32` range or an out-of-range answer is a [`PartitionError`].
//!
//! ```
//! use partitioner::{DefaultPartitioner, Partitioner, TopicPartitions, select_partition};
//!
//! // Same answer as Java's producer for the key "foobar" on a 12-partition topic.
//! assert_eq!(partitioner::partition_for_key(b"foobar", 12), Ok(6));
//!
//! let mut producer_side = DefaultPartitioner::with_seed(7);
//! let topic = TopicPartitions::new(12)?;
//! let sticky = select_partition(&mut producer_side, "events", None, None, topic)?;
//! // ...append records to `sticky` until its batch is sent, then:
//! producer_side.on_new_batch("events", sticky);
//! assert_ne!(select_partition(&mut producer_side, "events", None, None, topic)?, sticky);
//! # Ok::<(), partitioner::PartitionError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bus;
mod default;
mod error;
mod murmur2;
mod partitioner;
mod partitions;
mod rng;
mod round_robin;
mod sticky;

pub use bus::{BUS_KEY_SEPARATOR, bus_key, bus_partition};
pub use default::DefaultPartitioner;
pub use error::PartitionError;
pub use murmur2::{murmur2, partition_for_key, to_positive};
pub use partitioner::{Partitioner, select_partition};
pub use partitions::TopicPartitions;
pub use rng::{RandomSource, SplitMix64};
pub use round_robin::RoundRobinPartitioner;
pub use sticky::StickyPartitioner;
