//! Frozen answers for the event bus's placement rule.
//!
//! DO NOT EDIT THE TABLE IN THIS FILE TO MAKE A TEST PASS.
//!
//! Every event already on the bus sits on the partition these rows name; a root's events stay
//! ordered only because they all land there. If the code disagrees with a row, the code is
//! wrong and would reshuffle users' data and split roots across partitions. Fix the code;
//! never "update" the table.
//!
//! Provenance: partitions computed by kafka-python 2.0.2's `DefaultPartitioner` on the key
//! bytes `domain ‖ 0x00 ‖ root`, i.e. what a Java/librdkafka/kafka-python producer sending
//! that key does.

use partitioner::{BUS_KEY_SEPARATOR, PartitionError, bus_key, bus_partition, murmur2};

const COUNTS: [i32; 4] = [1, 3, 12, 100];

/// domain, root, Java `murmur2(domain ‖ 0x00 ‖ root)`, partition for 1, 3, 12 and 100
/// partitions. FROZEN: see the file header before touching it.
#[rustfmt::skip]
const BUS_GOLDEN: &[(&str, &str, i32, [i32; 4])] = &[
    ("orders", "order-42", -825507448, [0, 1, 4, 0]),
    ("ab", "c", -331682719, [0, 1, 1, 29]),
    ("a", "bc", -1502856703, [0, 1, 1, 45]),
    ("", "", 375494588, [0, 2, 8, 88]),
    ("", "root", 1971850967, [0, 2, 11, 67]),
    ("domain", "", 242750365, [0, 1, 1, 65]),
    ("payments", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", 925120064, [0, 2, 8, 64]),
    ("inventory", "sku-0001", 694923030, [0, 0, 6, 30]),
    ("inventory", "sku-0002", -1236149758, [0, 1, 10, 90]),
    ("ユーザー", "ユーザー-7", -2067143347, [0, 1, 1, 1]),
    ("billing", "root\0with-nul", 572144841, [0, 0, 9, 41]),
    ("billing", "acct-1", -313039506, [0, 2, 2, 42]),
    ("billing", "acct-2", -1018469788, [0, 1, 4, 60]),
    ("x", "y", 632346061, [0, 1, 1, 61]),
    ("shipping.eu-west", "parcel/2024/000017", 1667140394, [0, 2, 2, 94]),
];

#[test]
fn bus_keys_are_domain_nul_root() {
    for &(domain, root, ..) in BUS_GOLDEN {
        let mut want = domain.as_bytes().to_vec();
        want.push(0x00);
        want.extend_from_slice(root.as_bytes());
        assert_eq!(bus_key(domain, root), Ok(want));
    }
    assert_eq!(BUS_KEY_SEPARATOR, 0x00);
}

#[test]
fn bus_key_hashes_never_change() {
    for &(domain, root, hash, _) in BUS_GOLDEN {
        assert_eq!(
            murmur2(&bus_key(domain, root).unwrap()),
            hash,
            "bus key hash changed for ({domain:?}, {root:?}). Fix the code, do not update the table."
        );
    }
}

#[test]
fn bus_partitions_never_change() {
    for &(domain, root, _, partitions) in BUS_GOLDEN {
        for (count, want) in COUNTS.into_iter().zip(partitions) {
            assert_eq!(
                bus_partition(domain, root, count),
                Ok(want),
                "({domain:?}, {root:?}) moved partition at {count} partitions: this reshuffles \
                 users' data. Fix the code, do not update the table."
            );
        }
    }
}

#[test]
fn shifted_split_lands_elsewhere() {
    // Without the separator both pairs would be the key "abc" and always share a partition.
    assert_ne!(bus_partition("ab", "c", 100), bus_partition("a", "bc", 100));
    assert_ne!(murmur2(&bus_key("ab", "c").unwrap()), murmur2(b"abc"));
}

#[test]
fn nul_in_domain_and_zero_partitions_are_typed_errors() {
    assert_eq!(
        bus_key("bad\0domain", "root"),
        Err(PartitionError::DomainContainsNul { position: 3 })
    );
    assert_eq!(
        bus_partition("bad\0domain", "root", 12),
        Err(PartitionError::DomainContainsNul { position: 3 })
    );
    assert_eq!(
        bus_partition("orders", "order-42", 0),
        Err(PartitionError::NoPartitions)
    );
}

#[test]
fn byte_and_string_inputs_agree() {
    let from_str = bus_partition("orders", "order-42", 12);
    let root: Vec<u8> = b"order-42".into();
    let from_bytes = bus_partition(b"orders", &root, 12usize);
    assert_eq!(from_str, from_bytes);
    assert_eq!(from_str, Ok(4));
}
