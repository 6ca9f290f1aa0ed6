//! Frozen answers for the keyed mapping.
//!
//! DO NOT EDIT THE TABLES IN THIS FILE TO MAKE A TEST PASS.
//!
//! Each row says which partition a key lives on. Users' data is already stored according to
//! these answers: if the code ever disagrees with a row, the code has a bug that would
//! silently reshuffle every keyed topic (breaking per-key ordering and compaction, and
//! disagreeing with Java, librdkafka and kafka-python producers). Fix the code; never
//! "update" the table.
//!
//! Provenance: the hashes and partitions were produced by kafka-python 2.0.2's pure-Python
//! `murmur2` and `DefaultPartitioner` (an implementation independent of this crate), and the
//! first block of `murmur2` vectors is copied from Apache Kafka's own `UtilsTest.testMurmur2`.

use partitioner::{
    DefaultPartitioner, PartitionError, Partitioner, TopicPartitions, murmur2, partition_for_key,
    to_positive,
};

/// Apache Kafka's `UtilsTest.testMurmur2` vectors: the reference the Java client tests itself
/// against.
const KAFKA_MURMUR2_VECTORS: &[(&[u8], i32)] = &[
    (b"21", -973_932_308),
    (b"foobar", -790_332_482),
    (b"a-little-bit-long-string", -985_981_536),
    (b"a-little-bit-longer-string", -1_486_304_829),
    (
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
        -58_897_971,
    ),
    // Kafka spells this one `new byte[] {'a', 'b', 'c'}`.
    (b"abc", 479_470_107),
];

#[test]
fn matches_kafka_utils_test_murmur2_vectors() {
    for &(key, want) in KAFKA_MURMUR2_VECTORS {
        assert_eq!(
            murmur2(key),
            want,
            "murmur2({:?}) differs from Kafka's UtilsTest",
            String::from_utf8_lossy(key)
        );
    }
}

/// Partition counts of the columns in [`GOLDEN`].
const COUNTS: [i32; 4] = [1, 3, 12, 100];

/// key, Java `murmur2(key)`, partition for 1, 3, 12 and 100 partitions. FROZEN: see the
/// file header before touching it.
#[rustfmt::skip]
const GOLDEN: &[(&[u8], i32, [i32; 4])] = &[
    // Lengths 0..=9: every tail case (0, 1, 2, 3 leftover bytes) with and without full blocks.
    (b"", 275646681, [0, 0, 9, 81]),
    (b"a", -1563381124, [0, 1, 4, 24]),
    (b"ab", 316155434, [0, 2, 2, 34]),
    (b"abc", 479470107, [0, 0, 3, 7]),
    (b"abcd", -1323649548, [0, 2, 8, 0]),
    (b"abcde", 461995741, [0, 1, 1, 41]),
    (b"abcdef", 1870650108, [0, 0, 0, 8]),
    (b"abcdefg", -346467175, [0, 1, 1, 73]),
    (b"abcdefgh", -955427363, [0, 0, 9, 85]),
    (b"abcdefghi", -619679810, [0, 0, 6, 38]),
    // Kafka's own vectors, now with their partitions.
    (b"21", -973932308, [0, 0, 0, 40]),
    (b"foobar", -790332482, [0, 0, 6, 66]),
    (b"a-little-bit-long-string", -985981536, [0, 2, 8, 12]),
    (b"a-little-bit-longer-string", -1486304829, [0, 2, 11, 19]),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, [0, 2, 5, 77]),
    // Typical application keys.
    (b"user-1", 1404122828, [0, 2, 8, 28]),
    (b"user-2", -324981792, [0, 2, 8, 56]),
    (b"12345", -1188365604, [0, 2, 8, 44]),
    (b"3f2504e0-4f89-11d3-9a0c-0305e82c3301", 149263511, [0, 2, 11, 11]),
    // UTF-8 multi-byte: bytes >= 0x80 everywhere, which Java must not sign-extend.
    ("héllo".as_bytes(), 614509002, [0, 0, 6, 2]),
    ("日本語".as_bytes(), 1431860170, [0, 1, 10, 70]),
    ("🦀".as_bytes(), 1309741855, [0, 1, 7, 55]),
    ("Grüße".as_bytes(), 1190824359, [0, 0, 3, 59]),
    ("ключ".as_bytes(), 2122343024, [0, 2, 8, 24]),
    ("order-ü-42".as_bytes(), -2073482569, [0, 1, 7, 79]),
    // Binary keys, high-bit bytes in block and in each tail position.
    (&[0x00], 375494588, [0, 2, 8, 88]),
    (&[0xff], -311467685, [0, 0, 3, 63]),
    (&[0x80], 857690492, [0, 2, 8, 92]),
    (&[0x00, 0x00, 0x00, 0x00], 850957120, [0, 1, 4, 20]),
    (&[0xff, 0xff, 0xff, 0xff], 644171429, [0, 2, 5, 29]),
    (&[0xff, 0xff, 0xff, 0xff, 0xff], -363838622, [0, 0, 6, 26]),
    (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 28450676, [0, 2, 8, 76]),
    (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], -71293549, [0, 1, 7, 99]),
    (&[0x80, 0x81, 0x82], -1975640061, [0, 2, 11, 87]),
    (&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03], 571205928, [0, 0, 0, 28]),
    (&[0x7f, 0x80, 0xff, 0x00, 0xfe, 0x01, 0xfd, 0x02, 0xfc], -1412650313, [0, 0, 3, 35]),
    // A long key: many blocks plus a tail.
    (b"The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. Sphinx of black quartz, judge my vow!", 1848283158, [0, 0, 6, 58]),
];

#[test]
fn golden_murmur2_hashes_never_change() {
    for &(key, hash, _) in GOLDEN {
        assert_eq!(
            murmur2(key),
            hash,
            "murmur2 changed for key {key:02x?}: this would move the key to another partition. \
             Fix the code, do not update the table."
        );
    }
}

#[test]
fn golden_key_partitions_never_change() {
    for &(key, _, partitions) in GOLDEN {
        for (count, want) in COUNTS.into_iter().zip(partitions) {
            assert_eq!(
                partition_for_key(key, count),
                Ok(want),
                "key {key:02x?} moved partition at {count} partitions: this reshuffles users' \
                 data. Fix the code, do not update the table."
            );
        }
    }
}

#[test]
fn default_partitioner_agrees_with_the_golden_table() {
    let mut partitioner = DefaultPartitioner::with_seed(0);
    for &(key, _, partitions) in GOLDEN {
        for (count, want) in COUNTS.into_iter().zip(partitions) {
            let topic = TopicPartitions::new(count).unwrap();
            assert_eq!(partitioner.partition("golden", Some(key), topic), Ok(want));
        }
    }
}

#[test]
fn golden_partitions_are_the_java_formula() {
    // Guards the table itself against a hand edit that breaks its internal consistency.
    for &(_, hash, partitions) in GOLDEN {
        for (count, got) in COUNTS.into_iter().zip(partitions) {
            assert_eq!(got, to_positive(hash) % count);
        }
    }
}

#[test]
fn golden_table_keeps_its_coverage() {
    // The table is only a guard if it exercises every branch of the hash: every length mod 4
    // with and without full blocks, high-bit bytes in each tail position, and a long key.
    assert!(GOLDEN.len() >= 30);
    for len in 0..=9 {
        assert!(
            GOLDEN.iter().any(|(k, ..)| k.len() == len),
            "no key of length {len}"
        );
    }
    for tail in 1..=3 {
        assert!(
            GOLDEN.iter().any(
                |(k, ..)| k.len() % 4 == tail && k[k.len() - tail..].iter().all(|&b| b >= 0x80)
            ),
            "no key whose {tail}-byte tail is all high-bit bytes"
        );
    }
    assert!(GOLDEN.iter().any(|(k, ..)| k.len() > 64));
    assert!(GOLDEN.iter().any(|(k, ..)| std::str::from_utf8(k).is_err()));
    assert!(
        GOLDEN.iter().any(
            |(k, ..)| std::str::from_utf8(k).is_ok_and(|s| s.chars().any(|c| c.len_utf8() > 1))
        )
    );
}

#[test]
fn zero_partitions_is_a_typed_error() {
    for &(key, ..) in GOLDEN {
        assert_eq!(partition_for_key(key, 0), Err(PartitionError::NoPartitions));
    }
    assert_eq!(
        TopicPartitions::new(0u32),
        Err(PartitionError::NoPartitions)
    );
}
