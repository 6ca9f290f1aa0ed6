//! Golden bytes captured from a real broker (tansu 0.6.0) by
//! `cargo run -p integration-tests --bin capture-golden`: each response frame must decode
//! exactly and re-encode byte for byte, header included.

use bytes::{Bytes, BytesMut};
use kafka_proto::envelope::decode_response;
use kafka_proto::messages::{ApiVersionsResponse, CreateTopicsResponse, MetadataResponse};
use kafka_proto::version::response_header_version;
use kafka_proto::{ApiKey, Encode, ErrorCode, Response};

fn golden(name: &str) -> Bytes {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn reencodes<R: Response>(name: &str, version: i16) -> R {
    let frame = golden(name);
    let (header, body) =
        decode_response::<R>(frame.clone(), version).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, response_header_version(R::API_KEY, version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    assert_eq!(
        &out[..],
        &frame[..],
        "{name} did not re-encode byte for byte"
    );
    body
}

#[test]
fn api_versions_responses() {
    for v in [0, 3] {
        let resp: ApiVersionsResponse = reencodes(&format!("api_versions_v{v}.bin"), v);
        assert_eq!(resp.error_code, 0);
        for key in [
            ApiKey::ApiVersions,
            ApiKey::Metadata,
            ApiKey::CreateTopics,
            ApiKey::Produce,
            ApiKey::Fetch,
        ] {
            assert!(
                resp.api_keys.iter().any(|k| k.api_key == key as i16),
                "v{v} lacks {key:?}"
            );
        }
    }
}

#[test]
fn create_topics_response() {
    let resp: CreateTopicsResponse = reencodes("create_topics_v7.bin", 7);
    assert_eq!(resp.topics.len(), 1);
    let t = &resp.topics[0];
    assert_eq!(t.name, "golden-topic");
    assert_eq!(ErrorCode::from_code(t.error_code), ErrorCode::None);
    assert_eq!(t.num_partitions, 3);
}

#[test]
fn metadata_responses() {
    for v in [1, 4, 9, 12] {
        let resp: MetadataResponse = reencodes(&format!("metadata_v{v}.bin"), v);
        assert!(!resp.brokers.is_empty(), "v{v}: no brokers");
        let t = resp
            .topics
            .iter()
            .find(|t| t.name.as_deref() == Some("golden-topic"))
            .expect("topic listed");
        assert_eq!(ErrorCode::from_code(t.error_code), ErrorCode::None);
        assert_eq!(t.partitions.len(), 3, "v{v}");
        if v >= 10 {
            assert_ne!(
                t.topic_id,
                kafka_proto::Uuid::ZERO,
                "v{v}: topic id missing"
            );
        }
    }
}
