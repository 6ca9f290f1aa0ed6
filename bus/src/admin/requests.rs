//! Topic administration requests, built in one place because their shape depends on the
//! version (DeleteTopics names topics by a plain string list before v6 and by structs from v6,
//! KIP-516), which every caller would otherwise have to get right on its own.

use kafka_proto::messages::create_topics_request::CreatableTopic;
use kafka_proto::messages::delete_topics_request::DeleteTopicState;
use kafka_proto::messages::{CreateTopicsRequest, DeleteTopicsRequest};

/// How long the broker may take to apply a topic change before answering. 30 s: Kafka's
/// default request timeout, long enough for a controller under load.
pub const TOPIC_CHANGE_TIMEOUT_MS: i32 = 30_000;

/// A CreateTopics request for one topic.
pub fn create_topic_request(
    name: &str,
    partitions: i32,
    replication_factor: i16,
) -> CreateTopicsRequest {
    let mut topic = CreatableTopic::default();
    topic.name = name.to_owned();
    topic.num_partitions = partitions;
    topic.replication_factor = replication_factor;
    let mut req = CreateTopicsRequest::default();
    req.topics.push(topic);
    req.timeout_ms = TOPIC_CHANGE_TIMEOUT_MS;
    req
}

/// A DeleteTopics request for `names`, in the form `version` carries.
pub fn delete_topics_request(names: &[&str], version: i16) -> DeleteTopicsRequest {
    let mut req = DeleteTopicsRequest::default();
    req.timeout_ms = TOPIC_CHANGE_TIMEOUT_MS;
    for name in names {
        if version >= 6 {
            let mut t = DeleteTopicState::default();
            t.name = Some((*name).to_owned());
            req.topics.push(t);
        } else {
            req.topic_names.push((*name).to_owned());
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_proto::{Encode, Message};

    #[test]
    fn delete_topics_takes_the_shape_of_its_version() {
        for version in DeleteTopicsRequest::VALID_VERSIONS.iter() {
            let req = delete_topics_request(&["a", "b"], version);
            // Encoding fails if a field the version lacks holds a value, so this proves the shape.
            req.encode(&mut bytes::BytesMut::new(), version).unwrap();
            assert_eq!(req.topics.len() + req.topic_names.len(), 2);
        }
    }
}
