//! The keyed mapping shared with every other Kafka client.
//!
//! Java's `Utils.murmur2` is the de-facto contract for "which partition does this key live
//! on": librdkafka (`murmur2_random`), kafka-python and others copy it bit for bit so that
//! producers in different languages agree. It is MurmurHash2 with a fixed seed, reading the
//! input as little-endian 32-bit blocks and mixing a 1–3 byte tail the way Java's
//! fall-through `switch` does. Any deviation, however small, silently sends keys to other
//! partitions than the Java client would.

use crate::PartitionError;
use crate::partitions::PartitionCount;

const SEED: u32 = 0x9747_b28c;
const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

/// Java's `Utils.murmur2`, bit for bit, including its signed 32-bit result.
///
/// The result is signed because Java's is: callers comparing against Java logs or test
/// vectors see the same number. Inputs longer than `u32::MAX` bytes (impossible in Java)
/// have their length truncated to 32 bits in the seed, as the algorithm's 32-bit state
/// implies.
#[must_use]
pub fn murmur2(data: &[u8]) -> i32 {
    // Java computes `seed ^ length` on a 32-bit int.
    let mut h = SEED ^ (data.len() as u32);

    let (blocks, tail) = data.as_chunks::<4>();
    for block in blocks {
        let mut k = u32::from_le_bytes(*block);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Java's tail is a `switch (length % 4)` whose cases fall through from 3 to 1, with the
    // multiply only in case 1; bytes are masked with 0xff so high-bit bytes are not
    // sign-extended. Slice patterns make every case explicit and index-free.
    match *tail {
        [a, b, c] => {
            h ^= u32::from(c) << 16;
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        [a, b] => {
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        [a] => {
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit rather than taking `abs`.
///
/// `abs(i32::MIN)` overflows, and Kafka's 0.8-era `Utils.abs` mapped it differently; masking
/// is what the current Java client does, so the partition of every key matches it.
#[must_use]
pub const fn to_positive(number: i32) -> i32 {
    number & 0x7fff_ffff
}

/// The partition Java's producer picks for a non-null key: `toPositive(murmur2(key)) % n`.
///
/// This is the function behind Java's `BuiltInPartitioner.partitionForKey` (and the keyed
/// branch of the older `DefaultPartitioner`), so a record keyed here lands where a Java,
/// librdkafka (`murmur2_random`) or kafka-python producer would put it. The count accepts
/// any integer type because callers often hold it as a `usize` length; zero is
/// [`PartitionError::NoPartitions`] and anything outside `1..=i32::MAX` is
/// [`PartitionError::PartitionCountOutOfRange`].
pub fn partition_for_key(
    key: &[u8],
    num_partitions: impl TryInto<i32>,
) -> Result<i32, PartitionError> {
    let count = PartitionCount::try_from_int(num_partitions)?;
    Ok(count.bucket(murmur2(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_positive_masks_the_sign_bit_instead_of_negating() {
        assert_eq!(to_positive(0), 0);
        assert_eq!(to_positive(5), 5);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        // abs(-5) would be 5; Java's toPositive gives 2^31 - 5.
        assert_eq!(to_positive(-5), 0x7fff_fffb);
    }

    #[test]
    fn zero_or_negative_counts_are_errors_not_panics() {
        assert_eq!(
            partition_for_key(b"k", 0),
            Err(PartitionError::NoPartitions)
        );
        assert_eq!(
            partition_for_key(b"k", 0usize),
            Err(PartitionError::NoPartitions)
        );
        assert_eq!(
            partition_for_key(b"k", -3),
            Err(PartitionError::PartitionCountOutOfRange)
        );
        assert_eq!(
            partition_for_key(b"k", u64::MAX),
            Err(PartitionError::PartitionCountOutOfRange)
        );
    }

    #[test]
    fn count_type_does_not_change_the_answer() {
        let key = b"same key, any integer type";
        let want = partition_for_key(key, 12i32).unwrap();
        assert_eq!(partition_for_key(key, 12u32).unwrap(), want);
        assert_eq!(partition_for_key(key, 12usize).unwrap(), want);
        assert_eq!(partition_for_key(key, 12i64).unwrap(), want);
        assert_eq!(want, to_positive(murmur2(key)) % 12);
    }

    #[test]
    fn largest_count_is_accepted() {
        let p = partition_for_key(b"x", i32::MAX).unwrap();
        assert_eq!(p, to_positive(murmur2(b"x")) % i32::MAX);
    }
}
