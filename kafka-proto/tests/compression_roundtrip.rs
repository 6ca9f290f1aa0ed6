//! Property tests for the codecs: arbitrary (and highly repetitive) inputs round-trip through
//! every codec, the cap is exact, and truncated or corrupted payloads are errors, never panics.

use kafka_proto::compression::{Compression, CompressionError, compress, decompress};
use proptest::prelude::*;

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..4096),
        // Repetitive input exercises the codecs' match paths.
        (proptest::collection::vec(any::<u8>(), 1..16), 1usize..2000)
            .prop_map(|(unit, n)| unit.repeat(n)),
    ]
}

fn codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

proptest! {
    #[test]
    fn round_trip(data in payload(), codec in codec()) {
        let mut out = Vec::new();
        compress(codec, &data, &mut out).unwrap();
        prop_assert_eq!(decompress(codec, &out, data.len()).unwrap(), data.clone());
        if !data.is_empty() {
            prop_assert_eq!(
                decompress(codec, &out, data.len() - 1),
                Err(CompressionError::TooLarge { codec, max: data.len() - 1 })
            );
        }
    }

    #[test]
    fn damaged_payloads_never_panic(
        data in payload(),
        codec in codec(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut out = Vec::new();
        compress(codec, &data, &mut out).unwrap();
        let _ = decompress(codec, &out[..cut.index(out.len() + 1)], 1 << 20);
        if !out.is_empty() {
            let i = flip.index(out.len());
            out[i] ^= 1 << bit;
            let _ = decompress(codec, &out, 1 << 20);
        }
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), codec in codec()) {
        let _ = decompress(codec, &data, 1 << 20);
    }
}
