//! The Kafka backend: the producer for events and dead letters (explicit partitions, so the
//! bus's placement rule is the only one), the admin client for missing topics, and the
//! consumer group for handler groups.
//!
//! Revocation is never cut short. `GroupConsumer::poll` runs the rebalance callbacks, and
//! `on_revoked` waits for the partitions' in-flight handler calls (the runtime stops their
//! workers; backoffs end at once, so that is one call at most) and then commits what they
//! finished. [`KafkaSubscription::poll`] gives up waiting for records after the poll timeout
//! (`GroupConsumer::poll_for`), so the runtime gets back to its periodic commits and notices a
//! shutdown, but never while a callback is running: cancelled there, the commit would be
//! skipped and the next poll would rejoin while the old workers were still running, so that
//! two members handled one partition. The group consumer keeps heartbeating through the
//! callback, so a slow handler does not cost the member its session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_proto::ErrorCode;

use super::backend::{
    Backend, BusError, OutRecord, PartitionId, RevokeHook, SendResult, Subscription, TopicSpec,
};
use super::config::BusConfig;
use super::envelope::InRecord;
use super::handler::BoxFuture;
use crate::admin::NewTopic;
use crate::connection::ConnectionConfig;
use crate::group::{
    GroupConsumer, RebalanceContext, RebalanceListener, TopicPartition, TopicPartitionOffset,
};
use crate::producer::{Producer, Record};
use crate::{Client, ClientConfig};

/// Kafka as the bus's transport.
pub struct KafkaBackend {
    client: Client,
    producer: Producer,
    config: BusConfig,
}

impl KafkaBackend {
    pub async fn connect(config: &BusConfig) -> Result<KafkaBackend, BusError> {
        let mut cc = ClientConfig::new(config.kafka.brokers.iter().cloned());
        if let Some(security) = &config.kafka.security {
            // Every connection of the client (producer, admin, group consumer) is secured.
            cc = cc.connection(ConnectionConfig::default().security(security.clone()));
        }
        let client = Client::connect(cc).await?;
        let producer = Producer::new(client.clone(), config.producer_config()).await?;
        Ok(KafkaBackend {
            client,
            producer,
            config: config.clone(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Backend for KafkaBackend {
    fn ensure_topic(&self, spec: TopicSpec) -> BoxFuture<'_, Result<i32, BusError>> {
        Box::pin(async move {
            let admin = self.client.admin();
            let topics = admin.list_topics(false).await?;
            if let Some(t) = topics.iter().find(|t| t.name == spec.name) {
                return Ok(t.partitions);
            }
            let created = admin
                .create_topic(
                    NewTopic::new(&spec.name)
                        .partitions(spec.partitions)
                        .replication_factor(spec.replication_factor)
                        .config("retention.ms", spec.retention_ms.to_string()),
                )
                .await;
            match created {
                Ok(_) => {}
                // Another publisher created it first.
                Err(crate::Error::Broker {
                    code: ErrorCode::TopicAlreadyExists,
                    ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(self.client.topic(&spec.name).await?.partition_count())
        })
    }

    fn send(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Vec<SendResult>> {
        Box::pin(async move {
            let mut futures = Vec::with_capacity(records.len());
            for r in records {
                let mut rec = Record::new(r.topic)
                    .partition(r.partition)
                    .key(r.key)
                    .value(r.value);
                for (k, v) in r.headers {
                    rec = rec.header(k, Some(v));
                }
                futures.push(self.producer.send(rec).await);
            }
            let mut out = Vec::with_capacity(futures.len());
            for f in futures {
                out.push(match f {
                    Ok(f) => f
                        .await
                        .map(|md| (md.partition, md.offset))
                        .map_err(BusError::from),
                    Err(e) => Err(e.into()),
                });
            }
            out
        })
    }

    fn subscribe(
        &self,
        group_id: String,
        topics: Vec<String>,
        earliest: bool,
        hook: Arc<dyn RevokeHook>,
    ) -> BoxFuture<'_, Result<Box<dyn Subscription>, BusError>> {
        Box::pin(async move {
            let c = &self.config.kafka.consumer;
            let group = self.config.group_config(group_id);
            let consumer = self.config.consumer_config(earliest);
            let committed: Committed = Arc::default();
            let mut consumer = GroupConsumer::new(self.client.clone(), group, consumer)?
                .with_listener(Listener {
                    hook,
                    committed: committed.clone(),
                });
            consumer.subscribe(&topics)?;
            Ok(Box::new(KafkaSubscription {
                consumer,
                // The runtime needs poll back regularly to notice a shutdown and to commit;
                // poll_for returns after this, but never inside a rebalance callback.
                poll_timeout: Duration::from_millis(c.poll_timeout_ms)
                    .max(Duration::from_millis(500)),
                committed,
            }) as Box<dyn Subscription>)
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.producer.close().await?;
            self.client.close();
            Ok(())
        })
    }
}

/// The group's committed offset per assigned partition as this member knows it: found at
/// assignment, then what its own commits stored (no one else commits an assigned
/// partition). A partition the group never committed counts from the first offset read.
type Committed = Arc<Mutex<HashMap<PartitionId, i64>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands revocations to the runtime: it drains the partitions' workers and answers what
/// they finished, which is committed here while the generation is still valid.
struct Listener {
    hook: Arc<dyn RevokeHook>,
    committed: Committed,
}

fn tpos(offsets: &[(PartitionId, i64)]) -> Vec<TopicPartitionOffset> {
    offsets
        .iter()
        .map(|(p, o)| TopicPartitionOffset::new(p.topic.clone(), p.partition, *o))
        .collect()
}

impl Listener {
    fn forget(&self, partitions: &[TopicPartition]) {
        let mut committed = lock(&self.committed);
        for p in partitions {
            committed.remove(p);
        }
    }
}

impl RebalanceListener for Listener {
    async fn on_assigned(&mut self, ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let mut committed = lock(&self.committed);
        for tp in partitions {
            // Right after assignment the position is the committed offset, when there is one.
            match ctx.position(tp) {
                Some(o) => committed.insert(tp.clone(), o),
                None => committed.remove(tp),
            };
        }
    }

    async fn on_revoked(&mut self, ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let done = self.hook.revoked(partitions.to_vec()).await;
        if !done.is_empty()
            && let Err(e) = ctx.commit_offsets(&tpos(&done)).await
        {
            tracing::warn!(error = %e, "commit on revoke failed; the next owner may redeliver");
        }
        self.forget(partitions);
    }

    async fn on_lost(&mut self, _ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        // Another member may own them already: stop, and commit nothing.
        let _ = self.hook.revoked(partitions.to_vec()).await;
        self.forget(partitions);
    }
}

/// One handler group member on Kafka.
pub(crate) struct KafkaSubscription {
    consumer: GroupConsumer<Listener>,
    poll_timeout: Duration,
    committed: Committed,
}

impl KafkaSubscription {
    fn committed(&self, offsets: &[(PartitionId, i64)]) {
        let mut committed = lock(&self.committed);
        for (p, o) in offsets {
            committed.insert(p.clone(), *o);
        }
    }
}

impl Subscription for KafkaSubscription {
    /// Records, or none after the poll timeout; but a rebalance callback that has started
    /// is always run to its end first (see the module docs).
    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<InRecord>, BusError>> {
        Box::pin(async move {
            let records = self.consumer.poll_for(self.poll_timeout).await?;
            {
                let mut committed = lock(&self.committed);
                for r in &records {
                    committed
                        .entry(PartitionId::new(r.topic.clone(), r.partition))
                        .or_insert(r.offset);
                }
            }
            Ok(records
                .into_iter()
                .map(|r| InRecord {
                    topic: r.topic,
                    partition: r.partition,
                    offset: r.offset,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| (h.key.into(), h.value.unwrap_or_default()))
                        .collect(),
                })
                .collect())
        })
    }

    fn pause(&mut self, partition: &PartitionId) {
        if let Err(e) = self.consumer.pause(partition) {
            // Not assigned any more: nothing to pause.
            tracing::debug!(error = %e, "pause");
        }
    }

    fn resume(&mut self, partition: &PartitionId) {
        if let Err(e) = self.consumer.resume(partition) {
            tracing::debug!(error = %e, "resume");
        }
    }

    fn commit(&mut self, offsets: Vec<(PartitionId, i64)>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.consumer.commit_offsets(&tpos(&offsets)).await?;
            self.committed(&offsets);
            Ok(())
        })
    }

    /// High watermark (from the latest fetch) minus the group's committed offset, per
    /// assigned partition whose both ends are known.
    fn lag(&mut self) -> BoxFuture<'_, Vec<(PartitionId, i64)>> {
        Box::pin(async move {
            let committed = lock(&self.committed);
            self.consumer
                .assignment()
                .into_iter()
                .filter_map(|tp| {
                    let hw = self.consumer.high_watermark(&tp)?;
                    let lag = (hw - committed.get(&tp)?).max(0);
                    Some((tp, lag))
                })
                .collect()
        })
    }

    fn close(
        mut self: Box<Self>,
        offsets: Vec<(PartitionId, i64)>,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async move {
            let committed = if offsets.is_empty() {
                Ok(())
            } else {
                self.consumer.commit_offsets(&tpos(&offsets)).await
            };
            let closed = self.consumer.close().await;
            committed?;
            closed?;
            Ok(())
        })
    }
}
