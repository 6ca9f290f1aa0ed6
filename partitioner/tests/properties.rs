//! Properties that must hold for every input, not just the golden rows: answers in range,
//! no panics, and the bus key staying injective.

use partitioner::{
    DefaultPartitioner, PartitionError, Partitioner, RoundRobinPartitioner, StickyPartitioner,
    TopicPartitions, bus_key, bus_partition, murmur2, partition_for_key, to_positive,
};
use proptest::prelude::*;

proptest! {
    #[test]
    fn keyed_partition_is_in_range_and_is_the_java_formula(
        key in proptest::collection::vec(any::<u8>(), 0..200),
        count in 1..=i32::MAX,
    ) {
        let p = partition_for_key(&key, count).unwrap();
        prop_assert!((0..count).contains(&p));
        prop_assert_eq!(p, to_positive(murmur2(&key)) % count);
    }

    #[test]
    fn non_positive_counts_never_panic(key in any::<Vec<u8>>(), count in i32::MIN..=0) {
        let err = partition_for_key(&key, count).unwrap_err();
        let want = if count == 0 {
            PartitionError::NoPartitions
        } else {
            PartitionError::PartitionCountOutOfRange
        };
        prop_assert_eq!(err, want);
    }

    #[test]
    fn bus_key_splits_back_into_domain_and_root(
        domain in proptest::collection::vec(1u8..=255, 0..20),
        root in any::<Vec<u8>>(),
    ) {
        let key = bus_key(&domain, &root).unwrap();
        let nul = key.iter().position(|&b| b == 0).unwrap();
        prop_assert_eq!(&key[..nul], &domain[..]);
        prop_assert_eq!(&key[nul + 1..], &root[..]);
    }

    #[test]
    fn bus_partition_is_the_keyed_partition_of_the_bus_key(
        domain in "[^\u{0}]{0,16}",
        root in ".{0,32}",
        count in 1..1000i32,
    ) {
        let key = bus_key(&domain, &root).unwrap();
        prop_assert_eq!(bus_partition(&domain, &root, count), partition_for_key(&key, count));
    }

    #[test]
    fn domain_with_nul_is_rejected(
        before in proptest::collection::vec(1u8..=255, 0..8),
        after in any::<Vec<u8>>(),
    ) {
        let mut domain = before.clone();
        domain.push(0);
        domain.extend(after);
        prop_assert_eq!(
            bus_key(&domain, b"root"),
            Err(PartitionError::DomainContainsNul { position: before.len() })
        );
    }

    #[test]
    fn built_in_partitioners_stay_in_range_whatever_the_metadata(
        seed in any::<u64>(),
        count in 1..64i32,
        available in proptest::collection::vec(any::<i32>(), 0..10),
        steps in proptest::collection::vec((any::<bool>(), any::<bool>(), -2..70i32), 1..60),
    ) {
        let topic = TopicPartitions::new(count).unwrap().with_available(&available);
        let mut all: [Box<dyn Partitioner>; 3] = [
            Box::new(StickyPartitioner::with_seed(seed)),
            Box::new(RoundRobinPartitioner::new()),
            Box::new(DefaultPartitioner::with_seed(seed)),
        ];
        for partitioner in &mut all {
            for &(keyed, notify, stray) in &steps {
                let key = keyed.then_some(&b"key"[..]);
                let p = partitioner.partition("t", key, topic).unwrap();
                prop_assert!((0..count).contains(&p));
                // Batch notices may name any partition, including ones that do not exist.
                partitioner.on_new_batch("t", if notify { p } else { stray });
            }
        }
    }
}
