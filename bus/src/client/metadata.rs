//! A snapshot of cluster metadata: brokers, the controller and the topics the client uses.
//! Snapshots are immutable and shared (`Arc`); a refresh builds a new one, so a reader never
//! sees a half-updated view.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_proto::ErrorCode;
use kafka_proto::messages::MetadataResponse;

/// One broker as the cluster advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port`, bracketing IPv6 literals.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// -1 while no leader is elected.
    pub leader: i32,
    pub leader_epoch: i32,
    pub error: ErrorCode,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: [u8; 16],
    pub error: ErrorCode,
    pub is_internal: bool,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    pub fn partition(&self, partition: i32) -> Option<&PartitionMetadata> {
        self.partitions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()
            .map(|i| &self.partitions[i])
    }

    /// Partitions with a leader, for the sticky partitioner's choice of unkeyed records.
    pub fn available_partitions(&self) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|p| p.leader >= 0)
            .map(|p| p.partition)
            .collect()
    }
}

/// The client's view of the cluster at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    /// -1 when unknown.
    pub controller_id: i32,
    pub brokers: HashMap<i32, BrokerInfo>,
    pub topics: HashMap<String, Arc<TopicMetadata>>,
}

impl ClusterMetadata {
    /// A new snapshot: brokers and controller from `resp`; topics from `resp` replace their
    /// entries, and with `full` (a request for all topics) topics absent from `resp` are
    /// dropped, otherwise they are kept from `self`.
    pub fn merge(&self, resp: &MetadataResponse, full: bool) -> ClusterMetadata {
        let brokers = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id,
                    BrokerInfo {
                        node_id: b.node_id,
                        host: b.host.clone(),
                        port: b.port,
                        rack: b.rack.clone(),
                    },
                )
            })
            .collect();
        let mut topics = if full {
            HashMap::new()
        } else {
            self.topics.clone()
        };
        for t in &resp.topics {
            let Some(name) = t.name.clone() else { continue };
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id,
                    leader_epoch: p.leader_epoch,
                    error: ErrorCode::from_code(p.error_code),
                    replicas: p.replica_nodes.clone(),
                    isr: p.isr_nodes.clone(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let error = ErrorCode::from_code(t.error_code);
            if error != ErrorCode::None && partitions.is_empty() {
                // An unknown or not-yet-ready topic: forget what we had so callers look again.
                topics.remove(&name);
                continue;
            }
            topics.insert(
                name.clone(),
                Arc::new(TopicMetadata {
                    name,
                    topic_id: t.topic_id.0,
                    error,
                    is_internal: t.is_internal,
                    partitions,
                }),
            );
        }
        ClusterMetadata {
            cluster_id: resp.cluster_id.clone(),
            controller_id: resp.controller_id,
            brokers,
            topics,
        }
    }
}
