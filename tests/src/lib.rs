//! Shared helpers for the integration tests: where the broker is, and a minimal blocking test
//! connection that speaks raw frames (so tests can see exact bytes, independent of `bus`).
//!
//! The broker address comes from `KAFKA_BOOTSTRAP` (`scripts/broker.sh start` prints it).
//! Under `CI=true` a missing or unreachable broker fails the test; elsewhere the test prints
//! why it did nothing and passes, so `cargo test` works on a laptop without a broker. With the
//! `testcontainers` feature and no `KAFKA_BOOTSTRAP`, an `apache/kafka` container is started
//! instead (hosts with Docker).

#[cfg(feature = "testcontainers")]
pub mod container;
pub mod event_bus_suite;
pub mod fake;
pub mod fault_proxy;
pub mod secure;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_proto::envelope::{decode_response, encode_request};
use kafka_proto::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_proto::messages::{
    ApiVersionsRequest, ApiVersionsResponse, FetchRequest, ResponseHeader,
};
use kafka_proto::version::BrokerVersions;
use kafka_proto::{Request, Response};

/// Whether this is a CI run (`CI=true` or `CI=1`): there a missing broker or peer fails the
/// test instead of skipping it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The broker to test against, or `None` (after printing why) when tests should not run.
pub fn bootstrap() -> Option<String> {
    let ci = ci();
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(addr) if !addr.is_empty() => {
            if TcpStream::connect_timeout(&resolve(&addr), Duration::from_secs(5)).is_err() {
                assert!(
                    !ci,
                    "KAFKA_BOOTSTRAP={addr} is not reachable and CI=true: the broker must be up"
                );
                eprintln!("note: KAFKA_BOOTSTRAP={addr} is not reachable; skipping broker test");
                return None;
            }
            Some(addr)
        }
        _ => {
            assert!(
                !ci,
                "KAFKA_BOOTSTRAP is not set and CI=true: run `scripts/broker.sh start` first"
            );
            eprintln!("note: KAFKA_BOOTSTRAP not set; skipping broker test (see README)");
            None
        }
    }
}

fn resolve(addr: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve KAFKA_BOOTSTRAP={addr}"))
}

/// A unique topic name so tests can run concurrently and repeatedly against one broker.
pub fn unique_topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Fetch of partition 0 from offset 0, up to `max_bytes`, in the form `version` carries:
/// topics are named by id from v13 (KIP-516) and by name before.
pub fn fetch_from_start(
    topic: &str,
    topic_id: kafka_proto::Uuid,
    version: i16,
    max_bytes: i32,
) -> FetchRequest {
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = 0;
    partition.partition_max_bytes = max_bytes;
    let mut t = FetchTopic::default();
    if version >= 13 {
        t.topic_id = topic_id;
    } else {
        t.topic = topic.into();
    }
    t.partitions.push(partition);
    let mut req = FetchRequest::default();
    req.max_wait_ms = 500;
    req.min_bytes = 1;
    req.max_bytes = max_bytes;
    req.topics.push(t);
    req
}

/// One blocking connection that sends a request and returns the raw response frame.
pub struct TestConnection {
    stream: TcpStream,
    next_id: i32,
    pub versions: BrokerVersions,
}

impl TestConnection {
    pub fn connect(addr: &str) -> std::io::Result<TestConnection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut conn = TestConnection {
            stream,
            next_id: 1,
            versions: BrokerVersions::default(),
        };
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = "kbus-tests".into();
        req.client_software_version = "0".into();
        let (_, resp): (_, ApiVersionsResponse) =
            conn.round_trip(&req, 3).map_err(std::io::Error::other)?;
        conn.versions = BrokerVersions::from_response(&resp);
        Ok(conn)
    }

    /// Sends `req` at `version` and returns the response frame exactly as received (header
    /// and body, without the size prefix).
    pub fn raw<R: Request>(&mut self, req: &R, version: i16) -> Result<Bytes, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = BytesMut::new();
        encode_request(&mut buf, version, id, Some("kbus-tests"), req)
            .map_err(|e| e.to_string())?;
        self.stream.write_all(&buf).map_err(|e| e.to_string())?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| e.to_string())?;
        let size = i32::from_be_bytes(size);
        if !(0..=100 << 20).contains(&size) {
            return Err(format!("implausible frame size {size}"));
        }
        let mut frame = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|e| e.to_string())?;
        if frame.get(..4) != Some(&id.to_be_bytes()[..]) {
            return Err("correlation id mismatch".into());
        }
        Ok(Bytes::from(frame))
    }

    /// Sends `req` at `version` and decodes the typed response.
    pub fn round_trip<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<(ResponseHeader, R::Response), String>
    where
        R::Response: Response,
    {
        let frame = self.raw(req, version)?;
        decode_response::<R::Response>(frame, version).map_err(|e| format!("{e}"))
    }

    /// The negotiated version for `R` with this broker.
    pub fn version<R: Request>(&self) -> i16 {
        self.versions
            .negotiate(R::API_KEY, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A loopback port that was free a moment ago, for a process the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Milliseconds since the epoch, for record timestamps and timestamp lookups.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// tansu names its cluster this; tests that assert Kafka's exact answers check it to assert
/// tansu's documented departures instead.
pub fn is_tansu(client: &bus::Client) -> bool {
    client.metadata().cluster_id.as_deref() == Some("tansu_cluster")
}

/// A client of the broker at `addr` with default settings.
pub async fn client(addr: &str) -> bus::Client {
    bus::Client::connect(bus::ClientConfig::new([addr]))
        .await
        .unwrap()
}

/// The group tests' consumer settings: from the earliest offset where nothing is committed,
/// and fetches the broker holds at most 100 ms, so a `poll` soon sees a rebalance.
pub fn consumer_config() -> bus::consumer::ConsumerConfig {
    bus::consumer::ConsumerConfig::default()
        .auto_offset_reset(bus::consumer::AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100))
}

/// A client for `addr` and a fresh topic of `partitions` partitions (replication 1).
pub async fn client_with_topic(addr: &str, prefix: &str, partitions: i32) -> (bus::Client, String) {
    let client = client(addr).await;
    let topic = unique_topic(prefix);
    client
        .admin()
        .create_topic(
            bus::admin::NewTopic::new(&topic)
                .partitions(partitions)
                .replication_factor(1),
        )
        .await
        .unwrap();
    (client, topic)
}

/// Sends one already-encoded batch to the partition's leader with acks=all, independent of
/// the producer under test; returns its base offset, or the broker's error code.
pub async fn produce_batch(
    client: &bus::Client,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> Result<i64, kafka_proto::ErrorCode> {
    use kafka_proto::messages::ProduceRequest;
    use kafka_proto::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = topic.into();
    t.partition_data.push(p);
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data.push(t);
    let leader = client.leader(topic, partition).await.unwrap();
    let resp = client.send_to(leader, &req).await.unwrap();
    let part = &resp.responses[0].partition_responses[0];
    match kafka_proto::ErrorCode::from_code(part.error_code) {
        kafka_proto::ErrorCode::None => Ok(part.base_offset),
        code => Err(code),
    }
}

/// Whether the confluent-kafka Python peer (librdkafka) imports. Under `CI=true` a missing peer
/// fails the test instead of skipping its interop half.
pub fn confluent_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !ci(),
            "confluent-kafka is not importable and CI=true: run scripts/install-python-peers.sh"
        );
        eprintln!("note: confluent-kafka missing; skipping its part of the test");
    }
    ok
}
