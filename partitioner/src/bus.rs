//! The event bus's placement rule: all events of one aggregate root in one domain share a
//! partition, and so keep their order.
//!
//! # Stable forever
//!
//! The rule is `partition = toPositive(murmur2(domain ‖ 0x00 ‖ root)) % partitions`, with
//! both strings taken as their raw UTF-8 bytes (no normalisation, no case folding). It decides
//! where every existing event lives, so changing it would split each root's history across
//! partitions and break its ordering. It will not change; a different rule would be a new
//! function with a new name. Because the key bytes go through Java's keyed mapping, any Java,
//! librdkafka (`murmur2_random`) or kafka-python producer that sends [`bus_key`] as the
//! record key puts the event on the same partition as the bus does.
//!
//! The NUL separator is what keeps `("ab", "c")` and `("a", "bc")` apart; a domain containing
//! NUL would reintroduce such collisions and is rejected. The root may contain anything: the
//! first NUL always ends the domain, so the split stays unambiguous.

use crate::PartitionError;
use crate::murmur2::murmur2;
use crate::partitions::PartitionCount;

/// The byte between domain and root in a bus key.
pub const BUS_KEY_SEPARATOR: u8 = 0x00;

/// The record key the bus writes for `(domain, root)`, so that non-Rust producers can
/// reproduce the bus's placement by sending the same key.
///
/// Fails with [`PartitionError::DomainContainsNul`] when the domain contains a NUL byte.
pub fn bus_key(
    domain: impl AsRef<[u8]>,
    root: impl AsRef<[u8]>,
) -> Result<Vec<u8>, PartitionError> {
    let (domain, root) = (domain.as_ref(), root.as_ref());
    if let Some(position) = domain.iter().position(|&b| b == BUS_KEY_SEPARATOR) {
        return Err(PartitionError::DomainContainsNul { position });
    }
    let mut key = Vec::with_capacity(domain.len() + 1 + root.len());
    key.extend_from_slice(domain);
    key.push(BUS_KEY_SEPARATOR);
    key.extend_from_slice(root);
    Ok(key)
}

/// The partition of `(domain, root)` in a topic of `partitions` partitions; see the module
/// docs for why this mapping is frozen.
///
/// Fails like [`bus_key`] for a bad domain and like
/// [`partition_for_key`](crate::partition_for_key) for a bad count.
pub fn bus_partition(
    domain: impl AsRef<[u8]>,
    root: impl AsRef<[u8]>,
    partitions: impl TryInto<i32>,
) -> Result<i32, PartitionError> {
    let key = bus_key(domain, root)?;
    let count = PartitionCount::try_from_int(partitions)?;
    Ok(count.bucket(murmur2(&key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition_for_key;

    #[test]
    fn key_is_domain_nul_root() {
        assert_eq!(bus_key("orders", "o-1").unwrap(), b"orders\0o-1");
        assert_eq!(bus_key("", "").unwrap(), b"\0");
        assert_eq!(bus_key("d", "r\0oot").unwrap(), b"d\0r\0oot");
    }

    #[test]
    fn separator_keeps_shifted_splits_apart() {
        assert_ne!(bus_key("ab", "c").unwrap(), bus_key("a", "bc").unwrap());
        assert_ne!(bus_key("", "ab").unwrap(), bus_key("ab", "").unwrap());
    }

    #[test]
    fn nul_in_domain_is_rejected_with_its_offset() {
        assert_eq!(
            bus_key("ab\0c", "r"),
            Err(PartitionError::DomainContainsNul { position: 2 })
        );
        assert_eq!(
            bus_partition("\0", "r", 3),
            Err(PartitionError::DomainContainsNul { position: 0 })
        );
    }

    #[test]
    fn partition_is_the_java_partition_of_the_key() {
        for (d, r) in [("orders", "o-1"), ("", ""), ("ünïcode", "ルート")] {
            let key = bus_key(d, r).unwrap();
            for n in [1, 3, 12, 100] {
                assert_eq!(
                    bus_partition(d, r, n).unwrap(),
                    partition_for_key(&key, n).unwrap()
                );
            }
        }
    }

    #[test]
    fn zero_partitions_is_an_error() {
        assert_eq!(
            bus_partition("d", "r", 0),
            Err(PartitionError::NoPartitions)
        );
    }
}
