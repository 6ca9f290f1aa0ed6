//! Captures golden response frames from a real broker into `kafka-proto/tests/golden/`.
//!
//! `KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo run -p integration-tests --bin capture-golden`
//! Each file is `<api>_v<version>.bin`: the response frame as received (header + body, no
//! size prefix). The golden test decodes each and re-encodes it byte for byte.

use bus::admin::create_topic_request;
use integration_tests::TestConnection;
use kafka_proto::messages::metadata_request::MetadataRequestTopic;
use kafka_proto::messages::{ApiVersionsRequest, CreateTopicsRequest, MetadataRequest};

fn main() {
    let addr = std::env::var("KAFKA_BOOTSTRAP").expect("set KAFKA_BOOTSTRAP");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kafka-proto/tests/golden");
    std::fs::create_dir_all(&dir).unwrap();
    let mut conn = TestConnection::connect(&addr).expect("connect");
    let save = |name: String, bytes: &[u8]| {
        std::fs::write(dir.join(&name), bytes).unwrap();
        eprintln!("wrote {name} ({} bytes)", bytes.len());
    };

    for v in [0, 3] {
        let mut req = ApiVersionsRequest::default();
        if v >= 3 {
            req.client_software_name = "kbus-golden".into();
            req.client_software_version = "0".into();
        }
        save(
            format!("api_versions_v{v}.bin"),
            &conn.raw(&req, v).unwrap(),
        );
    }

    let topic = "golden-topic";
    let create = create_topic_request(topic, 3, 1);
    let v = conn.version::<CreateTopicsRequest>();
    save(
        format!("create_topics_v{v}.bin"),
        &conn.raw(&create, v).unwrap(),
    );

    let max = conn.version::<MetadataRequest>();
    for v in [1, 4, 9, max] {
        let mut req = MetadataRequest::default();
        let mut t = MetadataRequestTopic::default();
        t.name = Some(topic.into());
        req.topics = Some(vec![t]);
        save(format!("metadata_v{v}.bin"), &conn.raw(&req, v).unwrap());
    }
}
