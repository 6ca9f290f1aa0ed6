//! The cluster's shape: id, controller and brokers. DescribeCluster (KIP-700) is asked when
//! the broker offers it, because it is the one request that reports the cluster as a whole
//! without listing topics; older brokers answer the same questions through Metadata.

use kafka_proto::messages::{DescribeClusterRequest, MetadataRequest};

use super::Admin;
use crate::client::{BrokerInfo, check_code};
use crate::error::Error;
use crate::routing::send_versioned_on;

/// The cluster as one broker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    /// `None` when the broker does not say (a KRaft broker may not expose the controller).
    pub controller_id: Option<i32>,
    /// Sorted by node id.
    pub brokers: Vec<BrokerInfo>,
}

impl Admin {
    /// Describes the cluster, through DescribeCluster where the broker offers it and
    /// through Metadata otherwise.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, Error> {
        let mut description = self
            .retrying(|| async move {
                let conn = self.client.any_broker().await?;
                if conn.version_for::<DescribeClusterRequest>().is_err() {
                    let resp = send_versioned_on(&self.client, &conn, |_| {
                        // An empty topic list asks for brokers only.
                        let mut req = MetadataRequest::default();
                        req.topics = Some(Vec::new());
                        req.allow_auto_topic_creation = false;
                        Ok(req)
                    })
                    .await?;
                    return Ok(ClusterDescription {
                        cluster_id: resp.cluster_id,
                        controller_id: (resp.controller_id >= 0).then_some(resp.controller_id),
                        brokers: resp
                            .brokers
                            .into_iter()
                            .map(|b| BrokerInfo {
                                node_id: b.node_id,
                                host: b.host,
                                port: b.port,
                                rack: b.rack,
                            })
                            .collect(),
                    });
                }
                let resp = send_versioned_on(&self.client, &conn, |_| {
                    Ok(DescribeClusterRequest::default())
                })
                .await?;
                check_code(resp.error_code, resp.error_message.as_deref(), "cluster")?;
                Ok(ClusterDescription {
                    cluster_id: Some(resp.cluster_id),
                    controller_id: (resp.controller_id >= 0).then_some(resp.controller_id),
                    brokers: resp
                        .brokers
                        .into_iter()
                        .map(|b| BrokerInfo {
                            node_id: b.broker_id,
                            host: b.host,
                            port: b.port,
                            rack: b.rack,
                        })
                        .collect(),
                })
            })
            .await?;
        description.brokers.sort_by_key(|b| b.node_id);
        Ok(description)
    }
}
