//! The protocol layer against a real broker: ApiVersions, Metadata, CreateTopics and
//! DeleteTopics at negotiated versions, through the minimal test connection (raw frames) and
//! through `bus::Connection`.

use bus::admin::{create_topic_request, delete_topics_request};
use bus::{Connection, ConnectionConfig};
use integration_tests::{TestConnection, bootstrap, unique_topic};
use kafka_proto::messages::metadata_request::MetadataRequestTopic;
use kafka_proto::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest, MetadataResponse,
};
use kafka_proto::version::client_versions;
use kafka_proto::{ApiKey, ErrorCode, Request};

fn metadata_request(topic: &str) -> MetadataRequest {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(topic.into());
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req
}

fn topic_error(resp: &MetadataResponse, topic: &str) -> Option<(ErrorCode, usize)> {
    resp.topics
        .iter()
        .find(|t| t.name.as_deref() == Some(topic))
        .map(|t| (ErrorCode::from_code(t.error_code), t.partitions.len()))
}

#[test]
fn api_versions_lists_what_we_need() {
    let Some(addr) = bootstrap() else { return };
    let conn = TestConnection::connect(&addr).unwrap();
    for api in [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
    ] {
        let v = conn
            .versions
            .negotiate(api, None)
            .unwrap_or_else(|e| panic!("{api:?}: {e}"));
        assert!(client_versions(api).unwrap().contains(v));
    }
}

#[test]
fn metadata_decodes_at_every_version_both_sides_speak() {
    let Some(addr) = bootstrap() else { return };
    let mut conn = TestConnection::connect(&addr).unwrap();
    let usable = conn
        .versions
        .get(ApiKey::Metadata)
        .and_then(|b| b.intersect(&client_versions(ApiKey::Metadata).unwrap()))
        .expect("some Metadata version in common");
    assert!(
        usable.max - usable.min >= 4,
        "expected a range of Metadata versions, got {usable:?}"
    );
    for v in usable.iter() {
        let mut req = MetadataRequest::default();
        // v0 has no null "all topics"; an empty list means all topics there.
        req.topics = if v == 0 { Some(vec![]) } else { None };
        if v < 4 {
            req.allow_auto_topic_creation = true; // the default; versions before 4 cannot say otherwise
        }
        let (_, resp) = conn
            .round_trip(&req, v)
            .unwrap_or_else(|e| panic!("Metadata v{v}: {e}"));
        assert!(!resp.brokers.is_empty(), "Metadata v{v}: no brokers");
        assert!(
            resp.brokers.iter().all(|b| b.port > 0),
            "Metadata v{v}: bad broker port"
        );
    }
}

#[test]
fn create_and_delete_topics_through_the_test_connection() {
    let Some(addr) = bootstrap() else { return };
    let mut conn = TestConnection::connect(&addr).unwrap();
    let topic = unique_topic("proto-raw");
    let cv = conn.version::<CreateTopicsRequest>();
    let (_, created) = conn
        .round_trip(&create_topic_request(&topic, 3, 1), cv)
        .unwrap();
    assert_eq!(created.topics.len(), 1);
    assert_eq!(
        ErrorCode::from_code(created.topics[0].error_code),
        ErrorCode::None,
        "{created:?}"
    );

    let mv = conn.version::<MetadataRequest>();
    let (_, meta) = conn.round_trip(&metadata_request(&topic), mv).unwrap();
    assert_eq!(topic_error(&meta, &topic), Some((ErrorCode::None, 3)));

    let (_, again) = conn
        .round_trip(&create_topic_request(&topic, 3, 1), cv)
        .unwrap();
    assert_eq!(
        ErrorCode::from_code(again.topics[0].error_code),
        ErrorCode::TopicAlreadyExists
    );

    let dv = conn.version::<DeleteTopicsRequest>();
    let (_, deleted) = conn
        .round_trip(&delete_topics_request(&[&topic], dv), dv)
        .unwrap();
    assert_eq!(deleted.responses.len(), 1);
    assert_eq!(
        ErrorCode::from_code(deleted.responses[0].error_code),
        ErrorCode::None,
        "{deleted:?}"
    );

    let mut req = metadata_request(&topic);
    req.allow_auto_topic_creation = false;
    let (_, meta) = conn.round_trip(&req, mv).unwrap();
    let after = topic_error(&meta, &topic);
    assert!(
        matches!(after, None | Some((ErrorCode::UnknownTopicOrPartition, _))),
        "deleted topic still listed: {after:?}"
    );
}

#[tokio::test]
async fn bus_connection_pipelines_requests_against_the_broker() {
    let Some(addr) = bootstrap() else { return };
    let conn = Connection::connect(&addr, ConnectionConfig::default())
        .await
        .unwrap();
    let topic = unique_topic("proto-bus");
    let created = conn
        .send(&create_topic_request(&topic, 2, 1))
        .await
        .unwrap();
    assert_eq!(
        ErrorCode::from_code(created.topics[0].error_code),
        ErrorCode::None
    );

    // Many requests in flight on one socket at once; each gets its own answer.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let c = conn.clone();
        let req = metadata_request(&topic);
        tasks.push(tokio::spawn(async move { c.send(&req).await }));
    }
    for t in tasks {
        let resp = t.await.unwrap().unwrap();
        assert_eq!(topic_error(&resp, &topic), Some((ErrorCode::None, 2)));
    }
    let dv = conn.version_for::<DeleteTopicsRequest>().unwrap();
    let deleted = conn
        .send(&delete_topics_request(&[&topic], dv))
        .await
        .unwrap();
    assert_eq!(
        ErrorCode::from_code(deleted.responses[0].error_code),
        ErrorCode::None
    );
    assert_eq!(DeleteTopicsRequest::API_KEY, ApiKey::DeleteTopics);
}
