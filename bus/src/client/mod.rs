//! The cluster client: bootstrap, cached metadata, one pooled connection per broker, and
//! routing of requests to a chosen broker. Producer, consumer and admin sit on top of it.
//!
//! Metadata is an immutable snapshot behind an `Arc`, swapped whole on refresh. Refreshes are
//! single-flight (concurrent callers share one Metadata request), run on an interval
//! (`metadata_max_age`) and whenever a caller reports stale routing
//! ([`Client::invalidate`]) — the producer and consumer do that on NOT_LEADER_OR_FOLLOWER,
//! UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE and connection errors.
//!
//! Connections reconnect lazily: a failed connection is dropped from the pool, and the next
//! request to that broker dials again after an exponential, jittered backoff that grows with
//! consecutive failures and resets on success.

mod config;
pub mod metadata;

pub use config::ClientConfig;
pub use metadata::{BrokerInfo, ClusterMetadata, PartitionMetadata, TopicMetadata};

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};

use kafka_proto::messages::MetadataRequest;
use kafka_proto::messages::MetadataResponse;
use kafka_proto::messages::metadata_request::MetadataRequestTopic;
use kafka_proto::{ErrorCode, Request};
use partitioner::{RandomSource, SplitMix64};
use tokio::time::Instant;

use crate::connection::Connection;
use crate::error::{Error, RequestError};

/// A handle to the cluster, cheap to clone; all clones share metadata and connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.config.bootstrap)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    metadata: RwLock<Arc<ClusterMetadata>>,
    /// Held while a Metadata request is in flight; the value is when the last refresh ended.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Set by `invalidate`; cleared by a refresh that started after it.
    stale_since: Mutex<Option<Instant>>,
    /// Wakes the background refresher on `invalidate` (and when the client goes away).
    wake: Arc<tokio::sync::Notify>,
    /// Topics whose metadata the client keeps fresh.
    tracked: Mutex<BTreeSet<String>>,
    pool: Mutex<HashMap<i32, Arc<Slot>>>,
    /// Bootstrap connection, used until (and whenever) no known broker is reachable.
    bootstrap_conn: Mutex<Option<Connection>>,
    rng: Mutex<SplitMix64>,
}

/// One broker's pooled connection and its reconnect state.
#[derive(Default)]
struct Slot {
    /// Single-flight dialing: concurrent callers wait for one connect attempt.
    dial: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    conn: Option<Connection>,
    failures: u32,
    next_attempt: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Validates `config`, connects to a bootstrap broker and loads the cluster's metadata.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        config.validate().map_err(Error::Config)?;
        let inner = Arc::new(Inner {
            metadata: RwLock::new(Arc::new(ClusterMetadata {
                controller_id: -1,
                ..ClusterMetadata::default()
            })),
            refresh: tokio::sync::Mutex::new(None),
            stale_since: Mutex::new(None),
            wake: Arc::new(tokio::sync::Notify::new()),
            tracked: Mutex::new(BTreeSet::new()),
            pool: Mutex::new(HashMap::new()),
            bootstrap_conn: Mutex::new(None),
            rng: Mutex::new(SplitMix64::from_entropy()),
            config,
        });
        let client = Client { inner };
        client.refresh_metadata().await?;
        tokio::spawn(periodic_refresh(
            Arc::downgrade(&client.inner),
            client.inner.wake.clone(),
        ));
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The current metadata snapshot (possibly stale; see [`Client::topic`]).
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks routing as stale: the next metadata lookup refreshes first.
    pub fn invalidate(&self) {
        lock(&self.inner.stale_since).get_or_insert_with(Instant::now);
        self.inner.wake.notify_one();
    }

    fn is_stale(&self) -> bool {
        lock(&self.inner.stale_since).is_some()
    }

    /// Fetches metadata for the tracked topics (and brokers), single-flight: a caller that
    /// waited for a refresh started after it asked reuses that refresh.
    pub async fn refresh_metadata(&self) -> Result<Arc<ClusterMetadata>, Error> {
        let asked = Instant::now();
        let mut last = self.inner.refresh.lock().await;
        if last.is_some_and(|t| t > asked) {
            return Ok(self.metadata());
        }
        let topics: Vec<String> = lock(&self.inner.tracked).iter().cloned().collect();
        let started = Instant::now();
        let resp = self.fetch_metadata(Some(&topics)).await?;
        let snapshot = Arc::new(self.metadata().merge(&resp, false));
        *self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|p| p.into_inner()) = snapshot.clone();
        {
            let mut stale = lock(&self.inner.stale_since);
            if stale.is_some_and(|t| t <= started) {
                *stale = None;
            }
        }
        *last = Some(Instant::now());
        Ok(snapshot)
    }

    /// One Metadata request to any broker: `None` asks for every topic, `Some(list)` for
    /// those (an empty list asks for brokers only). Never creates topics.
    pub async fn fetch_metadata(
        &self,
        topics: Option<&[String]>,
    ) -> Result<MetadataResponse, Error> {
        let mut req = MetadataRequest::default();
        req.allow_auto_topic_creation = false;
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut r = MetadataRequestTopic::default();
                    r.name = Some(t.clone());
                    r
                })
                .collect()
        });
        let mut attempt = 0u32;
        loop {
            let conn = self.any_broker().await?;
            match conn.send(&req).await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_retriable() && attempt < self.inner.config.metadata_retries => {
                    self.forget_connection(&conn);
                    attempt += 1;
                    tokio::time::sleep(self.backoff_delay(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Metadata for `topic`, refreshing when it is unknown or routing is stale, and waiting
    /// up to `metadata_wait` for a topic that is still being created or electing leaders.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicMetadata>, Error> {
        let newly_tracked = lock(&self.inner.tracked).insert(topic.to_owned());
        let deadline = Instant::now() + self.inner.config.metadata_wait;
        let mut attempt = 0u32;
        let mut must_refresh = newly_tracked || self.is_stale();
        loop {
            if must_refresh {
                self.refresh_metadata().await?;
            }
            let snapshot = self.metadata();
            if let Some(t) = snapshot.topics.get(topic)
                && t.error.is_ok()
                && !t.partitions.is_empty()
            {
                return Ok(t.clone());
            }
            if Instant::now() >= deadline {
                lock(&self.inner.tracked).remove(topic);
                return Err(Error::UnknownTopic(topic.to_owned()));
            }
            attempt += 1;
            tokio::time::sleep(self.backoff_delay(attempt)).await;
            must_refresh = true;
        }
    }

    /// Stops keeping `topic` fresh (a producer or consumer done with it).
    pub fn untrack(&self, topic: &str) {
        lock(&self.inner.tracked).remove(topic);
    }

    /// The node leading `topic`/`partition`.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<i32, Error> {
        let t = self.topic(topic).await?;
        let p = t
            .partition(partition)
            .ok_or_else(|| Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })?;
        if p.leader < 0 {
            self.invalidate();
            return Err(Error::NoLeader {
                topic: topic.to_owned(),
                partition,
            });
        }
        Ok(p.leader)
    }

    /// The pooled connection to broker `node_id`, dialing (after any backoff) if needed.
    pub async fn broker(&self, node_id: i32) -> Result<Connection, Error> {
        let slot = lock(&self.inner.pool).entry(node_id).or_default().clone();
        if let Some(conn) = slot.open_conn() {
            return Ok(conn);
        }
        let _dialing = slot.dial.lock().await;
        if let Some(conn) = slot.open_conn() {
            return Ok(conn);
        }
        let wait_until = lock(&slot.state).next_attempt;
        if let Some(at) = wait_until {
            tokio::time::sleep_until(at).await;
        }
        let addr = {
            let md = self.metadata();
            match md.brokers.get(&node_id) {
                Some(b) => b.addr(),
                None => {
                    self.invalidate();
                    return Err(Error::UnknownBroker(node_id));
                }
            }
        };
        match Connection::connect(&addr, self.inner.config.connection.clone()).await {
            Ok(conn) => {
                let mut st = lock(&slot.state);
                st.conn = Some(conn.clone());
                st.failures = 0;
                st.next_attempt = None;
                Ok(conn)
            }
            Err(e) => {
                let mut st = lock(&slot.state);
                st.failures = st.failures.saturating_add(1);
                st.next_attempt = Some(Instant::now() + self.reconnect_delay(st.failures));
                drop(st);
                self.invalidate();
                Err(e.into())
            }
        }
    }

    /// Any usable connection: a pooled one, then a known broker, then the bootstrap list.
    pub async fn any_broker(&self) -> Result<Connection, Error> {
        let pooled: Vec<Arc<Slot>> = lock(&self.inner.pool).values().cloned().collect();
        if let Some(conn) = pooled.iter().find_map(|s| s.open_conn()) {
            return Ok(conn);
        }
        if let Some(conn) = lock(&self.inner.bootstrap_conn)
            .as_ref()
            .filter(|c| !c.is_closed())
        {
            return Ok(conn.clone());
        }
        let known: Vec<i32> = self.metadata().brokers.keys().copied().collect();
        for node in known {
            match self.broker(node).await {
                Ok(conn) => return Ok(conn),
                // TLS or SASL refused us: every broker will, so say so now.
                Err(Error::Request(e)) if e.security().is_some() => return Err(e.into()),
                Err(_) => {}
            }
        }
        self.bootstrap().await
    }

    async fn bootstrap(&self) -> Result<Connection, Error> {
        let cfg = &self.inner.config;
        let mut last = None;
        for attempt in 0..=cfg.metadata_retries {
            if attempt > 0 {
                tokio::time::sleep(self.reconnect_delay(attempt)).await;
            }
            for addr in &cfg.bootstrap {
                match Connection::connect(addr, cfg.connection.clone()).await {
                    Ok(conn) => {
                        *lock(&self.inner.bootstrap_conn) = Some(conn.clone());
                        return Ok(conn);
                    }
                    // A TLS or SASL failure is final: no other address or retry fixes a
                    // wrong password, and retrying would hammer the broker's auth.
                    Err(e) if e.security().is_some() => return Err(e.into()),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(Error::NoBrokerReachable {
            tried: cfg.bootstrap.join(","),
            last: last.unwrap_or(RequestError::Timeout(cfg.connection.connect_timeout)),
        })
    }

    /// Sends `req` to broker `node_id`. A connection failure drops the pooled connection and
    /// marks metadata stale, so the caller's retry dials afresh and re-routes.
    pub async fn send_to<R: Request>(&self, node_id: i32, req: &R) -> Result<R::Response, Error> {
        let conn = self.broker(node_id).await?;
        conn.send(req)
            .await
            .map_err(|e| self.request_failed(&conn, e))
    }

    /// What every routed request does when it fails: a closed connection is dropped from the
    /// pool and metadata marked stale, so the caller's retry dials afresh and re-routes.
    /// Returns the error as the client's.
    pub fn request_failed(&self, conn: &Connection, e: RequestError) -> Error {
        if matches!(e, RequestError::ConnectionClosed { .. }) {
            self.forget_connection(conn);
            self.invalidate();
        }
        e.into()
    }

    /// Sends `req` to any broker (for cluster-wide requests such as ListGroups or Metadata).
    pub async fn send_any<R: Request>(&self, req: &R) -> Result<R::Response, Error> {
        let conn = self.any_broker().await?;
        conn.send(req).await.map_err(|e| {
            if matches!(e, RequestError::ConnectionClosed { .. }) {
                self.forget_connection(&conn);
            }
            e.into()
        })
    }

    /// Sends `req` to the controller (topic admin), refreshing metadata when none is known.
    pub async fn send_to_controller<R: Request>(&self, req: &R) -> Result<R::Response, Error> {
        let mut controller = self.metadata().controller_id;
        if controller < 0 {
            controller = self.refresh_metadata().await?.controller_id;
        }
        if controller < 0 {
            return self.send_any(req).await;
        }
        self.send_to(controller, req).await
    }

    /// Drops `conn` from the pool if it is the pooled one (it failed; the next use redials).
    pub fn forget_connection(&self, conn: &Connection) {
        for slot in lock(&self.inner.pool).values() {
            let mut st = lock(&slot.state);
            if st.conn.as_ref().is_some_and(|c| c.same_as(conn)) {
                st.conn = None;
            }
        }
        let mut b = lock(&self.inner.bootstrap_conn);
        if b.as_ref().is_some_and(|c| c.same_as(conn)) {
            *b = None;
        }
    }

    /// Closes every pooled connection. Clones of this client see a closed pool and redial on
    /// next use, so call it only when done.
    pub fn close(&self) {
        for slot in lock(&self.inner.pool).values() {
            if let Some(c) = lock(&slot.state).conn.take() {
                c.close();
            }
        }
        if let Some(c) = lock(&self.inner.bootstrap_conn).take() {
            c.close();
        }
    }

    fn next_random(&self) -> u64 {
        lock(&self.inner.rng).next_u64()
    }

    /// The delay before retry `attempt` of a retriable request (`retry_backoff`).
    pub fn backoff_delay(&self, attempt: u32) -> std::time::Duration {
        self.inner
            .config
            .retry_backoff
            .delay(attempt, self.next_random())
    }

    fn reconnect_delay(&self, failures: u32) -> std::time::Duration {
        self.inner
            .config
            .reconnect_backoff
            .delay(failures, self.next_random())
    }
}

impl Slot {
    fn open_conn(&self) -> Option<Connection> {
        let mut st = lock(&self.state);
        match &st.conn {
            Some(c) if !c.is_closed() => Some(c.clone()),
            Some(_) => {
                st.conn = None;
                None
            }
            None => None,
        }
    }
}

/// Turns a topic-level error code from a metadata or admin response into a result.
pub fn check_code(code: i16, message: Option<&str>, context: &str) -> Result<(), Error> {
    match ErrorCode::from_code(code) {
        ErrorCode::None => Ok(()),
        code => Err(Error::broker(
            code,
            message.map(str::to_owned),
            context.to_owned(),
        )),
    }
}

/// Keeps tracked topics fresh every `metadata_max_age`, and soon after an `invalidate`.
/// Sleeps between those events (an idle client does not wake), holds only a weak reference,
/// and ends when the last client handle is dropped.
async fn periodic_refresh(inner: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let (max_age, gap) = match inner.upgrade() {
            Some(i) => (i.config.metadata_max_age, i.config.retry_backoff.initial),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(max_age) => {}
            _ = wake.notified() => {}
        }
        // Coalesce a burst of invalidations into one refresh, and pace refreshes while a
        // broker is down.
        tokio::time::sleep(gap.max(std::time::Duration::from_millis(10))).await;
        let Some(i) = inner.upgrade() else { return };
        let client = Client { inner: i };
        // A failed background refresh is retried on the next wake; callers see errors on
        // their own lookups.
        let _ = client.refresh_metadata().await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the refresher see the client is gone instead of sleeping out metadata_max_age.
        self.wake.notify_one();
    }
}
