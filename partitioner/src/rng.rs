//! The randomness behind partition choices for records without a key.
//!
//! Which partition an unkeyed record lands on is not part of any contract, but tests must be
//! able to replay it exactly, so the source is a trait the caller can replace and the
//! built-in generator is a tiny seedable one rather than a thread-local global.

use std::hash::{BuildHasher, RandomState};

/// A source of 64-bit random words for the sticky partitioner.
///
/// Implement it to script choices in tests (a counter is enough) or to plug in a stronger
/// generator; quality requirements are low since it only spreads load.
pub trait RandomSource {
    /// The next word; any distribution close to uniform is fine.
    fn next_u64(&mut self) -> u64;
}

impl<R: RandomSource + ?Sized> RandomSource for &mut R {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

impl<R: RandomSource + ?Sized> RandomSource for Box<R> {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

/// SplitMix64 (Steele, Lea and Flood): one add and two multiply-xorshift rounds per word.
///
/// Chosen because it is small enough to own, has no bad seeds (zero included) and passes
/// common statistical batteries, which is far more than spreading records needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The same seed always yields the same sequence, which is what makes partitioner tests
    /// reproducible.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Seeded from the per-process random keys std already draws for `HashMap`, so separate
    /// producers do not all start on the same partition, without a `rand` dependency.
    #[must_use]
    pub fn from_entropy() -> Self {
        let marker = 0u8;
        let address = std::ptr::addr_of!(marker) as usize;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self::new(RandomState::new().hash_one((nanos, address, std::process::id())))
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A draw in `0..bound` by the multiply-high method: no division and no retry loop, with a
/// bias of at most `bound / 2^64`, far below anything load-spreading could notice.
pub(crate) fn below<R: RandomSource + ?Sized>(rng: &mut R, bound: u32) -> u32 {
    ((u128::from(rng.next_u64()) * u128::from(bound)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let take = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(take(42), take(42));
        assert_ne!(take(42), take(43));
    }

    #[test]
    fn matches_the_published_splitmix64_sequence() {
        // First outputs for seed 1234567 as published in Rosetta Code's "Pseudo-random
        // numbers/Splitmix64" task; they pin the constants and the order of operations.
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn below_stays_in_bounds_and_covers_them() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let x = below(&mut rng, 5);
            assert!(x < 5);
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(below(&mut rng, 1), 0);
        assert_eq!(below(&mut rng, 0), 0);
    }

    #[test]
    fn entropy_seeds_differ_between_calls() {
        let a = SplitMix64::from_entropy().next_u64();
        let b = SplitMix64::from_entropy().next_u64();
        assert_ne!(a, b);
    }
}
