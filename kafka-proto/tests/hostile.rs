//! Hostile input, deterministically: every strict prefix of every valid encoding of every
//! message at every version must fail with an error (never a panic, never a bogus success),
//! and corrupted bytes must never panic. The fuzz targets explore further; this runs in CI.

use arbitrary::Unstructured;
use bytes::{Bytes, BytesMut};
use kafka_proto::envelope::decode_exact;
use kafka_proto::message::Message;
use kafka_proto::messages::{RequestKind, ResponseKind};

fn seeds() -> Vec<Vec<u8>> {
    // A fixed spread of inputs for the structure generator: zeros (minimal values), a counter
    // and a multiplicative hash (varied values).
    let mut out = vec![vec![0u8; 64]];
    out.push((0..=255u8).collect());
    let mut x: u32 = 0x9e37_79b9;
    out.push(
        (0..512)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect(),
    );
    out
}

fn sweep<M: Message>(arbitrary_at: impl Fn(&mut Unstructured<'_>, i16) -> arbitrary::Result<M>) {
    for seed in seeds() {
        for version in M::VALID_VERSIONS.iter() {
            let value = arbitrary_at(&mut Unstructured::new(&seed), version).unwrap();
            let mut buf = BytesMut::new();
            value.encode(&mut buf, version).unwrap();
            let full = buf.freeze();
            for cut in 0..full.len() {
                let r = decode_exact::<M>(full.slice(..cut), version);
                assert!(
                    r.is_err(),
                    "{} v{version}: a {cut}-byte prefix of {} decoded",
                    M::NAME,
                    full.len()
                );
            }
            let mut trailing = full.to_vec();
            trailing.push(0);
            assert!(
                decode_exact::<M>(Bytes::from(trailing), version).is_err(),
                "{}: trailing byte accepted",
                M::NAME
            );
            // Flip each byte in turn: any outcome but a panic is acceptable.
            for i in 0..full.len().min(96) {
                let mut bad = full.to_vec();
                bad[i] ^= 0xff;
                let _ = decode_exact::<M>(Bytes::from(bad), version);
            }
        }
    }
}

macro_rules! sweep_one {
    ($t:ty) => {
        sweep::<$t>(<$t>::arbitrary_at);
    };
}

#[test]
fn truncation_and_corruption_never_panic() {
    kafka_proto::for_each_message!(sweep_one);
}

#[test]
fn dispatch_by_key_rejects_unknown_keys_and_trailing_bytes() {
    assert!(matches!(
        ResponseKind::decode(9999, 0, &mut Bytes::new()),
        Err(kafka_proto::DecodeError::UnknownApiKey(9999))
    ));
    // A valid ApiVersions v0 request body is empty; one extra byte must be rejected.
    assert!(RequestKind::decode(18, 0, &mut Bytes::new()).is_ok());
    assert!(matches!(
        RequestKind::decode(18, 0, &mut Bytes::from_static(&[0])),
        Err(kafka_proto::DecodeError::TrailingBytes { .. })
    ));
    assert!(matches!(
        RequestKind::decode(18, 99, &mut Bytes::new()),
        Err(kafka_proto::DecodeError::UnsupportedVersion { .. })
    ));
}

#[test]
fn huge_counts_fail_fast_without_allocating() {
    // MetadataResponse v0: brokers array claiming i32::MAX entries in an 8-byte body.
    let body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    assert!(matches!(
        decode_exact::<kafka_proto::messages::MetadataResponse>(body, 0),
        Err(kafka_proto::DecodeError::InvalidLength { .. })
    ));
    // Compact (flexible) version: a varint count of 2^28.
    let body = Bytes::from_static(&[0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x01]);
    assert!(decode_exact::<kafka_proto::messages::MetadataResponse>(body, 12).is_err());
}
