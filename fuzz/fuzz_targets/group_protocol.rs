//! The consumer-protocol payloads embedded in JoinGroup metadata and SyncGroup assignments come
//! from other group members through the broker, so they are hostile input. Decoding must never
//! panic, and whatever decodes must encode again and decode back to the same value (after the
//! encoder's normalisation: partitions grouped by topic, ascending, without repeats).
//!
//! The first byte picks the payload kind; the rest is the payload, version prefix included.
#![no_main]

use bus::group::protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else { return };
    let payload = Bytes::copy_from_slice(payload);
    if kind & 1 == 0 {
        let Ok(sub) = decode_subscription(payload) else { return };
        let once = encode_subscription(&sub).expect("a decoded subscription encodes");
        let again = decode_subscription(once.clone()).expect("our own encoding decodes");
        assert_eq!(again.topics, sub.topics);
        assert_eq!(again.user_data, sub.user_data);
        assert_eq!(again.generation_id, sub.generation_id);
        assert_eq!(again.rack_id, sub.rack_id);
        let mut owned = sub.owned_partitions.clone();
        owned.sort();
        owned.dedup();
        let mut owned_again = again.owned_partitions.clone();
        owned_again.sort();
        assert_eq!(owned_again, owned);
        // Normalised once, the encoding is a fixed point.
        assert_eq!(encode_subscription(&again).expect("encodes"), once);
    } else {
        let Ok(assignment) = decode_assignment(payload) else { return };
        let once = encode_assignment(&assignment).expect("a decoded assignment encodes");
        let again = decode_assignment(once.clone()).expect("our own encoding decodes");
        assert_eq!(again, assignment);
        assert_eq!(encode_assignment(&again).expect("encodes"), once);
    }
});
