//! Exponential backoff with jitter, as a pure function of the attempt number and a random
//! word, so retry schedules are testable without a clock or a global RNG.

use std::time::Duration;

use partitioner::{RandomSource, SplitMix64};

/// A retry schedule: `initial * 2^(attempt-1)`, capped at `max`, then spread by up to
/// ±`jitter` (a fraction) so a fleet of clients that failed together does not retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Fraction of the delay to randomise, in `0.0..=1.0`. Kafka's clients use 0.2.
    pub jitter: f64,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            jitter: 0.2,
        }
    }

    /// The delay before retry number `attempt` (1 for the first retry). `random` is any
    /// uniformly distributed word.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let base = self
            .initial
            .saturating_mul(1u32 << exp.min(31))
            .min(self.max);
        if self.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        // Map the word to [-1, 1) and scale: base * (1 + jitter * u).
        let u = (random >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let factor = 1.0 + self.jitter.min(1.0) * u;
        base.mul_f64(factor)
            .min(self.max.mul_f64(1.0 + self.jitter.min(1.0)))
    }
}

/// A backoff with its own random source, for one retrying task.
#[derive(Debug, Clone)]
pub struct Retry {
    pub backoff: Backoff,
    rng: SplitMix64,
    attempt: u32,
}

impl Retry {
    pub fn new(backoff: Backoff) -> Self {
        Retry {
            backoff,
            rng: SplitMix64::from_entropy(),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, advancing the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.backoff.delay(self.attempt, self.rng.next_u64())
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap_and_jitter_stays_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=6).map(|a| b.delay(a, 0).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);

        let j = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut rng = SplitMix64::new(7);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..1000 {
            let d = j.delay(3, rng.next_u64()).as_secs_f64();
            assert!((0.32..=0.48).contains(&d), "{d}");
            seen_low |= d < 0.36;
            seen_high |= d > 0.44;
        }
        assert!(seen_low && seen_high, "jitter must actually spread delays");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        assert!(b.delay(u32::MAX, u64::MAX) <= Duration::from_millis(1200));
    }
}
