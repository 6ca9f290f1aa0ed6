//! Shared fixtures for the benchmarks.
//!
//! The record benchmarks (`benches/records.rs`, run by criterion) and the `records-report`
//! binary (a plain `Instant` timer that prints the ratios the performance goals are stated in)
//! build their batches here, so both measure exactly the same work.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_proto::records::{
    BatchEncoder, BatchParams, Compression, DecodeOptions, DecodedRecords, decode_records,
};

/// The create time of the first record; the others follow a millisecond apart.
pub const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// A batch shape: how many records, each with a null key, no headers and a value of
/// `value_len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub name: &'static str,
    pub records: usize,
    pub value_len: usize,
}

/// 1000 records of 100 B and 100 records of 1 KiB: both about 100 KiB a batch, which fits in
/// L2, so the in-cache memcpy baseline is the fair one for them.
pub const SHAPES: [Shape; 2] = [
    Shape {
        name: "1000x100B",
        records: 1000,
        value_len: 100,
    },
    Shape {
        name: "100x1KiB",
        records: 100,
        value_len: 1024,
    },
];

/// The record values of one batch, laid end to end.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub shape: Shape,
    values: Vec<u8>,
}

impl Fixture {
    /// Values that look like typical event payloads: JSON-ish text with varying numbers and
    /// identifiers, so the codecs compress them by a realistic 2-5x rather than infinitely
    /// (repeated bytes) or not at all (random bytes).
    pub fn new(shape: Shape) -> Self {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let events = ["click", "view", "purchase", "scroll", "login", "logout"];
        let mut values = Vec::with_capacity(shape.records * shape.value_len);
        let mut text = String::new();
        for i in 0..shape.records {
            text.clear();
            while text.len() < shape.value_len {
                let r = next();
                text.push_str(&format!(
                    "{{\"seq\":{i},\"user\":\"u{:05}\",\"event\":\"{}\",\"ms\":{},\"v\":{:x}}}",
                    r % 50_000,
                    events[(r >> 20) as usize % events.len()],
                    BASE_TIMESTAMP + (r >> 40) as i64,
                    r >> 3,
                ));
            }
            values.extend_from_slice(&text.as_bytes()[..shape.value_len]);
        }
        Fixture { shape, values }
    }

    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.values.chunks_exact(self.shape.value_len)
    }

    /// Encodes the batch with `codec`, reusing `buf` and `scratch` the way a producer does
    /// batch after batch. Returns the finished batch.
    pub fn encode(&self, codec: Compression, buf: &mut BytesMut, scratch: &mut Vec<u8>) -> Bytes {
        let params = BatchParams {
            compression: codec,
            ..BatchParams::default()
        };
        let mut encoder = BatchEncoder::with_scratch(buf, scratch, params);
        for (i, value) in self.values().enumerate() {
            encoder
                .append(BASE_TIMESTAMP + i as i64, None, Some(value), &[])
                .expect("benchmark records fit a batch");
        }
        encoder.finish().expect("benchmark batch finishes")
    }

    /// The batch encoded with `codec` into fresh buffers.
    pub fn encoded(&self, codec: Compression) -> Bytes {
        self.encode(codec, &mut BytesMut::new(), &mut Vec::new())
    }
}

/// Decodes one batch as a consumer does (CRC verification on, unless `verify_crc` is false).
pub fn decode(batch: &Bytes, verify_crc: bool) -> DecodedRecords {
    let options = DecodeOptions::default().with_verify_crc(verify_crc);
    decode_records(batch.clone(), &options).expect("benchmark batch decodes")
}

/// Copies `src` into the preallocated `dst` of the same length: the memcpy baseline.
#[inline(never)]
pub fn memcpy(dst: &mut [u8], src: &[u8]) {
    dst.copy_from_slice(src);
}

/// Bytes of the out-of-cache memcpy baseline: twice (source and destination) well beyond the
/// 32 MiB L3 of the machines the team uses.
pub const OUT_OF_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Time per call of `f`, from `samples` timed runs of a calibrated number of calls each.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Fastest sample: the least disturbed by other processes on a shared machine.
    pub min_ns: f64,
    pub median_ns: f64,
    pub iterations: u64,
}

/// Runs `f` until a sample of `iters` calls takes at least `sample_time`, then takes
/// `samples` samples of that many calls.
pub fn time<T>(sample_time: Duration, samples: usize, mut f: impl FnMut() -> T) -> Timing {
    let mut iters = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        let elapsed = start.elapsed();
        if elapsed >= sample_time {
            break;
        }
        let scale = if elapsed.is_zero() {
            10.0
        } else {
            (sample_time.as_secs_f64() / elapsed.as_secs_f64() * 1.1).clamp(1.1, 10.0)
        };
        iters = ((iters as f64) * scale).ceil() as u64;
    }
    let mut per_call: Vec<f64> = (0..samples.max(1))
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    Timing {
        min_ns: per_call[0],
        median_ns: per_call[per_call.len() / 2],
        iterations: iters * per_call.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_the_fixture() {
        for shape in SHAPES {
            let fixture = Fixture::new(shape);
            let plain = fixture.encoded(Compression::None);
            for codec in Compression::ALL {
                let batch = fixture.encoded(codec);
                let decoded = decode(&batch, true);
                let values: Vec<&[u8]> = decoded
                    .records()
                    .map(|r| r.value.as_deref().unwrap())
                    .collect();
                assert_eq!(values, fixture.values().collect::<Vec<_>>(), "{codec}");
                if codec != Compression::None {
                    assert!(batch.len() < plain.len(), "{codec} should compress");
                }
            }
        }
    }
}
