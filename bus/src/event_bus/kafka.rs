//! The Kafka backend: the producer for events and dead letters (explicit partitions, so the
//! bus's placement rule is the only one), the admin client for missing topics, and the
//! consumer group for handler groups.

use std::sync::Arc;
use std::time::Duration;

use kafka_proto::ErrorCode;
use kafka_proto::compression::Compression;

use super::backend::{
    Backend, BusError, OutRecord, PartitionId, RevokeHook, SendResult, Subscription, TopicSpec,
};
use super::config::BusConfig;
use super::envelope::InRecord;
use super::handler::BoxFuture;
use crate::admin::NewTopic;
use crate::connection::ConnectionConfig;
use crate::consumer::{AutoOffsetReset, ConsumerConfig};
use crate::group::{
    GroupConfig, GroupConsumer, RebalanceContext, RebalanceListener, TopicPartition,
    TopicPartitionOffset,
};
use crate::producer::{Acks, Producer, ProducerConfig, Record};
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
        let p = &config.kafka.producer;
        let acks = match p.acks.as_str() {
            "0" => Acks::None,
            "1" => Acks::Leader,
            _ => Acks::All,
        };
        let pc = ProducerConfig::default()
            .acks(acks)
            .idempotence(p.idempotence)
            .linger(Duration::from_millis(p.linger_ms))
            .delivery_timeout(Duration::from_millis(p.delivery_timeout_ms))
            .compression(Compression::from_name(&p.compression).unwrap_or(Compression::None));
        let producer = Producer::new(client.clone(), pc).await?;
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
            let group = GroupConfig::new(group_id)
                .session_timeout(Duration::from_millis(c.session_timeout_ms))
                .heartbeat_interval(Duration::from_millis(c.heartbeat_interval_ms))
                .max_poll_records(c.max_poll_records)
                // The runtime commits what its handlers finished, never what poll returned.
                .auto_commit(false);
            let consumer = ConsumerConfig::default()
                .fetch_max_wait(Duration::from_millis(c.poll_timeout_ms))
                .auto_offset_reset(if earliest {
                    AutoOffsetReset::Earliest
                } else {
                    AutoOffsetReset::Latest
                });
            let mut consumer = GroupConsumer::new(self.client.clone(), group, consumer)?
                .with_listener(Listener { hook });
            consumer.subscribe(&topics)?;
            Ok(Box::new(KafkaSubscription {
                consumer,
                // poll waits until records arrive; the runtime needs it back regularly to
                // notice a shutdown and to commit. GroupConsumer::poll is cancel-safe.
                poll_timeout: Duration::from_millis(c.poll_timeout_ms)
                    .max(Duration::from_millis(500)),
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

/// Hands revocations to the runtime: it drains the partitions' workers and answers what
/// they finished, which is committed here while the generation is still valid.
struct Listener {
    hook: Arc<dyn RevokeHook>,
}

fn ids(partitions: &[TopicPartition]) -> Vec<PartitionId> {
    partitions
        .iter()
        .map(|tp| PartitionId {
            topic: tp.topic.clone(),
            partition: tp.partition,
        })
        .collect()
}

fn tpos(offsets: &[(PartitionId, i64)]) -> Vec<TopicPartitionOffset> {
    offsets
        .iter()
        .map(|(p, o)| TopicPartitionOffset::new(p.topic.clone(), p.partition, *o))
        .collect()
}

impl RebalanceListener for Listener {
    async fn on_revoked(&mut self, ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let done = self.hook.revoked(ids(partitions)).await;
        if !done.is_empty()
            && let Err(e) = ctx.commit_offsets(&tpos(&done)).await
        {
            tracing::warn!(error = %e, "commit on revoke failed; the next owner may redeliver");
        }
    }

    async fn on_lost(&mut self, _ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        // Another member may own them already: stop, and commit nothing.
        let _ = self.hook.revoked(ids(partitions)).await;
    }
}

struct KafkaSubscription {
    consumer: GroupConsumer<Listener>,
    poll_timeout: Duration,
}

impl Subscription for KafkaSubscription {
    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<InRecord>, BusError>> {
        Box::pin(async move {
            let Ok(records) = tokio::time::timeout(self.poll_timeout, self.consumer.poll()).await
            else {
                return Ok(Vec::new());
            };
            let records = records?;
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
                        .map(|h| (h.key, h.value.unwrap_or_default()))
                        .collect(),
                })
                .collect())
        })
    }

    fn pause(&mut self, partition: &PartitionId) {
        let tp = TopicPartition::new(partition.topic.clone(), partition.partition);
        if let Err(e) = self.consumer.pause(&tp) {
            // Not assigned any more: nothing to pause.
            tracing::debug!(error = %e, "pause");
        }
    }

    fn resume(&mut self, partition: &PartitionId) {
        let tp = TopicPartition::new(partition.topic.clone(), partition.partition);
        if let Err(e) = self.consumer.resume(&tp) {
            tracing::debug!(error = %e, "resume");
        }
    }

    fn commit(&mut self, offsets: Vec<(PartitionId, i64)>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.consumer.commit_offsets(&tpos(&offsets)).await?;
            Ok(())
        })
    }

    /// High watermark (from the latest fetch) minus position, per assigned partition.
    fn lag(&mut self) -> BoxFuture<'_, Vec<(PartitionId, i64)>> {
        Box::pin(async move {
            self.consumer
                .assignment()
                .into_iter()
                .filter_map(|tp| {
                    let lag = self.consumer.lag(&tp)?;
                    Some((
                        PartitionId {
                            topic: tp.topic,
                            partition: tp.partition,
                        },
                        lag,
                    ))
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
