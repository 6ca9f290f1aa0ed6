//! The partition consumer against a scripted two-broker cluster on loopback sockets, for the
//! answers a real test broker will not give on demand: OFFSET_OUT_OF_RANGE (tansu never sends
//! it) and a partition leader that moves (NOT_LEADER_OR_FOLLOWER from the old leader).
//!
//! The fake serves ApiVersions, Metadata, ListOffsets and Fetch for one topic `t` with one
//! partition, whose log is `log_start..log_start + values.len()`; fetches go through the
//! real client, connection and decoder.

mod common;

use common::scripted::{FrameReader, api_key, api_versions, reply};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::backoff::Backoff;
use bus::consumer::{AutoOffsetReset, ConsumerConfig, ConsumerRecord, Offset, PartitionConsumer};
use bus::{Client, ClientConfig, Error};
use bytes::{Bytes, BytesMut};
use kafka_proto::envelope::decode_request;
use kafka_proto::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_proto::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_proto::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_proto::messages::{
    ApiVersionsRequest, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse,
};
use kafka_proto::records::{BatchEncoder, BatchParams};
use kafka_proto::{ApiKey, ErrorCode, Uuid};
use tokio::net::{TcpListener, TcpStream};

const TOPIC_ID: Uuid = Uuid([7; 16]);
const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    leader: i32,
    leader_epoch: i32,
    log_start: i64,
    values: Vec<String>,
    /// (node, fetch offset) of every fetch, in arrival order.
    fetches: Vec<(i32, i64)>,
}

impl State {
    fn high_watermark(&self) -> i64 {
        self.log_start + self.values.len() as i64
    }
}

struct FakeCluster {
    ports: [u16; 2],
    state: Arc<Mutex<State>>,
}

impl FakeCluster {
    async fn start(log_start: i64, n: usize) -> FakeCluster {
        let state = Arc::new(Mutex::new(State {
            leader: 1,
            leader_epoch: 0,
            log_start,
            values: (0..n)
                .map(|i| format!("v{}", log_start + i as i64))
                .collect(),
            fetches: Vec::new(),
        }));
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ports = [
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        ];
        for (node, listener) in [(1, a), (2, b)] {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(node, ports, stream, state.clone()));
                }
            });
        }
        FakeCluster { ports, state }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    fn append(&self, n: usize) {
        let mut st = self.state.lock().unwrap();
        let next = st.high_watermark();
        st.values
            .extend((0..n as i64).map(|i| format!("v{}", next + i)));
    }

    fn move_leader_to(&self, node: i32) {
        let mut st = self.state.lock().unwrap();
        st.leader = node;
        st.leader_epoch += 1;
    }

    fn fetches(&self) -> Vec<(i32, i64)> {
        self.state.lock().unwrap().fetches.clone()
    }
}

async fn serve(node: i32, ports: [u16; 2], mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = FrameReader::new();
    while let Some(frame) = reader.next(&mut stream).await {
        let key = api_key(&frame);
        match key {
            k if k == ApiKey::ApiVersions as i16 => {
                let (h, _) = decode_request::<ApiVersionsRequest>(frame).unwrap();
                let resp = api_versions(&[
                    (ApiKey::ApiVersions, 4),
                    (ApiKey::Metadata, 12),
                    (ApiKey::ListOffsets, 9),
                    (ApiKey::Fetch, 12),
                ]);
                reply(&mut stream, h.correlation_id, h.request_api_version, &resp).await;
            }
            k if k == ApiKey::Metadata as i16 => {
                let (h, _) = decode_request::<MetadataRequest>(frame).unwrap();
                let resp = {
                    let st = state.lock().unwrap();
                    let mut resp = MetadataResponse::default();
                    resp.cluster_id = Some("fake".into());
                    resp.controller_id = 1;
                    for (id, port) in [(1, ports[0]), (2, ports[1])] {
                        let mut b = MetadataResponseBroker::default();
                        b.node_id = id;
                        b.host = "127.0.0.1".into();
                        b.port = port as i32;
                        resp.brokers.push(b);
                    }
                    let mut p = MetadataResponsePartition::default();
                    p.partition_index = 0;
                    p.leader_id = st.leader;
                    p.leader_epoch = st.leader_epoch;
                    p.replica_nodes = vec![1, 2];
                    p.isr_nodes = vec![1, 2];
                    let mut t = MetadataResponseTopic::default();
                    t.name = Some("t".into());
                    t.topic_id = TOPIC_ID;
                    t.partitions.push(p);
                    resp.topics.push(t);
                    resp
                };
                reply(&mut stream, h.correlation_id, h.request_api_version, &resp).await;
            }
            k if k == ApiKey::ListOffsets as i16 => {
                let (h, req) = decode_request::<ListOffsetsRequest>(frame).unwrap();
                let resp = {
                    let st = state.lock().unwrap();
                    let mut resp = ListOffsetsResponse::default();
                    for t in &req.topics {
                        let mut rt = ListOffsetsTopicResponse::default();
                        rt.name = t.name.clone();
                        for p in &t.partitions {
                            let mut rp = ListOffsetsPartitionResponse::default();
                            rp.partition_index = p.partition_index;
                            if node != st.leader {
                                rp.error_code = ErrorCode::NotLeaderOrFollower.code();
                            } else {
                                rp.offset = match p.timestamp {
                                    -2 => st.log_start,
                                    _ => st.high_watermark(),
                                };
                                rp.timestamp = -1;
                            }
                            rt.partitions.push(rp);
                        }
                        resp.topics.push(rt);
                    }
                    resp
                };
                reply(&mut stream, h.correlation_id, h.request_api_version, &resp).await;
            }
            k if k == ApiKey::Fetch as i16 => {
                let (h, req) = decode_request::<FetchRequest>(frame).unwrap();
                let offset = req.topics[0].partitions[0].fetch_offset;
                let (mut data, empty) = {
                    let mut st = state.lock().unwrap();
                    st.fetches.push((node, offset));
                    let mut d = PartitionData::default();
                    d.partition_index = 0;
                    d.high_watermark = st.high_watermark();
                    d.last_stable_offset = st.high_watermark();
                    d.log_start_offset = st.log_start;
                    let mut empty = false;
                    if node != st.leader {
                        d.error_code = ErrorCode::NotLeaderOrFollower.code();
                    } else if offset < st.log_start || offset > st.high_watermark() {
                        d.error_code = ErrorCode::OffsetOutOfRange.code();
                    } else if offset == st.high_watermark() {
                        empty = true;
                    } else {
                        let mut buf = BytesMut::new();
                        let mut b = BatchEncoder::new(
                            &mut buf,
                            BatchParams {
                                base_offset: offset,
                                ..BatchParams::default()
                            },
                        );
                        for v in &st.values[(offset - st.log_start) as usize..] {
                            b.append(1, None, Some(v.as_bytes()), &[]).unwrap();
                        }
                        d.records = Some(b.finish().unwrap());
                    }
                    (d, empty)
                };
                if empty {
                    tokio::time::sleep(Duration::from_millis(req.max_wait_ms as u64)).await;
                    data.records = Some(Bytes::new());
                }
                let mut t = FetchableTopicResponse::default();
                t.topic = "t".into();
                t.partitions.push(data);
                let mut resp = FetchResponse::default();
                resp.responses.push(t);
                reply(&mut stream, h.correlation_id, h.request_api_version, &resp).await;
            }
            other => panic!("the fake cluster does not serve API key {other}"),
        }
    }
}

async fn consumer(cluster: &FakeCluster, reset: AutoOffsetReset) -> PartitionConsumer {
    let config = ClientConfig::new([cluster.bootstrap()]).retry_backoff(Backoff::new(
        Duration::from_millis(5),
        Duration::from_millis(20),
    ));
    let client = Client::connect(config).await.unwrap();
    PartitionConsumer::new(
        client,
        ConsumerConfig::default()
            .auto_offset_reset(reset)
            .fetch_max_wait(Duration::from_millis(20)),
    )
    .unwrap()
}

async fn read(c: &mut PartitionConsumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(WAIT, c.poll_batch())
            .await
            .expect("records in time")
            .unwrap();
        out.extend(batch);
    }
    out
}

fn offsets(records: &[ConsumerRecord]) -> Vec<i64> {
    records.iter().map(|r| r.offset).collect()
}

#[tokio::test]
async fn offset_out_of_range_resets_to_earliest() {
    let cluster = FakeCluster::start(10, 10).await;
    let mut c = consumer(&cluster, AutoOffsetReset::Earliest).await;
    c.assign([("t", 0, Offset::At(3))]).unwrap();
    let records = read(&mut c, 10).await;
    assert_eq!(offsets(&records), (10..20).collect::<Vec<_>>());
    assert_eq!(records[0].value.as_deref(), Some(&b"v10"[..]));
    assert_eq!(c.position("t", 0), Some(20));
}

#[tokio::test]
async fn offset_out_of_range_resets_to_latest() {
    let cluster = FakeCluster::start(10, 10).await;
    let mut c = consumer(&cluster, AutoOffsetReset::Latest).await;
    c.assign([("t", 0, Offset::At(500))]).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.poll_batch())
            .await
            .is_err(),
        "nothing before new records"
    );
    assert_eq!(c.position("t", 0), Some(20));
    cluster.append(2);
    assert_eq!(offsets(&read(&mut c, 2).await), [20, 21]);
}

#[tokio::test]
async fn offset_out_of_range_without_a_policy_stops_the_partition_until_a_seek() {
    let cluster = FakeCluster::start(10, 10).await;
    let mut c = consumer(&cluster, AutoOffsetReset::None).await;
    c.assign([("t", 0, Offset::At(3))]).unwrap();
    let err = tokio::time::timeout(WAIT, c.poll_batch())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
    assert!(matches!(err, Error::Broker { .. }));
    assert_eq!(c.position("t", 0), Some(3));
    // Parked: no more fetches, no repeated error.
    let fetched = cluster.fetches().len();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.poll_batch())
            .await
            .is_err()
    );
    assert_eq!(
        cluster.fetches().len(),
        fetched,
        "a parked partition is not fetched"
    );
    c.seek("t", 0, Offset::At(15)).unwrap();
    assert_eq!(offsets(&read(&mut c, 5).await), [15, 16, 17, 18, 19]);
}

#[tokio::test]
async fn a_moved_leader_is_followed_without_loss_or_duplicates() {
    let cluster = FakeCluster::start(0, 10).await;
    let mut c = consumer(&cluster, AutoOffsetReset::None).await;
    c.assign([("t", 0, Offset::Earliest)]).unwrap();
    assert_eq!(
        offsets(&read(&mut c, 10).await),
        (0..10).collect::<Vec<_>>()
    );
    cluster.move_leader_to(2);
    cluster.append(10);
    let records = read(&mut c, 10).await;
    assert_eq!(offsets(&records), (10..20).collect::<Vec<_>>());
    assert_eq!(records[9].value.as_deref(), Some(&b"v19"[..]));
    let fetches = cluster.fetches();
    let first_on_2 = fetches.iter().position(|&(node, _)| node == 2).unwrap();
    assert!(
        fetches[first_on_2..].iter().all(|&(node, _)| node == 2),
        "once moved, fetches stay on the new leader: {fetches:?}"
    );
    assert!(fetches[..first_on_2].iter().all(|&(node, _)| node == 1));
}

#[tokio::test]
async fn a_bad_assignment_is_refused_whole_and_changes_nothing() {
    let cluster = FakeCluster::start(0, 10).await;
    let mut c = consumer(&cluster, AutoOffsetReset::Earliest).await;
    assert!(!c.has_assignment());
    c.assign([("t", 0, Offset::At(3))]).unwrap();
    assert!(c.has_assignment());
    assert_eq!(offsets(&read(&mut c, 7).await), (3..10).collect::<Vec<_>>());
    let twice = [("t", 0, Offset::At(0)), ("t", 0, Offset::At(1))];
    let negative = [("t", 0, Offset::At(0)), ("t", -1, Offset::At(0))];
    for bad in [twice, negative] {
        for result in [c.set_assignment(bad), c.assign(bad)] {
            assert!(matches!(result, Err(Error::InvalidArgument(_))), "{bad:?}");
        }
        assert_eq!(c.assignment(), vec![(Arc::from("t"), 0)]);
        assert_eq!(c.position("t", 0), Some(10));
    }
    // A kept partition keeps its position; the offset given applies only to new ones.
    c.set_assignment([("t", 0, Offset::At(0))]).unwrap();
    assert_eq!(c.position("t", 0), Some(10));
    c.set_assignment(Vec::<(&str, i32, Offset)>::new()).unwrap();
    assert!(!c.has_assignment());
}
