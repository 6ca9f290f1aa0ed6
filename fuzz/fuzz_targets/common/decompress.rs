//! The checks every `decompress_<codec>` target runs; included by each with `#[path]`.
//!
//! - Decompressing arbitrary bytes under a small cap never panics, and never returns more than
//!   the cap. When it succeeds with `n` bytes, the cap is exact: a cap of `n` gives the same
//!   bytes, a cap of `n - 1` is `TooLarge`.
//! - `compress` appends (never touches what is already in the buffer), and decompressing its
//!   output gives the input back, under a cap of exactly the input's length.

use kafka_proto::compression::{self, Compression, CompressionError};

/// Small, so a bomb costs the fuzzer little, but above the 4 KiB libFuzzer inputs start with so
/// that honest payloads decode.
pub const CAP: usize = 64 * 1024;

pub fn check(codec: Compression, data: &[u8]) {
    if let Ok(out) = compression::decompress(codec, data, CAP) {
        assert!(
            out.len() <= CAP,
            "{codec}: {} bytes out under a cap of {CAP}",
            out.len()
        );
        let again = compression::decompress(codec, data, out.len());
        assert_eq!(
            again.as_ref(),
            Ok(&out),
            "{codec}: a cap of exactly the output size"
        );
        if let Some(below) = out.len().checked_sub(1) {
            let under = compression::decompress(codec, data, below);
            assert!(
                matches!(under, Err(CompressionError::TooLarge { .. })),
                "{codec}: {} bytes under a cap of {below}: {under:?}",
                out.len()
            );
        }
    }

    let mut packed = vec![0xA5];
    compression::compress(codec, data, &mut packed)
        .expect("compressing a small input must not fail");
    assert_eq!(packed[0], 0xA5, "{codec}: compress must append");
    let back = compression::decompress(codec, &packed[1..], data.len())
        .unwrap_or_else(|e| panic!("{codec}: our own {}-byte output: {e}", packed.len() - 1));
    assert!(back == data, "{codec}: round trip changed the data");
    if let Some(below) = data.len().checked_sub(1) {
        let under = compression::decompress(codec, &packed[1..], below);
        assert!(
            matches!(under, Err(CompressionError::TooLarge { .. })),
            "{codec}: round trip under a cap of {below}: {under:?}"
        );
    }
}
