//! Compression codecs for record batches: the codec ids of the protocol guide's "Record Batch"
//! attributes (bits 0-2: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), with zstd from KIP-110.
//!
//! Every codec here is pure Rust (flate2 on miniz_oxide, snap, lz4_flex, ruzstd), so the crate
//! builds without a C toolchain.
//!
//! Decompression is where a hostile broker (or a corrupted log) can hurt a client most: a
//! megabyte of input can claim gigabytes of output. So every decoder is bounded by a cap
//! ([`DEFAULT_MAX_DECOMPRESSED_SIZE`] unless the caller picks another) and exceeding it is the
//! typed [`CompressionError::TooLarge`]. No declared length (snappy's preamble, an lz4 or zstd
//! frame's content size) is ever trusted for an allocation beyond that cap, and the streaming
//! codecs never hold more than [`PROBE_SIZE`] bytes of output for a payload that turns out to
//! exceed the cap (a first pass keeps at most that much, the rest is only counted).

mod gzip;
mod lz4;
mod snappy;
mod zstd;

use std::fmt;
use std::io::{self, Read};

use thiserror::Error;

/// Cap on the decompressed size of one batch (or one legacy wrapper message) unless the caller
/// chooses otherwise. Kafka's own limits (`message.max.bytes`, `fetch.max.bytes`) default to
/// about 1 MiB and 50 MiB; a compressed batch expanding past 256 MiB is either a bomb or a
/// configuration no client should follow blindly.
pub const DEFAULT_MAX_DECOMPRESSED_SIZE: usize = 256 * 1024 * 1024;

/// How much output a streaming decoder may write straight into the result before we stop
/// keeping it and only count. Honest batches are far smaller than this, so they decode in one
/// pass; only payloads beyond it pay a second pass, and a bomb never costs more than this much
/// memory for output however high the cap is.
pub const PROBE_SIZE: usize = 16 * 1024 * 1024;

/// The compression codec of a record batch (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    /// Only valid in record batches of magic 2 (KIP-110).
    Zstd,
}

impl Compression {
    /// Every codec, in id order; handy for tests that must cover them all.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec for an attributes value's low three bits, or `None` for ids 5-7, which Kafka
    /// has never assigned.
    pub fn from_id(id: u8) -> Option<Compression> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The id written into the attributes' low three bits.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The name Kafka's `compression.type` configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec a `compression.type` name stands for (the inverse of [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Compression> {
        (0..=4)
            .filter_map(Compression::from_id)
            .find(|c| c.name() == name)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a payload could not be compressed or decompressed. The codec libraries' own errors are
/// kept as text so this type stays `Clone + PartialEq` like the rest of the crate's errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// The output would exceed the configured cap; decoding stopped there.
    #[error("{codec} payload decompresses to more than the cap of {max} bytes")]
    TooLarge { codec: Compression, max: usize },
    /// The input is not valid for the codec (bad magic, checksum, truncation, garbage).
    #[error("corrupt {codec} payload: {reason}")]
    Corrupt { codec: Compression, reason: String },
    /// The codec refused the input while compressing (e.g. larger than the format allows).
    #[error("{codec} compression failed: {reason}")]
    CompressFailed { codec: Compression, reason: String },
}

impl CompressionError {
    pub(crate) fn corrupt(codec: Compression, reason: impl fmt::Display) -> Self {
        CompressionError::Corrupt {
            codec,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn compress_failed(codec: Compression, reason: impl fmt::Display) -> Self {
        CompressionError::CompressFailed {
            codec,
            reason: reason.to_string(),
        }
    }
}

/// Appends `input` compressed with `codec` to `out`. `out` is the caller's scratch buffer, so a
/// producer compressing batch after batch reuses one allocation.
pub fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Compression::Gzip => gzip::compress(input, out),
        Compression::Snappy => snappy::compress(input, out),
        Compression::Lz4 => lz4::compress(input, out),
        Compression::Zstd => zstd::compress(input, out),
    }
}

/// Decompresses `input`, failing with [`CompressionError::TooLarge`] as soon as the output
/// would pass `max_size` bytes.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    max_size: usize,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => {
            if input.len() > max_size {
                return Err(CompressionError::TooLarge {
                    codec,
                    max: max_size,
                });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => gzip::decompress(input, max_size),
        Compression::Snappy => snappy::decompress(input, max_size),
        Compression::Lz4 => lz4::decompress(input, max_size),
        Compression::Zstd => zstd::decompress(input, max_size),
    }
}

/// Raised inside a decoder's `io::Read` when a header declares more output than the cap, so
/// [`read_bounded`] can report [`CompressionError::TooLarge`] rather than corruption.
#[derive(Debug, Error)]
#[error("declared size exceeds the decompression cap")]
pub(crate) struct CapExceeded;

fn read_error(codec: Compression, max: usize, e: io::Error) -> CompressionError {
    if e.get_ref().is_some_and(|inner| inner.is::<CapExceeded>()) {
        CompressionError::TooLarge { codec, max }
    } else {
        CompressionError::corrupt(codec, e)
    }
}

/// Drains a streaming decoder with bounded memory.
///
/// First pass: up to [`PROBE_SIZE`] (or `max`, if smaller) bytes go straight into the result,
/// which is all an honest batch ever needs. If the stream goes on, the rest is only *counted*
/// (into a small reused buffer) until it ends or passes `max`; passing `max` is the cap error,
/// having held at most the probe's worth of output. A stream that ends under the cap is then
/// decoded a second time into a buffer of the size just measured — a size we observed, never
/// one the input declared.
pub(crate) fn read_bounded<R: Read>(
    codec: Compression,
    max: usize,
    size_hint: usize,
    mut open: impl FnMut() -> Result<R, CompressionError>,
) -> Result<Vec<u8>, CompressionError> {
    let probe = max.min(PROBE_SIZE);
    let mut out = Vec::with_capacity(size_hint.min(probe));
    let mut reader = open()?;
    let read = (&mut reader)
        .take(probe as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| read_error(codec, max, e))?;
    if read <= probe {
        return Ok(out);
    }
    if probe == max {
        return Err(CompressionError::TooLarge { codec, max });
    }
    drop(out);

    let mut total = read;
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(codec, max, e)),
        };
        total += n;
        if total > max {
            return Err(CompressionError::TooLarge { codec, max });
        }
    }
    drop(sink);

    let mut out = Vec::with_capacity(total);
    let read = open()?
        .take(total as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| read_error(codec, max, e))?;
    if read != total {
        return Err(CompressionError::corrupt(
            codec,
            "output changed between decoding passes",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_back_to_their_codec() {
        for id in 0..=4 {
            let c = Compression::from_id(id).unwrap();
            assert_eq!(Compression::from_name(c.name()), Some(c));
        }
        assert_eq!(Compression::from_name("brotli"), None);
        assert_eq!(Compression::from_name("GZIP"), None);
    }

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..20_000u32 {
            v.extend_from_slice(format!("record-{i}-{}", i % 7).as_bytes());
        }
        v
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for codec in Compression::ALL {
            for input in [&data[..], &[][..], &b"x"[..]] {
                let mut out = vec![0xAA];
                compress(codec, input, &mut out).unwrap();
                assert_eq!(out[0], 0xAA, "{codec}: compress must append");
                let back = decompress(codec, &out[1..], DEFAULT_MAX_DECOMPRESSED_SIZE).unwrap();
                assert_eq!(back, input, "{codec}");
            }
        }
    }

    #[test]
    fn compression_actually_compresses() {
        let data = sample();
        for codec in Compression::ALL.into_iter().skip(1) {
            let mut out = Vec::new();
            compress(codec, &data, &mut out).unwrap();
            assert!(
                out.len() < data.len() / 2,
                "{codec}: {} of {}",
                out.len(),
                data.len()
            );
        }
    }

    #[test]
    fn cap_is_exact() {
        let data = sample();
        for codec in Compression::ALL {
            let mut out = Vec::new();
            compress(codec, &data, &mut out).unwrap();
            assert_eq!(
                decompress(codec, &out, data.len()).unwrap(),
                data,
                "{codec}"
            );
            assert_eq!(
                decompress(codec, &out, data.len() - 1),
                Err(CompressionError::TooLarge {
                    codec,
                    max: data.len() - 1
                }),
                "{codec}"
            );
        }
    }

    #[test]
    fn second_pass_beyond_the_probe() {
        // Larger than PROBE_SIZE but under the cap: the counted pass and the re-decode must
        // give back exactly the input.
        let mut data = vec![0u8; PROBE_SIZE + 12345];
        for (i, b) in data.iter_mut().enumerate().step_by(4093) {
            *b = i as u8;
        }
        for codec in [
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let mut out = Vec::new();
            compress(codec, &data, &mut out).unwrap();
            assert!(
                decompress(codec, &out, data.len()).unwrap() == data,
                "{codec}"
            );
            assert!(matches!(
                decompress(codec, &out, data.len() - 1),
                Err(CompressionError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for codec in Compression::ALL.into_iter().skip(1) {
            assert!(
                matches!(
                    decompress(codec, &garbage, 1 << 20),
                    Err(CompressionError::Corrupt { .. })
                ),
                "{codec}"
            );
            for cut in 0..garbage.len().min(40) {
                let _ = decompress(codec, &garbage[..cut], 1 << 20);
            }
        }
        // Truncating a valid payload must never panic either.
        let data = sample();
        for codec in Compression::ALL.into_iter().skip(1) {
            let mut out = Vec::new();
            compress(codec, &data[..3000], &mut out).unwrap();
            for cut in 0..out.len() {
                let _ = decompress(codec, &out[..cut], 1 << 20);
            }
        }
    }

    #[test]
    fn ids_round_trip() {
        for codec in Compression::ALL {
            assert_eq!(Compression::from_id(codec.id()), Some(codec));
        }
        for id in 5..=255u8 {
            assert_eq!(Compression::from_id(id), None);
        }
    }
}
