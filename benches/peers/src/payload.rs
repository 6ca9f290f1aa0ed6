//! Record values. Every client (and `kbus bench`) must send the same bytes, so the recipe is
//! fixed and written down in the README:
//!
//! - a pool of `POOL_LEN + size` bytes, each a lowercase ASCII letter drawn from xorshift64
//!   seeded with `SEED` (`x ^= x << 13; x ^= x >> 7; x ^= x << 17; byte = b'a' + x % 26`);
//! - record `i` (from 0) has the value `pool[o .. o + size]` with `o = (i * STRIDE) % POOL_LEN`.
//!
//! Letters rather than random bytes so that compressed runs have something to compress (gzip
//! takes the pool to about 64% of its size); sliding windows rather than one repeated value so
//! that a batch of identical records does not make compression look free.

pub const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
pub const POOL_LEN: usize = 1 << 20;
pub const STRIDE: usize = 7919;

pub struct Payloads {
    pool: bytes::Bytes,
    size: usize,
}

impl Payloads {
    pub fn new(size: usize) -> Payloads {
        let mut x = SEED;
        let pool: Vec<u8> = (0..POOL_LEN + size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % 26) as u8
            })
            .collect();
        Payloads {
            pool: pool.into(),
            size,
        }
    }

    fn offset(i: u64) -> usize {
        ((i as u128 * STRIDE as u128) % POOL_LEN as u128) as usize
    }

    /// The value of record `i`, borrowed.
    pub fn get(&self, i: u64) -> &[u8] {
        let o = Self::offset(i);
        &self.pool[o..o + self.size]
    }

    /// The value of record `i` as a shared slice of the pool, for clients that take `Bytes`
    /// and so need not copy it.
    pub fn bytes(&self, i: u64) -> bytes::Bytes {
        let o = Self::offset(i);
        self.pool.slice(o..o + self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_requested_size_and_are_letters() {
        let p = Payloads::new(100);
        for i in [0, 1, 132, 999_999] {
            assert_eq!(p.get(i).len(), 100);
            assert!(p.get(i).iter().all(u8::is_ascii_lowercase));
            assert_eq!(p.bytes(i), p.get(i));
        }
    }

    #[test]
    fn consecutive_records_differ() {
        let p = Payloads::new(1024);
        assert_ne!(p.get(0), p.get(1));
        // The stride wraps: the pool is reused, shifted, never read past its end.
        assert_eq!(p.get(POOL_LEN as u64).len(), 1024);
    }

    #[test]
    fn recipe_is_stable() {
        // The README documents these bytes for `kbus bench`; they must not drift.
        let p = Payloads::new(8);
        assert_eq!(p.get(0), Payloads::new(8).get(0));
        assert_eq!(&p.pool[..STRIDE + 8][STRIDE..], p.get(1));
        let mut x = SEED;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert_eq!(p.pool[0], b'a' + (x % 26) as u8);
    }

    #[test]
    fn zero_size_values_are_empty() {
        assert!(Payloads::new(0).get(5).is_empty());
    }
}
