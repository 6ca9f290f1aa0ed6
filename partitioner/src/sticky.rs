//! KIP-480's sticky choice for records without a key.
//!
//! Spreading unkeyed records one by one over all partitions makes many small batches and so
//! many requests; KIP-480 measured large latency wins from instead filling one partition's
//! batch and only then moving on. Over time every partition still receives a fair share.

use std::collections::HashMap;

use crate::partitions::TopicPartitions;
use crate::rng::{RandomSource, SplitMix64, below};
use crate::{PartitionError, Partitioner};

/// Where one topic's unkeyed records are going, and where they just stopped going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stick {
    /// The partition every unkeyed record goes to until its batch completes.
    current: Option<i32>,
    /// The partition whose batch just completed; the next choice avoids it when it can.
    retired: Option<i32>,
}

/// Sends every record of a topic to one partition until told that partition's batch is done
/// (KIP-480; Java's `StickyPartitionCache` / `UniformStickyPartitioner`).
///
/// Keys are ignored: use [`DefaultPartitioner`](crate::DefaultPartitioner) to hash keyed
/// records and stick only the unkeyed ones. The choice is lazy: [`on_new_batch`] retires the
/// current partition and the next [`partition`] call picks a new one, uniformly among the
/// available partitions other than the retired one when there are any, like Java. Unlike
/// Java, which may re-pick the same partition when none has a leader, the retired partition
/// is also avoided in that case whenever the topic has more than one partition, so a
/// completed batch always moves the stream along.
///
/// [`on_new_batch`]: Partitioner::on_new_batch
/// [`partition`]: Partitioner::partition
#[derive(Debug, Clone)]
pub struct StickyPartitioner<R = SplitMix64> {
    rng: R,
    topics: HashMap<String, Stick>,
}

impl StickyPartitioner {
    /// Seeded per process, so that producers started together do not all begin on the same
    /// partition; use [`with_seed`](Self::with_seed) where choices must be reproducible.
    #[must_use]
    pub fn new() -> Self {
        Self::with_rng(SplitMix64::from_entropy())
    }

    /// Reproducible choices: the same seed and the same calls give the same partitions.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        Self::with_rng(SplitMix64::new(seed))
    }
}

impl Default for StickyPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: RandomSource> StickyPartitioner<R> {
    /// Lets tests script the choices exactly, or a caller bring its own generator.
    pub fn with_rng(rng: R) -> Self {
        Self {
            rng,
            topics: HashMap::new(),
        }
    }

    /// The partition unkeyed records of `topic` currently stick to, if one has been chosen
    /// and not retired; useful for metrics and for tests.
    #[must_use]
    pub fn current(&self, topic: &str) -> Option<i32> {
        self.topics.get(topic).and_then(|s| s.current)
    }

    fn choose(&mut self, retired: Option<i32>, partitions: TopicPartitions<'_>) -> i32 {
        let is_fresh = |p: i32| Some(p) != retired;

        // Prefer partitions with a leader that are not the one just left.
        let fresh_available = partitions
            .usable_available()
            .filter(|&p| is_fresh(p))
            .count();
        if fresh_available > 0 {
            let skip = below(&mut self.rng, saturating_u32(fresh_available)) as usize;
            if let Some(p) = partitions
                .usable_available()
                .filter(|&p| is_fresh(p))
                .nth(skip)
            {
                return p;
            }
        }
        // The only partition with a leader is the one just left: stay, as Java does.
        if let Some(p) = partitions.usable_available().next() {
            return p;
        }

        // No leader information: any partition, but not the one just left if there is
        // another. Drawing from `count - 1` slots and stepping over the retired one keeps the
        // choice uniform without a retry loop.
        let count = partitions.partition_count();
        match retired.filter(|&r| count.contains(r) && count.get() > 1) {
            Some(r) => {
                let slot = below(&mut self.rng, count.get().unsigned_abs() - 1) as i32;
                if slot >= r { slot + 1 } else { slot }
            }
            None => count.reduce(self.rng.next_u64()),
        }
    }
}

impl<R: RandomSource> Partitioner for StickyPartitioner<R> {
    fn partition(
        &mut self,
        topic: &str,
        _key: Option<&[u8]>,
        partitions: TopicPartitions<'_>,
    ) -> Result<i32, PartitionError> {
        let stick = self.topics.get(topic).copied().unwrap_or_default();
        if let Some(current) = stick.current
            && partitions.contains(current)
        {
            return Ok(current);
        }
        // Either nothing chosen yet, the batch completed, or metadata shrank below the
        // remembered partition: choose afresh.
        let chosen = self.choose(stick.retired, partitions);
        let entry = self.topics.entry(topic.to_owned()).or_default();
        *entry = Stick {
            current: Some(chosen),
            retired: None,
        };
        Ok(chosen)
    }

    fn on_new_batch(&mut self, topic: &str, prev_partition: i32) {
        // Only the batch we are sticking to counts: a late notice about some other partition
        // (Java's `indexCache.replace(topic, prev, new)` guard) must not cause a switch.
        if let Some(stick) = self.topics.get_mut(topic)
            && stick.current == Some(prev_partition)
        {
            *stick = Stick {
                current: None,
                retired: Some(prev_partition),
            };
        }
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(count: i32) -> TopicPartitions<'static> {
        TopicPartitions::new(count).unwrap()
    }

    #[test]
    fn sticks_until_its_batch_is_done_then_moves_elsewhere() {
        let mut sticky = StickyPartitioner::with_seed(1);
        let first = sticky.partition("t", None, parts(6)).unwrap();
        for _ in 0..100 {
            assert_eq!(sticky.partition("t", None, parts(6)).unwrap(), first);
        }
        for _ in 0..200 {
            let before = sticky.partition("t", None, parts(6)).unwrap();
            sticky.on_new_batch("t", before);
            assert_eq!(sticky.current("t"), None);
            let after = sticky.partition("t", None, parts(6)).unwrap();
            assert_ne!(after, before, "a completed batch must move the stream");
            assert!((0..6).contains(&after));
        }
    }

    #[test]
    fn notice_about_another_partition_does_not_switch() {
        let mut sticky = StickyPartitioner::with_seed(2);
        let p = sticky.partition("t", None, parts(4)).unwrap();
        sticky.on_new_batch("t", (p + 1) % 4);
        assert_eq!(sticky.current("t"), Some(p));
        sticky.on_new_batch("other-topic", p);
        assert_eq!(sticky.partition("t", None, parts(4)).unwrap(), p);
    }

    #[test]
    fn topics_stick_independently() {
        let mut sticky = StickyPartitioner::with_seed(3);
        let a = sticky.partition("a", None, parts(50)).unwrap();
        let b = sticky.partition("b", None, parts(50)).unwrap();
        sticky.on_new_batch("a", a);
        assert_eq!(sticky.current("b"), Some(b));
        assert_eq!(sticky.current("a"), None);
    }

    #[test]
    fn single_partition_topic_stays_put() {
        let mut sticky = StickyPartitioner::with_seed(4);
        for _ in 0..10 {
            let p = sticky.partition("t", None, parts(1)).unwrap();
            assert_eq!(p, 0);
            sticky.on_new_batch("t", p);
        }
    }

    #[test]
    fn picks_only_available_partitions_when_known() {
        let available = [1, 4, 6];
        let topic = parts(8).with_available(&available);
        let mut sticky = StickyPartitioner::with_seed(5);
        let mut seen = Vec::new();
        for _ in 0..300 {
            let p = sticky.partition("t", None, topic).unwrap();
            assert!(available.contains(&p), "{p} has no leader");
            seen.push(p);
            sticky.on_new_batch("t", p);
        }
        for p in available {
            assert!(seen.contains(&p), "partition {p} never chosen");
        }
        assert!(seen.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn lone_available_partition_is_reused_after_its_batch() {
        let topic = parts(5).with_available(&[3]);
        let mut sticky = StickyPartitioner::with_seed(6);
        for _ in 0..5 {
            let p = sticky.partition("t", None, topic).unwrap();
            assert_eq!(p, 3);
            sticky.on_new_batch("t", p);
        }
    }

    #[test]
    fn bogus_available_entries_fall_back_to_all_partitions() {
        let topic = parts(3).with_available(&[-1, 7, 3]);
        let mut sticky = StickyPartitioner::with_seed(7);
        for _ in 0..50 {
            let p = sticky.partition("t", None, topic).unwrap();
            assert!((0..3).contains(&p));
            sticky.on_new_batch("t", p);
        }
    }

    #[test]
    fn shrunken_metadata_forces_a_new_in_range_choice() {
        let mut sticky = StickyPartitioner::with_seed(8);
        // Find a seed-determined sticky partition >= 2 on a wide topic.
        let mut p = sticky.partition("t", None, parts(100)).unwrap();
        while p < 2 {
            sticky.on_new_batch("t", p);
            p = sticky.partition("t", None, parts(100)).unwrap();
        }
        let q = sticky.partition("t", None, parts(2)).unwrap();
        assert!((0..2).contains(&q));
    }

    #[test]
    fn same_seed_replays_the_same_choices() {
        let run = |seed| {
            let mut sticky = StickyPartitioner::with_seed(seed);
            (0..50)
                .map(|_| {
                    let p = sticky.partition("t", None, parts(16)).unwrap();
                    sticky.on_new_batch("t", p);
                    p
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    /// Scripted randomness: each draw is the next value of a counter.
    struct Counter(u64);
    impl RandomSource for Counter {
        fn next_u64(&mut self) -> u64 {
            self.0 += 1;
            self.0
        }
    }

    #[test]
    fn injected_source_drives_the_choice() {
        let mut sticky = StickyPartitioner::with_rng(Counter(0));
        // First choice, no retired partition: 1 % 5.
        assert_eq!(sticky.partition("t", None, parts(5)).unwrap(), 1);
        sticky.on_new_batch("t", 1);
        // A tiny draw lands in slot 0 of the four partitions other than 1.
        assert_eq!(sticky.partition("t", None, parts(5)).unwrap(), 0);
    }
}
