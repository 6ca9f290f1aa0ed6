//! Cluster administration over a [`Client`]: topics and partitions, configs, offsets, consumer
//! groups and the cluster's shape.
//!
//! Routing follows Kafka's rules: topic changes go to the controller (a KRaft broker forwards
//! them, but the controller id from Metadata is still the cheapest hop), broker-scoped config
//! requests to that broker, ListOffsets to each partition's leader, and the rest to any broker.
//! Batch operations answer per item: the outer `Result` fails only when no answer came at all,
//! and each topic, resource or partition carries its own `Result`, so one existing topic does
//! not hide that the others were created. A broker's per-item error is an
//! [`Error::Broker`] with the Kafka code, the broker's message and the item's name.
//!
//! Every call retries what Kafka marks retriable (connection failures, NOT_CONTROLLER, moved
//! leaders) with the client's `retry_backoff`, within [`AdminConfig::api_timeout`]. A retry
//! after a lost response can see its own earlier success (TOPIC_ALREADY_EXISTS on a retried
//! create); like Kafka's clients, that is reported as is.

mod cluster;
mod config;
mod configs;
mod groups;
mod offsets;
mod requests;
mod topics;
mod watermarks;

pub use cluster::ClusterDescription;
pub use config::AdminConfig;
pub use configs::{AlterConfigOp, ConfigEntry, ConfigResource, ConfigSource, ConfigSynonym};
pub use groups::{
    CommittedOffset, GroupDescription, GroupListing, GroupMember, GroupState, MemberAssignment,
    OffsetReset, PartitionLag, ResetSpec,
};
pub use requests::{TOPIC_CHANGE_TIMEOUT_MS, create_topic_request, delete_topics_request};
pub use topics::{CreatedTopic, NewTopic, TopicListing};

pub use crate::offsets::{IsolationLevel, ListedOffset, OffsetSpec};

use std::future::Future;

use tokio::time::Instant;

use crate::client::Client;
use crate::connection::Connection;
use crate::error::Error;

/// Cluster administration. Cheap to clone; shares the client's metadata and connections.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
    config: AdminConfig,
}

impl Client {
    /// An admin client with default [`AdminConfig`] over this client's connections.
    pub fn admin(&self) -> Admin {
        Admin {
            client: self.clone(),
            config: AdminConfig::default(),
        }
    }
}

impl Admin {
    /// An admin client with `config`, rejected if `config` cannot work.
    pub fn new(client: Client, config: AdminConfig) -> Result<Admin, Error> {
        config.validate().map_err(Error::Config)?;
        Ok(Admin { client, config })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &AdminConfig {
        &self.config
    }

    /// Runs `op` until it succeeds, fails with an error that retrying cannot fix, or the next
    /// attempt would start after `api_timeout`. Stale-routing errors refresh metadata first.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let deadline = Instant::now() + self.config.api_timeout;
        let mut attempt = 0u32;
        loop {
            match op().await {
                Err(e) if e.is_retriable() => {
                    attempt += 1;
                    let delay = self.client.backoff_delay(attempt);
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    self.client.invalidate();
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// The controller's connection, or any broker's when the cluster names no controller
    /// (KRaft brokers forward controller requests themselves).
    async fn controller(&self) -> Result<Connection, Error> {
        let mut id = self.client.metadata().controller_id;
        if id < 0 {
            id = self.client.refresh_metadata().await?.controller_id;
        }
        if id < 0 {
            return self.client.any_broker().await;
        }
        self.client.broker(id).await
    }
}
