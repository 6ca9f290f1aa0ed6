//! The producer's view of the cluster: topic metadata, Produce requests to a broker, and
//! InitProducerId. Behind a trait so the producer's timing logic (linger, retries, delivery
//! timeouts, back-pressure) runs in virtual time against a scripted cluster in the unit
//! tests; the real implementation is the [`Client`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kafka_proto::ErrorCode;
use kafka_proto::messages::{InitProducerIdRequest, ProduceRequest};

use super::accumulator::RequestOutcome;
use super::config::Acks;
use super::error::ProduceError;
use crate::client::{Client, TopicMetadata};
use crate::error::{Error, RequestError};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Produce v3 introduced record batch v2, the only format this producer writes.
pub(crate) const MIN_PRODUCE_VERSION: i16 = 3;

pub(crate) trait Cluster: Send + Sync + 'static {
    /// The topic's metadata, waiting for a topic that is being created.
    fn topic(&self, name: &str) -> BoxFuture<Result<Arc<TopicMetadata>, Error>>;
    /// The topic's metadata as currently cached (leaders may be stale).
    fn cached_topic(&self, name: &str) -> Option<Arc<TopicMetadata>>;
    /// Routing is stale: refresh metadata soon.
    fn invalidate(&self);
    /// Sends one Produce request to `node`; with `Acks::None` no answer is awaited. `timeout`
    /// bounds the wait for the answer only, not the wait for a connection: a request that
    /// never left must not count as one that may have been written.
    fn produce(
        &self,
        node: i32,
        request: ProduceRequest,
        acks: Acks,
        timeout: Duration,
    ) -> BoxFuture<RequestOutcome>;
    /// A producer id and epoch for an idempotent, non-transactional producer.
    fn init_producer_id(&self) -> BoxFuture<Result<(i64, i16), ProduceError>>;
}

impl Cluster for Client {
    fn topic(&self, name: &str) -> BoxFuture<Result<Arc<TopicMetadata>, Error>> {
        let client = self.clone();
        let name = name.to_owned();
        Box::pin(async move { client.topic(&name).await })
    }

    fn cached_topic(&self, name: &str) -> Option<Arc<TopicMetadata>> {
        self.metadata().topics.get(name).cloned()
    }

    fn invalidate(&self) {
        Client::invalidate(self);
    }

    fn produce(
        &self,
        node: i32,
        request: ProduceRequest,
        acks: Acks,
        timeout: Duration,
    ) -> BoxFuture<RequestOutcome> {
        let client = self.clone();
        Box::pin(async move {
            let conn = match client.broker(node).await {
                Ok(conn) => conn,
                Err(e) => return RequestOutcome::Failed(e.into()),
            };
            match conn.version_for::<ProduceRequest>() {
                Ok(v) if v >= MIN_PRODUCE_VERSION => {}
                Ok(v) => {
                    return RequestOutcome::Failed(ProduceError::Fatal(Box::new(
                        Error::Protocol(format!(
                            "broker {node} speaks Produce only up to v{v}; record batches v2 \
                             need v{MIN_PRODUCE_VERSION}+"
                        ))
                        .into(),
                    )));
                }
                Err(e) => return RequestOutcome::Failed(e.into()),
            }
            let result = if acks == Acks::None {
                conn.send_oneway(&request).await.map(|()| None)
            } else {
                match tokio::time::timeout(timeout, conn.send(&request)).await {
                    Ok(r) => r.map(Some),
                    Err(_) => Err(RequestError::Timeout(timeout)),
                }
            };
            match result {
                Ok(Some(resp)) => RequestOutcome::Answered(resp),
                Ok(None) => RequestOutcome::Queued,
                Err(e) => RequestOutcome::Failed(client.request_failed(&conn, e).into()),
            }
        })
    }

    fn init_producer_id(&self) -> BoxFuture<Result<(i64, i16), ProduceError>> {
        let client = self.clone();
        Box::pin(async move {
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = None;
            // Ignored without a transactional id; Java sends its default too.
            req.transaction_timeout_ms = 60_000;
            let resp = client.send_any(&req).await?;
            match ErrorCode::from_code(resp.error_code) {
                ErrorCode::None => Ok((resp.producer_id, resp.producer_epoch)),
                code => Err(Error::broker(code, None, "InitProducerId").into()),
            }
        })
    }
}
