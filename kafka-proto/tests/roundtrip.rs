//! `decode(encode(x)) == x` for every generated message at every version the spec defines,
//! consuming exactly the encoded bytes, and re-encoding to the same bytes.
//!
//! Values come from the generated `arbitrary_at(u, version)`, which only fills fields the
//! version carries (and null only where the version allows it), driven by proptest's bytes.

use arbitrary::Unstructured;
use bytes::BytesMut;
use kafka_proto::message::Message;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const TRAILER: &[u8] = b"\xde\xad\xbe";

fn check<M: Message>(
    data: &[u8],
    arbitrary_at: impl Fn(&mut Unstructured<'_>, i16) -> arbitrary::Result<M>,
) -> Result<(), TestCaseError> {
    for version in M::VALID_VERSIONS.iter() {
        let mut u = Unstructured::new(data);
        let value =
            arbitrary_at(&mut u, version).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let mut buf = BytesMut::new();
        value.encode(&mut buf, version).map_err(|e| {
            TestCaseError::fail(format!(
                "{} v{version}: encode failed: {e}\n{value:?}",
                M::NAME
            ))
        })?;
        let encoded = buf.clone().freeze();
        buf.extend_from_slice(TRAILER);
        let mut input = buf.freeze();
        let decoded = M::decode(&mut input, version).map_err(|e| {
            TestCaseError::fail(format!(
                "{} v{version}: decode failed: {e}\n{value:?}",
                M::NAME
            ))
        })?;
        prop_assert_eq!(
            &input[..],
            TRAILER,
            "{} v{} did not consume exactly its bytes",
            M::NAME,
            version
        );
        prop_assert_eq!(
            &decoded,
            &value,
            "{} v{} changed in a round trip",
            M::NAME,
            version
        );
        let mut again = BytesMut::new();
        decoded
            .encode(&mut again, version)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(
            &again[..],
            &encoded[..],
            "{} v{} re-encoded differently",
            M::NAME,
            version
        );
    }
    Ok(())
}

macro_rules! check_one {
    ($t:ty, $data:expr) => {
        check::<$t>($data, <$t>::arbitrary_at)?;
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips_at_every_version(data in proptest::collection::vec(any::<u8>(), 0..768)) {
        kafka_proto::for_each_message!(check_one, &data);
    }
}

/// The all-defaults value of every message must encode at every version: defaults are by
/// definition representable, so a failure here is a generator bug (e.g. a wrong default).
#[test]
fn defaults_encode_at_every_version() {
    fn one<M: Message>() {
        for version in M::VALID_VERSIONS.iter() {
            let mut buf = BytesMut::new();
            M::default()
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("{} v{version}: {e}", M::NAME));
            let decoded = M::decode(&mut buf.freeze(), version).unwrap();
            assert_eq!(decoded, M::default());
        }
    }
    macro_rules! default_one {
        ($t:ty) => {
            one::<$t>();
        };
    }
    kafka_proto::for_each_message!(default_one);
}
