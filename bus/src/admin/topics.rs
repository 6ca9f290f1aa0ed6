//! Creating, deleting and listing topics, and adding partitions (CreateTopics, DeleteTopics,
//! CreatePartitions, Metadata). CreateTopics may leave partitions and the replication factor to
//! the broker's defaults from v4 (KIP-464) and reports the resulting configs from v5 (KIP-525).

use std::collections::BTreeMap;

use kafka_proto::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_proto::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_proto::messages::{CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest};
use kafka_proto::{ErrorCode, Uuid};

use super::Admin;
use super::configs::{ConfigEntry, ConfigSource};
use super::requests::delete_topics_request;
use crate::client::check_code;
use crate::error::Error;
use crate::routing::send_versioned_on;

/// A topic to create. Unset partition count and replication factor take the broker's
/// defaults (`num.partitions`, `default.replication.factor`), which needs CreateTopics v4+.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    /// Explicit replica placement: partition -> broker ids, leader first. When set, it fixes
    /// the partition count and replication factor, so those must be unset.
    pub assignments: BTreeMap<i32, Vec<i32>>,
    /// Topic configs such as `retention.ms` or `cleanup.policy`.
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            partitions: None,
            replication_factor: None,
            assignments: BTreeMap::new(),
            configs: BTreeMap::new(),
        }
    }

    pub fn partitions(mut self, n: i32) -> Self {
        self.partitions = Some(n);
        self
    }

    pub fn replication_factor(mut self, n: i16) -> Self {
        self.replication_factor = Some(n);
        self
    }

    pub fn assignment(mut self, partition: i32, brokers: Vec<i32>) -> Self {
        self.assignments.insert(partition, brokers);
        self
    }

    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(name.into(), value.into());
        self
    }

    /// The CreateTopics entry for this topic at `version`.
    fn to_request(&self, version: i16) -> Result<CreatableTopic, Error> {
        let defaults_needed = self.assignments.is_empty()
            && (self.partitions.is_none() || self.replication_factor.is_none());
        if defaults_needed && version < 4 {
            return Err(Error::Unsupported(format!(
                "CreateTopics v{version} cannot take the broker's default partitions or \
                 replication factor for {:?} (needs v4); set both",
                self.name
            )));
        }
        if !self.assignments.is_empty()
            && (self.partitions.is_some() || self.replication_factor.is_some())
        {
            return Err(Error::InvalidArgument(format!(
                "topic {:?}: an explicit assignment fixes partitions and replication factor; \
                 leave them unset",
                self.name
            )));
        }
        let mut t = CreatableTopic::default();
        t.name = self.name.clone();
        t.num_partitions = if self.assignments.is_empty() {
            self.partitions.unwrap_or(-1)
        } else {
            -1
        };
        t.replication_factor = if self.assignments.is_empty() {
            self.replication_factor.unwrap_or(-1)
        } else {
            -1
        };
        for (partition, brokers) in &self.assignments {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = *partition;
            a.broker_ids = brokers.clone();
            t.assignments.push(a);
        }
        for (name, value) in &self.configs {
            let mut c = CreatableTopicConfig::default();
            c.name = name.clone();
            c.value = Some(value.clone());
            t.configs.push(c);
        }
        Ok(t)
    }
}

/// What the broker reports about a topic it created. The fields after `name` come with
/// CreateTopics v5+ (topic id v7+) and are `None` from older brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreatedTopic {
    pub name: String,
    pub topic_id: Option<Uuid>,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    /// The topic's effective configs (empty before v5).
    pub configs: Vec<ConfigEntry>,
}

/// One topic as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicListing {
    pub name: String,
    pub topic_id: Option<Uuid>,
    pub partitions: i32,
    pub is_internal: bool,
}

impl Admin {
    /// Creates `topics` in one request to the controller; one result per topic, in the order
    /// the broker answered. TOPIC_ALREADY_EXISTS and friends are that topic's
    /// [`Error::Broker`].
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
    ) -> Result<Vec<(String, Result<CreatedTopic, Error>)>, Error> {
        let timeout_ms = self.config.operation_timeout_ms();
        let resp = self
            .retrying(|| async move {
                let conn = self.controller().await?;
                let resp = send_versioned_on(&self.client, &conn, |version| {
                    let mut req = CreateTopicsRequest::default();
                    req.timeout_ms = timeout_ms;
                    for t in topics {
                        req.topics.push(t.to_request(version)?);
                    }
                    Ok(req)
                })
                .await?;
                // The controller moved between our metadata and the request: ask again.
                if let Some(t) = resp
                    .topics
                    .iter()
                    .find(|t| t.error_code == ErrorCode::NotController.code())
                {
                    return Err(Error::broker(
                        ErrorCode::NotController,
                        t.error_message.clone(),
                        t.name.clone(),
                    ));
                }
                Ok(resp)
            })
            .await?;
        Ok(resp
            .topics
            .into_iter()
            .map(|t| {
                let result =
                    check_code(t.error_code, t.error_message.as_deref(), &t.name).map(|()| {
                        CreatedTopic {
                            name: t.name.clone(),
                            topic_id: (t.topic_id != Uuid::ZERO).then_some(t.topic_id),
                            partitions: (t.num_partitions >= 0).then_some(t.num_partitions),
                            replication_factor: (t.replication_factor >= 0)
                                .then_some(t.replication_factor),
                            configs: t
                                .configs
                                .unwrap_or_default()
                                .into_iter()
                                .map(|c| ConfigEntry {
                                    name: c.name,
                                    value: c.value,
                                    source: ConfigSource::from_wire(c.config_source),
                                    read_only: c.read_only,
                                    sensitive: c.is_sensitive,
                                    synonyms: Vec::new(),
                                })
                                .collect(),
                        }
                    });
                (t.name, result)
            })
            .collect())
    }

    /// Creates one topic; its per-topic error becomes the call's error.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<CreatedTopic, Error> {
        let name = topic.name.clone();
        self.create_topics(std::slice::from_ref(&topic))
            .await?
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r)
            .unwrap_or_else(|| Err(Error::Protocol(format!("no answer for topic {name:?}"))))
    }

    /// Deletes `names` in one request to the controller; one result per topic. Deleted topics
    /// are no longer tracked by the client.
    pub async fn delete_topics(
        &self,
        names: &[&str],
    ) -> Result<Vec<(String, Result<(), Error>)>, Error> {
        let timeout_ms = self.config.operation_timeout_ms();
        let resp = self
            .retrying(|| async move {
                let conn = self.controller().await?;
                let resp = send_versioned_on(&self.client, &conn, |version| {
                    let mut req: DeleteTopicsRequest = delete_topics_request(names, version);
                    req.timeout_ms = timeout_ms;
                    Ok(req)
                })
                .await?;
                if let Some(t) = resp
                    .responses
                    .iter()
                    .find(|t| t.error_code == ErrorCode::NotController.code())
                {
                    return Err(Error::broker(
                        ErrorCode::NotController,
                        t.error_message.clone(),
                        t.name.clone().unwrap_or_default(),
                    ));
                }
                Ok(resp)
            })
            .await?;
        let mut out = Vec::with_capacity(resp.responses.len());
        for r in resp.responses {
            let name = r.name.unwrap_or_default();
            let result = check_code(r.error_code, r.error_message.as_deref(), &name);
            if result.is_ok() {
                self.client.untrack(&name);
            }
            out.push((name, result));
        }
        self.client.invalidate();
        Ok(out)
    }

    /// Deletes one topic; its per-topic error becomes the call's error.
    pub async fn delete_topic(&self, name: &str) -> Result<(), Error> {
        self.delete_topics(&[name])
            .await?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
            .unwrap_or_else(|| Err(Error::Protocol(format!("no answer for topic {name:?}"))))
    }

    /// Grows `topic` to `total` partitions (a count, not an increment). `assignments`, when
    /// not empty, places each new partition's replicas (leader first), one entry per new
    /// partition. Kafka cannot shrink a topic: a smaller `total` is INVALID_PARTITIONS.
    pub async fn create_partitions(
        &self,
        topic: &str,
        total: i32,
        assignments: &[Vec<i32>],
    ) -> Result<(), Error> {
        let timeout_ms = self.config.operation_timeout_ms();
        let resp = self
            .retrying(|| async move {
                let conn = self.controller().await?;
                let resp = send_versioned_on(&self.client, &conn, |_version| {
                    let mut t = CreatePartitionsTopic::default();
                    t.name = topic.to_owned();
                    t.count = total;
                    t.assignments = (!assignments.is_empty()).then(|| {
                        assignments
                            .iter()
                            .map(|brokers| {
                                let mut a = CreatePartitionsAssignment::default();
                                a.broker_ids = brokers.clone();
                                a
                            })
                            .collect()
                    });
                    let mut req = CreatePartitionsRequest::default();
                    req.timeout_ms = timeout_ms;
                    req.topics.push(t);
                    Ok(req)
                })
                .await?;
                match resp.results.iter().find(|r| r.name == topic) {
                    Some(r) if r.error_code == ErrorCode::NotController.code() => Err(
                        Error::broker(ErrorCode::NotController, r.error_message.clone(), topic),
                    ),
                    _ => Ok(resp),
                }
            })
            .await?;
        let r = resp
            .results
            .iter()
            .find(|r| r.name == topic)
            .ok_or_else(|| Error::Protocol(format!("no answer for topic {topic:?}")))?;
        check_code(r.error_code, r.error_message.as_deref(), topic)?;
        // The new partitions need leaders before anyone routes to them.
        self.client.invalidate();
        Ok(())
    }

    /// Every topic in the cluster, sorted by name; internal topics (`__consumer_offsets`,
    /// `__transaction_state`) only with `include_internal`.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<TopicListing>, Error> {
        let resp = self.retrying(|| self.client.fetch_metadata(None)).await?;
        let mut topics: Vec<TopicListing> = resp
            .topics
            .into_iter()
            .filter(|t| include_internal || !t.is_internal)
            .filter(|t| t.error_code == ErrorCode::None.code())
            .filter_map(|t| {
                Some(TopicListing {
                    name: t.name?,
                    topic_id: (t.topic_id != Uuid::ZERO).then_some(t.topic_id),
                    partitions: t.partitions.len() as i32,
                    is_internal: t.is_internal,
                })
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_topic_carries_configs_and_asks_for_defaults_only_where_possible() {
        let t = NewTopic::new("orders")
            .partitions(3)
            .config("retention.ms", "60000")
            .config("cleanup.policy", "compact");
        let e = t.to_request(4).unwrap();
        assert_eq!((e.num_partitions, e.replication_factor), (3, -1));
        let configs: Vec<_> = e
            .configs
            .iter()
            .map(|c| (c.name.as_str(), c.value.as_deref()))
            .collect();
        assert_eq!(
            configs,
            [
                ("cleanup.policy", Some("compact")),
                ("retention.ms", Some("60000"))
            ]
        );
        // Before v4 the broker cannot fill in a default: say so instead of sending -1.
        assert!(matches!(t.to_request(3), Err(Error::Unsupported(_))));
        let full = NewTopic::new("x").partitions(1).replication_factor(1);
        assert_eq!(full.to_request(0).unwrap().replication_factor, 1);
    }

    #[test]
    fn an_assignment_excludes_counts() {
        let t = NewTopic::new("x")
            .assignment(0, vec![1, 2])
            .assignment(1, vec![2, 1]);
        let e = t.to_request(0).unwrap();
        assert_eq!((e.num_partitions, e.replication_factor), (-1, -1));
        assert_eq!(e.assignments.len(), 2);
        assert_eq!(e.assignments[1].broker_ids, [2, 1]);
        assert!(matches!(
            t.partitions(2).to_request(7),
            Err(Error::InvalidArgument(_))
        ));
    }
}
