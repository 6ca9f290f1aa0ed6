//! Decodes arbitrary bytes as the request body of the API key and version chosen by the first
//! three input bytes. Must never panic; whatever decodes must re-encode, and re-decoding that
//! encoding must reproduce the same bytes again (encode∘decode is idempotent).
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_proto::ApiKey;
use kafka_proto::messages::RequestKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let api = ApiKey::ALL[usize::from(u16::from_be_bytes([data[0], data[1]])) % ApiKey::ALL.len()];
    let valid = api.info().valid;
    let span = (valid.max - valid.min + 1) as u16;
    // Mostly valid versions, sometimes one just outside the range.
    let version = valid.min + (u16::from(data[2]) % (span + 1)) as i16;
    let mut body = Bytes::copy_from_slice(&data[3..]);
    let Ok(value) = RequestKind::decode(api as i16, version, &mut body) else { return };
    let mut first = BytesMut::new();
    value.encode(&mut first, version).expect("a decoded value must re-encode at its version");
    let again = RequestKind::decode(api as i16, version, &mut first.clone().freeze()).expect("our own encoding must decode");
    let mut second = BytesMut::new();
    again.encode(&mut second, version).expect("re-encode");
    assert_eq!(first, second, "{api:?} v{version}: encoding is not stable");
});
