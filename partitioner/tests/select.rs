//! How a producer combines an explicit partition, a built-in or custom partitioner, and the
//! batch-completion signal.

use partitioner::{
    DefaultPartitioner, PartitionError, Partitioner, RoundRobinPartitioner, StickyPartitioner,
    TopicPartitions, partition_for_key, select_partition,
};

/// A user-supplied strategy: route by the first key byte, the kind of thing the trait exists
/// to allow.
struct FirstByte;

impl Partitioner for FirstByte {
    fn partition(
        &mut self,
        _topic: &str,
        key: Option<&[u8]>,
        partitions: TopicPartitions<'_>,
    ) -> Result<i32, PartitionError> {
        let first = key.and_then(|k| k.first()).copied().unwrap_or(0);
        Ok(i32::from(first) % partitions.count())
    }
}

/// A broken custom partitioner, to show its answers are checked rather than trusted.
struct Broken(i32);

impl Partitioner for Broken {
    fn partition(
        &mut self,
        _: &str,
        _: Option<&[u8]>,
        _: TopicPartitions<'_>,
    ) -> Result<i32, PartitionError> {
        Ok(self.0)
    }
}

fn parts(n: i32) -> TopicPartitions<'static> {
    TopicPartitions::new(n).unwrap()
}

#[test]
fn explicit_partition_wins_over_key_and_partitioner() {
    let mut partitioner = DefaultPartitioner::with_seed(1);
    let hashed = partition_for_key(b"foobar", 12).unwrap();
    let explicit = (hashed + 1) % 12;
    let got = select_partition(
        &mut partitioner,
        "t",
        Some(explicit),
        Some(b"foobar"),
        parts(12),
    );
    assert_eq!(got, Ok(explicit));
    // The sticky state was not touched by the explicit record.
    assert_eq!(partitioner.unkeyed().current("t"), None);
}

#[test]
fn explicit_partition_out_of_range_is_a_typed_error() {
    let mut partitioner = DefaultPartitioner::with_seed(1);
    for bad in [12, 13, -1, i32::MIN, i32::MAX] {
        assert_eq!(
            select_partition(&mut partitioner, "t", Some(bad), None, parts(12)),
            Err(PartitionError::ExplicitPartitionOutOfRange {
                partition: bad,
                count: 12
            })
        );
    }
}

#[test]
fn without_explicit_partition_the_partitioner_decides() {
    let mut partitioner = DefaultPartitioner::with_seed(1);
    assert_eq!(
        select_partition(&mut partitioner, "t", None, Some(b"21"), parts(100)),
        Ok(40)
    );
}

#[test]
fn custom_partitioners_plug_in_as_trait_objects() {
    let mut chosen: Vec<Box<dyn Partitioner>> = vec![
        Box::new(FirstByte),
        Box::new(DefaultPartitioner::with_seed(3)),
        Box::new(StickyPartitioner::with_seed(3)),
        Box::new(RoundRobinPartitioner::new()),
    ];
    let first_byte = &mut chosen[0];
    assert_eq!(
        select_partition(first_byte, "t", None, Some(b"\x07rest"), parts(5)),
        Ok(2)
    );
    for partitioner in &mut chosen {
        for key in [None, Some(&b"k"[..])] {
            let p = select_partition(partitioner, "t", None, key, parts(5)).unwrap();
            assert!((0..5).contains(&p));
            partitioner.on_new_batch("t", p);
        }
    }
}

#[test]
fn custom_partitioner_answers_are_range_checked() {
    for bad in [5, -1, i32::MAX] {
        assert_eq!(
            select_partition(&mut Broken(bad), "t", None, None, parts(5)),
            Err(PartitionError::PartitionerOutOfRange {
                partition: bad,
                count: 5
            })
        );
    }
    assert_eq!(
        select_partition(&mut Broken(4), "t", None, None, parts(5)),
        Ok(4)
    );
}

#[test]
fn java_style_abort_on_new_batch_flow_moves_the_record() {
    // Java's producer asks the partitioner, finds the batch full, calls onNewBatch with that
    // partition and asks again for the same record: the second answer must differ.
    let mut partitioner = DefaultPartitioner::with_seed(42);
    let topic = parts(8);
    let first = select_partition(&mut partitioner, "t", None, None, topic).unwrap();
    partitioner.on_new_batch("t", first);
    let retry = select_partition(&mut partitioner, "t", None, None, topic).unwrap();
    assert_ne!(first, retry);
    assert_eq!(partitioner.unkeyed().current("t"), Some(retry));
}

#[test]
fn sticky_spreads_evenly_over_many_batches() {
    let mut sticky = StickyPartitioner::with_seed(99);
    let topic = parts(10);
    let mut batches = [0u32; 10];
    for _ in 0..10_000 {
        let p = sticky.partition("t", None, topic).unwrap();
        batches[p as usize] += 1;
        sticky.on_new_batch("t", p);
    }
    // Uniform over 9 alternatives each time: every partition gets about 1,000 batches.
    for (p, &n) in batches.iter().enumerate() {
        assert!(
            (800..1200).contains(&n),
            "partition {p} got {n} of 10,000 batches"
        );
    }
}
